"""Export formats: the `--format` choices and the interface each writer implements."""

from __future__ import annotations

from typing import ClassVar, Protocol

import torch
from torch import fx

from automtl_cli.choices import ExportFormat
from automtl_cli.deploy.verify import Runtime
from automtl_cli.registry import Registry

__all__ = ["EXPORT_FORMATS", "INPUT_NAME", "ExportFormat", "FormatWriter", "Runtime"]

INPUT_NAME = "image"  # the exported graph's input; its outputs are named after the tasks


class FormatWriter(Protocol):
    suffix: ClassVar[str]

    def require(self) -> None:
        """Fail with MissingDependency, before any work, when the format's packages are absent."""

    def write(self, gm: fx.GraphModule, example: torch.Tensor, tasks: tuple[str, ...],
              path: str, opset: int, metadata: dict[str, str]) -> tuple[Runtime, int, str]:
        """Write `gm` to `path` with `metadata` embedded; return the runtime that loads it back,
        the convolutions it holds, and the runtime's name."""


EXPORT_FORMATS: Registry[FormatWriter] = Registry("format", ExportFormat)

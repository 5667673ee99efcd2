"""Where fine-tuning starts: the `--init` choices and their interface."""

from __future__ import annotations

from typing import Protocol

import torch

from automtl_cli.artifacts import DerivedModel
from automtl_cli.choices import Init
from automtl_cli.registry import Registry

__all__ = ["INITS", "Init", "Initializer"]


class Initializer(Protocol):
    def weights(self, derived: DerivedModel) -> dict[str, torch.Tensor] | None:
        """The state dict to load into the derived network, or None to keep the seed's."""


INITS: Registry[Initializer] = Registry("init", Init)

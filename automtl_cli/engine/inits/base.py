"""Where fine-tuning starts: the `--init` choices and their interface."""

from __future__ import annotations

import enum
from typing import Protocol

import torch

from automtl_cli.artifacts import DerivedModel
from automtl_cli.registry import Registry

__all__ = ["INITS", "Init", "Initializer"]


class Init(str, enum.Enum):
    SCRATCH = "scratch"  # the seed's fresh weights (the paper's retraining)
    SEARCH = "search"  # the weights the search trained, for the branches the plan kept

    def __str__(self) -> str:
        return self.value


class Initializer(Protocol):
    def weights(self, derived: DerivedModel) -> dict[str, torch.Tensor] | None:
        """The state dict to load into the derived network, or None to keep the seed's."""


INITS: Registry[Init, Initializer] = Registry("init", Init)

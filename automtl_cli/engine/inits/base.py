"""Where fine-tuning starts: the `--init` choices and their interface."""

from __future__ import annotations

from typing import Protocol

import torch

from automtl_cli.artifacts import DerivedModel
from automtl_cli.registry import Choice, Registry

__all__ = ["INITS", "Init", "Initializer"]


class Init(Choice):
    SCRATCH = "scratch"  # the seed's fresh weights (the paper's retraining)
    SEARCH = "search"  # the weights the search trained, for the branches the plan kept
    PRETRAINED = "pretrained"  # the backbone's pretrained weights, for the branches kept


class Initializer(Protocol):
    def weights(self, derived: DerivedModel) -> dict[str, torch.Tensor] | None:
        """The state dict to load into the derived network, or None to keep the seed's."""


INITS: Registry[Initializer] = Registry("init", Init)

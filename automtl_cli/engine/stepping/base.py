"""How one search iteration turns task losses into optimiser steps: the `--step` choices."""

from __future__ import annotations

from typing import Protocol

import torch

from automtl_cli.choices import StepMode
from automtl_cli.registry import Registry

__all__ = ["STEPPINGS", "SearchState", "StepMode", "Stepping"]


class SearchState(Protocol):
    """What a stepping reads of the search loop (engine/search.py's `Searcher`)."""

    tasks: tuple
    loss_weights: torch.Tensor
    device: torch.device

    def batch(self, split: str) -> dict[str, torch.Tensor]: ...

    def branch_weights(self, stage: str, tau: float) -> torch.Tensor | None: ...

    def forward(self, image: torch.Tensor, stage: str, tau: float) -> dict[str, torch.Tensor]:
        ...

    def forward_task(self, image: torch.Tensor, task: int, stage: str,
                     pi: torch.Tensor | None) -> torch.Tensor: ...

    def regulariser(self, tau: float) -> torch.Tensor: ...

    def apply(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer,
              params: list[torch.nn.Parameter]) -> None: ...


class Stepping(Protocol):
    def updates_per_iteration(self, tasks: int) -> int:
        """Weight updates one weight iteration makes (what an equal budget counts)."""

    def step(self, state: SearchState, *, split: str, stage: str, tau: float, policy: bool,
             reg_weight: float, optimizer: torch.optim.Optimizer,
             params: list[torch.nn.Parameter]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Train one iteration; return the task losses [T] and the regulariser (or None)."""


STEPPINGS: Registry[Stepping] = Registry("step", StepMode)

"""Wrappers for the layers every task shares: run once over the stacked `[N*T, C, ...]` batch."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Elementwise", "Folded"]


class Folded(nn.Module):
    """A shared layer run once over the stacked batch: `[N, T*C, ...]` viewed as `[N*T, C, ...]`."""

    def __init__(self, op: nn.Module, tasks: int) -> None:
        super().__init__()
        self.op, self.tasks = op, tasks

    def forward(self, *xs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        t = self.tasks
        n = xs[0].shape[0]
        y = self.op(*(x.reshape(n * t, x.shape[1] // t, *x.shape[2:]) for x in xs))
        if isinstance(y, tuple):  # several tops (Slice)
            return tuple(v.reshape(n, t * v.shape[1], *v.shape[2:]) for v in y)
        return y.reshape(n, t * y.shape[1], *y.shape[2:])

    def forward_task(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.op(*xs)


class Elementwise(nn.Module):
    """A shared layer that acts on each value alone: it needs no reshaping at all."""

    def __init__(self, op: nn.Module) -> None:
        super().__init__()
        self.op = op

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.op(*xs)

    def forward_task(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.op(*xs)

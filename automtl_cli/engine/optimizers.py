"""The optimisers of the search and of fine-tuning, as the reference sets them, in one place.

Only the learning rates are options (`--warmup-lr`, `--policy-lr`, `--weight-lr`, `--lr`); the
rest is the reference's recipe (docs/method.md §4 and §6): Adam with β₁ 0.5 for the warm-up and
for fine-tuning, plain Adam with a stronger weight decay for the logits, SGD with momentum for
the search's weight steps. Every one runs its update as `foreach` kernels over all its tensors
at once (PyTorch's default on CUDA, not on CPU, where the per-tensor loop costs 20–40 % more
time for the same bits: tests/test_search.py checks they are the same).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["FINETUNE", "POLICY", "WARMUP", "WEIGHT", "Recipe"]


@dataclass(frozen=True)
class Recipe:
    optimizer: type[torch.optim.Optimizer]
    options: dict[str, Any] = field(default_factory=dict)

    def build(self, params: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
        return self.optimizer(params, lr=lr, foreach=True, **self.options)


WARMUP = Recipe(torch.optim.Adam, {"betas": (0.5, 0.999), "weight_decay": 1e-4})
POLICY = Recipe(torch.optim.Adam, {"weight_decay": 5e-4})
WEIGHT = Recipe(torch.optim.SGD, {"momentum": 0.9, "weight_decay": 1e-4})
FINETUNE = Recipe(torch.optim.Adam, {"betas": (0.5, 0.999), "weight_decay": 1e-4})

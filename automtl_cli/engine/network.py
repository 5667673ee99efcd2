"""A backbone serving every task, with one head per task: the network the loops train."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from automtl_cli.compiler.supermodel import Supermodel
from automtl_cli.tasks import Task

__all__ = ["SearchNetwork", "build_heads"]


def build_heads(tasks: Sequence[Task], channels: int, feature_hw: Sequence[int],
                seed: int) -> nn.ModuleDict:
    """Heads initialised from `seed` alone, in task order."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.ModuleDict({t.name: t.make_head(channels, feature_hw) for t in tasks})


class SearchNetwork(nn.Module):
    """The supermodel and the task heads; `forward` returns {task: prediction}."""

    def __init__(self, backbone: Supermodel, tasks: Sequence[Task],
                 seed: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.task_names = tuple(t.name for t in tasks)
        if self.task_names != backbone.tasks:
            raise ValueError(f"heads for {self.task_names} on a supermodel for {backbone.tasks}")
        shape = backbone.graph.shape_of(backbone.graph.output)
        self.heads = build_heads(tasks, shape[1], shape[2:], seed + 1)

    def forward(self, x: torch.Tensor, stage: str, **kw) -> dict[str, torch.Tensor]:
        features = self.backbone(x, stage, **kw)  # [N, T, C, h, w]
        return {name: head(features[:, i]) for i, (name, head) in enumerate(self.heads.items())}

    def forward_task(self, x: torch.Tensor, task: int, stage: str, **kw) -> torch.Tensor:
        """One task alone, the reference's way (its path only, every branch computed)."""
        feature = self.backbone.forward_reference(x, stage, only=task, **kw)[0]
        return self.heads[self.task_names[task]](feature)

    def logit_parameters(self) -> list[nn.Parameter]:
        return [m.policy for m in self.backbone.search_nodes]

    def weight_parameters(self) -> list[nn.Parameter]:
        logits = {id(p) for p in self.logit_parameters()}
        return [p for p in self.parameters() if id(p) not in logits]


class DerivedNetwork(nn.Module):
    """The derived tree backbone and the task heads; `forward` returns {task: prediction}."""

    def __init__(self, backbone: nn.Module, heads: nn.ModuleDict) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = heads
        self.task_names = tuple(heads.keys())

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(x)
        return {name: head(f) for (name, head), f in zip(self.heads.items(), features)}

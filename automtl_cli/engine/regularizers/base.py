"""The sharing regulariser of the policy steps: its choices and the interface they share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from automtl_cli.choices import Regularizer
from automtl_cli.compiler.space import SearchSpace
from automtl_cli.frontend.ir import Graph
from automtl_cli.registry import Registry

__all__ = ["REGULARIZERS", "Noise", "RegContext", "Regularizer", "RegularizerStrategy",
           "SharingRegularizer"]


Noise = Callable[[int], torch.Tensor]  # stream → Gumbel noise [S, T, 3] of the current step


@dataclass(frozen=True)
class RegContext:
    """What a regulariser may be built from: the backbone, the space and the search's knobs."""

    graph: Graph
    space: SearchSpace
    scale: float  # the reference's softplus scale s
    target: float | None  # the params form's target fraction
    device: torch.device


class SharingRegularizer(Protocol):
    def __call__(self, logits: torch.Tensor, tau: float, noise: Noise) -> torch.Tensor:
        """Per-task values [T], or one value [1] that every task shares."""


class RegularizerStrategy(Protocol):
    def bind(self, ctx: RegContext) -> SharingRegularizer:
        """The regulariser for this backbone and space (what can be computed once, is)."""


REGULARIZERS: Registry[RegularizerStrategy] = Registry("reg", Regularizer)

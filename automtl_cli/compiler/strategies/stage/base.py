"""The forward-stage axis: how the supermodel turns its policy logits into branch weights π.

π is `[S, T, 3]` for S search nodes and T tasks (shared, specific, skip). The stage object is
also what the supermodel's modules receive in their forward: its flags say whether every branch
is averaged (the warm-up) and whether only the sampled branches run (GDAS).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Protocol

import torch

from automtl_cli.choices import Stage
from automtl_cli.registry import Registry

__all__ = ["STAGES", "PolicySource", "Stage", "StageStrategy"]


class PolicySource(Protocol):
    """What a stage reads from the supermodel: its logits, lazily, and π's shape and device."""

    def logits(self) -> torch.Tensor: ...

    @property
    def policy_shape(self) -> tuple[int, int]: ...  # (S, T)

    @property
    def policy_device(self) -> torch.device: ...


class StageStrategy(ABC):
    """One forward stage."""

    name: ClassVar[Stage]
    averages: ClassVar[bool] = False  # every branch weighted alike (the reference's pre-train)
    sampled_only: ClassVar[bool] = False  # a branch that no task sampled is not computed
    # π is exactly one-hot in value: without gradients, a branch no task chose is not computed
    # and a node whose tasks all chose one convolution branch skips the weight mixture.
    one_hot: ClassVar[bool] = False

    @abstractmethod
    def branch_weights(self, source: PolicySource, *, tau: float, noise: torch.Tensor | None,
                       policy: torch.Tensor | None, generator: torch.Generator | None
                       ) -> torch.Tensor:
        """π, `[S, T, 3]`; `noise` (Gumbel) or `policy` (choices) where the stage takes one."""


STAGES: Registry[StageStrategy] = Registry("stage", Stage)


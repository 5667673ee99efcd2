"""`darts`: the continuous relaxation of DARTS (Liu, Simonyan & Yang, ICLR 2019), π = softmax(α/τ)
with no noise; at τ = 1 exactly DARTS' mixing weights.

The deterministic counterpart of `soft`: the same mixture without the Gumbel sample, for the
noise ablation that separates SNAS/AutoMTL-style sampling from DARTS, and for evaluating the
relaxed supermodel itself (the same π on every call).
"""

from __future__ import annotations

import torch

from automtl_cli.compiler.strategies.stage.base import STAGES, PolicySource, Stage, StageStrategy

__all__ = ["Darts"]


@STAGES.register(Stage.DARTS)
class Darts(StageStrategy):
    def branch_weights(self, source: PolicySource, *, tau: float, noise: torch.Tensor | None,
                       policy: torch.Tensor | None, generator: torch.Generator | None
                       ) -> torch.Tensor:
        return torch.softmax(source.logits() / tau, dim=-1)

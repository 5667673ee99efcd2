"""`soft`: the Gumbel-softmax relaxation of the policy at temperature τ (Jang et al., 2017), the
AutoMTL reference's search estimator."""

from __future__ import annotations

import torch

from automtl_cli.compiler.strategies.stage.base import (
    STAGES,
    PolicySource,
    Stage,
    StageStrategy,
)
from automtl_cli.compiler.strategies.stage.gumbel import gumbel_softmax

__all__ = ["Soft"]


@STAGES.register(Stage.SOFT)
class Soft(StageStrategy):
    def branch_weights(self, source: PolicySource, *, tau: float, noise: torch.Tensor | None,
                       policy: torch.Tensor | None, generator: torch.Generator | None
                       ) -> torch.Tensor:
        return gumbel_softmax(source.logits(), tau, noise, generator)

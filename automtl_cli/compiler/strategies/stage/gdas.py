"""`gdas`: Dong & Yang (2019). The sampled branch alone runs; its weight is 1 in the forward pass
and carries the Gumbel-softmax's gradient back to the logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from automtl_cli.compiler.strategies.stage.base import (
    STAGES,
    PolicySource,
    Stage,
    StageStrategy,
)
from automtl_cli.compiler.strategies.stage.gumbel import gumbel_softmax

__all__ = ["Gdas", "gdas_weights"]


def gdas_weights(soft: torch.Tensor) -> torch.Tensor:
    """One-hot branch weights whose gradient reaches only the sampled branch's probability."""
    hard = F.one_hot(soft.argmax(-1), 3).to(soft.dtype)
    return hard + hard * (soft - soft.detach())  # exactly one-hot in value


@STAGES.register(Stage.GDAS)
class Gdas(StageStrategy):
    sampled_only = True
    one_hot = True

    def branch_weights(self, source: PolicySource, *, tau: float, noise: torch.Tensor | None,
                       policy: torch.Tensor | None, generator: torch.Generator | None
                       ) -> torch.Tensor:
        return gdas_weights(gumbel_softmax(source.logits(), tau, noise, generator))

"""`warmup`: every branch weighted 1/3, the reference's pre-training average."""

from __future__ import annotations

import torch

from automtl_cli.compiler.strategies.stage.base import STAGES, PolicySource, Stage, StageStrategy

__all__ = ["Warmup"]


@STAGES.register(Stage.WARMUP)
class Warmup(StageStrategy):
    averages = True

    def branch_weights(self, source: PolicySource, *, tau: float, noise: torch.Tensor | None,
                       policy: torch.Tensor | None, generator: torch.Generator | None
                       ) -> torch.Tensor:
        s, t = source.policy_shape
        return torch.full((s, t, 3), 1.0 / 3.0, device=source.policy_device)

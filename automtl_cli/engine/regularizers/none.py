"""`--reg none`: no regulariser, the policy learns from the task losses alone.

This is the paper's "w/o reg" ablation (its Figure 2; the reference's `alter_train`), named
rather than spelled `--reg-weight 0`, and it draws no Gumbel sample for a term that is not used.
"""

from __future__ import annotations

import torch

from automtl_cli.engine.regularizers.base import REGULARIZERS, Noise, RegContext, Regularizer


@REGULARIZERS.register(Regularizer.NONE)
class NoRegularizer:
    def __init__(self, ctx: RegContext) -> None:
        self.zero = torch.zeros(1, device=ctx.device)

    def __call__(self, logits: torch.Tensor, tau: float, noise: Noise) -> torch.Tensor:
        return self.zero

"""`--reg none`: no regulariser, the policy learns from the task losses alone.

This is the paper's "w/o reg" ablation (its Figure 2; the reference's `alter_train`), named
rather than spelled `--reg-weight 0`, and it draws no Gumbel sample for a term that is not used.
"""

from __future__ import annotations

import torch

from automtl_cli.engine.regularizers.base import (
    REGULARIZERS,
    RegContext,
    Regularizer,
    SharingRegularizer,
)


@REGULARIZERS.register(Regularizer.NONE)
class NoRegularizer:
    def bind(self, ctx: RegContext) -> SharingRegularizer:
        zero = torch.zeros(1, device=ctx.device)
        return lambda logits, tau, noise: zero

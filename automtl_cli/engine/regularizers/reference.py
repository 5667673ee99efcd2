"""`--reg reference`: AutoMTL's regulariser on a fresh Gumbel sample (docs/method.md §3)."""

from __future__ import annotations

import torch

from automtl_cli.engine.regularizers.base import (
    REGULARIZERS,
    Noise,
    RegContext,
    Regularizer,
    SharingRegularizer,
)
from automtl_cli.engine.regularizers.formulas import depth_weights, reference_regularizer

NOISE_STREAM = 7919  # the regulariser's sample is independent of the forward pass's


@REGULARIZERS.register(Regularizer.REFERENCE)
class Reference:
    def bind(self, ctx: RegContext) -> SharingRegularizer:
        nodes = ctx.graph.searchable
        weights = depth_weights([n.depth for n in nodes]).to(ctx.device) if nodes \
            else torch.zeros(0, device=ctx.device)

        def value(logits: torch.Tensor, tau: float, noise: Noise) -> torch.Tensor:
            return reference_regularizer(logits, noise(NOISE_STREAM), tau, weights, ctx.scale)

        return value

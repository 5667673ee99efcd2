"""`--reg params`: the expected size of the derived network, optionally above a target."""

from __future__ import annotations

import torch

from automtl_cli.compiler.space import skip_plan
from automtl_cli.engine.regularizers.base import (
    REGULARIZERS,
    Noise,
    RegContext,
    Regularizer,
    SharingRegularizer,
)
from automtl_cli.engine.regularizers.formulas import ParamsRegularizer


@REGULARIZERS.register(Regularizer.PARAMS)
class ExpectedParams:
    def bind(self, ctx: RegContext) -> SharingRegularizer:
        nodes = ctx.graph.searchable
        shapes = ctx.graph.value_shapes()
        fraction = ParamsRegularizer(
            [n.params for n in nodes],
            [skip_plan(n, shapes[n.inputs[0]], ctx.space.skip).params for n in nodes],
            len(ctx.space.tasks), ctx.target)

        def value(logits: torch.Tensor, tau: float, noise: Noise) -> torch.Tensor:
            return fraction(logits).unsqueeze(0)

        return value

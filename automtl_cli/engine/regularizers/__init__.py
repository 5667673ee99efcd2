"""Sharing regularisers, one module per `--reg` choice (docs/adding-a-strategy.md)."""

from automtl_cli.engine.regularizers import none, params, reference  # noqa: F401  (registration)
from automtl_cli.engine.regularizers.base import (
    REGULARIZERS,
    RegContext,
    Regularizer,
    SharingRegularizer,
)
from automtl_cli.engine.regularizers.formulas import (
    ParamsRegularizer,
    depth_weights,
    reference_regularizer,
)

__all__ = ["REGULARIZERS", "ParamsRegularizer", "RegContext", "Regularizer",
           "SharingRegularizer", "build_regularizer", "depth_weights", "reference_regularizer"]


def build_regularizer(choice: Regularizer | str, ctx: RegContext) -> SharingRegularizer:
    return REGULARIZERS[choice](ctx)

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
           "SharingRegularizer", "depth_weights", "reference_regularizer"]


REGULARIZERS.check_complete()

"""Search stepping modes, one module per `--step` choice (docs/adding-a-strategy.md)."""

from automtl_cli.engine.stepping import per_task, summed  # noqa: F401  (registration)
from automtl_cli.engine.stepping.base import STEPPINGS, SearchState, StepMode, Stepping

__all__ = ["STEPPINGS", "SearchState", "StepMode", "Stepping"]

STEPPINGS.check_complete()

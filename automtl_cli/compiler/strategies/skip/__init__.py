"""The `--skip` registry: `SkipMode` names the choices, `skip_strategy(name)` the strategy."""

from __future__ import annotations

from automtl_cli.compiler.strategies.skip import cheap, reference  # noqa: F401  (registers)
from automtl_cli.compiler.strategies.skip.base import SKIP_MODES, SkipMode, SkipStrategy

__all__ = ["SKIP_MODES", "SkipMode", "SkipStrategy", "skip_strategy"]

SKIP_MODES.check_complete()


def skip_strategy(name: str) -> SkipStrategy:
    return SKIP_MODES.get(name)

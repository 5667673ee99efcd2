"""The `--skip` registry: `SkipMode` names the choices, `SKIP_MODES.get(name)` the strategy."""

from __future__ import annotations

from automtl_cli.compiler.strategies.skip import cheap, reference  # noqa: F401  (registers)
from automtl_cli.compiler.strategies.skip.base import SKIP_MODES, SkipKind, SkipMode, SkipStrategy

__all__ = ["SKIP_MODES", "SkipKind", "SkipMode", "SkipStrategy"]

SKIP_MODES.check_complete()

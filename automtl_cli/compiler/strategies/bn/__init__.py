"""The `--bn` registry: `BnMode` names the choices, `BN_MODES.get(name)` returns the strategy."""

from __future__ import annotations

from automtl_cli.compiler.strategies.bn import follow, shared, task  # noqa: F401  (registers)
from automtl_cli.compiler.strategies.bn.base import BN_MODES, BnMode, BnStrategy

__all__ = ["BN_MODES", "BnMode", "BnStrategy"]

BN_MODES.check_complete()

"""The compiler's strategy axes: `--bn`, `--skip` and the forward stage, one registry each.

Each axis is an enum of names, a base class, and one module per choice
(`docs/adding-a-strategy.md` says how to add one).
"""

from __future__ import annotations

from automtl_cli.compiler.strategies.bn import BN_MODES, BnMode, BnStrategy
from automtl_cli.compiler.strategies.skip import SKIP_MODES, SkipMode, SkipStrategy
from automtl_cli.compiler.strategies.stage import STAGES, Stage, StageStrategy

__all__ = ["BN_MODES", "SKIP_MODES", "STAGES", "BnMode", "BnStrategy", "SkipMode",
            "SkipStrategy", "Stage", "StageStrategy"]

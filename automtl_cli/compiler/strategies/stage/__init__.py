"""The forward-stage registry: `Stage` names the choices, `STAGES.get(name)` the strategy."""

from __future__ import annotations

from automtl_cli.compiler.strategies.stage import darts, gdas, hard, soft, warmup  # noqa: F401
from automtl_cli.compiler.strategies.stage.base import (
    STAGES,
    PolicySource,
    Stage,
    StageStrategy,
)
from automtl_cli.compiler.strategies.stage.gdas import gdas_weights
from automtl_cli.compiler.strategies.stage.gumbel import gumbel_noise

__all__ = ["STAGES", "PolicySource", "Stage", "StageStrategy", "gdas_weights", "gumbel_noise"]

STAGES.check_complete()

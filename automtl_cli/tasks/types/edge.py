"""`edge`: occlusion edges, a thin binary map: weighted BCE on logits and F1 at 0.5 besides the
balanced L1 (only the synthetic scenes have these labels; elsewhere the map would take L1)."""

from __future__ import annotations

from automtl_cli.experiment import DataSource, TaskType
from automtl_cli.tasks.loss_kinds import LossKind
from automtl_cli.tasks.types.base import TASK_TYPE_STRATEGIES
from automtl_cli.tasks.types.dense import DenseMapType

__all__ = ["Edge"]


@TASK_TYPE_STRATEGIES.register(TaskType.EDGE)
class Edge(DenseMapType):
    # Measured on synthetic data (32 px, 150 steps): occlusion edges (binary, ~7 % positive)
    # need the weight (F1 0.33 → 0.51 at 10).
    default_pos_weight = 10.0
    f1 = True
    threshold = 0.5

    def loss_kind(self, source: DataSource) -> LossKind:
        return LossKind.WBCE if source is DataSource.SYNTHETIC else LossKind.L1

    def delta_metrics(self, source: DataSource) -> tuple[str, ...]:
        return ("err",) if source is DataSource.TASKONOMY else ("bal_err", "f1")

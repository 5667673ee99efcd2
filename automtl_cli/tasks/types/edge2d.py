"""`edge2d`: texture edges, a dense map trained and scored by L1 on every dataset."""

from __future__ import annotations

from automtl_cli.experiment import DataSource, TaskType
from automtl_cli.tasks.loss_kinds import LossKind
from automtl_cli.tasks.types.base import TASK_TYPE_STRATEGIES
from automtl_cli.tasks.types.dense import DenseMapType

__all__ = ["Edge2d"]


@TASK_TYPE_STRATEGIES.register(TaskType.EDGE2D)
class Edge2d(DenseMapType):
    def loss_kind(self, source: DataSource) -> LossKind:
        return LossKind.L1

    def delta_metrics(self, source: DataSource) -> tuple[str, ...]:
        return ("err",)

"""`keypoint`: soft keypoint heatmaps: BCE on logits on synthetic data (scored by the balanced
L1), the reference's L1 on Taskonomy."""

from __future__ import annotations

from automtl_cli.experiment import DataSource, TaskType
from automtl_cli.tasks.loss_kinds import LossKind
from automtl_cli.tasks.types.base import TASK_TYPE_STRATEGIES
from automtl_cli.tasks.types.dense import DenseMapType

__all__ = ["Keypoint"]


@TASK_TYPE_STRATEGIES.register(TaskType.KEYPOINT)
class Keypoint(DenseMapType):
    # Measured on synthetic data (32 px, 150 steps): soft heatmaps learn best without a positive
    # weight, since extra weight on positives inflates every uncertain prediction (balanced L1
    # 0.18 vs 0.17 at 0).
    default_pos_weight = 0.0

    def loss_kind(self, source: DataSource) -> LossKind:
        return LossKind.WBCE if source is DataSource.SYNTHETIC else LossKind.L1

    def delta_metrics(self, source: DataSource) -> tuple[str, ...]:
        return ("err",) if source is DataSource.TASKONOMY else ("bal_err",)

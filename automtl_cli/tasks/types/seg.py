"""`seg`: semantic segmentation, one channel per class, cross-entropy, mIoU and pixel accuracy."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from automtl_cli.experiment import DataSource, TaskType
from automtl_cli.tasks.loss_kinds import LossKind
from automtl_cli.tasks.metrics import Metric, MetricVariant, SegMetric
from automtl_cli.tasks.types.base import TASK_TYPE_STRATEGIES, TaskTypeStrategy

__all__ = ["Seg"]


@TASK_TYPE_STRATEGIES.register(TaskType.SEG)
class Seg(TaskTypeStrategy):
    uses_class_weights = True  # Taskonomy's class prior weights its loss and its error

    def channels(self, classes: int) -> int:
        return classes

    def loss_kind(self, source: DataSource) -> LossKind:
        return LossKind.CE

    def decode(self, pred: torch.Tensor, logits: bool) -> torch.Tensor:
        return pred.argmax(1)

    def metric(self, variant: MetricVariant | str, *, channels: int, source: DataSource,
               class_weights: Sequence[float] | None, logits: bool) -> Metric:
        return SegMetric(self.name.value, channels, variant, class_weights=class_weights,
                         report_err=source is DataSource.TASKONOMY,
                         count_ignore_in_acc=source is DataSource.CITYSCAPES)

    def delta_metrics(self, source: DataSource) -> tuple[str, ...]:
        return ("err",) if source is DataSource.TASKONOMY else ("mIoU", "pixel_acc")

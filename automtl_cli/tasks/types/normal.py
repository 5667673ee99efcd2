"""`normal`: surface normals, three channels decoded to unit vectors, 1 − cosine, angle errors."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from automtl_cli.experiment import DataSource, TaskType
from automtl_cli.tasks.loss_kinds import LossKind
from automtl_cli.tasks.metrics import Metric, MetricVariant, NormalMetric
from automtl_cli.tasks.types.base import TASK_TYPE_STRATEGIES, TaskTypeStrategy

__all__ = ["Normal"]


@TASK_TYPE_STRATEGIES.register(TaskType.NORMAL)
class Normal(TaskTypeStrategy):
    def channels(self, classes: int) -> int:
        return 3

    def loss_kind(self, source: DataSource) -> LossKind:
        return LossKind.NORMAL

    def decode(self, pred: torch.Tensor, logits: bool) -> torch.Tensor:
        return nn.functional.normalize(pred, dim=1)

    def metric(self, variant: MetricVariant | str, *, channels: int, source: DataSource,
               class_weights: Sequence[float] | None, logits: bool) -> Metric:
        return NormalMetric(self.name.value, variant)

    def delta_metrics(self, source: DataSource) -> tuple[str, ...]:
        if source is DataSource.TASKONOMY:
            return ("cos",)
        return ("mean", "median", "within_11.25", "within_22.5", "within_30")

    def valid(self, label: torch.Tensor) -> torch.Tensor:
        """Pixels with a labelled normal (unlabelled ones are zero vectors)."""
        return (label * label).sum(1, keepdim=True) > 0.25

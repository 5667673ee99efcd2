"""`depth`: one channel, L1 over the reference's valid pixels (label > DEPTH_MIN)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from automtl_cli.experiment import DataSource, TaskType
from automtl_cli.tasks.loss_kinds import LossKind
from automtl_cli.tasks.losses import DEPTH_MIN
from automtl_cli.tasks.metrics import DepthMetric, Metric, MetricVariant
from automtl_cli.tasks.types.base import TASK_TYPE_STRATEGIES, TaskTypeStrategy

__all__ = ["Depth"]


@TASK_TYPE_STRATEGIES.register(TaskType.DEPTH)
class Depth(TaskTypeStrategy):
    def channels(self, classes: int) -> int:
        return 1

    def loss_kind(self, source: DataSource) -> LossKind:
        return LossKind.DEPTH

    def metric(self, variant: MetricVariant | str, *, channels: int, source: DataSource,
               class_weights: Sequence[float] | None, logits: bool) -> Metric:
        return DepthMetric(self.name.value, variant)

    def delta_metrics(self, source: DataSource) -> tuple[str, ...]:
        if source is DataSource.TASKONOMY:
            return ("abs_err",)
        return ("abs_err", "rel_err", "delta1", "delta2", "delta3")

    def valid(self, label: torch.Tensor) -> torch.Tensor:
        return label > DEPTH_MIN

"""What the sparse and dense map types share (edge, edge2d, keypoint): a one-channel map, scored
by L1, with the balanced L1 when the head predicts logits (docs/method.md §6)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch

from automtl_cli.experiment import DataSource
from automtl_cli.tasks.metrics import DenseMapMetric, Metric, MetricVariant
from automtl_cli.tasks.types.base import TaskTypeStrategy

__all__ = ["DenseMapType"]


class DenseMapType(TaskTypeStrategy):
    f1: ClassVar[bool] = False  # the metric reports F1 as well
    threshold: ClassVar[float] = 0.1  # the positive region of `bal_err` and F1

    def channels(self, classes: int) -> int:
        return 1

    def metric(self, variant: MetricVariant | str, *, channels: int, source: DataSource,
               class_weights: Sequence[float] | None, logits: bool) -> Metric:
        return DenseMapMetric(self.name.value, variant, decode=torch.sigmoid if logits else None,
                              balanced=logits, f1=self.f1, threshold=self.threshold)

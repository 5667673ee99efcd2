"""The task-type axis: what every task type answers, and the registry of the six.

A task type (`TaskType`, the `type` of an experiment's task) fixes what its head predicts and
how that is trained and scored: its channels, its loss kind on each data source, how a raw
prediction is decoded, its metric accumulator, the metrics Δ_T averages, and which label pixels
count. `Task` (automtl_cli/tasks/registry.py) asks its type instead of comparing names.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import torch

from automtl_cli.experiment import DataSource, TaskType
from automtl_cli.registry import Registry
from automtl_cli.tasks.loss_kinds import LossKind
from automtl_cli.tasks.metrics import Metric, MetricVariant

__all__ = ["TASK_TYPE_STRATEGIES", "TaskType", "TaskTypeStrategy"]


class TaskTypeStrategy(ABC):
    """One task type; `name` is its `TaskType`, whose value is also the task's name."""

    name: ClassVar[TaskType]
    uses_class_weights: ClassVar[bool] = False  # takes the dataset's class prior (seg)
    default_pos_weight: ClassVar[float] = 0.0  # the weighted BCE's positive weight, if unset

    @abstractmethod
    def channels(self, classes: int) -> int:
        """The head's output channels, given the dataset's class count."""

    @abstractmethod
    def loss_kind(self, source: DataSource) -> LossKind:
        """The loss this type trains with on `source`'s labels."""

    def decode(self, pred: torch.Tensor, logits: bool) -> torch.Tensor:
        """Raw head output → the label's space; `logits`: the loss kind is on logits."""
        return torch.sigmoid(pred) if logits else pred

    @abstractmethod
    def metric(self, variant: MetricVariant | str, *, channels: int, source: DataSource,
               class_weights: Sequence[float] | None, logits: bool) -> Metric:
        """A fresh accumulator; `logits`: the loss kind is on logits."""

    @abstractmethod
    def delta_metrics(self, source: DataSource) -> tuple[str, ...]:
        """The metrics Δ_T averages on `source` (the reference's, where it has single-task
        values); the first is the task's primary metric."""

    def valid(self, label: torch.Tensor) -> torch.Tensor:
        """N×1×H×W boolean of the label pixels that count, before the batch's mask: all."""
        return torch.ones_like(label[:, :1], dtype=torch.bool)


TASK_TYPE_STRATEGIES: Registry[TaskTypeStrategy] = Registry("task type", TaskType)

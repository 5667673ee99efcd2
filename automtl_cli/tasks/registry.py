"""The task registry: per task type and dataset, its channels, head, loss, decoding and metrics.

type      channels  loss on synthetic data   loss on real data          metrics
seg       classes   cross-entropy            CE (Taskonomy: weighted    mIoU, pixel_acc
                                             by the class prior)        (+ err on Taskonomy)
depth     1         masked L1                masked L1                  abs_err, rel_err, delta1-3
normal    3         1 - cosine               1 - cosine                 mean, median, within_*, cos
edge      1         weighted BCE on logits   -                          err, bal_err, f1
edge2d    1         L1                       L1 (Taskonomy)             err
keypoint  1         weighted BCE on logits   L1 (Taskonomy)             err (+ bal_err, synthetic)

Each row is a task-type strategy (one module per `TaskType` in automtl_cli/tasks/types/), and
each loss a loss-kind strategy (`LossKind`, automtl_cli/tasks/loss_kinds.py); the table's cells
are their answers (docs/adding-a-strategy.md).

`Task` is what the engine uses: `make_head`, `loss(pred, batch)` (a scalar, not yet multiplied
by `loss_weight`), `decode(pred)` (label-space prediction), `metric(variant)` (a fresh
accumulator), `higher_is_better`, `delta_metrics` (what Δ_T averages, matching the reference's
single-task values where it has them) and `primary_metric`. It keeps its type and loss kind as
names (plain data) and asks their strategies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType

import torch
from torch import nn

from automtl_cli.experiment import (
    DATASET_CLASSES,
    DATASET_TASKS,
    DataSource,
    ExperimentConfig,
    HeadConfig,
    Resize,
    TaskConfig,
)
from automtl_cli.tasks import losses
from automtl_cli.tasks.heads import build_head
from automtl_cli.tasks.loss_kinds import LOSS_KINDS, LossKindStrategy
from automtl_cli.tasks.metrics import Metric, MetricVariant
from automtl_cli.tasks.types import TASK_TYPE_STRATEGIES, TaskType, TaskTypeStrategy

__all__ = ["DEFAULT_POS_WEIGHT", "Task", "build_task", "build_tasks"]

# Each type's weighted-BCE positive weight when the experiment sets none (the types say why).
DEFAULT_POS_WEIGHT: Mapping[str, float] = MappingProxyType(
    {t.value: TASK_TYPE_STRATEGIES.get(t).default_pos_weight for t in TaskType})


@dataclass(frozen=True)
class Task:
    """One task of an experiment on one data source, as plain data; the behaviour comes from
    its type's and its loss kind's strategies, looked up by name."""

    name: str
    source: DataSource
    channels: int
    loss_weight: float = 1.0
    head: HeadConfig = field(default_factory=HeadConfig)
    resize: Resize = Resize.LABEL_TO_PRED
    loss_kind: str = "l1"
    pos_weight: float = 0.0
    class_weights: tuple[float, ...] | None = None

    @cached_property  # looked up once, not on every loss call
    def task_type(self) -> TaskTypeStrategy:
        """The strategy of this task's type (`name` is the type)."""
        return TASK_TYPE_STRATEGIES.get(self.name)

    @cached_property
    def loss_strategy(self) -> LossKindStrategy:
        """The strategy of `loss_kind`."""
        return LOSS_KINDS.get(self.loss_kind)

    def make_head(self, in_channels: int, feature_hw: Sequence[int]) -> nn.Module:
        """A fresh head for a feature map of `in_channels` × `feature_hw`.

        ASPP rates scale with `feature_hw` (the reference's were set for 41×41 at 321 px
        input).
        """
        return build_head(self.head, in_channels, self.channels, feature_hw,
                          output_bias=self.loss_strategy.output_bias)

    def loss(self, pred: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        pred, label, mask = losses.align(pred, batch[self.name], batch.get(f"{self.name}_mask"),
                                         self.resize)
        return self.loss_strategy.loss(pred, label, mask, task=self.name,
                                       class_weights=self.class_weights,
                                       pos_weight=self.pos_weight)

    def decode(self, pred: torch.Tensor) -> torch.Tensor:
        """Raw head output → the label's space (class ids for seg, unit vectors for normals)."""
        return self.task_type.decode(pred, self.loss_strategy.on_logits)

    def metric(self, variant: MetricVariant | str = MetricVariant.CORRECT) -> Metric:
        """A fresh accumulator for this task (see automtl_cli/tasks/metrics.py)."""
        return self.task_type.metric(variant, channels=self.channels, source=self.source,
                                     class_weights=self.class_weights,
                                     logits=self.loss_strategy.on_logits)

    @property
    def higher_is_better(self) -> dict[str, bool]:
        return dict(self.metric().higher_is_better)

    @property
    def delta_metrics(self) -> tuple[str, ...]:
        return self.task_type.delta_metrics(self.source)

    @property
    def primary_metric(self) -> str:
        return self.delta_metrics[0]


def build_task(cfg: TaskConfig, source: DataSource,
               class_weights: Sequence[float] | None = None) -> Task:
    """The task `cfg` describes, on `source`'s data."""
    if cfg.type not in DATASET_TASKS[source]:
        raise ValueError(f"{source.value} has no {cfg.type} labels")
    classes = cfg.classes or DATASET_CLASSES[source]
    if class_weights is not None and len(class_weights) != classes:
        raise ValueError(f"{len(class_weights)} class weights for {classes} classes")
    task_type = TASK_TYPE_STRATEGIES.get(cfg.type)
    pos_weight = cfg.pos_weight if cfg.pos_weight is not None else task_type.default_pos_weight
    return Task(
        name=cfg.type,
        source=source,
        channels=task_type.channels(classes),
        loss_weight=cfg.loss_weight,
        head=cfg.head,
        resize=cfg.resize,
        loss_kind=task_type.loss_kind(source).value,
        pos_weight=pos_weight,
        class_weights=tuple(class_weights) if task_type.uses_class_weights and class_weights
        else None,
    )


def build_tasks(experiment: ExperimentConfig,
                seg_class_weights: Sequence[float] | None = None) -> tuple[Task, ...]:
    """Every task of an experiment, in its order; pass `dataset.info.seg_class_weights`."""
    return tuple(build_task(t, experiment.data.source,
                            seg_class_weights
                            if TASK_TYPE_STRATEGIES.get(t.type).uses_class_weights else None)
                 for t in experiment.tasks)

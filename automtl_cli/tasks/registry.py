"""The task registry: per task type and dataset, its channels, head, loss, decoding and metrics.

type      channels  loss on synthetic data   loss on real data          metrics
seg       classes   cross-entropy            CE (Taskonomy: weighted    mIoU, pixel_acc
                                             by the class prior)        (+ err on Taskonomy)
depth     1         masked L1                masked L1                  abs_err, rel_err, delta1-3
normal    3         1 - cosine               1 - cosine                 mean, median, within_*, cos
edge      1         weighted BCE on logits   -                          err, bal_err, f1
edge2d    1         L1                       L1 (Taskonomy)             err
keypoint  1         weighted BCE on logits   L1 (Taskonomy)             err (+ bal_err, synthetic)

`Task` is what the engine uses: `make_head`, `loss(pred, batch)` (a scalar, not yet multiplied
by `loss_weight`), `decode(pred)` (label-space prediction), `metric(variant)` (a fresh
accumulator), `higher_is_better`, `delta_metrics` (what Δ_T averages, matching the reference's
single-task values where it has them) and `primary_metric`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

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
from automtl_cli.tasks.metrics import (
    DenseMapMetric,
    DepthMetric,
    Metric,
    MetricVariant,
    NormalMetric,
    SegMetric,
)

__all__ = ["DEFAULT_POS_WEIGHT", "Task", "build_task", "build_tasks"]

# Measured on synthetic data (32 px, 150 steps): occlusion edges (binary, ~7 % positive) need the
# weight (F1 0.33 → 0.51 at 10); soft keypoint heatmaps learn best without it, since extra weight
# on positives inflates every uncertain prediction (balanced L1 0.18 vs 0.17 at 0).
DEFAULT_POS_WEIGHT = {"edge": 10.0, "keypoint": 0.0}
_LOGIT_PRIOR = -4.0  # sigmoid ≈ 0.018: sparse maps start near their mostly-zero answer
_CHANNELS = {"depth": 1, "normal": 3, "edge": 1, "edge2d": 1, "keypoint": 1}


def _loss_kind(task: str, source: DataSource) -> str:
    if task in ("edge", "keypoint") and source is DataSource.SYNTHETIC:
        return "wbce"
    return {"seg": "ce", "depth": "depth", "normal": "normal"}.get(task, "l1")


@dataclass(frozen=True)
class Task:
    name: str
    source: DataSource
    channels: int
    loss_weight: float = 1.0
    head: HeadConfig = field(default_factory=HeadConfig)
    resize: Resize = Resize.LABEL_TO_PRED
    loss_kind: str = "l1"
    pos_weight: float = 0.0
    class_weights: tuple[float, ...] | None = None

    def make_head(self, in_channels: int, feature_hw: Sequence[int]) -> nn.Module:
        """A fresh head for a feature map of `in_channels` × `feature_hw`.

        ASPP rates scale with `feature_hw` (the reference's were set for 41×41 at 321 px
        input).
        """
        bias = _LOGIT_PRIOR if self.loss_kind == "wbce" else None
        return build_head(self.head, in_channels, self.channels, feature_hw, output_bias=bias)

    def loss(self, pred: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        pred, label, mask = losses.align(pred, batch[self.name], batch.get(f"{self.name}_mask"),
                                         self.resize)
        kind = self.loss_kind
        if kind == "ce":
            return losses.ce_loss(pred, label, self.class_weights)
        if kind == "depth":
            return losses.depth_loss(pred, label, mask)
        if kind == "normal":
            return losses.normal_loss(pred, label, mask)
        if kind == "wbce":
            return losses.weighted_bce_loss(self.name, pred, label, mask, self.pos_weight)
        return losses.l1_loss(self.name, pred, label, mask)

    def decode(self, pred: torch.Tensor) -> torch.Tensor:
        """Raw head output → the label's space (class ids for seg, unit vectors for normals)."""
        if self.name == "seg":
            return pred.argmax(1)
        if self.name == "normal":
            return nn.functional.normalize(pred, dim=1)
        if self.loss_kind == "wbce":
            return torch.sigmoid(pred)
        return pred

    def metric(self, variant: MetricVariant | str = MetricVariant.CORRECT) -> Metric:
        """A fresh accumulator for this task (see automtl_cli/tasks/metrics.py)."""
        if self.name == "seg":
            return SegMetric(self.name, self.channels, variant,
                             class_weights=self.class_weights,
                             report_err=self.source is DataSource.TASKONOMY,
                             count_ignore_in_acc=self.source is DataSource.CITYSCAPES)
        if self.name == "depth":
            return DepthMetric(self.name, variant)
        if self.name == "normal":
            return NormalMetric(self.name, variant)
        logits = self.loss_kind == "wbce"
        return DenseMapMetric(self.name, variant, decode=torch.sigmoid if logits else None,
                              balanced=logits, f1=self.name == "edge",
                              threshold=0.5 if self.name == "edge" else 0.1)

    @property
    def higher_is_better(self) -> dict[str, bool]:
        return dict(self.metric().higher_is_better)

    @property
    def delta_metrics(self) -> tuple[str, ...]:
        if self.source is DataSource.TASKONOMY:
            return {"seg": ("err",), "normal": ("cos",), "depth": ("abs_err",)}.get(
                self.name, ("err",))
        return {
            "seg": ("mIoU", "pixel_acc"),
            "depth": ("abs_err", "rel_err", "delta1", "delta2", "delta3"),
            "normal": ("mean", "median", "within_11.25", "within_22.5", "within_30"),
            "edge": ("bal_err", "f1"),
            "keypoint": ("bal_err",),
        }.get(self.name, ("err",))

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
    kind = _loss_kind(cfg.type, source)
    pos_weight = cfg.pos_weight if cfg.pos_weight is not None \
        else DEFAULT_POS_WEIGHT.get(cfg.type, 0.0)
    return Task(
        name=cfg.type,
        source=source,
        channels=classes if cfg.type == "seg" else _CHANNELS[cfg.type],
        loss_weight=cfg.loss_weight,
        head=cfg.head,
        resize=cfg.resize,
        loss_kind=kind,
        pos_weight=pos_weight,
        class_weights=tuple(class_weights) if cfg.type == "seg" and class_weights else None,
    )


def build_tasks(experiment: ExperimentConfig,
                seg_class_weights: Sequence[float] | None = None) -> tuple[Task, ...]:
    """Every task of an experiment, in its order; pass `dataset.info.seg_class_weights`."""
    return tuple(build_task(t, experiment.data.source,
                            seg_class_weights if t.type == "seg" else None)
                 for t in experiment.tasks)

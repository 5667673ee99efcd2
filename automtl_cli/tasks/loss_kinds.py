"""Loss kinds: the loss a task trains with, one strategy per `LossKind` (docs/adding-a-strategy.md).

A task type picks its kind for each data source (automtl_cli/tasks/types/); the formulas are in
automtl_cli/tasks/losses.py, whose docstring says what each computes. A kind also says whether
the head predicts logits, which sets the head's output prior and how its maps are decoded and
scored.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import torch

from automtl_cli.registry import Choice, Registry
from automtl_cli.tasks import losses

__all__ = ["LOSS_KINDS", "LossKind", "LossKindStrategy"]


class LossKind(Choice):
    CE = "ce"  # cross-entropy over classes, optionally class-weighted
    DEPTH = "depth"  # L1 over the reference's valid depth pixels
    NORMAL = "normal"  # 1 − cosine between unit normals
    WBCE = "wbce"  # positive-weighted binary cross-entropy on logits (synthetic sparse maps)
    L1 = "l1"  # L1 over valid pixels (the reference's dense maps)


class LossKindStrategy(ABC):
    """One loss kind: the loss of an aligned prediction, and what the head's output means."""

    name: ClassVar[LossKind]
    on_logits: ClassVar[bool] = False  # the head predicts logits, decoded with a sigmoid
    output_bias: ClassVar[float | None] = None  # the head's initial output bias, if not zero

    @abstractmethod
    def loss(self, pred: torch.Tensor, label: torch.Tensor, mask: torch.Tensor | None, *,
             task: str, class_weights: Sequence[float] | None,
             pos_weight: float) -> torch.Tensor:
        """The scalar loss of `pred` against `label` (same size; `mask` as the batch gives it)."""


LOSS_KINDS: Registry[LossKindStrategy] = Registry("loss kind", LossKind)


@LOSS_KINDS.register(LossKind.CE)
class CrossEntropy(LossKindStrategy):
    def loss(self, pred: torch.Tensor, label: torch.Tensor, mask: torch.Tensor | None, *,
             task: str, class_weights: Sequence[float] | None,
             pos_weight: float) -> torch.Tensor:
        return losses.ce_loss(pred, label, class_weights)


@LOSS_KINDS.register(LossKind.DEPTH)
class DepthL1(LossKindStrategy):
    def loss(self, pred: torch.Tensor, label: torch.Tensor, mask: torch.Tensor | None, *,
             task: str, class_weights: Sequence[float] | None,
             pos_weight: float) -> torch.Tensor:
        return losses.depth_loss(pred, label, mask)


@LOSS_KINDS.register(LossKind.NORMAL)
class Cosine(LossKindStrategy):
    def loss(self, pred: torch.Tensor, label: torch.Tensor, mask: torch.Tensor | None, *,
             task: str, class_weights: Sequence[float] | None,
             pos_weight: float) -> torch.Tensor:
        return losses.normal_loss(pred, label, mask)


@LOSS_KINDS.register(LossKind.WBCE)
class WeightedBce(LossKindStrategy):
    on_logits = True
    output_bias = -4.0  # sigmoid ≈ 0.018: sparse maps start near their mostly-zero answer

    def loss(self, pred: torch.Tensor, label: torch.Tensor, mask: torch.Tensor | None, *,
             task: str, class_weights: Sequence[float] | None,
             pos_weight: float) -> torch.Tensor:
        return losses.weighted_bce_loss(task, pred, label, mask, pos_weight)


@LOSS_KINDS.register(LossKind.L1)
class MaskedL1(LossKindStrategy):
    def loss(self, pred: torch.Tensor, label: torch.Tensor, mask: torch.Tensor | None, *,
             task: str, class_weights: Sequence[float] | None,
             pos_weight: float) -> torch.Tensor:
        return losses.l1_loss(task, pred, label, mask)


LOSS_KINDS.check_complete()

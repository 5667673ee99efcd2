"""Task losses, as the reference computes them (docs/method.md §6), plus one that learns keypoints.

Heads predict at the feature map's resolution. `align` brings prediction and label to one size:
`Resize.LABEL_TO_PRED` (the reference) nearest-downsamples the label and its mask;
`Resize.PRED_TO_LABEL` upsamples the prediction bilinearly. Then:

    seg       cross-entropy, ignore index 255, optional class weights (Taskonomy's prior)
    depth     L1 over valid pixels: the mask where given, else label > 3e-5 (the reference's rule)
    normal    1 − mean cosine between L2-normalised prediction and label over valid pixels
    l1        L1 over valid pixels (edge2d; Taskonomy keypoint and edge)
    wbce      per-pixel binary cross-entropy on logits, each pixel weighted by 1 + pos_weight·y,
              normalised by the weights (synthetic edge and keypoint)

Plain L1 on sparse targets learns nothing: its optimum is the median, zero. Cross-entropy's
optimum is the mean, so on soft keypoint heatmaps it learns calibrated probabilities (pos_weight
0 by default); on thin binary edges the positive weight trades calibration for recall (default
10, see automtl_cli/tasks/types/edge.py). Which pixels are valid is the task type's rule
(`TaskTypeStrategy.valid`, automtl_cli/tasks/types/); which loss a task takes is its loss kind
(automtl_cli/tasks/loss_kinds.py).

Every loss is a mean over valid pixels, and 0 (with a gradient path) when a batch has none.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from automtl_cli.data.base import IGNORE_INDEX
from automtl_cli.experiment import Resize, TaskType

__all__ = [
    "align",
    "ce_loss",
    "depth_loss",
    "l1_loss",
    "normal_loss",
    "valid_mask",
    "weighted_bce_loss",
]

DEPTH_MIN = 3e-5


def align(pred: torch.Tensor, label: torch.Tensor, mask: torch.Tensor | None,
          resize: Resize) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Prediction, label and mask at one spatial size (see module doc)."""
    size = tuple(label.shape[-2:])
    if tuple(pred.shape[-2:]) == size:
        return pred, label, mask
    if resize is Resize.PRED_TO_LABEL:
        return F.interpolate(pred, size=size, mode="bilinear", align_corners=False), label, mask
    target = tuple(pred.shape[-2:])
    if label.dim() == 3:  # seg N×H×W
        label = F.interpolate(label[:, None].float(), size=target, mode="nearest")[:, 0].long()
    else:
        label = F.interpolate(label, size=target, mode="nearest")
    if mask is not None:
        mask = F.interpolate(mask.float(), size=target, mode="nearest") > 0.5
    return pred, label, mask


@functools.cache
def _valid_rule(task: TaskType | str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A task type's valid-pixel rule, looked up once per type (this runs every step)."""
    # Imported here, not above: the task types build the metrics, which count pixels with this.
    from automtl_cli.tasks.types import TASK_TYPE_STRATEGIES

    return TASK_TYPE_STRATEGIES.get(task).valid


def valid_mask(task: TaskType | str, label: torch.Tensor,
               mask: torch.Tensor | None) -> torch.Tensor:
    """N×1×H×W boolean of the pixels a dense label counts at: its task type's rule and `mask`."""
    valid = _valid_rule(task)(label)
    return valid & mask if mask is not None else valid


def _masked_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    weight = valid.to(values.dtype)
    return (values * weight).sum() / weight.sum().clamp_min(1.0)


def ce_loss(pred: torch.Tensor, label: torch.Tensor,
            class_weights: Sequence[float] | None = None) -> torch.Tensor:
    weight = None if class_weights is None else pred.new_tensor(class_weights)
    per_pixel = F.cross_entropy(pred, label, weight=weight, ignore_index=IGNORE_INDEX,
                                reduction="none")
    valid = label != IGNORE_INDEX
    if weight is None:
        return _masked_mean(per_pixel, valid)
    w = weight[label.clamp(0, pred.shape[1] - 1)] * valid
    return per_pixel.sum() / w.sum().clamp_min(1e-12)


def depth_loss(pred: torch.Tensor, label: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return _masked_mean((pred - label).abs(), valid_mask(TaskType.DEPTH, label, mask))


def normal_loss(pred: torch.Tensor, label: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
    valid = valid_mask(TaskType.NORMAL, label, mask)
    cos = (F.normalize(pred, dim=1) * F.normalize(label, dim=1)).sum(1, keepdim=True)
    return 1.0 - _masked_mean(cos, valid)


def l1_loss(task: str, pred: torch.Tensor, label: torch.Tensor,
            mask: torch.Tensor | None) -> torch.Tensor:
    return _masked_mean((pred - label).abs(), valid_mask(task, label, mask))


def weighted_bce_loss(task: str, pred: torch.Tensor, label: torch.Tensor,
                      mask: torch.Tensor | None, pos_weight: float) -> torch.Tensor:
    per_pixel = F.binary_cross_entropy_with_logits(pred, label, reduction="none")
    weight = (1.0 + pos_weight * label) * valid_mask(task, label, mask)
    return (per_pixel * weight).sum() / weight.sum().clamp_min(1e-12)

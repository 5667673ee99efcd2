"""Metric accumulators: sums and confusion matrices over a whole split, reducible across processes.

Every accumulator keeps its state as a dict of tensors that only ever grow by addition
(`state`), so `merge` — or a `torch.distributed.all_reduce(SUM)` of each tensor — gives exactly
the result of one process seeing all the data. `update(pred, batch)` takes the head's raw output
and the batch; it never calls `.item()`, so a loop of updates does not synchronise with a device.
`compute()` returns plain floats.

Predictions are brought to the label's size (bilinear for the correct variant, nearest for the
reference variant, as its code does) and decoded (argmax for seg, sigmoid for logit maps).

Two variants, `MetricVariant` (docs/method.md §6); each rule on which they differ is one method
of `_Rules`, and a metric asks its variant's rules instead of comparing names:

- `correct`: mIoU over classes present in the labels or predictions; pixel accuracy over
  labelled pixels; every mean over all valid pixels of the split.
- `reference`: the reference's quirks, so its published numbers can be compared: mIoU averages
  only classes with a non-zero true-positive count; pixel accuracy, depth abs/rel and the
  Taskonomy errors are per-batch means averaged with batch-size weights; CityScapes' unlabelled
  pixels count (as errors) in pixel accuracy. δ and the normal angles are over all pixels in
  both variants, as in the reference.

Units follow the reference so Δ_T can use its single-task values: mIoU and pixel accuracy as
fractions, δ and the "within" angles in percent, angles in degrees. The median angle comes from a
0.01° histogram (to within 0.005°), which keeps it reducible.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from automtl_cli.choices import MetricVariant
from automtl_cli.data.base import IGNORE_INDEX
from automtl_cli.experiment import TaskType
from automtl_cli.tasks.losses import valid_mask

__all__ = ["DenseMapMetric", "DepthMetric", "Metric", "MetricVariant", "NormalMetric",
           "SegMetric"]

_HIST_BINS = 18000  # 0.01° bins over [0°, 180°]


class _Rules(abc.ABC):
    """The rules on which the variants differ; a metric asks its variant's rules, never its name."""

    @abc.abstractmethod
    def upsample(self, pred: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
        """Bring a prediction to the label's size."""

    @abc.abstractmethod
    def accumulate(self, total: torch.Tensor, count: torch.Tensor,
                   batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch's (sum, count) as the increments of the split's (numerator, denominator)."""

    @abc.abstractmethod
    def accuracy_pixels(self, labelled: torch.Tensor, count_unlabelled: bool) -> torch.Tensor:
        """The pixels pixel accuracy divides by."""

    @abc.abstractmethod
    def miou_classes(self, tp: torch.Tensor, union: torch.Tensor) -> torch.Tensor:
        """Which classes mIoU averages over."""


class _CorrectRules(_Rules):
    """Means over the whole split, of what is there."""

    def upsample(self, pred: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
        """Bilinear."""
        return F.interpolate(pred, size=size, mode="bilinear", align_corners=False)

    def accumulate(self, total: torch.Tensor, count: torch.Tensor,
                   batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Plain sums: every valid pixel of the split weighs the same."""
        return total.double(), count.double()

    def accuracy_pixels(self, labelled: torch.Tensor, count_unlabelled: bool) -> torch.Tensor:
        """The labelled pixels only."""
        return labelled

    def miou_classes(self, tp: torch.Tensor, union: torch.Tensor) -> torch.Tensor:
        """The classes present in the labels or the predictions."""
        return union > 0


class _ReferenceRules(_Rules):
    """The reference's quirks, so that its published numbers can be compared."""

    def upsample(self, pred: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
        """Nearest, as the reference's code does."""
        return F.interpolate(pred, size=size, mode="nearest")

    def accumulate(self, total: torch.Tensor, count: torch.Tensor,
                   batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch · mean, batch): per-batch means weighted by batch size; (0, 0) if empty."""
        has = (count > 0).to(torch.float64)
        mean = total.double() / count.double().clamp_min(1.0)
        return mean * batch * has, has * batch

    def accuracy_pixels(self, labelled: torch.Tensor, count_unlabelled: bool) -> torch.Tensor:
        """Every pixel where the dataset counts unlabelled ones as errors (CityScapes)."""
        return torch.ones_like(labelled) if count_unlabelled else labelled

    def miou_classes(self, tp: torch.Tensor, union: torch.Tensor) -> torch.Tensor:
        """Only the classes with a non-zero true-positive count."""
        return tp > 0


_RULES: Mapping[MetricVariant, _Rules] = {
    MetricVariant.CORRECT: _CorrectRules(),
    MetricVariant.REFERENCE: _ReferenceRules(),
}


class Metric:
    """Base: named tensor sums; subclasses define `_empty`, `update` and `compute`."""

    higher_is_better: Mapping[str, bool] = {}

    def __init__(self, task: str, variant: MetricVariant | str = MetricVariant.CORRECT,
                 decode: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.task = task
        self.variant = MetricVariant.parse(variant)
        self.rules = _RULES[self.variant]
        self.decode = decode or (lambda x: x)
        self.state: dict[str, torch.Tensor] = self._empty()

    def _empty(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError  # pragma: no cover - abstract

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.higher_is_better)

    def reset(self) -> None:
        self.state = self._empty()

    def merge(self, other: Metric) -> None:
        """Add another accumulator's sums (another process's share of the data)."""
        for key, value in other.state.items():
            self.state[key] = self.state[key] + value.to(self.state[key].device)

    def _add(self, **sums: torch.Tensor) -> None:
        for key, value in sums.items():
            current = self.state[key]
            if current.device != value.device:
                current = current.to(value.device)
            self.state[key] = current + value.to(current.dtype)

    def _upsample(self, pred: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        if tuple(pred.shape[-2:]) == tuple(size):
            return pred
        return self.rules.upsample(pred, tuple(size))

    def update(self, pred: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> None:
        raise NotImplementedError  # pragma: no cover - abstract

    def compute(self) -> dict[str, float]:
        raise NotImplementedError  # pragma: no cover - abstract


def _ratio(num: torch.Tensor, den: torch.Tensor, scale: float = 1.0) -> float:
    d = float(den)
    return float(num) / d * scale if d > 0 else math.nan


def _zeros(*keys: str) -> dict[str, torch.Tensor]:
    return {k: torch.zeros((), dtype=torch.float64) for k in keys}


class SegMetric(Metric):
    """mIoU and pixel accuracy from a confusion matrix; weighted cross-entropy "err" on request."""

    def __init__(self, task: str, classes: int,
                 variant: MetricVariant | str = MetricVariant.CORRECT, *,
                 class_weights: Sequence[float] | None = None, report_err: bool = False,
                 count_ignore_in_acc: bool = False) -> None:
        self.classes = classes
        self.class_weights = class_weights
        self.report_err = report_err
        self.count_ignore_in_acc = count_ignore_in_acc
        hib = {"mIoU": True, "pixel_acc": True}
        if report_err:
            hib = {"err": False, **hib}
        self.higher_is_better = hib
        super().__init__(task, variant)

    def _empty(self) -> dict[str, torch.Tensor]:
        return {"confusion": torch.zeros(self.classes, self.classes, dtype=torch.int64),
                **_zeros("acc_sum", "acc_n", "err_sum", "err_n")}

    def update(self, pred: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> None:
        label = batch[self.task]
        logits = self._upsample(pred.detach(), label.shape[-2:])
        guess = logits.argmax(1)
        c = self.classes
        labelled = (label != IGNORE_INDEX) & (label >= 0) & (label < c)
        index = label[labelled] * c + guess[labelled]
        confusion = torch.bincount(index, minlength=c * c).reshape(c, c)
        correct = (guess == label) & labelled
        n = label.shape[0]
        counted = self.rules.accuracy_pixels(labelled, self.count_ignore_in_acc)
        acc_sum, acc_n = self.rules.accumulate(correct.sum(), counted.sum(), n)
        self._add(confusion=confusion, acc_sum=acc_sum, acc_n=acc_n)
        if self.report_err:
            weight = None if self.class_weights is None else logits.new_tensor(self.class_weights)
            ce = F.cross_entropy(logits.float(), label, weight=weight, ignore_index=IGNORE_INDEX,
                                 reduction="none")
            w = labelled.double() if weight is None else \
                weight[label.clamp(0, c - 1)].double() * labelled
            err_sum, err_n = self.rules.accumulate(ce.sum(), w.sum(), n)
            self._add(err_sum=err_sum, err_n=err_n)

    def iou(self) -> torch.Tensor:
        cm = self.state["confusion"].double()
        tp = cm.diag()
        union = cm.sum(0) + cm.sum(1) - tp
        return tp / union.clamp_min(1.0)

    def compute(self) -> dict[str, float]:
        cm = self.state["confusion"]
        tp = cm.diag()
        union = cm.sum(0) + cm.sum(1) - tp
        keep = self.rules.miou_classes(tp, union)
        iou = self.iou()[keep]
        out = {"mIoU": float(iou.mean()) if iou.numel() else math.nan,
               "pixel_acc": _ratio(self.state["acc_sum"], self.state["acc_n"])}
        if self.report_err:
            out = {"err": _ratio(self.state["err_sum"], self.state["err_n"]), **out}
        return out


class DepthMetric(Metric):
    higher_is_better: Mapping[str, bool] = {
        "abs_err": False, "rel_err": False, "delta1": True, "delta2": True, "delta3": True}

    def _empty(self) -> dict[str, torch.Tensor]:
        return _zeros("abs_sum", "rel_sum", "abs_n", "count", "d1", "d2", "d3")

    def update(self, pred: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> None:
        label = batch[self.task]
        p = self.decode(self._upsample(pred.detach(), label.shape[-2:])).double()
        g = label.double()
        valid = valid_mask(TaskType.DEPTH, label, batch.get(f"{self.task}_mask"))
        err = (p - g).abs() * valid
        abs_sum, rel_sum = err.sum(), (err / g.clamp_min(1e-12)).sum()
        count = valid.sum().double()
        ratio = torch.maximum(p.clamp_min(1e-9) / g.clamp_min(1e-9),
                              g.clamp_min(1e-9) / p.clamp_min(1e-9))
        deltas = {f"d{k}": ((ratio < 1.25**k) & valid).sum().double() for k in (1, 2, 3)}
        n = label.shape[0]
        abs_sum, abs_n = self.rules.accumulate(abs_sum, count, n)
        rel_sum, _ = self.rules.accumulate(rel_sum, count, n)
        self._add(abs_sum=abs_sum, rel_sum=rel_sum, abs_n=abs_n, count=count, **deltas)

    def compute(self) -> dict[str, float]:
        s = self.state
        return {"abs_err": _ratio(s["abs_sum"], s["abs_n"]),
                "rel_err": _ratio(s["rel_sum"], s["abs_n"]),
                **{f"delta{k}": _ratio(s[f"d{k}"], s["count"], 100.0) for k in (1, 2, 3)}}


class NormalMetric(Metric):
    higher_is_better: Mapping[str, bool] = {
        "mean": False, "median": False, "within_11.25": True, "within_22.5": True,
        "within_30": True, "cos": True}

    def _empty(self) -> dict[str, torch.Tensor]:
        return {"hist": torch.zeros(_HIST_BINS, dtype=torch.int64),
                **_zeros("angle_sum", "count", "w11", "w22", "w30", "cos_sum", "cos_n")}

    def update(self, pred: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> None:
        label = batch[self.task]
        p = F.normalize(self._upsample(pred.detach(), label.shape[-2:]).double(), dim=1)
        g = F.normalize(label.double(), dim=1)
        valid = valid_mask(TaskType.NORMAL, label, batch.get(f"{self.task}_mask"))[:, 0]
        cos = (p * g).sum(1).clamp(-1.0, 1.0)[valid]
        angle = torch.rad2deg(torch.acos(cos))
        bins = (angle * (_HIST_BINS / 180.0)).long().clamp(0, _HIST_BINS - 1)
        count = valid.sum().double()
        cos_sum, cos_n = self.rules.accumulate(cos.sum(), count, label.shape[0])
        self._add(hist=torch.bincount(bins, minlength=_HIST_BINS), angle_sum=angle.sum(),
                  count=count, w11=(angle < 11.25).sum(), w22=(angle < 22.5).sum(),
                  w30=(angle < 30).sum(), cos_sum=cos_sum, cos_n=cos_n)

    def _median(self) -> float:
        """The median from the histogram: the middle order statistic, or the mean of the two."""
        hist = self.state["hist"].cpu()
        total = int(hist.sum())
        if total <= 0:
            return math.nan
        cum = hist.cumsum(0)

        def order_statistic(k: int) -> float:  # the k-th smallest angle (1-based), bin centre
            i = int(torch.searchsorted(cum, torch.tensor(k, dtype=cum.dtype)))
            return (i + 0.5) * 180.0 / _HIST_BINS

        if total % 2:
            return order_statistic((total + 1) // 2)
        return (order_statistic(total // 2) + order_statistic(total // 2 + 1)) / 2

    def compute(self) -> dict[str, float]:
        s = self.state
        return {"mean": _ratio(s["angle_sum"], s["count"]), "median": self._median(),
                "within_11.25": _ratio(s["w11"], s["count"], 100.0),
                "within_22.5": _ratio(s["w22"], s["count"], 100.0),
                "within_30": _ratio(s["w30"], s["count"], 100.0),
                "cos": _ratio(s["cos_sum"], s["cos_n"])}


class DenseMapMetric(Metric):
    """Edge, texture-edge and keypoint maps: L1 "err"; optional balanced L1 and F1.

    `bal_err` is the mean of the L1 inside and outside the label's positive region (label >
    `threshold`), so neither predicting zero everywhere (the trivial answer to sparse maps) nor
    predicting high everywhere scores well. `f1` thresholds prediction and label at `threshold`.
    """

    def __init__(self, task: str, variant: MetricVariant | str = MetricVariant.CORRECT, *,
                 decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 balanced: bool = False, f1: bool = False, threshold: float = 0.1) -> None:
        hib = {"err": False}
        if balanced:
            hib["bal_err"] = False
        if f1:
            hib["f1"] = True
        self.higher_is_better = hib
        self.threshold = threshold
        super().__init__(task, variant, decode)

    def _empty(self) -> dict[str, torch.Tensor]:
        return _zeros("abs_sum", "abs_n", "pos_sum", "pos_n", "neg_sum", "neg_n", "tp", "fp",
                      "fn")

    def update(self, pred: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> None:
        label = batch[self.task]
        p = self.decode(self._upsample(pred.detach(), label.shape[-2:])).double()
        g = label.double()
        valid = valid_mask(self.task, label, batch.get(f"{self.task}_mask"))
        err = (p - g).abs()
        count = valid.sum().double()
        abs_sum, abs_n = self.rules.accumulate((err * valid).sum(), count, label.shape[0])
        pos = (g > self.threshold) & valid
        neg = ~pos & valid
        hit = p > self.threshold
        self._add(abs_sum=abs_sum, abs_n=abs_n, pos_sum=(err * pos).sum(), pos_n=pos.sum(),
                  neg_sum=(err * neg).sum(), neg_n=neg.sum(), tp=(hit & pos).sum(),
                  fp=(hit & neg).sum(), fn=(~hit & pos).sum())

    def compute(self) -> dict[str, float]:
        s = self.state
        out = {"err": _ratio(s["abs_sum"], s["abs_n"])}
        if "bal_err" in self.higher_is_better:
            parts = [_ratio(s["pos_sum"], s["pos_n"]), _ratio(s["neg_sum"], s["neg_n"])]
            parts = [x for x in parts if not math.isnan(x)]
            out["bal_err"] = sum(parts) / len(parts) if parts else math.nan
        if "f1" in self.higher_is_better:
            out["f1"] = _ratio(2 * s["tp"], 2 * s["tp"] + s["fp"] + s["fn"])
        return out

"""The relative score Δ_T of a multi-task model against single-task results (docs/method.md §6).

For task t with metrics M_t:

    Δ_t = 100 / |M_t| · Σ_{j ∈ M_t} (−1)^{l_j} · (M_j − M_j^STL) / M_j^STL

with l_j = 1 where lower is better, so a positive Δ_t is a gain in percent; Δ_T is the mean of
Δ_t over tasks. `REFERENCE_STL` holds the single-task values hard-coded in the reference
(`define_refer`), in its units (mIoU and pixel accuracy as fractions, δ and angle thresholds
in percent); the metrics each Δ_t averages are each task's `delta_metrics`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from automtl_cli.errors import BadInput
from automtl_cli.experiment import DataSource

__all__ = ["REFERENCE_STL", "DeltaResult", "relative_score"]

REFERENCE_STL: Mapping[DataSource, Mapping[str, Mapping[str, float]]] = {
    DataSource.CITYSCAPES: {
        "seg": {"mIoU": 0.365, "pixel_acc": 0.738},
        "depth": {"abs_err": 0.026, "rel_err": 0.38, "delta1": 57.5, "delta2": 76.9,
                  "delta3": 87.0},
    },
    DataSource.NYUV2: {
        "seg": {"mIoU": 0.265, "pixel_acc": 0.582},
        "normal": {"mean": 17.7, "median": 16.3, "within_11.25": 29.4, "within_22.5": 72.3,
                   "within_30": 87.3},
        "depth": {"abs_err": 0.62, "rel_err": 0.24, "delta1": 57.8, "delta2": 85.8,
                  "delta3": 96.0},
    },
    DataSource.TASKONOMY: {
        "seg": {"err": 0.575},
        "normal": {"cos": 0.807},
        "depth": {"abs_err": 0.022},
        "keypoint": {"err": 0.197},
        "edge2d": {"err": 0.212},
    },
}


@dataclass(frozen=True)
class DeltaResult:
    per_task: dict[str, float]  # Δ_t in percent
    mean: float  # Δ_T in percent

    def to_dict(self) -> dict[str, object]:
        return {"per_task": dict(self.per_task), "mean": self.mean}


def relative_score(metrics: Mapping[str, Mapping[str, float]],
                   baseline: Mapping[str, Mapping[str, float]],
                   higher_is_better: Mapping[str, Mapping[str, bool]],
                   names: Mapping[str, Sequence[str]] | None = None) -> DeltaResult:
    """Δ_t per task and their mean Δ_T, over `names[t]` (default: the baseline's metrics)."""
    per_task: dict[str, float] = {}
    for task, values in metrics.items():
        if task not in baseline:
            raise BadInput(f"no single-task result for task {task!r} to compare with")
        chosen = list(names[task]) if names and task in names else list(baseline[task])
        if not chosen:
            raise BadInput(f"task {task!r}: no metrics to compare")
        total = 0.0
        for name in chosen:
            if name not in values or name not in baseline[task]:
                raise BadInput(f"task {task!r}: metric {name!r} is missing from the model's or "
                               "the single-task results")
            ref = float(baseline[task][name])
            if ref == 0:
                raise BadInput(f"task {task!r}: single-task {name} is 0; Δ is undefined")
            sign = 1.0 if higher_is_better[task][name] else -1.0
            total += sign * (float(values[name]) - ref) / ref
        per_task[task] = 100.0 * total / len(chosen)
    if not per_task:
        raise BadInput("no tasks to score")
    return DeltaResult(per_task, sum(per_task.values()) / len(per_task))

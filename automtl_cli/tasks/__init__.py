"""Tasks: registry, heads, losses, metrics and the relative score Δ_T (tasks-and-data layer).

API for the engine:

    tasks = build_tasks(experiment, dataset.info.seg_class_weights)   # tuple[Task, ...]
    head = task.make_head(in_channels, feature_hw)                    # nn.Module
    loss = task.loss(head(feature), batch)                            # scalar tensor
    total = sum(t.loss_weight * t.loss(preds[t.name], batch) for t in tasks)
    metric = task.metric(MetricVariant.CORRECT)   # or REFERENCE: the reference's quirks
    metric.update(pred, batch); ...; metric.compute()   # {name: float}
    metric.state                             # dict of sum tensors: all_reduce(SUM) to combine
    relative_score(metrics, stl_metrics, {t.name: t.higher_is_better for t in tasks},
                   {t.name: t.delta_metrics for t in tasks})          # Δ_t and Δ_T in %

Task types: `seg`, `depth`, `normal`, `edge` (occlusion edges), `edge2d` (texture edges),
`keypoint`, one strategy each in `tasks/types/`, each choosing a loss kind
(`tasks/loss_kinds.py`) per data source; task sets `nyu3` and `taskonomy5`
(automtl_cli/experiment/datasets.py).
"""

from automtl_cli.tasks.delta import REFERENCE_STL, DeltaResult, relative_score
from automtl_cli.tasks.heads import ASPPHead, LightHead, build_head, scaled_rates
from automtl_cli.tasks.metrics import (
    DenseMapMetric,
    DepthMetric,
    Metric,
    MetricVariant,
    NormalMetric,
    SegMetric,
)
from automtl_cli.tasks.registry import DEFAULT_POS_WEIGHT, Task, build_task, build_tasks

__all__ = [
    "DEFAULT_POS_WEIGHT",
    "REFERENCE_STL",
    "ASPPHead",
    "DeltaResult",
    "DenseMapMetric",
    "DepthMetric",
    "LightHead",
    "Metric",
    "MetricVariant",
    "NormalMetric",
    "SegMetric",
    "Task",
    "build_head",
    "build_task",
    "build_tasks",
    "relative_score",
    "scaled_rates",
]

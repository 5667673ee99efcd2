"""Task types and loss kinds: what each type answers fits together on every dataset that has its
labels, and a task keeps its loss kind as a plain name.

Parametrised over `TaskType` and `DATASET_TASKS`, so a new type or dataset is checked here
without a new line; that every choice has one strategy named after it and that an unknown name
lists the choices is checked for every registry in tests/test_strategies.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from automtl_cli.experiment import (
    DATASET_TASKS,
    TASK_TYPES,
    DataSource,
    TaskConfig,
    TaskType,
)
from automtl_cli.tasks import build_task
from automtl_cli.tasks.loss_kinds import LOSS_KINDS, LossKind
from automtl_cli.tasks.losses import valid_mask
from automtl_cli.tasks.types import TASK_TYPE_STRATEGIES

PAIRS = [(source, name) for source in DataSource for name in DATASET_TASKS[source]]


def _batch(name: str, channels: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    if name == TaskType.SEG:
        label = torch.randint(0, channels, (2, 8, 8), generator=g)
    elif name == TaskType.NORMAL:
        label = F.normalize(torch.randn(2, 3, 8, 8, generator=g), dim=1)
    else:
        label = torch.rand(2, 1, 8, 8, generator=g)
    return torch.randn(2, channels, 8, 8, generator=g), {name: label}


def test_task_types_are_the_enum_and_each_has_a_strategy():
    assert TASK_TYPES == TaskType.values() == (
        "seg", "depth", "normal", "edge", "edge2d", "keypoint")
    assert all(TASK_TYPE_STRATEGIES.get(name).name is TaskType(name) for name in TASK_TYPES)


def test_an_unknown_task_has_no_valid_pixel_rule():
    with pytest.raises(ValueError, match="task type: 'nonesuch' is not one of seg, depth"):
        valid_mask("nonesuch", torch.zeros(1, 1, 2, 2), None)


@pytest.mark.parametrize(("source", "name"), PAIRS, ids=lambda x: getattr(x, "value", x))
def test_each_types_delta_metrics_are_in_its_metrics_output(source, name):
    task = build_task(TaskConfig(type=name), source)
    pred, batch = _batch(name, task.channels)
    metric = task.metric()
    metric.update(pred, batch)
    out = metric.compute()
    assert set(task.delta_metrics) <= set(out) == set(task.higher_is_better)
    assert task.primary_metric == task.delta_metrics[0]


@pytest.mark.parametrize(("source", "name"), PAIRS, ids=lambda x: getattr(x, "value", x))
def test_a_task_keeps_its_loss_kind_as_a_plain_name(source, name):
    task = build_task(TaskConfig(type=name), source)
    assert type(task.loss_kind) is str
    assert task.loss_strategy is LOSS_KINDS.get(task.loss_kind)
    assert task.task_type is TASK_TYPE_STRATEGIES.get(name)


def test_loss_kinds_follow_the_registry_table():
    # automtl_cli/tasks/registry.py's module table
    synthetic = {name: build_task(TaskConfig(type=name), DataSource.SYNTHETIC).loss_kind
                 for name in TASK_TYPES}
    assert synthetic == {"seg": "ce", "depth": "depth", "normal": "normal", "edge": "wbce",
                         "edge2d": "l1", "keypoint": "wbce"}
    taskonomy = {name: build_task(TaskConfig(type=name), DataSource.TASKONOMY).loss_kind
                 for name in DATASET_TASKS[DataSource.TASKONOMY]}
    assert taskonomy == {"seg": "ce", "normal": "normal", "depth": "depth", "keypoint": "l1",
                         "edge2d": "l1"}
    assert {m for m in LossKind} == {LossKind(k) for k in {*synthetic.values(),
                                                           *taskonomy.values()}}


def test_only_logit_kinds_decode_with_a_sigmoid():
    pred = torch.tensor([[[[0.0, 2.0]]]])
    edge = build_task(TaskConfig(type="edge"), DataSource.SYNTHETIC)
    edge2d = build_task(TaskConfig(type="edge2d"), DataSource.SYNTHETIC)
    assert torch.equal(edge.decode(pred), torch.sigmoid(pred))
    assert torch.equal(edge2d.decode(pred), pred)

"""Which experiment a command runs: the embedded default or a file, with the flags applied.

Two commands apply `--tasks` and `--data` differently, and each has its own builder:

- `build_stage_experiment` (search, derive, run): a task the experiment does not configure
  copies its first task's head and resize; other data keeps the experiment's sizes.
- `build_preview_experiment` (`data preview`): without `--tasks`, the default and other data
  show every label the dataset has; other tasks and data return to their defaults
  (`ExperimentConfig.override`).
"""

from __future__ import annotations

import dataclasses

from automtl_cli.errors import BadInput
from automtl_cli.experiment.args import parse_data_arg, parse_tasks_arg
from automtl_cli.experiment.datasets import DATASET_TASKS, TASK_SETS, DataSource
from automtl_cli.experiment.reader import load_experiment
from automtl_cli.experiment.schema import (
    DataConfig,
    ExperimentConfig,
    HeadConfig,
    HeadKind,
    Resize,
    TaskConfig,
)

__all__ = ["build_preview_experiment", "build_stage_experiment", "default_experiment"]


def default_experiment() -> ExperimentConfig:
    """specs/experiments/synthetic.prototxt: synthetic nyu3 at a size the 2-core machines afford."""
    head = HeadConfig(kind=HeadKind.ASPP, dropout=0.0)
    tasks = tuple(TaskConfig(type=n, head=head, resize=Resize.PRED_TO_LABEL)
                  for n in TASK_SETS["nyu3"])
    data = DataConfig(source=DataSource.SYNTHETIC, batch_size=16, val_batch_size=32)
    return ExperimentConfig(name="synthetic-nyu3", tasks=tasks, data=data)


def build_stage_experiment(path: str | None, tasks: str | None, data: str | None
                           ) -> ExperimentConfig:
    """The experiment file (or the default) with --tasks and --data applied, resolved."""
    experiment = load_experiment(path) if path else default_experiment()
    if data:
        source, root = parse_data_arg(data)
        if source is not experiment.data.source or root != experiment.data.root:
            experiment = dataclasses.replace(
                experiment, data=dataclasses.replace(experiment.data, source=source, root=root))
    if tasks:
        names = parse_tasks_arg(tasks)
        known = {t.type: t for t in experiment.tasks}
        template = experiment.tasks[0]
        experiment = dataclasses.replace(experiment, tasks=tuple(
            known.get(n) or dataclasses.replace(template, type=n, classes=None, loss_weight=1.0,
                                                pos_weight=None)
            for n in names))
    try:
        return experiment.resolve()
    except ValueError as e:
        raise BadInput(f"experiment: {e}") from e


def build_preview_experiment(path: str | None, tasks: str | None, data: str | None
                             ) -> ExperimentConfig:
    """The experiment file (or the default) with --tasks and --data applied, for a preview."""
    explicit = path is not None
    experiment = load_experiment(path) if explicit else default_experiment()
    source, root = parse_data_arg(data) if data is not None else \
        (experiment.data.source, experiment.data.root)
    if tasks is not None:
        names = parse_tasks_arg(tasks)
    elif explicit and source is experiment.data.source:
        names = experiment.task_names
    else:  # a preview of the default, or of other data, shows every label the dataset has
        names = DATASET_TASKS[source]
    try:
        return experiment.override(tasks=names, source=source, root=root).resolve()
    except ValueError as e:
        raise BadInput(str(e)) from e

"""The experiment: which tasks (type, classes, loss weight, head) on which data, typed and frozen.

An experiment file is protobuf text in automtl's schema (`ExperimentParameter` in
proto/automtl.proto), read once, at the edge, into a typed tree; nothing inside the library sees
the message. The package, bottom to top:

    datasets.py   task types, task sets, splits, data sources; what each dataset has
    schema.py     the frozen dataclasses, validated in `__post_init__`; resolve, to/from dict
    reader.py     an experiment file or message → the tree (errors name file, field, line)
    args.py       `--tasks` and `--data` values
    resolve.py    the embedded default, and the default or a file with the flags applied

Every public name is importable from `automtl_cli.experiment`.
"""

from automtl_cli.experiment.args import parse_data_arg, parse_tasks_arg
from automtl_cli.experiment.datasets import (
    DATASET_CLASSES,
    DATASET_TASKS,
    NATIVE_SIZE,
    SPLITS,
    TASK_SETS,
    TASK_TYPES,
    DataSource,
    TaskType,
)
from automtl_cli.experiment.reader import experiment_from_message, load_experiment
from automtl_cli.experiment.resolve import (
    build_preview_experiment,
    build_stage_experiment,
    default_experiment,
)
from automtl_cli.experiment.schema import (
    DataConfig,
    ExperimentConfig,
    HeadConfig,
    HeadKind,
    Resize,
    SyntheticConfig,
    TaskConfig,
)

__all__ = [
    "DATASET_CLASSES",
    "DATASET_TASKS",
    "NATIVE_SIZE",
    "SPLITS",
    "TASK_SETS",
    "TASK_TYPES",
    "DataConfig",
    "DataSource",
    "ExperimentConfig",
    "HeadConfig",
    "HeadKind",
    "Resize",
    "SyntheticConfig",
    "TaskConfig",
    "TaskType",
    "build_preview_experiment",
    "build_stage_experiment",
    "default_experiment",
    "experiment_from_message",
    "load_experiment",
    "parse_data_arg",
    "parse_tasks_arg",
]

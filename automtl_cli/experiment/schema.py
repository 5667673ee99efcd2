"""The experiment's typed tree: frozen dataclasses that validate themselves when built.

    ExperimentConfig(name, tasks: tuple[TaskConfig, ...], data: DataConfig)
    TaskConfig(type, classes, loss_weight, head: HeadConfig, resize, pos_weight)
    DataConfig(source, root, seed, crop_size, test_size, ..., synthetic: SyntheticConfig)

Each dataclass checks itself in `__post_init__` with a `ValueError` naming the field (the reader
turns those into errors naming the file and line). `ExperimentConfig.resolve()` fills every
dataset-dependent default (classes, crop and test sizes), and `to_dict()` / `from_dict()`
round-trip the resolved tree through artifacts.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from automtl_cli.errors import BadInput
from automtl_cli.experiment.datasets import (
    DATASET_CLASSES,
    DATASET_TASKS,
    NATIVE_SIZE,
    REFERENCE_CROP,
    REFERENCE_TEST_SIZE,
    SPLITS,
    TASK_TYPES,
    DataSource,
    TaskType,
)

__all__ = [
    "DataConfig",
    "ExperimentConfig",
    "HeadConfig",
    "HeadKind",
    "Resize",
    "SyntheticConfig",
    "TaskConfig",
]


class HeadKind(enum.Enum):
    ASPP = "aspp"
    LIGHT = "light"


class Resize(enum.Enum):
    """Where a loss compares prediction and label (metrics always compare at the label's size)."""

    LABEL_TO_PRED = "label_to_pred"  # the reference: nearest-downsample the label
    PRED_TO_LABEL = "pred_to_label"  # bilinear-upsample the prediction


def _positive(name: str, value: float | int | None, *, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if value is None or value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")


@dataclass(frozen=True)
class HeadConfig:
    """A task head; `hidden=None` means half the feature channels (the reference uses 1024)."""

    kind: HeadKind = HeadKind.ASPP
    hidden: int | None = None
    rates: tuple[int, ...] = (6, 12, 18, 24)
    scale_rates: bool = True
    dropout: float = 0.5

    def __post_init__(self) -> None:
        _positive("head.hidden", self.hidden)
        if not self.rates or any(r < 1 for r in self.rates):
            raise ValueError(f"head.rate must be one or more positive integers, got {self.rates}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"head.dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class TaskConfig:
    type: str
    classes: int | None = None
    loss_weight: float = 1.0
    head: HeadConfig = field(default_factory=HeadConfig)
    resize: Resize = Resize.LABEL_TO_PRED
    pos_weight: float | None = None

    def __post_init__(self) -> None:
        if self.type not in TASK_TYPES:
            raise ValueError(f"task.type {self.type!r} is not one of {', '.join(TASK_TYPES)}")
        if self.classes is not None:
            if self.type != TaskType.SEG:
                raise ValueError(f"task.classes applies to seg only, not {self.type}")
            if self.classes < 2:
                raise ValueError(f"task.classes must be at least 2, got {self.classes}")
        if self.loss_weight < 0:
            raise ValueError(f"task.loss_weight must not be negative, got {self.loss_weight}")
        if self.pos_weight is not None and self.pos_weight < 0:
            raise ValueError(f"task.pos_weight must not be negative, got {self.pos_weight}")


@dataclass(frozen=True)
class SyntheticConfig:
    """Size, split counts and the scene knobs of the synthetic scenes (docs/synthetic-data.md)."""

    image_size: int = 64
    train: int = 2000
    train1: int = 1000
    train2: int = 1000
    val: int = 500
    test: int = 500
    min_objects: int = 3
    max_objects: int = 6
    min_object_size: float = 0.45
    max_object_size: float = 1.0
    texture_contrast: float = 1.0
    texture_frequency: float = 1.0
    texture_class_correlation: float = 0.0
    fog: float = 0.08
    noise: float = 0.02
    keypoint_sigma: float = 2.0

    def __post_init__(self) -> None:
        if self.image_size < 16:
            raise ValueError(f"synthetic.image_size must be at least 16, got {self.image_size}")
        for name in SPLITS:
            if getattr(self, name) < 0:
                raise ValueError(f"synthetic.{name} must not be negative")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError("synthetic.min_objects must be >= 1 and <= max_objects, got "
                             f"{self.min_objects} and {self.max_objects}")
        if not 0 < self.min_object_size <= self.max_object_size:
            raise ValueError("synthetic.min_object_size must be > 0 and <= max_object_size")
        for name in ("texture_contrast", "texture_frequency", "fog", "noise"):
            if getattr(self, name) < 0:
                raise ValueError(f"synthetic.{name} must not be negative")
        if not 0.0 <= self.texture_class_correlation <= 1.0:
            raise ValueError("synthetic.texture_class_correlation must be in [0, 1]")
        _positive("synthetic.keypoint_sigma", self.keypoint_sigma, allow_none=False)

    def count(self, split: str) -> int:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
        return int(getattr(self, split))

    def scene_key(self) -> dict[str, Any]:
        """The fields that change what a scene looks like (counts do not)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in SPLITS}


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from and how it is cut.

    A None size means the dataset's default (filled by `resolve`); test size (0, 0) keeps each
    test image's native size.
    """

    source: DataSource = DataSource.SYNTHETIC
    root: str | None = None
    seed: int = 0
    crop_size: tuple[int, int] | None = None
    test_size: tuple[int, int] | None = None
    min_scale: float = 0.5
    max_scale: float = 1.5
    flip: bool = True
    batch_size: int = 16
    val_batch_size: int = 8
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    def __post_init__(self) -> None:
        if self.source is not DataSource.SYNTHETIC and not self.root:
            raise ValueError(f"data.root is required for {self.source.value}")
        for name in ("crop_size", "test_size"):
            size = getattr(self, name)
            native_ok = name == "test_size" and size is not None and tuple(size) == NATIVE_SIZE
            if size is not None and not native_ok and (len(size) != 2 or min(size) < 1):
                raise ValueError(f"data.{name} must be H [W] positive integers, got {size}")
        if not 0 < self.min_scale <= self.max_scale:
            raise ValueError("data.min_scale must be > 0 and <= max_scale, got "
                             f"{self.min_scale} and {self.max_scale}")
        _positive("data.batch_size", self.batch_size, allow_none=False)
        _positive("data.val_batch_size", self.val_batch_size, allow_none=False)
        if self.seed < 0:
            raise ValueError(f"data.seed must not be negative, got {self.seed}")

    def resolve(self) -> DataConfig:
        """Fill the dataset's default crop and test sizes."""
        if self.source is DataSource.SYNTHETIC:
            return self
        crop = self.crop_size or REFERENCE_CROP[self.source]
        test = (tuple(self.test_size) if self.test_size is not None
                else REFERENCE_TEST_SIZE[self.source])
        return dataclasses.replace(self, crop_size=crop, test_size=test)


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "experiment"
    tasks: tuple[TaskConfig, ...] = ()
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError("an experiment needs at least one task")
        names = [t.type for t in self.tasks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"task type {', '.join(dupes)} is given more than once")
        available = DATASET_TASKS[self.data.source]
        missing = [n for n in names if n not in available]
        if missing:
            raise ValueError(f"{self.data.source.value} has no {', '.join(missing)} labels; it "
                             f"has {', '.join(available)}")

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(t.type for t in self.tasks)

    def task(self, name: str) -> TaskConfig:
        for t in self.tasks:
            if t.type == name:
                return t
        raise KeyError(name)

    def resolve(self) -> ExperimentConfig:
        """Fill dataset-dependent defaults: seg classes, crop and test sizes."""
        classes = DATASET_CLASSES[self.data.source]
        tasks = tuple(dataclasses.replace(t, classes=t.classes or classes)
                      if t.type == TaskType.SEG else t for t in self.tasks)
        return dataclasses.replace(self, tasks=tasks, data=self.data.resolve())

    def override(self, *, tasks: Sequence[str] | None = None, source: DataSource | None = None,
                 root: str | None = None) -> ExperimentConfig:
        """Other tasks and/or other data, applied together (each alone may not be valid).

        Named tasks the experiment configures keep their settings, others get defaults; on new
        data, dataset-dependent sizes and seg classes return to the dataset's defaults.
        """
        data, configured = self.data, self.tasks
        if source is not None and (source is not data.source or root != data.root):
            data = dataclasses.replace(data, source=source, root=root, crop_size=None,
                                       test_size=None)
            configured = tuple(dataclasses.replace(t, classes=None)
                               if t.type == TaskType.SEG else t for t in configured)
        if tasks is not None:
            known = {t.type: t for t in configured}
            configured = tuple(known.get(n) or TaskConfig(type=n) for n in tasks)
        return ExperimentConfig(name=self.name, tasks=configured, data=data)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExperimentConfig:
        """Rebuild from `to_dict()` output (as stored in artifacts)."""
        try:
            return _from_plain(cls, data)
        except (KeyError, TypeError, ValueError) as e:
            raise BadInput(f"stored experiment is not valid: {e}") from e


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _to_plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return [_to_plain(v) for v in value]
    return value


_NESTED = {"head": HeadConfig, "data": DataConfig, "synthetic": SyntheticConfig}
_ENUMS = {"kind": HeadKind, "resize": Resize, "source": DataSource}


def _from_plain(cls: type, data: Mapping[str, Any]) -> Any:
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        if f.name == "tasks":
            value = tuple(_from_plain(TaskConfig, t) for t in value)
        elif f.name in _NESTED:
            value = _from_plain(_NESTED[f.name], value)
        elif f.name in _ENUMS:
            value = _ENUMS[f.name](value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)

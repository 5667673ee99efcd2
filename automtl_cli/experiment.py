"""The experiment: which tasks (type, classes, loss weight, head) on which data, typed and frozen.

An experiment file is protobuf text in automtl's schema (`ExperimentParameter` in
proto/automtl.proto), after Caffe's solver files; `load_experiment` reads it once, at the edge,
into the typed tree below, and nothing inside the library sees the message. Each dataclass checks
itself in `__post_init__` with a `ValueError` naming the field; `load_experiment` turns those into
one-line `BadInput` errors naming the file (and the line, where the reader knows it).

    ExperimentConfig(name, tasks: tuple[TaskConfig, ...], data: DataConfig)
    TaskConfig(type, classes, loss_weight, head: HeadConfig, resize, pos_weight)
    DataConfig(source, root, seed, crop_size, test_size, ..., synthetic: SyntheticConfig)

`default_experiment()` is the embedded default (equal to specs/experiments/synthetic.prototxt);
`ExperimentConfig.resolve()` fills every dataset-dependent default (classes, crop and test
sizes), and `to_dict()` / `from_dict()` round-trip the resolved tree through artifacts.
Dataset facts that validation needs (which tasks each dataset has, its class count and the
reference's crop sizes, docs/method.md §4) live here, the lowest layer that needs them.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from automtl_cli.errors import BadInput, MissingInput, SourceError

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
    "default_experiment",
    "experiment_from_message",
    "load_experiment",
    "parse_data_arg",
    "parse_tasks_arg",
]

logger = logging.getLogger(__name__)

TASK_TYPES = ("seg", "depth", "normal", "edge", "edge2d", "keypoint")
TASK_SETS: Mapping[str, tuple[str, ...]] = {
    "nyu3": ("seg", "depth", "normal"),
    "taskonomy5": ("seg", "normal", "depth", "keypoint", "edge2d"),
}
SPLITS = ("train", "train1", "train2", "val", "test")


class DataSource(enum.Enum):
    SYNTHETIC = "synthetic"
    NYUV2 = "nyuv2"
    CITYSCAPES = "cityscapes"
    TASKONOMY = "taskonomy"


class HeadKind(enum.Enum):
    ASPP = "aspp"
    LIGHT = "light"


class Resize(enum.Enum):
    """Where a loss compares prediction and label (metrics always compare at the label's size)."""

    LABEL_TO_PRED = "label_to_pred"  # the reference: nearest-downsample the label
    PRED_TO_LABEL = "pred_to_label"  # bilinear-upsample the prediction


DATASET_TASKS: Mapping[DataSource, tuple[str, ...]] = {
    DataSource.SYNTHETIC: TASK_TYPES,
    DataSource.NYUV2: ("seg", "normal", "depth"),
    DataSource.CITYSCAPES: ("seg", "depth"),
    DataSource.TASKONOMY: ("seg", "normal", "depth", "keypoint", "edge2d"),
}
DATASET_CLASSES: Mapping[DataSource, int] = {
    DataSource.SYNTHETIC: 6,
    DataSource.NYUV2: 40,
    DataSource.CITYSCAPES: 19,
    DataSource.TASKONOMY: 17,
}
# The reference's training crops and test-time sizes (docs/method.md §4); (0, 0) keeps native size.
NATIVE_SIZE = (0, 0)
_CROP = {DataSource.NYUV2: (321, 321), DataSource.CITYSCAPES: (224, 224),
         DataSource.TASKONOMY: (224, 224)}
_TEST_SIZE = {DataSource.NYUV2: (321, 321), DataSource.CITYSCAPES: NATIVE_SIZE,
              DataSource.TASKONOMY: (224, 224)}


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
            if self.type != "seg":
                raise ValueError(f"task.classes applies to seg only, not {self.type}")
            if self.classes < 2:
                raise ValueError(f"task.classes must be at least 2, got {self.classes}")
        if self.loss_weight < 0:
            raise ValueError(f"task.loss_weight must not be negative, got {self.loss_weight}")
        if self.pos_weight is not None and self.pos_weight < 0:
            raise ValueError(f"task.pos_weight must not be negative, got {self.pos_weight}")


@dataclass(frozen=True)
class SyntheticConfig:
    """Size, split counts and the scene knobs of the synthetic scenes (data/synthetic.py)."""

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
        crop = self.crop_size or _CROP[self.source]
        test = tuple(self.test_size) if self.test_size is not None else _TEST_SIZE[self.source]
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
        tasks = tuple(dataclasses.replace(t, classes=t.classes or classes) if t.type == "seg"
                      else t for t in self.tasks)
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
            configured = tuple(dataclasses.replace(t, classes=None) if t.type == "seg" else t
                               for t in configured)
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


# --- the embedded default --------------------------------------------------------------------

def default_experiment() -> ExperimentConfig:
    """specs/experiments/synthetic.prototxt: synthetic nyu3 at a size the 2-core machines afford."""
    head = HeadConfig(kind=HeadKind.ASPP, dropout=0.0)
    tasks = tuple(TaskConfig(type=n, head=head, resize=Resize.PRED_TO_LABEL)
                  for n in TASK_SETS["nyu3"])
    data = DataConfig(source=DataSource.SYNTHETIC, batch_size=16, val_batch_size=32)
    return ExperimentConfig(name="synthetic-nyu3", tasks=tasks, data=data)


# --- command-line values ---------------------------------------------------------------------

def parse_tasks_arg(text: str) -> tuple[str, ...]:
    """`nyu3`, `taskonomy5`, or a comma list such as `seg,depth`."""
    text = text.strip()
    if text in TASK_SETS:
        return TASK_SETS[text]
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in TASK_TYPES]
    if not names or unknown:
        raise BadInput(f"unknown task {', '.join(unknown) or repr(text)}; use a set "
                       f"({', '.join(TASK_SETS)}) or a comma list of {', '.join(TASK_TYPES)}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise BadInput(f"task {', '.join(dupes)} is listed twice in {text!r}")
    return names


def parse_data_arg(text: str) -> tuple[DataSource, str | None]:
    """`synthetic`, or `nyuv2:DIR`, `cityscapes:DIR`, `taskonomy:DIR`."""
    name, sep, root = text.partition(":")
    try:
        source = DataSource(name.strip().lower())
    except ValueError:
        known = ", ".join(s.value for s in DataSource)
        raise BadInput(f"unknown dataset {name!r}; use one of {known}") from None
    if source is DataSource.SYNTHETIC:
        if root:
            raise BadInput("the synthetic dataset takes no directory")
        return source, None
    if not sep or not root:
        raise BadInput(f"{source.value} needs its directory: {source.value}:DIR")
    return source, root


# --- reading an experiment file --------------------------------------------------------------

def load_experiment(path: str | Path) -> ExperimentConfig:
    """Read and validate an experiment prototxt; errors name the file, field and line."""
    from automtl_cli.frontend.textformat import parse_text
    from automtl_cli.proto import automtl_pb2

    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"{path}: no such experiment file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"{path}: cannot read the experiment file ({e})") from e
    message = automtl_pb2.ExperimentParameter()
    parsed = parse_text(text, message, file=str(path))
    if parsed.unknown:
        u = parsed.unknown[0]
        more = f" (and {len(parsed.unknown) - 1} more)" if len(parsed.unknown) > 1 else ""
        raise SourceError(f'unknown field "{u.name}" in {u.message_type.split(".")[-1]}{more}',
                          file=str(path), line=u.line)
    return experiment_from_message(message, file=str(path), lines=parsed.net_lines)


def experiment_from_message(message: Any, *, file: str | None = None,
                            lines: Mapping[str, int] | None = None) -> ExperimentConfig:
    """`ExperimentParameter` → `ExperimentConfig`, validated, with dataset defaults filled."""
    lines = lines or {}
    where = "experiment"
    try:
        tasks = []
        for i, t in enumerate(message.task):
            where = f"task[{i}]" + (f' ("{t.type}")' if t.type else "")
            tasks.append(_task_from_message(t))
        where = "data"
        data = _data_from_message(message.data)
        where = "experiment"
        name = message.name or (Path(file).stem if file else "experiment")
        return ExperimentConfig(name=name, tasks=tuple(tasks), data=data).resolve()
    except ValueError as e:
        # The reader keeps the first line of each top-level field: exact for `data` and the
        # first task; later tasks are named by index instead.
        key = where.split("[")[0]
        line = None if where.startswith("task[") and not where.startswith("task[0]") \
            else lines.get(key)
        raise SourceError(f"{where}: {e}", file=file, line=line) from e


def _task_from_message(t: Any) -> TaskConfig:
    if not t.HasField("type"):
        raise ValueError("task.type is required")
    return TaskConfig(
        type=t.type,
        classes=t.classes if t.HasField("classes") else None,
        loss_weight=_plain_number(t.loss_weight),
        head=_head_from_message(t.head),
        resize=Resize.PRED_TO_LABEL if t.resize == t.PRED_TO_LABEL else Resize.LABEL_TO_PRED,
        pos_weight=_plain_number(t.pos_weight) if t.HasField("pos_weight") else None,
    )


def _head_from_message(h: Any) -> HeadConfig:
    default = HeadConfig()
    return HeadConfig(
        kind=HeadKind.LIGHT if h.type == h.LIGHT else HeadKind.ASPP,
        hidden=h.hidden if h.HasField("hidden") else None,
        rates=tuple(h.rate) or default.rates,
        scale_rates=h.scale_rates,
        dropout=_plain_number(h.dropout) if h.HasField("dropout") else default.dropout,
    )


def _plain_number(value: Any) -> Any:
    """A proto float is float32: 0.45 reads back as 0.4499999881; keep the written decimal."""
    return float(f"{value:.7g}") if isinstance(value, float) else value


def _size(values: Sequence[int], name: str) -> tuple[int, int] | None:
    if not values:
        return None
    if len(values) > 2:
        raise ValueError(f"data.{name} takes H or H and W, got {len(values)} values")
    return (int(values[0]), int(values[-1]))


def _data_from_message(d: Any) -> DataConfig:
    source = {d.SYNTHETIC: DataSource.SYNTHETIC, d.NYUV2: DataSource.NYUV2,
              d.CITYSCAPES: DataSource.CITYSCAPES, d.TASKONOMY: DataSource.TASKONOMY}[d.source]
    s = d.synthetic
    synthetic = SyntheticConfig(**{f.name: _plain_number(getattr(s, f.name))
                                   for f in fields(SyntheticConfig)})
    return DataConfig(
        source=source,
        root=d.root or None,
        seed=d.seed,
        crop_size=_size(d.crop_size, "crop_size"),
        test_size=_size(d.test_size, "test_size"),
        min_scale=_plain_number(d.min_scale),
        max_scale=_plain_number(d.max_scale),
        flip=d.flip,
        batch_size=d.batch_size,
        val_batch_size=d.val_batch_size,
        synthetic=synthetic,
    )

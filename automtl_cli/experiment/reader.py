"""Reading an experiment file: protobuf text in automtl's schema → the validated typed tree.

An experiment file is `ExperimentParameter` text (proto/automtl.proto), after Caffe's solver
files. `load_experiment` reads it once, at the edge; nothing inside the library sees the
message. A dataclass's `ValueError` becomes one `SourceError` naming the file, the field and,
where the text reader knows it, the line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from automtl_cli.errors import BadInput, MissingInput, SourceError
from automtl_cli.experiment.datasets import DataSource
from automtl_cli.experiment.schema import (
    DataConfig,
    ExperimentConfig,
    HeadConfig,
    HeadKind,
    Resize,
    SyntheticConfig,
    TaskConfig,
)

__all__ = ["experiment_from_message", "load_experiment"]


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

"""Command-line values of the experiment: `--tasks` and `--data` as typed values.

Bad values raise `BadInput` with the accepted ones listed.
"""

from __future__ import annotations

from automtl_cli.errors import BadInput
from automtl_cli.experiment.datasets import TASK_SETS, TASK_TYPES, DataSource

__all__ = ["parse_data_arg", "parse_tasks_arg"]


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

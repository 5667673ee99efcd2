"""Artifacts on disk: self-describing, written atomically, loaded as data (never code).

Every artifact is a dict with `kind`, `format_version` and `automtl_version`; a stage refuses an
artifact of another kind or a newer format with a message saying what it found. Writes go to a
temporary file in the target directory and are then `os.replace`d, so a crash never leaves a
half-written file where a good one was.
"""

from __future__ import annotations

import enum
import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from automtl_cli import __version__
from automtl_cli.errors import BadInput, MissingInput

__all__ = ["ArtifactKind", "atomic_copy", "atomic_write", "load_artifact", "read_artifact",
           "save_artifact", "write_json"]


class ArtifactKind(str, enum.Enum):
    """Every kind of file automtl writes; the value is what the file stores as `kind`."""

    SUPERMODEL = "supermodel"  # RUN/supermodel.pt (compile)
    SEARCH_CHECKPOINT = "search-checkpoint"  # RUN/search/step-N.pt, last.pt
    DERIVED_MODEL = "derived-model"  # RUN/derived/model.pt
    FINETUNE_CHECKPOINT = "finetune-checkpoint"  # RUN/finetune/step-N.pt, last.pt
    FINAL_MODEL = "final-model"  # RUN/final.pt
    EXPORT = "automtl-export"  # the metadata inside RUN/export/model.onnx or .ts

    def __str__(self) -> str:
        return self.value

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call `write(tmp_path)`, then move the finished file over `path` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_copy(source: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Copy `source` over `path` in one step (a crash leaves the old file or the new one)."""
    return atomic_write(path, lambda tmp: shutil.copyfile(source, tmp))


def write_json(path: str | os.PathLike, data: Any) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=False)
            f.write("\n")

    return atomic_write(path, write)


def save_artifact(path: str | os.PathLike, kind: ArtifactKind, format_version: int,
                  payload: dict[str, Any]) -> Path:
    data = {"kind": ArtifactKind(kind).value, "format_version": format_version,
            "automtl_version": __version__, **payload}
    return atomic_write(path, lambda tmp: torch.save(data, tmp))


def read_artifact(path: str | os.PathLike) -> dict[str, Any]:
    """Load any automtl artifact (for `inspect`, which dispatches on its kind)."""
    path = Path(path)
    if not path.exists():
        raise MissingInput(f"{path}: no such file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadInput(f"{path}: not a readable automtl artifact ({first})") from e
    if not isinstance(data, dict) or "kind" not in data:
        raise BadInput(f"{path}: not an automtl artifact (no `kind` field)")
    return data


def load_artifact(path: str | os.PathLike, kind: ArtifactKind,
                  max_version: int) -> dict[str, Any]:
    """Load an artifact of `kind`, refusing anything else with a clear reason."""
    path = Path(path)
    data = read_artifact(path)
    if data["kind"] != ArtifactKind(kind).value:
        raise BadInput(f"{path}: is a {data['kind']!r} artifact, expected "
                       f"{ArtifactKind(kind).value!r}")
    version = data.get("format_version")
    if not isinstance(version, int) or version > max_version:
        raise BadInput(f"{path}: format_version {version} is newer than this automtl "
                       f"({__version__}) reads (up to {max_version}); upgrade automtl")
    return data

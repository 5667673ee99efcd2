"""The one atomic writer, and torch's container read as data (never code).

Writes go to a temporary file in the target directory, are fsynced, then `os.replace`d, so a
crash never leaves a half-written file where a good one was. Every file automtl writes goes
through `atomic_write` (JSON, text, PNG, torch containers, exported models).
"""

from __future__ import annotations

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
from automtl_cli.artifacts.kinds import ArtifactKind
from automtl_cli.errors import BadInput, MissingInput

__all__ = ["atomic_copy", "atomic_link", "atomic_write", "read_payload", "save_payload",
           "write_json", "write_text"]


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


def atomic_link(source: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Point `path` at `source` in one step: a hard link where the file system allows, else a
    copy (`last.pt` → the newest `step-N.pt`)."""

    def link(tmp: str) -> None:
        os.unlink(tmp)
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)

    return atomic_write(path, link)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=False)
            f.write("\n")

    return atomic_write(path, write)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def save_payload(path: str | os.PathLike, kind: ArtifactKind, format_version: int,
                 payload: dict[str, Any]) -> Path:
    """A torch container of plain data and tensors, stamped with its kind and format."""
    data = {"kind": ArtifactKind(kind).value, "format_version": format_version,
            "automtl_version": __version__, **payload}
    return atomic_write(path, lambda tmp: torch.save(data, tmp))


def read_payload(path: str | os.PathLike) -> dict[str, Any]:
    """Any automtl torch container, as stored (`load` in types.py gives the typed view)."""
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

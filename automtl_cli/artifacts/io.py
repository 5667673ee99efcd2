"""The one atomic writer, and torch's container read as data (never code).

Writes go to a temporary file in the target directory, are fsynced, then `os.replace`d, so a
crash never leaves a half-written file where a good one was. Every file automtl writes goes
through `atomic_write` (JSON, text, PNG, torch containers, exported models).
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from automtl_cli import __version__
from automtl_cli.artifacts.kinds import ArtifactKind
from automtl_cli.errors import BadInput, CannotWrite, MissingInput

__all__ = ["atomic_copy", "atomic_link", "atomic_write", "check_writable", "load_data",
           "read_payload", "save_payload", "write_json", "write_text"]


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call `write(tmp_path)`, then move the finished file over `path` in one step."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise CannotWrite(f"{path}: cannot write here ({e.strerror or e})") from e
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):  # a full disk, a directory in the way, no permission
            raise CannotWrite(f"{path}: cannot write ({e.strerror or e}); the previous "
                              "file, if any, is intact") from e
        raise
    return path


def check_writable(path: str | os.PathLike, *, directory: bool = False) -> Path:
    """Fail early, with one line, when `path` (a file, or with `directory` a folder to write
    into) cannot be created or written: before minutes of work, not after them."""
    path = Path(path)
    folder = path if directory else path.parent
    if not directory and path.is_dir():
        raise CannotWrite(f"{path}: is a directory, where a file is to be written")
    if directory and path.exists() and not path.is_dir():
        raise CannotWrite(f"{path}: is a file, where a directory is to be written")
    blocker = next((p for p in folder.parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise CannotWrite(f"{path}: cannot create it, {blocker} is a file, not a directory")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise CannotWrite(f"{path}: cannot write here ({e.strerror or e})") from e
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

    def write(tmp: str) -> None:
        try:
            torch.save(data, tmp)
        except RuntimeError as e:  # torch's writer reports a failed write (a full disk) so
            raise OSError(errno.EIO, f"torch.save failed: {_first_line(e)}") from e

    return atomic_write(path, write)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _refused_code(e: BaseException) -> str | None:
    """The global the safe unpickler refused to construct, if that is why loading failed
    (torch's message goes on to advise loading unsafely, which we never repeat)."""
    if not isinstance(e, pickle.UnpicklingError):
        return None
    found = re.search(r"Unsupported (?:global|operand)[^:]*: ?(?:GLOBAL )?([\w.]+)", str(e))
    return found.group(1) if found else None


def load_data(path: str | os.PathLike, what: str) -> Any:
    """A torch container read as data only (`weights_only=True`): a file that would construct
    code, or is no torch container at all, is refused in one line naming the file."""
    path = Path(path)
    if not path.exists():
        raise MissingInput(f"{path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as e:
        code = _refused_code(e)
        if code is not None:
            raise BadInput(f"{path}: refused: it would have to construct {code!r}, which is "
                           f"code, not data; {what} hold only data and tensors, so this file "
                           "was not written as one or was altered") from e
        reason = _first_line(e).split(". ")[0]
        raise BadInput(f"{path}: not readable as {what} ({reason}; the file is truncated or "
                       "not a torch container)") from e


def read_payload(path: str | os.PathLike) -> dict[str, Any]:
    """Any automtl torch container, as stored (`load` in types.py gives the typed view)."""
    data = load_data(path, "automtl artifacts")
    if not isinstance(data, dict) or "kind" not in data:
        raise BadInput(f"{path}: not an automtl artifact (no `kind` field)")
    return data

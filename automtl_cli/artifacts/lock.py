"""One writer per run directory: an advisory lock held while a stage writes RUN.

Two processes writing one RUN interleave their logs and let `last.pt` go backwards across runs.
Each stage that writes RUN holds `RUN/.automtl.lock` with `flock` while it works. The kernel
releases the lock when its holder exits, however it exits, so a lock left by a crash is never
stale: the next process takes it and overwrites the holder's details. Nested stages of one
process (`run` composing the others) share the lock it already holds, and so do the worker
processes `run` starts while it holds it (`delegated_lock`).
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from automtl_cli.artifacts.io import check_writable
from automtl_cli.errors import CannotWrite

__all__ = ["RunBusy", "delegated_lock", "run_lock"]

LOCK_NAME = ".automtl.lock"
_held: dict[Path, int] = {}  # lock path → nesting depth, in this process


class RunBusy(CannotWrite):
    """Another process is writing this run directory."""


@contextmanager
def run_lock(run_dir: str | os.PathLike, *, enabled: bool = True) -> Iterator[None]:
    """Hold RUN's lock for the block (`enabled=False`: a non-writing rank, which holds none)."""
    if not enabled:
        yield
        return
    check_writable(run_dir, directory=True)
    path = Path(run_dir).resolve() / LOCK_NAME
    if path in _held:
        _held[path] += 1
        try:
            yield
        finally:
            _held[path] -= 1
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "unknown"
            raise RunBusy(f"{run_dir}: another automtl process is writing it ({holder}); "
                          "wait for it to finish, or use another run directory") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, (f"pid {os.getpid()} on {socket.gethostname()}, `automtl "
                       f"{' '.join(sys.argv[1:])[:200]}`, since "
                       f"{time.strftime('%Y-%m-%d %H:%M:%S')}").encode(), 0)
        _held[path] = 1
        try:
            yield
        finally:
            del _held[path]
    finally:
        os.close(fd)  # releases the lock


@contextmanager
def delegated_lock(run_dir: str | os.PathLike) -> Iterator[None]:
    """In a worker process of the lock's holder, for as long as the holder waits for it: the
    stages it runs write RUN under the holder's lock instead of asking for their own."""
    path = Path(run_dir).resolve() / LOCK_NAME
    _held[path] = _held.get(path, 0) + 1
    try:
        yield
    finally:
        _held[path] -= 1
        if not _held[path]:
            del _held[path]

"""Helpers for tests that run automtl as a separate process and compare what it leaves on disk.

No helper waits on a clock to decide an outcome: a test waits for a file to appear (bounded by a
generous timeout that only turns a hang into a failure), and a run that must be stopped mid-way
is given more steps than it could ever finish, so "it finished first" cannot happen.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

FOREVER = "1000000"  # iterations no test run reaches: it is always stopped by a signal


def launch(*args: str | os.PathLike, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python -m automtl_cli -q ARGS` in its own session, with the suite's thread count (the
    same threads give the same float sums, so in-process and separate runs agree)."""
    return subprocess.Popen(
        [sys.executable, "-m", "automtl_cli", "-q", *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path),
             "OMP_NUM_THREADS": str(torch.get_num_threads()), **(env or {})})


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process and everything it started (torchrun's workers too): a test that
    fails must not leave a run of a million steps behind it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    """Until `path` exists; fails if the process ends first or nothing appears in `timeout`."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            kill_group(proc)
            raise AssertionError(f"the process ended (exit {proc.returncode}) before {path} "
                                 f"appeared: {err[-2000:]}")
        if time.monotonic() > deadline:
            kill_group(proc)
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.02)


def finish(proc: subprocess.Popen, timeout: float = 300.0) -> tuple[int, str, str]:
    """Wait for the process to exit; past `timeout` it and its children are killed."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        raise
    return proc.returncode, out, err


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf of a nested checkpoint, by its path (`rng/0/torch`, `model/conv1.weight`)."""
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out.update(flatten(value, f"{prefix}{key}/"))
        return out
    if isinstance(obj, list | tuple):
        out = {}
        for i, value in enumerate(obj):
            out.update(flatten(value, f"{prefix}{i}/"))
        return out
    return {prefix.rstrip("/"): obj}


def assert_same_state(a: dict[str, Any], b: dict[str, Any], ignore: tuple[str, ...] = ()) -> int:
    """Every leaf equal: tensors bit for bit (`torch.equal`, dtype too), the rest by `==`.
    Returns the number of tensors compared."""
    fa, fb = flatten(a), flatten(b)
    keys = {k for k in fa if not k.startswith(ignore)}
    assert keys == {k for k in fb if not k.startswith(ignore)}, set(fa) ^ set(fb)
    tensors = 0
    different = []
    for key in sorted(keys):
        x, y = fa[key], fb[key]
        if isinstance(x, torch.Tensor):
            tensors += 1
            if not (isinstance(y, torch.Tensor) and x.dtype == y.dtype and torch.equal(x, y)):
                different.append(key)
        elif x != y:
            different.append(key)
    assert not different, f"{len(different)} of {len(keys)} leaves differ: {different[:8]}"
    return tensors


def log_records(path: Path, up_to: int | None = None) -> list[dict[str, Any]]:
    """A log.jsonl's records (wall times dropped), those of steps ≤ `up_to` if given."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for r in records:
        r.pop("elapsed_s", None)
    return [r for r in records if up_to is None or r["step"] <= up_to]

"""Checkpoints of a training loop: atomic, the last K kept, `last.pt` always the newest whole one.

A checkpoint is written to `step-N.pt` through a temporary file and `os.replace`, then `last.pt`
is pointed at it the same way (a hard link where the file system allows, else a copy), so a crash
at any moment leaves the previous complete checkpoint in place. Resuming checks the checkpoint's
kind and the run it belongs to before anything is loaded into a model.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from automtl_cli.artifacts import Artifact, load
from automtl_cli.artifacts.io import atomic_link
from automtl_cli.errors import BadInput, MissingInput

__all__ = ["CheckpointManager", "capture_rng", "restore_rank_rng", "restore_rng"]

_STEP_FILE = re.compile(r"step-(\d+)\.pt$")


def capture_rng() -> dict[str, Any]:
    """Python, numpy and torch random states, as plain data and tensors.

    A training step re-seeds these itself (automtl_cli/seeding.py); they are kept so that a
    resumed process also agrees on anything drawn between steps."""
    state: dict[str, Any] = {
        "python": _python_state_to_data(random.getstate()),
        "numpy": _numpy_state_to_data(np.random.get_state()),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(_python_state_from_data(state["python"]))
    np.random.set_state(_numpy_state_from_data(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def restore_rank_rng(states: list[dict[str, Any]] | dict[str, Any], rank: int,
                     world: int) -> None:
    """Each rank's own random state when the world size is the one saved, else rank 0's."""
    if isinstance(states, dict):
        states = [states]
    restore_rng(states[rank] if len(states) == world else states[0])


def _python_state_to_data(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _python_state_from_data(data: list) -> tuple:
    return (data[0], tuple(data[1]), data[2])


def _numpy_state_to_data(state: tuple) -> dict:
    name, keys, pos, has_gauss, cached = state
    return {"name": name, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)}


def _numpy_state_from_data(data: dict) -> tuple:
    return (data["name"], data["keys"].numpy().astype(np.uint32), data["pos"],
            data["has_gauss"], data["cached"])


class CheckpointManager:
    """`DIR/step-N.pt` files of one artifact class, the newest `keep` kept, and `DIR/last.pt`."""

    def __init__(self, directory: str | os.PathLike, artifact: type[Artifact],
                 keep: int = 3) -> None:
        self.dir = Path(directory)
        self.artifact, self.keep = artifact, max(1, keep)

    @property
    def last(self) -> Path:
        return self.dir / "last.pt"

    def steps(self) -> list[int]:
        if not self.dir.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.dir.iterdir()
                      if (m := _STEP_FILE.fullmatch(p.name)))

    def save(self, checkpoint: Artifact) -> Path:
        path = checkpoint.save(self.dir / f"step-{checkpoint.step}.pt")
        atomic_link(path, self.last)
        for old in self.steps()[:-self.keep]:
            (self.dir / f"step-{old}.pt").unlink(missing_ok=True)
        return path

    def load_last(self, run_id: dict[str, Any]) -> Any:
        """The newest complete checkpoint, refused if it belongs to another run."""
        if not self.last.exists():
            raise MissingInput(f"{self.last}: no checkpoint to resume from")
        data = load(self.last, self.artifact)
        theirs = data.run_id
        for key, ours in run_id.items():
            if theirs.get(key) != ours:
                raise BadInput(f"{self.last}: belongs to another run ({key} is "
                               f"{theirs.get(key)!r}, this run has {ours!r}); start afresh "
                               "without --resume or use another run directory")
        return data

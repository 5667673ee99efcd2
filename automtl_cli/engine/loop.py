"""What every training loop of automtl shares: steps, checkpoints, logs, signals, NaN guard.

A subclass says what one step does (`train_step`), what its state is (`state_dict` /
`load_state_dict`) and how a step is named in logs (`stage_of`); the loop around it is here:
progress on stderr, the global random generators seeded from (seed, loop, rank, step) before
every step (automtl_cli/seeding.py), one JSON line per log step, atomic checkpoints every N
steps and at the end, a checkpoint and exit 75 on SIGTERM/SIGUSR1, and a stop naming the task
and step at the first non-finite loss, without a host sync per step on a GPU.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from automtl_cli.artifacts import Artifact, write_text
from automtl_cli.engine.checkpoint import CheckpointManager
from automtl_cli.engine.distributed import Dist
from automtl_cli.engine.signals import StopRequest
from automtl_cli.errors import BadInput, Interrupted
from automtl_cli.seeding import seed_globals, stream_id

__all__ = ["NonFiniteLoss", "TrainLoop", "use_progress_bars"]


log = logging.getLogger(__name__)

ESTIMATE_AFTER = 3  # steps timed before the one line that says how long the loop will take
_bars = True  # progress bars on a terminal (not in `run`'s worker processes)


def use_progress_bars(enabled: bool) -> None:
    """Whether this process draws progress bars when stderr is a terminal; without them a
    loop still logs the line that says how long it will take."""
    global _bars
    _bars = enabled


def format_duration(seconds: float) -> str:
    """`42 s`, `3.5 min`, `1.2 h`: a duration as people say it."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class NonFiniteLoss(BadInput):
    """A loss became NaN or Inf; the last good checkpoint is kept."""


def _logged_step(line: str) -> float:
    """The step of a log line; a line cut short by a kill mid-write counts as after any step."""
    try:
        return int(json.loads(line)["step"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return float("inf")


class TrainLoop:
    config: Any  # the subclass's frozen configuration (a dataclass with `to_dict`)
    name = "train"
    extra_name = "extra"  # what the optional per-step scalar is called in the log

    def __init__(self, directory: str | os.PathLike, checkpoint: type[Artifact], *,
                 total: int, checkpoint_every: int, log_every: int, keep: int,
                 task_names: tuple[str, ...], device: torch.device, run_id: dict[str, Any],
                 seed: int, show_progress: bool = True, dist: Dist | None = None) -> None:
        self.dist = dist or Dist()
        self.dir = Path(directory)
        self.total, self.checkpoint_every, self.log_every = total, checkpoint_every, log_every
        self.task_names, self.device, self.run_id = task_names, device, run_id
        self.show_progress = show_progress and self.dist.is_main
        self.step = 0
        self.seed = seed
        self.checkpoints = CheckpointManager(self.dir, checkpoint, keep)
        self._first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self._loss_sum = torch.zeros(len(task_names), device=device)
        self._extra_sum = torch.zeros((), device=device)
        self._count = 0

    # ------------------------------------------------------------------ for subclasses

    def train_step(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One step; returns the detached per-task losses and an optional extra scalar."""
        raise NotImplementedError

    def stage_of(self, step: int) -> str:
        return self.name

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's fields other than `step` and `run_id`."""
        raise NotImplementedError

    def load_state_dict(self, state: Any) -> None:
        """Restore from the typed checkpoint `state_dict` was saved as."""
        raise NotImplementedError

    def log_fields(self) -> dict[str, Any]:
        return {}

    # ------------------------------------------------------------------ bookkeeping

    @property
    def log_path(self) -> Path:
        return self.dir / "log.jsonl"

    # Configuration fields a resumed run may change: how long it runs and how it reports
    # and executes, never what it computes.
    RESUMABLE_CHANGES = frozenset({"iters", "checkpoint_every", "log_every", "keep",
                                   "num_workers", "device"})

    def resume(self, state: Artifact | None = None) -> int:
        """Continue from `state` (read and checked by the caller before building the loop's
        data, so that a bad checkpoint fails in a second), else from `last.pt`."""
        if state is None:
            state = self.checkpoints.load_last(self.run_id)
        self._check_same_config(state.config)
        self.load_state_dict(state)
        self.step = state.step
        if self.log_path.exists() and self.dist.is_main:
            kept = [line for line in self.log_path.read_text(encoding="utf-8").splitlines()
                    if _logged_step(line) <= self.step]
            write_text(self.log_path, "".join(line + "\n" for line in kept))
        self.dist.barrier()
        return self.step

    def _check_same_config(self, stored: dict[str, Any]) -> None:
        """Refuse to continue a checkpoint made with another seed or other hyper-parameters."""
        current = self.config.to_dict()
        # a field added since the checkpoint was made reads as its default (e.g. precision)
        defaults = {f.name: f.default for f in dataclasses.fields(self.config)}
        stored = {**{k: v for k, v in defaults.items() if k not in stored}, **stored}
        changed = sorted(k for k in current.keys() | stored.keys()
                         if k not in self.RESUMABLE_CHANGES and current.get(k) != stored.get(k))
        if changed:
            what = ", ".join(f"{k} {stored.get(k)!r} → {current.get(k)!r}" for k in changed[:4])
            raise BadInput(f"{self.checkpoints.last}: was made with other settings ({what}); "
                           "resume with the same options, or start afresh without --resume")

    def _account(self, losses: torch.Tensor, extra: torch.Tensor | None) -> None:
        finite = torch.isfinite(losses)
        where = self.step * len(self.task_names) + torch.argmin(finite.to(torch.int64))
        self._first_bad = torch.where((self._first_bad < 0) & ~finite.all(), where,
                                      self._first_bad)
        self._loss_sum += torch.nan_to_num(losses)
        if extra is not None:
            self._extra_sum += extra.detach()
        self._count += 1

    def _flags(self, stop: bool) -> tuple[int, bool]:
        """The first non-finite loss (step × T + task, or −1) and the stop request, agreed by
        every rank in one collective."""
        if not self.dist.enabled:
            return int(self._first_bad), stop
        t = torch.stack([self._first_bad.to(torch.float64),
                         torch.tensor(1.0 if stop else 0.0, dtype=torch.float64,
                                      device=self.device)])
        self.dist.all_reduce_(t, "max")
        bad, flag = t.tolist()
        return int(bad), bool(flag)

    def check_finite(self, bad: int | None = None) -> None:
        if bad is None:
            bad, _ = self._flags(False)
        if bad < 0:
            return
        step, task = divmod(bad, len(self.task_names))
        last = self.checkpoints.last
        kept = f"the last good checkpoint is {last}" if last.exists() else "no checkpoint yet"
        raise NonFiniteLoss(f"the {self.task_names[task]} loss became non-finite at step {step} "
                            f"({self.stage_of(step)} step); {kept}. Lower the learning rate or "
                            "check the data")

    def _log(self, bar: tqdm | None, t0: float) -> dict[str, Any]:
        self.check_finite()
        n = max(self._count, 1)
        sums = torch.cat([self._loss_sum, self._extra_sum.view(1)]) / n
        sums = self.dist.all_reduce_(sums) / self.dist.world  # the mean over ranks
        losses = sums[:-1].tolist()
        extra = float(sums[-1])
        record = {"step": self.step, "stage": self.stage_of(self.step - 1),
                  "loss": {t: round(v, 6) for t, v in zip(self.task_names, losses)},
                  self.extra_name: round(extra, 6), **self.log_fields(),
                  "elapsed_s": round(time.perf_counter() - t0, 3)}
        if self.dist.is_main:
            self.dir.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        if bar is not None:
            bar.set_postfix({k: f"{v:.3f}" for k, v in record["loss"].items()}, refresh=False)
        self._loss_sum.zero_()
        self._extra_sum.zero_()
        self._count = 0
        return record

    def save(self) -> Path:
        """Every rank calls it (the state gathers from all); rank 0 alone writes."""
        self.check_finite()
        state = self.state_dict()
        path = self.checkpoints.dir / f"step-{self.step}.pt"
        if self.dist.is_main:
            path = self.checkpoints.save(self.checkpoints.artifact(
                step=self.step, run_id=self.run_id, **state))
        self.dist.barrier()
        return path

    def _estimate(self, bar: tqdm, first: int, elapsed: float) -> None:
        """One line, once the first steps are timed: what runs, how many steps, how long.
        Above the progress bar on a terminal, a log line otherwise; nothing when quiet."""
        if not self.show_progress or not self.dist.is_main:
            return
        done = self.step - first
        per_step = elapsed / done
        left = f"{self.total - first} steps" + (f" (resumed at {first})" if first else "")
        message = (f"{self.name}: {left}, about {format_duration(per_step * (self.total - first))}"
                   f" ({per_step:.2f} s/step over the first {done})")
        if bar.disable:
            log.info("%s", message)
        else:
            bar.write(message, file=sys.stderr)

    def run(self) -> dict[str, Any] | None:
        """Steps until `total`; returns the last log record."""
        t0 = time.perf_counter()
        disable = not self.show_progress or not _bars or not sys.stderr.isatty()
        record = None
        first = self.step
        with StopRequest() as stop, tqdm(total=self.total, initial=self.step, desc=self.name,
                                         file=sys.stderr, disable=disable,
                                         dynamic_ncols=True) as bar:
            stream = stream_id(self.name)
            while self.step < self.total:
                # dropout and every other draw from the global generators: keyed by the step
                seed_globals(self.seed, stream, self.dist.rank, self.step)
                losses, extra = self.train_step()
                self._account(losses, extra)
                self.step += 1
                bar.update(1)
                if self.step - first == min(ESTIMATE_AFTER, self.total - first):
                    self._estimate(bar, first, time.perf_counter() - t0)
                stopping = stop.requested is not None
                if self.device.type == "cpu" or self.dist.enabled:
                    # Free on CPU; distributed, one tiny collective agrees on NaN and signals.
                    bad, stopping = self._flags(stopping)
                    self.check_finite(bad)
                if self.step % self.log_every == 0 or self.step == self.total:
                    record = self._log(bar, t0)
                if self.step % self.checkpoint_every == 0 or self.step == self.total:
                    self.save()
                if stopping and self.step < self.total:
                    path = self.save()
                    why = stop.requested or "a signal to another rank"
                    raise Interrupted(f"{self.name} stopped by {why} at step {self.step}; "
                                      f"checkpoint {path}; rerun with --resume to continue")
        self.seconds = time.perf_counter() - t0
        return record

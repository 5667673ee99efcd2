"""`run`'s methods side by side: independent trainings in worker processes.

The baselines do not depend on the search, so `run` trains them while AutoMTL searches and
fine-tunes. On a CPU the small networks of a comparison use a second thread poorly (on the
2-core development machines one fine-tuning runs *slower* with two threads than with one) while
two processes of one thread each run at nearly twice the rate, so `run --jobs N` splits the
cores between N worker processes. What a method computes depends only on its seed and the
threads it gets, and those are fixed by N and the machine, so the same command gives the same
bits; `--jobs 1` runs the methods one after the other in the calling process.

Workers write under RUN, whose lock the calling process holds for them. A signal or an error
in one method stops the others (their loops checkpoint and exit) and is reported once.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any

from automtl_cli.artifacts.lock import delegated_lock
from automtl_cli.engine.signals import StopRequest
from automtl_cli.errors import AutomtlError, Interrupted

__all__ = ["Method", "auto_jobs", "run_methods", "threads_per_job"]

POLL_S = 0.2
STOP_GRACE_S = 60.0  # for a stopped worker's loop to write its checkpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Method:
    """One row of the comparison: `Pipeline.baseline(*args)` or `Pipeline.automtl()`."""

    label: str
    kind: str  # "baseline" | "automtl"
    args: tuple = ()
    seed: int | None = None


def auto_jobs(device: str) -> int:
    """Two workers on a CPU with at least two cores; one on an accelerator (one device)."""
    cores = os.cpu_count() or 1
    return 2 if device == "cpu" and cores >= 2 else 1


def threads_per_job(jobs: int) -> int:
    import torch

    return max(1, torch.get_num_threads() // jobs)


def _call(pipe, method: Method) -> dict[str, Any]:
    if method.kind == "automtl":
        return pipe.automtl()
    return pipe.baseline(*method.args, seed=method.seed)


def _worker(pipe, conn, threads: int, log_level: int, deterministic: bool) -> None:
    """A worker process: methods received on `conn` until None, each result (or its error, as
    class, message and traceback: an exception object may not survive pickling) sent back;
    it stops at the first error."""
    import torch

    from automtl_cli.allocator import keep_freed_memory
    from automtl_cli.cli.main import setup_logging
    from automtl_cli.engine.loop import use_progress_bars

    keep_freed_memory()  # as the CLI's own process does
    torch.set_num_threads(threads)
    if deterministic:  # `--deterministic` of the calling process
        from automtl_cli.seeding import enable_deterministic

        enable_deterministic()
    setup_logging(level=log_level)
    use_progress_bars(False)  # bars of several processes on one terminal garble each other
    with delegated_lock(pipe.run):
        while (item := conn.recv()) is not None:
            index, method = item
            pipe.started = index  # the method's announcement says [index+1/n]
            try:
                conn.send((index, True, _call(pipe, method)))
            except BaseException as e:  # reported by the parent, which decides the exit
                cls = type(e)
                conn.send((index, False, (cls.__module__, cls.__qualname__, str(e),
                                          traceback.format_exc())))
                return


def _reraise(error: tuple[str, str, str, str], label: str) -> None:
    module, name, message, trace = error
    log.debug("%s failed in a worker process:\n%s", label, trace)
    cls = getattr(sys.modules.get(module), name, None)
    if isinstance(cls, type) and issubclass(cls, AutomtlError):
        error_type = cls if cls.__init__ is AutomtlError.__init__ else _with_code(cls)
        raise error_type(message)
    raise RuntimeError(f"{label}: {name}: {message}")


def _with_code(cls: type[AutomtlError]) -> type[AutomtlError]:
    """An error class of the same exit code that takes one message (a class whose own
    constructor wants more than the message cannot be rebuilt from it)."""
    return type(cls.__name__, (AutomtlError,), {"exit_code": cls.exit_code})


def _stop(workers: list, finished: bool) -> None:
    """Workers that were told to end (`finished`) are given time to; the others get SIGTERM
    (a loop checkpoints and exits), then a kill for what is still running."""
    if finished:
        deadline = time.monotonic() + STOP_GRACE_S
        for w in workers:
            w.join(max(0.0, deadline - time.monotonic()))
    for w in workers:
        if w.is_alive():
            w.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for w in workers:
        w.join(max(0.0, deadline - time.monotonic()))
        if w.is_alive():
            w.kill()
            w.join()


def run_methods(pipe, methods: Sequence[Method], jobs: int,
                say: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    """Each method's result by label, in `methods`' order; `jobs` > 1: that many worker
    processes take the methods in order (put the longest first)."""
    if jobs <= 1:
        results = {}
        for i, method in enumerate(methods):
            pipe.started = i
            results[method.label] = _call(pipe, method)
        return results
    jobs = min(jobs, len(methods))
    threads = threads_per_job(jobs)
    say(f"{len(methods)} methods in {jobs} worker processes, {threads} thread"
        f"{'s' if threads > 1 else ''} each (--jobs 1: one after the other)")
    context = multiprocessing.get_context("spawn")  # no fork of a process with torch threads
    import torch

    level = logging.getLogger("automtl_cli").getEffectiveLevel()
    deterministic = torch.are_deterministic_algorithms_enabled()
    links, ends, workers = [], [], []
    for k in range(jobs):  # a pipe each (no queue: its semaphores outlive a stopped run)
        parent_end, child_end = context.Pipe()
        links.append(parent_end)
        ends.append(child_end)
        workers.append(context.Process(
            target=_worker, args=(pipe, child_end, threads, level, deterministic),
            name=f"automtl-run-{k}"))
    todo = list(enumerate(methods))
    out: dict[int, dict[str, Any]] = {}
    busy: dict[Any, Any] = {}  # link → its worker, while a method it was sent is unreported
    finished = False

    def hand_out(link, worker) -> None:
        if todo:
            link.send(todo.pop(0))
            busy[link] = worker
        else:
            link.send(None)  # the worker ends; its link is read no more
            busy.pop(link, None)

    try:
        with StopRequest() as stop:
            for worker, link, end in zip(workers, links, ends):
                worker.start()
                end.close()  # the worker's copy alone keeps it open: its exit reads as EOF
                hand_out(link, worker)
            while busy:
                if stop.requested:
                    raise Interrupted(f"run stopped by {stop.requested}; run it again to "
                                      "start over")
                for link in wait(list(busy), POLL_S):
                    try:
                        index, ok, payload = link.recv()
                    except EOFError:
                        raise RuntimeError(f"a worker process of the run ended (exit "
                                           f"{busy[link].exitcode}) without reporting its "
                                           "method") from None
                    if not ok:
                        _reraise(payload, methods[index].label)
                    out[index] = payload
                    hand_out(link, busy[link])
        finished = True
    finally:
        _stop(workers, finished)
        for link in links:
            link.close()
    return {m.label: out[i] for i, m in enumerate(methods)}

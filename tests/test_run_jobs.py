"""`run --jobs N`: the methods in worker processes compute what they compute one by one."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time

import pytest
import torch

from conftest import ROOT, TINY_EXPERIMENT
from conftest_proc import FOREVER, finish, kill_group, launch, wait_for

BACKBONE = ROOT / "specs" / "resnet18_w8.prototxt"
SHORT = ("--warmup-iters", "2", "--search-iters", "4", "--finetune-iters", "3", "--random", "1")


@pytest.fixture
def experiment(tmp_path, scene_cache):
    path = tmp_path / "tiny.prototxt"
    path.write_text(TINY_EXPERIMENT)
    return path


def _run_workers() -> list:
    """The run's worker processes still alive in this process (other tests' loaders may keep
    their own workers)."""
    return [p for p in multiprocessing.active_children() if p.name.startswith("automtl-run")]


def _methods(run) -> dict:
    return json.loads((run / "results.json").read_text())["methods"]


def test_workers_compute_what_one_process_computes(tmp_path, experiment, run_cli):
    threads = torch.get_num_threads()
    rc, out, err = run_cli("run", BACKBONE, "-o", tmp_path / "parallel", "--experiment",
                           experiment, *SHORT, "--jobs", "2")
    assert rc == 0, err
    assert "4 methods in 2 worker processes" in err
    per_worker = max(1, threads // 2)
    torch.set_num_threads(per_worker)  # the threads each worker had: the same float sums
    try:
        rc, sequential, err = run_cli("-q", "run", BACKBONE, "-o", tmp_path / "sequential",
                                      "--experiment", experiment, *SHORT, "--jobs", "1")
    finally:
        torch.set_num_threads(threads)
    assert rc == 0, err
    parallel, one = _methods(tmp_path / "parallel"), _methods(tmp_path / "sequential")
    assert list(parallel) == list(one) == ["single-task", "hard sharing", "random 0", "AutoMTL"]
    for method in one:
        for key in ("metrics", "delta", "params", "flops", "budget"):
            assert parallel[method].get(key) == one[method].get(key), (method, key)
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    assert [r.split("|")[1].strip() for r in rows[1:]] == list(one)
    for method, sub in (("AutoMTL", "."), ("hard sharing", "baselines/shared"),
                        ("random 0", "baselines/random-0")):  # each run's own file agrees
        stored = json.loads((tmp_path / "parallel" / sub / "metrics.json").read_text())
        assert stored["delta"] == parallel[method]["delta"], method
    assert not _run_workers()


def test_every_methods_file_gets_its_delta_when_single_task_finishes_last(
        tmp_path, experiment, run_cli, monkeypatch):
    """In worker processes a method may finish before the single-task networks exist; its
    metrics.json gets the table's Δ afterwards. Forced here: single-task trained last."""
    import automtl_cli.stages.run as run_stage

    real = run_stage.run_methods
    orders = []

    def single_task_last(pipe, methods, jobs, say):
        order = sorted(methods, key=lambda m: m.label == "single-task")
        orders.append([m.label for m in order])
        return real(pipe, order, 1, say)

    monkeypatch.setattr(run_stage, "run_methods", single_task_last)
    rc, _, err = run_cli("-q", "run", BACKBONE, "-o", tmp_path / "r", "--experiment",
                         experiment, *SHORT, "--jobs", "1")
    assert rc == 0, err
    assert orders and orders[0][-1] == "single-task"  # the order was the forced one
    methods = _methods(tmp_path / "r")
    for method, sub in (("AutoMTL", "."), ("hard sharing", "baselines/shared"),
                        ("random 0", "baselines/random-0")):
        stored = json.loads((tmp_path / "r" / sub / "metrics.json").read_text())
        assert stored.get("delta") == methods[method]["delta"], method


def test_a_worker_that_runs_out_of_methods_ends_while_the_other_trains(tmp_path, experiment,
                                                                       run_cli):
    """Three methods on two workers: the first to finish takes the third, the other ends while
    it trains (for seconds: longer than a worker takes to exit)."""
    rc, out, err = run_cli("-q", "run", BACKBONE, "-o", tmp_path / "r", "--experiment",
                           experiment, "--warmup-iters", "2", "--search-iters", "4",
                           "--finetune-iters", "60", "--jobs", "2")
    assert rc == 0, err
    assert list(_methods(tmp_path / "r")) == ["single-task", "hard sharing", "AutoMTL"]
    assert not _run_workers()


def test_an_error_in_a_worker_is_one_line_and_stops_the_others(tmp_path, experiment, run_cli):
    rc, _, err = run_cli("-q", "run", BACKBONE, "-o", tmp_path / "r", "--experiment", experiment,
                         *SHORT, "--jobs", "2", "--max-params", "1k")
    assert rc == 65, err
    assert len(err.strip().splitlines()) == 1 and "smallest backbone" in err, err
    assert not _run_workers()


def test_sigterm_stops_every_worker(tmp_path, experiment):
    run = tmp_path / "r"
    proc = launch("run", BACKBONE, "-o", run, "--experiment", experiment, "--warmup-iters", "2",
                  "--search-iters", "4", "--finetune-iters", FOREVER, "--jobs", "2")
    try:
        # both workers are training: the single-task baseline has its plan, AutoMTL searches
        wait_for(run / "baselines" / "specific" / "derived" / "plan.json", proc)
        wait_for(run / "search", proc)
        os.kill(proc.pid, signal.SIGTERM)  # the parent alone, as a scheduler's `kill` does
        rc, _, err = finish(proc)
        assert rc == 75, err
        assert "stopped by SIGTERM" in err
        # No worker outlives the run (multiprocessing's resource tracker, started with the
        # workers, may take a few seconds to notice its parent has gone).
        deadline = time.monotonic() + 60
        with pytest.raises(ProcessLookupError):
            while time.monotonic() < deadline:
                os.killpg(proc.pid, 0)
                time.sleep(0.1)
    finally:
        kill_group(proc)

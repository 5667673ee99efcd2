"""Same seed, same bits: with dropout-0.5 heads, on synthetic scenes and on augmented NYUv2.

For `search` and `finetune` alike: two runs with one seed end with equal checkpoints (every
tensor, the random states included), and a run SIGKILLed after a checkpoint and resumed with
`--resume` reaches a later checkpoint equal to the uninterrupted run's. The killed runs are
given more iterations than they could ever finish and are stopped by signals at checkpoints
the test names, so no outcome depends on the machine's speed.
"""

from __future__ import annotations

import shutil
import signal

import pytest

from automtl_cli.cli.main import main

from conftest import ROOT
from conftest_data import write_nyuv2
from conftest_proc import (
    FOREVER,
    assert_same_state,
    finish,
    flatten,
    launch,
    load,
    log_records,
    wait_for,
)

HEADS = "head { type: ASPP hidden: 16 dropout: 0.5 }"

SYNTHETIC = f"""name: "dropout-synthetic"
task {{ type: "seg" {HEADS} }}
task {{ type: "depth" {HEADS} }}
data {{
  source: SYNTHETIC
  batch_size: 4
  val_batch_size: 8
  synthetic {{ image_size: 32 train: 16 train1: 16 train2: 16 val: 8 test: 8 }}
}}
"""

NYUV2 = f"""name: "dropout-nyuv2"
task {{ type: "seg" classes: 40 {HEADS} }}
task {{ type: "depth" {HEADS} }}
data {{
  source: NYUV2
  root: "{{root}}"
  crop_size: [16, 16]
  test_size: [16, 16]
  min_scale: 0.6
  max_scale: 1.4
  flip: true
  batch_size: 2
  val_batch_size: 2
}}
"""

SEARCH = ["--warmup-iters", "6", "--policy-steps", "2", "--weight-steps", "2",
          "--checkpoint-every", "4", "--log-every", "2", "--keep", "1000", "--seed", "7"]
FINETUNE = ["--checkpoint-every", "4", "--log-every", "2", "--keep", "1000", "--seed", "7",
            "--lr-step", "5"]
EVERY = 4


@pytest.fixture(params=["synthetic", "nyuv2"])
def case(request, tmp_path, scene_cache):
    """(experiment file, a compiled run directory) for one data source."""
    if request.param == "synthetic":
        text = SYNTHETIC
    else:
        root = write_nyuv2(tmp_path / "nyu", hw=(20, 22),
                           sizes={"train": 8, "train1": 8, "train2": 8, "test": 4})
        text = NYUV2.replace("{root}", str(root))
    experiment = tmp_path / "experiment.prototxt"
    experiment.write_text(text)
    run = tmp_path / "a"
    assert main(["-q", "compile", str(ROOT / "specs" / "resnet18_w8.prototxt"), "-o", str(run),
                 "--tasks", "seg,depth"]) == 0
    return experiment, run


def _twin(run, name):
    """Another run directory holding the same inputs (supermodel, derived model) as `run`."""
    twin = run.parent / name
    twin.mkdir()
    shutil.copy(run / "supermodel.pt", twin / "supermodel.pt")
    if (run / "derived").is_dir():
        shutil.copytree(run / "derived", twin / "derived")
    return twin


def _stage_args(stage, run, experiment, iters):
    if stage == "search":
        return ["search", run, "--experiment", experiment, "--iters", iters, *SEARCH]
    return ["finetune", run, "--iters", iters, *FINETUNE]


def _prepare(stage, run, experiment):
    if stage == "finetune":
        assert main(["-q", "derive", str(run), "--plan", "shared", "--experiment",
                     str(experiment)]) == 0


@pytest.mark.parametrize("stage", ["search", "finetune"])
def test_two_runs_with_one_seed_are_equal(stage, case, run_cli):
    experiment, run = case
    _prepare(stage, run, experiment)
    twin = _twin(run, "b")
    for directory in (run, twin):
        rc, _, err = run_cli("-q", *_stage_args(stage, directory, experiment, "14"))
        assert rc == 0, err
    a, b = load(run / stage / "last.pt"), load(twin / stage / "last.pt")
    assert a["step"] == b["step"] == (20 if stage == "search" else 14)
    compared = assert_same_state(a, b)
    assert compared > 50  # weights, optimiser moments, random states: every tensor
    assert {"rng/0/torch", "rng/0/numpy/keys"} <= set(flatten(a))
    assert log_records(run / stage / "log.jsonl") == log_records(twin / stage / "log.jsonl")


@pytest.mark.parametrize("stage", ["search", "finetune"])
def test_sigkill_then_resume_continues_the_same_run(stage, case):
    experiment, run = case
    _prepare(stage, run, experiment)
    twin = _twin(run, "b")
    args = _stage_args(stage, twin, experiment, FOREVER)
    # Killed without warning some time after its second checkpoint.
    proc = launch(*args)
    wait_for(twin / stage / f"step-{2 * EVERY}.pt", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load(twin / stage / "last.pt")["step"]
    target = killed_at + 2 * EVERY
    # Resumed, then stopped by SIGTERM once it has written the target checkpoint.
    proc = launch(*args, "--resume")
    wait_for(twin / stage / f"step-{target}.pt", proc)
    proc.send_signal(signal.SIGTERM)
    rc, _, err = finish(proc)
    assert rc == 75, err
    # The uninterrupted run, stopped the same way past the same checkpoint.
    proc = launch(*_stage_args(stage, run, experiment, FOREVER))
    wait_for(run / stage / f"step-{target}.pt", proc)
    proc.send_signal(signal.SIGTERM)
    rc, _, err = finish(proc)
    assert rc == 75, err
    assert_same_state(load(run / stage / f"step-{target}.pt"),
                      load(twin / stage / f"step-{target}.pt"))
    assert log_records(run / stage / "log.jsonl", target) == \
        log_records(twin / stage / "log.jsonl", target)


def test_deterministic_flag_runs_and_keeps_the_bits(case, run_cli):
    experiment, run = case
    twin = _twin(run, "b")
    rc, _, err = run_cli("-q", *_stage_args("search", run, experiment, "6"))
    assert rc == 0, err
    proc = launch(*_stage_args("search", twin, experiment, "6"), "--deterministic")
    rc, _, err = finish(proc)
    assert rc == 0, err
    assert_same_state(load(run / "search" / "last.pt"), load(twin / "search" / "last.pt"))

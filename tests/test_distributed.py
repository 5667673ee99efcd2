"""Data-parallel runs under torchrun, with 2 CPU processes (gloo)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from conftest_proc import FOREVER, finish, wait_for

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="torchrun with gloo on POSIX")


def _torchrun(args: list[str], nproc: int = 2, extra: list[str] | None = None,
              wait: bool = True):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", *(extra or []), "-m", "automtl_cli", "-q", *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    if not wait:
        return proc
    rc, out, err = finish(proc, timeout=600)  # a hang kills torchrun and its workers
    return subprocess.CompletedProcess(cmd, rc, out, err)


def _ckpts(directory):
    return {int(p.stem.split("-")[1]): torch.load(p, weights_only=True)
            for p in directory.glob("step-*.pt")}


SEARCH = ["--warmup-iters", "2", "--iters", "6", "--policy-steps", "2", "--weight-steps", "1",
          "--checkpoint-every", "2", "--keep", "10"]


def test_search_and_finetune_under_torchrun(tiny_run, run_cli):
    exp = str(tiny_run.parent / "tiny.prototxt")
    done = _torchrun(["search", str(tiny_run), "--experiment", exp, *SEARCH, "--json"])
    assert done.returncode == 0, done.stderr
    assert len([line for line in done.stdout.splitlines() if line.startswith("{")]) == 1
    checkpoints = _ckpts(tiny_run / "search")
    assert sorted(checkpoints) == [2, 4, 6, 8]
    for step, state in checkpoints.items():
        digests = state["rank_digests"]
        assert len(digests) == 2 and digests[0] == digests[1], step  # same logits and weights
        assert len(state["rng"]) == 2
    rc, _, err = run_cli("-q", "derive", tiny_run, "--plan", "shared")
    assert rc == 0, err
    done = _torchrun(["finetune", str(tiny_run), "--iters", "4", "--checkpoint-every", "2",
                      "--keep", "10", "--json"])
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["steps"] == 4 and (tiny_run / "final.pt").exists()
    for state in _ckpts(tiny_run / "finetune").values():
        assert state["rank_digests"][0] == state["rank_digests"][1]


def test_sync_bn_two_processes_equal_one(tiny_run, run_cli, tmp_path):
    rc, _, err = run_cli("-q", "derive", tiny_run, "--plan", "shared", "--experiment",
                         tiny_run.parent / "tiny.prototxt")
    assert rc == 0, err
    twin = tmp_path / "twin"
    twin.mkdir()
    for name in ("supermodel.pt",):
        (twin / name).write_bytes((tiny_run / name).read_bytes())
    (twin / "derived").mkdir()
    (twin / "derived" / "model.pt").write_bytes((tiny_run / "derived" / "model.pt").read_bytes())
    common = ["--iters", "3", "--checkpoint-every", "3", "--lr", "1e-3"]
    rc, _, err = run_cli("-q", "finetune", tiny_run, *common, "--batch-size", "4")
    assert rc == 0, err
    done = _torchrun(["finetune", str(twin), *common, "--batch-size", "2", "--sync-bn"])
    assert done.returncode == 0, done.stderr
    one = torch.load(tiny_run / "finetune" / "last.pt", weights_only=True)["model"]
    two = torch.load(twin / "finetune" / "last.pt", weights_only=True)["model"]
    for key, value in one.items():
        if value.is_floating_point():
            torch.testing.assert_close(two[key], value, rtol=1e-4, atol=1e-4, msg=key)


def test_eval_under_two_processes_equals_one(tiny_run, run_cli):
    rc, _, err = run_cli("-q", "derive", tiny_run, "--plan", "specific", "--experiment",
                         tiny_run.parent / "tiny.prototxt")
    assert rc == 0, err
    rc, _, err = run_cli("-q", "finetune", tiny_run, "--iters", "2")
    assert rc == 0, err
    rc, out, err = run_cli("-q", "eval", tiny_run / "final.pt", "--split", "val",
                           "--batch-size", "3")
    assert rc == 0, err
    single = json.loads(out)["metrics"]
    done = _torchrun(["eval", str(tiny_run / "final.pt"), "--split", "val", "--batch-size", "3"])
    assert done.returncode == 0, done.stderr
    double = json.loads(done.stdout.strip().splitlines()[-1])["metrics"]
    for task, values in single.items():
        for name, value in values.items():  # sums reduced exactly; only float order differs
            assert double[task][name] == pytest.approx(value, rel=1e-6, abs=1e-9), (task, name)


def test_torchrun_restarts_a_killed_worker_from_the_last_checkpoint(tiny_run):
    """A worker SIGKILLed after a checkpoint: torchrun restarts both, they resume from the last
    checkpoint (no step logged twice), and SIGTERM to the job then stops it with a checkpoint.
    The run has more steps than it could finish, so no outcome depends on the machine's speed."""
    exp = str(tiny_run.parent / "tiny.prototxt")
    args = ["search", str(tiny_run), "--experiment", exp, "--warmup-iters", "4", "--iters",
            FOREVER, "--policy-steps", "2", "--weight-steps", "2", "--checkpoint-every", "4",
            "--keep", "1000"]
    proc = _torchrun(args, extra=["--max-restarts=1"], wait=False)
    wait_for(tiny_run / "search" / "step-8.pt", proc)
    workers = subprocess.run(["pgrep", "-f", "automtl_cli -q search", "-P", str(proc.pid)],
                             capture_output=True, text=True).stdout.split()
    assert workers, "no worker processes found"
    os.kill(int(workers[-1]), signal.SIGKILL)
    killed_at = torch.load(tiny_run / "search" / "last.pt", weights_only=True)["step"]
    # Every step has a collective, so the surviving rank cannot get far alone: this checkpoint
    # can only come from the restarted workers.
    wait_for(tiny_run / "search" / f"step-{killed_at + 12}.pt", proc)
    os.killpg(proc.pid, signal.SIGTERM)
    _, _, err = finish(proc)
    # the workers stopped at the next step boundary with a checkpoint (each exits 75)
    final = torch.load(tiny_run / "search" / "last.pt", weights_only=True)
    assert not final["complete"] and final["step"] > killed_at + 12, err[-2000:]
    assert (tiny_run / "search" / f"step-{final['step']}.pt").exists()
    steps = [json.loads(x)["step"] for x in
             (tiny_run / "search" / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # the resumed run rewrote no step twice

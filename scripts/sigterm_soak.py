#!/usr/bin/env python3
"""SIGTERM to the whole process group of a search and of a finetune with `--workers 2`, N times.

What `scancel` and a terminal's Ctrl-C-then-kill do: every process of the job, data workers
included, gets the signal. Each round, from a fresh copy of one compiled tiny run: a search
(then a finetune) with two data workers is started in its own process group, signalled as soon
as its first checkpoint exists, and must exit 75 with no process of the group left; `--resume`
must then finish the run (exit 0). Prints one line per round and a summary; exits 1 on any
failure.

    python scripts/sigterm_soak.py --rounds 20
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

EXPERIMENT = """name: "soak"
task { type: "seg" head { type: LIGHT } }
task { type: "depth" head { type: LIGHT } }
data {
  source: SYNTHETIC
  batch_size: 4
  val_batch_size: 8
  synthetic { image_size: 32 train: 16 train1: 16 train2: 16 val: 16 test: 16 }
}
"""

SEARCH = ["--warmup-iters", "4", "--iters", "36", "--policy-steps", "2", "--weight-steps", "2",
          "--checkpoint-every", "4", "--workers", "2"]
FINETUNE = ["--iters", "40", "--checkpoint-every", "4", "--workers", "2"]


def _automtl(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "automtl_cli", "-q", *map(str, args)]


def _group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def _stop_with_group_sigterm(cmd: list[str], first: Path, env: dict, timeout: float) -> str:
    """Start `cmd`, SIGTERM its group once `first` exists; '' when all went as it should."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not first.exists():
            if proc.poll() is not None:
                return f"ended (exit {proc.returncode}) before its first checkpoint"
            if time.monotonic() > deadline:
                return "no first checkpoint in time"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=timeout)
        if proc.returncode != 75:
            return f"exit {proc.returncode}: {err.strip()[-300:]}"
        if not _group_gone(proc.pid, 30.0):
            return "processes of the group were left behind"
        return ""
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    failures = 0
    with tempfile.TemporaryDirectory(prefix="automtl-sigterm-") as tmp:
        base = Path(tmp) / "base"
        (Path(tmp) / "soak.prototxt").write_text(EXPERIMENT)
        subprocess.run(_automtl("compile", ROOT / "specs" / "resnet18_w8.prototxt", "-o", base,
                                "--tasks", "seg,depth"), check=True, env=env)
        experiment = ["--experiment", Path(tmp) / "soak.prototxt"]
        for r in range(args.rounds):
            run = Path(tmp) / f"round-{r}"
            shutil.copytree(base, run)
            problems = []
            why = _stop_with_group_sigterm(_automtl("search", run, *experiment, *SEARCH),
                                           run / "search" / "step-4.pt", env, args.timeout)
            if why:
                problems.append(f"search: {why}")
            elif subprocess.run(_automtl("search", run, *experiment, *SEARCH, "--resume"),
                                env=env, capture_output=True).returncode != 0:
                problems.append("search --resume did not finish")
            if not problems:
                subprocess.run(_automtl("derive", run, "--mode", "argmax"), check=True, env=env,
                               capture_output=True)
                why = _stop_with_group_sigterm(_automtl("finetune", run, *FINETUNE),
                                               run / "finetune" / "step-4.pt", env,
                                               args.timeout)
                if why:
                    problems.append(f"finetune: {why}")
                elif subprocess.run(_automtl("finetune", run, *FINETUNE, "--resume"), env=env,
                                    capture_output=True).returncode != 0:
                    problems.append("finetune --resume did not finish")
            failures += bool(problems)
            print(f"round {r + 1}: " + ("ok" if not problems else "; ".join(problems)),
                  flush=True)
            shutil.rmtree(run, ignore_errors=True)
    ok = args.rounds - failures
    print(f"{ok}/{args.rounds} rounds: search and finetune each exited 75 on a group SIGTERM "
          "with no process left, and --resume finished")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

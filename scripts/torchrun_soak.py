#!/usr/bin/env python3
"""Run `search`, `finetune` and `eval` under two-process torchrun N times each; count exits.

Every round starts from a fresh copy of one compiled tiny run (ResNet-18 at width 8, 32 px
synthetic scenes, three tasks): search under torchrun, derive in one process, finetune under
torchrun, eval of the final model under torchrun. A round's command that exits non-zero or dies
by a signal is reported with the tail of its stderr. Prints one line per round and a summary;
`--json FILE` also writes the summary. Exits 1 if any command failed.

    python scripts/torchrun_soak.py --rounds 20
"""

from __future__ import annotations

import argparse
import json
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
task { type: "seg" head { type: ASPP hidden: 16 dropout: 0.5 } }
task { type: "depth" head { type: LIGHT } }
task { type: "normal" head { type: LIGHT } }
data {
  source: SYNTHETIC
  batch_size: 4
  val_batch_size: 8
  synthetic { image_size: 32 train: 16 train1: 16 train2: 16 val: 16 test: 16 }
}
"""

STAGES = ("search", "finetune", "eval")


def _automtl(*args: str) -> list[str]:
    return [sys.executable, "-m", "automtl_cli", "-q", *args]


def _torchrun(nproc: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={nproc}", "-m", "automtl_cli", "-q", *args]


def _run(cmd: list[str], env: dict[str, str], timeout: float) -> dict:
    """Run `cmd` in its own process group; past `timeout` the whole group is killed."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=timeout)
        rc: int | str = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        rc = "timeout"
    outcome: dict = {"rc": rc, "seconds": round(time.perf_counter() - t0, 2)}
    if rc != 0:
        if isinstance(rc, int) and rc < 0:
            try:
                outcome["signal"] = signal.Signals(-rc).name
            except ValueError:
                outcome["signal"] = f"signal {-rc}"
        outcome["stderr_tail"] = (err or "")[-1500:]
    return outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per command")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args()

    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    work = Path(tempfile.mkdtemp(prefix="automtl-soak-"))
    env.setdefault("AUTOMTL_CACHE", str(work / "cache"))
    try:
        (work / "soak.prototxt").write_text(EXPERIMENT)
        base = work / "base"
        setup = _run(_automtl("compile", str(ROOT / "specs" / "resnet18_w8.prototxt"), "-o",
                              str(base), "--tasks", "seg,depth,normal"), env, args.timeout)
        if setup["rc"] != 0:
            print(f"compile failed: {setup}", file=sys.stderr)
            return 1
        counts = {s: {"ok": 0, "failed": 0, "seconds": 0.0} for s in STAGES}
        failures = []
        for round_ in range(1, args.rounds + 1):
            run = work / f"round-{round_}"
            shutil.copytree(base, run)
            exp = str(work / "soak.prototxt")
            commands = {
                "search": _torchrun(args.nproc, "search", str(run), "--experiment", exp,
                                    "--warmup-iters", "4", "--iters", "8", "--policy-steps",
                                    "2", "--weight-steps", "2", "--checkpoint-every", "4"),
                "finetune": _torchrun(args.nproc, "finetune", str(run), "--iters", "8",
                                      "--checkpoint-every", "4"),
                "eval": _torchrun(args.nproc, "eval", str(run / "final.pt"), "--split", "val"),
            }
            line = []
            for stage in STAGES:
                if stage == "finetune":
                    derive = _run(_automtl("derive", str(run), "--mode", "argmax"), env,
                                  args.timeout)
                    if derive["rc"] != 0:
                        failures.append({"round": round_, "stage": "derive", **derive})
                        line.append("derive FAILED")
                        break
                outcome = _run(commands[stage], env, args.timeout)
                ok = outcome["rc"] == 0
                counts[stage]["ok" if ok else "failed"] += 1
                counts[stage]["seconds"] += outcome["seconds"]
                line.append(f"{stage} {'ok' if ok else 'FAILED'} {outcome['seconds']:.1f}s")
                if not ok:
                    failures.append({"round": round_, "stage": stage, **outcome})
                    break
            print(f"round {round_:2d}: " + ", ".join(line), flush=True)
            shutil.rmtree(run, ignore_errors=True)
        summary = {"rounds": args.rounds, "nproc": args.nproc,
                   "stages": {s: {**c, "seconds": round(c["seconds"], 1)}
                              for s, c in counts.items()},
                   "failures": failures}
        for stage, c in summary["stages"].items():
            print(f"{stage}: {c['ok']}/{args.rounds} exited 0 ({c['failed']} failed), "
                  f"{c['seconds']:.0f} s in all")
        for f in failures:
            print(f"  round {f['round']} {f['stage']}: rc {f['rc']} {f.get('signal', '')}\n"
                  f"{f.get('stderr_tail', '')}", file=sys.stderr)
        if args.json:
            args.json.write_text(json.dumps(summary, indent=2) + "\n")
        return 1 if failures else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

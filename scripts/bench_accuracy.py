#!/usr/bin/env python
"""Accuracy benchmark: the paper's experiment design on the built-in synthetic scenes.

For each task set (`nyu3`, optionally `taskonomy5`) and each seed, runs `automtl run`'s chain:
single-task networks, hard sharing, K random plans and AutoMTL, every one fine-tuned with the
same budget; then writes a markdown table with the mean and spread (sample standard deviation
over seeds) of each method's test metrics, Δ_T against single-task, parameters and FLOPs.

Usage: python scripts/bench_accuracy.py [--seeds 2] [--task-sets nyu3[,taskonomy5]]
           [--backbone specs/resnet18_w16.prototxt] [--random 1] [-o runs/bench_accuracy]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from automtl_cli.engine.finetune import FinetuneConfig  # noqa: E402
from automtl_cli.engine.pipeline import run_pipeline  # noqa: E402
from automtl_cli.engine.runconfig import resolve_experiment  # noqa: E402
from automtl_cli.engine.search import SearchConfig  # noqa: E402
from automtl_cli.tasks import build_tasks  # noqa: E402


def _fmt(values: list[float], digits: int = 4) -> str:
    if not values:
        return "—"
    mean = statistics.fmean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.{digits}g} ± {spread:.2g}"


def aggregate(runs: list[dict], tasks) -> str:
    """One row per method: mean ± spread over seeds of the primary metrics, Δ_T, size, cost."""
    methods = list(runs[0]["methods"])
    head = ["method", *(f"{t.name} {t.primary_metric}" for t in tasks), "Δ_T (%)",
            "params (M)", "GFLOP/img"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in methods:
        outs = [r["methods"][method] for r in runs]
        cells = [method]
        for t in tasks:
            cells.append(_fmt([o["metrics"]["test"][t.name][t.primary_metric] for o in outs]))
        deltas = [o["delta"]["test"]["mean"] for o in outs
                  if o.get("delta", {}).get("test", {}).get("mean") is not None]
        cells.append("0 (reference)" if method == "single-task" else _fmt(deltas, 3))
        cells.append(_fmt([o["params"]["total"] / 1e6 for o in outs]))
        cells.append(_fmt([o["flops"]["all_tasks_one_pass"] / 1e9 for o in outs]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--task-sets", default="nyu3")
    parser.add_argument("--backbone", default=str(ROOT / "specs" / "resnet18_w16.prototxt"))
    parser.add_argument("--random", type=int, default=1, help="random plans per seed")
    parser.add_argument("--search-iters", type=int)
    parser.add_argument("--finetune-iters", type=int)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("-o", "--output", default="runs/bench_accuracy")
    args = parser.parse_args(argv)
    out = Path(args.output)
    sections = []
    for task_set in args.task_sets.split(","):
        experiment = resolve_experiment(None, task_set, None)
        tasks = build_tasks(experiment)
        runs = []
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            search = SearchConfig.defaults_for(experiment.data.source, seed=seed,
                                               iters=args.search_iters,
                                               num_workers=args.workers)
            finetune = FinetuneConfig.defaults_for(experiment.data.source, seed=seed,
                                                   iters=args.finetune_iters,
                                                   num_workers=args.workers)
            result = run_pipeline(args.backbone, out / task_set / f"seed-{seed}", experiment,
                                  search=search, finetune=finetune, random_plans=args.random,
                                  show_progress=False)
            runs.append(result)
            print(f"{task_set} seed {seed}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        table = aggregate(runs, tasks)
        sections.append(f"## {task_set} ({args.seeds} seeds, {Path(args.backbone).stem}, "
                        f"test split)\n\n{table}\n")
    text = "# automtl accuracy benchmark (synthetic scenes)\n\n" + "\n".join(sections)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps({"args": vars(args)}, indent=2))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Accuracy benchmark: the paper's comparison on the built-in synthetic scenes, over seeds.

For each task set (`nyu3`, `taskonomy5`) and seed, the methods of `automtl run` are cells:
single-task networks, hard sharing, K random plans and AutoMTL; with `--ablation` (the paper's
Figure 2) also AutoMTL searched without the sharing regulariser, and K defaults to 5. Every
baseline gets AutoMTL's total number of weight updates (`--budget equal`, the default). Each
cell's result is written to `CELLS/TASKSET/seed-S/METHOD.json` as soon as it completes and
is reused on the next invocation, so the benchmark resumes cell by cell across sittings.
`--max-params TASKSET=SIZE,...` adds the row "AutoMTL ≤ SIZE": the same search, derived as the
most likely plan within that many parameters (`derive --max-params`), fine-tuned alike; it
derives from the AutoMTL cell's search when that cell was computed in the same invocation.

`--cells DIR` keeps the cells elsewhere (the repository's `benchmarks/ablation/` holds the
committed ones, so a later sitting on another machine continues from them).

Writes OUT/results.md (mean ± sample standard deviation over seeds of every method's test
metrics, Δ_T against the same seed's single-task networks, parameters, FLOPs, budget), and
with matplotlib OUT/ablation.png (Δ_T against parameters: a point per plan and seed, the
means marked). Selection (plans, candidates) only ever looks at val; test is only reported.

    python scripts/bench_accuracy.py --ablation --seeds 3 --task-sets nyu3,taskonomy5

`--precision bf16` trains every cell under bf16 autocast (keep its cells apart with `--cells`);
`scripts/compare_plans.py` compares two cell directories' searched plans.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

# As the CLI does, before torch is imported: spinning OpenMP threads slow every kernel many
# times over as soon as another process wants the same cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from automtl_cli.allocator import keep_freed_memory  # noqa: E402
from automtl_cli.artifacts import write_json  # noqa: E402
from automtl_cli.choices import ParamBudget  # noqa: E402
from automtl_cli.engine.finetune import FinetuneConfig, delta_against  # noqa: E402
from automtl_cli.engine.search import SearchConfig  # noqa: E402
from automtl_cli.experiment import build_stage_experiment  # noqa: E402
from automtl_cli.stages.run import BUDGETS, Pipeline, random_plan_seed  # noqa: E402
from automtl_cli.tasks import build_tasks  # noqa: E402

NO_REG = "AutoMTL w/o reg"


def _cells(random_plans: int, ablation: bool, budget: ParamBudget | None) -> list[str]:
    return ["single-task", "hard sharing", *(f"random {k}" for k in range(random_plans)),
            *([NO_REG] if ablation else []), "AutoMTL",
            *([budget_method(budget)] if budget else [])]


def budget_method(budget: ParamBudget) -> str:
    return f"AutoMTL ≤ {str(budget).replace('x', '×')}"


def _file_name(method: str) -> str:
    return method.replace(" ", "_").replace("/", "")


def run_cell(pipe: Pipeline, method: str, seed: int, stl: dict[str, Any] | None,
             budget: ParamBudget | None = None, searched: bool = False) -> dict[str, Any]:
    """Train one method of one seed from a clean directory (`searched`: RUN holds this
    seed's finished AutoMTL search, computed by this code)."""
    run = pipe.run
    if method == "single-task":
        shutil.rmtree(run / "baselines" / "specific", ignore_errors=True)
        return pipe.baseline("specific", "specific")
    if method == "hard sharing":
        shutil.rmtree(run / "baselines" / "shared", ignore_errors=True)
        return pipe.baseline("shared", "shared", stl=stl)
    if method.startswith("random "):
        k = int(method.split()[1])
        shutil.rmtree(run / "baselines" / f"random-{k}", ignore_errors=True)
        return pipe.baseline(f"random-{k}", "random", seed=random_plan_seed(seed, k), stl=stl)
    if budget is not None and method == budget_method(budget):
        name = f"budget-{budget}"
        shutil.rmtree(run / "variants" / name, ignore_errors=True)
        return pipe.automtl(name, max_params=budget, searched=run if searched else None,
                            stl=stl)
    if method == NO_REG:
        shutil.rmtree(run / "variants" / "no-reg", ignore_errors=True)
        return pipe.automtl("no-reg", search=dataclasses.replace(pipe.search, reg_weight=0.0),
                            stl=stl)
    for name in ("search", "derived", "finetune"):
        shutil.rmtree(run / name, ignore_errors=True)
    out = pipe.automtl(stl=stl)
    # the searched plan itself, for scripts/compare_plans.py
    out["choices"] = json.loads((run / "derived" / "plan.json").read_text())["choices"]
    return out


def fingerprint(backbone: str, budget: str, search: SearchConfig,
                finetune: FinetuneConfig) -> dict[str, Any]:
    """What a cell's numbers depend on (not the worker count or the device's name): a cell
    computed under another configuration is never mixed into this one's table."""
    drop = ("num_workers", "device")
    return {"backbone": Path(backbone).name, "budget": budget,
            "search": {k: v for k, v in dataclasses.asdict(search).items() if k not in drop},
            "finetune": {k: v for k, v in dataclasses.asdict(finetune).items()
                         if k not in drop}}


# Configuration fields added after cells were first computed, with the value the code before
# them had: a cell without the field was computed with that value.
ADDED_FIELDS = {"precision": "fp32"}


def load_cell(path: Path, expected: dict[str, Any]) -> dict[str, Any]:
    cell = json.loads(path.read_text())
    config = cell.get("config")
    for stage in ("search", "finetune"):
        if isinstance(config, dict) and isinstance(config.get(stage), dict):
            config[stage] = {**{k: v for k, v in ADDED_FIELDS.items()
                                if k in expected[stage]}, **config[stage]}
    if config != expected:
        differs = sorted(k for k in expected if (config or {}).get(k) != expected[k])
        raise SystemExit(f"{path}: computed with another configuration (differs in "
                         f"{', '.join(differs) or 'everything'}); give another --cells "
                         "directory or the same options")
    return cell


def _fmt(values: list[float], digits: int = 4) -> str:
    if not values:
        return "—"
    mean = statistics.fmean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.{digits}g} ± {spread:.2g}"


def with_deltas(cells: dict[int, dict[str, dict]], tasks) -> None:
    """Δ_T of every cell against its own seed's single-task result (test and val)."""
    for results in cells.values():
        stl = results.get("single-task")
        if stl is None:
            continue
        for out in results.values():
            out["delta"] = {split: delta_against(out["metrics"][split], stl["metrics"][split],
                                                 tasks) for split in ("val", "test")}


def _group(method: str) -> str:
    return "random plans" if method.startswith("random ") else method


def aggregate(cells: dict[int, dict[str, dict]], tasks) -> str:
    """One row per method (random plans pooled): mean ± spread over seeds (and plans)."""
    groups: dict[str, list[dict]] = {}
    for results in cells.values():
        for method, out in results.items():
            groups.setdefault(_group(method), []).append(out)
    head = ["method", "n", *(f"{t.name} {t.primary_metric}" for t in tasks), "Δ_T (%)",
            "params (M)", "GFLOP/img", "weight updates", "minutes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, outs in groups.items():
        cells_ = [method, str(len(outs))]
        for t in tasks:
            cells_.append(_fmt([o["metrics"]["test"][t.name][t.primary_metric] for o in outs]))
        deltas = [o["delta"]["test"]["mean"] for o in outs
                  if o.get("delta", {}).get("test", {}).get("mean") is not None]
        cells_.append("0 (reference)" if method == "single-task" else _fmt(deltas, 3))
        cells_.append(_fmt([o["params"]["total"] / 1e6 for o in outs]))
        cells_.append(_fmt([o["flops"]["all_tasks_one_pass"] / 1e9 for o in outs]))
        budgets = sorted({o["budget"]["weight_updates"] for o in outs})
        inits = sorted({o["budget"]["init"] for o in outs})
        cells_.append(f"{'/'.join(map(str, budgets))} ({'/'.join(inits)})")
        cells_.append(_fmt([o["seconds"] / 60 for o in outs], 3))
        lines.append("| " + " | ".join(cells_) + " |")
    return "\n".join(lines)


def plot(sections: dict[str, dict[int, dict[str, dict]]], path: Path) -> bool:
    """Δ_T against parameters, one panel per task set; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    style = {"single-task": ("tab:gray", "s"), "hard sharing": ("tab:blue", "D"),
             "random plans": ("tab:orange", "o"), NO_REG: ("tab:purple", "v"),
             "AutoMTL": ("tab:red", "*")}
    fig, axes = plt.subplots(1, len(sections), figsize=(6.2 * len(sections), 4.6),
                             squeeze=False)
    for ax, (task_set, cells) in zip(axes[0], sections.items()):
        points: dict[str, list[tuple[float, float]]] = {}
        for results in cells.values():
            for method, out in results.items():
                delta = out.get("delta", {}).get("test", {}).get("mean")
                if delta is not None:
                    points.setdefault(_group(method), []).append(
                        (out["params"]["total"] / 1e6, delta))
        for group, xy in points.items():
            color, marker = style.get(group) or (
                ("tab:green", "P") if group.startswith("AutoMTL ≤") else ("black", "x"))
            xs, ys = zip(*xy)
            ax.scatter(xs, ys, color=color, marker=marker, alpha=0.35, s=28)
            mx, my = statistics.fmean(xs), statistics.fmean(ys)
            sy = statistics.stdev(ys) if len(ys) > 1 else 0.0
            ax.errorbar([mx], [my], yerr=[sy], color=color, marker=marker, markersize=12,
                        markeredgecolor="black", capsize=4, label=f"{group} (n={len(ys)})")
        ax.axhline(0.0, color="gray", linewidth=0.8, linestyle=":")
        ax.set_title(f"{task_set}: Δ_T vs single-task (test)")
        ax.set_xlabel("parameters (M)")
        ax.set_ylabel("Δ_T (%)")
        ax.grid(alpha=0.3)
        if points:  # no Δ_T without the seed's single-task cell
            ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--task-sets", default="nyu3")
    parser.add_argument("--backbone", default=str(ROOT / "specs" / "resnet18_w16.prototxt"))
    parser.add_argument("--ablation", action="store_true",
                        help="also search without the regulariser; 5 random plans")
    parser.add_argument("--random", type=int, help="random plans per seed (1; 5 with "
                                                   "--ablation)")
    parser.add_argument("--budget", choices=BUDGETS, default="equal")
    parser.add_argument("--init", choices=("search", "scratch"), default="search")
    parser.add_argument("--search-iters", type=int)
    parser.add_argument("--warmup-iters", type=int)
    parser.add_argument("--finetune-iters", type=int)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="of the search's and the fine-tuning's forward passes")
    parser.add_argument("--max-params", metavar="TASKSET=SIZE,...",
                        help="also AutoMTL derived within SIZE parameters (0.6x of the "
                             "single-task networks, or a count), per task set")
    parser.add_argument("--only", help="compute only these methods (comma list of names); "
                                       "the report also shows the other methods' cells "
                                       "already on disk")
    parser.add_argument("-o", "--output", default="runs/bench_accuracy",
                        help="run directories, results.md, ablation.png")
    parser.add_argument("--cells", help="where cell results are kept and reused (default "
                                        "OUT/cells; benchmarks/ablation holds the committed "
                                        "ones)")
    args = parser.parse_args(argv)
    keep_freed_memory()  # as the CLI does
    random_plans = args.random if args.random is not None else (5 if args.ablation else 1)
    out = Path(args.output)
    cell_root = Path(args.cells) if args.cells else out / "cells"
    budgets = {}
    for item in (args.max_params or "").split(","):
        if item:
            task_set, _, size = item.partition("=")
            if task_set not in args.task_sets.split(","):
                parser.error(f"--max-params {item}: {task_set!r} is not among --task-sets")
            try:
                budgets[task_set] = ParamBudget.parse(size)
            except ValueError as e:
                parser.error(f"--max-params {item}: {e}")
    only = set(args.only.split(",")) if args.only else None
    sections: dict[str, dict[int, dict[str, dict]]] = {}
    texts = []
    for task_set in args.task_sets.split(","):
        experiment = build_stage_experiment(None, task_set, None)
        tasks = build_tasks(experiment)
        cells: dict[int, dict[str, dict]] = {}
        methods = _cells(random_plans, args.ablation, budgets.get(task_set))
        for seed in range(args.seeds):
            base = out / task_set / f"seed-{seed}"
            search = SearchConfig.defaults_for(experiment.data.source, seed=seed,
                                               iters=args.search_iters,
                                               warmup_iters=args.warmup_iters,
                                               num_workers=args.workers,
                                               precision=args.precision)
            finetune = FinetuneConfig.defaults_for(experiment.data.source, seed=seed,
                                                   iters=args.finetune_iters, init=args.init,
                                                   num_workers=args.workers,
                                                   precision=args.precision)
            pipe = Pipeline(args.backbone, base / "run", experiment, search=search,
                            finetune=finetune, budget=args.budget, show_progress=False,
                            say=lambda s: print("  " + s, file=sys.stderr, flush=True))
            expected = fingerprint(args.backbone, args.budget, search, finetune)
            compiled = searched = False
            cells[seed] = {}
            for method in methods:
                path = cell_root / task_set / f"seed-{seed}" / f"{_file_name(method)}.json"
                if path.exists():
                    cells[seed][method] = load_cell(path, expected)
                    continue
                if only is not None and method not in only:
                    continue
                if not compiled:
                    pipe.compile()
                    compiled = True
                t0 = time.perf_counter()
                result = run_cell(pipe, method, seed, cells[seed].get("single-task"),
                                  budgets.get(task_set), searched)
                searched = searched or method == "AutoMTL"
                result["seconds"] = round(time.perf_counter() - t0, 1)
                result["config"] = expected
                write_json(path, result)
                cells[seed][method] = result
                print(f"{task_set} seed {seed} {method}: {result['seconds']:.0f} s",
                      file=sys.stderr, flush=True)
        with_deltas(cells, tasks)
        sections[task_set] = cells
        n = sum(1 for c in cells.values() if c)
        texts.append(f"## {task_set} ({n} seeds, {Path(args.backbone).stem}, test split, "
                     f"budget {args.budget}, AutoMTL fine-tuned from {args.init}, "
                     f"{args.precision})\n\n"
                     f"{aggregate(cells, tasks)}\n")
    text = "# automtl accuracy benchmark (synthetic scenes)\n\n" + "\n".join(texts)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(text)
    if plot(sections, out / "ablation.png"):
        text += f"\n![Δ_T against parameters]({out / 'ablation.png'})\n"
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

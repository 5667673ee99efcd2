"""`automtl run`: compile, search, derive, fine-tune, and the baselines beside it, in one table.

Every method gets the same fine-tuning budget from the same seed: single-task networks (the
`specific` plan: no parameter is shared), hard sharing (the `shared` plan), optionally K random
plans (the paper's ablation), and the AutoMTL plan sampled from the search. The table reports
test metrics, Δ_T against the single-task networks, parameters and FLOPs; the selection of a
sampled candidate, when there are several, uses val only.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from automtl_cli.artifacts import atomic_write, write_json
from automtl_cli.compiler import compile_backbone, write_compile_outputs
from automtl_cli.engine.derive import run_derive
from automtl_cli.engine.finetune import FinetuneConfig, run_finetune
from automtl_cli.engine.runconfig import setup_run
from automtl_cli.engine.search import SearchConfig, Searcher
from automtl_cli.errors import MissingInput
from automtl_cli.experiment import ExperimentConfig
from automtl_cli.tasks import build_tasks

__all__ = ["default_backbone", "results_table", "run_pipeline"]

SPECS = Path(__file__).resolve().parents[2] / "specs"


def default_backbone() -> Path:
    path = SPECS / "resnet18_w16.prototxt"
    if not path.exists():
        raise MissingInput(f"{path}: the default backbone ships with the source tree; give a "
                           "BACKBONE prototxt")
    return path


def _baseline_run(run: Path, name: str) -> Path:
    sub = run / "baselines" / name
    sub.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run / "supermodel.pt", sub / "supermodel.pt")
    return sub


def run_pipeline(backbone: str | os.PathLike, run_dir: str | os.PathLike,
                 experiment: ExperimentConfig, *, search: SearchConfig,
                 finetune: FinetuneConfig, random_plans: int = 0, samples: int = 1,
                 bn: str = "task", skip: str = "reference",
                 say: Callable[[str], None] = lambda s: None,
                 show_progress: bool = True) -> dict[str, Any]:
    run = Path(run_dir)
    tasks = tuple(t.type for t in experiment.tasks)
    compiled = compile_backbone(backbone, tasks=tasks, bn=bn, skip=skip, seed=search.seed)
    write_compile_outputs(compiled, run)
    say(f"compiled {backbone} into {run} ({compiled.summary()['searchable']} search nodes)")
    results: dict[str, dict[str, Any]] = {}

    def finetune_plan(name: str, sub: Path, **derive_kw: Any) -> dict[str, Any]:
        run_derive(sub, experiment=experiment, **derive_kw)
        stl = results.get("single-task")
        out = run_finetune(sub, finetune, show_progress=show_progress,
                           stl_metrics=stl, candidate_iters=max(1, finetune.iters // 5))
        say(f"{name}: fine-tuned; test {_brief(out['metrics']['test'])}")
        return out

    results["single-task"] = finetune_plan("single-task", _baseline_run(run, "specific"),
                                           mode="specific")
    results["hard sharing"] = finetune_plan("hard sharing", _baseline_run(run, "shared"),
                                            mode="shared")
    for k in range(random_plans):
        results[f"random {k}"] = finetune_plan(f"random {k}", _baseline_run(run, f"random-{k}"),
                                               mode="random", seed=search.seed + k)
    setup = setup_run(run, experiment, search.batch_size or experiment.data.batch_size)
    searcher = Searcher(run, setup.graph, setup.space, experiment, search, setup.run_id(),
                        show_progress=show_progress)
    summary = searcher.run()
    say(f"searched {summary['steps']} steps: {summary['sharing']:.0%} of choices shared")
    results["AutoMTL"] = finetune_plan("AutoMTL", run, mode="sample", samples=samples)
    table = results_table(results, build_tasks(experiment))
    atomic_write(run / "results.md", lambda tmp: Path(tmp).write_text(table + "\n"))
    write_json(run / "results.json", {
        "backbone": str(backbone), "tasks": list(tasks), "experiment": experiment.to_dict(),
        "search": dataclasses.asdict(search), "finetune": dataclasses.asdict(finetune),
        "methods": results})
    return {"run": str(run), "table": table, "methods": results}


def _brief(metrics: dict[str, dict[str, float]]) -> str:
    return ", ".join(f"{t} {next(iter(v))} {next(iter(v.values())):.4g}"
                     for t, v in metrics.items())


def results_table(results: dict[str, dict[str, Any]], tasks) -> str:
    """Markdown: per method, each task's test metrics, Δ_T, parameters and FLOPs."""
    columns = [(t.name, name) for t in tasks for name in t.delta_metrics]
    head = ["method", *(f"{t} {m}" for t, m in columns), "Δ_T (%)", "params", "GFLOP/img"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, out in results.items():
        test = out["metrics"]["test"]
        cells = [method] + [f"{test[t][m]:.4g}" for t, m in columns]
        delta = out.get("delta", {}).get("test", {}).get("mean")
        cells.append("0 (reference)" if method == "single-task" else
                     f"{delta:+.2f}" if delta is not None else "—")
        cells.append(f"{out['params']['total'] / 1e6:.3f} M")
        cells.append(f"{out['flops']['all_tasks_one_pass'] / 1e9:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)

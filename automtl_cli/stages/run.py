"""The run stage: compile, search, derive, fine-tune, and the baselines beside it, in one table.

It is the only place that composes stages.

Every method trains from the same seed: single-task networks (the `specific` plan: no parameter
is shared), hard sharing (the `shared` plan), optionally K random plans (the paper's ablation),
and the AutoMTL plan derived from the search. With `budget="equal"` (the default) every
baseline gets as many weight updates as AutoMTL had in all (warm-up and weight steps of the
search, plus its fine-tuning), so a method cannot win by having trained longer; with
`budget="finetune"` every method gets the fine-tuning iterations alone (the paper's tables).
The table says which budget each row had. The table reports test metrics, Δ_T against the
single-task networks, parameters and FLOPs; whatever is selected (a sampled candidate) is
selected on val only.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from automtl_cli.artifacts import SearchCheckpoint, atomic_copy, load, write_json, write_text
from automtl_cli.artifacts.io import atomic_link
from automtl_cli.artifacts.lock import run_lock
from automtl_cli.bundled import bundled_backbone, specs_dir
from automtl_cli.choices import Budget, ParamBudget
from automtl_cli.data.loader import prepare_data
from automtl_cli.engine.finetune import FinetuneConfig, candidate_iters_for, delta_against
from automtl_cli.engine.plans import DeriveMode
from automtl_cli.engine.runconfig import input_size
from automtl_cli.engine.schedule import Alternation
from automtl_cli.engine.search import (
    SearchConfig,
    policy_decision,
    policy_entropy,
    policy_sharing,
)
from automtl_cli.engine.stepping import STEPPINGS
from automtl_cli.errors import BadInput, MissingDependency, MissingInput
from automtl_cli.experiment import ExperimentConfig
from automtl_cli.frontend.build import CompileOptions
from automtl_cli.frontend.sources import SourceKind, source_kind
from automtl_cli.registry import parse_choice
from automtl_cli.stages.compile import DATA_CHANNELS, compile_backbone, compile_stage
from automtl_cli.stages.derive import derive
from automtl_cli.stages.finetune import finetune, read_metrics
from automtl_cli.stages.jobs import Method, run_methods
from automtl_cli.stages.search import search as search_stage
from automtl_cli.tasks import build_tasks

__all__ = ["BUDGETS", "Budget", "Pipeline", "default_backbone", "random_plan_seed",
           "results_table", "run_configs", "run_pipeline", "search_weight_updates"]

DEFAULT_BACKBONE = "resnet18_w16"  # bundled (automtl_cli/specs/)


def default_backbone() -> Path:
    """The bundled small ResNet `run` uses when no backbone is given."""
    path = bundled_backbone(DEFAULT_BACKBONE)
    if path is None:
        raise MissingInput(f"{specs_dir()}: the default backbone {DEFAULT_BACKBONE}.prototxt "
                           "is missing from the installed package; give a BACKBONE prototxt")
    return path


def _say_to_log(message: str) -> None:
    logging.getLogger("automtl_cli.cli").info("%s", message)


def _baseline_run(run: Path, name: str, group: str = "baselines") -> Path:
    sub = run / group / name
    sub.mkdir(parents=True, exist_ok=True)
    atomic_copy(run / "supermodel.pt", sub / "supermodel.pt")
    return sub


BUDGETS = tuple(b.value for b in Budget)


def _copy_search(searched: Path, run: Path, config: SearchConfig) -> dict[str, Any]:
    """Give `run` the finished search of run directory `searched` (its last checkpoint,
    linked), after checking it is complete and had `config`; returns its summary."""
    source = searched / "search" / "last.pt"
    checkpoint = load(source, SearchCheckpoint)
    if not checkpoint.complete or checkpoint.config != dataclasses.asdict(config):
        raise BadInput(f"{source}: not a finished search with this configuration")
    atomic_link(source, run / "search" / "last.pt")
    logits = checkpoint.policy_logits
    return {"steps": checkpoint.step, "tau": checkpoint.tau, "sharing": policy_sharing(logits),
            "entropy": policy_entropy(logits), "decided": policy_decision(logits)["decided"]}


def search_weight_updates(search: SearchConfig, tasks: int) -> int:
    """Weight updates a search makes: its warm-up and its weight steps (not policy steps),
    T of them per iteration when it steps once per task (`--step per-task`)."""
    iterations = Alternation(search.warmup_iters, search.policy_steps,
                             search.weight_steps).weight_updates(search.total)
    return iterations * STEPPINGS.get(search.step).updates_per_iteration(tasks)


def random_plan_seed(seed: int, k: int) -> int:
    """The k-th random plan of a run with `seed`: distinct across plans and seeds."""
    return 1000 * seed + k


class Pipeline:
    """The methods of one comparison, each a call that trains one plan and returns its result.

    `run_pipeline` calls them in order; `scripts/bench_accuracy.py` calls them one cell at a
    time and keeps each result on disk, so a long benchmark resumes where it stopped. Results
    carry their metrics on val and test, parameters, FLOPs and their budget; Δ_T against the
    single-task result is added where one is given.
    """

    def __init__(self, backbone: str | os.PathLike, run_dir: str | os.PathLike,
                 experiment: ExperimentConfig, *, search: SearchConfig,
                 finetune: FinetuneConfig, derive_mode: str = "argmax", samples: int = 1,
                 max_params: ParamBudget | None = None, budget: str = "equal",
                 bn: str = "task", skip: str = "reference",
                 weights: str | None = None, feature: str | None = None,
                 say: Callable[[str], None] = lambda s: None,
                 show_progress: bool = True) -> None:
        equal = parse_choice("budget", Budget, budget) is Budget.EQUAL
        self.weights, self.feature = weights, feature
        self.backbone, self.run = backbone, Path(run_dir)
        self.experiment, self.search, self.finetune = experiment, search, finetune
        self.bn, self.skip, self.say, self.show_progress = bn, skip, say, show_progress
        self.derive_mode, self.max_params = derive_mode, max_params
        self.samples = samples if DeriveMode(derive_mode) is DeriveMode.SAMPLE else 1
        self.tasks = tuple(t.type for t in experiment.tasks)
        # sampled candidates are each fine-tuned briefly before the best on val is kept
        self.candidate_iters = candidate_iters_for(finetune.iters)
        self.selection_updates = self.samples * self.candidate_iters if self.samples > 1 else 0
        # AutoMTL's total; a baseline with budget "equal" trains this long from scratch
        self.automtl_updates = (search_weight_updates(search, len(self.tasks))
                                + self.selection_updates + finetune.iters)
        self.baseline_config = dataclasses.replace(
            finetune, init="scratch",
            iters=self.automtl_updates if equal else finetune.iters)
        self.methods, self.started = 0, 0  # how many methods `run` compares, how many began

    def __getstate__(self) -> dict[str, Any]:
        """A pipeline goes to `run`'s worker processes without its `say` (a closure), and
        speaks there through automtl's log."""
        return {k: v for k, v in self.__dict__.items() if k != "say"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.say = _say_to_log

    def _announce(self, name: str, what: str) -> None:
        """One line as a method starts: which (k of n), what it will run, how many steps."""
        self.started += 1
        of = f" [{self.started}/{self.methods}]" if self.methods else ""
        self.say(f"{name}{of}: {what}")

    def compile(self) -> None:
        """Compile the backbone (a PyTorch module is traced at the data's image size); with
        pretrained weights every baseline starts from them too, so the table stays fair."""
        shapes = {}
        if source_kind(os.fspath(self.backbone)) is SourceKind.TORCH:
            shapes = {None: (1, DATA_CHANNELS, *input_size(self.experiment))}
        options = CompileOptions(input_shapes=shapes, feature_blob=self.feature,
                                 weights=self.weights)
        compiled = compile_backbone(self.backbone, options, tasks=self.tasks, bn=self.bn,
                                    skip=self.skip, seed=self.search.seed)
        compile_stage(compiled, self.run)
        origin = compiled.weights_origin()
        if origin:
            self.baseline_config = dataclasses.replace(self.baseline_config, init="pretrained")
        self.say(f"compiled {self.backbone} into {self.run} "
                 f"({compiled.summary()['searchable']} search nodes; initial weights: "
                 f"{origin or 'from the seed'})")

    def baseline(self, name: str, mode: str, *, seed: int | None = None,
                 stl: dict[str, Any] | None = None) -> dict[str, Any]:
        """A fixed plan (`specific`, `shared`, `random`) trained in RUN/baselines/NAME, from
        the seed or from the backbone's pretrained weights."""
        label = {"specific": "single-task", "shared": "hard sharing"}.get(
            name, name.replace("-", " "))
        self._announce(label, f"the {mode} plan, fine-tuned {self.baseline_config.iters} "
                              f"steps from {self.baseline_config.init}")
        sub = _baseline_run(self.run, name)
        derive(sub, experiment=self.experiment, mode=mode, seed=seed)
        return self._finetune(label, sub, self.baseline_config, 0, stl)

    def automtl(self, name: str = "AutoMTL", *, search: SearchConfig | None = None,
                max_params: ParamBudget | None = None, searched: Path | None = None,
                stl: dict[str, Any] | None = None) -> dict[str, Any]:
        """Search (with `search`, default the pipeline's), derive (within `max_params`,
        default the pipeline's), fine-tune. The first AutoMTL method runs in RUN itself;
        others (an ablation's) in RUN/variants/NAME. `searched`: the run directory of a
        finished search with the same configuration, derived from instead of searching again."""
        search = search or self.search
        max_params = max_params or self.max_params
        within = f" within {max_params} parameters" if max_params else ""
        self._announce(name, f"search {search.total} steps ({search.warmup_iters} warm-up)"
                             f"{' (reused)' if searched else ''}, derive ({self.derive_mode}"
                             f"{within}), fine-tune {self.finetune.iters} steps from the "
                             f"{self.finetune.init} weights")
        sub = self.run if name == "AutoMTL" else _baseline_run(self.run, name, "variants")
        if searched is None:
            summary = search_stage(sub, search, self.experiment,
                                   show_progress=self.show_progress)
        else:
            summary = _copy_search(searched, sub, search)
        self.say(f"{name}: searched {summary['steps']} steps; {summary['sharing']:.0%} of "
                 f"choices shared, chosen branches at p = {summary['decided']:.2f} on average")
        derive(sub, experiment=self.experiment, mode=self.derive_mode, samples=self.samples,
               max_params=max_params)
        out = self._finetune(name, sub, self.finetune,
                             search_weight_updates(search, len(self.tasks))
                             + self.selection_updates, stl)
        if self.selection_updates:
            out["budget"]["selection_updates"] = self.selection_updates
        out["search"] = {k: summary[k] for k in ("steps", "tau", "sharing", "entropy",
                                                  "decided")}
        out["derive"] = {"mode": self.derive_mode, "samples": self.samples,
                         "max_params": str(max_params) if max_params else None,
                         "selection": out.get("selection")}
        return out

    def _finetune(self, name: str, sub: Path, config: FinetuneConfig, before: int,
                  stl: dict[str, Any] | None) -> dict[str, Any]:
        """Fine-tune RUN/`sub`; `before`: the weight updates its plan had already cost."""
        out = finetune(sub, config, show_progress=self.show_progress, stl_metrics=stl,
                           candidate_iters=self.candidate_iters)
        out["budget"] = {"weight_updates": before + config.iters,
                         "finetune_iters": config.iters, "init": config.init}
        self.say(f"{name}: fine-tuned {config.iters} steps; "
                 f"test {_brief(out['metrics']['test'])}")
        return out


def run_configs(experiment: ExperimentConfig, *, search_iters: int | None,
                warmup_iters: int | None, finetune_iters: int | None, init: str, seed: int,
                num_workers: int, device: str, precision: str | None = None
                ) -> tuple[SearchConfig, FinetuneConfig]:
    """The data's search and fine-tuning sheets with `run`'s few overrides."""
    try:
        search = SearchConfig.defaults_for(experiment.data.source, iters=search_iters,
                                           warmup_iters=warmup_iters, seed=seed,
                                           num_workers=num_workers, device=device,
                                           precision=precision)
        finetune = FinetuneConfig.defaults_for(experiment.data.source, iters=finetune_iters,
                                               init=init, seed=seed, num_workers=num_workers,
                                               device=device, precision=precision)
    except ValueError as e:
        raise BadInput(str(e)) from e
    return search, finetune


def run_pipeline(backbone: str | os.PathLike, run_dir: str | os.PathLike,
                 experiment: ExperimentConfig, *, search: SearchConfig,
                 finetune: FinetuneConfig, random_plans: int = 0, samples: int = 1,
                 derive_mode: str = "argmax", max_params: ParamBudget | None = None,
                 budget: str = "equal", bn: str = "task", skip: str = "reference",
                 weights: str | None = None, feature: str | None = None, jobs: int = 1,
                 say: Callable[[str], None] = lambda s: None,
                 show_progress: bool = True) -> dict[str, Any]:
    """The whole chain; `finetune.init` says where AutoMTL's fine-tuning starts (`search`:
    the searched weights; `scratch`: the seed's, as the paper; `pretrained`: `weights`).
    `jobs` > 1 trains the methods in that many worker processes (stages/jobs.py)."""
    with run_lock(run_dir):
        pipe = Pipeline(backbone, run_dir, experiment, search=search, finetune=finetune,
                        derive_mode=derive_mode, samples=samples, max_params=max_params,
                        budget=budget, bn=bn, skip=skip, weights=weights, feature=feature,
                        say=say, show_progress=show_progress)
        pipe.compile()
        baselines = [Method("single-task", "baseline", ("specific", "specific")),
                     Method("hard sharing", "baseline", ("shared", "shared")),
                     *(Method(f"random {k}", "baseline", (f"random-{k}", "random"),
                              random_plan_seed(search.seed, k)) for k in range(random_plans))]
        automtl = Method("AutoMTL", "automtl")
        # in parallel the longest chain goes first; one after the other, the reference first
        methods = [automtl, *baselines] if jobs > 1 else [*baselines, automtl]
        pipe.methods = len(methods)
        # A previous run's baseline metrics in RUN must not stand in for this run's: the
        # fine-tuning stage reads the single-task ones from disk when not handed them.
        for stale in (pipe.run / "baselines").glob("*/metrics.json"):
            stale.unlink()
        if jobs > 1:
            prepare_data(experiment.data)
        done = run_methods(pipe, methods, jobs, say)
        results = {m.label: done[m.label] for m in [*baselines, automtl]}
        tasks = build_tasks(experiment)
        stl = results["single-task"]
        for label, out in results.items():  # Δ against this run's single-task networks
            if label != "single-task":
                out["delta"] = {split: delta_against(out["metrics"][split],
                                                     stl["metrics"][split], tasks)
                                for split in ("val", "test")}
                _store_delta(Path(out["run"]) / "metrics.json", out["delta"])
        run = pipe.run
        table = results_table(results, tasks)
        write_text(run / "results.md", table + "\n")
        picture = _draw_results(results, tasks, run / "results.png", say)
        write_json(run / "results.json", {
            "backbone": str(backbone), "tasks": list(pipe.tasks),
            "experiment": experiment.to_dict(), "search": dataclasses.asdict(search),
            "finetune": dataclasses.asdict(finetune), "budget": budget,
            "max_params": str(max_params) if max_params else None, "jobs": jobs,
            "methods": results})
        return {"run": str(run), "table": table, "methods": results,
                "picture": str(picture) if picture else None}


def _store_delta(path: Path, delta: dict[str, Any]) -> None:
    """A method's metrics.json gets the Δ of the table: a method that finished before the
    single-task networks (in another worker) had none to write."""
    metrics = read_metrics(path)
    if metrics.get("delta") != delta:
        write_json(path, {**metrics, "delta": delta})


def _draw_results(results: dict[str, dict[str, Any]], tasks, path: Path,
                  say: Callable[[str], None]) -> Path | None:
    """results.png beside the table; without matplotlib one line says why there is none."""
    from automtl_cli.plots import plot_results

    try:
        return plot_results(results, tasks, path)
    except MissingDependency as e:
        say(f"note: no {path.name}: {e}")
        return None


def _budget_cell(budget: dict[str, Any] | None) -> str:
    if not budget:
        return "—"
    updates, iters = budget["weight_updates"], budget["finetune_iters"]
    if updates == iters:
        return f"{updates} (from {budget['init']})"
    before = "search" + (f" {updates - iters - budget['selection_updates']} + selection "
                         f"{budget['selection_updates']}" if budget.get("selection_updates")
                         else f" {updates - iters}")
    return f"{updates} ({before} + fine-tune {iters} from {budget['init']})"


def _brief(metrics: dict[str, dict[str, float]]) -> str:
    return ", ".join(f"{t} {next(iter(v))} {next(iter(v.values())):.4g}"
                     for t, v in metrics.items())


def results_table(results: dict[str, dict[str, Any]], tasks) -> str:
    """Markdown: per method, each task's test metrics, Δ_T, parameters and FLOPs."""
    columns = [(t.name, name) for t in tasks for name in t.delta_metrics]
    head = ["method", *(f"{t} {m}" for t, m in columns), "Δ_T (%)", "params", "GFLOP/img",
            "weight updates"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, out in results.items():
        test = out["metrics"]["test"]
        cells = [method] + [f"{test[t][m]:.4g}" for t, m in columns]
        delta = out.get("delta", {}).get("test", {}).get("mean")
        cells.append("0 (reference)" if method == "single-task" else
                     f"{delta:+.2f}" if delta is not None else "—")
        cells.append(f"{out['params']['total'] / 1e6:.3f} M")
        cells.append(f"{out['flops']['all_tasks_one_pass'] / 1e9:.3f}")
        cells.append(_budget_cell(out.get("budget")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)

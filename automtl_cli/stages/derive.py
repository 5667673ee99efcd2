"""The derive stage: RUN/search/last.pt (or a fixed plan) → RUN/derived/ (plan, network,
prototxt), or K sampled candidates in RUN/derived/candidates/k/."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from automtl_cli.artifacts import SearchCheckpoint, check_writable, load
from automtl_cli.artifacts.lock import run_lock
from automtl_cli.choices import ParamBudget
from automtl_cli.compiler.plan import Plan
from automtl_cli.compiler.plan_cost import PlanCost
from automtl_cli.engine.derive import (
    build_derived_network,
    plan_report,
    search_logits,
    write_derived,
)
from automtl_cli.engine.plans import DERIVE_MODES, DeriveMode, choose
from automtl_cli.engine.plans.budget import most_likely_within
from automtl_cli.engine.runconfig import read_supermodel, setup_run
from automtl_cli.errors import BadInput, MissingInput
from automtl_cli.experiment import ExperimentConfig, build_stage_experiment

__all__ = ["derive", "derive_experiment", "plan_mode"]

FIXED_PLANS = (DeriveMode.SHARED, DeriveMode.SPECIFIC)


def plan_mode(mode: str, plan: str | None) -> tuple[DeriveMode, str | None]:
    """`--mode` and `--plan shared|specific|FILE` as one derive mode (and the plan file)."""
    if plan is None:
        return DERIVE_MODES.member(mode), None
    fixed = {m.value: m for m in FIXED_PLANS}
    if plan in fixed:
        return fixed[plan], None
    return DeriveMode.FILE, plan


def derive_experiment(run_dir: str | os.PathLike, experiment_path: str | None,
                      tasks: str | None, data: str | None) -> ExperimentConfig | None:
    """The experiment a plan straight after compile uses: the flags', else the compile's
    tasks (None: there is none yet, and the search checkpoint must say)."""
    if tasks or data or experiment_path:
        return build_stage_experiment(experiment_path, tasks, data)
    compiled = read_supermodel(run_dir)
    return build_stage_experiment(None, ",".join(compiled.tasks), None) if compiled.tasks else None


def derive(run_dir: str | os.PathLike, *, mode: DeriveMode | str,
           plan_file: str | None = None, samples: int = 1, seed: int | None = None,
           experiment: ExperimentConfig | None = None,
           max_params: ParamBudget | None = None) -> dict[str, Any]:
    """Derive RUN/derived/ (or RUN/derived/candidates/k/ for several samples); with
    `max_params`, the most likely plan whose network fits it."""
    with run_lock(run_dir):
        return _derive(run_dir, mode=mode, plan_file=plan_file, samples=samples, seed=seed,
                       experiment=experiment, max_params=max_params)


def _derive(run_dir: str | os.PathLike, *, mode: DeriveMode | str,
            plan_file: str | None = None, samples: int = 1, seed: int | None = None,
            experiment: ExperimentConfig | None = None,
            max_params: ParamBudget | None = None) -> dict[str, Any]:
    try:
        mode = DERIVE_MODES.member(mode)
    except ValueError as e:
        raise BadInput(str(e)) from e
    if samples < 1:
        raise BadInput("--samples must be at least 1")
    if max_params is not None and mode is not DeriveMode.ARGMAX:
        raise BadInput(f"--max-params derives the most likely plan within the budget: it "
                       f"needs the argmax derivation (derive --mode argmax, run --derive "
                       f"argmax), not {mode.value}")
    maker = DERIVE_MODES.get(mode)
    run = Path(run_dir)
    check_writable(run / "derived", directory=True)
    search_path = run / "search" / "last.pt"
    search = load(search_path, SearchCheckpoint) if search_path.exists() else None
    if search is not None:
        experiment = search.experiment
    elif maker.needs_search:
        raise MissingInput(f"{search_path}: no search to derive from; run `automtl search` "
                           "first, or use --plan shared|specific|FILE")
    if experiment is None:
        raise BadInput("no experiment: give --tasks (and --data) or run `automtl search` first")
    setup = setup_run(run, experiment, 1)
    graph, space = setup.graph, setup.space
    nodes = [n.name for n in graph.searchable]
    base_seed = search.seed if search is not None else setup.supermodel.seed
    seed = base_seed if seed is None else seed
    logits = search_logits(search, nodes, space.tasks, search_path) if search else None
    use_search_weights = search is not None and maker.uses_search_weights
    weights = search.model if use_search_weights else None
    pretrained = setup.supermodel.weights
    origin = "search" if use_search_weights else "pretrained" if pretrained else "seed"
    init = {"from": origin, "seed": base_seed,
            "checkpoint": str(search_path) if use_search_weights else None}
    results = []
    # candidates of an earlier derive would otherwise be selected by the next finetune
    shutil.rmtree(run / "derived" / "candidates", ignore_errors=True)
    for k in range(samples):
        plan = choose(mode, nodes, space.tasks, logits=logits, seed=seed + k,
                      plan_file=plan_file)
        if search is not None:
            plan.source["search_step"] = search.step
        network, tree = build_derived_network(graph, space, plan, experiment, base_seed,
                                              weights, pretrained=pretrained)
        report = plan_report(plan, tree, graph, space, network.heads)
        fitted = _within(plan, report, max_params, logits, graph, space) \
            if max_params is not None else plan
        if fitted.choices != plan.choices:
            plan = fitted
            network, tree = build_derived_network(graph, space, plan, experiment, base_seed,
                                                  weights, pretrained=pretrained)
            report = plan_report(plan, tree, graph, space, network.heads)
        out = run / "derived" if samples == 1 else run / "derived" / "candidates" / str(k)
        paths = write_derived(out, network, tree, plan, report, graph, space, experiment,
                              base_seed, init, pretrained)
        results.append({"dir": str(out), **paths, "params": report["params"]["total"],
                        "flops": report["flops"]["all_tasks_one_pass"],
                        "fraction_shared": report["summary"]["fraction_shared"],
                        "source": plan.source})
    return {"run": str(run), "mode": mode.value, "candidates": results}


def _within(plan: Plan, report: dict[str, Any], budget: ParamBudget, logits,
            graph, space) -> Plan:
    """The most likely plan whose whole network (heads included) fits `budget`; the plan's
    source records the budget and what the unconstrained plan had."""
    params = report["params"]
    limit = budget.limit(params["single_task_networks"])
    plan.source["max_params"] = {"budget": str(budget), "limit": limit,
                                 "unconstrained_params": params["total"]}
    if params["total"] <= limit:
        return plan
    cost = PlanCost.of(graph, space)
    table = most_likely_within(logits.numpy(), cost, limit - params["heads"],
                               what=f"--max-params {budget} ({limit:,} parameters, "
                                    f"{params['heads']:,} of them the task heads)")
    return Plan(plan.tasks, {n: [int(c) for c in table[i]] for i, n in enumerate(cost.nodes)},
                plan.source)

"""`--max-params`: the most likely plan within a parameter budget, and its cost model."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from automtl_cli.choices import ParamBudget
from automtl_cli.compiler.derived import build_tree
from automtl_cli.compiler.plan_cost import PlanCost
from automtl_cli.compiler.space import SearchSpace
from automtl_cli.engine.plans.budget import most_likely_within
from automtl_cli.errors import BadInput
from automtl_cli.frontend.build import CompileOptions, build_graph

from conftest import ROOT

TASKS = ("seg", "depth", "normal")


def _graph():
    return build_graph(ROOT / "specs" / "resnet18_w8.prototxt",
                       CompileOptions(input_shapes={None: (2, 3, 32, 32)})).graph


def _log_prob(logits: np.ndarray, table: np.ndarray) -> float:
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return float(np.take_along_axis(logp, table[..., None], -1).sum())


@pytest.mark.parametrize("skip", ["reference", "cheap"])
@pytest.mark.parametrize("bn", ["task", "follow", "shared"])
def test_the_cost_model_counts_what_the_tree_counts(bn, skip):
    graph = _graph()
    space = SearchSpace(TASKS, bn, skip)
    cost = PlanCost.of(graph, space)
    rng = np.random.default_rng(len(bn) + len(skip))
    tables = [rng.integers(0, 3, (len(cost.nodes), len(TASKS))) for _ in range(20)]
    tables += [np.full((len(cost.nodes), len(TASKS)), c) for c in range(3)]
    for table in tables:
        choices = {n: table[i].tolist() for i, n in enumerate(cost.nodes)}
        exact = sum(build_tree(graph, space, choices).modules().values())
        assert cost.backbone(table) == exact == cost.backbone(choices)


def test_a_budget_the_argmax_meets_changes_nothing():
    cost = PlanCost.of(_graph(), SearchSpace(TASKS))
    logits = np.random.default_rng(0).normal(size=(len(cost.nodes), len(TASKS), 3))
    argmax = logits.argmax(-1)
    assert (most_likely_within(logits, cost, cost.backbone(argmax)) == argmax).all()


@pytest.mark.parametrize("bn", ["task", "follow", "shared"])
def test_the_plan_fits_and_tighter_budgets_cost_likelihood(bn):
    cost = PlanCost.of(_graph(), SearchSpace(TASKS, bn))
    s = len(cost.nodes)
    logits = np.random.default_rng(1).normal(size=(s, len(TASKS), 3))
    logits[..., 1] += 1.0  # the policy likes task copies: the budget has to bite
    top = cost.backbone(logits.argmax(-1))
    shared = cost.backbone(np.zeros((s, len(TASKS)), dtype=np.int64))
    previous = np.inf
    for fraction in (0.9, 0.7, 0.5, 0.3):
        limit = int(shared + fraction * (top - shared))
        plan = most_likely_within(logits, cost, limit)
        assert cost.backbone(plan) <= limit
        value = _log_prob(logits, plan)
        assert value <= previous + 1e-9
        previous = value


def test_the_plan_is_the_most_likely_within_the_budget_on_small_spaces():
    """Against every plan of small random spaces (3 nodes × 2 tasks: 729 plans each)."""
    rng = np.random.default_rng(2)
    checked = 0
    for case in range(60):
        own = [(True, True, True), (False, True, True), (False, False, False)][case % 3]
        cost = PlanCost(("a", "b", "c"), rng.integers(10, 100, 3), rng.integers(0, 30, 3),
                        rng.integers(0, 5, 3), own, 7)
        logits = rng.normal(size=(3, 2, 3)) * 2
        plans = [np.array(p).reshape(3, 2) for p in itertools.product(range(3), repeat=6)]
        costs = [cost.backbone(p) for p in plans]
        limit = int(rng.integers(min(costs), max(costs) + 1))
        best = max(_log_prob(logits, p) for p, c in zip(plans, costs) if c <= limit)
        plan = most_likely_within(logits, cost, limit)
        assert cost.backbone(plan) <= limit
        assert _log_prob(logits, plan) == pytest.approx(best, abs=1e-9), case
        checked += 1
    assert checked == 60


def test_many_tasks_search_the_columns_a_price_sweep_finds():
    """Beyond 8 tasks not every column is tried: the plan still fits and is no less likely
    than hard sharing, which fits too."""
    rng = np.random.default_rng(4)
    tasks = 10
    cost = PlanCost(tuple("abcdef"), rng.integers(100, 1000, 6), rng.integers(0, 300, 6),
                    rng.integers(0, 20, 6), (True, True, True), 50)
    logits = rng.normal(size=(6, tasks, 3))
    logits[..., 1] += 1.5
    shared = np.zeros((6, tasks), dtype=np.int64)
    limit = (cost.backbone(shared) + cost.backbone(logits.argmax(-1))) // 2
    plan = most_likely_within(logits, cost, limit)
    assert cost.backbone(plan) <= limit
    assert _log_prob(logits, plan) > _log_prob(logits, shared)


def test_a_budget_below_the_smallest_network_is_refused():
    cost = PlanCost.of(_graph(), SearchSpace(TASKS))
    logits = np.zeros((len(cost.nodes), len(TASKS), 3))
    with pytest.raises(BadInput, match="smallest backbone"):
        most_likely_within(logits, cost, 1000)


@pytest.mark.parametrize("text,expected", [
    ("0.6x", ParamBudget(fraction=0.6)), ("0.75×", ParamBudget(fraction=0.75)),
    ("2.5M", ParamBudget(count=2_500_000)), ("800k", ParamBudget(count=800_000)),
    ("1200000", ParamBudget(count=1_200_000))])
def test_budgets_are_read(text, expected):
    assert ParamBudget.parse(text) == expected


@pytest.mark.parametrize("text", ["", "x", "-1x", "0x", "two", "1.5q", "-3M"])
def test_bad_budgets_are_refused(text):
    with pytest.raises(ValueError, match="not a parameter budget"):
        ParamBudget.parse(text)


@pytest.fixture
def searched(tiny_run, run_cli):
    """A finished search whose policy prefers task copies, so that a budget has to bite."""
    import dataclasses

    import torch

    from automtl_cli.artifacts import SearchCheckpoint, load

    rc, _, err = run_cli("-q", "search", tiny_run, "--experiment",
                         tiny_run.parent / "tiny.prototxt", "--warmup-iters", "2", "--iters", "4")
    assert rc == 0, err
    path = tiny_run / "search" / "last.pt"
    checkpoint = load(path, SearchCheckpoint)
    logits = torch.randn(checkpoint.policy_logits.shape, generator=torch.Generator().manual_seed(3))
    logits[..., 1] += 2.0
    path.unlink()  # a hard link to the last step's file: write a new one
    dataclasses.replace(checkpoint, policy_logits=logits).save(path)
    return tiny_run


def _derive(run_cli, run, *args) -> dict:
    rc, _, err = run_cli("-q", "derive", run, *args)
    assert rc == 0, err
    return json.loads((run / "derived" / "plan.json").read_text())


def test_derive_within_a_budget(searched, run_cli):
    shared = _derive(run_cli, searched, "--plan", "shared")["params"]["total"]
    free = _derive(run_cli, searched, "--mode", "argmax")
    single = free["params"]["single_task_networks"]
    assert free["params"]["total"] > shared
    fraction = round((shared + free["params"]["total"]) / 2 / single, 4)
    fitted = _derive(run_cli, searched, "--mode", "argmax", "--max-params", f"{fraction}x")
    limit = int(fraction * single)
    assert shared <= fitted["params"]["total"] <= limit < free["params"]["total"]
    assert fitted["source"]["max_params"] == {"budget": f"{fraction:g}x", "limit": limit,
                                              "unconstrained_params": free["params"]["total"]}
    # the network stored is the plan's: its parameters are what plan.json says
    from automtl_cli.artifacts import DerivedModel, load
    from automtl_cli.engine.derive import network_of

    data = load(searched / "derived" / "model.pt", DerivedModel)
    assert sum(p.numel() for p in network_of(data).parameters()) == fitted["params"]["total"]
    # a budget the argmax plan meets leaves it as it is
    loose = _derive(run_cli, searched, "--mode", "argmax", "--max-params", "1x")
    assert loose["choices"] == free["choices"]


def test_derive_budget_errors_are_one_line(searched, run_cli):
    rc, _, err = run_cli("-q", "derive", searched, "--mode", "argmax", "--max-params", "1k")
    assert rc == 65 and "smallest backbone" in err and len(err.strip().splitlines()) == 1, err
    rc, _, err = run_cli("-q", "derive", searched, "--mode", "sample", "--max-params", "0.5x")
    assert rc == 65 and "argmax derivation" in err and len(err.strip().splitlines()) == 1, err
    rc, _, err = run_cli("-q", "derive", searched, "--max-params", "half")
    assert rc == 2 and "not a parameter budget" in err, err


def test_run_keeps_automtl_within_the_budget(tmp_path, run_cli, scene_cache):
    from conftest import TINY_EXPERIMENT

    (tmp_path / "tiny.prototxt").write_text(TINY_EXPERIMENT)
    rc, out, err = run_cli("-q", "run", ROOT / "specs" / "resnet18_w8.prototxt", "-o",
                           tmp_path / "r", "--experiment", tmp_path / "tiny.prototxt",
                           "--warmup-iters", "2", "--search-iters", "4", "--finetune-iters",
                           "3", "--max-params", "0.5x", "--jobs", "1")
    assert rc == 0, err
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    automtl = results["methods"]["AutoMTL"]
    single = results["methods"]["single-task"]["params"]["total"]
    assert automtl["params"]["total"] <= 0.5 * single
    assert automtl["derive"]["max_params"] == results["max_params"] == "0.5x"
    assert automtl["plan"]["max_params"]["limit"] == int(0.5 * single)

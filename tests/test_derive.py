"""`automtl derive`: the derived tree equals the supermodel, and is accounted honestly."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from automtl_cli.artifacts import DerivedModel, load
from automtl_cli.compiler.derived import DerivedBackbone, build_tree
from automtl_cli.compiler.space import SearchSpace
from automtl_cli.compiler.supermodel import build_supermodel
from automtl_cli.frontend.build import CompileOptions, build_graph

from conftest import ROOT, perturbed_supermodel

TASKS = ("seg", "depth", "normal")


def _graph():
    return build_graph(ROOT / "specs" / "resnet18_w8.prototxt",
                       CompileOptions(input_shapes={None: (2, 3, 32, 32)})).graph


@pytest.mark.parametrize("skip", ["reference", "cheap"])
@pytest.mark.parametrize("bn", ["task", "follow", "shared"])
def test_derived_equals_supermodel_in_hard_mode(bn, skip):
    g = _graph()
    space = SearchSpace(TASKS, bn, skip)
    model = perturbed_supermodel(g, space).double()  # float64: no rounding luck involved
    s = len(g.searchable)
    policy = torch.randint(0, 3, (s, 3), generator=torch.Generator().manual_seed(len(bn)))
    choices = {n.name: policy[i].tolist() for i, n in enumerate(g.searchable)}
    derived = DerivedBackbone(build_tree(g, space, choices), g, space, model).double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    for train in (False, True):  # eval first: a train step moves running statistics
        model.train(train)
        derived.train(train)
        with torch.no_grad():
            ours = derived(x)
            ref = model(x.expand(3, *x.shape), "hard", policy=policy)  # the stacked path
        for t in range(3):
            torch.testing.assert_close(ours[t], ref[:, t], rtol=1e-4, atol=1e-4)


def test_follow_runs_a_shared_prefix_once():
    g = _graph()
    space = SearchSpace(TASKS, "follow")
    s = len(g.searchable)
    choices = {n.name: [0, 0, 0] if i < s // 2 else [1, 1, 1] for i, n in
               enumerate(g.searchable)}
    model = build_supermodel(g, space)
    tree = build_tree(g, space, choices)
    derived = DerivedBackbone(tree, g, space, model).eval()
    calls: dict[str, int] = {}
    for name, module in derived.graph_module.named_children():
        module.register_forward_hook(
            lambda m, i, o, name=name: calls.__setitem__(name, calls.get(name, 0) + 1))
    with torch.no_grad():
        derived(torch.randn(1, 3, 32, 32))
    first_half = [n.name for n in g.searchable[: s // 2]]
    second_half = [n.name for n in g.searchable[s // 2:]]
    from automtl_cli.compiler.backbone import module_name

    for node in first_half:
        assert calls[module_name(node)] == 1, node  # once for all three tasks
    for node in second_half:
        for task in TASKS:
            assert calls[f"{module_name(node)}__{task}"] == 1
    # under --bn task the same plan shares weights but runs the prefix per task
    task_tree = build_tree(g, SearchSpace(TASKS, "task"), choices)
    assert len(task_tree.values) > len(tree.values)
    assert sum(v.flops for v in task_tree.values) > sum(v.flops for v in tree.values)


@pytest.fixture
def searched(tiny_run, run_cli):
    rc, _, err = run_cli("-q", "search", tiny_run, "--experiment",
                         tiny_run.parent / "tiny.prototxt", "--warmup-iters", "2", "--iters", "4")
    assert rc == 0, err
    return tiny_run


@pytest.mark.parametrize("plan", ["sample", "argmax", "shared", "specific"])
def test_plan_accounting_matches_module_prototxt_and_flop_counter(searched, run_cli, plan):
    args = ["--mode", plan] if plan in ("sample", "argmax") else ["--plan", plan]
    rc, out, err = run_cli("-q", "derive", searched, *args, "--json")
    assert rc == 0, err
    report = json.loads((searched / "derived" / "plan.json").read_text())
    data = load(searched / "derived" / "model.pt", DerivedModel)
    from automtl_cli.engine.derive import build_derived_network

    network, _ = build_derived_network(data.graph, data.space, data.plan, data.experiment,
                                       data.seed)
    network.load_state_dict(data.state_dict)
    assert report["params"]["total"] == sum(p.numel() for p in network.parameters())
    prototxt = searched / "derived" / "model.prototxt"
    assert f"--feature-blob {','.join(TASKS)}" in prototxt.read_text()  # its header says how
    rc, out, err = run_cli("-q", "compile", prototxt, "-o", searched / "recompiled",
                           "--feature-blob", ",".join(TASKS), "--json")
    assert rc == 0, err
    recompiled = json.loads(out)
    assert recompiled["params"] == report["params"]["total"]
    assert list(recompiled["outputs"]) == list(TASKS)
    if plan == "specific":  # read back as a backbone: the last layer's top, the rest noted
        rc, out, err = run_cli("-q", "compile", prototxt, "-o", searched / "recompiled",
                               "--json")
        assert rc == 0, err
        alone = json.loads(out)
        assert list(alone["outputs"]) == [TASKS[-1]]
        assert alone["params"] < recompiled["params"]
        assert any(f"--feature-blob {','.join(TASKS)}" in n for n in alone["notes"]), \
            alone["notes"]
    counter = FlopCounterMode(display=False)
    network.eval()
    with counter, torch.no_grad():
        network(torch.randn(1, 3, 32, 32))
    measured = counter.get_total_flops()
    assert measured == pytest.approx(report["flops"]["all_tasks_one_pass"], rel=0.01)
    if plan == "shared":
        assert report["summary"]["fraction_shared"] == 1.0
        bn = sum(n.params for n in data.graph.nodes if n.type == "BatchNorm")
        # one backbone, and a BatchNorm per task (--bn task)
        assert report["params"]["backbone"] == data.graph.params + (len(TASKS) - 1) * bn
    if plan == "specific":
        assert report["params"]["total"] == report["params"]["single_task_networks"]


def test_plan_file_edited_by_hand(searched, run_cli, tmp_path):
    rc, _, _ = run_cli("-q", "derive", searched, "--plan", "shared")
    plan = json.loads((searched / "derived" / "plan.json").read_text())
    first = next(iter(plan["choices"]))
    plan["choices"][first]["depth"] = "skip"
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(plan))
    rc, out, err = run_cli("-q", "derive", searched, "--plan", edited, "--json")
    assert rc == 0, err
    again = json.loads((searched / "derived" / "plan.json").read_text())
    assert again["choices"][first] == {"seg": "shared", "depth": "skip", "normal": "shared"}
    plan["choices"][first]["depth"] = "sideways"
    edited.write_text(json.dumps(plan))
    rc, _, err = run_cli("-q", "derive", searched, "--plan", edited)
    assert rc == 65 and "expected one of shared, specific, skip" in err


@pytest.mark.parametrize("content, says", [
    (b"\x89PNG\r\n\x1a\n\x00\xff", "not UTF-8 text"),
    (b'{"choices": [["shared"]]}', '"choices" must be an object'),
    (b'{"choices": null}', '"choices" must be an object'),
    (b'{"choices": {"conv1": ["shared"]}}', '"choices".conv1 must be an object'),
    (b'{"choices": ', "invalid JSON at line 1"),
    (b"[1, 2]", 'expected a JSON object with "choices"'),
])
def test_malformed_plan_files_are_refused_in_one_line(searched, run_cli, tmp_path, content,
                                                       says):
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    rc, _, err = run_cli("-q", "derive", searched, "--plan", bad)
    assert rc == 65 and says in err and err.count("\n") == 1, err


def test_plan_file_with_a_byte_order_mark_is_read(searched, run_cli, tmp_path):
    assert run_cli("-q", "derive", searched, "--plan", "shared")[0] == 0
    text = (searched / "derived" / "plan.json").read_text()
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + text.encode())
    rc, _, err = run_cli("-q", "derive", searched, "--plan", bom)
    assert rc == 0, err


def test_plan_json_edited_in_place_is_not_silently_ignored(searched, run_cli):
    assert run_cli("-q", "derive", searched, "--plan", "shared")[0] == 0
    path = searched / "derived" / "plan.json"
    plan = json.loads(path.read_text())
    first = next(iter(plan["choices"]))
    plan["choices"][first]["depth"] = "specific"
    path.write_text(json.dumps(plan))
    rc, _, err = run_cli("-q", "finetune", searched, "--iters", "1")
    assert rc == 65 and "differ from the derived model" in err and "--plan" in err, err
    assert run_cli("-q", "derive", searched, "--plan", path)[0] == 0  # the advice works
    rc, _, err = run_cli("-q", "finetune", searched, "--iters", "1")
    assert rc == 0, err


def test_baseline_plans_work_straight_after_compile(tiny_run, run_cli):
    rc, out, err = run_cli("-q", "derive", tiny_run, "--plan", "specific", "--experiment",
                           tiny_run.parent / "tiny.prototxt", "--json")
    assert rc == 0, err
    assert json.loads(out)["candidates"][0]["source"]["mode"] == "specific"
    rc, _, err = run_cli("-q", "derive", tiny_run, "--mode", "sample", "--experiment",
                         tiny_run.parent / "tiny.prototxt")
    assert rc == 66 and "no search to derive from" in err


def test_samples_write_candidates(searched, run_cli):
    rc, out, err = run_cli("-q", "derive", searched, "--samples", "3", "--json")
    assert rc == 0, err
    seeds = [c["source"]["seed"] for c in json.loads(out)["candidates"]]
    assert len(set(seeds)) == 3
    assert all((searched / "derived" / "candidates" / str(k) / "model.pt").exists()
               for k in range(3))

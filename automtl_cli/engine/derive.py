"""`automtl derive`: a plan (per search node and task: shared, specific or skip) and its network.

Plans come from the search's logits (`sample`: an independent draw per node and task from
softmax(α), seeded, as the reference does; `argmax`), from the baselines (`shared`: hard sharing,
`specific`: one network per task), or from a hand-edited plan file. The plan is accounted
honestly: parameters of everything a task runs (backbone, skips, BatchNorm, heads), FLOPs per
image per task and for all tasks in one pass, and the reference's own conv-only count.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from automtl_cli.artifacts import (
    ArtifactKind,
    atomic_write,
    load_artifact,
    save_artifact,
    write_json,
)
from automtl_cli.compiler.derived import CHOICES, DerivedBackbone, Tree, build_tree
from automtl_cli.compiler.space import SearchSpace
from automtl_cli.compiler.supermodel import build_supermodel
from automtl_cli.compiler.writer import LayerSpec, NotExpressible, head_layers, render
from automtl_cli.engine.network import DerivedNetwork
from automtl_cli.errors import BadInput, MissingInput
from automtl_cli.experiment import ExperimentConfig
from automtl_cli.frontend.ir import Graph
from automtl_cli.tasks import build_tasks

__all__ = ["DERIVED_FORMAT", "Plan", "build_derived_network", "choose", "count_head",
           "decode_derived", "load_derived", "plan_report", "search_logits", "write_derived"]

DERIVED_FORMAT = 1
PLAN_FORMAT = 1


@dataclass
class Plan:
    tasks: tuple[str, ...]
    choices: dict[str, list[int]]  # search node → per task: 0 shared, 1 specific, 2 skip
    source: dict[str, Any]

    def to_json_choices(self) -> dict[str, dict[str, str]]:
        return {node: {t: CHOICES[c] for t, c in zip(self.tasks, row)}
                for node, row in self.choices.items()}

    def tensor(self, nodes: list[str]) -> torch.Tensor:
        return torch.tensor([self.choices[n] for n in nodes], dtype=torch.long)


def choose(mode: str, nodes: list[str], tasks: tuple[str, ...], *,
           logits: torch.Tensor | None = None, seed: int = 0) -> Plan:
    """A plan by `mode`: sample, argmax, shared or specific."""
    s, t = len(nodes), len(tasks)
    if mode == "shared":
        table = np.zeros((s, t), dtype=np.int64)
    elif mode == "specific":
        table = np.ones((s, t), dtype=np.int64)
    elif mode in ("sample", "argmax", "random"):
        if mode == "random":
            logits = torch.zeros(s, t, 3)
        if logits is None:
            raise BadInput(f"--mode {mode} needs a search checkpoint (run `automtl search`)")
        probs = torch.softmax(logits.double(), dim=-1).numpy()
        if mode == "argmax":
            table = probs.argmax(-1)
        else:
            rng = np.random.default_rng(seed)
            table = np.array([[rng.choice(3, p=probs[i, j] / probs[i, j].sum())
                               for j in range(t)] for i in range(s)], dtype=np.int64)
    else:
        raise BadInput(f"unknown plan mode {mode!r}")
    return Plan(tasks, {n: [int(c) for c in table[i]] for i, n in enumerate(nodes)},
                {"mode": mode, "seed": seed if mode in ("sample", "random") else None})


def plan_from_file(path: str | os.PathLike, nodes: list[str], tasks: tuple[str, ...]) -> Plan:
    """A plan edited by hand: `{"choices": {node: {task: "shared|specific|skip"}}}`."""
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"{path}: no such plan file")
    try:
        data = json.loads(path.read_text())
        raw = data["choices"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise BadInput(f"{path}: not a plan (a JSON object with \"choices\"): {e}") from e
    unknown = [n for n in raw if n not in nodes]
    if unknown:
        raise BadInput(f"{path}: unknown search node(s) {', '.join(unknown[:5])}")
    choices = {}
    for node in nodes:
        row = raw.get(node)
        if not isinstance(row, dict):
            raise BadInput(f"{path}: no choices for search node {node!r}")
        out = []
        for task in tasks:
            value = row.get(task)
            if value not in CHOICES:
                raise BadInput(f"{path}: node {node!r}, task {task!r}: expected one of "
                               f"{', '.join(CHOICES)}, got {value!r}")
            out.append(CHOICES.index(value))
        choices[node] = out
    return Plan(tasks, choices, {"mode": "file", "file": str(path)})


def count_head(head: nn.Module, feature_shape: tuple[int, ...]) -> tuple[int, int]:
    """Parameters and per-image FLOPs of a head, from a shape-only (meta) pass."""
    flops = 0

    def on_conv(module: nn.Module, inputs, output) -> None:
        nonlocal flops
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            flops += 2 * output[0].numel() * (module.in_channels // module.groups) * k
        elif isinstance(module, nn.Linear):
            flops += 2 * module.in_features * module.out_features * output[0].numel() \
                // module.out_features

    meta = _to_meta(head)
    handles = [m.register_forward_hook(on_conv) for m in meta.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        meta.eval()(torch.empty(1, *feature_shape[1:], device="meta"))
    for h in handles:
        h.remove()
    return sum(p.numel() for p in head.parameters()), flops


def _to_meta(module: nn.Module) -> nn.Module:
    return copy.deepcopy(module).to("meta")


def plan_report(plan: Plan, tree: Tree, graph: Graph, space: SearchSpace,
                heads: nn.ModuleDict) -> dict[str, Any]:
    """plan.json: the choices and their cost, per task and for all tasks in one pass."""
    feature = graph.shape_of(graph.output)
    head_cost = {t: count_head(heads[t], feature) for t in space.tasks}
    modules = tree.modules()
    per_task_params, per_task_flops = {}, {}
    for task in space.tasks:
        path = tree.path(task)
        per_task_params[task] = sum(tree.modules(path).values()) + head_cost[task][0]
        per_task_flops[task] = sum(v.flops for v in path) + head_cost[task][1]
    backbone = sum(modules.values())
    heads_params = sum(c[0] for c in head_cost.values())
    all_flops = sum(v.flops for v in tree.values) + sum(c[1] for c in head_cost.values())
    single = sum(graph.params + head_cost[t][0] for t in space.tasks)
    conv_weights = {n.name: n.params for n in graph.searchable}
    paper = sum(w * (any(c == 0 for c in plan.choices[n]) + sum(c == 1 for c in plan.choices[n]))
                for n, w in conv_weights.items())
    shared_nodes = sum(all(c == 0 for c in row) for row in plan.choices.values())
    note = space.bn_strategy.compute_sharing
    return {
        "kind": "automtl-plan", "format_version": PLAN_FORMAT,
        "tasks": list(space.tasks), "bn": space.bn, "skip": space.skip,
        "source": plan.source, "choices": plan.to_json_choices(),
        "summary": {
            "search_nodes": len(plan.choices),
            "shared_by_all_tasks": shared_nodes,
            "fraction_shared": round(sum(c == 0 for row in plan.choices.values() for c in row)
                                     / max(1, len(plan.choices) * len(space.tasks)), 4),
        },
        "params": {
            "total": backbone + heads_params, "backbone": backbone, "heads": heads_params,
            "per_task": per_task_params, "single_task_networks": single,
            "reduction_vs_single_task": round(1 - (backbone + heads_params) / single, 4),
            "reference_conv_count": paper,
        },
        "flops": {
            "unit": "per image; 2 × multiply-adds of convolutions and matrix products",
            "all_tasks_one_pass": all_flops, "per_task": per_task_flops,
            "per_task_sum": sum(per_task_flops.values()),
        },
        "compute_sharing": note,
        "input_shape": list(tree.input_shape),
    }


def build_derived_network(graph: Graph, space: SearchSpace, plan: Plan,
                          experiment: ExperimentConfig, seed: int,
                          weights: dict[str, torch.Tensor] | None = None,
                          class_weights=None) -> tuple[DerivedNetwork, Tree]:
    """The derived network, its weights from a search state (`weights`) or fresh from `seed`."""
    from automtl_cli.engine.network import SearchNetwork

    tree = build_tree(graph, space, plan.choices)
    tasks = build_tasks(experiment, class_weights)
    supermodel = build_supermodel(graph, space, seed=seed)
    search = SearchNetwork(supermodel, tasks, seed)
    if weights is not None:
        search.load_state_dict(weights)
    backbone = DerivedBackbone(tree, graph, space, search.backbone)
    return DerivedNetwork(backbone, search.heads), tree


def derived_prototxt(tree: Tree, graph: Graph, space: SearchSpace, heads: nn.ModuleDict,
                     name: str) -> str:
    """The derived network as a multi-output prototxt: one output blob per task."""
    by_name = {n.name: n for n in graph.nodes}
    start = next(iter(graph.inputs))
    blob = {0: start}
    used: dict[str, int] = {}
    layers: list[LayerSpec] = []
    reused = {op for op, n in _op_uses(tree).items() if n > 1}
    for v in tree.values:
        node = by_name[v.op.node]
        label = v.op.node + ("" if v.op.variant in ("plain", "shared") else
                             f"@{v.op.task}" if v.op.variant == "task" else
                             f".skip@{v.op.task or 'all'}")
        k = used.get(label, 0)
        used[label] = k + 1
        lname = label if k == 0 else f"{label}~{k}"
        bottoms = [blob[i] for i in v.inputs]
        key = label if v.op in reused else None  # one op on several inputs: shared weights
        if v.op.variant.startswith("skip"):
            specs = _skip_layers(node, lname, bottoms, graph, space)
            for spec in specs:
                spec.weights_key = f"{key}/{spec.type}" if key else None
            layers += specs
        else:
            attrs = {k: x for k, x in node.attrs.items() if k not in ("param_names", "shares")}
            layers.append(LayerSpec(lname, node.type, bottoms, [lname], attrs, key))
        blob[v.id] = layers[-1].tops[0]
    for task, head in heads.items():
        layers += head_layers(head, f"head_{task}", blob[tree.outputs[task]], task)
    return render(name, start, tree.input_shape, layers,
                  header="Derived by `automtl derive`: one output blob per task.")


def _op_uses(tree: Tree) -> dict:
    uses: dict = {}
    for v in tree.values:
        uses[v.op] = uses.get(v.op, 0) + 1
    return uses


def _skip_layers(node, lname: str, bottoms: list[str], graph: Graph,
                 space: SearchSpace) -> list[LayerSpec]:
    """A skip as layers: 1×1 convolution + BN, or a stride-s subsampling (kernel-1 pooling)."""
    from automtl_cli.compiler.space import skip_plan

    in_shape = graph.value_shapes()[node.inputs[0]]
    plan = skip_plan(node, in_shape, space.skip)
    if plan.pads(*in_shape[2:]) is not None:
        raise NotExpressible(f"the skip of {node.name} crops or pads its input")
    if plan.kind == "conv":
        conv = {"num_output": plan.out_channels, "kernel": [1, 1], "stride": list(plan.stride),
                "pad": [0, 0], "dilation": [1, 1], "group": 1, "bias": False}
        bn = {"eps": 1e-5, "momentum": 0.1, "affine": True, "bias": True,
              "track_running_stats": True}
        return [LayerSpec(f"{lname}/conv", "Convolution", bottoms, [f"{lname}/conv"], conv),
                LayerSpec(lname, "BatchNorm", [f"{lname}/conv"], [lname], bn)]
    if plan.in_channels != plan.out_channels:
        raise NotExpressible(f"the parameter-free skip of {node.name} pads or truncates "
                             "channels")
    pool = {"method": "max", "ceil": False, "global": False, "kernel": [1, 1], "pad": [0, 0],
            "stride": list(plan.stride)}
    return [LayerSpec(lname, "Pooling", bottoms, [lname], pool)]


def write_derived(out_dir: str | os.PathLike, network: DerivedNetwork, tree: Tree, plan: Plan,
                  report: dict[str, Any], graph: Graph, space: SearchSpace,
                  experiment: ExperimentConfig, seed: int, init: dict[str, Any]
                  ) -> dict[str, str]:
    out = Path(out_dir)
    paths = {"plan": str(write_json(out / "plan.json", report))}
    try:
        text = derived_prototxt(tree, graph, space, network.heads, f"{graph.name}-derived")
        paths["prototxt"] = str(atomic_write(out / "model.prototxt",
                                             lambda tmp: Path(tmp).write_text(text)))
    except NotExpressible as e:
        report["prototxt"] = f"not written: {e}"
        write_json(out / "plan.json", report)
    model = save_artifact(out / "model.pt", ArtifactKind.DERIVED_MODEL, DERIVED_FORMAT, {
        "plan": {"tasks": list(plan.tasks), "choices": plan.choices, "source": plan.source},
        "graph": graph.to_dict(), "space": space.to_dict(), "experiment": experiment.to_dict(),
        "seed": seed, "init": init, "state_dict": network.state_dict(), "report": report,
    })
    paths["model"] = str(model)
    return paths


def load_derived(path: str | os.PathLike) -> dict[str, Any]:
    return decode_derived(load_artifact(path, ArtifactKind.DERIVED_MODEL, DERIVED_FORMAT))


def decode_derived(data: dict[str, Any]) -> dict[str, Any]:
    """A stored derived model's plain data (in model.pt or inside final.pt) as typed objects."""
    data = dict(data)
    data["graph"] = Graph.from_dict(data["graph"])
    data["space"] = SearchSpace.from_dict(data["space"])
    data["experiment"] = ExperimentConfig.from_dict(data["experiment"])
    p = data["plan"]
    data["plan"] = Plan(tuple(p["tasks"]), {k: list(v) for k, v in p["choices"].items()},
                        p["source"])
    return data


def search_logits(search: dict[str, Any], nodes: list[str], tasks: tuple[str, ...],
                  path: str | os.PathLike) -> torch.Tensor:
    """A search checkpoint's [S, T, 3] policy logits, checked against the run's nodes and
    tasks."""
    logits = search.get("policy_logits")
    expected = (len(nodes), len(tasks), 3)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != expected:
        raise BadInput(f"{path}: policy_logits should be a tensor of shape {list(expected)} "
                       f"(search nodes × tasks × branches)")
    if list(search.get("search_nodes", [])) != nodes or \
            tuple(search.get("space", {}).get("tasks", ())) != tasks:
        raise BadInput(f"{path}: its search nodes or tasks are not this run's")
    return logits.float()


def run_derive(run_dir: str | os.PathLike, *, mode: str, plan_file: str | None = None,
               samples: int = 1, seed: int | None = None,
               experiment: ExperimentConfig | None = None) -> dict[str, Any]:
    """Derive RUN/derived/ (or RUN/derived/candidates/k/ for several samples)."""
    from automtl_cli.engine.runconfig import setup_run
    from automtl_cli.engine.search import SEARCH_FORMAT

    run = Path(run_dir)
    search_path = run / "search" / "last.pt"
    search = load_artifact(search_path, ArtifactKind.SEARCH_CHECKPOINT, SEARCH_FORMAT) \
        if search_path.exists() else None
    if search is not None:
        experiment = ExperimentConfig.from_dict(search["experiment"])
    elif mode in ("sample", "argmax"):
        raise MissingInput(f"{search_path}: no search to derive from; run `automtl search` "
                           "first, or use --plan shared|specific|FILE")
    if experiment is None:
        raise BadInput("no experiment: give --tasks (and --data) or run `automtl search` first")
    setup = setup_run(run, experiment, 1)
    graph, space = setup.graph, setup.space
    nodes = [n.name for n in graph.searchable]
    base_seed = int(search["config"]["seed"]) if search is not None else \
        int(setup.supermodel["seed"])
    seed = base_seed if seed is None else seed
    logits = search_logits(search, nodes, space.tasks, search_path) if search else None
    use_search_weights = search is not None and mode in ("sample", "argmax", "file")
    weights = search["model"] if use_search_weights else None
    init = {"from": "search" if use_search_weights else "seed", "seed": base_seed,
            "checkpoint": str(search_path) if use_search_weights else None}
    results = []
    count = max(1, samples)
    # candidates of an earlier derive would otherwise be selected by the next finetune
    shutil.rmtree(run / "derived" / "candidates", ignore_errors=True)
    for k in range(count):
        if mode == "file":
            plan = plan_from_file(plan_file, nodes, space.tasks)
        else:
            plan = choose(mode, nodes, space.tasks, logits=logits, seed=seed + k)
        if search is not None:
            plan.source["search_step"] = int(search["step"])
        network, tree = build_derived_network(graph, space, plan, experiment, base_seed,
                                              weights)
        report = plan_report(plan, tree, graph, space, network.heads)
        out = run / "derived" if count == 1 else run / "derived" / "candidates" / str(k)
        paths = write_derived(out, network, tree, plan, report, graph, space, experiment,
                              base_seed, init)
        results.append({"dir": str(out), **paths, "params": report["params"]["total"],
                        "flops": report["flops"]["all_tasks_one_pass"],
                        "fraction_shared": report["summary"]["fraction_shared"],
                        "source": plan.source})
    return {"run": str(run), "mode": mode, "candidates": results}

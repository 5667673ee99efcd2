"""Deriving's machinery: a plan's network, its honest cost, and its files.

Plans come from the search's logits (`sample`: an independent draw per node and task from
softmax(α), seeded, as the reference does; `argmax`), from the baselines (`shared`: hard sharing,
`specific`: one network per task), or from a hand-edited plan file. The plan is accounted
honestly: parameters of everything a task runs (backbone, skips, BatchNorm, heads), FLOPs per
image per task and for all tasks in one pass, and the reference's own conv-only count.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from automtl_cli.artifacts import (
    ArtifactKind,
    DerivedModel,
    SearchCheckpoint,
    write_json,
    write_text,
)
from automtl_cli.compiler.derived import DerivedBackbone, Tree, build_tree
from automtl_cli.compiler.plan import Plan
from automtl_cli.compiler.space import SearchSpace
from automtl_cli.compiler.strategies.skip import SkipKind
from automtl_cli.compiler.supermodel import NodeWeights, build_supermodel
from automtl_cli.compiler.writer import LayerSpec, NotExpressible, head_layers, render
from automtl_cli.engine.network import DerivedNetwork
from automtl_cli.errors import BadInput
from automtl_cli.experiment import ExperimentConfig
from automtl_cli.frontend.ir import Graph
from automtl_cli.tasks import build_tasks

__all__ = ["build_derived_network", "count_head", "network_of", "plan_report", "search_logits",
           "write_derived"]

PLAN_FORMAT = 1


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
        "kind": ArtifactKind.PLAN.value, "format_version": PLAN_FORMAT,
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
                          class_weights=None, *, pretrained: NodeWeights | None = None
                          ) -> tuple[DerivedNetwork, Tree]:
    """The derived network, its weights from a search state (`weights`), else fresh from
    `seed` with the backbone's `pretrained` weights where given (the heads stay the seed's)."""
    from automtl_cli.engine.network import SearchNetwork

    tree = build_tree(graph, space, plan.choices)
    tasks = build_tasks(experiment, class_weights)
    supermodel = build_supermodel(graph, space, seed=seed, weights=pretrained)
    search = SearchNetwork(supermodel, tasks, seed)
    if weights is not None:
        search.load_state_dict(weights)
    backbone = DerivedBackbone(tree, graph, space, search.backbone)
    return DerivedNetwork(backbone, search.heads), tree


def network_of(derived: DerivedModel, state: dict[str, torch.Tensor] | None = None, *,
               class_weights=None, pretrained: bool = False) -> DerivedNetwork:
    """A stored derived model's network: fresh from its seed (with its backbone's pretrained
    weights when `pretrained`), or with `state` loaded."""
    if pretrained and not derived.pretrained:
        raise BadInput("this run has no pretrained weights: compile the backbone with "
                       "--weights FILE (or from a PyTorch module), or use --init scratch")
    network, _ = build_derived_network(derived.graph, derived.space, derived.plan,
                                       derived.experiment, derived.seed,
                                       class_weights=class_weights,
                                       pretrained=derived.pretrained if pretrained else None)
    if state is not None:
        network.load_state_dict(state)
    return network


def derived_prototxt(tree: Tree, graph: Graph, space: SearchSpace, heads: nn.ModuleDict,
                     name: str) -> str:
    """The derived network as a multi-output prototxt: one output blob per task."""
    by_name = {n.name: n for n in graph.nodes}
    start = next(iter(graph.inputs))
    blob = {0: start}
    used: dict[str, int] = {}
    layers: list[LayerSpec] = []
    reused = {op for op, n in _op_uses(tree).items() if n > 1}
    tops: dict[int, list[str]] = {}  # a several-top layer's value → its written tops
    for v in tree.values:
        if v.op.port is not None:
            blob[v.id] = tops[v.inputs[0]][v.op.port]
            continue
        node = by_name[v.op.node]
        label = v.op.node + ("" if v.op.variant.one_copy else
                             f".skip@{v.op.task or 'all'}" if v.op.variant.is_skip else
                             f"@{v.op.task}")
        k = used.get(label, 0)
        used[label] = k + 1
        lname = label if k == 0 else f"{label}~{k}"
        bottoms = [blob[i] for i in v.inputs]
        key = label if v.op in reused else None  # one op on several inputs: shared weights
        if v.op.variant.is_skip:
            specs = _skip_layers(node, lname, bottoms, graph, space)
            for spec in specs:
                spec.weights_key = f"{key}/{spec.type}" if key else None
            layers += specs
        else:
            attrs = {k: x for k, x in node.attrs.items() if k not in ("param_names", "shares")}
            outs = [lname] if len(node.outputs) == 1 else \
                [f"{lname}:{i}" for i in range(len(node.outputs))]
            layers.append(LayerSpec(lname, node.type, bottoms, outs, attrs, key))
            tops[v.id] = outs
        blob[v.id] = layers[-1].tops[0]
    for task, head in heads.items():
        layers += head_layers(head, f"head_{task}", blob[tree.outputs[task]], task)
    outputs = ",".join(heads) if heads else ",".join(  # a bare trunk: each task's last blob
        dict.fromkeys(blob[tree.outputs[t]] for t in tree.tasks))
    return render(name, start, tree.input_shape, layers,
                  header="Derived by `automtl derive`: one output blob per task. Read it back "
                         "with every\noutput (compile keeps the last layer's top by default): "
                         f"automtl compile model.prototxt --feature-blob {outputs}")


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
    if plan.kind is SkipKind.CONV:
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
                  experiment: ExperimentConfig, seed: int, init: dict[str, Any],
                  pretrained: NodeWeights | None = None) -> dict[str, str]:
    out = Path(out_dir)
    paths = {"plan": str(write_json(out / "plan.json", report))}
    try:
        text = derived_prototxt(tree, graph, space, network.heads, f"{graph.name}-derived")
        paths["prototxt"] = str(write_text(out / "model.prototxt", text))
    except NotExpressible as e:
        report["prototxt"] = f"not written: {e}"
        write_json(out / "plan.json", report)
    model = DerivedModel(plan, graph, space, experiment, seed, init, network.state_dict(),
                         report, pretrained).save(out / "model.pt")
    paths["model"] = str(model)
    return paths


def search_logits(search: SearchCheckpoint, nodes: list[str], tasks: tuple[str, ...],
                  path: str | os.PathLike) -> torch.Tensor:
    """A search checkpoint's [S, T, 3] policy logits, checked against the run's nodes and
    tasks."""
    logits = search.policy_logits
    expected = (len(nodes), len(tasks), 3)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != expected:
        raise BadInput(f"{path}: policy_logits should be a tensor of shape {list(expected)} "
                       f"(search nodes × tasks × branches)")
    if list(search.search_nodes) != nodes or tuple(search.space.tasks) != tasks:
        raise BadInput(f"{path}: its search nodes or tasks are not this run's")
    return logits.float()

"""The plain backbone as a torch module: the IR emitted as an fx graph, straight-line `forward`.

This is the single-task network the prototxt describes, with no search space. It is the baseline
the supermodel must reproduce exactly (one task, all-shared policy) and the check that the front
end's shape rules agree with what torch computes.
"""

from __future__ import annotations

import operator

import torch
from torch import fx, nn

from automtl_cli.frontend.ir import Graph
from automtl_cli.frontend.ops import LAYER_KINDS

__all__ = ["backbone_state", "bind_outputs", "build_backbone", "module_name", "module_names"]


def module_name(layer_name: str) -> str:
    """A submodule name for a layer: prototxt names may hold '/', '.', '-' and the like."""
    safe = "".join(c if c.isalnum() or c == "_" else "_" for c in layer_name)
    return safe if safe and not safe[0].isdigit() else f"l_{safe}"


def module_names(graph: Graph) -> dict[str, str]:
    """The submodule name of each node that owns a module (not those sharing another's)."""
    names: dict[str, str] = {}
    used: set[str] = set()
    for node in graph.nodes:
        if node.attrs.get("shares") is not None:
            continue
        name = module_name(node.name)
        while name in used:
            name += "_"
        used.add(name)
        names[node.name] = name
    return names


def bind_outputs(fx_graph: fx.Graph, env: dict, outputs: list[str], result: fx.Node) -> None:
    """A node's values in `env`: its module's result, or, for several tops (Slice, Split), the
    items of the tuple it returns."""
    if len(outputs) == 1:
        env[outputs[0]] = result
        return
    for i, value in enumerate(outputs):
        env[value] = fx_graph.call_function(operator.getitem, (result, i))


def build_backbone(graph: Graph, *, seed: int | None = None) -> fx.GraphModule:
    """One module per layer, wired by a generated `forward(*inputs) -> output(s)`."""
    if seed is not None:
        torch.manual_seed(seed)
    shapes = graph.value_shapes()
    root = nn.Module()
    fx_graph = fx.Graph()
    env: dict[str, fx.Node] = {}
    for value in graph.inputs:
        env[value] = fx_graph.placeholder(module_name(value))
    names = module_names(graph)
    for node in graph.nodes:
        owner = node.attrs.get("shares")
        if owner is None:
            kind = LAYER_KINDS[node.type]
            root.add_module(names[node.name], kind.build(node.attrs,
                                                         [shapes[v] for v in node.inputs]))
        # weights shared with an earlier layer: call its module again
        name = names[owner if owner is not None else node.name]
        bind_outputs(fx_graph, env, node.outputs,
                     fx_graph.call_module(name, tuple(env[v] for v in node.inputs)))
    outs = [env[v] for v in graph.outputs]
    fx_graph.output(outs[0] if len(outs) == 1 else tuple(outs))
    return fx.GraphModule(root, fx_graph, class_name=f"Backbone_{module_name(graph.name)}")


def backbone_state(graph: Graph, node_states: dict[str, dict[str, torch.Tensor]]
                   ) -> dict[str, torch.Tensor]:
    """Per-node state dicts (a front end's weights, `node_weights`) as one state dict for
    `build_backbone(graph)`."""
    names = module_names(graph)
    return {f"{names[node]}.{key}": tensor for node, state in node_states.items()
            for key, tensor in state.items()}

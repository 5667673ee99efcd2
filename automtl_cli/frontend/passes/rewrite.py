"""Rewrites of the shaped graph: fold BatchNorm + Scale, share named parameters, number depths.

They run after the cut, on the layers that stay, so their notes count only what the network
keeps.
"""

from __future__ import annotations

from collections.abc import Iterable

from automtl_cli.frontend.ir import Node
from automtl_cli.frontend.passes.state import BuildState

__all__ = ["assign_depths", "fold_batchnorm_scale", "number_depths", "share_named_params"]


def fold_batchnorm_scale(state: BuildState) -> None:
    """Caffe writes a normalisation as BatchNorm (statistics) + Scale (γ, β): make it one node,
    the affine BatchNorm the supermodel searches over."""
    nodes = state.nodes
    consumers: dict[str, int] = {}
    for n in nodes:
        for v in n.inputs:
            consumers[v] = consumers.get(v, 0) + 1
    by_input = {n.inputs[0]: n for n in nodes if n.type == "Scale" and len(n.inputs) == 1}
    removed: set[str] = set()
    for n in nodes:
        if n.type != "BatchNorm" or n.attrs["affine"]:
            continue
        v = n.outputs[0]
        scale = by_input.get(v)
        if scale is None or consumers.get(v) != 1 or v in state.outputs:
            continue
        n.attrs = {**n.attrs, "affine": True, "bias": scale.attrs["bias"]}
        if "param_names" in scale.attrs:  # the learnable γ/β are the Scale's
            n.attrs["param_names"] = scale.attrs["param_names"]
        n.params += scale.params
        n.outputs = list(scale.outputs)
        n.folded.append(scale.name)
        removed.add(scale.name)
    if removed:
        state.notes.append(f"folded {len(removed)} BatchNorm + Scale pairs into affine BatchNorm")
    state.nodes = [n for n in nodes if n.name not in removed]


def share_named_params(state: BuildState) -> None:
    """Layers naming the same parameters (Caffe's `param { name }`) hold them once: the later
    ones point at the first (`attrs["shares"]`) and count no parameters of their own."""
    owner: dict[tuple, Node] = {}
    shared = 0
    for n in state.nodes:
        names = n.attrs.get("param_names")
        if not names:
            continue
        key = (n.type, tuple(names))
        first = owner.get(key)
        if first is None:
            owner[key] = n
        elif first.params == n.params:
            n.attrs = {**n.attrs, "shares": first.name}
            n.params = 0
            shared += 1
    if shared:
        state.notes.append(f"{shared} layers share the weights of an earlier layer (param names)")


def number_depths(state: BuildState) -> None:
    """Depth as the reference defines it: searchable convolutions on the longest input path
    (the sharing regulariser weighs a node by it, `docs/method.md`)."""
    assign_depths(state.inputs, state.nodes)


def assign_depths(inputs: Iterable[str], nodes: list[Node]) -> None:
    """`number_depths` on any graph's nodes (the torch front end has no `BuildState`)."""
    depth: dict[str, int] = dict.fromkeys(inputs, 0)
    for n in nodes:
        d = max((depth.get(v, 0) for v in n.inputs), default=0) + (1 if n.searchable else 0)
        n.depth = d
        for v in n.outputs:
            depth[v] = d

"""Networks back to prototxt (Caffe dialect), so `automtl compile` can read what automtl derives.

Each IR layer is written from its attributes by its op (`LayerKind.prototxt_layers`; a
normalisation with γ/β, for one, becomes Caffe's BatchNorm and in-place Scale). Task heads are
torch modules: they are traced with torch.fx and their Conv2d / BatchNorm2d / ReLU / Dropout /
addition calls written as layers. What prototxt cannot say (a cropping skip, a channel
pad) raises `NotExpressible`, naming the layer.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from automtl_cli.frontend.ir import Graph, Shape
from automtl_cli.frontend.ops import LAYER_KINDS, LayerText

__all__ = ["LayerSpec", "NotExpressible", "graph_layers", "head_layers", "render"]


class NotExpressible(ValueError):
    """Part of a network has no prototxt form."""


@dataclass
class LayerSpec:
    name: str
    type: str
    bottoms: list[str]
    tops: list[str]
    attrs: dict[str, Any]
    weights_key: str | None = None  # layers with the same key share their weights


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _block(layer: LayerText) -> str:
    lines = [f"layer {{\n  name: {_quote(layer.name)}\n  type: {_quote(layer.type)}"]
    lines += [f"  bottom: {_quote(b)}" for b in layer.bottoms]
    lines += [f"  top: {_quote(t)}" for t in layer.tops]
    lines += [f"  param {{ name: {_quote(p)} }}" for p in layer.param_names or ()]
    if layer.param_field:
        lines.append(f"  {layer.param_field} {{ {layer.body} }}")
    lines.append("}")
    return "\n".join(lines)


def render(name: str, input_name: str, input_shape: Shape, layers: list[LayerSpec],
           header: str = "") -> str:
    """A whole Caffe-dialect prototxt: an Input layer, then the layers in order."""
    blocks = [f"# {line}" for line in header.splitlines()] + [f"name: {_quote(name)}"]
    specs = [LayerSpec(input_name, "Input", [], [input_name], {"shapes": [list(input_shape)]}),
             *layers]
    for spec in specs:
        kind = LAYER_KINDS[spec.type]
        blocks += [_block(layer) for layer in kind.prototxt_layers(
            spec.name, spec.bottoms, spec.tops, spec.attrs, spec.weights_key)]
    return "\n".join(blocks) + "\n"


def graph_layers(graph: Graph) -> list[LayerSpec]:
    """The IR's layers as written specs (a backbone back to prototxt)."""
    return [LayerSpec(n.name, n.type, list(n.inputs), list(n.outputs), n.attrs)
            for n in graph.nodes]


def _conv_attrs(m: nn.Conv2d) -> dict[str, Any]:
    if m.padding_mode != "zeros" or isinstance(m.padding, str):
        raise NotExpressible("a convolution with non-zero or string padding mode")
    return {"num_output": m.out_channels, "kernel": list(m.kernel_size),
            "stride": list(m.stride), "pad": list(m.padding), "dilation": list(m.dilation),
            "group": m.groups, "bias": m.bias is not None}


def head_layers(head: nn.Module, prefix: str, bottom: str, top: str) -> list[LayerSpec]:
    """A head module as layers reading `bottom`; its output blob is named `top`."""
    traced = fx.symbolic_trace(head)
    blob: dict[fx.Node, str] = {}
    specs: list[LayerSpec] = []
    nodes = list(traced.graph.nodes)
    result = next(n for n in nodes if n.op == "output").args[0]
    for node in nodes:
        if node.op == "placeholder":
            blob[node] = bottom
            continue
        if node.op == "output":
            break
        name = f"{prefix}/{node.target if node.op == 'call_module' else node.name}"
        out = top if node is result else name
        ins = [blob[a] for a in node.args if isinstance(a, fx.Node)]
        if node.op == "call_module":
            m = traced.get_submodule(node.target)
            if isinstance(m, nn.Conv2d):
                specs.append(LayerSpec(name, "Convolution", ins, [out], _conv_attrs(m)))
            elif isinstance(m, nn.BatchNorm2d):
                specs.append(LayerSpec(name, "BatchNorm", ins, [out], {
                    "eps": m.eps, "momentum": m.momentum if m.momentum is not None else 0.1,
                    "affine": m.affine, "bias": m.affine, "track_running_stats": True}))
            elif isinstance(m, nn.ReLU):
                specs.append(LayerSpec(name, "ReLU", ins, [out], {"negative_slope": 0.0}))
            elif isinstance(m, nn.Dropout):
                specs.append(LayerSpec(name, "Dropout", ins, [out], {"ratio": m.p}))
            elif isinstance(m, nn.Identity):
                blob[node] = ins[0]
                continue
            else:
                raise NotExpressible(f"head layer {node.target} ({type(m).__name__})")
        elif node.op == "call_function" and node.target in (operator.add, torch.add):
            specs.append(LayerSpec(name, "Eltwise", ins, [out],
                                   {"operation": "sum", "coeff": None}))
        else:
            raise NotExpressible(f"head operation {node.format_node()}")
        blob[node] = out
    if blob.get(result) != top:  # the head returned its input or an alias
        raise NotExpressible(f"head {prefix} does not end in a layer")
    return specs

"""The op table, op by op: shape rule, parameters by hand count, FLOPs by formula, the prototxt
form read back, the torch module against the layer's definition (`docs/adding-an-op.md`).
"""

from __future__ import annotations

import re

from automtl_cli.frontend.build import build_graph
from automtl_cli.frontend.ops import LAYER_KINDS

from conftest import ROOT

HEAD = 'name: "t"\nlayer { name: "data" type: "Input" top: "data" ' \
       'input_param { shape { dim: 2 dim: 3 dim: 16 dim: 16 } } }\n'


def _conv(name: str, bottom: str, cout: int, kernel: int, pad: int) -> str:
    return (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" '
            f"convolution_param {{ num_output: {cout} kernel_size: {kernel} pad: {pad} }} }}\n")


def _graph(text: str, tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    return build_graph(path).graph


def _node(graph, name: str):
    return next(n for n in graph.nodes if n.name == name)


def _flops(graph, name: str) -> int:
    node = _node(graph, name)
    shapes = graph.value_shapes()
    return LAYER_KINDS[node.type].flops(node.attrs, [shapes[v] for v in node.inputs],
                                        node.shapes)


# --------------------------------------------------------------------------- the whole table

def test_readme_names_every_layer_type():
    text = (ROOT / "README.md").read_text()
    listed = re.search(r"Supported layer types: (.*?);", text, re.S).group(1)
    for kind in LAYER_KINDS.values():
        if kind.role in ("op", "input"):
            assert re.search(rf"\b{kind.type}\b", listed), kind.type


def test_flops_follow_the_formulas(tmp_path):
    text = (HEAD + _conv("c", "data", 8, 3, 1)
            + 'layer { name: "d" type: "Deconvolution" bottom: "c" top: "d" '
              "convolution_param { num_output: 2 kernel_size: 4 stride: 2 group: 2 } }\n"
            + 'layer { name: "fc" type: "InnerProduct" bottom: "d" top: "fc" '
              "inner_product_param { num_output: 5 } }\n")
    g = _graph(text, tmp_path)
    assert _flops(g, "c") == 2 * 8 * 3 * 3 * 3 * 16 * 16  # 2 · Cout · Cin · k² · Hout · Wout
    assert _flops(g, "d") == 2 * 8 * (2 // 2) * 4 * 4 * 16 * 16  # 2 · Cin · Cout/g · k² · Hin · Win
    assert _node(g, "d").shapes == [(2, 2, 34, 34)]
    assert _flops(g, "fc") == 2 * (2 * 34 * 34) * 5  # 2 · in_features · out_features

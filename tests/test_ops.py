"""The op table, op by op: shape rule, parameters by hand count, FLOPs by formula, the prototxt
form read back, the torch module against the layer's definition (`docs/adding-an-op.md`).

Crop is the worked example of that page; the long-tail corpus' FCN-8s is the real file it meets.
"""

from __future__ import annotations

import re

import pytest
import torch

from automtl_cli.compiler.backbone import build_backbone
from automtl_cli.compiler.space import SearchSpace
from automtl_cli.compiler.supermodel import build_supermodel, extract_backbone_state
from automtl_cli.compiler.writer import graph_layers, render
from automtl_cli.errors import SourceError
from automtl_cli.frontend.build import CompileOptions, build_graph
from automtl_cli.frontend.ops import LAYER_KINDS
from automtl_cli.frontend.ops.reshape import CropModule

from conftest import ROOT

LONGTAIL = ROOT.parent / "shared" / "prototxt-longtail"

HEAD = 'name: "t"\nlayer { name: "data" type: "Input" top: "data" ' \
       'input_param { shape { dim: 2 dim: 3 dim: 16 dim: 16 } } }\n'


def _conv(name: str, bottom: str, cout: int, kernel: int, pad: int) -> str:
    return (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" '
            f"convolution_param {{ num_output: {cout} kernel_size: {kernel} pad: {pad} }} }}\n")


def _crop(bottom: str, ref: str, param: str) -> str:
    return (f'layer {{ name: "crop" type: "Crop" bottom: "{bottom}" bottom: "{ref}" top: "crop" '
            f"crop_param {{ {param} }} }}\n")


# A conv that grows 16 → 18, BatchNorm + Scale + ReLU in place, cropped back to the input's size.
CROP_NET = (HEAD + _conv("c1", "data", 4, 3, 2)
            + 'layer { name: "bn1" type: "BatchNorm" bottom: "c1" top: "c1" }\n'
            + 'layer { name: "sc1" type: "Scale" bottom: "c1" top: "c1" '
              "scale_param { bias_term: true } }\n"
            + 'layer { name: "r1" type: "ReLU" bottom: "c1" top: "c1" }\n'
            + _crop("c1", "data", "axis: 2 offset: 1") + _conv("c2", "crop", 4, 3, 1))


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


# --------------------------------------------------------------------------- Crop

def test_crop_shape_params_and_flops(tmp_path):
    g = _graph(CROP_NET, tmp_path)
    crop = _node(g, "crop")
    assert crop.inputs == ["c1@3", "data"] and crop.shapes == [(2, 4, 16, 16)]
    assert crop.params == 0 and _flops(g, "crop") == 0
    assert crop.attrs == {"axis": 2, "offset": [1]}
    assert g.params == (4 * 3 * 9 + 4) + 2 * 4 + (4 * 4 * 9 + 4)


def test_crop_offsets_per_axis(tmp_path):
    text = (HEAD + _conv("big", "data", 6, 1, 3) + _conv("small", "data", 4, 1, 0)
            + _crop("big", "small", "axis: 1 offset: 1 offset: 2 offset: 3"))
    assert _node(_graph(text, tmp_path), "crop").shapes == [(2, 4, 16, 16)]


@pytest.mark.parametrize("param, message", [
    ("axis: 2 offset: 4", "the crop of axis 2 is out of bounds: size 16 at offset 4 in 18"),
    ("axis: 1 offset: 1 offset: 1", "2 offset values for the 3 axes from axis 1"),
    ("axis: 4", "axis 4 is out of range for a 4-D input"),
])
def test_crop_errors_name_the_layer(param, message, tmp_path):
    text = HEAD + _conv("c1", "data", 4, 3, 2) + _crop("c1", "data", param)
    with pytest.raises(SourceError) as e:
        _graph(text, tmp_path)
    assert str(e.value) == f'{tmp_path / "net.prototxt"}:4: layer "crop" (Crop): {message}'


def test_crop_module_is_caffes_window():
    x, ref = torch.randn(2, 3, 20, 22), torch.empty(2, 3, 15, 16)
    out = CropModule(2, [3, 5])(x, ref)
    torch.testing.assert_close(out, x[:, :, 3:18, 5:21], rtol=0, atol=0)


def test_crop_round_trips_through_the_writer(tmp_path):
    g = _graph(CROP_NET, tmp_path)
    again = _graph(render(g.name, "data", g.inputs["data"], graph_layers(g)), tmp_path)
    assert [(n.type, n.shapes) for n in again.nodes] == [(n.type, n.shapes) for n in g.nodes]
    assert _node(again, "crop").attrs == _node(g, "crop").attrs  # floats elsewhere pass float32
    assert again.params == g.params


def test_crop_in_the_supermodel_equals_the_backbone(tmp_path):
    g = _graph(CROP_NET, tmp_path)
    model = build_supermodel(g, SearchSpace(("seg", "depth")), seed=0).eval()
    backbone = build_backbone(g).eval()
    backbone.load_state_dict(extract_backbone_state(model, 0))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        ours = model(x, "hard", policy=torch.zeros(len(g.searchable), 2, dtype=torch.long))
        plain = backbone(x)
    for t in range(2):  # all shared: both tasks compute the plain network
        torch.testing.assert_close(ours[:, t], plain, rtol=1e-5, atol=1e-5)


def test_crop_along_the_batch_is_not_shared_between_tasks(tmp_path):
    text = HEAD + _conv("c1", "data", 3, 1, 0) + _crop("c1", "data", "axis: 0")
    with pytest.raises(ValueError, match="layer 'crop': Crop along the batch axis cannot be "
                                         "shared between tasks"):
        build_supermodel(_graph(text, tmp_path), SearchSpace(("seg", "depth")))


def test_fcn8s_from_the_long_tail_corpus():
    path = LONGTAIL / "caffe" / "fcn8s_deploy.prototxt"
    if not path.is_file():
        pytest.skip(f"long-tail corpus not found at {LONGTAIL}")
    g = build_graph(path).graph  # figures from the corpus' SOURCES.md
    assert (g.source_layers, g.params, g.shape_of(g.output)) == (47, 134_489_759,
                                                                 (1, 21, 500, 500))
    crops = [(n.inputs[0], n.shapes[0][2]) for n in g.nodes if n.type == "Crop"]
    assert crops == [("score_pool4", 34), ("score_pool3", 70), ("upscore8", 500)]
    cut = build_graph(path, CompileOptions(feature_blob="fc7")).graph
    assert (cut.params, cut.shape_of(cut.output)) == (134_260_544, (1, 4096, 16, 16))

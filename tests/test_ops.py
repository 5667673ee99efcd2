"""The op table, op by op: shape rule, parameters by hand count, FLOPs by formula, the prototxt
form read back, the torch module against the layer's definition (`docs/adding-an-op.md`).

Crop is the worked example of that page; the long-tail corpus' FCN-8s is the real file it meets.
The types added after it share one table (`LONGTAIL_CASES`) and the same checks, plus the
supermodel against the backbone and `derive`'s prototxt read back.
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

from conftest import LONGTAIL, ROOT, corpus_dir

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
    path = corpus_dir(LONGTAIL) / "caffe" / "fcn8s_deploy.prototxt"
    g = build_graph(path).graph  # figures from the corpus' SOURCES.md
    assert (g.source_layers, g.params, g.shape_of(g.output)) == (47, 134_489_759,
                                                                 (1, 21, 500, 500))
    crops = [(n.inputs[0], n.shapes[0][2]) for n in g.nodes if n.type == "Crop"]
    assert crops == [("score_pool4", 34), ("score_pool3", 70), ("upscore8", 500)]
    cut = build_graph(path, CompileOptions(feature_blob="fc7")).graph
    assert (cut.params, cut.shape_of(cut.output)) == (134_260_544, (1, 4096, 16, 16))


# --------------------------------------------------------------------------- the long tail
# Every type added after Crop, in one table: a small network around layer "x" (input [2, 3, 16,
# 16], conv c1 to 4 channels), the IR node's type, shapes and parameters counted by hand, and the
# layer's definition written out by hand for the torch check.

def _layer(name: str, type_: str, bottoms: list[str], tops: list[str], body: str = "") -> str:
    b = "".join(f' bottom: "{x}"' for x in bottoms)
    t = "".join(f' top: "{x}"' for x in tops)
    return f'layer {{ name: "{name}" type: "{type_}"{b}{t} {body} }}\n'


C1 = _conv("c1", "data", 4, 3, 1)  # line 3; "x" comes on line 4 unless a case says otherwise
GATE = (_layer("gp", "Pooling", ["c1"], ["gp"], "pooling_param { pool: AVE global_pooling: true }")
        + _layer("gate", "Sigmoid", ["gp"], ["gate"]))  # [2, 4, 1, 1]
FLAT_GATE = GATE + _layer("fg", "Flatten", ["gate"], ["fg"])  # [2, 4]
S = (2, 4, 16, 16)


def _interp_by_hand(x):
    """Zoom 2 with the corners aligned: even places copy, odd ones average their neighbours."""
    h = x.shape[2]
    rows = torch.empty(*x.shape[:2], 2 * h - 1, x.shape[3])
    rows[:, :, ::2], rows[:, :, 1::2] = x, (x[:, :, :-1] + x[:, :, 1:]) / 2
    out = torch.empty(*x.shape[:2], 2 * h - 1, 2 * x.shape[3] - 1)
    out[..., ::2], out[..., 1::2] = rows, (rows[..., :-1] + rows[..., 1:]) / 2
    return out


def _depthwise_by_hand(inputs, m):
    x = inputs[0]
    return torch.cat([torch.nn.functional.conv2d(x[:, c:c + 1], m.weight[c:c + 1],
                                                 m.bias[c:c + 1], padding=1)
                      for c in range(4)], 1)


# (id, layers after c1, IR type of "x", shapes of "x", params of "x", by hand: (inputs, module))
CHANNELS_LAST = _layer("last", "Permute", ["c1"], ["last"],
                       "permute_param { order: 0 order: 2 order: 3 order: 1 }")
BACK = _layer("back", "Permute", ["x"], ["back"], "permute_param { order: 0 order: 3 order: 1 }")

LONGTAIL_CASES = [
    ("slice", _layer("x", "Slice", ["c1"], ["s0", "s1", "s2"],
                     "slice_param { axis: 1 slice_point: 1 slice_point: 3 }")
     + _layer("cat", "Concat", ["s2", "s0", "s1"], ["cat"]),
     "Slice", [(2, 1, 16, 16), (2, 2, 16, 16), (2, 1, 16, 16)], 0,
     lambda i, m: (i[0][:, :1], i[0][:, 1:3], i[0][:, 3:])),
    ("slice-equal", _layer("x", "Slice", ["c1"], ["s0", "s1"], "slice_param { axis: 1 }")
     + _layer("sum", "Eltwise", ["s0", "s1"], ["sum"]),
     "Slice", [(2, 2, 16, 16)] * 2, 0, lambda i, m: (i[0][:, :2], i[0][:, 2:])),
    ("split", _layer("x", "Split", ["c1"], ["a", "b"])
     + _layer("sum", "Eltwise", ["a", "b"], ["sum"]),
     "Split", [S, S], 0, lambda i, m: (i[0], i[0])),
    ("reshape", _layer("x", "Reshape", ["c1"], ["x"],
                       "reshape_param { shape { dim: 0 dim: 8 dim: -1 dim: 0 } }"),
     "Reshape", [(2, 8, 8, 16)], 0, lambda i, m: i[0].reshape(2, 8, 8, 16)),
    ("reshape-axis", _layer("x", "Reshape", ["c1"], ["x"],
                            "reshape_param { shape { dim: 2 dim: 2 } axis: 1 num_axes: 1 }"),
     "Reshape", [(2, 2, 2, 16, 16)], 0, lambda i, m: i[0].reshape(2, 2, 2, 16, 16)),
    ("flatten", _layer("x", "Flatten", ["c1"], ["x"], "flatten_param { axis: 2 end_axis: 3 }"),
     "Flatten", [(2, 4, 256)], 0, lambda i, m: i[0].reshape(2, 4, 256)),
    ("power", _layer("x", "Power", ["c1"], ["x"],
                     "power_param { power: 2 scale: 0.5 shift: 1 }"),
     "Power", [S], 0, lambda i, m: (1 + 0.5 * i[0]) ** 2),
    ("prelu", _layer("x", "PReLU", ["c1"], ["x"]), "PReLU", [S], 4,
     lambda i, m: torch.where(i[0] > 0, i[0], m.weight.view(1, 4, 1, 1) * i[0])),
    ("prelu-shared", _layer("x", "PReLU", ["c1"], ["x"],
                            "prelu_param { channel_shared: true filler { value: 0.1 } }"),
     "PReLU", [S], 1, lambda i, m: torch.where(i[0] > 0, i[0], m.weight * i[0])),
    ("elu", _layer("x", "ELU", ["c1"], ["x"], "elu_param { alpha: 0.5 }"), "ELU", [S], 0,
     lambda i, m: torch.where(i[0] > 0, i[0], 0.5 * (torch.exp(i[0]) - 1))),
    ("absval", _layer("x", "AbsVal", ["c1"], ["x"]), "AbsVal", [S], 0,
     lambda i, m: torch.where(i[0] < 0, -i[0], i[0])),
    ("bnll", _layer("x", "BNLL", ["c1"], ["x"]), "BNLL", [S], 0,
     lambda i, m: torch.log(1 + torch.exp(i[0]))),
    ("exp", _layer("x", "Exp", ["c1"], ["x"], "exp_param { base: 2 scale: 0.5 shift: 1 }"),
     "Exp", [S], 0, lambda i, m: 2.0 ** (1 + 0.5 * i[0])),
    ("log", _layer("abs", "AbsVal", ["c1"], ["abs"])
     + _layer("x", "Log", ["abs"], ["x"], "log_param { base: 10 scale: 2 shift: 5 }"),
     "Log", [S], 0, lambda i, m: torch.log10(5 + 2 * i[0])),
    ("bias", _layer("x", "Bias", ["c1"], ["x"], "bias_param { axis: 1 num_axes: 2 }"),
     "Bias", [S], 4 * 16, lambda i, m: i[0] + m.bias.view(1, 4, 16, 1)),
    ("bias-two-bottoms", FLAT_GATE + _layer("x", "Bias", ["c1", "fg"], ["x"],
                                            "bias_param { axis: 0 }"),
     "Bias", [S], 0, lambda i, m: i[0] + i[1].view(2, 4, 1, 1)),
    ("scale-two-bottoms", FLAT_GATE + _layer("x", "Scale", ["c1", "fg"], ["x"],
                                             "scale_param { axis: 0 }"),
     "Scale", [S], 0, lambda i, m: i[0] * i[1].view(2, 4, 1, 1)),
    ("tile", _layer("x", "Tile", ["c1"], ["x"], "tile_param { axis: 1 tiles: 3 }"),
     "Tile", [(2, 12, 16, 16)], 0, lambda i, m: torch.cat([i[0]] * 3, 1)),
    ("reduction-mean", _layer("x", "Reduction", ["c1"], ["x"],
                              "reduction_param { operation: MEAN axis: 2 coeff: 2 }"),
     "Reduction", [(2, 4)], 0, lambda i, m: 2 * i[0].sum((2, 3)) / 256),
    ("reduction-sumsq", _layer("x", "Reduction", ["c1"], ["x"],
                               "reduction_param { operation: SUMSQ axis: -1 }"),
     "Reduction", [(2, 4, 16)], 0, lambda i, m: (i[0] * i[0]).sum(3)),
    ("reduction-asum", _layer("x", "Reduction", ["c1"], ["x"],
                              "reduction_param { operation: ASUM axis: 3 }"),
     "Reduction", [(2, 4, 16)], 0, lambda i, m: i[0].abs().sum(3)),
    ("interp-zoom", _layer("x", "Interp", ["c1"], ["x"], "interp_param { zoom_factor: 2 }"),
     "Interp", [(2, 4, 31, 31)], 0, lambda i, m: _interp_by_hand(i[0])),
    ("interp-shrink-crop", _layer("x", "Interp", ["c1"], ["x"],
                                  "interp_param { shrink_factor: 2 pad_beg: -1 pad_end: -1 }"),
     "Interp", [(2, 4, 7, 7)], 0,  # 14 rows after the crop: (14 - 1) // 2 + 1; every other row
     lambda i, m: _align_corners(i[0][:, :, 1:15, 1:15],
                                                                         7)),
    ("interp-size", _layer("x", "Interp", ["c1"], ["x"], "interp_param { height: 5 width: 6 }"),
     "Interp", [(2, 4, 5, 6)], 0, None),
    ("interp-pixel-centres", _layer("x", "Interp", ["c1"], ["x"],
                                    "interp_param { height: 24 width: 8 align_corners: false }"),
     "Interp", [(2, 4, 24, 8)], 0, lambda i, m: _pixel_centres(i[0], 24, 8)),
    ("interp-like", _layer("p", "Pooling", ["c1"], ["p"],
                           "pooling_param { pool: MAX kernel_size: 2 stride: 2 }")
     + _layer("x", "Interp", ["p", "c1"], ["x"]), "Interp", [S], 0, None),
    ("upsample", _layer("x", "Upsample", ["c1"], ["x"], "upsample_param { scale: 2 }"),
     "Upsample", [(2, 4, 32, 32)], 0,
     lambda i, m: i[0][:, :, torch.arange(32) // 2][..., torch.arange(32) // 2]),
    ("upsample-size", _layer("x", "Upsample", ["c1"], ["x"],
                             "upsample_param { scale: 2 upsample_h: 31 upsample_w: 30 }"),
     "Upsample", [(2, 4, 31, 30)], 0,
     lambda i, m: i[0][:, :, torch.arange(31) // 2][..., torch.arange(30) // 2]),
    ("unpool", _layer("p", "Pooling", ["c1"], ["p", "pm"],
                      "pooling_param { pool: MAX kernel_size: 2 stride: 2 }")
     + _layer("x", "Upsample", ["p", "pm"], ["x"], "upsample_param { scale: 2 }"),
     "Upsample", [S], 0, None),  # by hand: test_unpooling_puts_each_maximum_back
    ("unpool-odd", _layer("p", "Pooling", ["c1"], ["p", "pm"],
                          "pooling_param { pool: MAX kernel_size: 3 stride: 2 }")
     + _layer("x", "Upsample", ["p", "pm"], ["x"],
              "upsample_param { upsample_h: 16 upsample_w: 16 }"),
     "Upsample", [S], 0, None),
    ("bn-learn", _layer("x", "BN", ["c1"], ["x"], "bn_param { scale_filler { value: 1 } }"),
     "BatchNorm", [S], 8, None),
    ("bn-inference", _layer("x", "BN", ["c1"], ["x"], "bn_param { bn_mode: INFERENCE }"),
     "Scale", [S], 8, lambda i, m: i[0] * m.weight.view(1, 4, 1, 1) + m.bias.view(1, 4, 1, 1)),
    ("depthwise", _layer("x", "ConvolutionDepthwise", ["c1"], ["x"],
                         "convolution_param { num_output: 4 kernel_size: 3 pad: 1 }"),
     "Convolution", [S], 4 * 9 + 4, _depthwise_by_hand),
    ("shuffle", _layer("x", "ShuffleChannel", ["c1"], ["x"], "shuffle_channel_param { group: 2 }"),
     "ShuffleChannel", [S], 0, lambda i, m: i[0][:, [0, 2, 1, 3]]),
    ("axpy", GATE + _conv("c2", "c1", 4, 1, 0) + _layer("x", "Axpy", ["gate", "c1", "c2"], ["x"]),
     "Axpy", [S], 0, lambda i, m: i[0] * i[1] + i[2]),
    ("permute", _layer("x", "Permute", ["c1"], ["x"], "permute_param { order: 0 order: 2 "
                                                        "order: 3 order: 1 }")
     + _layer("back", "Permute", ["x"], ["back"], "permute_param { order: 0 order: 3 "
                                                    "order: 1 }"),
     "Permute", [(2, 16, 16, 4)], 0, lambda i, m: i[0].transpose(1, 2).transpose(2, 3)),
    ("layernorm-last", CHANNELS_LAST + _layer("x", "LayerNorm", ["last"], ["x"],
                                              "layer_norm_param { eps: 1e-6 }") + BACK,
     "LayerNorm", [(2, 16, 16, 4)], 8, lambda i, m: _layer_norm_by_hand(i[0], 3, m, 1e-6)),
    ("layernorm-chw", _layer("x", "LayerNorm", ["c1"], ["x"],
                             "layer_norm_param { axis: 1 bias: false }"),
     "LayerNorm", [S], 4 * 16 * 16, lambda i, m: _layer_norm_by_hand(i[0], 1, m, 1e-5)),
    ("scale-last-axis", CHANNELS_LAST + _layer("x", "Scale", ["last"], ["x"],
                                               "scale_param { axis: 3 bias_term: true }")
     + BACK, "Scale", [(2, 16, 16, 4)], 8, lambda i, m: i[0] * m.weight + m.bias),
    ("groupnorm", _layer("x", "GroupNorm", ["c1"], ["x"], "group_norm_param { group: 2 }"),
     "GroupNorm", [S], 8, lambda i, m: _group_norm_by_hand(i[0], 2, m)),
    ("scale-spatial", _layer("x", "Scale", ["c1"], ["x"], "scale_param { axis: 2 num_axes: 2 }"),
     "Scale", [S], 256, lambda i, m: i[0] * m.weight.view(1, 1, 16, 16)),
]


def _layer_norm_by_hand(x, axis, m, eps):
    """Each position's values over the axes from `axis` on: minus their mean, over their
    standard deviation (biased), then γ and β."""
    dims = tuple(range(axis, x.dim()))
    mean = x.mean(dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dims, keepdim=True)
    y = (x - mean) / torch.sqrt(var + eps) * m.weight
    return y + m.bias if m.bias is not None else y


def _group_norm_by_hand(x, groups, m):
    """Each sample's channels in groups, each group's values minus their mean over their
    standard deviation (biased, ε 1e-5), then a per-channel γ and β."""
    n, c = x.shape[:2]
    g = x.reshape(n, groups, -1)
    mean = g.mean(2, keepdim=True)
    var = ((g - mean) ** 2).mean(2, keepdim=True)
    y = ((g - mean) / torch.sqrt(var + 1e-5)).reshape(x.shape)
    return y * m.weight.view(1, c, 1, 1) + m.bias.view(1, c, 1, 1)


def _pixel_centres(x, oh, ow):
    """Bilinear at pixel centres, by hand: output i samples input (i + 0.5)·h/size - 0.5,
    clamped at 0 (PyTorch's align_corners=False)."""
    def along(t, axis, size):
        h = t.shape[axis]
        pos = ((torch.arange(size, dtype=torch.float64) + 0.5) * h / size - 0.5).clamp(min=0)
        lo = pos.floor().long().clamp(max=h - 1)
        hi = (lo + 1).clamp(max=h - 1)
        f = (pos - lo).to(t.dtype)
        shape = [1] * t.dim()
        shape[axis] = size
        return t.index_select(axis, lo) * (1 - f.view(shape)) + t.index_select(axis, hi) \
            * f.view(shape)
    return along(along(x, 2, oh), 3, ow)


def _align_corners(x, size):
    """Bilinear with the corners aligned, by hand: output i samples input i·(h-1)/(size-1)."""
    def along(t, axis):
        h = t.shape[axis]
        pos = torch.arange(size, dtype=torch.float64) * (h - 1) / (size - 1)
        lo = pos.floor().long().clamp(max=h - 1)
        hi = (lo + 1).clamp(max=h - 1)
        f = (pos - lo).to(t.dtype)
        shape = [1] * t.dim()
        shape[axis] = size
        return t.index_select(axis, lo) * (1 - f.view(shape)) + t.index_select(axis, hi) \
            * f.view(shape)
    return along(along(x, 2), 3)


LONGTAIL_IDS = [c[0] for c in LONGTAIL_CASES]


def _case(case_id: str):
    return next(c for c in LONGTAIL_CASES if c[0] == case_id)


def _longtail_graph(case_id: str, tmp_path):
    return _graph(HEAD + C1 + _case(case_id)[1], tmp_path)


@pytest.mark.parametrize("case_id", LONGTAIL_IDS)
def test_longtail_shape_and_params(case_id, tmp_path):
    _, _, ir_type, shapes, params, _ = _case(case_id)
    g = _longtail_graph(case_id, tmp_path)
    x = _node(g, "x")
    assert (x.type, x.shapes, x.params) == (ir_type, shapes, params)
    assert g.params == (4 * 3 * 9 + 4) + sum(n.params for n in g.nodes if n.name != "c1")
    assert _flops(g, "x") == (2 * 4 * 9 * 16 * 16 if ir_type == "Convolution" else 0)


@pytest.mark.parametrize("case_id", [c[0] for c in LONGTAIL_CASES if c[5] is not None])
def test_longtail_torch_op_is_the_definition(case_id, tmp_path):
    by_hand = _case(case_id)[5]
    g = _longtail_graph(case_id, tmp_path)
    model = build_backbone(g, seed=0).eval()
    module = model.get_submodule("x")
    with torch.no_grad():  # a non-trivial slope, bias or scale, so the check can fail
        for p in module.parameters():
            p.uniform_(0.2, 0.9)
    seen = {}
    module.register_forward_hook(lambda m, i, o: seen.update(inputs=i, out=o))
    with torch.no_grad():
        model(torch.randn(2, 3, 16, 16))
        want = by_hand(seen["inputs"], module)
    got = seen["out"]
    for a, b in zip(got if isinstance(got, tuple) else (got,),
                    want if isinstance(want, tuple) else (want,)):
        torch.testing.assert_close(a, b.to(a.dtype), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case_id", LONGTAIL_IDS)
def test_longtail_round_trips_through_the_writer(case_id, tmp_path):
    g = _longtail_graph(case_id, tmp_path)
    again = _graph(render(g.name, "data", g.inputs["data"], graph_layers(g)), tmp_path)
    assert [(n.type, n.shapes, n.params) for n in again.nodes] == \
        [(n.type, n.shapes, n.params) for n in g.nodes]
    for a, b in zip(again.nodes, g.nodes):
        assert a.attrs.keys() == b.attrs.keys()
        for k, v in b.attrs.items():
            assert a.attrs[k] == (pytest.approx(v) if isinstance(v, float) else v), (a.name, k)


@pytest.mark.parametrize("case_id", LONGTAIL_IDS)
def test_longtail_one_task_supermodel_equals_the_backbone(case_id, tmp_path):
    g = _longtail_graph(case_id, tmp_path)
    for tasks in (("seg",), ("seg", "depth")):
        model = build_supermodel(g, SearchSpace(tasks, "shared"), seed=0).eval()
        backbone = build_backbone(g).eval()
        backbone.load_state_dict(extract_backbone_state(model, 0))
        x = torch.randn(2, 3, 16, 16)
        with torch.no_grad():
            ours = model(x, "hard", policy=torch.zeros(len(g.searchable), len(tasks),
                                                       dtype=torch.long))
            plain = backbone(x)
        for t in range(len(tasks)):
            torch.testing.assert_close(ours[:, t].reshape(plain.shape), plain, rtol=1e-5,
                                       atol=1e-5)


@pytest.mark.parametrize("case_id", LONGTAIL_IDS)
def test_longtail_derived_prototxt_recompiles(case_id, tmp_path):
    from torch import nn

    from automtl_cli.compiler.derived import DerivedBackbone, build_tree
    from automtl_cli.engine.derive import derived_prototxt

    g = _longtail_graph(case_id, tmp_path)
    space = SearchSpace(("seg", "depth"), "shared")
    choices = {n.name: [0, 1] for n in g.searchable}  # c1 shared by one task, copied by the other
    tree = build_tree(g, space, choices)
    text = derived_prototxt(tree, g, space, nn.ModuleDict(), "derived")
    (tmp_path / "derived").mkdir()
    outputs = text.split("--feature-blob ", 1)[1].split()[0]  # every task's, as the header says
    again = build_graph(tmp_path / "derived" / "net.prototxt", CompileOptions(feature_blob=outputs),
                        text=text).graph
    types = {n.type for n in again.nodes}
    assert _case(case_id)[2] in types
    assert again.params == sum(tree.modules().values())
    model = build_supermodel(g, space, seed=0).eval()
    derived = DerivedBackbone(tree, g, space, model).eval()
    with torch.no_grad():
        outs = derived(torch.randn(2, 3, 16, 16))
    assert [tuple(o.shape) for o in outs] == [g.shape_of(g.output)] * 2


# (layers after c1, type, message[, line of "x"]) — "x" is on line 4 unless a layer precedes it
LONGTAIL_ERRORS = [
    (_layer("x", "Slice", ["c1"], ["a", "b", "c"], "slice_param { slice_point: 1 }"), "Slice",
     "1 slice_point values for 3 tops (give one fewer than the tops)"),
    (_layer("x", "Slice", ["c1"], ["a", "b", "c"]), "Slice",
     "axis 1 of size 4 does not split into 3 equal parts"),
    (_layer("x", "Split", ["c1"], []), "Split", "takes at least 1 top(s), got 0"),
    (_layer("x", "Reshape", ["c1"], ["x"], "reshape_param { shape { dim: 3 dim: -1 } }"),
     "Reshape", "cannot infer the -1 in [3, -1]: 2048 values from [2, 4, 16, 16] do not divide "
                "by 3"),
    (_layer("x", "Reshape", ["c1"], ["x"], "reshape_param { shape { dim: -1 dim: -1 } }"),
     "Reshape", "shape dims must be positive, 0 (copy) or one -1 (infer), got [-1, -1]"),
    (_layer("x", "Flatten", ["c1"], ["x"], "flatten_param { axis: 3 end_axis: 1 }"), "Flatten",
     "end_axis 1 comes before axis 3"),
    (_layer("x", "Power", ["c1", "c1"], ["x"]), "Power", "takes 1 bottom(s), got 2"),
    (_layer("x", "PReLU", ["c1"], ["x"], 'prelu_param { filler { type: "gaussian" } }'),
     "PReLU", 'only a constant slope filler is supported, got "gaussian"'),
    (_layer("x", "ELU", ["c1"], ["x"], "elu_param { alpha: inf }"), "ELU",
     "alpha must be finite, got inf"),
    (_layer("x", "AbsVal", ["c1"], ["x", "y"]), "AbsVal", "takes 1 top(s), got 2"),
    (_layer("x", "BNLL", [], ["x"]), "BNLL", "takes 1 bottom(s), got 0"),
    (_layer("x", "Exp", ["c1"], ["x"], "exp_param { base: -2 }"), "Exp",
     "base must be positive and not 1 (or -1 for e), got -2.0"),
    (_layer("x", "Log", ["c1"], ["x"], "log_param { base: 1 }"), "Log",
     "base must be positive and not 1 (or -1 for e), got 1.0"),
    (_layer("x", "Bias", ["c1"], ["x"], "bias_param { num_axes: 5 }"), "Bias",
     "num_axes 5 from axis 1 is out of range for [2, 4, 16, 16]"),
    (_layer("x", "Scale", ["c1", "c1"], ["x"], "scale_param { axis: 0 bias_term: true }"),
     "Scale", "bias_term with two bottoms is not supported (add a Bias layer)"),
    (_layer("x", "Tile", ["c1"], ["x"], "tile_param { tiles: 0 }"), "Tile",
     "tiles must be at least 1, got 0"),
    (_layer("x", "Reduction", ["c1"], ["x"], "reduction_param { axis: 4 }"), "Reduction",
     "axis 4 is out of range for a 4-D input"),
    (_layer("x", "Interp", ["c1"], ["x"], "interp_param { zoom_factor: 0 }"), "Interp",
     "zoom_factor must be at least 1, got 0"),
    (_layer("x", "Interp", ["c1"], ["x"], "interp_param { zoom_factor: 2 pad_end: 1 }"),
     "Interp", "pad_end must be 0 or negative (a crop), got 1"),
    (_layer("p", "Pooling", ["c1"], ["p", "pm"], "pooling_param { pool: MAX kernel_size: 2 "
                                                   "stride: 2 }")
     + _layer("x", "Upsample", ["c1", "pm"], ["x"], "upsample_param { scale: 2 }"), "Upsample",
     "the mask (bottom 2) [2, 4, 8, 8] must be shaped like the input [2, 4, 16, 16]", 5),
    (_layer("x", "Upsample", ["c1"], ["x"], "upsample_param { scale: 2 upsample_h: 40 "
                                             "upsample_w: 30 }"), "Upsample",
     "output size 40 is more than 2 x the input's 16"),
    (_layer("x", "Pooling", ["c1"], ["x", "mask"], "pooling_param { pool: AVE kernel_size: 2 "
                                                     "stride: 2 }"), "Pooling",
     "a second top (\"mask\", the argmax mask) is only defined for MAX pooling with a window"),
    (_layer("x", "BN", ["c1"], ["x"], 'bn_param { scale_filler { type: "gaussian" } }'), "BN",
     'only a constant scale_filler is supported, got "gaussian"'),
    (_layer("x", "ConvolutionDepthwise", ["c1"], ["x"],
            "convolution_param { num_output: 6 kernel_size: 3 }"), "ConvolutionDepthwise",
     "num_output 6 is not a multiple of the 4 input channels of a depthwise convolution"),
    (_layer("x", "ShuffleChannel", ["c1"], ["x"], "shuffle_channel_param { group: 3 }"),
     "ShuffleChannel", "group 3 does not divide the channels of [2, 4, 16, 16]"),
    (_layer("x", "Axpy", ["c1", "c1", "c1"], ["x"]), "Axpy",
     "a (bottom 1) must be [2, 4, 1, 1] for x [2, 4, 16, 16], got [2, 4, 16, 16]"),
    (_layer("x", "Permute", ["c1"], ["x"], "permute_param { order: 0 order: 1 order: 1 }"),
     "Permute", "order [0, 1, 1] names an axis twice"),
    (_layer("x", "Permute", ["c1"], ["x"], "permute_param { order: 0 order: 4 }"), "Permute",
     "order [0, 4] names an axis beyond a 4-D input"),
    (_layer("x", "LayerNorm", ["c1"], ["x"], "layer_norm_param { axis: 0 }"), "LayerNorm",
     "a LayerNorm over the batch axis (axis: 0) is not supported"),
    (_layer("x", "LayerNorm", ["c1"], ["x"], "layer_norm_param { eps: 0 }"), "LayerNorm",
     "eps must be positive, got 0.0"),
    (_layer("x", "Scale", ["c1"], ["x"], "scale_param { axis: 0 num_axes: 1 }"), "Scale",
     "a learned scale along the batch axis (axis: 0) is not supported"),
    (_layer("x", "GroupNorm", ["c1"], ["x"], "group_norm_param { group: 3 }"), "GroupNorm",
     "group 3 does not divide the channels of [2, 4, 16, 16]"),
    (_layer("x", "GroupNorm", ["c1"], ["x"], "group_norm_param { group: 0 }"), "GroupNorm",
     "group must be at least 1, got 0"),
]


@pytest.mark.parametrize("case", LONGTAIL_ERRORS,
                         ids=[f"{c[1]}-{i}" for i, c in enumerate(LONGTAIL_ERRORS)])
def test_longtail_errors_name_file_line_and_layer(case, tmp_path):
    layers, type_, message, line = (*case, 4)[:4]
    with pytest.raises(SourceError) as e:
        _graph(HEAD + C1 + layers, tmp_path)
    assert str(e.value) == f'{tmp_path / "net.prototxt"}:{line}: layer "x" ({type_}): {message}'


@pytest.mark.parametrize("layers, message", [
    (_layer("x", "Slice", ["c1"], ["a", "b"], "slice_param { axis: 0 }")
     + _layer("cat", "Concat", ["a", "b"], ["cat"]),
     "Slice along the batch axis cannot be shared between tasks"),
    (_layer("x", "Reshape", ["c1"], ["x"], "reshape_param { shape { dim: 1 dim: -1 } }"),
     "Reshape that sets the batch axis cannot be shared between tasks"),
    (_layer("x", "Tile", ["c1"], ["x"], "tile_param { axis: 0 tiles: 2 }"),
     "Tile along the batch axis cannot be shared between tasks"),
    (_layer("x", "Reduction", ["c1"], ["x"], "reduction_param { axis: 1 }"),
     "Reduction over the channel (or batch) axis leaves no channel axis to stack the tasks on"),
    (_layer("x", "Flatten", ["c1"], ["x"], "flatten_param { axis: 0 }"),
     "Flatten from the batch axis cannot be shared between tasks"),
    (_layer("x", "Permute", ["c1"], ["x"], "permute_param { order: 1 order: 0 }"),
     "Permute that moves the batch axis cannot be shared between tasks"),
])
def test_longtail_ops_that_would_mix_tasks_are_refused(layers, message, tmp_path):
    g = _graph(HEAD + C1 + layers, tmp_path)
    with pytest.raises(ValueError, match=re.escape(f"layer 'x': {message}")):
        build_supermodel(g, SearchSpace(("seg", "depth")))


def test_fork_types_are_named_in_a_note(tmp_path):
    text = (HEAD + C1 + _layer("x", "Interp", ["c1"], ["x"], "interp_param { zoom_factor: 2 }")
            + _layer("y", "ShuffleChannel", ["x"], ["y"], "shuffle_channel_param { group: 2 }"))
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    notes = build_graph(path).notes
    assert "Interp: DeepLab's caffe fork (deeplab-public-ver2; a second bottom as in PSPNet's); " \
           "1 layer: x" in notes
    assert any(n.startswith("ShuffleChannel: ShuffleNet's caffe fork") for n in notes)


def test_depthwise_convolution_is_a_search_node(tmp_path):
    g = _longtail_graph("depthwise", tmp_path)
    x = _node(g, "x")
    assert x.searchable and x.attrs["group"] == 4 and [n.name for n in g.searchable] == ["c1", "x"]


def test_unpooling_puts_each_maximum_back(tmp_path):
    """SegNet's pair: MAX pooling with a mask top, Upsample by that mask. Unpooling the pooled
    map itself gives every window's maximum at its place, zeros elsewhere."""
    g = _longtail_graph("unpool", tmp_path)
    model = build_backbone(g, seed=0).eval()
    seen = {}
    model.get_submodule("c1").register_forward_hook(lambda m, i, o: seen.update(c1=o))
    with torch.no_grad():
        out = model(torch.randn(2, 3, 16, 16))
    c1 = seen["c1"]
    window_max = c1.reshape(2, 4, 8, 2, 8, 2).amax((3, 5))
    at_max = c1 == window_max.repeat_interleave(2, 2).repeat_interleave(2, 3)
    torch.testing.assert_close(out, torch.where(at_max, c1, torch.zeros_like(c1)), rtol=0,
                               atol=0)
    assert int(at_max.sum()) == 2 * 4 * 8 * 8  # one maximum per window


def test_dense_image_data_is_segnets_input(tmp_path):
    text = ('name: "s"\nlayer { name: "data" type: "DenseImageData" top: "data" top: "label" '
            "dense_image_data_param { source: \"x.txt\" batch_size: 2 crop_height: 16 "
            "crop_width: 16 } }\n" + C1)
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    with pytest.raises(SourceError, match=r"2,3,16,16"):
        build_graph(path)  # the hint the error gives for --input-shape
    result = build_graph(path, CompileOptions(input_shapes={None: (2, 3, 16, 16)}))
    assert result.graph.params == 4 * 3 * 9 + 4
    assert "DenseImageData: SegNet's caffe fork (alexgkendall/caffe-segnet); 1 layer: data" \
        in result.notes

"""The ONNX front end: trunks exported to ONNX here (the torch front end's trunks, and a few more),
read back into the IR a prototxt makes.

For each trunk the IR must count the module's parameters, infer its output shape and make every
Conv2d searchable; the plain backbone built from the IR, loaded with the model's initialisers,
must compute the module's function. Hand-written ONNX graphs cover what torch's exporter does not
write (auto_pad, opset-10 spellings), and the refusals name every unsupported node at once.
"""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_torch_source import (
    Activations,
    ConvNeXtBlock,
    DenseBlock,
    InPlace,
    InvertedResidual,
    SqueezeExcite,
    StaticShapes,
    TinyResNet,
)
from torch import nn

from automtl_cli.compiler.backbone import backbone_state, build_backbone
from automtl_cli.compiler.space import SearchSpace
from automtl_cli.compiler.supermodel import build_supermodel, extract_backbone_state
from automtl_cli.compiler.writer import graph_layers, render
from automtl_cli.errors import BadInput, MissingDependency, MissingInput, SourceError
from automtl_cli.frontend.build import CompileOptions, build_graph
from automtl_cli.frontend.ops import LAYER_KINDS
from automtl_cli.frontend.sources import SourceKind, build_source, rebuild_graph, source_kind

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed "
                                          "(pip install 'automtl[onnx]')")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

SHAPE = (2, 3, 16, 16)


# --------------------------------------------------------------------------- more trunks

class SqueezeExciteHard(nn.Module):
    """MobileNetV3's block: depthwise conv, an SE gate with Hardsigmoid, Hardswish, and a
    ReLU6 expansion; the flatten spelled `x.view(x.size(0), -1)` (a Shape program in ONNX)."""

    def __init__(self) -> None:
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(3, 16, 1, bias=False), nn.BatchNorm2d(16),
                                    nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 5, 2, 2, groups=16, bias=False),
                                nn.BatchNorm2d(16), nn.Hardswish())
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(16, 4, 1), nn.ReLU(),
                                nn.Conv2d(4, 16, 1), nn.Hardsigmoid())
        self.fc = nn.Linear(16 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dw(self.expand(x))
        x = x * self.se(x)
        return self.fc(x.view(x.size(0), -1))


class LayerScaled(nn.Module):
    """A zero-padded stem (`ZeroPad2d` before a conv), ConvNeXt's layer scale (a learnt
    per-channel factor), a strided ConvTranspose, a subtraction and global max pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.pad = nn.ZeroPad2d(1)
        self.stem = nn.Conv2d(3, 8, 3, stride=2)
        self.dw = nn.Conv2d(8, 8, 7, padding=3, groups=8)
        self.gamma = nn.Parameter(torch.rand(8, 1, 1) + 0.5)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.side = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(self.pad(x))
        y = y + self.gamma * self.dw(y)
        y = self.up(F.gelu(y)) - self.side(x)
        return torch.amax(y, (2, 3), keepdim=True) + y.mean((2, 3), keepdim=True)


class SqueezedSE(nn.Module):
    """An SE gate written with Linear layers: pool, squeeze to (N, C), two Linear, unsqueeze back
    (a Reshape to (N, C, 1, 1) needs the Reshape kind)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(8, 2), nn.Linear(2, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        g = x.mean((2, 3), keepdim=True).squeeze(-1).squeeze(-1)
        g = torch.sigmoid(self.fc2(torch.relu(self.fc1(g))))
        return x * g.unsqueeze(-1).unsqueeze(-1)


class ChannelShuffle(nn.Module):
    """ShuffleNet's grouped 1x1 convs with a channel shuffle (view, transpose, view) between."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 12, 1)
        self.conv2 = nn.Conv2d(12, 12, 1, groups=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        n, c, h, w = x.shape
        x = x.view(n, 3, c // 3, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.conv2(x)


# the torch front end's TRUNKS but ShuffleBlock (torch cannot export nn.ChannelShuffle; the
# shuffle is ChannelShuffle below), and all its TABLE_TRUNKS
TRUNKS = [TinyResNet, InvertedResidual, SqueezeExcite, DenseBlock, Activations, ConvNeXtBlock,
          StaticShapes, InPlace, SqueezeExciteHard, LayerScaled]


def _randomised(module: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, so that their mapping shows."""
    torch.manual_seed(0)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return module.eval()


def export(module: nn.Module, path, shape=SHAPE, **kw) -> str:
    """torch's TorchScript exporter (the dynamo one needs onnxscript), BatchNorm kept unfolded
    so that the model's parameters are the module's."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.randn(shape),), str(path), dynamo=False,
                          training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False,
                          input_names=["x"], **kw)
    return str(path)


def compile_onnx(path, shape=None, feature=None):
    options = CompileOptions(input_shapes={None: shape} if shape else {}, feature_blob=feature)
    return build_source(str(path), options)


def _plain(front) -> nn.Module:
    backbone = build_backbone(front.graph, seed=1)
    backbone.load_state_dict(backbone_state(front.graph, front.weights))
    return backbone.eval()


# --------------------------------------------------------------------------- the trunks

@pytest.mark.parametrize("cls", TRUNKS, ids=lambda c: c.__name__)
def test_counts_and_function_match_the_module(tmp_path, cls):
    module = _randomised(cls())
    front, record = compile_onnx(export(module, tmp_path / "m.onnx"))
    graph = front.graph
    assert record["kind"] == "onnx" and graph.dialect == "onnx"
    assert graph.params == sum(p.numel() for p in module.parameters())
    x = torch.randn(SHAPE)
    with torch.no_grad():
        want = module(x)
        assert graph.shape_of(graph.output)[1:] == tuple(want.shape[1:])
        assert len(graph.searchable) == sum(isinstance(m, nn.Conv2d) for m in module.modules())
        assert torch.allclose(_plain(front)(x[:1]), want[:1], atol=1e-5)


@pytest.mark.parametrize("cls", TRUNKS, ids=lambda c: c.__name__)
def test_the_written_prototxt_recompiles_to_the_same_counts(tmp_path, cls):
    front, _ = compile_onnx(export(_randomised(cls()), tmp_path / "m.onnx"))
    graph = front.graph
    path = tmp_path / "trunk.prototxt"
    path.write_text(render("trunk", "x", graph.inputs["x"], graph_layers(graph)))
    again = build_graph(path).graph
    assert (again.params, len(again.searchable), again.shape_of(again.output)) == (
        graph.params, len(graph.searchable), graph.shape_of(graph.output))


@pytest.mark.parametrize("cls, opset", [(Activations, 11), (LayerScaled, 17),
                                        (SqueezeExciteHard, 9), (DenseBlock, 13),
                                        (ConvNeXtBlock, 17), (ConvNeXtBlock, 13)],
                         ids=lambda v: getattr(v, "__name__", str(v)))
def test_older_opsets(tmp_path, cls, opset):
    """Opset 9's Upsample-era attributes, Clip's attributes before 11, Softmax and Split before
    13, the exact GELU as x * (1 + erf(x / sqrt 2)) * 0.5 before 20 (one GELU layer), and
    LayerNorm as one LayerNormalization from 17, written out before (one LayerNorm with its
    γ and β either way)."""
    module = _randomised(cls())
    front, _ = compile_onnx(export(module, tmp_path / "m.onnx", opset_version=opset))
    assert front.graph.params == sum(p.numel() for p in module.parameters())
    x = torch.randn((1, *SHAPE[1:]))
    with torch.no_grad():
        assert torch.allclose(_plain(front)(x), module(x), atol=1e-5)
    types = [n.type for n in front.graph.nodes]
    if cls is Activations:
        assert types.count("GELU") == 1
    if cls is ConvNeXtBlock:
        assert types.count("LayerNorm") == 2 and types.count("Permute") == 4
        assert "Bias" not in types and types.count("Scale") == 1  # γ, β in the LayerNorms


def test_an_erf_outside_the_gelu_is_refused(tmp_path):
    nodes = [helper.make_node("Div", ["x", "s"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
             helper.make_node("Relu", ["e"], ["y"], name="relu")]
    path = _write(tmp_path, _model(nodes, {"s": np.array(2 ** 0.5)}))
    with pytest.raises(SourceError, match=r'layer "relu" \(Relu\): its input is the Erf of a '
                                          "pattern that only the exact GELU completes"):
        compile_onnx(path)


def test_the_batch_is_the_files_or_the_input_shapes(tmp_path):
    path = export(_randomised(InvertedResidual()), tmp_path / "m.onnx",
                  dynamic_axes={"x": {0: "batch"}})
    front, _ = compile_onnx(path)
    assert front.graph.inputs == {"x": (1, 3, 16, 16)}  # a symbolic batch reads as 1
    front, _ = compile_onnx(path, shape=(4, 3, 24, 24))
    assert front.graph.shape_of(front.graph.output) == (4, 8, 24, 24)
    with pytest.raises(BadInput, match="gives 1 channels; the model's input 'x' has 3"):
        compile_onnx(path, shape=(1, 1, 16, 16))


def test_rebuilt_from_the_record_at_another_size(tmp_path):
    """A later stage rebuilds the graph at the data's size from the run's record, the model
    kept in it: the file may be gone, and a Shape program gives the new reshape targets."""
    module = _randomised(SqueezeExciteHard())
    path = tmp_path / "m.onnx"
    front, record = compile_onnx(export(module, path))
    path.unlink()
    again = rebuild_graph(record, CompileOptions(input_shapes={None: SHAPE}))
    assert again.graph.to_dict() == front.graph.to_dict()
    assert again.weights.keys() == front.weights.keys()
    one = rebuild_graph(record, CompileOptions(input_shapes={None: (1, 3, 16, 16)}))
    assert one.graph.shape_of(one.graph.output) == (1, 10)  # the batch baked in is not kept
    with pytest.raises(SourceError, match=r'"/fc/Gemm" \(Gemm\): its weight takes 1024 '
                                          "features, the input has 4096"):
        rebuild_graph(record, CompileOptions(input_shapes={None: (1, 3, 32, 32)}))  # fixed fc
    trunk = rebuild_graph(record, CompileOptions(input_shapes={None: (1, 3, 32, 32)},
                                                 feature_blob=_tensor_after(front, "Mul")))
    assert trunk.graph.shape_of(trunk.graph.output) == (1, 16, 16, 16)


def _tensor_after(front, op: str) -> str:
    """The ONNX tensor that the last node of `op` writes (its IR node is named after it)."""
    node = [n for n in front.graph.nodes if n.name.endswith(op)][-1]
    return next(t for t, v in front.graph.blobs.items() if v == node.name and t != v)


def test_feature_cuts_at_an_onnx_tensor(tmp_path):
    module = _randomised(TinyResNet())
    front, _ = compile_onnx(export(module, tmp_path / "m.onnx"))
    names = [n.name for n in front.graph.nodes]
    assert names[0] == "/stem/stem.0/Conv" and "/layer1/layer1.0/Add" in names
    feature = next(t for t, v in front.graph.blobs.items() if v == "/layer1/layer1.1/relu_2/Relu")
    cut, _ = compile_onnx(tmp_path / "m.onnx", feature=feature)
    assert cut.graph.shape_of(cut.graph.output) == (2, 16, 4, 4)
    assert cut.graph.params == sum(p.numel() for p in module.stem.parameters()) + sum(
        p.numel() for p in module.layer1.parameters())
    assert cut.notes and "after --feature" in cut.notes[0]
    by_path, _ = compile_onnx(tmp_path / "m.onnx", feature="layer1")  # a module path
    assert by_path.graph.to_dict() == cut.graph.to_dict()
    with pytest.raises(SourceError, match=r'--feature "layer1.9": no tensor or module path of '
                                          "that name in the model \\(did you mean 'layer1.1', "
                                          "'layer1.0'"):
        compile_onnx(tmp_path / "m.onnx", feature="layer1.9")


@pytest.mark.parametrize("cls", TRUNKS, ids=lambda c: c.__name__)
def test_the_supermodel_all_shared_computes_the_module(tmp_path, cls):
    module = _randomised(cls())
    front, _ = compile_onnx(export(module, tmp_path / "m.onnx"))
    model = build_supermodel(front.graph, SearchSpace(("seg",)), seed=0).eval()
    plain = build_backbone(front.graph).eval()
    plain.load_state_dict(extract_backbone_state(model, 0))
    x = torch.randn((1, *SHAPE[1:]))
    policy = torch.zeros(len(front.graph.searchable), 1, dtype=torch.long)
    with torch.no_grad():
        torch.testing.assert_close(model(x, "hard", policy=policy)[:, 0], plain(x))
    # with the model's weights in the backbone the supermodel starts from, it is the module
    with torch.no_grad():
        assert torch.allclose(_plain(front)(x), module(x), atol=1e-5)


class PReLUs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.act1 = nn.Conv2d(3, 6, 3, padding=1), nn.PReLU(6)
        self.conv2, self.act2 = nn.Conv2d(6, 6, 1), nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act2(self.conv2(self.act1(self.conv1(x))))


class Splits(nn.Module):
    """ShuffleNetV2's halves (`chunk`), a channel range (`x[:, 2:5]`), ELU, a learnt per-channel
    bias."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.branch = nn.Conv2d(4, 4, 3, padding=1)
        self.shift = nn.Parameter(torch.randn(3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.conv(x).chunk(2, dim=1)
        y = torch.cat([a, F.elu(self.branch(b))], 1)
        return torch.cat([y, y[:, 2:5] + self.shift], 1)


class Upsampled(nn.Module):
    """An FPN-style top-down step: nearest upsampling by 2, added to a lateral 1x1 conv."""

    def __init__(self) -> None:
        super().__init__()
        self.down, self.lateral = nn.Conv2d(3, 4, 3, 2, 1), nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.down(x), scale_factor=2.0, mode="nearest") + self.lateral(x)


@pytest.mark.parametrize("cls, kind", [(ChannelShuffle, "ShuffleChannel"), (PReLUs, "PReLU"),
                                       (Splits, "Slice"), (Upsampled, "Upsample"),
                                       (SqueezedSE, "Reshape")],
                         ids=["ChannelShuffle", "PReLU", "Splits", "Upsampled", "SqueezedSE"])
def test_ops_on_caffes_long_tail_kinds(tmp_path, cls, kind):
    """Where the layer table has the kind, the op becomes it and computes the module; where it
    has not, the op is refused naming the kind."""
    module = _randomised(cls())
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.PReLU):
                m.weight.uniform_(0.1, 0.4)
    path = export(module, tmp_path / "m.onnx")
    if kind not in LAYER_KINDS:
        with pytest.raises(SourceError, match=f"needs the {kind} layer kind, which this "
                                              "automtl lacks"):
            compile_onnx(path)
        return
    front, _ = compile_onnx(path)
    assert kind in [n.type for n in front.graph.nodes]
    assert front.graph.params == sum(p.numel() for p in module.parameters())
    x = torch.randn((1, *SHAPE[1:]))
    with torch.no_grad():
        assert torch.allclose(_plain(front)(x), module(x), atol=1e-5)


def test_shared_initialisers_are_one_set_of_weights(tmp_path):
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            return self.conv(torch.relu(self.conv(x)))

    module = Twice().eval()
    front, _ = compile_onnx(export(module, tmp_path / "m.onnx"))
    convs = [n for n in front.graph.nodes if n.type == "Convolution"]
    assert convs[1].attrs["shares"] == convs[0].name and convs[1].params == 0
    assert front.graph.params == 84 and set(front.weights) == {convs[0].name}
    x = torch.randn((1, *SHAPE[1:]))
    with torch.no_grad():
        assert torch.allclose(_plain(front)(x), module(x), atol=1e-5)


# --------------------------------------------------------------------------- hand-written graphs

def _model(nodes, inits, out_shape=None, opset=17, in_shape=(1, 3, 8, 8)) -> bytes:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return model.SerializeToString()


def _write(tmp_path, data: bytes) -> str:
    path = tmp_path / "g.onnx"
    path.write_bytes(data)
    return str(path)


def test_auto_pad_same_and_opset_10_clip(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], auto_pad="SAME_UPPER"),
             helper.make_node("Clip", ["c"], ["r"], min=0.0, max=6.0),
             helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[3, 3], strides=[1, 1],
                              auto_pad="SAME_LOWER")]
    front, _ = compile_onnx(_write(tmp_path, _model(nodes, {"w": w}, opset=10)))
    assert [n.type for n in front.graph.nodes] == ["Convolution", "ReLU6", "Pooling"]
    assert front.graph.nodes[0].attrs["pad"] == [1, 1]
    x = torch.randn(1, 3, 8, 8)
    want = F.max_pool2d(F.relu6(F.conv2d(x, torch.from_numpy(w), padding=1)), 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(_plain(front)(x), want, atol=1e-5)


def test_matmul_and_its_bias_are_one_inner_product(tmp_path):
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((8, 5)), rng.standard_normal(5)
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 1, 2, 3]),
             helper.make_node("MatMul", ["t", "w"], ["m"]),
             helper.make_node("Add", ["m", "b"], ["y"])]
    front, _ = compile_onnx(_write(tmp_path, _model(nodes, {"w": w, "b": b},
                                                    in_shape=(1, 3, 8, 8))))
    (node,) = front.graph.nodes
    assert node.type == "InnerProduct" and node.attrs["bias"] and node.params == 45
    x = torch.randn(1, 3, 8, 8)
    want = x @ torch.tensor(w, dtype=torch.float32) + torch.tensor(b, dtype=torch.float32)
    with torch.no_grad():
        assert torch.allclose(_plain(front)(x), want, atol=1e-5)


def test_every_unsupported_op_is_listed_at_once(tmp_path):
    w = np.ones((4, 3, 3, 3))
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[0, 0, 1, 1], name="uneven"),
             helper.make_node("Mish", ["x"], ["e"], name="mish"),
             helper.make_node("Pad", ["x", "p"], ["pd"], mode="reflect", name="reflect"),
             helper.make_node("Conv", ["pd", "w"], ["c2"], name="after"),
             helper.make_node("Concat", ["c", "e", "c2"], ["y"], axis=1, name="cat")]
    path = _write(tmp_path, _model(nodes, {"w": w, "p": np.array([0, 0, 1, 1, 0, 0, 1, 1])}))
    with pytest.raises(SourceError) as e:
        compile_onnx(path)
    lines = str(e.value).splitlines()
    assert lines[0] == "3 unsupported ops:"
    assert lines[1] == (f'{path}: layer "uneven" (Conv): uneven padding (begin [0, 0], end '
                        "[1, 1] at input [1, 3, 8, 8]); the layer kinds pad both sides alike")
    assert lines[2] == (f'{path}: layer "mish" (Mish): no layer kind for this op '
                        "(docs/onnx.md lists the supported ones)")
    assert lines[3].startswith(f'{path}: layer "reflect" (Pad): Pad mode=reflect')


def test_bad_files(tmp_path):
    with pytest.raises(MissingInput, match="no such file"):
        compile_onnx(tmp_path / "none.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\xff\x00 not a model")
    with pytest.raises(BadInput, match="not an ONNX model"):
        compile_onnx(tmp_path / "junk.onnx")
    two = helper.make_graph(
        [helper.make_node("Add", ["x", "z"], ["y"])], "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 8, 8]) for n in "xz"],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    (tmp_path / "two.onnx").write_bytes(helper.make_model(two).SerializeToString())
    with pytest.raises(SourceError, match="reads 2 inputs"):
        compile_onnx(tmp_path / "two.onnx")
    no_axis = _model([helper.make_node("Concat", ["x", "x"], ["y"], name="cat")], {})
    with pytest.raises(SourceError, match=r'layer "cat" \(Concat\): malformed node: KeyError'):
        compile_onnx(_write(tmp_path, no_axis))
    sym = _model([helper.make_node("Relu", ["x"], ["y"])], {}, in_shape=("n", 3, "h", "w"))
    with pytest.raises(BadInput, match=r"symbolic shape \[\?,3,\?,\?\]; give one with "
                                       "--input-shape"):
        compile_onnx(_write(tmp_path, sym))


def test_source_kind_and_the_missing_extra(tmp_path, monkeypatch):
    assert source_kind("net.onnx") is SourceKind.ONNX and source_kind("NET.ONNX") is \
        SourceKind.ONNX
    path = _write(tmp_path, _model([helper.make_node("Relu", ["x"], ["y"])], {}))
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if the extra were not installed
    with pytest.raises(MissingDependency, match=r"pip install 'automtl\[onnx\]'"):
        compile_onnx(path)


# --------------------------------------------------------------------------- the CLI

def test_cli_compiles_an_onnx_file_and_searches_from_it(run_cli, tmp_path):
    path = export(_randomised(InvertedResidual()), tmp_path / "m.onnx")
    run = tmp_path / "run"
    rc, out, err = run_cli("compile", path, "-o", run, "--tasks", "seg,depth", "--json")
    assert rc == 0, err
    summary = json.loads(out)
    assert summary["searchable"] == 4 and summary["dialect"] == "onnx"
    rc, _, err = run_cli("-q", "search", run, "--iters", "2", "--warmup-iters", "1")
    assert rc == 0, err


def test_cli_refuses_with_exit_65(run_cli, tmp_path):
    path = _write(tmp_path, _model([helper.make_node("Mish", ["x"], ["y"], name="e")], {}))
    rc, _, err = run_cli("compile", path, "-o", tmp_path / "run")
    assert rc == 65
    assert f'{path}: layer "e" (Mish): no layer kind for this op' in err


class ChannelsLastNorms(nn.Module):
    """LayerNorms without γ and β (`elementwise_affine=False`) and without β (`bias=False`): the
    exporter writes constant ones and zeros for them, which are not parameters; a layer scale
    whose values are all 1 is one."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.plain, self.no_bias = nn.LayerNorm(8, elementwise_affine=False), \
            nn.LayerNorm(8, bias=False)
        self.fc = nn.Linear(8, 8, bias=False)
        self.gamma = nn.Parameter(torch.ones(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.no_bias(self.plain(self.conv(x).permute(0, 2, 3, 1)))
        return (self.gamma * self.fc(y)).permute(0, 3, 1, 2)


@pytest.mark.parametrize("opset", [13, 17])
def test_layer_norms_without_their_parameters(tmp_path, opset):
    module = _randomised(ChannelsLastNorms())
    front, _ = compile_onnx(export(module, tmp_path / "m.onnx", opset_version=opset))
    assert front.graph.params == sum(p.numel() for p in module.parameters())
    norms = [n.attrs for n in front.graph.nodes if n.type == "LayerNorm"]
    assert [(a["affine"], a["bias"]) for a in norms] == [(False, False), (True, False)]
    x = torch.randn((1, *SHAPE[1:]))
    with torch.no_grad():
        assert torch.allclose(_plain(front)(x), module(x), atol=1e-5)


def test_a_transpose_of_the_batch_axis_is_refused(tmp_path):
    nodes = [helper.make_node("Transpose", ["x"], ["y"], perm=[1, 0, 2, 3], name="t")]
    with pytest.raises(SourceError, match=r'layer "t" \(Transpose\): Transpose with perm='
                                          r"\[1, 0, 2, 3\] moves the batch axis"):
        compile_onnx(_write(tmp_path, _model(nodes, {})))


def test_half_a_layer_norm_written_out_is_refused(tmp_path):
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[-1]),
             helper.make_node("Sub", ["x", "m"], ["c"]),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    with pytest.raises(SourceError, match=r'layer "relu" \(Relu\): its input is the Sub of a '
                                          "pattern that only a LayerNorm written out"):
        compile_onnx(_write(tmp_path, _model(nodes, {}, opset=13)))

"""The PyTorch front end: trunks written here, traced with torch.fx into the IR a prototxt makes.

For each trunk the IR must count the module's parameters, infer its output shape and make every
Conv2d searchable; the plain backbone built from the IR, loaded with the module's weights, must
compute the module's function. The CLI compiles this very file (`tests/test_torch_source.py:NAME`)
and searches from the result.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from automtl_cli.compiler.backbone import backbone_state, build_backbone
from automtl_cli.compiler.space import SearchSpace
from automtl_cli.compiler.supermodel import build_supermodel, extract_backbone_state
from automtl_cli.compiler.writer import graph_layers, render
from automtl_cli.errors import BadInput, SourceError
from automtl_cli.frontend.build import CompileOptions, build_graph
from automtl_cli.frontend.sources import SourceKind, build_source, source_kind
from automtl_cli.frontend.torchfx import node_weights, trace_module

HERE = "tests/test_torch_source.py"


# --------------------------------------------------------------------------- the trunks

def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout))


class Bottleneck(nn.Module):
    def __init__(self, cin: int, mid: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3, self.bn3 = nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + shortcut)


class TinyResNet(nn.Module):
    """A stem, a bottleneck with a strided 1x1 shortcut, one with an identity shortcut."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        self.layer1 = nn.Sequential(Bottleneck(8, 4, 16, 2), Bottleneck(16, 4, 16, 1))
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer1(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


class InvertedResidual(nn.Module):
    """MobileNetV2's block: expand, depthwise 3x3, project, residual; ReLU6."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 8)
        self.block = nn.Sequential(conv_bn(8, 16, 1), nn.ReLU6(inplace=True),
                                   conv_bn(16, 16, 3, groups=16), nn.ReLU6(inplace=True),
                                   conv_bn(16, 8, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.stem(x))
        return x + self.block(x)


class SqueezeExcite(nn.Module):
    """A conv, then its channels gated by pool → conv → ReLU → conv → sigmoid, multiplied."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce, self.expand = nn.Conv2d(8, 2, 1), nn.Conv2d(2, 8, 1)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv(x))
        gate = torch.sigmoid(self.expand(F.relu(self.reduce(self.pool(x)))))
        return x * gate


class DenseBlock(nn.Module):
    """Two BN-ReLU-conv layers, each concatenated to its input, then a transition."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.layers = nn.ModuleList(
            nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, 4, 3, padding=1,
                                                                  bias=False))
            for c in (8, 12))
        self.transition = nn.Sequential(nn.BatchNorm2d(16), nn.LeakyReLU(0.1),
                                        nn.Conv2d(16, 8, 1, bias=False), nn.AvgPool2d(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for layer in self.layers:
            x = torch.cat([x, layer(x)], 1)
        return self.transition(x)


class Activations(nn.Module):
    """The activations PyTorch trunks use and Caffe lacks; dilation, Identity, Dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=2, dilation=2)
        self.acts = nn.Sequential(nn.Hardswish(), nn.GELU(), nn.Identity(), nn.Dropout(0.2),
                                  nn.Hardsigmoid(), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(self.acts(self.conv(x)))


class ShuffleBlock(nn.Module):
    """ShuffleNet-style: a grouped conv, channel shuffle, PReLU, ELU and |x|."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.group_conv = nn.Conv2d(8, 8, 1, groups=2)
        self.shuffle = nn.ChannelShuffle(2)
        self.prelu, self.shared_prelu = nn.PReLU(8), nn.PReLU(1, init=0.1)
        self.elu = nn.ELU(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.shuffle(self.group_conv(self.elu(self.conv(x)))))
        return F.elu(self.shared_prelu(x).abs(), alpha=0.3) + torch.abs(x)


class ConvNeXtBlock(nn.Module):
    """ConvNeXt-style: a depthwise 7x7, then channels-last `x.permute(0, 2, 3, 1)`, LayerNorm,
    Linear, GELU, Linear, a layer-scale parameter, `x.permute(0, 3, 1, 2)`, the residual; a
    LayerNorm2d (permute, `F.layer_norm`, permute) before a strided conv."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 2, 2)
        self.dwconv = nn.Conv2d(8, 8, 7, padding=3, groups=8)
        self.norm = nn.LayerNorm(8, eps=1e-6)
        self.pwconv1, self.act, self.pwconv2 = nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8)
        self.gamma = nn.Parameter(torch.full((8,), 0.5))
        self.down_norm = nn.LayerNorm(8)
        self.down = nn.Conv2d(8, 12, 2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        x = x + (self.gamma * y).permute(0, 3, 1, 2)
        x = F.layer_norm(x.permute(0, 2, 3, 1), (8,), self.down_norm.weight,
                         self.down_norm.bias, 1e-5).permute(0, 3, 1, 2)
        return self.down(x)


class StaticShapes(nn.Module):
    """Shape arithmetic and the ops it feeds: `x.shape` unpacked, a channel shuffle through
    view/permute/reshape, a general reshape, split, scalar arithmetic, functional pooling,
    nearest resizing, adaptive pooling to 4x4, a transposed convolution, a broadcast subtract."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.up = nn.ConvTranspose2d(8, 8, 4, 2, 1, groups=4)
        self.bias = nn.Parameter(torch.full((1, 8, 1, 1), 0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        n, c, h, w = x.shape
        y = x.view(n, 2, c // 2, h, w).permute(0, 2, 1, 3, 4).reshape(n, c, h, w)
        z = F.max_pool2d(x.reshape(n, c // 2, 2 * h, w), (2, 1), (2, 1), ceil_mode=True)
        a, b = torch.split(y + self.bias, [3, 5], dim=1)
        u = F.avg_pool2d(F.interpolate(z, scale_factor=2), 2)
        up = F.adaptive_avg_pool2d(self.up(x), (h, w))
        out = torch.cat([a * 0.5 + 1, 2 - b, u / 4, -x.transpose(1, 3).transpose(1, 3), up], 1)
        out = out.unsqueeze(2).squeeze(2)
        return F.adaptive_avg_pool2d(out, 4) - out.mean((2, 3), keepdim=True)


class InPlace(nn.Module):
    """In-place ops whose tensors are read again: the later reads see the changed values."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        z = y * 2
        z.add_(1)  # the result unused: z itself is what changed
        out = self.relu(y)  # y changes too
        return out + y + z


def tiny_resnet() -> nn.Module:  # a function returning a module: also a NAME
    return TinyResNet()


TRUNKS = [TinyResNet, InvertedResidual, SqueezeExcite, DenseBlock, Activations, ShuffleBlock]
# through the torch front end only (for now): the ConvNeXt-style trunk (channels-last,
# LayerNorm, a layer scale) and the shape-op table; each gets the checks below
TABLE_TRUNKS = [ConvNeXtBlock, StaticShapes, InPlace]
SHAPE = (2, 3, 16, 16)


def _trace(module: nn.Module, feature: str | None = None, shape=SHAPE):
    graph, _ = trace_module(module, shape, file=HERE, name=type(module).__name__,
                            feature=feature)
    return graph


@pytest.mark.parametrize("cls", TRUNKS + TABLE_TRUNKS, ids=lambda c: c.__name__)
def test_counts_match_the_module(cls):
    torch.manual_seed(0)
    module = cls().eval()
    graph = _trace(module)
    assert graph.params == sum(p.numel() for p in module.parameters())
    with torch.no_grad():
        out = module(torch.randn(SHAPE))
    assert graph.shape_of(graph.output) == tuple(out.shape)
    convs = [name for name, m in module.named_modules() if isinstance(m, nn.Conv2d)]
    assert sorted(n.name for n in graph.searchable) == sorted(convs)


@pytest.mark.parametrize("cls", TRUNKS + TABLE_TRUNKS, ids=lambda c: c.__name__)
def test_backbone_with_the_module_weights_computes_the_module(cls):
    torch.manual_seed(0)
    module = cls().eval()
    for m in module.modules():  # non-trivial statistics, so BatchNorm's mapping shows
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    graph = _trace(module)
    backbone = build_backbone(graph, seed=1)
    backbone.load_state_dict(backbone_state(graph, node_weights(graph, module)))
    x = torch.randn(SHAPE)
    with torch.no_grad():
        assert torch.allclose(backbone.eval()(x), module(x), atol=1e-5)


@pytest.mark.parametrize("cls", TRUNKS + TABLE_TRUNKS, ids=lambda c: c.__name__)
def test_the_supermodel_all_shared_equals_the_backbone(cls):
    """Every traced op, the broadcasting SE multiply included, runs on the tasks' stacked batch."""
    graph = _trace(cls(), feature="layer1" if cls is TinyResNet else None)
    model = build_supermodel(graph, SearchSpace(("seg", "depth")), seed=0).eval()
    backbone = build_backbone(graph).eval()
    backbone.load_state_dict(extract_backbone_state(model, 0))
    x = torch.randn(SHAPE)
    with torch.no_grad():
        ours = model(x, "hard", policy=torch.zeros(len(graph.searchable), 2, dtype=torch.long))
        plain = backbone(x)
    for t in range(2):
        torch.testing.assert_close(ours[:, t], plain, rtol=1e-5, atol=1e-5)


def test_node_names_are_module_paths():
    graph = _trace(TinyResNet())
    names = [n.name for n in graph.nodes]
    assert names[:4] == ["stem.0", "stem.1", "stem.2", "stem.3"]
    assert "layer1.0.downsample.0" in names and "layer1.0.add" in names
    assert "layer1.0.relu#1" in names  # one ReLU module called again
    node = next(n for n in graph.nodes if n.name == "layer1.0.conv1")
    assert node.line > 0 and node.type == "Convolution"


def test_feature_cuts_at_a_module_path():
    module = TinyResNet()
    graph = _trace(module, feature="layer1")
    assert graph.shape_of(graph.output) == (2, 16, 4, 4)
    assert graph.nodes[-1].name == "layer1.1.relu#2"
    assert graph.params == sum(p.numel() for p in module.layer1.parameters()) + sum(
        p.numel() for p in module.stem.parameters())
    with pytest.raises(SourceError, match=r'--feature "layer9".*did you mean'):
        _trace(module, feature="layer9")


@pytest.mark.parametrize("cls", TRUNKS + TABLE_TRUNKS, ids=lambda c: c.__name__)
def test_the_written_prototxt_recompiles_to_the_same_counts(tmp_path, cls):
    graph = _trace(cls())
    path = tmp_path / "trunk.prototxt"
    path.write_text(render("trunk", "x", graph.inputs["x"], graph_layers(graph)))
    again = build_graph(path).graph
    assert (again.params, len(again.searchable), again.shape_of(again.output)) == (
        graph.params, len(graph.searchable), graph.shape_of(graph.output))


# --------------------------------------------------------------------------- refusals

class Upsamples(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")
        self.body = nn.Sequential(nn.Conv2d(4, 4, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.interpolate(self.body(self.conv(x)), scale_factor=2.0, mode="bicubic")
        return y.cumsum(1).roll(1, 2)


class Branches(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.conv(x)
        return x


def _line_of(text: str) -> int:
    lines = open(HERE).read().splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


def test_every_unsupported_op_is_listed_with_its_line():
    with pytest.raises(SourceError) as e:
        _trace(Upsamples())
    lines = str(e.value).splitlines()
    assert lines[0] == "4 unsupported ops:"
    line = _line_of("y = F.interpolate(")
    assert lines[1] == (f'{HERE}:{_line_of("y = F.interpolate(self.body")}: layer "conv" '
                        '(call_module torch.nn.Conv2d): padding_mode=\'reflect\' (only zeros)')
    assert lines[2] == (f'{HERE}:{line}: layer "interpolate" (call_function '
                        "torch.nn.functional.interpolate): mode='bicubic' (only bilinear, and "
                        "nearest by an integer factor)")
    other = _line_of("return y.cumsum(")
    assert lines[3] == (f'{HERE}:{other}: layer "cumsum" (call_method cumsum): no layer kind '
                        'for this op (the README\'s "PyTorch modules" lists the supported ones)')
    assert lines[4].startswith(f'{HERE}:{other}: layer "roll" (call_method roll)')


class ShapeRefusals(nn.Module):
    """Ops whose arguments no layer kind expresses, each refused on its own line."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(3, 4, 3, 2, 1, output_padding=1)
        self.pool = nn.AdaptiveAvgPool2d(5)
        self.register_buffer("mean", torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        a = self.pool(self.up(x))
        b = F.interpolate(x, scale_factor=1.5)
        c = (x - self.mean).permute(1, 0, 2, 3)
        d = x.view(-1, 16) / x.view(-1, 16)
        return a, b, c, d


def test_unexpressible_arguments_are_refused_one_line_each():
    with pytest.raises(SourceError) as e:
        _trace(ShapeRefusals())
    lines = str(e.value).splitlines()
    assert lines[0] == "8 unsupported ops:"
    place = f"{HERE}:{_line_of('a = self.pool(self.up(x))')}"
    assert lines[1] == (f'{place}: layer "up" (call_module torch.nn.ConvTranspose2d): '
                        "output_padding=(1, 1) (Deconvolution has none; crop or pad explicitly)")
    assert lines[2] == (f'{place}: layer "pool" (call_module torch.nn.AdaptiveAvgPool2d): '
                        "adaptive pooling from 32x32 to 5x5: neither size divides the other (the "
                        "bins overlap unevenly)")
    assert lines[3] == (f'{HERE}:{_line_of("b = F.interpolate(x, scale_factor=1.5)")}: layer '
                        '"interpolate" (call_function torch.nn.functional.interpolate): nearest '
                        "resizing from 16x16 to 24x24 (only by an integer factor)")
    place = f"{HERE}:{_line_of('c = (x - self.mean)')}"
    assert lines[4] == (f'{place}: layer "mean" (get_attr mean): mean is a buffer or constant, '
                        "not a parameter (only parameters become a layer's weights)")
    assert lines[5] == (f'{place}: layer "permute" (call_method permute): a permutation '
                        "[1, 0, 2, 3] that moves the batch axis")
    place = f"{HERE}:{_line_of('d = x.view(-1, 16)')}"
    assert lines[6] == (f'{place}: layer "view" (call_method view): a reshape from '
                        "[1, 3, 16, 16] to [48, 16] that moves values across the batch axis")
    assert lines[7].startswith(f'{place}: layer "view_1" (call_method view): a reshape')
    assert lines[8] == (f'{place}: layer "truediv" (call_function operator.truediv): dividing '
                        "by a tensor has no layer form")


def test_python_control_flow_on_a_tensor_names_the_line():
    with pytest.raises(SourceError) as e:
        _trace(Branches())
    assert str(e.value).startswith(f'{HERE}:{_line_of("if x.sum() > 0")}: layer "(root)" '
                                   "(trace): torch.fx cannot trace this: symbolically traced")


class ViewHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(4 * 16 * 16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(x)
        return self.fc(x.view(x.size(0), -1))


def test_a_cut_leaves_the_ops_after_it_alone():
    graph = _trace(ViewHead(), feature="body")
    assert [n.name for n in graph.nodes] == ["body.0", "body.1"]


def test_a_forward_that_fails_at_the_input_shape_names_the_line():
    with pytest.raises(SourceError) as e:
        _trace(ViewHead(), shape=(1, 3, 8, 8))
    assert str(e.value).startswith(f'{HERE}:{_line_of("return self.fc(x.view")}: layer "fc" '
                                   "(call_module): the forward pass fails at this input shape")


def test_source_kinds():
    assert source_kind(f"{HERE}:TinyResNet") is SourceKind.TORCH
    assert source_kind("torchvision.models:resnet18") is SourceKind.TORCH
    assert source_kind("specs/resnet34.prototxt") is SourceKind.PROTOTXT
    with pytest.raises(BadInput, match="--input-shape N,C,H,W"):
        build_source(f"{HERE}:TinyResNet")
    front, record = build_source(f"{HERE}:tiny_resnet",
                                 CompileOptions(input_shapes={None: (1, 3, 16, 16)}))
    assert record["kind"] == "torch" and record["spec"] == f"{HERE}:tiny_resnet"
    assert front.graph.params == sum(p.numel() for p in TinyResNet().parameters())
    front, record = build_source("tests.test_torch_source:InvertedResidual",
                                 CompileOptions(input_shapes={None: (1, 3, 16, 16)}))
    assert record["path"].endswith(HERE) and len(front.graph.searchable) == 4
    with pytest.raises(BadInput, match="defines no 'Nope'"):
        build_source(f"{HERE}:Nope", CompileOptions(input_shapes={None: (1, 3, 16, 16)}))


# --------------------------------------------------------------------------- the CLI

def test_cli_refuses_with_exit_65(run_cli, tmp_path):
    rc, _, err = run_cli("compile", f"{HERE}:Upsamples", "--input-shape", "1,3,8,8",
                         "-o", tmp_path)
    assert rc == 65
    assert f'{HERE}:{_line_of("y = F.interpolate(")}: layer "interpolate"' in err


def test_cli_compiles_a_module_and_searches_from_it(run_cli, tmp_path):
    run = tmp_path / "run"
    rc, out, err = run_cli("compile", f"{HERE}:TinyResNet", "--input-shape", "1,3,32,32",
                           "--feature", "layer1", "-o", run, "--tasks", "seg,depth", "--json")
    assert rc == 0, err
    summary = json.loads(out)
    assert summary["searchable"] == 8 and summary["dialect"] == "torch"
    rc, out, err = run_cli("-q", "search", run, "--iters", "2", "--warmup-iters", "1",
                           "--json")
    assert rc == 0, err
    rc, _, err = run_cli("-q", "derive", run, "--mode", "argmax")
    assert rc == 0, err
    rc, _, err = run_cli("-q", "finetune", run, "--iters", "2")
    assert rc == 0, err
    rc, _, err = run_cli("compile", run / "derived" / "model.prototxt", "-o", tmp_path / "re")
    assert rc == 0, err  # the derived network (trunk copies and heads) reads back as prototxt

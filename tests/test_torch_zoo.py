"""Real-world architectures (tests/zoo.py: ResNet, ResNeXt, ResNet-D, VGG, MobileNet v2/v3,
EfficientNet, RegNet, ConvNeXt as torchvision and as timm write it, DenseNet, SqueezeNet,
ShuffleNetV2, Inception v3 and GoogLeNet trunks, FCN- and U-Net-style decoders) through the
Python API and the CLI.

Each compiles exactly: the IR counts the module's parameters, infers its output shape and makes
every Conv2d (and nothing else) searchable; the plain backbone with the module's weights computes
the module, classifier included; cut at its trunk, a one-task supermodel under the all-shared
hard policy computes the trunk's output (eval mode, atol 1e-5). What no layer kind computes is
refused with exit 65 and one line naming the module path, the op and the line.
"""

from __future__ import annotations

import json

import pytest
import torch
import zoo
from torch import nn

import automtl_cli as automtl
from automtl_cli.compiler.backbone import backbone_state, build_backbone
from automtl_cli.compiler.writer import graph_layers, render
from automtl_cli.errors import SourceError
from automtl_cli.frontend.build import CompileOptions, build_graph
from automtl_cli.frontend.torchfx import node_weights

ZOO_FILE = "tests/zoo.py"
IDS = [e.name for e in zoo.ZOO]


def _pretrained(entry: zoo.Entry) -> nn.Module:
    """The module with weights and statistics no seed of ours makes (layer scales too)."""
    torch.manual_seed(3)
    module = entry.build()
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
            elif isinstance(m, (nn.LayerNorm, nn.GroupNorm)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
        for name, p in module.named_parameters():
            if name.endswith(("layer_scale", "gamma")):
                p.uniform_(0.5, 1.5)
    return module.eval()


def _out(y: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
    """The output: torchvision's segmentation models return {"out": ...}."""
    return next(iter(y.values())) if isinstance(y, dict) else y


def _convs(module: nn.Module, prefix: str = "") -> list[str]:
    return sorted(f"{prefix}{n}" for n, m in module.named_modules() if isinstance(m, nn.Conv2d))


def _trunk_output(module: nn.Module, feature: str, x: torch.Tensor) -> torch.Tensor:
    seen: list[torch.Tensor] = []
    hook = module.get_submodule(feature).register_forward_hook(
        lambda m, i, o: seen.append(o.clone()))  # a copy: DenseNet's F.relu(inplace) follows
    try:
        with torch.no_grad():
            module(x)
    finally:
        hook.remove()
    return seen[0]


@pytest.mark.parametrize("entry", zoo.ZOO, ids=IDS)
def test_the_whole_network_compiles_exactly(entry):
    module = _pretrained(entry)
    graph = automtl.compile(module, input_shape=entry.shape).graph
    x = torch.randn(2, *entry.shape[1:])
    with torch.no_grad():
        want = _out(module(x))
    assert graph.params == sum(p.numel() for p in module.parameters())
    assert graph.shape_of(graph.output)[1:] == tuple(want.shape[1:])
    assert sorted(n.name for n in graph.searchable) == _convs(module)
    assert all(n.type == "Convolution" for n in graph.searchable)
    backbone = build_backbone(graph, seed=1).eval()
    backbone.load_state_dict(backbone_state(graph, node_weights(graph, module)))
    with torch.no_grad():
        got = backbone(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("entry", zoo.ZOO, ids=IDS)
def test_the_one_task_supermodel_computes_the_trunk(entry):
    module = _pretrained(entry)
    result = automtl.compile(module, tasks=("seg",), input_shape=entry.shape,
                             feature=entry.feature)
    head = [p.numel() for n, p in module.named_parameters() if n.startswith(entry.head)]
    assert result.graph.params == sum(p.numel() for p in module.parameters()) - sum(head)
    head_convs = [c for h in entry.head for c in _convs(module.get_submodule(h), f"{h}.")]
    assert len(result.graph.searchable) == len(_convs(module)) - len(head_convs)
    x = torch.randn(2, *entry.shape[1:])
    with torch.no_grad():
        want = _trunk_output(module, entry.feature, x) if entry.feature else _out(module(x))
    sm = result.supermodel.eval()
    policy = torch.zeros(len(sm.search_nodes), 1, dtype=torch.long)
    with torch.no_grad():
        got = sm(x, "hard", policy=policy)
    assert got.shape == (2, 1, *want.shape[1:])
    torch.testing.assert_close(got[:, 0], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("entry", zoo.ZOO, ids=IDS)
def test_the_cli_compiles_it(run_cli, tmp_path, entry):
    shape = ",".join(map(str, entry.shape))
    args = ["compile", f"{ZOO_FILE}:{entry.name}", "--input-shape", shape, "-o", tmp_path / "r",
            "--json"]
    if entry.feature:
        args += ["--feature", entry.feature, "--tasks", "seg,depth"]
    rc, out, err = run_cli(*args)
    assert rc == 0, err
    summary = json.loads(out)
    torch.manual_seed(0)
    module = entry.build()
    head = [p.numel() for n, p in module.named_parameters() if n.startswith(entry.head)]
    head_convs = [c for h in entry.head for c in _convs(module.get_submodule(h), f"{h}.")]
    assert summary["params"] == sum(p.numel() for p in module.parameters()) - sum(head)
    assert summary["searchable"] == len(_convs(module)) - len(head_convs)


@pytest.mark.parametrize("entry", zoo.ZOO, ids=IDS)
def test_the_written_prototxt_recompiles_to_the_same_counts(tmp_path, entry):
    graph = automtl.compile(entry.build(), input_shape=entry.shape).graph
    path = tmp_path / "net.prototxt"
    (name,) = graph.inputs
    path.write_text(render("net", name, graph.inputs[name], graph_layers(graph)))
    read = {v for n in graph.nodes for v in n.inputs}
    dangling = [v for n in graph.nodes for v in n.outputs if v not in read and v != graph.output]
    # `x[:, :k]` leaves a Slice top no layer reads, which a prototxt reader takes for another
    # network output (as Caffe does): name the feature, as `--feature-blob` would
    options = CompileOptions(feature_blob=graph.output) if dangling else None
    assert bool(dangling) == (entry.name == "GhostNetTrunk")
    again = build_graph(path, options).graph
    assert (again.params, len(again.searchable), again.shape_of(again.output)) == (
        graph.params, len(graph.searchable), graph.shape_of(graph.output))


def _line(text: str) -> int:
    lines = open(ZOO_FILE).read().splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


def test_tf_same_padding_is_refused_with_its_line(run_cli, tmp_path):
    with pytest.raises(SourceError) as e:
        automtl.compile(zoo.TFSameStem(), input_shape=(1, 3, 16, 16))
    line = _line("pad_h = max(")
    assert str(e.value) == (
        f'{ZOO_FILE}:{line}: layer "conv_stem" (trace): torch.fx cannot trace this: '
        "symbolically traced variables cannot be used as inputs to control flow")
    rc, _, err = run_cli("compile", f"{ZOO_FILE}:TFSameStem", "--input-shape", "1,3,16,16",
                         "-o", tmp_path / "r")
    assert rc == 65
    assert err.strip().splitlines() == [f"error: {e.value}"]


@pytest.mark.parametrize("name", ["UNetStyleUp", "DeepLabV3", "TorchvisionFCNHead"])
def test_a_resize_to_another_tensors_size_follows_it(name):
    """`F.interpolate(x, size=skip.shape[-2:])` is an Interp with `skip` as its size
    reference, so a graph compiled at one input size re-infers what a trace at another gives
    (a module object compiled by the API is re-inferred, not re-traced, at the data's size)."""
    from automtl_cli.frontend.reinfer import reinfer_shapes

    module = getattr(zoo, name)()
    small = automtl.compile(module, input_shape=(1, 3, 32, 32)).graph
    big = automtl.compile(module, input_shape=(2, 3, 64, 48)).graph
    assert any(n.type == "Interp" and len(n.inputs) == 2 for n in small.nodes)
    again = reinfer_shapes(small, (2, 3, 64, 48))
    assert [n.shapes for n in again.nodes] == [n.shapes for n in big.nodes]

"""`automtl export`: one graph per model, BatchNorm folded, equal to PyTorch, no unused branch."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from automtl_cli.artifacts import DerivedModel, load, read_payload
from automtl_cli.compiler.derived import CHOICES, build_tree
from automtl_cli.deploy import fold_batchnorm, trace_network
from automtl_cli.deploy.fold import fold_skip_branches
from automtl_cli.stages.evaluate import load_model

from conftest import ROOT, TINY_EXPERIMENT

TASKS = ("seg", "depth", "normal")
HEAD_CONVS = 2  # a LIGHT head: 3×3 conv (+ BN, folded) → ReLU → 1×1 conv


@pytest.fixture
def cli(run_cli):
    """run_cli with `export` registered (main.py registers it once the command is merged)."""
    from automtl_cli.cli.export_cmd import export
    from automtl_cli.cli.main import cli as group

    group.add_command(export)
    return run_cli


def _compile(cli, tmp_path: Path, bn: str, skip: str = "reference") -> Path:
    (tmp_path / "tiny.prototxt").write_text(TINY_EXPERIMENT)
    run = tmp_path / f"run-{bn}-{skip}"
    rc, _, err = cli("-q", "compile", ROOT / "specs" / "resnet18_w8.prototxt", "-o", run,
                     "--tasks", ",".join(TASKS), "--bn", bn, "--skip", skip)
    assert rc == 0, err
    return run


def _derive(cli, run: Path, plan: str) -> None:
    if plan == "mixed":
        plan = str(_mixed_plan(cli, run))
    rc, _, err = cli("-q", "derive", run, "--plan", plan, "--experiment",
                     run.parent / "tiny.prototxt")
    assert rc == 0, err
    _give_batchnorm_statistics(run / "derived" / "model.pt")


def _give_batchnorm_statistics(path: Path) -> None:
    """Make every BatchNorm of a derived model non-trivial, as training would.

    A freshly derived model's BatchNorms are identities (μ 0, σ² 1, γ 1, β 0), under which a
    wrong folding formula would still pass.
    """
    data = read_payload(path)
    state = data["state_dict"]
    g = torch.Generator().manual_seed(3)
    for key in [k for k in state if k.endswith("running_mean")]:
        prefix = key[: -len("running_mean")]
        n = state[key].numel()
        state[key] = 0.2 * torch.randn(n, generator=g)
        state[prefix + "running_var"] = 0.5 + torch.rand(n, generator=g)
        if prefix + "weight" in state:
            state[prefix + "weight"] = 0.7 + 0.6 * torch.rand(n, generator=g)
        if prefix + "bias" in state:
            state[prefix + "bias"] = 0.1 * torch.randn(n, generator=g)
    torch.save(data, path)


def _mixed_plan(cli, run: Path) -> Path:
    """A shared stem, then every choice (shared, specific, skip) for every task in turn."""
    _derive(cli, run, "shared")
    nodes = list(json.loads((run / "derived" / "plan.json").read_text())["choices"])
    choices = {node: {t: CHOICES[0 if i < 3 else (i + j) % 3] for j, t in enumerate(TASKS)}
               for i, node in enumerate(nodes)}
    path = run.parent / "mixed.json"
    path.write_text(json.dumps({"choices": choices}))
    return path


def _export(cli, run: Path, *args) -> dict:
    rc, out, err = cli("-q", "export", run, *args, "--runs", "2", "--json")
    assert rc == 0, err
    return json.loads(out)


def _expected_convolutions(run: Path) -> int:
    """Distinct convolution values of the tree rebuilt from plan.json, plus the heads' convs."""
    plan = json.loads((run / "derived" / "plan.json").read_text())
    derived = load(run / "derived" / "model.pt", DerivedModel)
    choices = {node: [CHOICES.index(row[t]) for t in plan["tasks"]]
               for node, row in plan["choices"].items()}
    tree = build_tree(derived.graph, derived.space, choices)
    kinds = {n.name: n.type for n in derived.graph.nodes}
    backbone = sum(1 for v in tree.values if v.op.variant == "skip" or
                   (v.op.variant != "skip-free" and kinds[v.op.node] == "Convolution"))
    return backbone + HEAD_CONVS * len(plan["tasks"])


def _reference(run: Path, batch: int, seed: int = 7) -> tuple[torch.Tensor, dict]:
    _, network = load_model(run / "derived" / "model.pt")
    x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return x, {t: y.numpy() for t, y in network.eval()(x).items()}


@pytest.mark.parametrize(("bn", "skip", "plan", "convs"), [
    ("task", "reference", "shared", 1 + 3 * 19 + 3 * HEAD_CONVS),  # paths part at the 1st BN
    ("follow", "reference", "shared", 20 + 3 * HEAD_CONVS),  # the whole backbone runs once
    ("task", "reference", "mixed", None),
    ("follow", "reference", "mixed", None),
    ("follow", "cheap", "mixed", None),  # parameter-free skips: pads, crops, channel slices
])
def test_onnx_equals_pytorch_and_holds_no_unused_branch(cli, tmp_path, scene_cache, bn, skip,
                                                        plan, convs):
    ort = pytest.importorskip("onnxruntime", reason="the export extra (onnxruntime) is needed")
    onnx = pytest.importorskip("onnx", reason="the export extra (onnx) is needed")
    run = _compile(cli, tmp_path, bn, skip)
    _derive(cli, run, plan)
    result = _export(cli, run, "--format", "onnx")
    path = run / "export" / "model.onnx"
    assert result["output"] == str(path) and result["source"]["kind"] == "derived"
    assert result["verification"]["max_abs_diff"] <= 1e-4

    model = onnx.load(path)
    ops = [n.op_type for n in model.graph.node]
    expected = _expected_convolutions(run)
    assert convs is None or expected == convs
    assert ops.count("Conv") == expected == result["convolutions"]
    assert ops.count("BatchNormalization") == result["folded"]["batchnorm_left"]
    if bn == "follow" and plan == "shared":
        assert result["folded"]["batchnorm_left"] == 0
    if plan == "mixed":
        assert (result["folded"]["skip_branches"] > 0) == (skip == "reference")
    assert [i.name for i in model.graph.input] == ["image"]
    assert [o.name for o in model.graph.output] == list(TASKS)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 8):  # dynamic batch
        x, ref = _reference(run, batch)
        outs = session.run(list(TASKS), {"image": x.numpy()})
        for task, got in zip(TASKS, outs):
            assert got.shape == ref[task].shape
            np.testing.assert_allclose(got, ref[task], rtol=0, atol=1e-4)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("bn", ["task", "follow"])
def test_torchscript_equals_pytorch_at_any_batch(cli, tmp_path, scene_cache, bn):
    run = _compile(cli, tmp_path, bn)
    _derive(cli, run, "mixed")
    out = tmp_path / "deploy" / "net.ts"
    result = _export(cli, run, "--format", "torchscript", "-o", out)
    assert result["output"] == str(out) and result["verification"]["max_abs_diff"] <= 1e-4
    assert result["convolutions"] == _expected_convolutions(run)
    extra = {"automtl.json": ""}
    loaded = torch.jit.load(str(out), _extra_files=extra)
    assert json.loads(extra["automtl.json"])["tasks"] == ",".join(TASKS)
    x, ref = _reference(run, 3)  # traced at batch 8
    with torch.no_grad():
        outs = loaded(x)
    assert isinstance(outs, tuple) and len(outs) == len(TASKS)
    for task, got in zip(TASKS, outs):
        np.testing.assert_allclose(got.numpy(), ref[task], rtol=0, atol=1e-4)


def test_final_model_is_preferred_and_export_is_deterministic(cli, tiny_run):
    pytest.importorskip("onnxruntime", reason="the export extra (onnxruntime) is needed")
    _derive(cli, tiny_run, "shared")
    rc, _, err = cli("-q", "finetune", tiny_run, "--iters", "3")
    assert rc == 0, err
    rc, out, err = cli("export", tiny_run, "--runs", "2")
    assert rc == 0, err
    assert "fine-tuned model" in out and str(tiny_run / "final.pt") in out
    first = (tiny_run / "export" / "model.onnx").read_bytes()
    result = _export(cli, tiny_run)
    assert result["source"] == {"path": str(tiny_run / "final.pt"), "kind": "final"}
    # the report's keys only: no timing is compared, so a busy machine cannot fail this
    assert set(result["latency_ms"]) == {"batch_1", "batch_8"}
    assert (tiny_run / "export" / "model.onnx").read_bytes() == first
    assert not [p for p in (tiny_run / "export").iterdir() if p.name.startswith(".")]


def test_missing_extra_exits_69_with_the_install_hint(cli, tiny_run, monkeypatch):
    _derive(cli, tiny_run, "shared")
    monkeypatch.setitem(sys.modules, "onnx", None)
    rc, out, err = cli("export", tiny_run, "--format", "onnx")
    assert rc == 69 and out == ""
    assert err.count("\n") == 1 and "pip install 'automtl[export]'" in err
    assert not (tiny_run / "export" / "model.onnx").exists()
    rc, _, err = cli("-q", "export", tiny_run, "--format", "torchscript", "--runs", "1")
    assert rc == 0, err  # TorchScript needs no extra


def test_no_derived_model_exits_66_naming_derive(cli, tiny_run):
    rc, _, err = cli("export", tiny_run, "--format", "torchscript")
    assert rc == 66 and err.count("\n") == 1 and "automtl derive" in err


def test_unwritable_output_exits_73(cli, tiny_run):
    _derive(cli, tiny_run, "shared")
    for target in (tiny_run / "compile.json" / "model.ts", tiny_run):
        rc, _, err = cli("export", tiny_run, "--format", "torchscript", "-o", target)
        assert rc == 73, err
        assert err.count("\n") == 1 and err.startswith(f"error: {target}")


def test_fold_batchnorm_folds_only_a_conv_it_alone_reads():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv_a, self.bn_a = nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4)
            self.conv_b, self.bn_b1, self.bn_b2 = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4), \
                nn.BatchNorm2d(4)
            self.conv_c, self.bn_c = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.bn_a(self.conv_a(x))  # folded
            z = self.bn_b1(self.conv_b(y)) + self.bn_b2(self.conv_b(y))  # one conv per BN
            shared = self.conv_c(z)
            return self.bn_c(shared) + shared  # the conv has another reader: kept

    net = Net()
    with torch.no_grad():
        for bn in (net.bn_a, net.bn_b1, net.bn_b2, net.bn_c):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_()
    net.eval()
    gm = torch.fx.symbolic_trace(net)
    assert fold_batchnorm(gm) == 3
    kinds = [type(gm.get_submodule(n.target)).__name__ for n in gm.graph.nodes
             if n.op == "call_module"]
    assert kinds.count("BatchNorm2d") == 1 and kinds.count("Conv2d") == 4
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(gm(x), net(x), rtol=1e-5, atol=1e-5)


def test_folding_keeps_a_derived_network_equal(tiny_run, cli):
    """The fx passes alone, under --bn task, where shared convolutions feed per-task BNs."""
    _derive(cli, tiny_run, "mixed")
    _, network = load_model(tiny_run / "derived" / "model.pt")
    network.eval()
    gm = trace_network(network)
    calls = sum(1 for n in gm.graph.nodes if n.op == "call_module")
    folded_skips = fold_skip_branches(gm)
    folded_bn = fold_batchnorm(gm)
    assert folded_bn > 0 and folded_skips > 0
    assert sum(1 for n in gm.graph.nodes if n.op == "call_module") == calls - folded_bn
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = network(x)
        for task, got in zip(network.task_names, gm(x)):
            torch.testing.assert_close(got, ref[task], rtol=1e-5, atol=1e-5)


def test_export_has_help(cli):
    rc, out, _ = cli("export", "--help")
    assert rc == 0 and "--format" in out and "73" in out


def test_an_export_that_disagrees_is_not_written(cli, tiny_run, monkeypatch):
    from automtl_cli.deploy import export as module

    _derive(cli, tiny_run, "shared")
    real = module.compare
    calls = []

    def compare(reference, candidate, batches, tasks):
        calls.append(1)
        diff = real(reference, candidate, batches, tasks)
        return diff if len(calls) == 1 else {t: 1.0 for t in diff}  # the runtime check fails

    monkeypatch.setattr(module, "compare", compare)
    rc, _, err = cli("export", tiny_run, "--format", "torchscript")
    assert rc == 70 and "not written" in err and err.count("\n") == 1
    assert list((tiny_run / "export").iterdir()) == []  # the temporary file is gone too


def test_from_exports_the_given_model(cli, tiny_run, tmp_path):
    _derive(cli, tiny_run, "specific")
    given = tmp_path / "elsewhere.pt"
    given.write_bytes((tiny_run / "derived" / "model.pt").read_bytes())
    (tiny_run / "derived" / "model.pt").unlink()
    result = _export(cli, tiny_run, "--format", "torchscript", "--from", given)
    assert result["source"] == {"path": str(given), "kind": "given"}
    assert result["convolutions"] == 3 * 20 + 3 * HEAD_CONVS

"""Pretrained initialisation end to end, and the Python API.

A backbone's weights (a PyTorch module's own, or `--weights FILE`) are stored in the supermodel
artifact; every branch of the supermodel starts from them, so the search's step-0 features are
the source network's; `finetune --init pretrained` starts the derived network from them; `run
--weights` starts the baselines from them too.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch
from test_torch_source import HERE, SHAPE, TRUNKS, TinyResNet
from torch import nn

import automtl_cli as automtl
from automtl_cli.artifacts import DerivedModel, SupermodelArtifact, load
from automtl_cli.compiler.space import SearchSpace
from automtl_cli.compiler.supermodel import build_supermodel
from automtl_cli.engine.derive import network_of
from automtl_cli.errors import BadInput
from automtl_cli.frontend.build import CompileOptions
from automtl_cli.frontend.reinfer import reinfer_shapes
from automtl_cli.frontend.sources import SourceKind, build_source

TASKS = ("seg", "depth", "normal")


def _pretrained(cls=TinyResNet, seed: int = 5) -> nn.Module:
    """A module with weights no seed of ours makes, and non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    module = cls()
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_()
    return module.eval()


def _layer1(module: TinyResNet, x: torch.Tensor) -> torch.Tensor:
    return module.layer1(module.stem(x))


def _all_shared(sm, x: torch.Tensor) -> torch.Tensor:
    policy = torch.zeros(len(sm.search_nodes), len(sm.tasks), dtype=torch.long)
    with torch.no_grad():
        return sm.eval()(x, "hard", policy=policy)


@pytest.mark.parametrize("cls", TRUNKS, ids=lambda c: c.__name__)
def test_the_api_supermodel_computes_the_module_for_every_task(cls):
    module = _pretrained(cls)
    feature = "layer1" if cls is TinyResNet else None
    result = automtl.compile(module, tasks=("seg", "depth"), input_shape=SHAPE, feature=feature)
    assert result.files == {}  # out=None writes nothing
    x = torch.randn(SHAPE)
    with torch.no_grad():
        want = _layer1(module, x) if feature else module(x)
    got = _all_shared(result.supermodel, x)
    assert got.shape == (SHAPE[0], 2, *want.shape[1:])
    for t in range(2):  # the shared op AND every task copy start from the module's weights
        torch.testing.assert_close(got[:, t], want, rtol=1e-5, atol=1e-5)
    specific = torch.ones(len(result.supermodel.search_nodes), 2, dtype=torch.long)
    with torch.no_grad():
        got = result.supermodel(x, "hard", policy=specific)
    torch.testing.assert_close(got[:, 1], want, rtol=1e-5, atol=1e-5)


def test_the_api_writes_a_run_the_cli_continues(tmp_path, run_cli, scene_cache):
    module = _pretrained()
    run = tmp_path / "run"
    result = automtl.compile(module, tasks=("seg", "depth"), input_shape=(1, 3, 32, 32),
                             feature="layer1", out=run)
    assert set(result.files) == {"supermodel", "compile_json"}
    stored = load(run / "supermodel.pt", SupermodelArtifact)
    assert stored.source["kind"] == SourceKind.GRAPH.value and stored.weights
    rc, _, err = run_cli("-q", "search", run, "--iters", "2", "--warmup-iters", "1")
    assert rc == 0, err
    rc, _, err = run_cli("-q", "derive", run, "--mode", "argmax")
    assert rc == 0, err
    rc, _, err = run_cli("-q", "finetune", run, "--iters", "2", "--init", "pretrained")
    assert rc == 0, err


def test_the_api_takes_a_source_string():
    result = automtl.compile(f"{HERE}:TinyResNet", tasks=("seg",), input_shape=(1, 3, 16, 16),
                             feature="layer1")
    assert result.summary()["searchable"] == 8 and result.supermodel is not None


def test_a_stored_graph_reinfers_what_a_new_trace_gives():
    module = _pretrained()
    small = automtl.compile(module, input_shape=(1, 3, 16, 16)).graph
    traced = automtl.compile(module, input_shape=(4, 3, 48, 40)).graph
    again = reinfer_shapes(small, (4, 3, 48, 40))
    assert [n.shapes for n in again.nodes] == [n.shapes for n in traced.nodes]
    assert again.params == traced.params


def _state_file(tmp_path, module: nn.Module, name: str = "w.pt", wrap: str | None = None):
    path = tmp_path / name
    state = module.state_dict()
    torch.save({wrap: state} if wrap else state, path)
    return path


@pytest.mark.parametrize("wrap", [None, "state_dict"])
def test_compile_weights_start_the_search_from_the_source_network(tmp_path, run_cli,
                                                                  scene_cache, monkeypatch,
                                                                  wrap):
    module = _pretrained()
    weights = _state_file(tmp_path, module, wrap=wrap)
    run = tmp_path / "run"
    rc, out, err = run_cli("compile", f"{HERE}:TinyResNet", "--input-shape", "1,3,32,32",
                           "--feature", "layer1", "--weights", weights, "--tasks",
                           ",".join(TASKS), "-o", run, "--json")
    assert rc == 0, err
    assert json.loads(out)["weights"] == str(weights)
    x = torch.randn(2, 3, 32, 32)
    got = _all_shared(_search_start(run, tmp_path, monkeypatch), x)
    with torch.no_grad():
        want = _layer1(module, x)
    for t in range(len(TASKS)):
        torch.testing.assert_close(got[:, t], want, rtol=1e-5, atol=1e-5)


def _tiny_experiment() -> str:
    from conftest import TINY_EXPERIMENT

    return TINY_EXPERIMENT


def test_finetune_init_pretrained_starts_from_the_weights(tmp_path, run_cli, scene_cache):
    module = _pretrained()
    run = tmp_path / "run"
    rc, _, err = run_cli("-q", "compile", f"{HERE}:TinyResNet", "--input-shape", "1,3,32,32",
                         "--feature", "layer1", "--weights", _state_file(tmp_path, module),
                         "--tasks", ",".join(TASKS), "-o", run)
    assert rc == 0, err
    (tmp_path / "tiny.prototxt").write_text(_tiny_experiment())
    rc, _, err = run_cli("-q", "derive", run, "--plan", "specific", "--experiment",
                         tmp_path / "tiny.prototxt")
    assert rc == 0, err
    derived = load(run / "derived" / "model.pt", DerivedModel)
    assert derived.pretrained and derived.init["from"] == "pretrained"
    scratch = network_of(derived).eval()
    pretrained = network_of(derived, pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = _layer1(module, x)
        feats = pretrained.backbone(x)
        other = scratch.backbone(x)
    assert len(feats) == len(TASKS)  # one feature map per task, in the space's task order
    for got, fresh in zip(feats, other):  # each task's own trunk is the pretrained network
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(fresh, want, atol=1e-3)
    rc, _, err = run_cli("-q", "finetune", run, "--iters", "2", "--init", "pretrained")
    assert rc == 0, err


def test_init_pretrained_without_weights_is_refused(tiny_run, run_cli):
    rc, _, err = run_cli("-q", "derive", tiny_run, "--plan", "shared", "--experiment",
                         tiny_run.parent / "tiny.prototxt")
    assert rc == 0, err
    rc, _, err = run_cli("-q", "finetune", tiny_run, "--iters", "1", "--init", "pretrained")
    assert rc == 65
    assert "no pretrained weights" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_weights_that_do_not_fit_are_refused_in_one_line(tmp_path, run_cli):
    wrong = nn.Sequential(nn.Conv2d(3, 4, 3))
    path = _state_file(tmp_path, wrong)
    rc, _, err = run_cli("compile", f"{HERE}:TinyResNet", "--input-shape", "1,3,16,16",
                         "--weights", path, "-o", tmp_path / "r")
    assert rc == 65
    line = err.strip().splitlines()[-1]
    assert str(path) in line and "missing" in line and "unexpected 0.weight" in line
    module = TinyResNet()
    state = module.state_dict()
    state["fc.weight"] = torch.zeros(3, 16)
    torch.save(state, tmp_path / "shape.pt")
    rc, _, err = run_cli("compile", f"{HERE}:TinyResNet", "--input-shape", "1,3,16,16",
                         "--weights", tmp_path / "shape.pt", "-o", tmp_path / "r")
    assert rc == 65 and "fc.weight [3, 16] in the file, [5, 16] in the module" in err
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    rc, _, err = run_cli("compile", f"{HERE}:TinyResNet", "--input-shape", "1,3,16,16",
                         "--weights", tmp_path / "junk.pt", "-o", tmp_path / "r")
    assert rc == 65 and "not readable as PyTorch state dicts" in err
    rc, _, err = run_cli("compile", f"{HERE}:TinyResNet", "--input-shape", "1,3,16,16",
                         "--weights", tmp_path / "absent.pt", "-o", tmp_path / "r")
    assert rc == 66


def test_a_pickled_object_is_refused_not_run(tmp_path, run_cli):
    class Payload:
        def __reduce__(self):
            return (print, ("this must not run",))

    torch.save({"weight": Payload()}, tmp_path / "evil.pt")
    rc, out, err = run_cli("compile", f"{HERE}:TinyResNet", "--input-shape", "1,3,16,16",
                           "--weights", tmp_path / "evil.pt", "-o", tmp_path / "r")
    assert rc == 65 and "refused" in err and "weights_only" not in err
    assert "this must not run" not in out


def test_a_module_compiles_the_same_bits_twice(tmp_path):
    """A module's own random init is carried: the same bits each time it is compiled."""
    options = CompileOptions(input_shapes={None: (1, 3, 16, 16)})
    first, _ = build_source(f"{HERE}:TinyResNet", options)
    second, _ = build_source(f"{HERE}:TinyResNet", options)
    assert first.weights.keys() == second.weights.keys()
    for node, state in first.weights.items():
        for key, tensor in state.items():
            assert torch.equal(tensor, second.weights[node][key]), (node, key)


def test_a_prototxt_without_weights_starts_from_the_seed(tiny_run):
    stored = load(tiny_run / "supermodel.pt", SupermodelArtifact)
    assert stored.weights is None
    a = build_supermodel(stored.graph, SearchSpace(TASKS), seed=3)
    b = build_supermodel(stored.graph, SearchSpace(TASKS), seed=3, weights=None)
    for (k, v), (_, w) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(v, w), k


def test_weights_for_the_wrong_layer_are_refused():
    module = _pretrained()
    result = automtl.compile(module, tasks=("seg",), input_shape=(1, 3, 16, 16),
                             feature="layer1")
    weights = dict(result.result.front.weights)
    weights["stem.0"] = {"weight": torch.zeros(1, 1, 1, 1)}
    with pytest.raises(ValueError, match=r"stem\.0"):
        build_supermodel(result.graph, SearchSpace(("seg",)), weights=weights)


def test_run_weights_start_every_baseline_from_them(tmp_path, run_cli, scene_cache):
    (tmp_path / "tiny.prototxt").write_text(_tiny_experiment())
    weights = _state_file(tmp_path, _pretrained())
    rc, out, err = run_cli("-q", "run", f"{HERE}:tiny_resnet", "--feature", "layer1",
                           "--weights", weights, "-o", tmp_path / "r", "--experiment",
                           tmp_path / "tiny.prototxt", "--warmup-iters", "1",
                           "--search-iters", "2", "--finetune-iters", "2", "--json")
    assert rc == 0, err
    methods = json.loads(out)["methods"]
    for name in ("single-task", "hard sharing"):
        assert methods[name]["budget"]["init"] == "pretrained", name
    stored = load(tmp_path / "r" / "baselines" / "specific" / "derived" / "model.pt",
                  DerivedModel)
    assert stored.pretrained


def test_bad_api_input_raises_bad_input():
    with pytest.raises(BadInput, match="--input-shape"):
        automtl.compile(_pretrained())


def test_a_supermodel_of_the_previous_format_still_loads(tiny_run, tmp_path):
    """Format 2 (before pretrained weights) is read as a run without weights."""
    from automtl_cli.artifacts import save_payload

    stored = load(tiny_run / "supermodel.pt", SupermodelArtifact)
    payload = stored.to_payload()
    del payload["weights"]
    save_payload(tmp_path / "old.pt", stored.KIND, 2, payload)
    old = load(tmp_path / "old.pt", SupermodelArtifact)
    assert old.weights is None and old.graph.params == stored.graph.params


def _search_start(run, tmp_path, monkeypatch):
    """The network the search's first step sees, for RUN and the tiny experiment."""
    from automtl_cli.engine.search import SearchConfig, Searcher
    from automtl_cli.experiment import build_stage_experiment
    from automtl_cli.stages.search import search

    (tmp_path / "tiny.prototxt").write_text(_tiny_experiment())
    experiment = build_stage_experiment(str(tmp_path / "tiny.prototxt"), None, None)
    seen = {}

    def capture(self):
        seen["net"] = self.net
        return {}

    monkeypatch.setattr(Searcher, "run", capture)
    search(run, SearchConfig.defaults_for(experiment.data.source, iters=2, warmup_iters=1),
           experiment, show_progress=False)
    return seen["net"].backbone


def test_a_caffemodel_starts_the_search_from_the_caffe_network(tmp_path, run_cli, scene_cache,
                                                               monkeypatch):
    import numpy as np
    from test_caffemodel import PROTOTXT, _weights, write_caffemodel

    from automtl_cli.compiler.backbone import backbone_state, build_backbone

    proto = tmp_path / "tiny_net.prototxt"
    proto.write_text(PROTOTXT)
    caffemodel = write_caffemodel(tmp_path / "net.caffemodel",
                                  _weights(np.random.default_rng(3)))
    run = tmp_path / "run"
    rc, _, err = run_cli("-q", "compile", proto, "--weights", caffemodel, "--feature-blob",
                         "pool", "--tasks", ",".join(TASKS), "-o", run)
    assert rc == 0, err
    stored = load(run / "supermodel.pt", SupermodelArtifact)
    supermodel = _search_start(run, tmp_path, monkeypatch)
    x = torch.randn(2, 3, 32, 32)
    graph = supermodel.graph  # at the data's size
    plain = build_backbone(graph).eval()  # the Caffe network, as test_caffemodel checks it
    plain.load_state_dict(backbone_state(graph, stored.weights), strict=False)
    got = _all_shared(supermodel, x)
    with torch.no_grad():
        want = plain(x)
    for t in range(len(TASKS)):
        torch.testing.assert_close(got[:, t], want, rtol=1e-5, atol=1e-5)


def test_safetensors_weights(tmp_path, run_cli):
    st = pytest.importorskip("safetensors.torch", reason="the `weights` extra is not installed")
    module = _pretrained()
    path = tmp_path / "w.safetensors"
    st.save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    result = automtl.compile(f"{HERE}:TinyResNet", tasks=("seg",), input_shape=(1, 3, 16, 16),
                             feature="layer1", weights=path)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        want = _layer1(module, x)
    torch.testing.assert_close(_all_shared(result.supermodel, x)[:, 0], want, rtol=1e-5,
                               atol=1e-5)
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    rc, _, err = run_cli("compile", f"{HERE}:TinyResNet", "--input-shape", "1,3,16,16",
                         "--weights", path, "-o", tmp_path / "r")
    assert rc == 65 and "not a safetensors file" in err and "Traceback" not in err


def test_safetensors_without_the_extra_is_exit_69(tmp_path, run_cli, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_safetensors(name, *args, **kwargs):
        if name.startswith("safetensors"):
            raise ImportError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_safetensors)
    for key in [k for k in sys.modules if k.startswith("safetensors")]:
        monkeypatch.delitem(sys.modules, key)
    (tmp_path / "w.safetensors").write_bytes(b"")
    rc, _, err = run_cli("compile", f"{HERE}:TinyResNet", "--input-shape", "1,3,16,16",
                         "--weights", tmp_path / "w.safetensors", "-o", tmp_path / "r")
    assert rc == 69 and "pip install 'automtl[weights]'" in err

"""`automtl compile` and `automtl inspect` through the CLI, in-process and once as a process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from automtl_cli.artifacts import read_payload
from automtl_cli.errors import BadInput
from automtl_cli.stages.compile import load_supermodel

SMALL = """name: "small"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 2 dim: 3 dim: 15 dim: 15 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 bias_term: false } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "sc1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "add" type: "Eltwise" bottom: "conv2" bottom: "pool1" top: "add" }
layer { name: "fc" type: "InnerProduct" bottom: "add" top: "fc"
        inner_product_param { num_output: 5 } }
"""


@pytest.fixture
def small(tmp_path):
    path = tmp_path / "small.prototxt"
    path.write_text(SMALL)
    return path


def test_compile_json_and_artifacts(small, tmp_path, run_cli):
    rc, out, err = run_cli("compile", small, "-o", tmp_path / "run", "--json")
    assert rc == 0, err
    data = json.loads(out)
    for key in ("params", "output_shape", "layers", "searchable", "compile_ms", "dialect",
                "blobs"):
        assert key in data
    # conv1 216 + BN/Scale γβ 16 + conv2 584 + fc 8*8*8*5+5 (CEIL pooling: 15 -> 8)
    assert data["params"] == 216 + 16 + 584 + 2565
    assert data["output_shape"] == [2, 5]
    assert data["blobs"]["pool1"] == [2, 8, 8, 8]
    assert data["blobs"]["conv1"] == [2, 8, 15, 15]
    assert data["layers"] == 9 and data["searchable"] == 2 and data["dialect"] == "caffe"
    stored = read_payload(tmp_path / "run" / "supermodel.pt")
    assert stored["kind"] == "supermodel" and stored["format_version"] == 3
    assert not any(isinstance(v, torch.Tensor) for v in stored.values())  # no weights yet
    saved = load_supermodel(tmp_path / "run" / "supermodel.pt")
    assert saved.source["text"] == SMALL
    assert saved.graph.params == data["params"]
    report = json.loads((tmp_path / "run" / "compile.json").read_text())
    assert report["params"] == data["params"] and len(report["layer_table"]) == 8


def test_compile_defaults_to_current_directory(small, tmp_path, run_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_cli("compile", small)
    assert rc == 0, err
    assert (tmp_path / "supermodel.pt").exists() and (tmp_path / "compile.json").exists()
    assert "8 layers" not in out and "9 layers, 3,381 parameters" in out


def test_feature_blob_and_input_shape(small, tmp_path, run_cli):
    rc, out, _ = run_cli("-q", "compile", small, "-o", tmp_path, "--json",
                         "--feature-blob", "conv1", "--input-shape", "1,3,32,32")
    data = json.loads(out)
    assert data["output_shape"] == [1, 8, 32, 32]
    assert data["feature_blob"] == "conv1"
    assert data["params"] == 216 + 16  # the cut keeps relu1, the last layer writing conv1
    assert data["layers"] == 5


def test_a_byte_order_mark_is_not_an_error(small, tmp_path, run_cli):
    bom = tmp_path / "bom.prototxt"
    bom.write_bytes(b"\xef\xbb\xbf" + small.read_bytes())
    rc, out, err = run_cli("-q", "compile", bom, "-o", tmp_path / "bom", "--json")
    assert rc == 0, err
    rc, plain, err = run_cli("-q", "compile", small, "-o", tmp_path / "plain", "--json")
    ours, theirs = json.loads(out), json.loads(plain)
    assert (ours["params"], ours["blobs"]) == (theirs["params"], theirs["blobs"])


def test_dialect_changes_pool_rounding(small, tmp_path, run_cli):
    rc, out, _ = run_cli("-q", "compile", small, "-o", tmp_path, "--json", "--dialect", "automtl")
    data = json.loads(out)
    assert data["blobs"]["pool1"] == [2, 8, 7, 7]  # FLOOR in the AutoMTL dialect
    # in the dialect a BatchNorm carries its own γ/β, and Scale then adds its own
    assert data["params"] == 216 + 16 + 16 + 584 + 8 * 7 * 7 * 5 + 5


def test_vendor_ceil_mode_false_means_floor(tmp_path, run_cli):
    text = SMALL.replace("kernel_size: 2 stride: 2", "kernel_size: 2 stride: 2 ceil_mode: false")
    path = tmp_path / "v.prototxt"
    path.write_text(text)
    rc, out, _ = run_cli("-q", "compile", path, "-o", tmp_path, "--json")
    assert json.loads(out)["blobs"]["pool1"] == [2, 8, 7, 7]


def test_v1_layers_and_input_shape_header(tmp_path, run_cli):
    text = """name: "v1net"
input: "data"
input_shape { dim: 1 dim: 1 dim: 28 dim: 28 }
layers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"
  blobs_lr: 1 blobs_lr: 2
  convolution_param { num_output: 20 kernel_size: 5 stride: 1 } }
layers { name: "pool1" type: POOLING bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layers { name: "ip1" type: INNER_PRODUCT bottom: "pool1" top: "ip1"
  inner_product_param { num_output: 10 } }
layers { name: "relu" type: RELU bottom: "ip1" top: "ip1" }
layers { name: "loss" type: SOFTMAX_LOSS bottom: "ip1" bottom: "label" top: "loss" }
"""
    path = tmp_path / "v1.prototxt"
    path.write_text(text)
    rc, out, err = run_cli("compile", path, "-o", tmp_path, "--json")
    assert rc == 0, err
    data = json.loads(out)
    assert data["params"] == 520 + 20 * 12 * 12 * 10 + 10
    assert data["output_shape"] == [1, 10]
    assert any("upgraded 5 legacy V1 layers" in n for n in data["notes"])


def test_inspect_prototxt_and_artifact(small, tmp_path, run_cli):
    rc, out, _ = run_cli("inspect", small)
    assert rc == 0
    assert "bn1+sc1" in out and "BatchNorm" in out and "2x8x15x15" in out
    assert out.strip().endswith("total learnable parameters: 3,381")
    assert not list(tmp_path.glob("*.pt"))  # inspect writes nothing
    run_cli("-q", "compile", small, "-o", tmp_path / "run")
    rc, out, _ = run_cli("inspect", tmp_path / "run" / "supermodel.pt")
    assert rc == 0 and "supermodel (format 3)" in out and "conv2" in out


def test_stage_refuses_an_artifact_of_another_kind(tmp_path):
    from automtl_cli.artifacts import ArtifactKind, save_payload

    save_payload(tmp_path / "x.pt", ArtifactKind.SEARCH_CHECKPOINT, 1, {"step": 3})
    with pytest.raises(BadInput, match="is a 'search-checkpoint' artifact, expected 'supermodel'"):
        load_supermodel(tmp_path / "x.pt")
    (tmp_path / "y.pt").write_bytes(b"garbage")
    with pytest.raises(BadInput, match="not readable as automtl artifacts"):
        load_supermodel(tmp_path / "y.pt")


def test_console_script_runs_as_a_process(small, tmp_path):
    """One real process: the installed entry point, its exit codes and its stderr."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    ok = subprocess.run([sys.executable, "-m", "automtl_cli", "compile", str(small), "-o",
                         str(tmp_path), "--json"], capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["params"] == 3381
    bad = subprocess.run([sys.executable, "-m", "automtl_cli", "compile",
                          str(tmp_path / "none.prototxt")], capture_output=True, text=True,
                         env=env)
    assert bad.returncode == 66 and bad.stderr.startswith("error: ")


_CHECKED = '''name: "n"
input: "data"
input_dim: 1
input_dim: {c}
input_dim: 28
input_dim: 28
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param {{ num_output: 4 kernel_size: 3 pad: {pad} }} }}
{extra}
'''


@pytest.mark.parametrize("c, pad, extra, says", [
    (1, 1, "", "input data is [1, 1, 28, 28]; the tasks' data are RGB"),
    (3, 1, 'layer { name: "ip" type: "InnerProduct" bottom: "conv1" top: "ip"\n'
           '  inner_product_param { num_output: 10 } }',
     ':9: layer "ip" (InnerProduct): the feature blob is [1, 10]'),
    (3, 1, 'layer { name: "cat" type: "Concat" bottom: "conv1" bottom: "conv1" top: "cat"\n'
           '  concat_param { axis: 0 } }', ':9: layer "cat" (Concat): '),
    (3, 20000, "", ':7: layer "conv1" (Convolution): output [1, 4, 40026, 40026] holds'),
    (3, 1, 'layer { name: "t" type: "Tile" bottom: "conv1" top: "t"\n'
           '  tile_param { axis: 0 tiles: 2 } }',
     ':9: layer "t" (Tile): Tile along the batch axis cannot be shared between tasks'),
    (3, 1, 'layer { name: "r" type: "Reshape" bottom: "conv1" top: "r"\n'
           '  reshape_param { shape { dim: 1 dim: 2 dim: -1 dim: 28 } } }',
     ':9: layer "r" (Reshape): Reshape that sets the batch axis cannot be shared'),
])
def test_compile_with_tasks_checks_what_search_needs(run_cli, tmp_path, c, pad, extra, says):
    path = tmp_path / "n.prototxt"
    path.write_text(_CHECKED.format(c=c, pad=pad, extra=extra))
    rc, _, err = run_cli("-q", "compile", path, "-o", tmp_path / "run", "--tasks", "seg,depth")
    assert rc == 65 and says in err and err.count("\n") == 1, err
    assert not (tmp_path / "run" / "supermodel.pt").exists()


def test_version_and_help_answer_without_importing_torch():
    import subprocess

    code = ("import sys; from automtl_cli.cli.main import main; rc = main(sys.argv[1:]); "
            "print('torch' in sys.modules, file=sys.stderr); sys.exit(rc)")
    for args in (["--version"], ["--help"]):
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0 and done.stderr.strip() == "False", (args, done.stderr)


def test_every_listed_command_loads_under_its_name():
    import click

    from automtl_cli.cli.main import COMMANDS, cli

    for name in COMMANDS:
        command = cli.get_command(click.Context(cli), name)
        assert command is not None and command.name == name

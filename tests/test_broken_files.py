"""Bad input: every broken file gets one `error:` line naming file, line and layer, and exit 65."""

from __future__ import annotations

import re
import textwrap

import pytest

HEAD = """name: "t"
input: "data"
input_dim: 1
input_dim: 3
input_dim: 16
input_dim: 16
"""


def conv(name, bottom, top, extra="num_output: 4 kernel_size: 3 pad: 1"):
    return f'layer {{\n  name: "{name}"\n  type: "Convolution"\n  bottom: "{bottom}"\n' \
           f'  top: "{top}"\n  convolution_param {{ {extra} }}\n}}\n'


def layer(name, type_, bottoms, top, body=""):
    b = "".join(f'  bottom: "{x}"\n' for x in bottoms)
    return f'layer {{\n  name: "{name}"\n  type: "{type_}"\n{b}  top: "{top}"\n{body}}}\n'


# (id, text, extra args, exit code, line, layer, type, fragment)
CASES = [
    ("unknown-field", HEAD + conv("c1", "data", "c1", "num_output: 4 kernel_size: 3 wibble: 2"),
     [], 65, 12, "c1", "Convolution", 'unknown field "wibble" in ConvolutionParameter'),
    ("unsupported-types", HEAD + conv("c1", "data", "c1") + layer("up", "Normalize", ["c1"], "u",
                                                                  "  propagate_down: false\n")
     + layer("sl", "PSROIPooling", ["u"], "s"), [], 65, 14, "up", "Normalize",
     'unsupported layers: line 14 "up" (Normalize); line 21 "sl" (PSROIPooling)'),
    ("eltwise-shapes", HEAD + conv("a", "data", "a") + conv("b", "data", "b",
                                                            "num_output: 8 kernel_size: 1")
     + layer("sum", "Eltwise", ["a", "b"], "s"), [], 65, 21, "sum", "Eltwise",
     "inputs differ in shape: [1, 4, 16, 16] vs [1, 8, 16, 16]"),
    ("concat-mismatch", HEAD + conv("a", "data", "a") + conv("b", "data", "b",
                                                             "num_output: 8 kernel_size: 3")
     + layer("cat", "Concat", ["a", "b"], "c"), [], 65, 21, "cat", "Concat",
     "inputs must match except on axis 1"),
    ("groups", HEAD + conv("g", "data", "g", "num_output: 4 kernel_size: 3 group: 2"), [], 65, 7,
     "g", "Convolution", "group 2 does not divide the 3 input channels"),
    ("conv-window", HEAD + conv("big", "data", "b", "num_output: 4 kernel_size: 19"), [], 65, 7,
     "big", "Convolution", "window is larger than the padded input"),
    ("pool-window", HEAD + layer("p", "Pooling", ["data"], "p",
                                 "  pooling_param { pool: MAX kernel_size: 17 }\n"), [], 65, 7,
     "p", "Pooling", "window is larger than the padded input"),
    ("missing-bottom", HEAD + conv("c1", "data", "c1") + conv("c2", "c_1", "c2"), [], 65, 17,
     "c2", "Convolution", 'bottom "c_1" is not produced by any earlier layer; did you mean "c1"'),
    ("no-num-output", HEAD + conv("c1", "data", "c1", "kernel_size: 3"), [], 65, 12, "c1",
     "Convolution", "num_output is required"),
    ("zero-stride", HEAD + conv("c1", "data", "c1", "num_output: 2\n kernel_size: 3\n stride: 0"),
     [], 65, 14, "c1", "Convolution", "stride must be at least 1"),
    ("three-kernel-values", HEAD + conv("c1", "data", "c1", "num_output: 2 kernel_size: [1,2,3]"),
     [], 65, 12, "c1", "Convolution", "kernel_size has 3 values for 2 spatial axes"),
    ("duplicate-name", HEAD + conv("c1", "data", "x") + conv("c1", "x", "y"), [], 65, 14, "c1",
     "Convolution", "layer name is also used at line 7"),
    ("stochastic-pool", HEAD + layer("p", "Pooling", ["data"], "p",
                                     "  pooling_param {\n pool: STOCHASTIC kernel_size: 2 }\n"),
     [], 65, 13, "p", "Pooling", "STOCHASTIC pooling is not supported"),
    ("scale-two-bottoms", HEAD + conv("a", "data", "a") + layer("s", "Scale", ["a", "a"], "s"),
     [], 65, 14, "s", "Scale",
     "the second bottom [1, 4, 16, 16] must match the first bottom's axes from 1 on"),
    ("deconv-negative", HEAD + layer("d", "Deconvolution", ["data"], "d",
                                     "  convolution_param { num_output: 2 kernel_size: 2 "
                                     "pad: 9 }\n"), [], 65, 7, "d", "Deconvolution",
     "padding 9 too large"),
    ("coeff-count", HEAD + conv("a", "data", "a") + layer(
        "e", "Eltwise", ["a", "a"], "e", "  eltwise_param {\n operation: SUM coeff: 1 }\n"),
     [], 65, 21, "e", "Eltwise", "1 coeff values for 2 bottoms"),
    ("ip-no-output", HEAD + layer("fc", "InnerProduct", ["data"], "fc",
                                  "  inner_product_param { bias_term: false }\n"), [], 65, 12,
     "fc", "InnerProduct", "num_output is required"),
    ("mixed-dialects", HEAD + conv("a", "data", "a") + layer(
        "bn", "BatchNorm", ["a"], "a", "  batch_norm_param {\n track_running_stats: true }\n")
     + layer("bn2", "BatchNorm", ["a"], "a", "  batch_norm_param {\n use_global_stats: true }\n"),
     [], 65, 20, None, None, "mixes the AutoMTL dialect (batch_norm_param.track_running_stats "
     "at line 20) with Caffe (batch_norm_param.use_global_stats at line 28)"),
]


def _write(tmp_path, text, name="net.prototxt"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _one_error_line(err: str) -> str:
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_broken_file(case, tmp_path, run_cli):
    _, text, args, code, line, layer_name, layer_type, fragment = case
    path = _write(tmp_path, text)
    rc, out, err = run_cli("compile", path, "-o", tmp_path / "run", *args)
    assert rc == code, err
    message = _one_error_line(err)
    prefix = f"error: {path}:{line}: "
    if layer_name is not None:
        prefix += f'layer "{layer_name}" ({layer_type}): '
    assert message.startswith(prefix), message
    assert fragment in message, message
    assert not (tmp_path / "run" / "supermodel.pt").exists()


def test_lenient_warns_once_per_field(tmp_path, run_cli):
    text = HEAD + conv("c1", "data", "c1", "num_output: 4 kernel_size: 3 wibble: 2") \
        + conv("c2", "c1", "c2", "num_output: 4 kernel_size: 3 wibble: 5")
    path = _write(tmp_path, text)
    rc, out, err = run_cli("-q", "compile", path, "-o", tmp_path, "--lenient", "--json")
    assert rc == 0, err
    warnings = [x for x in err.splitlines() if x.startswith("warning:")]
    assert len(warnings) == 1 and 'unknown field "wibble"' in warnings[0]


def test_missing_file_exits_66(tmp_path, run_cli):
    rc, _, err = run_cli("compile", tmp_path / "nope.prototxt", "-o", tmp_path)
    assert rc == 66
    assert _one_error_line(err) == f"error: {tmp_path / 'nope.prototxt'}: no such file"


def test_directory_and_binary_files(tmp_path, run_cli):
    rc, _, err = run_cli("compile", tmp_path, "-o", tmp_path / "r")
    assert rc in (2, 65)  # click refuses a directory for a file argument (usage) or we do (65)
    blob = tmp_path / "model.caffemodel"
    blob.write_bytes(b"\n\x05conv1\xff\xfe\x00binary")
    rc, _, err = run_cli("compile", blob, "-o", tmp_path / "r")
    assert rc == 65
    assert "not UTF-8 text" in _one_error_line(err)


def test_train_val_without_input_shape_suggests_one(corpus, tmp_path, run_cli):
    path = corpus / "caffe" / "alexnet_train_val.prototxt"
    rc, _, err = run_cli("compile", path, "-o", tmp_path)
    assert rc == 65
    line = _one_error_line(err)
    assert re.search(r':\d+: layer "data" \(Data\): input "data" has no shape', line)
    assert "--input-shape 50,3,227,227" in line  # from the TEST phase's batch and crop size
    rc, out, err = run_cli("-q", "compile", path, "-o", tmp_path, "--input-shape", "2,3,227,227",
                           "--json")
    assert rc == 0, err


@pytest.mark.parametrize("args, fragment", [
    (["--feature-blob", "c9"], '--feature-blob "c9": no layer writes this blob'),
    (["--feature-blob", "data"], "no path from the input"),
    (["--input-shape", "image=1,3,8,8"], "--input-shape names image"),
])
def test_bad_options(args, fragment, tmp_path, run_cli):
    path = _write(tmp_path, HEAD + conv("c1", "data", "c1"))
    rc, _, err = run_cli("compile", path, "-o", tmp_path, *args)
    assert rc == 65
    assert fragment in _one_error_line(err)


def test_usage_errors_exit_2(tmp_path, run_cli):
    path = _write(tmp_path, HEAD + conv("c1", "data", "c1"))
    rc, _, err = run_cli("compile", path, "--input-shape", "1,x,2")
    assert rc == 2
    rc, _, err = run_cli("compile", path, "--dialect", "onnx")
    assert rc == 2


def test_input_dim_count(tmp_path, run_cli):
    text = 'input: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 8\n' + conv("c", "data", "c")
    rc, _, err = run_cli("compile", _write(tmp_path, text), "-o", tmp_path)
    assert rc == 65
    assert _one_error_line(err).startswith(f"error: {tmp_path / 'net.prototxt'}:2: 3 input_dim")


def test_syntax_error_names_layer(tmp_path, run_cli):
    text = HEAD + textwrap.dedent("""\
        layer {
          name: "c1"
          type: "Convolution"
          convolution_param { num_output: 4 kernel_size: 3 }
        """)
    rc, _, err = run_cli("compile", _write(tmp_path, text), "-o", tmp_path)
    assert rc == 65
    assert "unexpected end of file" in _one_error_line(err)

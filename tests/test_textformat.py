"""The text-format reader agrees with protobuf's own and keeps lines for every layer and field."""

from __future__ import annotations

import pytest
from google.protobuf import text_format

from automtl_cli.errors import SourceError
from automtl_cli.frontend.textformat import parse_text
from automtl_cli.proto import automtl_pb2 as pb

from conftest import corpus_dir, corpus_files


@pytest.mark.parametrize("name", corpus_files())
def test_same_message_as_protobuf(name):
    path = corpus_dir() / name
    text = path.read_text()
    ours = pb.NetParameter()
    parsed = parse_text(text, ours, file=str(path))
    theirs = text_format.Parse(text, pb.NetParameter())
    assert ours == theirs
    assert not parsed.unknown
    assert len(parsed.layers) == len(ours.layer) + len(ours.layers)


def test_lines_of_layers_and_fields():
    text = """name: "t"   # a comment
input: "data"
input_dim: 1 input_dim: 3
input_dim: 8 input_dim: 8
layer {
  name: "c1"
  type: "Convolution"
  convolution_param {
    num_output: 4
    kernel_size: [3, 3]
  }
}
layers < name: 'v1' type: RELU >
"""
    msg = pb.NetParameter()
    parsed = parse_text(text, msg)
    assert parsed.net_lines["input_dim"] == 3
    first, second = parsed.layers
    assert (first.field, first.index, first.line) == ("layer", 0, 5)
    assert first.line_of("convolution_param.kernel_size") == 10
    assert first.line_of("convolution_param.nothing") == 5
    assert (second.field, second.line) == ("layers", 13)
    assert list(msg.layer[0].convolution_param.kernel_size) == [3, 3]
    assert msg.layers[0].type == pb.V1LayerParameter.RELU


def test_values_of_every_scalar_kind():
    text = r"""layer { name: "a\"b" "c" type: "Pooling"
      pooling_param { pool: AVE kernel_size: 0x3 stride: 2 global_pooling: true }
      loss_weight: 1e-05 loss_weight: -inf loss_weight: 2.5f }"""
    msg = pb.NetParameter()
    parse_text(text, msg)
    layer = msg.layer[0]
    assert layer.name == 'a"bc'
    assert layer.pooling_param.pool == pb.PoolingParameter.AVE
    assert layer.pooling_param.kernel_size == 3
    assert layer.pooling_param.global_pooling is True
    first, second, third = layer.loss_weight
    assert first == pytest.approx(1e-5)
    assert second == float("-inf")
    assert third == 2.5


def test_unknown_fields_are_collected_with_lines():
    text = 'layer {\n  name: "p"\n  type: "Pooling"\n  pooling_param { foo: 1 bar { x: 2 } }\n}\n'
    parsed = parse_text(text, pb.NetParameter())
    assert [(u.name, u.line, u.message_type) for u in parsed.unknown] == [
        ("foo", 4, "automtl.PoolingParameter"), ("bar", 4, "automtl.PoolingParameter")]
    assert parsed.unknown[0].layer is parsed.layers[0]


def test_a_byte_order_mark_is_skipped_only_at_the_start():
    text = '\ufeffname: "t"\nlayer { name: "a" }\n'
    msg = pb.NetParameter()
    parsed = parse_text(text, msg)
    assert msg.name == "t" and parsed.layers[0].line == 2
    with pytest.raises(SourceError, match="unexpected text"):
        parse_text('name: "t"\n\ufeff', pb.NetParameter())


@pytest.mark.parametrize("text, line, fragment", [
    ('layer {\n name: "x"\n', 2, "unexpected end of file"),
    ('layer {\n convolution_param { num_output: -3 }\n}', 2, "out of range"),
    ('layer {\n pooling_param { pool: MEDIAN }\n}', 2, "not one of MAX, AVE, STOCHASTIC"),
    ('layer {\n name: "a"\n name: "b"\n}', 3, "given twice"),
    ('layer }', 1, "expected"),
    ('input: data', 1, "quoted string"),
    ('layer { name: "x" } @', 1, "unexpected text"),
    ('layer { bottom: "a" top "b" }', 1, 'expected ":"'),
])
def test_syntax_errors_name_the_line(text, line, fragment):
    with pytest.raises(SourceError) as info:
        parse_text(text, pb.NetParameter(), file="f.prototxt")
    assert info.value.line == line
    assert fragment in str(info.value)
    assert str(info.value).startswith(f"f.prototxt:{line}: ")

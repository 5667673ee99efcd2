"""A multi-MB prototxt (ResNet-50's identity block repeated, `scripts/prototxt_scale.py`): the
reader streams it, stops at the first error without reading the rest, keeps no per-token objects."""

from __future__ import annotations

import importlib.util
import sys
import tracemalloc

import pytest

from automtl_cli.errors import SourceError
from automtl_cli.frontend.build import build_graph
from automtl_cli.frontend.passes import UniqueNames
from automtl_cli.frontend.textformat import parse_text
from automtl_cli.proto import automtl_pb2 as pb

from conftest import ROOT, corpus_dir

MB = 3.0


@pytest.fixture(scope="module")
def scale():
    corpus_dir()  # ResNet-50 comes from the corpus: skip (or fail in CI) without it
    spec = importlib.util.spec_from_file_location("prototxt_scale",
                                                  ROOT / "scripts" / "prototxt_scale.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["prototxt_scale"] = module  # dataclasses and pickling look modules up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def big(scale) -> tuple[str, int]:
    return scale.grow(MB)


def test_a_duplicate_near_the_top_stops_the_reader_there(scale, big, tmp_path):
    text, line = scale.rename_second_layer(big[0])
    text += "\n@@@ not protobuf text\n"  # a reader that reads on first would report this
    path = tmp_path / "dup.prototxt"
    path.write_text(text)
    with pytest.raises(SourceError) as info:
        build_graph(path)
    assert (info.value.line, info.value.layer) == (line, "conv1")
    assert info.value.message == "layer name is also used at line 8"
    read: list[int] = []
    check = UniqueNames(str(path))

    def count(source, layer) -> None:
        read.append(source.line)
        check(source, layer)

    with pytest.raises(SourceError):
        parse_text(text, pb.NetParameter(), file=str(path), on_layer=count)
    assert read == [8, line]  # two layer blocks read of the file's ~19,000


def test_a_large_valid_file_compiles_layer_for_layer(big, tmp_path):
    text, layers = big
    path = tmp_path / "big.prototxt"
    path.write_text(text)
    g = build_graph(path).graph
    assert g.source_layers == layers  # every layer of the file is in the graph
    copies = int(g.nodes[-1].name.rsplit("_k", 1)[1])
    assert copies > 500 and g.nodes[-1].name == f"res2b_relu_k{copies}"
    per_copy: dict[int, int] = {}
    for n in g.nodes:
        if "_k" in n.name:
            k = int(n.name.rsplit("_k", 1)[1])
            per_copy[k] = per_copy.get(k, 0) + n.params
    assert len(per_copy) == copies and len(set(per_copy.values())) == 1
    assert g.shape_of(g.output) == (1, 256, 56, 56)
    assert len(g.outputs) == 1


def test_reading_keeps_no_per_token_objects(big):
    """Python memory while parsing stays a small multiple of the text (a token list would be
    twenty times it: measured 3.5× with blocks of tokens, 21.7× with the whole file's)."""
    text = big[0]
    tracemalloc.start()
    try:
        parse_text(text, pb.NetParameter())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * len(text), f"{peak / len(text):.1f}× the text"

"""Every layer-table entry writes back what it reads: networks round-trip through prototxt."""

from __future__ import annotations

import pytest

from automtl_cli.compiler.writer import graph_layers, render
from automtl_cli.frontend.build import build_graph

from conftest import ROOT, corpus_dir, corpus_files

FILES = [f"corpus:{n}" for n in corpus_files() if "train_val" not in n] + \
    [f"spec:{p.name}" for p in sorted((ROOT / "specs").glob("*.prototxt"))]


@pytest.mark.parametrize("name", FILES)
def test_round_trip(name, tmp_path):
    where, _, file = name.partition(":")
    path = (corpus_dir() if where == "corpus" else ROOT / "specs") / file
    g = build_graph(path).graph
    start = next(iter(g.inputs))
    out = tmp_path / "again.prototxt"
    out.write_text(render(g.name, start, g.inputs[start], graph_layers(g)))
    again = build_graph(out).graph
    assert again.params == g.params
    assert again.dialect == "caffe"
    assert [n.type for n in again.nodes] == [n.type for n in g.nodes]
    for a, b in zip(again.nodes, g.nodes):  # floats pass through float32 fields
        assert a.attrs.keys() == b.attrs.keys(), a.name
        for key, value in b.attrs.items():
            if isinstance(value, float):
                assert a.attrs[key] == pytest.approx(value, rel=1e-6), (a.name, key)
            else:
                assert a.attrs[key] == value, (a.name, key)
    assert [n.shapes for n in again.nodes] == [n.shapes for n in g.nodes]

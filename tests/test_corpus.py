"""Conformance: every real prototxt compiles to the figures in ../shared/prototxt/SOURCES.md, and
every long-tail one (../shared/prototxt-longtail: Crop, Axpy, Slice, ...) to those in its own.

The expected numbers are read from SOURCES.md itself, so the test and the provenance document
cannot drift apart; the parser insists on finding every row it needs. Both corpora are required
in CI and skipped, with the reason, elsewhere when absent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
import torch

from automtl_cli.compiler.backbone import build_backbone, module_name
from automtl_cli.frontend.build import CompileOptions, build_graph

from conftest import CORPUS, LONGTAIL, corpus_dir, corpus_files

_SHAPE = r"\[([\d,\s]+)\]"


@dataclass
class Expected:
    file: str
    layers: int | None
    params: int | None
    last_blob: str | None
    last_shape: tuple[int, ...] | None
    cut_blob: str | None = None
    cut_shape: tuple[int, ...] | None = None
    cut_params: int | None = None


def _int(text: str) -> int:
    return int(text.replace(",", ""))


def _shape(text: str) -> tuple[int, ...]:
    return tuple(int(d) for d in text.split(","))


def expected_figures(root=CORPUS) -> dict[str, Expected]:
    rows: dict[str, Expected] = {}
    for line in (corpus_dir(root) / "SOURCES.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or not re.match(r"(caffe|automtl)/\S+\.prototxt$", cells[0]):
            continue
        layers = _int(cells[3]) if re.fullmatch(r"[\d,]+", cells[3]) else None
        params = re.match(r"([\d,]{3,})", cells[4])
        last = re.match(rf"(\S+) {_SHAPE}", cells[5])
        exp = Expected(cells[0], layers, _int(params.group(1)) if params else None,
                       last.group(1) if last else None, _shape(last.group(2)) if last else None)
        if len(cells) > 6:
            cut = re.match(rf"(\S+) → {_SHAPE}, ([\d,]+)", cells[6])
            if cut:
                exp.cut_blob, exp.cut_shape = cut.group(1), _shape(cut.group(2))
                exp.cut_params = _int(cut.group(3))
        rows[exp.file] = exp
    return rows


def test_sources_table_is_complete():
    rows = expected_figures()
    files = set(corpus_files())
    assert set(rows) == files
    full = [r for r in rows.values() if r.params is not None]
    assert len(full) == len(files) - 1  # all but the train/val file carry their own figures
    assert sum(r.cut_blob is not None for r in rows.values()) == 8


def _options(name: str, **kw) -> CompileOptions:
    if "train_val" in name:
        kw.setdefault("input_shapes", {None: (10, 3, 227, 227)})
    return CompileOptions(**kw)


# (corpus, file) for both corpora: a missing one gives one "<corpus missing>" case that skips
# (or fails in CI) with the reason.
ALL_FILES = [(CORPUS, n) for n in corpus_files()] + [(LONGTAIL, n) for n in corpus_files(LONGTAIL)]
CASE_IDS = [f"{root.name}:{n}" for root, n in ALL_FILES]


def test_longtail_sources_table_is_complete():
    rows = expected_figures(LONGTAIL)
    assert set(rows) == set(corpus_files(LONGTAIL))
    assert all(r.params is not None and r.cut_blob is not None for r in rows.values())


@pytest.mark.parametrize("root, name", ALL_FILES, ids=CASE_IDS)
def test_whole_network(root, name):
    exp = expected_figures(root)[name]
    result = build_graph(corpus_dir(root) / name, _options(name))
    g = result.graph
    if exp.params is None:  # the train/val file: the same network as the deploy file
        exp = expected_figures()[name.replace("train_val", "deploy")]
        exp.layers, exp.last_blob = None, "fc8"  # its loss layers, not `prob`, end the file
    assert g.params == exp.params
    assert g.shape_of(g.output) == exp.last_shape
    assert g.blobs[exp.last_blob] == g.output
    if exp.layers is not None:
        assert g.source_layers == exp.layers
    assert result.dialect.name == name.split("/")[0]


@pytest.mark.parametrize("root, name", [(r, n) for r, n in ALL_FILES
                                        if not n.startswith("automtl/") and "train_val" not in n],
                         ids=[i for (r, n), i in zip(ALL_FILES, CASE_IDS)
                              if not n.startswith("automtl/") and "train_val" not in n])
def test_feature_blob_cut(root, name):
    exp = expected_figures(root)[name]
    g = build_graph(corpus_dir(root) / name, CompileOptions(feature_blob=exp.cut_blob)).graph
    assert g.shape_of(g.output) == exp.cut_shape
    assert g.params == exp.cut_params
    assert g.blobs[exp.cut_blob] == g.output


def test_resnet34_adashare_search_space():
    result = build_graph(corpus_dir() / "automtl" / "deeplab_resnet34_adashare.prototxt")
    g = result.graph
    assert len(g.searchable) == 36
    assert g.max_depth == 33
    convs = {n.name: n for n in g.searchable}
    assert convs["conv1"].depth == 1
    # the three down-sampling shortcuts share the depth of the main conv beside them
    assert convs["conv8"].depth == convs["conv9"].depth == 8
    assert convs["conv36"].depth == 33


@pytest.mark.parametrize("root, name", ALL_FILES, ids=CASE_IDS)
def test_torch_agrees_with_every_inferred_shape(root, name):
    """Execute the network in torch (batch 1) and compare every layer's output shape."""
    path = corpus_dir(root) / name
    first = build_graph(path, _options(name)).graph
    shape = next(iter(first.inputs.values()))
    g = build_graph(path, CompileOptions(input_shapes={None: (1, *shape[1:])})).graph
    model = build_backbone(g, seed=0).eval()
    seen: dict[str, list[tuple[int, ...]]] = {}
    for node in g.nodes:
        module = model.get_submodule(module_name(node.name))
        module.register_forward_hook(  # a several-top layer (Slice) returns a tuple
            lambda m, i, o, name=node.name: seen.__setitem__(
                name, [tuple(t.shape) for t in (o if isinstance(o, tuple) else (o,))]))
    with torch.no_grad():
        model(*(torch.randn(s) for s in g.inputs.values()))
    assert seen == {n.name: n.shapes for n in g.nodes}
    assert sum(p.numel() for p in model.parameters()) == g.params

"""Prototxt → IR: read a file, run the front end's passes over it, hand back a checked `Graph`.

The passes live in `automtl_cli.frontend.passes`, one concern each, sharing one `BuildState`; this
module orders them, assembles the graph and owns the options. In order: parse the text (with
lines; layer names are checked unique as each layer is read); upgrade V1 layers; decide the
dialect; keep the TEST phase; choose the outputs (the last layer's top, or `--feature-blob`) and
drop the layers that do not feed them; refuse unsupported layer types (all of them at once) and
unknown fields among the layers kept; declare inputs; resolve bottoms to SSA values (an in-place
top is a new version of its blob), inferring shapes and counting parameters layer by layer; fold
BatchNorm + Scale; share named parameters; number the search depth. Every user-facing failure
is a `SourceError` naming file, line and layer.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from automtl_cli.errors import BadInput, MissingInput, SourceError
from automtl_cli.frontend.dialect import Dialect, detect_dialect
from automtl_cli.frontend.ir import Graph, Shape
from automtl_cli.frontend.passes import (
    BuildState,
    UniqueNames,
    check_types,
    check_unknown_fields,
    choose_outputs,
    collect_layers,
    cut_at_feature,
    declare_header_inputs,
    fold_batchnorm_scale,
    infer_shapes,
    keep_test_phase,
    number_depths,
    share_named_params,
)
from automtl_cli.frontend.textformat import parse_text
from automtl_cli.proto import automtl_pb2 as pb

__all__ = ["CompileOptions", "FrontEndResult", "build_graph", "read_bytes", "read_source"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompileOptions:
    dialect: str | None = None  # force "caffe" or "automtl"; None detects it
    input_shapes: Mapping[str | None, Shape] = field(default_factory=dict)  # None: the first input
    feature_blob: str | None = None
    lenient: bool = False
    weights: str | None = None  # a pretrained-weights file (.caffemodel, state dict) to read


@dataclass
class FrontEndResult:
    graph: Graph
    dialect: Dialect
    text: str
    notes: list[str]  # what the front end did that a user may want to know (dropped layers, ...)
    warnings: list[str]
    elapsed_ms: float
    # Pretrained weights, when the source has them: node name → the state dict of that node's
    # own torch module (`LayerKind.build`), e.g. {"conv1": {"weight": ..., "bias": ...}}.
    weights: dict[str, dict[str, Any]] | None = None


def read_bytes(path: str | os.PathLike, expected: str) -> bytes:
    """A source file's bytes; a missing file is exit 66, a directory or an unreadable file 65
    (`expected`, e.g. "a .prototxt file", says what should have been there)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise MissingInput(f"{path}: no such file")
    if os.path.isdir(path):
        raise BadInput(f"{path}: is a directory, expected {expected}")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise BadInput(f"{path}: cannot read: {e.strerror}") from e


def read_source(path: str | os.PathLike) -> str:
    """The file's text; a missing file is exit 66, an unreadable one 65."""
    path = os.fspath(path)
    raw = read_bytes(path, "a .prototxt file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise SourceError("not UTF-8 text (is this a binary .caffemodel?)", file=path,
                          line=line) from e


def _build(file: str, text: str, options: CompileOptions, warn: Callable[[str], None]
           ) -> tuple[Graph, BuildState]:
    """Run the passes in order (`automtl_cli.frontend.passes`) and assemble the checked graph."""
    net = pb.NetParameter()
    parsed = parse_text(text, net, file=file, on_layer=UniqueNames(file))
    state = BuildState(file, options, net, parsed, warn, overrides=dict(options.input_shapes))
    collect_layers(state)
    state.dialect = detect_dialect(parsed, file, options.dialect)
    keep_test_phase(state)
    choose_outputs(state)
    check_types(state)
    check_unknown_fields(state)
    declare_header_inputs(state)
    infer_shapes(state)
    cut_at_feature(state)
    fold_batchnorm_scale(state)
    share_named_params(state)
    number_depths(state)
    live = {v for n in state.nodes for v in n.outputs} | set(state.inputs)
    blobs: dict[str, str] = {}
    for value, blob in state.value_blob.items():  # definition order, so the last write wins
        if value in live:
            blobs[blob] = value
    graph = Graph(net.name or os.path.splitext(os.path.basename(file))[0], file,
                  state.dialect.name, state.inputs, state.nodes, state.outputs, blobs,
                  state.source_layers)
    graph.verify()
    return graph, state


@contextlib.contextmanager
def _gc_paused():
    """Parsing allocates many small objects; with torch loaded, a full GC pass costs ~100 ms."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def build_graph(path: str | os.PathLike, options: CompileOptions | None = None, *,
                text: str | None = None, warn: Callable[[str], None] | None = None
                ) -> FrontEndResult:
    """Read, check and shape a prototxt file. Raises `SourceError` (exit 65) on any problem."""
    options = options or CompileOptions()
    file = os.fspath(path)
    t0 = time.perf_counter()
    if text is None:
        text = read_source(file)
    with _gc_paused():
        graph, state = _build(file, text, options, warn or log.warning)
    elapsed = (time.perf_counter() - t0) * 1e3
    return FrontEndResult(graph, state.dialect, text, state.notes, state.warnings, elapsed)

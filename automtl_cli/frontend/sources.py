"""Which front end reads a backbone: a `SourceKind` per input format, one front end object each.

`automtl compile SOURCE` names a prototxt file, a PyTorch module (`FILE.py:NAME`,
`package.module:NAME`) or an ONNX model (`FILE.onnx`); `source_kind` tells them apart. A run
keeps what it was compiled from (`source_record`: kind, spec, path, text, sha256; an ONNX model's
"text" is its bytes in base64, and the hash is that text's), and later stages rebuild the graph
at the data's input size from that record (`rebuild_graph`), so they never re-read a file that
may have changed. Front ends register in the project's registry style (`automtl_cli/registry.py`).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import time
from collections.abc import Callable, Mapping

import torch

from automtl_cli.bundled import resolve_backbone
from automtl_cli.errors import BadInput
from automtl_cli.frontend.build import CompileOptions, FrontEndResult, build_graph, read_source
from automtl_cli.frontend.caffemodel import caffemodel_weights
from automtl_cli.frontend.dialect import Dialect
from automtl_cli.frontend.ir import Graph, Shape
from automtl_cli.frontend.onnx import (
    decode_model,
    encode_model,
    is_onnx_spec,
    onnx_graph,
    read_model,
)
from automtl_cli.frontend.reinfer import reinfer_shapes
from automtl_cli.frontend.torchfx import (
    is_torch_spec,
    load_module,
    node_weights,
    parse_spec,
    source_text,
    trace_module,
)
from automtl_cli.frontend.torchfx.weights import load_weights_into
from automtl_cli.registry import Choice, Registry

__all__ = ["SOURCES", "GraphSource", "OnnxSource", "PrototxtSource", "SourceFrontEnd",
           "SourceKind", "TorchSource", "build_source", "module_source", "rebuild_graph",
           "source_kind"]

log = logging.getLogger(__name__)

Warn = Callable[[str], None]


class SourceKind(Choice):
    PROTOTXT = "prototxt"
    TORCH = "torch"
    GRAPH = "graph"  # the IR itself: what a module object given to the Python API leaves
    ONNX = "onnx"


class SourceFrontEnd:
    """Reads one kind of source: `read` finds its text, `build` makes the graph from it."""

    name: SourceKind

    def read(self, spec: str) -> tuple[str, str]:
        """(path, text) of the file `spec` names."""
        raise NotImplementedError

    def build(self, spec: str, path: str, text: str, options: CompileOptions,
              warn: Warn, *, weights: bool = True) -> FrontEndResult:
        """The graph; with `weights`, also the source's pretrained weights where it has some
        (a rebuild at another input size needs none: the run stored them)."""
        raise NotImplementedError


SOURCES: Registry[SourceFrontEnd] = Registry("source", SourceKind)


@SOURCES.register(SourceKind.PROTOTXT)
class PrototxtSource(SourceFrontEnd):
    def read(self, spec: str) -> tuple[str, str]:
        return spec, read_source(spec)

    def build(self, spec: str, path: str, text: str, options: CompileOptions,
              warn: Warn, *, weights: bool = True) -> FrontEndResult:
        front = build_graph(path, options, text=text, warn=warn)
        if weights and options.weights:
            if not options.weights.lower().endswith(".caffemodel"):
                raise BadInput(f"{options.weights}: a prototxt's --weights is a Caffe "
                               ".caffemodel")
            front.weights, notes = caffemodel_weights(options.weights, front.graph)
            front.notes.extend(notes)
        return front


@SOURCES.register(SourceKind.TORCH)
class TorchSource(SourceFrontEnd):
    def read(self, spec: str) -> tuple[str, str]:
        return source_text(parse_spec(spec))

    def build(self, spec: str, path: str, text: str, options: CompileOptions,
              warn: Warn, *, weights: bool = True) -> FrontEndResult:
        if options.dialect not in (None, SourceKind.TORCH.value) or options.lenient:
            raise BadInput(f"{spec}: --dialect and --lenient apply to prototxt files only")
        t0 = time.perf_counter()
        parsed = parse_spec(spec)
        notes: list[str] = []
        with torch.random.fork_rng(devices=[]):  # a module's own init: the same bits each time
            torch.manual_seed(0)
            module = load_module(parsed, path, text)
        return _traced(module, spec, path, text, options, notes, weights=weights,
                       name=parsed.name, t0=t0)


def _traced(module: torch.nn.Module, spec: str, path: str, text: str, options: CompileOptions,
            notes: list[str], *, weights: bool, name: str, t0: float) -> FrontEndResult:
    """Trace a built module (after loading `--weights` into it) into the IR and its weights."""
    if weights and options.weights:
        load_weights_into(module, options.weights, notes.append)
        notes.append(f"initial weights: {options.weights}")
    graph, trace_notes = trace_module(module, _input_shape(spec, options), file=path,
                                      name=name, feature=options.feature_blob)
    state = node_weights(graph, module) if weights else None
    elapsed = (time.perf_counter() - t0) * 1e3
    return FrontEndResult(graph, Dialect("torch", f"traced with torch.fx from {spec}"), text,
                          notes + trace_notes, [], elapsed, state)


@SOURCES.register(SourceKind.GRAPH)
class GraphSource(SourceFrontEnd):
    """A run compiled from a module object (`automtl_cli.compile(module)`): there is no file to
    read again, so the record keeps the IR and a rebuild re-infers its shapes."""

    def read(self, spec: str) -> tuple[str, str]:
        raise BadInput(f"{spec}: a module object is compiled through the Python API")

    def build(self, spec: str, path: str, text: str, options: CompileOptions,
              warn: Warn, *, weights: bool = True) -> FrontEndResult:
        t0 = time.perf_counter()
        graph = Graph.from_dict(json.loads(text))
        shapes = list(options.input_shapes.values())
        if shapes:
            graph = reinfer_shapes(graph, tuple(shapes[0]))
        elapsed = (time.perf_counter() - t0) * 1e3
        return FrontEndResult(graph, Dialect("torch", f"the stored graph of {spec}"), text, [],
                              [], elapsed)


@SOURCES.register(SourceKind.ONNX)
class OnnxSource(SourceFrontEnd):
    def read(self, spec: str) -> tuple[str, str]:
        return os.path.abspath(spec), encode_model(read_model(spec))

    def build(self, spec: str, path: str, text: str, options: CompileOptions,
              warn: Warn, *, weights: bool = True) -> FrontEndResult:
        if options.dialect not in (None, SourceKind.ONNX.value) or options.lenient:
            raise BadInput(f"{spec}: --dialect and --lenient apply to prototxt files only")
        if options.weights:
            raise BadInput(f"{spec}: an ONNX model holds its own weights; --weights applies to "
                           "prototxt and PyTorch sources")
        t0 = time.perf_counter()
        graph, weights, notes = onnx_graph(decode_model(text), file=path,
                                           input_shapes=options.input_shapes,
                                           feature=options.feature_blob)
        elapsed = (time.perf_counter() - t0) * 1e3
        return FrontEndResult(graph, Dialect("onnx", f"read with onnx from {spec}"), text, notes,
                              [], elapsed, weights)


SOURCES.check_complete()


def module_source(module: torch.nn.Module, options: CompileOptions
                  ) -> tuple[FrontEndResult, dict[str, str]]:
    """A module object's graph and weights (the Python API), and the record a run keeps."""
    cls = type(module)
    spec = f"<{cls.__module__}.{cls.__qualname__} object>"
    try:
        path = inspect.getsourcefile(cls) or spec
    except TypeError:  # a class defined in C or at the prompt
        path = spec
    front = _traced(module, spec, path, "", options, [], weights=True, name=cls.__name__,
                    t0=time.perf_counter())
    text = json.dumps(front.graph.to_dict(), sort_keys=True)
    front.text = text
    record = {"kind": SourceKind.GRAPH.value, "spec": spec, "path": path, "text": text,
              "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}
    return front, record


def _input_shape(spec: str, options: CompileOptions) -> Shape:
    shapes = list(options.input_shapes.values())
    if len(shapes) != 1:
        raise BadInput(f"{spec}: a PyTorch module has no input shape of its own; give one "
                       "with --input-shape N,C,H,W")
    if len(shapes[0]) != 4:
        raise BadInput(f"{spec}: --input-shape must be N,C,H,W, got {list(shapes[0])}")
    return tuple(shapes[0])


def source_kind(spec: str) -> SourceKind:
    if is_onnx_spec(spec):
        return SourceKind.ONNX
    return SourceKind.TORCH if is_torch_spec(spec) else SourceKind.PROTOTXT


def build_source(spec: str, options: CompileOptions | None = None, *,
                 warn: Warn | None = None) -> tuple[FrontEndResult, dict[str, str]]:
    """The graph of the backbone `spec` names, and the record a run keeps of its source."""
    options = options or CompileOptions()
    kind = source_kind(spec)
    front_end = SOURCES.get(kind)
    found, note = resolve_backbone(spec)  # `resnet34` names the bundled backbone
    path, text = front_end.read(found)
    front = front_end.build(spec, path, text, options, warn or log.warning)
    if note:
        front.notes.insert(0, note)
    record = {"kind": kind.value, "spec": spec, "path": os.path.abspath(front.graph.file),
              "text": text, "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}
    return front, record


def rebuild_graph(source: Mapping[str, str], options: CompileOptions, *,
                  warn: Warn | None = None) -> FrontEndResult:
    """The graph again, from a run's source record (runs compiled before source kinds existed
    hold a prototxt and no kind)."""
    front_end = SOURCES.get(source.get("kind", SourceKind.PROTOTXT.value))
    return front_end.build(source.get("spec", source["path"]), source["path"], source["text"],
                           options, warn or log.warning, weights=False)

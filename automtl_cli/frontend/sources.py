"""Which front end reads a backbone: a `SourceKind` per input format, one front end object each.

`automtl compile SOURCE` names a prototxt file or a PyTorch module (`FILE.py:NAME`,
`package.module:NAME`); `source_kind` tells them apart. A run keeps what it was compiled from
(`source_record`: kind, spec, path, text, sha256), and later stages rebuild the graph at the
data's input size from that record (`rebuild_graph`), so they never re-read a file that may have
changed. Front ends register in the project's registry style (`automtl_cli/registry.py`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Mapping

from automtl_cli.bundled import resolve_backbone
from automtl_cli.errors import BadInput
from automtl_cli.frontend.build import CompileOptions, FrontEndResult, build_graph, read_source
from automtl_cli.frontend.dialect import Dialect
from automtl_cli.frontend.ir import Shape
from automtl_cli.frontend.torchfx import (
    is_torch_spec,
    load_module,
    parse_spec,
    source_text,
    trace_module,
)
from automtl_cli.registry import Choice, Registry

__all__ = ["SOURCES", "PrototxtSource", "SourceFrontEnd", "SourceKind", "TorchSource",
           "build_source", "rebuild_graph", "source_kind"]

log = logging.getLogger(__name__)

Warn = Callable[[str], None]


class SourceKind(Choice):
    PROTOTXT = "prototxt"
    TORCH = "torch"


class SourceFrontEnd:
    """Reads one kind of source: `read` finds its text, `build` makes the graph from it."""

    name: SourceKind

    def read(self, spec: str) -> tuple[str, str]:
        """(path, text) of the file `spec` names."""
        raise NotImplementedError

    def build(self, spec: str, path: str, text: str, options: CompileOptions,
              warn: Warn) -> FrontEndResult:
        raise NotImplementedError


SOURCES: Registry[SourceFrontEnd] = Registry("source", SourceKind)


@SOURCES.register(SourceKind.PROTOTXT)
class PrototxtSource(SourceFrontEnd):
    def read(self, spec: str) -> tuple[str, str]:
        return spec, read_source(spec)

    def build(self, spec: str, path: str, text: str, options: CompileOptions,
              warn: Warn) -> FrontEndResult:
        return build_graph(path, options, text=text, warn=warn)


@SOURCES.register(SourceKind.TORCH)
class TorchSource(SourceFrontEnd):
    def read(self, spec: str) -> tuple[str, str]:
        return source_text(parse_spec(spec))

    def build(self, spec: str, path: str, text: str, options: CompileOptions,
              warn: Warn) -> FrontEndResult:
        if options.dialect not in (None, SourceKind.TORCH.value) or options.lenient:
            raise BadInput(f"{spec}: --dialect and --lenient apply to prototxt files only")
        t0 = time.perf_counter()
        parsed = parse_spec(spec)
        module = load_module(parsed, path, text)
        graph, notes = trace_module(module, _input_shape(spec, options), file=path,
                                    name=parsed.name, feature=options.feature_blob)
        elapsed = (time.perf_counter() - t0) * 1e3
        return FrontEndResult(graph, Dialect("torch", f"traced with torch.fx from {spec}"), text,
                              notes, [], elapsed)


SOURCES.check_complete()


def _input_shape(spec: str, options: CompileOptions) -> Shape:
    shapes = list(options.input_shapes.values())
    if len(shapes) != 1:
        raise BadInput(f"{spec}: a PyTorch module has no input shape of its own; give one "
                       "with --input-shape N,C,H,W")
    if len(shapes[0]) != 4:
        raise BadInput(f"{spec}: --input-shape must be N,C,H,W, got {list(shapes[0])}")
    return tuple(shapes[0])


def source_kind(spec: str) -> SourceKind:
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
                           options, warn or log.warning)

"""Prototxt → IR: the passes that turn a parsed file into a checked, shaped `Graph`.

In order: read the file; upgrade V1 layers; decide the dialect; refuse unsupported layer types
(all of them at once) and unknown fields; keep the TEST phase; declare inputs; resolve bottoms to
SSA values (an in-place top is a new version of its blob); infer shapes and count parameters
layer by layer; cut at the feature blob and drop what does not feed it; fold BatchNorm + Scale;
number the search depth. Every user-facing failure is a `SourceError` naming file, line and layer.
"""

from __future__ import annotations

import contextlib
import difflib
import gc
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from google.protobuf.message import Message

from automtl_cli.errors import BadInput, MissingInput, SourceError
from automtl_cli.frontend.dialect import Dialect, detect_dialect
from automtl_cli.frontend.ir import Graph, Node, Shape
from automtl_cli.frontend.ops import LAYER_KINDS, ReadContext, ShapeError, get_kind
from automtl_cli.frontend.textformat import LayerSource, ParsedText, parse_text
from automtl_cli.frontend.upgrade import upgrade_v1_layer
from automtl_cli.proto import automtl_pb2 as pb

__all__ = ["CompileOptions", "FrontEndResult", "build_graph", "read_source"]

log = logging.getLogger(__name__)

# The AutoMTL reference's converter names the input `blob1` while its first layer reads `data`.
_DIALECT_INPUT_ALIASES = ("data", "blob1")


@dataclass(frozen=True)
class CompileOptions:
    dialect: str | None = None  # force "caffe" or "automtl"; None detects it
    input_shapes: Mapping[str | None, Shape] = field(default_factory=dict)  # None: the first input
    feature_blob: str | None = None
    lenient: bool = False


@dataclass
class FrontEndResult:
    graph: Graph
    dialect: Dialect
    text: str
    notes: list[str]  # what the front end did that a user may want to know (dropped layers, ...)
    warnings: list[str]
    elapsed_ms: float


def read_source(path: str | os.PathLike) -> str:
    """The file's text; a missing file is exit 66, an unreadable one 65."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise MissingInput(f"{path}: no such file")
    if os.path.isdir(path):
        raise BadInput(f"{path}: is a directory, expected a .prototxt file")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise BadInput(f"{path}: cannot read: {e.strerror}") from e
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise SourceError("not UTF-8 text (is this a binary .caffemodel?)", file=path,
                          line=line) from e


@dataclass
class _Layer:
    """One source layer, upgraded to V2, with its place in the file."""

    message: Message
    source: LayerSource
    index: int  # position among all layers of the file

    @property
    def name(self) -> str:
        return self.message.name or f"#{self.index}"

    @property
    def type(self) -> str:
        return self.message.type


class _Builder:
    def __init__(self, file: str, text: str, options: CompileOptions,
                 warn: Callable[[str], None]) -> None:
        self.file, self.text, self.options, self.warn = file, text, options, warn
        self.notes: list[str] = []
        self.warnings: list[str] = []

    # ----------------------------------------------------------------- helpers

    def err(self, message: str, layer: _Layer | None = None, path: str | None = None,
            line: int | None = None) -> SourceError:
        if layer is None:
            return SourceError(message, file=self.file, line=line)
        return SourceError(message, file=self.file,
                           line=line or (layer.source.line_of(path) if path else layer.source.line),
                           layer=layer.name, layer_type=layer.type or "no type")

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        self.warn(message)

    # ----------------------------------------------------------------- passes

    def run(self) -> tuple[Graph, Dialect]:
        net = pb.NetParameter()
        parsed = parse_text(self.text, net, file=self.file)
        layers = self._layers(net, parsed)
        dialect = detect_dialect(parsed, self.file, self.options.dialect)
        self._check_types(layers)
        self._check_unknown_fields(parsed)
        layers = self._keep_test_phase(layers)
        graph = self._graph(net, parsed, layers, dialect)
        return graph, dialect

    def _layers(self, net: pb.NetParameter, parsed: ParsedText) -> list[_Layer]:
        if len(net.layer) and len(net.layers):
            line = next(s.line for s in parsed.layers if s.field == "layers")
            raise self.err("mixes V2 `layer {}` and legacy V1 `layers {}` blocks", line=line)
        out = []
        for i, source in enumerate(parsed.layers):
            if source.field == "layers":
                message = upgrade_v1_layer(net.layers[source.index])
            else:
                message = net.layer[source.index]
            out.append(_Layer(message, source, i))
        if net.layers:
            self.notes.append(f"upgraded {len(net.layers)} legacy V1 layers")
        return out

    def _check_types(self, layers: list[_Layer]) -> None:
        bad = [la for la in layers if get_kind(la.type) is None]
        if not bad:
            return
        listed = "; ".join(f'line {la.source.line} "{la.name}" ({la.type or "no type"})'
                           for la in bad)
        supported = ", ".join(sorted(LAYER_KINDS))
        first = bad[0]
        what = "unsupported layer type" if len(bad) == 1 else f"{len(bad)} unsupported layers"
        raise self.err(f"{what}: {listed}. Supported types: {supported}", first)

    def _check_unknown_fields(self, parsed: ParsedText) -> None:
        if not parsed.unknown:
            return
        if self.options.lenient:
            seen: set[tuple[str, str]] = set()
            for u in parsed.unknown:
                key = (u.message_type, u.name)
                if key not in seen:
                    seen.add(key)
                    self._warn(f"{self.file}:{u.line}: ignoring unknown field \"{u.name}\" of "
                               f"{u.message_type.split('.')[-1]} (--lenient)")
            return
        u = parsed.unknown[0]
        more = len(parsed.unknown) - 1
        message = (f'unknown field "{u.name}" in {u.message_type.split(".")[-1]}'
                   + (f" (and {more} more)" if more else "")
                   + "; pass --lenient to ignore unknown fields")
        if u.layer is None:
            raise self.err(message, line=u.line)
        layer_msg = self._layer_message_for(parsed, u.layer)
        raise SourceError(message, file=self.file, line=u.line,
                          layer=layer_msg.name or f"#{parsed.layers.index(u.layer)}",
                          layer_type=_type_name(layer_msg) or "no type")

    @staticmethod
    def _layer_message_for(parsed: ParsedText, source: LayerSource) -> Message:
        return getattr(parsed.message, source.field)[source.index]

    def _keep_test_phase(self, layers: list[_Layer]) -> list[_Layer]:
        kept = [la for la in layers if _in_test_phase(la.message)]
        if len(kept) != len(layers):
            self.notes.append(f"kept the TEST phase: dropped {len(layers) - len(kept)} "
                              "TRAIN-only layers")
        names: dict[str, _Layer] = {}
        for la in kept:
            if la.message.name and la.message.name in names:
                raise self.err(f"layer name is also used at line "
                               f"{names[la.message.name].source.line}", la)
            names[la.message.name] = la
        return kept

    # ----------------------------------------------------------------- the graph

    def _graph(self, net: pb.NetParameter, parsed: ParsedText, layers: list[_Layer],
               dialect: Dialect) -> Graph:
        latest: dict[str, str] = {}  # blob name → current SSA value
        versions: dict[str, int] = {}
        value_blob: dict[str, str] = {}
        shapes: dict[str, Shape] = {}
        inputs: dict[str, Shape] = {}
        pending_inputs: list[tuple[str, Shape | None, _Layer | None, list[int] | None]] = []
        nodes: list[Node] = []
        dropped: list[str] = []
        overrides = dict(self.options.input_shapes)

        def new_value(blob: str) -> str:
            k = versions.get(blob, -1) + 1
            versions[blob] = k
            value = blob if k == 0 else f"{blob}@{k}"
            while value in value_blob:  # a blob literally named "x@1": keep SSA ids unique
                value += "'"
            latest[blob] = value
            value_blob[value] = blob
            return value

        # Header inputs: `input` + `input_dim` (4 per input) or `input_shape`.
        header = list(net.input)
        if net.input_dim and net.input_shape:
            raise self.err("gives both input_dim and input_shape", line=parsed.net_lines.get(
                "input_shape"))
        if net.input_dim:
            if len(net.input_dim) != 4 * len(header):
                raise self.err(f"{len(net.input_dim)} input_dim values for {len(header)} "
                               "input(s); expected 4 (N, C, H, W) per input",
                               line=parsed.net_lines.get("input_dim"))
            dims = list(net.input_dim)
            for i, name in enumerate(header):
                pending_inputs.append((name, tuple(dims[4 * i:4 * i + 4]), None, None))
        elif net.input_shape:
            if len(net.input_shape) != len(header):
                raise self.err(f"{len(net.input_shape)} input_shape blocks for {len(header)} "
                               "input(s)", line=parsed.net_lines.get("input_shape"))
            for name, s in zip(header, net.input_shape):
                pending_inputs.append((name, tuple(int(d) for d in s.dim), None, None))
        else:
            for name in header:
                pending_inputs.append((name, None, None, None))

        def declare_inputs() -> None:
            for name, shape, layer, hint in pending_inputs:
                key = name if name in overrides else (None if None in overrides and not inputs
                                                     else name)
                if key in overrides:
                    shape = tuple(overrides.pop(key))
                if shape is None:
                    where = f' (for example --input-shape {",".join(map(str, hint))})' if hint \
                        else ""
                    e = f'input "{name}" has no shape: give it with --input-shape N,C,H,W{where}'
                    if layer is not None:
                        raise self.err(e, layer)
                    raise self.err(e, line=parsed.net_lines.get("input"))
                if not shape or any(d < 1 for d in shape):
                    e = f'input "{name}" has a non-positive shape {list(shape)}'
                    raise self.err(e, layer) if layer is not None else self.err(
                        e, line=parsed.net_lines.get("input_dim") or parsed.net_lines.get("input"))
                value = new_value(name)
                inputs[value] = tuple(int(d) for d in shape)
                shapes[value] = inputs[value]
            pending_inputs.clear()

        declare_inputs()
        source_layers = 0
        for la in layers:
            kind = LAYER_KINDS[la.type]
            msg = la.message
            if kind.role == "drop":
                dropped.append(la.name)
                continue
            nb, nt = len(msg.bottom), len(msg.top)
            lo, hi = kind.bottoms
            if nb < lo or (hi is not None and nb > hi):
                want = f"{lo}" if lo == hi else (f"at least {lo}" if hi is None
                                                 else f"{lo} to {hi}")
                raise self.err(f"takes {want} bottom(s), got {nb}", la)
            lo, hi = kind.tops
            if nt < lo or (hi is not None and nt > hi):
                want = f"{lo}" if lo == hi else (f"at least {lo}" if hi is None
                                                 else f"{lo} to {hi}")
                raise self.err(f"takes {want} top(s), got {nt}", la)
            ctx = ReadContext(dialect.name, la.source.line_of)
            try:
                attrs = kind.read(msg, ctx)
            except SourceError as e:
                raise e.located(file=self.file, line=la.source.line, layer=la.name,
                                layer_type=la.type) from None
            source_layers += 1
            if kind.role == "input":
                declared = attrs["shapes"]
                for i, top in enumerate(msg.top):
                    shape = tuple(declared[i]) if declared else None
                    pending_inputs.append((top, shape, la, None))
                declare_inputs()
                continue
            if kind.role == "data":
                shape = tuple(attrs["shape"]) if attrs["shape"] else None
                pending_inputs.append((msg.top[0], shape, la, attrs["hint"]))
                declare_inputs()
                for top in msg.top[1:]:  # labels: defined, never fed to the network
                    new_value(top)
                    self.notes.append(f'data layer "{la.name}": top "{top}" is a label, unused')
                continue
            # An ordinary layer: resolve its bottoms to the latest versions.
            in_values = []
            for b in msg.bottom:
                value = latest.get(b)
                if value is None and b in _DIALECT_INPUT_ALIASES and len(inputs) == 1 and \
                        next(iter(value_blob[v] for v in inputs)) in _DIALECT_INPUT_ALIASES:
                    value = next(iter(inputs))
                    latest[b] = value
                    self.notes.append(f'bottom "{b}" of "{la.name}" read as the declared input '
                                      f'"{value_blob[value]}" (the AutoMTL dialect\'s naming)')
                if value is None:
                    close = difflib.get_close_matches(b, list(latest), n=1)
                    hint = f'; did you mean "{close[0]}"?' if close else ""
                    raise self.err(f'bottom "{b}" is not produced by any earlier layer{hint}',
                                   la, "bottom")
                if value_blob.get(value) is not None and value not in shapes:
                    raise self.err(f'bottom "{b}" is a data layer\'s label, not an image', la,
                                   "bottom")
                in_values.append(value)
            in_shapes = [shapes[v] for v in in_values]
            try:
                out_shapes = kind.infer(attrs, in_shapes)
                params = kind.count_params(attrs, in_shapes)
            except ShapeError as e:
                raise e.located(file=self.file, line=la.source.line, layer=la.name,
                                layer_type=la.type) from None
            if any(d < 1 for s in out_shapes for d in s):
                raise self.err("output shape " + ", ".join(str(list(s)) for s in out_shapes)
                               + " has an empty dimension (input " +
                               ", ".join(str(list(s)) for s in in_shapes) + ")", la)
            outputs = [new_value(t) for t in msg.top]
            if len(out_shapes) == 1 and len(outputs) > 1:
                raise self.err(f"takes 1 top, got {len(outputs)}", la)
            for v, s in zip(outputs, out_shapes):
                shapes[v] = tuple(int(d) for d in s)
            names = tuple(p.name for p in msg.param)
            if names and all(names):  # Caffe's weight sharing: `param { name: "..." }`
                attrs = {**attrs, "param_names": list(names)}
            node = Node(la.name, kind.type, in_values, outputs, attrs, la.source.line,
                        shapes=[shapes[v] for v in outputs], params=int(params),
                        searchable=kind.searchable)
            nodes.append(node)
        if overrides:
            names = ", ".join(str(k) for k in overrides)
            raise self.err(f"--input-shape names {names}, which is not an input of the network "
                           f"(inputs: {', '.join(value_blob[v] for v in inputs) or 'none'})")
        if dropped:
            self.notes.append(f"dropped {len(dropped)} loss/accuracy layers: "
                              + ", ".join(dropped))
        if not inputs:
            raise self.err("declares no input: add `input` + `input_dim`, an Input layer, "
                           "or a data layer")
        if not nodes:
            raise self.err("has no layers after its inputs")

        outputs = self._outputs(nodes, latest, value_blob, inputs)
        nodes, source_layers = self._prune(nodes, outputs, source_layers, inputs)
        for v in [v for v in inputs if not any(v in n.inputs for n in nodes)]:
            self.notes.append(f'input "{value_blob[v]}" does not feed the output; removed')
            del inputs[v]
        nodes = _fold_batchnorm_scale(nodes, outputs, self.notes)
        _share_named_params(nodes, self.notes)
        _number_depths(nodes, inputs)
        live = {v for n in nodes for v in n.outputs} | set(inputs)
        blobs: dict[str, str] = {}
        for value in value_blob:  # insertion order = definition order, so the last wins
            if value in live:
                blobs[value_blob[value]] = value
        graph = Graph(net.name or os.path.splitext(os.path.basename(self.file))[0], self.file,
                      dialect.name, inputs, nodes, outputs, blobs, source_layers)
        graph.verify()
        return graph

    def _outputs(self, nodes: list[Node], latest: dict[str, str],
                 value_blob: dict[str, str], inputs: dict[str, Shape]) -> list[str]:
        """The feature blob's last version; by default every blob no layer reads (Caffe's
        network outputs): the last layer's for a backbone, one per task for a derived network."""
        name = self.options.feature_blob
        if name is None:
            read = {v for n in nodes for v in n.inputs}
            sinks = [v for n in nodes for v in n.outputs if v not in read]
            if len(sinks) > 1:
                self.notes.append(f"{len(sinks)} output blobs: "
                                  + ", ".join(value_blob[v] for v in sinks))
            return sinks
        for node in reversed(nodes):
            for v in node.outputs:
                if value_blob[v] == name:
                    return [v]
        if name in latest and latest[name] in inputs:
            raise self.err(f'--feature-blob "{name}" is the network input: no path from the '
                           "input through any layer to it")
        close = difflib.get_close_matches(name, sorted(set(value_blob.values())), n=3)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        raise self.err(f'--feature-blob "{name}": no layer writes this blob{hint}')

    def _prune(self, nodes: list[Node], outputs: list[str], source_layers: int,
               inputs: dict[str, Shape]) -> tuple[list[Node], int]:
        needed = set(outputs)
        kept: list[Node] = []
        for node in reversed(nodes):
            if needed.intersection(node.outputs):
                kept.append(node)
                needed.update(node.inputs)
        kept.reverse()
        if not needed.intersection(inputs):
            raise self.err("no path from any input to the feature blob")
        for out in outputs:
            if out in inputs:
                raise self.err(f'output "{out}" is an input: no path through any layer to it')
        removed = len(nodes) - len(kept)
        if removed:
            after = sum(1 for n in nodes[nodes.index(kept[-1]) + 1:])
            self.notes.append(
                f"kept {len(kept)} layers up to the feature blob; removed {removed} "
                f"({after} after it, {removed - after} that do not feed it)")
        return kept, source_layers - removed


def _type_name(message: Message) -> str:
    if message.DESCRIPTOR.name == "V1LayerParameter":
        return upgrade_v1_layer(message).type
    return message.type


def _rule_met(rule: pb.NetStateRule) -> bool:
    """Caffe's StateMeetsRule for the TEST phase, level 0, no stages."""
    if rule.HasField("phase") and rule.phase != pb.TEST:
        return False
    if rule.HasField("min_level") and 0 < rule.min_level:
        return False
    if rule.HasField("max_level") and 0 > rule.max_level:
        return False
    return not rule.stage


def _in_test_phase(layer: Message) -> bool:
    if layer.DESCRIPTOR.fields_by_name.get("phase") and layer.HasField("phase") and \
            layer.phase != pb.TEST:
        return False
    if layer.include:
        return any(_rule_met(r) for r in layer.include)
    return not any(_rule_met(r) for r in layer.exclude)


def _fold_batchnorm_scale(nodes: list[Node], outputs: list[str], notes: list[str]
                          ) -> list[Node]:
    """Caffe writes a normalisation as BatchNorm (statistics) + Scale (γ, β): make it one node."""
    consumers: dict[str, int] = {}
    for n in nodes:
        for v in n.inputs:
            consumers[v] = consumers.get(v, 0) + 1
    by_input = {n.inputs[0]: n for n in nodes if n.type == "Scale"}
    removed: set[str] = set()
    folded = 0
    for n in nodes:
        if n.type != "BatchNorm" or n.attrs["affine"]:
            continue
        v = n.outputs[0]
        scale = by_input.get(v)
        if scale is None or consumers.get(v) != 1 or v in outputs:
            continue
        n.attrs = {**n.attrs, "affine": True, "bias": scale.attrs["bias"]}
        if "param_names" in scale.attrs:  # the learnable γ/β are the Scale's
            n.attrs["param_names"] = scale.attrs["param_names"]
        n.params += scale.params
        n.outputs = list(scale.outputs)
        n.folded.append(scale.name)
        removed.add(scale.name)
        folded += 1
    if folded:
        notes.append(f"folded {folded} BatchNorm + Scale pairs into affine BatchNorm")
    return [n for n in nodes if n.name not in removed]


def _share_named_params(nodes: list[Node], notes: list[str]) -> None:
    """Layers naming the same parameters (Caffe's `param { name }`) hold them once."""
    owner: dict[tuple, Node] = {}
    shared = 0
    for n in nodes:
        names = n.attrs.get("param_names")
        if not names:
            continue
        key = (n.type, tuple(names))
        first = owner.get(key)
        if first is None:
            owner[key] = n
        elif first.params == n.params:
            n.attrs = {**n.attrs, "shares": first.name}
            n.params = 0
            shared += 1
    if shared:
        notes.append(f"{shared} layers share the weights of an earlier layer (param names)")


def _number_depths(nodes: list[Node], inputs: Mapping[str, Shape]) -> None:
    """Depth as the reference defines it: searchable convolutions on the longest input path."""
    depth: dict[str, int] = dict.fromkeys(inputs, 0)
    for n in nodes:
        d = max((depth.get(v, 0) for v in n.inputs), default=0) + (1 if n.searchable else 0)
        n.depth = d
        for v in n.outputs:
            depth[v] = d


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
    builder = _Builder(file, text, options, warn or log.warning)
    with _gc_paused():
        graph, dialect = builder.run()
    elapsed = (time.perf_counter() - t0) * 1e3
    return FrontEndResult(graph, dialect, text, builder.notes, builder.warnings, elapsed)

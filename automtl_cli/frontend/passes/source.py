"""The checks over the file's layers before any graph exists: unique layer names (while the file
is read), collect the layers (V1 upgraded to V2), keep the TEST phase, refuse unsupported types
and unknown fields.

They come first so that a file with several problems reports the ones a user fixes first: every
unsupported type at once, before any shape is inferred. Types and fields are checked on the
layers the outputs need (`choose_outputs` runs before them): a layer after the feature blob, or
in a branch that feeds no output, is dropped unchecked.
"""

from __future__ import annotations

from google.protobuf.message import Message

from automtl_cli.errors import SourceError
from automtl_cli.frontend.ops import LAYER_KINDS, get_kind
from automtl_cli.frontend.passes.state import BuildState, SourceLayer
from automtl_cli.frontend.textformat import LayerSource, ParsedText
from automtl_cli.frontend.upgrade import upgrade_v1_layer
from automtl_cli.proto import automtl_pb2 as pb

__all__ = ["UniqueNames", "check_types", "check_unknown_fields", "collect_layers",
           "keep_test_phase"]


class UniqueNames:
    """Layer names are unique among the TEST phase's layers (Caffe's rule, and the IR's node
    names). Called by the reader as each layer block closes (`parse_text(on_layer=...)`), so a
    duplicate near the top of a 20 MB file is refused before the rest is read."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.lines: dict[str, int] = {}  # name → line of the layer that has it

    def __call__(self, source: LayerSource, layer: Message) -> None:
        name = layer.name
        if not name or not _in_test_phase(source, layer):
            return
        first = self.lines.get(name)
        if first is not None:
            raise SourceError(f"layer name is also used at line {first}", file=self.file,
                              line=source.line, layer=name,
                              layer_type=_type_name(layer) or "no type")
        self.lines[name] = source.line


def collect_layers(state: BuildState) -> None:
    """The file's layers in order, as V2 messages: legacy V1 `layers {}` are upgraded here, so no
    later pass sees two schemas (a file may not mix them)."""
    net, parsed = state.net, state.parsed
    if len(net.layer) and len(net.layers):
        line = next(s.line for s in parsed.layers if s.field == "layers")
        raise state.err("mixes V2 `layer {}` and legacy V1 `layers {}` blocks", line=line)
    for i, source in enumerate(parsed.layers):
        if source.field == "layers":
            message = upgrade_v1_layer(net.layers[source.index])
        else:
            message = net.layer[source.index]
        state.layers.append(SourceLayer(message, source, i))
    if net.layers:
        state.notes.append(f"upgraded {len(net.layers)} legacy V1 layers")


def check_types(state: BuildState) -> None:
    """Every unsupported layer type the network keeps in one error, with the supported ones
    listed."""
    bad = [la for la in state.layers if get_kind(la.type) is None]
    if not bad:
        return
    listed = "; ".join(f'line {la.source.line} "{la.name}" ({la.type or "no type"})'
                       for la in bad)
    supported = ", ".join(sorted(LAYER_KINDS))
    first = bad[0]
    what = "unsupported layer type" if len(bad) == 1 else f"{len(bad)} unsupported layers"
    raise state.err(f"{what}: {listed}. Supported types: {supported}", first)


def check_unknown_fields(state: BuildState) -> None:
    """An unknown field is an error (a typo would silently change the network) unless
    `--lenient`, which warns once per field."""
    parsed = state.parsed
    kept = {id(la.source) for la in state.layers}
    unknown = [u for u in parsed.unknown if u.layer is None or id(u.layer) in kept]
    if not unknown:
        return
    if state.options.lenient:
        seen: set[tuple[str, str]] = set()
        for u in unknown:
            key = (u.message_type, u.name)
            if key not in seen:
                seen.add(key)
                state.warning(f"{state.file}:{u.line}: ignoring unknown field \"{u.name}\" of "
                              f"{u.message_type.split('.')[-1]} (--lenient)")
        return
    u = unknown[0]
    more = len(unknown) - 1
    message = (f'unknown field "{u.name}" in {u.message_type.split(".")[-1]}'
               + (f" (and {more} more)" if more else "")
               + "; pass --lenient to ignore unknown fields")
    if u.layer is None:
        raise state.err(message, line=u.line)
    layer_msg = _layer_message_for(parsed, u.layer)
    raise SourceError(message, file=state.file, line=u.line,
                      layer=layer_msg.name or f"#{parsed.layers.index(u.layer)}",
                      layer_type=_type_name(layer_msg) or "no type")


def keep_test_phase(state: BuildState) -> None:
    """A train/val file describes two networks; the TEST one is the deploy network (its layer
    names were checked unique as the file was read, `UniqueNames`)."""
    layers = state.layers
    kept = [la for la in layers if _in_test_phase(la.source, la.message)]
    if len(kept) != len(layers):
        state.notes.append(f"kept the TEST phase: dropped {len(layers) - len(kept)} "
                           "TRAIN-only layers")
    state.layers = kept


def _layer_message_for(parsed: ParsedText, source: LayerSource) -> Message:
    return getattr(parsed.message, source.field)[source.index]


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


_PHASE_FIELDS = ("include", "exclude", "phase")


def _in_test_phase(source: LayerSource, layer: Message) -> bool:
    # Most layers have no rule: the reader's field table says so without touching the message
    # (reading an empty repeated message field makes protobuf keep ~400 bytes per layer).
    if not any(f in source.field_offsets for f in _PHASE_FIELDS):
        return True
    if layer.DESCRIPTOR.fields_by_name.get("phase") and layer.HasField("phase") and \
            layer.phase != pb.TEST:
        return False
    if layer.include:
        return any(_rule_met(r) for r in layer.include)
    return not any(_rule_met(r) for r in layer.exclude)

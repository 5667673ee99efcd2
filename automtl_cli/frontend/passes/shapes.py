"""Layer by layer, in file order: read each layer through its op, declare the inputs it makes,
and infer its output shapes and parameter count, so that a problem is reported at the first
layer that has it (a shape mismatch names its layer, not one twenty layers down).
"""

from __future__ import annotations

from automtl_cli.errors import SourceError
from automtl_cli.frontend.ir import Node
from automtl_cli.frontend.ops import LAYER_KINDS, Attrs, LayerKind, ReadContext, ShapeError
from automtl_cli.frontend.ops.base import Role
from automtl_cli.frontend.passes.state import BuildState, SourceLayer
from automtl_cli.frontend.passes.values import declare_input, new_value, resolve_bottoms

__all__ = ["infer_shapes"]


def infer_shapes(state: BuildState) -> None:
    """Turn every kept layer into a shaped node or an input (`choose_outputs` dropped the losses),
    then check that the result is a network: it has inputs, layers, and used every
    `--input-shape`."""
    forks: dict[str, list[str]] = {}
    for la in state.layers:
        kind = LAYER_KINDS[la.type]
        if kind.fork is not None:
            forks.setdefault(la.type, []).append(la.name)
        _check_arity(state, la, kind)
        attrs = _read(state, la, kind)
        state.source_layers += 1
        if kind.role is Role.INPUT:
            declared = attrs["shapes"]
            for i, top in enumerate(la.message.top):
                declare_input(state, top, tuple(declared[i]) if declared else None, la)
        elif kind.role is Role.DATA:
            _declare_data_layer(state, la, attrs)
        else:
            state.nodes.append(_shaped_node(state, la, kind, attrs))
    for type_name, names in forks.items():
        state.notes.append(f"{type_name}: {LAYER_KINDS[type_name].fork}; {len(names)} "
                           f"layer{'s' if len(names) > 1 else ''}: " + ", ".join(names[:3])
                           + (", ..." if len(names) > 3 else ""))
    _check_network(state)


def _arity(count: int, bounds: tuple[int, int | None]) -> str | None:
    """What `bounds` allows, in words, when `count` is outside it."""
    lo, hi = bounds
    if lo <= count and (hi is None or count <= hi):
        return None
    return f"{lo}" if lo == hi else (f"at least {lo}" if hi is None else f"{lo} to {hi}")


def _check_arity(state: BuildState, la: SourceLayer, kind: LayerKind) -> None:
    nb, nt = len(la.message.bottom), len(la.message.top)
    want = _arity(nb, kind.bottoms)
    if want is not None:
        raise state.err(f"takes {want} bottom(s), got {nb}", la)
    want = _arity(nt, kind.tops)
    if want is not None:
        raise state.err(f"takes {want} top(s), got {nt}", la)


def _read(state: BuildState, la: SourceLayer, kind: LayerKind) -> Attrs:
    ctx = ReadContext(state.dialect.name, la.source.line_of)
    try:
        return kind.read(la.message, ctx)
    except SourceError as e:
        raise e.located(file=state.file, line=la.source.line, layer=la.name,
                        layer_type=la.type) from None


def _declare_data_layer(state: BuildState, la: SourceLayer, attrs: Attrs) -> None:
    """A data layer's first top is the image input; the others (labels) are defined, unused."""
    msg = la.message
    shape = tuple(attrs["shape"]) if attrs["shape"] else None
    declare_input(state, msg.top[0], shape, la, attrs["hint"])
    for top in msg.top[1:]:
        new_value(state, top)
        state.notes.append(f'data layer "{la.name}": top "{top}" is a label, unused')


def _shaped_node(state: BuildState, la: SourceLayer, kind: LayerKind, attrs: Attrs) -> Node:
    msg = la.message
    in_values = resolve_bottoms(state, la)
    in_shapes = [state.shapes[v] for v in in_values]
    try:
        kind, attrs = kind.lower(attrs, in_shapes)
        out_shapes = kind.infer(attrs, in_shapes)
        params = kind.count_params(attrs, in_shapes)
    except ShapeError as e:
        raise e.located(file=state.file, line=la.source.line, layer=la.name,
                        layer_type=la.type) from None
    if any(d < 1 for s in out_shapes for d in s):
        raise state.err("output shape " + ", ".join(str(list(s)) for s in out_shapes)
                        + " has an empty dimension (input " +
                        ", ".join(str(list(s)) for s in in_shapes) + ")", la)
    outputs = [new_value(state, t) for t in msg.top]
    if len(out_shapes) == 1 and len(outputs) > 1:
        raise state.err(f"takes 1 top, got {len(outputs)}", la)
    for v, s in zip(outputs, out_shapes):
        state.shapes[v] = tuple(int(d) for d in s)
    # (the reader's field table says whether there is a `param`, without touching the message)
    names = tuple(p.name for p in msg.param) if "param" in la.source.field_offsets else ()
    if names and all(names):  # Caffe's weight sharing: `param { name: "..." }`
        attrs = {**attrs, "param_names": list(names)}
    return Node(la.name, kind.type, in_values, outputs, attrs, la.source.line,
                shapes=[state.shapes[v] for v in outputs], params=int(params),
                searchable=kind.searchable)


def _check_network(state: BuildState) -> None:
    if state.overrides:
        names = ", ".join(str(k) for k in state.overrides)
        inputs = ", ".join(state.value_blob[v] for v in state.inputs) or "none"
        raise state.err(f"--input-shape names {names}, which is not an input of the network "
                        f"(inputs: {inputs})")
    if state.dropped:
        state.notes.append(f"dropped {len(state.dropped)} loss/accuracy layers: "
                           + ", ".join(state.dropped))
    if not state.inputs:
        raise state.err("declares no input: add `input` + `input_dim`, an Input layer, "
                        "or a data layer")
    if not state.nodes:
        raise state.err("has no layers after its inputs")

"""Blobs become SSA values, and inputs are declared.

Caffe lets a layer write the blob it reads (`top == bottom`, an in-place ReLU or Scale). The IR
wants each value written once, so every write of a blob is a new value: `conv1`, then `conv1@1`,
and a bottom always reads the blob's latest value. Inputs come from the net header (`input` with
`input_dim` or `input_shape`), from Input layers, or from data layers, each shape overridable by
`--input-shape`.
"""

from __future__ import annotations

import difflib

from automtl_cli.frontend.ir import Shape
from automtl_cli.frontend.passes.state import BuildState, SourceLayer

__all__ = ["declare_header_inputs", "declare_input", "new_value", "resolve_bottoms"]

# The AutoMTL reference's converter names the input `blob1` while its first layer reads `data`.
_DIALECT_INPUT_ALIASES = ("data", "blob1")


def new_value(state: BuildState, blob: str) -> str:
    """A fresh SSA value for a write of `blob`; later bottoms named `blob` read it."""
    k = state.versions.get(blob, -1) + 1
    state.versions[blob] = k
    value = blob if k == 0 else f"{blob}@{k}"
    while value in state.value_blob:  # a blob literally named "x@1": keep SSA ids unique
        value += "'"
    state.latest[blob] = value
    state.value_blob[value] = blob
    return value


def declare_header_inputs(state: BuildState) -> None:
    """The net header's inputs: `input` + `input_dim` (4 per input), `input_shape`, or neither
    (then `--input-shape` must give the shape)."""
    net, lines = state.net, state.parsed.net_lines
    header = list(net.input)
    if net.input_dim and net.input_shape:
        raise state.err("gives both input_dim and input_shape", line=lines.get("input_shape"))
    declared: list[Shape | None]
    if net.input_dim:
        if len(net.input_dim) != 4 * len(header):
            raise state.err(f"{len(net.input_dim)} input_dim values for {len(header)} "
                            "input(s); expected 4 (N, C, H, W) per input",
                            line=lines.get("input_dim"))
        dims = list(net.input_dim)
        declared = [tuple(dims[4 * i:4 * i + 4]) for i in range(len(header))]
    elif net.input_shape:
        if len(net.input_shape) != len(header):
            raise state.err(f"{len(net.input_shape)} input_shape blocks for {len(header)} "
                            "input(s)", line=lines.get("input_shape"))
        declared = [tuple(int(d) for d in s.dim) for s in net.input_shape]
    else:
        declared = [None] * len(header)
    for name, shape in zip(header, declared):
        declare_input(state, name, shape)


def declare_input(state: BuildState, name: str, shape: Shape | None,
                  layer: SourceLayer | None = None, hint: list[int] | None = None) -> None:
    """Make blob `name` a graph input. `--input-shape` overrides the declared shape: by name, or
    unnamed for the first input; `hint` is an example shape for the error when there is none."""
    overrides, lines = state.overrides, state.parsed.net_lines
    key = name if name in overrides else (None if None in overrides and not state.inputs
                                          else name)
    if key in overrides:
        shape = tuple(overrides.pop(key))
    if shape is None:
        where = f' (for example --input-shape {",".join(map(str, hint))})' if hint else ""
        e = f'input "{name}" has no shape: give it with --input-shape N,C,H,W{where}'
        if layer is not None:
            raise state.err(e, layer)
        raise state.err(e, line=lines.get("input"))
    if not shape or any(d < 1 for d in shape):
        e = f'input "{name}" has a non-positive shape {list(shape)}'
        raise state.err(e, layer) if layer is not None else state.err(
            e, line=lines.get("input_dim") or lines.get("input"))
    value = new_value(state, name)
    state.inputs[value] = tuple(int(d) for d in shape)
    state.shapes[value] = state.inputs[value]


def resolve_bottoms(state: BuildState, la: SourceLayer) -> list[str]:
    """The values a layer reads: each bottom's latest version, which must exist and be an image."""
    values = []
    for b in la.message.bottom:
        value = state.latest.get(b)
        if value is None and b in _DIALECT_INPUT_ALIASES and len(state.inputs) == 1 and \
                next(iter(state.value_blob[v] for v in state.inputs)) in _DIALECT_INPUT_ALIASES:
            value = next(iter(state.inputs))
            state.latest[b] = value
            state.notes.append(f'bottom "{b}" of "{la.name}" read as the declared input '
                               f'"{state.value_blob[value]}" (the AutoMTL dialect\'s naming)')
        if value is None:
            earlier = {*state.latest, *(n for n, i in state.first_writer.items()
                                        if i < la.index)}
            close = difflib.get_close_matches(b, sorted(earlier), n=1)
            hint = f'; did you mean "{close[0]}"?' if close else ""
            raise state.err(f'bottom "{b}" is not produced by any earlier layer{hint}',
                            la, "bottom")
        if state.value_blob.get(value) is not None and value not in state.shapes:
            raise state.err(f'bottom "{b}" is a data layer\'s label, not an image', la, "bottom")
        values.append(value)
    return values

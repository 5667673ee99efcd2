"""Choose the network's outputs and drop what does not feed them, before any layer is checked.

A backbone has one output. By default it is the last layer's top (the last layer that is not a
loss, an accuracy or an input); `--feature-blob NAME` makes it the last write of NAME instead
(dense tasks need the trunk, not the classifier), and `--feature-blob A,B` keeps several (a
derived multi-task network's task blobs). Every other layer is dropped with a note: the layers
after the last output, and the branches that feed no output, such as a train/val file's
auxiliary classifiers or a pooling nobody reads. Caffe itself returns every blob no layer reads;
automtl does not, since one dead branch would otherwise change the network's output and its
parameter count (`docs/prototxt.md`).

`choose_outputs` decides this from the layers' blob names alone (a layer is needed when a later
needed layer reads one of its tops, the usual backward liveness), so the layers it drops are
never type- or field-checked: a file whose unsupported layers all come after the cut compiles.
Input and data layers are always kept; an input that feeds no output is removed after shapes
are known (`cut_at_feature`).
"""

from __future__ import annotations

import difflib

from automtl_cli.frontend.ops import get_kind
from automtl_cli.frontend.ops.base import Role
from automtl_cli.frontend.passes.state import BuildState, SourceLayer

__all__ = ["choose_outputs", "cut_at_feature", "requested_outputs"]

_SHOWN = 5  # dead branches named in the note


def requested_outputs(feature_blob: str | None) -> list[str] | None:
    """The blob names `--feature-blob` gives (comma-separated, in order, once each), or None."""
    if feature_blob is None:
        return None
    names = [n.strip() for n in feature_blob.split(",")]
    return list(dict.fromkeys(n for n in names if n)) or [feature_blob]


def _role(la: SourceLayer) -> Role | None:
    kind = get_kind(la.type)
    return None if kind is None else kind.role  # an unsupported type is refused if kept


def choose_outputs(state: BuildState) -> None:
    """Set `state.output_blobs` and keep only the layers they need (plus inputs)."""
    roles = [_role(la) for la in state.layers]
    state.dropped = [la.name for la, r in zip(state.layers, roles) if r is Role.DROP]
    layers = [la for la, r in zip(state.layers, roles) if r is not Role.DROP]
    is_input = [r in (Role.INPUT, Role.DATA) for r in roles if r is not Role.DROP]
    for la in layers:
        for top in la.message.top:
            state.first_writer.setdefault(top, la.index)
    names = requested_outputs(state.options.feature_blob)
    if names is None:
        ops = [i for i, inp in enumerate(is_input) if not inp]
        if not ops:  # nothing but inputs: `infer_shapes` says so
            state.layers = layers
            return
        end = ops[-1]
        names = list(dict.fromkeys(layers[end].message.top))
    else:
        end = max(_last_writer(state, layers, is_input, name) for name in names)
    state.output_blobs = names
    needed = set(names)
    keep = [False] * len(layers)
    for i in range(len(layers) - 1, -1, -1):
        tops = layers[i].message.top
        if is_input[i] or i == end or (i < end and needed.intersection(tops)):
            keep[i] = True
            needed.difference_update(tops)
            needed.update(layers[i].message.bottom)
    state.layers = [la for la, k in zip(layers, keep) if k]
    _note(state, layers, keep, is_input, end, names)


def _last_writer(state: BuildState, layers: list[SourceLayer], is_input: list[bool],
                 name: str) -> int:
    """Index of the last layer writing blob `name`; an input or an unknown name is an error."""
    for i in range(len(layers) - 1, -1, -1):
        if not is_input[i] and name in layers[i].message.top:
            return i
    inputs = set(state.net.input)
    for la, inp in zip(layers, is_input):
        if inp and la.message.top:
            inputs.update(la.message.top[:1] if _role(la) is Role.DATA else la.message.top)
    if name in inputs:
        raise state.err(f'--feature-blob "{name}" is the network input: no path from the '
                        "input through any layer to it")
    blobs = set(state.net.input) | {t for la in layers for t in la.message.top}
    close = difflib.get_close_matches(name, sorted(blobs), n=3)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    raise state.err(f'--feature-blob "{name}": no layer writes this blob{hint}')


def _note(state: BuildState, layers: list[SourceLayer], keep: list[bool], is_input: list[bool],
          end: int, names: list[str]) -> None:
    """Say what was dropped: the layers after the feature blob, and the dead branches by the
    layers that end them (a dropped layer no later dropped layer reads)."""
    after = sum(1 for inp in is_input[end + 1:] if not inp)
    dead = [i for i in range(end + 1) if not keep[i]]
    if not dead and not after:
        return
    kept = sum(1 for k, inp in zip(keep, is_input) if k and not inp)
    if state.options.feature_blob is not None:
        state.notes.append(
            f"kept {kept} layers up to the feature blob; removed {after + len(dead)} "
            f"({after} after it, {len(dead)} that do not feed it)")
        return
    read_later: set[str] = set()
    ends: list[SourceLayer] = []
    for i in reversed(dead):
        la = layers[i]
        if not read_later.intersection(la.message.top):
            ends.append(la)
        read_later.difference_update(la.message.top)
        read_later.update(la.message.bottom)
    ends.reverse()
    shown = ", ".join(f'"{la.message.top[0] if la.message.top else la.name}" (line '
                      f"{la.source.line})" for la in ends[:_SHOWN])
    more = f" and {len(ends) - _SHOWN} more" if len(ends) > _SHOWN else ""
    every = ",".join(dict.fromkeys([*(la.message.top[0] for la in ends if la.message.top),
                                    *names]))
    state.notes.append(
        f"the output is the last layer's top ({', '.join(names)}); dropped {len(dead)} layers "
        f"in {len(ends)} branches that feed no output, ending at {shown}{more}; keep them as "
        f"outputs with --feature-blob {every}")


def cut_at_feature(state: BuildState) -> None:
    """The outputs as SSA values (the last write of each output blob: `choose_outputs` dropped
    every layer after it), and the inputs that feed them; the others are removed."""
    state.outputs = [state.latest[name] for name in state.output_blobs]
    reached = set(state.outputs)
    for node in reversed(state.nodes):
        if reached.intersection(node.outputs):
            reached.update(node.inputs)
    if not reached.intersection(state.inputs):
        raise state.err("no path from any input to the feature blob")
    unused = [v for v in state.inputs if v not in reached]
    for v in unused:
        state.notes.append(f'input "{state.value_blob[v]}" does not feed the output; removed')
        del state.inputs[v]

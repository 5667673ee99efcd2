"""Choose the network's outputs and drop what does not feed them.

Dense tasks need the trunk, not the classifier: `--feature-blob NAME` makes the last write of
NAME the single output and cuts everything after it. Without it the outputs are Caffe's network
outputs, the blobs no layer reads. Layers and inputs that feed no output are removed.
"""

from __future__ import annotations

import difflib

from automtl_cli.frontend.passes.state import BuildState

__all__ = ["cut_at_feature"]


def cut_at_feature(state: BuildState) -> None:
    """Set `state.outputs` and prune to them."""
    state.outputs = _outputs(state)
    _prune(state)
    unused = [v for v in state.inputs if not any(v in n.inputs for n in state.nodes)]
    for v in unused:
        state.notes.append(f'input "{state.value_blob[v]}" does not feed the output; removed')
        del state.inputs[v]


def _outputs(state: BuildState) -> list[str]:
    """The feature blob's last version; by default every blob no layer reads (Caffe's
    network outputs): the last layer's for a backbone, one per task for a derived network."""
    nodes, value_blob = state.nodes, state.value_blob
    name = state.options.feature_blob
    if name is None:
        read = {v for n in nodes for v in n.inputs}
        sinks = [v for n in nodes for v in n.outputs if v not in read]
        if len(sinks) > 1:
            state.notes.append(f"{len(sinks)} output blobs: "
                               + ", ".join(value_blob[v] for v in sinks))
        return sinks
    for node in reversed(nodes):
        for v in node.outputs:
            if value_blob[v] == name:
                return [v]
    if name in state.latest and state.latest[name] in state.inputs:
        raise state.err(f'--feature-blob "{name}" is the network input: no path from the '
                        "input through any layer to it")
    close = difflib.get_close_matches(name, sorted(set(value_blob.values())), n=3)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    raise state.err(f'--feature-blob "{name}": no layer writes this blob{hint}')


def _prune(state: BuildState) -> None:
    """Keep the layers the outputs depend on."""
    nodes, outputs, inputs = state.nodes, state.outputs, state.inputs
    needed = set(outputs)
    kept = []
    for node in reversed(nodes):
        if needed.intersection(node.outputs):
            kept.append(node)
            needed.update(node.inputs)
    kept.reverse()
    if not needed.intersection(inputs):
        raise state.err("no path from any input to the feature blob")
    for out in outputs:
        if out in inputs:
            raise state.err(f'output "{out}" is an input: no path through any layer to it')
    removed = len(nodes) - len(kept)
    if removed:
        after = sum(1 for n in nodes[nodes.index(kept[-1]) + 1:])
        state.notes.append(
            f"kept {len(kept)} layers up to the feature blob; removed {removed} "
            f"({after} after it, {removed - after} that do not feed it)")
    state.nodes = kept
    state.source_layers -= removed

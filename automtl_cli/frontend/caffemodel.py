"""Caffe's trained weights: a binary `.caffemodel` (a `NetParameter` with blobs) → each node's state
dict, keyed as the node's own layer module's (`LayerKind.build`), as every front end gives them.

The file is read with the project's own schema, V2 `layer` and V1 `layers` alike, and its layers
are matched to the graph's nodes by name. A BatchNorm node folded from Caffe's pair takes its
statistics from the BatchNorm layer (mean, variance, and the moving-average factor they are
divided by; a factor of 0 means 0) and γ/β from the Scale after it. Blob shapes come from
`shape`, or from the legacy num/channels/height/width, which Caffe compares with leading 1s
dropped; every shape is checked against the layer's module, and a mismatch is refused naming the
file, the layer and both shapes.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch
from google.protobuf.message import DecodeError, Message

from automtl_cli.errors import BadInput, SourceError
from automtl_cli.frontend.build import read_bytes
from automtl_cli.frontend.ir import Graph, Node
from automtl_cli.frontend.ops import LAYER_KINDS
from automtl_cli.proto import automtl_pb2 as pb

__all__ = ["caffemodel_weights", "read_caffemodel"]

Weights = dict[str, dict[str, torch.Tensor]]


def read_caffemodel(path: str) -> dict[str, list[Message]]:
    """Layer name → its blobs, from a binary NetParameter (V2 `layer` or V1 `layers`)."""
    data = read_bytes(path, "a .caffemodel file")
    try:
        net = pb.NetParameter.FromString(data)
    except DecodeError as e:
        raise BadInput(f"{path}: not a binary Caffe NetParameter ({e})") from e
    layers = {}
    for layer in [*net.layers, *net.layer]:
        if layer.blobs:
            layers[layer.name] = list(layer.blobs)
    if not layers and (net.layer or net.layers):
        raise BadInput(f"{path}: its layers hold no weights (is this a prototxt saved as "
                       "binary?)")
    if not layers:
        raise BadInput(f"{path}: not a binary Caffe NetParameter (no layers)")
    return layers


def _blob_shape(blob: Message) -> tuple[int, ...]:
    if blob.HasField("shape"):
        return tuple(int(d) for d in blob.shape.dim)
    return tuple(int(getattr(blob, f)) for f in ("num", "channels", "height", "width"))


def _same_shape(blob: Message, want: tuple[int, ...]) -> bool:
    """Caffe's Blob::ShapeEquals: a legacy 4-D shape matches with leading 1s."""
    have = _blob_shape(blob)
    if blob.HasField("shape"):
        return have == want
    return len(want) <= 4 and have == (1,) * (4 - len(want)) + want


class _Reader:
    """One file's blobs, read into tensors of the shapes the layers' modules want."""

    def __init__(self, path: str, blobs: dict[str, list[Message]]) -> None:
        self.path, self.blobs = path, blobs

    def fail(self, node: Node, layer: str, message: str) -> SourceError:
        kind = node.type if layer == node.name else "Scale"
        return SourceError(message, file=self.path, layer=layer, layer_type=kind)

    def tensor(self, node: Node, layer: str, index: int, want: tuple[int, ...]) -> torch.Tensor:
        blobs = self.blobs[layer]
        if index >= len(blobs):
            raise self.fail(node, layer, f"has {len(blobs)} blob(s) in the caffemodel; the "
                                         f"layer needs blob {index} of shape {list(want)}")
        blob = blobs[index]
        if not _same_shape(blob, want):
            raise self.fail(node, layer, f"blob {index} has shape {list(_blob_shape(blob))} in "
                                         f"the caffemodel; the layer expects {list(want)}")
        values = blob.data if len(blob.data) else blob.double_data
        if len(values) != int(np.prod(want, dtype=np.int64)):
            raise self.fail(node, layer, f"blob {index} holds {len(values)} values for shape "
                                         f"{list(want)}")
        return torch.tensor(np.asarray(values, dtype=np.float32).reshape(want))


def _batchnorm(r: _Reader, node: Node, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    c = state["running_mean"].shape
    factor = float(r.tensor(node, node.name, 2, (1,))[0])
    scale = 0.0 if factor == 0 else 1.0 / factor
    out = {"running_mean": r.tensor(node, node.name, 0, tuple(c)) * scale,
           "running_var": r.tensor(node, node.name, 1, tuple(c)) * scale}
    if "weight" in state:  # γ/β: the folded Scale's, or an AutoMTL BatchNorm's own blobs 3, 4
        scales = [f for f in node.folded if f in r.blobs]
        layer, first = (scales[0], 0) if scales else (node.name, 3)
        if layer in r.blobs and len(r.blobs[layer]) > first:
            out["weight"] = r.tensor(node, layer, first, tuple(c))
            if "bias" in state:
                out["bias"] = r.tensor(node, layer, first + 1, tuple(c))
    return out


def _linear(r: _Reader, node: Node, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {"linear.weight": r.tensor(node, node.name, 0, tuple(state["linear.weight"].shape))}
    if "linear.bias" in state:
        out["linear.bias"] = r.tensor(node, node.name, 1, tuple(state["linear.bias"].shape))
    return out


def _in_order(r: _Reader, node: Node, state: dict[str, torch.Tensor],
              names: list[str]) -> dict[str, torch.Tensor]:
    """Caffe's blob order is the module's parameter order (weight, bias; PReLU's slope)."""
    return {key: r.tensor(node, node.name, i, tuple(state[key].shape))
            for i, key in enumerate(names)}


_SPECIAL: dict[str, Callable[[_Reader, Node, dict[str, torch.Tensor]],
                             dict[str, torch.Tensor]]] = {
    "BatchNorm": _batchnorm, "InnerProduct": _linear,
}


def caffemodel_weights(path: str, graph: Graph) -> tuple[Weights, list[str]]:
    """Each node's weights from the caffemodel at `path`, and notes for the user (the layers it
    has no weights for, which keep the seed's initialisation: those nodes are absent from the
    result, and a parameter the file lacks is absent from its node's dict)."""
    r = _Reader(path, read_caffemodel(path))
    shapes = graph.value_shapes()
    out: Weights = {}
    missing: list[str] = []
    for node in graph.nodes:
        if "shares" in node.attrs:
            continue
        module = LAYER_KINDS[node.type].build(node.attrs, [shapes[v] for v in node.inputs])
        state = module.state_dict()
        params = [k for k, _ in module.named_parameters()]
        if not state:
            continue
        if node.name not in r.blobs:
            missing.append(node.name)
            continue
        special = _SPECIAL.get(node.type)
        given = special(r, node, state) if special else _in_order(r, node, state, params)
        absent = [k for k in params if k not in given]
        if absent:
            missing.append(f"{node.name} ({', '.join(absent)})")
        # a parameter the file lacks is left out (the seed initialises it); buffers it has no
        # value for (num_batches_tracked) are the module's
        out[node.name] = {k: given.get(k, v) for k, v in state.items()
                          if k in given or k not in params}
    notes = []
    if missing:
        notes.append(f"{os.path.basename(path)} has no weights for {len(missing)} layer(s), "
                     f"which keep the seed's initialisation: {', '.join(missing)}")
    return out, notes

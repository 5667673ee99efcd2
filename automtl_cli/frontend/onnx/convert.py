"""An ONNX model → the front end's IR, with the initialisers as the nodes' weights.

The nodes that the outputs (or the `--feature` tensor) depend on are visited in file order (ONNX
keeps nodes topologically sorted). A node whose inputs are all known is folded (`fold.py`);
`Shape` of a tensor is known from the IR's own shapes, so reshape targets are computed at the
input size being compiled. Every other node is looked up in the op table (`table.py`) and becomes
an IR node whose shapes and parameters come from its layer kind, as a prototxt layer's do. Every
op outside the table is reported at once, one line each naming the node and its op type.

IR node names are the ONNX node names (the first output's name where a node has none), made
unique; each IR node writes one value named after it, and `Graph.blobs` maps every ONNX tensor
that holds a value to it, so `--feature` names an ONNX tensor.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from automtl_cli.errors import BadInput, SourceError
from automtl_cli.extras import require
from automtl_cli.frontend.ir import Graph, Node, Shape, unique_name
from automtl_cli.frontend.onnx.fold import FOLDERS, Unsupported, constant_of
from automtl_cli.frontend.onnx.table import (
    ONLY_PARAMETER,
    RULES,
    Alias,
    Layer,
    Pending,
    WeightOf,
)
from automtl_cli.frontend.ops import LAYER_KINDS, ShapeError
from automtl_cli.frontend.passes.rewrite import assign_depths

__all__ = ["onnx_graph"]

Weights = dict[str, dict[str, torch.Tensor]]


def _load(data: bytes, file: str) -> Any:
    onnx = require("onnx", "onnx", "reading an ONNX model")
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise BadInput(f"{file}: not an ONNX model ({e})") from e
    if not model.graph.node:
        raise BadInput(f"{file}: not an ONNX model (its graph has no nodes)")
    return model


def _opset(model: Any) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 1


def _initialisers(model: Any, onnx: Any, file: str) -> dict[str, np.ndarray]:
    out = {}
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            raise BadInput(f"{file}: initialiser {t.name!r} is stored in an external file; "
                           "save the model with its weights inside (onnx.save, "
                           "save_as_external_data=False)")
        out[t.name] = onnx.numpy_helper.to_array(t)
    return out


def _file_shape(value_info: Any) -> list[int | None]:
    dims = value_info.type.tensor_type.shape.dim
    return [int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in dims]


def _input_shape(file: str, name: str, dims: list[int | None],
                 overrides: Mapping[str | None, Shape]) -> Shape:
    """The file's input shape, a symbolic batch read as 1; `--input-shape` replaces it."""
    given = overrides.get(name, overrides.get(None))
    others = [k for k in overrides if k not in (None, name)]
    if others:
        raise BadInput(f"{file}: --input-shape names {others[0]!r}; the model's input is "
                       f"{name!r}")
    if given is not None:
        shape = tuple(int(d) for d in given)
        if len(shape) != 4:
            raise BadInput(f"{file}: --input-shape must be N,C,H,W, got {list(shape)}")
        if len(dims) == 4 and dims[1] is not None and dims[1] != shape[1]:
            raise BadInput(f"{file}: --input-shape gives {shape[1]} channels; the model's "
                           f"input {name!r} has {dims[1]}")
        return shape
    if len(dims) != 4:
        raise BadInput(f"{file}: input {name!r} has {len(dims)} axes; automtl compiles a trunk "
                       "with one N, C, H, W image input")
    if any(d is None for d in dims[1:]):
        shown = ",".join("?" if d is None else str(d) for d in dims)
        raise BadInput(f"{file}: input {name!r} has a symbolic shape [{shown}]; give one with "
                       "--input-shape N,C,H,W")
    return (dims[0] or 1, *dims[1:])


@dataclass
class _Builder:
    """The IR under construction, and what the op rules may ask of it (`table.Env`)."""

    file: str
    opset: int
    consts: dict[str, np.ndarray]
    consumers: dict[str, list[str]]  # tensor → the op types that read it
    outputs: set[str]
    initialisers: set[str]  # the file's initialisers, and Identity copies of them
    value: dict[str, str] = field(default_factory=dict)  # ONNX tensor → IR value
    shapes: dict[str, Shape] = field(default_factory=dict)  # IR value → shape
    pendings: dict[str, Pending] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)
    nodes: list[Node] = field(default_factory=list)
    by_value: dict[str, Node] = field(default_factory=dict)
    weights: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    owners: dict[tuple[Any, ...], str] = field(default_factory=dict)  # shared weights
    names: set[str] = field(default_factory=set)
    problems: list[SourceError] = field(default_factory=list)

    # -- what the rules ask
    def const(self, name: str) -> np.ndarray | None:
        return self.consts.get(name)

    def shape(self, name: str) -> Shape:
        if name in self.value:
            return self.shapes[self.value[name]]
        if name in self.pendings:
            return self.shapes[self.value[self.pendings[name].tensor]]
        raise Unsupported(f"its input {name!r} is not a tensor the network computes")

    def pending(self, name: str) -> Pending | None:
        return self.pendings.get(name)

    def folds_into(self, name: str) -> tuple[str, dict[str, Any]] | None:
        """The kind and attributes of the layer that writes `name`, when `name`'s one reader may
        become part of it (not a graph output, weights not shared)."""
        node = self.by_value.get(self.value.get(name, ""))
        if node is None or "shares" in node.attrs or len(self.consumers.get(name, [])) != 1 \
                or name in self.outputs:
            return None
        return node.type, dict(node.attrs)

    def consumer_ops(self, name: str) -> list[str]:
        return [] if name in self.outputs else list(self.consumers.get(name, []))

    def learned(self, name: str) -> bool:
        """An initialiser (a parameter of the exported module), not a constant the exporter
        wrote."""
        return name in self.initialisers

    # -- building
    def unique(self, name: str) -> str:
        return unique_name(name, self.names)

    def add(self, node: Any, onnx: Any) -> None:
        name = self.unique(node.name or (node.output[0] if node.output else node.op_type))
        op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        inputs = [i for i in node.input if i]
        if any(i in self.failed for i in inputs):  # an input was refused: reported there
            self.failed.update(node.output)
            return
        try:
            self._add(node, name, op, onnx)
        except Unsupported as e:
            self.problems.append(SourceError(str(e), file=self.file, layer=name,
                                             layer_type=op))
            self.failed.update(node.output)
        except ShapeError as e:
            self.problems.append(e.located(file=self.file, layer=name, layer_type=op))
            self.failed.update(node.output)
        except (KeyError, IndexError) as e:  # a required attribute or input is missing
            self.problems.append(SourceError(f"malformed node: {type(e).__name__} {e}",
                                             file=self.file, layer=name, layer_type=op))
            self.failed.update(node.output)

    def _add(self, node: Any, name: str, op: str, onnx: Any) -> None:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        inputs = [i for i in node.input if i]
        if op == "Constant":
            self.consts[node.output[0]] = constant_of(attrs, onnx)
            return
        if op == "Shape" and inputs[0] in self.value:
            shape = np.asarray(self.shapes[self.value[inputs[0]]], dtype=np.int64)
            start, end = attrs.get("start", 0), attrs.get("end")
            self.consts[node.output[0]] = shape[start:end]
            return
        if op in FOLDERS and inputs and all(i in self.consts for i in inputs):
            xs = [self.consts.get(i) if i else None for i in node.input]
            try:
                self.consts[node.output[0]] = np.asarray(FOLDERS[op](attrs, xs))
            except (ValueError, IndexError, TypeError, KeyError) as e:
                raise Unsupported(f"cannot compute this constant: {e}") from e
            if op == "Identity" and inputs[0] in self.initialisers:
                self.initialisers.add(node.output[0])
            return
        rule = RULES.get(op)
        if rule is None:
            raise Unsupported("no layer kind for this op (docs/onnx.md lists the supported "
                              "ones)")
        out = node.output[0]
        result = rule(self, node, attrs)
        mapped = result.outputs if isinstance(result, Layer) and result.outputs else [out]
        extra = [o for o in node.output if o and o not in mapped
                 and (self.consumers.get(o) or o in self.outputs)]
        if extra:
            raise Unsupported(f"its output {extra[0]!r} is used; only the first output of "
                              "this op is supported")
        if isinstance(result, Alias):
            self._alias(out, result.tensor)
        elif isinstance(result, Pending):
            self.pendings[out] = result
        elif isinstance(result, WeightOf):
            self._weight(out, result)
        else:
            self._layer(name, out, result)

    def _alias(self, out: str, tensor: str) -> None:
        if tensor in self.value:
            self.value[out] = self.value[tensor]
        elif tensor in self.pendings:
            self.pendings[out] = self.pendings[tensor]
        else:
            self.consts[out] = self.consts[tensor]

    def _weight(self, out: str, result: WeightOf) -> None:
        value = self.value[result.tensor]
        node = self.by_value[value]
        node.attrs[result.attr] = True
        in_shapes = [self.shapes[v] for v in node.inputs]
        node.params = int(LAYER_KINDS[node.type].count_params(node.attrs, in_shapes))
        self.weights.setdefault(node.name, {})[result.key] = result.value
        self.value[out] = value

    def _layer(self, name: str, out: str, layer: Layer) -> None:
        for t in layer.inputs:
            if t in self.pendings:
                p = self.pendings[t]
                then = {"pad": "a following Conv or AveragePool", "grouped": "a channel "
                        "shuffle", "shuffled": "a channel shuffle"}.get(p.kind, "the exact GELU")
                if p.kind.startswith("ln:"):
                    then = ("a LayerNorm written out (ReduceMean, Sub, Pow, ReduceMean, Add, "
                            "Sqrt, Div)")
                raise Unsupported(f"its input is the {p.op} of a pattern that only {then} "
                                  "completes")
            if t not in self.value:
                raise Unsupported(f"its input {t!r} is a constant; only the weights may be")
        kind = LAYER_KINDS[layer.type]
        inputs = [self.value[t] for t in layer.inputs]
        in_shapes = [self.shapes[v] for v in inputs]
        attrs = dict(layer.attrs)
        shapes = kind.infer(attrs, in_shapes)
        params = int(kind.count_params(attrs, in_shapes))
        key = (layer.type, layer.sources, repr(sorted(attrs.items())), tuple(in_shapes))
        owner = self.owners.setdefault(key, name) if layer.sources and params else name
        if owner != name:  # the same initialisers again: one set of weights, shared
            attrs["shares"], params = owner, 0
        elif layer.weights:
            self.weights[name] = dict(layer.weights)
        tensors = layer.outputs or [out]
        values = [name] if len(tensors) == 1 else [self.unique(f"{name}:{i}")
                                                     for i in range(len(tensors))]
        for value, shape in zip(values, shapes):
            self.shapes[value] = tuple(int(d) for d in shape)
        ir = Node(name, layer.type, inputs, values, attrs, 0,
                  shapes=[self.shapes[v] for v in values], params=params,
                  searchable=kind.searchable)
        self.nodes.append(ir)
        for value, tensor in zip(values, tensors):
            self.by_value[value] = ir
            if tensor:
                self.value[tensor] = value


def _refuse(problems: list[SourceError]) -> SourceError:
    """All unsupported ops in one error, one line each."""
    if len(problems) == 1:
        return problems[0]
    return SourceError(f"{len(problems)} unsupported ops:\n" + "\n".join(map(str, problems)))


def _needed(model: Any, outputs: list[str]) -> list[Any]:
    producer = {o: n for n in model.graph.node for o in n.output if o}
    needed: set[int] = set()
    stack = [producer[o] for o in outputs if o in producer]
    while stack:
        n = stack.pop()
        if id(n) not in needed:
            needed.add(id(n))
            stack.extend(producer[i] for i in n.input if i in producer)
    return [n for n in model.graph.node if id(n) in needed]


def _feature(model: Any, feature: str, file: str) -> str:
    """The tensor `feature` names, or the output of the last node inside the module path
    `feature` (torch's exporter names nodes by scope: `/layer1/layer1.0/conv1/Conv`)."""
    tensors = [o for n in model.graph.node for o in n.output if o]
    if feature in tensors:
        return feature
    inside = [n for n in model.graph.node if feature in n.name.split("/") and n.output]
    if inside:
        return inside[-1].output[0]
    scopes = sorted({s for n in model.graph.node for s in n.name.split("/")[:-1] if s})
    close = [t for t in (*scopes, *tensors) if feature in t][:3] or \
        difflib.get_close_matches(feature, [*scopes, *tensors], n=3)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    raise SourceError(f'--feature "{feature}": no tensor or module path of that name in the '
                      f"model{hint}", file=file)


def onnx_graph(data: bytes, *, file: str, input_shapes: Mapping[str | None, Shape],
               feature: str | None = None) -> tuple[Graph, Weights, list[str]]:
    """The model's IR, each node's weights (keyed as its layer kind's module's state dict), and
    notes for the user."""
    onnx = require("onnx", "onnx", "reading an ONNX model")
    model = _load(data, file)
    inits = _initialisers(model, onnx, file)
    outputs = [_feature(model, feature, file)] if feature else \
        [o.name for o in model.graph.output]
    nodes = _needed(model, outputs)
    used = {i for n in nodes for i in n.input if i} | set(outputs)
    real_inputs = [i for i in model.graph.input if i.name not in inits and i.name in used]
    if len(real_inputs) != 1:
        names = ", ".join(repr(i.name) for i in real_inputs) or "none"
        raise SourceError(f"the network reads {len(real_inputs)} inputs ({names}); automtl "
                          "compiles a trunk with one image input", file=file)
    (x,) = real_inputs
    shape = _input_shape(file, x.name, _file_shape(x), input_shapes)
    consumers: dict[str, list[str]] = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n.op_type)
    builder = _Builder(file, _opset(model), dict(inits), consumers, set(outputs),
                       set(inits))
    builder.names.add(x.name)
    builder.value[x.name] = x.name
    builder.shapes[x.name] = shape
    for n in nodes:
        builder.add(n, onnx)
    if builder.problems:
        raise _refuse(builder.problems)
    for o in outputs:
        if o not in builder.value or builder.value[o] == x.name:
            raise SourceError(f"output {o!r} is not a tensor the layers compute (a constant, "
                              "the input, or half of a pattern)", file=file)
    out_values = [builder.value[o] for o in outputs]
    inputs = {x.name: shape}
    assign_depths(inputs, builder.nodes)
    blobs = {t: v for t, v in builder.value.items()}
    name = os.path.splitext(os.path.basename(file))[0]  # exporters name every graph alike
    graph = Graph(name, file, "onnx", inputs, builder.nodes, out_values, blobs,
                  len(builder.nodes))
    graph.verify()
    weights = _node_weights(graph, builder.weights, file)
    notes = _notes(inits, nodes, feature)
    return graph, weights, notes


def _node_weights(graph: Graph, arrays: dict[str, dict[str, np.ndarray]], file: str) -> Weights:
    """The arrays as each node's state dict, every shape checked against the layer's own module;
    buffers the file has no value for (BatchNorm's `num_batches_tracked`) keep the module's."""
    shapes = graph.value_shapes()
    out: Weights = {}
    for node in graph.nodes:
        given = arrays.get(node.name)
        if not given:
            continue
        built = LAYER_KINDS[node.type].build(node.attrs, [shapes[v] for v in node.inputs])
        state = built.state_dict()
        if ONLY_PARAMETER in given:
            (key,) = [k for k, _ in built.named_parameters()]
            given = {key: given[ONLY_PARAMETER].reshape(state[key].shape)}
        result = {}
        for key, like in state.items():
            if key not in given:
                if key in dict(built.named_parameters()):
                    raise SourceError(f"the model gives no {key}", file=file, layer=node.name,
                                      layer_type=node.type)
                result[key] = like.clone()
                continue
            tensor = torch.from_numpy(np.array(given[key])).to(like.dtype)
            if tuple(tensor.shape) != tuple(like.shape):
                raise SourceError(f"{key} has shape {list(tensor.shape)} in the model, "
                                  f"{list(like.shape)} in the layer", file=file,
                                  layer=node.name, layer_type=node.type)
            result[key] = tensor
        out[node.name] = result
    return out


def _notes(inits: dict[str, np.ndarray], nodes: list[Any], feature: str | None) -> list[str]:
    read = {i for n in nodes for i in n.input}
    unused = sum(int(a.size) for k, a in inits.items() if k not in read
                 and np.issubdtype(a.dtype, np.floating))
    if not unused:
        return []
    total = sum(int(a.size) for a in inits.values() if np.issubdtype(a.dtype, np.floating))
    why = f"after --feature {feature} or unused" if feature else "unused"
    return [f"{unused:,} of the model's {total:,} initialiser values are {why}"]

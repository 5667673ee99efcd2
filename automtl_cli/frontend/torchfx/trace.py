"""An `nn.Module` → the front end's IR, through `torch.fx`.

The module is traced symbolically (`torch.fx.Tracer`, stack traces recorded, so every fx node
knows the line of the user's code that made it); `--feature` cuts the fx graph before anything is
looked up, so a classifier after the cut may hold any op; one forward pass at batch size 1 over
the kept nodes gives torch's own shapes (fx's `ShapeProp`, run on the kept nodes only); each node
is then looked up in the op table (`table.py`) and becomes an IR node whose shapes and parameters
come from its layer kind, as a prototxt layer's do, and are checked against torch's. Every op
outside the table is reported at once, one line each: file:line, the module path, the op.

IR node names are module paths (`layer1.0.conv1`); a function call is named after the module
that makes it (`layer1.0.add`), and a module called again is `path#1`, sharing the first call's
weights (`attrs["shares"]`, as Caffe's `param { name }`).
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from automtl_cli.errors import SourceError
from automtl_cli.frontend.ir import Graph, Node, Shape
from automtl_cli.frontend.ops import LAYER_KINDS, ShapeError
from automtl_cli.frontend.passes.rewrite import assign_depths
from automtl_cli.frontend.torchfx.table import Layer, Unsupported, map_node, op_name

__all__ = ["node_weights", "trace_module"]

log = logging.getLogger(__name__)

_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+)')
# torch's frames and ours are not where the model calls an op
_NOT_USER_DIRS = (os.path.dirname(torch.__file__) + os.sep,
                  os.path.dirname(os.path.dirname(os.path.dirname(__file__))) + os.sep)


def _user_frame(frames: list[tuple[str, int]]) -> tuple[str | None, int | None]:
    """The innermost frame outside torch and automtl: where the model's code made the op (the
    file relative to the working directory when it is below it, as a user would type it)."""
    for file, line in reversed(frames):
        if not file.startswith(_NOT_USER_DIRS) and not file.startswith("<"):
            return _shown(file), line
    return None, None


def _shown(file: str) -> str:
    relative = os.path.relpath(os.path.abspath(file))
    return file if relative.startswith(os.pardir) else relative


def _node_place(node: fx.Node) -> tuple[str | None, int | None]:
    text = node.stack_trace or ""
    return _user_frame([(m["file"], int(m["line"])) for m in _FRAME.finditer(text)])


class _PathTracer(fx.Tracer):
    """fx's tracer, recording stack traces and the module path being traced (for errors)."""

    def __init__(self) -> None:
        super().__init__()
        self.record_stack_traces = True
        self.paths: list[str] = []

    def call_module(self, m: nn.Module, forward: Callable, args: tuple, kwargs: dict) -> Any:
        self.paths.append(self.path_of_module(m))
        try:
            return super().call_module(m, forward, args, kwargs)
        finally:
            self.paths.pop()


def _trace(module: nn.Module, where: str) -> fx.GraphModule:
    tracer = _PathTracer()
    try:
        graph = tracer.trace(module)
    except Exception as e:  # the model's code cannot be traced: control flow on a value, ...
        frames = [(f.filename, f.lineno) for f in traceback.extract_tb(e.__traceback__)]
        file, line = _user_frame(frames)
        path = tracer.paths[-1] if tracer.paths else "(root)"
        raise SourceError(f"torch.fx cannot trace this: {e}", file=file or where, line=line,
                          layer=path or "(root)", layer_type="trace") from e
    return fx.GraphModule(tracer.root, graph)


def _needed(gm: fx.GraphModule, feature: fx.Node | None) -> tuple[set[fx.Node], list[fx.Node]]:
    """The nodes the outputs depend on, and the outputs: the feature's, or the module's."""
    if feature is not None:
        outputs = [feature]
    else:
        out = next(n for n in gm.graph.nodes if n.op == "output").args[0]
        outputs = list(out) if isinstance(out, (tuple, list)) else [out]
    needed: set[fx.Node] = set()
    stack = [o for o in outputs if isinstance(o, fx.Node)]
    while stack:
        n = stack.pop()
        if n not in needed:
            needed.add(n)
            stack.extend(n.all_input_nodes)
    return needed, outputs


def _scopes(node: fx.Node) -> list[str]:
    stack = node.meta.get("nn_module_stack") or {}
    return [path for path, _ in stack.values()] if isinstance(stack, dict) else []


def _find_feature(gm: fx.GraphModule, name: str, where: str) -> fx.Node:
    """The last node made inside module path `name` (its output, for a sequence of layers)."""
    found = None
    for n in gm.graph.nodes:
        if n.op in ("call_module", "call_function", "call_method") and (
                n.target == name or name in _scopes(n)):
            found = n
    if found is None:
        paths = sorted({p for n in gm.graph.nodes for p in _scopes(n)})
        close = difflib.get_close_matches(name, paths, n=3)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        raise SourceError(f'--feature "{name}": no module of that path is called{hint}',
                          file=where)
    return found


class _Shapes(fx.Interpreter):
    """fx's ShapeProp on the kept nodes only: what torch computes, node by node."""

    def __init__(self, gm: fx.GraphModule, needed: set[fx.Node]) -> None:
        super().__init__(gm)
        self.needed, self.shapes = needed, {}

    def run_node(self, n: fx.Node) -> Any:
        if n not in self.needed:
            return None
        try:
            result = super().run_node(n)
        except Exception as e:
            file, line = _node_place(n)
            raise SourceError(f"the forward pass fails at this input shape: {e}", file=file,
                              line=line, layer=n.name, layer_type=n.op) from e
        if isinstance(result, torch.Tensor):
            self.shapes[n] = tuple(result.shape)
        return result


def _torch_shapes(gm: fx.GraphModule, needed: set[fx.Node], shape: Shape) -> dict[fx.Node, Shape]:
    example = torch.randn((1, *shape[1:]), generator=torch.Generator().manual_seed(0))
    training = [(m, m.training) for m in gm.modules()]
    gm.eval()
    try:
        with torch.no_grad():
            prop = _Shapes(gm, needed)
            prop.run(example)
    finally:
        for m, mode in training:
            m.train(mode)
    return prop.shapes


@dataclass
class _Builder:
    """The IR under construction: fx nodes → SSA values, names, shapes."""

    gm: fx.GraphModule
    file: str
    torch_shapes: dict[fx.Node, Shape]
    value: dict[fx.Node, str] = field(default_factory=dict)
    shapes: dict[str, Shape] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)
    names: set[str] = field(default_factory=set)
    calls: dict[str, str] = field(default_factory=dict)  # module path → its first node's name
    problems: list[SourceError] = field(default_factory=list)

    def unique(self, name: str) -> str:
        base, k = name, 0
        while name in self.names:
            k += 1
            name = f"{base}#{k}"
        self.names.add(name)
        return name

    def name_of(self, n: fx.Node) -> str:
        if n.op == "call_module":
            return self.unique(str(n.target))
        scopes = _scopes(n)
        return self.unique(f"{scopes[-1]}.{n.name}" if scopes else n.name)

    def line_of(self, n: fx.Node) -> int:
        file, line = _node_place(n)
        return line if file == _shown(self.file) and line else 0

    def add(self, n: fx.Node) -> None:
        module = self.gm.get_submodule(n.target) if n.op == "call_module" else None
        first = n.all_input_nodes[0] if n.all_input_nodes else None
        rank = len(self.torch_shapes.get(first, ())) if first is not None else 0
        try:
            mapped = map_node(n, module, rank)
        except Unsupported as e:
            file, line = _node_place(n)
            self.problems.append(SourceError(str(e), file=file, line=line,
                                             layer=self.name_of(n),
                                             layer_type=op_name(n, module)))
            return
        inputs = [mapped] if isinstance(mapped, fx.Node) else mapped.inputs
        if any(i not in self.value for i in inputs):  # an input was refused: reported there
            return
        if isinstance(mapped, fx.Node):  # passes its input through
            self.value[n] = self.value[mapped]
            return
        self.value[n] = self._layer(n, mapped, module)

    def _layer(self, n: fx.Node, layer: Layer, module: nn.Module | None) -> str:
        name = self.name_of(n)
        kind = LAYER_KINDS[layer.type]
        inputs = [self.value[i] for i in layer.inputs]
        in_shapes = [self.shapes[v] for v in inputs]
        attrs = dict(layer.attrs)
        try:
            (shape,) = kind.infer(attrs, in_shapes)
            params = kind.count_params(attrs, in_shapes)
        except ShapeError as e:
            raise e.located(file=_shown(self.file), line=self.line_of(n), layer=name,
                            layer_type=op_name(n, module)) from None
        want = self.torch_shapes.get(n)
        if want is None or tuple(want[1:]) != tuple(shape[1:]):
            raise SourceError(f"{layer.type}'s shape rule gives {list(shape)} where torch "
                              f"computes {list(want) if want else 'no tensor'} (at batch 1)",
                              file=_shown(self.file), line=self.line_of(n), layer=name,
                              layer_type=op_name(n, module))
        if n.op == "call_module" and params:
            owner = self.calls.setdefault(str(n.target), name)
            if owner != name:  # the same module called again: its weights, once
                attrs["shares"], params = owner, 0
        self.shapes[name] = tuple(int(d) for d in shape)
        self.nodes.append(Node(name, layer.type, inputs, [name], attrs, self.line_of(n),
                               shapes=[self.shapes[name]], params=int(params),
                               searchable=kind.searchable))
        return name


def _refuse(problems: list[SourceError]) -> SourceError:
    """All unsupported ops in one error, one line each (each line names its own place)."""
    if len(problems) == 1:
        return problems[0]
    return SourceError(f"{len(problems)} unsupported ops:\n" + "\n".join(map(str, problems)))


def trace_module(module: nn.Module, input_shape: Shape, *, file: str, name: str,
                 feature: str | None = None) -> tuple[Graph, list[str]]:
    """The module's IR at `input_shape` (N, C, H, W), and notes for the user."""
    gm = _trace(module, file)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise SourceError(f"forward takes {len(placeholders)} inputs; automtl compiles a "
                          "trunk with one image input", file=file)
    feature_node = _find_feature(gm, feature, file) if feature else None
    needed, outputs = _needed(gm, feature_node)
    builder = _Builder(gm, file, _torch_shapes(gm, needed, input_shape))
    (x,) = placeholders
    builder.value[x] = builder.unique(x.name)
    builder.shapes[x.name] = tuple(input_shape)
    for n in gm.graph.nodes:
        if n in needed and n.op not in ("placeholder", "output"):
            builder.add(n)
    if builder.problems:
        raise _refuse(builder.problems)
    if not all(isinstance(o, fx.Node) for o in outputs):
        raise SourceError("forward must return a tensor or a tuple of tensors", file=file)
    out_values = [builder.value[o] for o in outputs]
    if any(v == x.name for v in out_values) or not builder.nodes:
        raise SourceError("no layer between the input and the output", file=file)
    notes = _notes(module, builder.nodes, feature)
    inputs = {x.name: builder.shapes[x.name]}
    assign_depths(inputs, builder.nodes)
    blobs = {v: v for v in builder.shapes}
    graph = Graph(name, file, "torch", inputs, builder.nodes, out_values, blobs,
                  len(builder.nodes))
    graph.verify()
    return graph, notes


def _notes(module: nn.Module, nodes: list[Node], feature: str | None) -> list[str]:
    total = sum(p.numel() for p in module.parameters())
    used = sum(n.params for n in nodes)
    if total == used:
        return []
    why = f"after --feature {feature} or unused" if feature else "unused by forward"
    return [f"{total - used:,} of the module's {total:,} parameters are {why}"]


def node_weights(graph: Graph, module: nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    """Each IR node's weights from the module it was traced from, keyed as the state dict of the
    node's own torch module (`LayerKind.build`): `weight`, `linear.weight`, `running_mean`, ...

    A traced node is named after its module's path, and the op's module holds the same tensors
    under the same last names; shapes are checked, so a mismatch fails here, not in training.
    """
    shapes = graph.value_shapes()
    out: dict[str, dict[str, torch.Tensor]] = {}
    for node in graph.nodes:
        if "shares" in node.attrs:
            continue
        built = LAYER_KINDS[node.type].build(node.attrs, [shapes[v] for v in node.inputs])
        keys = built.state_dict()
        if not keys:
            continue
        source = module.get_submodule(node.name).state_dict()
        state = {}
        for key, like in keys.items():
            tensor = source[key.rsplit(".", 1)[-1]]
            if tensor.shape != like.shape:
                raise ValueError(f"{node.name}.{key}: {list(tensor.shape)} in the module, "
                                 f"{list(like.shape)} in the layer")
            state[key] = tensor.detach().clone()
        out[node.name] = state
    return out

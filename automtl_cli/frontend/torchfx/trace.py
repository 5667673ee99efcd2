"""An `nn.Module` → the front end's IR, through `torch.fx`.

The module is traced symbolically in eval mode (`torch.fx.Tracer`, stack traces recorded, so
every fx node knows the line of the user's code that made it; `self.training` branches take their
eval path); `--feature` cuts the fx graph before anything is looked up, so a classifier after the
cut may hold any op; forward passes at batch sizes 1 and 2 over the kept nodes give torch's own
shapes and the values of the model's shape arithmetic (`x.size(0)` is the batch, `c // 2` a
constant); parameters read by functions (`x * self.gamma`, `F.layer_norm(x, ..., self.weight)`)
become the weights of the layer that reads them; each node is then looked up in the op table
(`table.py`) and becomes an IR node whose shapes and parameters come from its layer kind, as a
prototxt layer's do, and are checked against torch's. Every op outside the table is reported at
once, one line each: file:line, the module path, the op.

IR node names are module paths (`layer1.0.conv1`); a function call is named after the module
that makes it (`layer1.0.add`), and a module called again is `path#1`, sharing the first call's
weights (`attrs["shares"]`, as Caffe's `param { name }`).
"""

from __future__ import annotations

import difflib
import logging
import operator
import os
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from automtl_cli.errors import SourceError
from automtl_cli.frontend.ir import Graph, Node, Shape, unique_name
from automtl_cli.frontend.ops import LAYER_KINDS, ShapeError
from automtl_cli.frontend.passes.rewrite import assign_depths
from automtl_cli.frontend.torchfx.table import Ctx, Layer, Unsupported, map_node, op_name

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
        self.failed_in: str | None = None  # the innermost module a tracing error came from

    def call_module(self, m: nn.Module, forward: Callable, args: tuple, kwargs: dict) -> Any:
        self.paths.append(self.path_of_module(m))
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:
                self.failed_in = self.paths[-1]
            raise
        finally:
            self.paths.pop()


def _trace(module: nn.Module, where: str) -> fx.GraphModule:
    """The module's fx graph, traced in eval mode: the IR is the network a forward pass in eval
    mode computes, so Python branches on `self.training` (stochastic depth, drop path) take
    their eval path, the identity. Dropout modules and `F.dropout` stay Dropout layers."""
    tracer = _PathTracer()
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        graph = tracer.trace(module)
    except Exception as e:  # the model's code cannot be traced: control flow on a value, ...
        frames = [(f.filename, f.lineno) for f in traceback.extract_tb(e.__traceback__)]
        file, line = _user_frame(frames)
        path = tracer.failed_in or "(root)"
        raise SourceError(f"torch.fx cannot trace this: {e}", file=file or where, line=line,
                          layer=path or "(root)", layer_type="trace") from e
    finally:
        for m, mode in modes:
            m.train(mode)
    return fx.GraphModule(tracer.root, graph)


def _needed(gm: fx.GraphModule, feature: fx.Node | None) -> tuple[set[fx.Node], list[fx.Node]]:
    """The nodes the outputs depend on, and the outputs: the feature's, or the module's."""
    if feature is not None:
        outputs = [feature]
    else:
        out = next(n for n in gm.graph.nodes if n.op == "output").args[0]
        if isinstance(out, dict):  # torchvision's segmentation models: {"out": ..., "aux": ...}
            out = list(out.values())
        outputs = list(out) if isinstance(out, (tuple, list)) else [out]
    needed: set[fx.Node] = set()
    stack = [o for o in outputs if isinstance(o, fx.Node)]
    while stack:
        n = stack.pop()
        if n not in needed:
            needed.add(n)
            stack.extend(n.all_input_nodes)
    return needed, outputs


def _alias_in_place(gm: fx.GraphModule) -> None:
    """After an in-place op (`x.add_(y)`, `x += y`, `inplace=True`), the ops that read `x` read
    the changed tensor, which is the op's result: point them at it. The IR has no in-place
    layers, so without this a later read of `x` would see it unchanged (and `z.add_(1);
    return z` would lose the add)."""
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    for n in list(gm.graph.nodes):
        x = n.args[0] if n.args else None
        module = gm.get_submodule(n.target) if n.op == "call_module" else None
        if not isinstance(x, fx.Node) or not _in_place(n, module) or not _tensor_valued(x):
            continue
        for u in list(x.users):
            if u is not n and order[u] > order[n]:
                u.replace_input_with(x, n)


def _tensor_valued(n: fx.Node) -> bool:
    """Whether a node gives tensors (not a size or an int, which `+=` rebinds, not changes),
    judged from its op before anything runs."""
    if n.op == "call_method":
        return n.target not in ("size", "dim", "numel", "item", "tolist")
    if n.op == "call_function":
        if n.target is getattr:
            return False
        if n.target in _ARITHMETIC:
            return any(_tensor_valued(i) for i in n.all_input_nodes)
    return True


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
    """fx's ShapeProp on the kept nodes only: what torch computes, node by node: a tensor's
    shape, the shapes of a tuple of tensors (`x.chunk(2, 1)`), or a plain value (`x.size(0)`)."""

    def __init__(self, gm: fx.GraphModule, needed: set[fx.Node]) -> None:
        super().__init__(gm)
        self.needed = needed
        self.shapes: dict[fx.Node, Shape | list[Shape]] = {}
        self.values: dict[fx.Node, Any] = {}

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
        elif isinstance(result, (tuple, list)) and result and all(
                isinstance(r, torch.Tensor) for r in result):
            self.shapes[n] = [tuple(r.shape) for r in result]
        else:
            self.values[n] = result
        return result


@dataclass
class _Forward:
    """Two forward passes, at batch 1 and 2: shapes and values, and which depend on the batch."""

    shapes: dict[fx.Node, Shape | list[Shape]]
    shapes2: dict[fx.Node, Shape | list[Shape]]
    values: dict[fx.Node, Any]
    values2: dict[fx.Node, Any]

    def batch_kept(self, n: fx.Node) -> bool:
        one, two = self.shapes.get(n), self.shapes2.get(n)
        ones = one if isinstance(one, list) else [one]
        twos = two if isinstance(two, list) else [two]
        return all(a is not None and b is not None and len(a) > 0 and a[0] == 1 and b[0] == 2
                   and tuple(a[1:]) == tuple(b[1:]) for a, b in zip(ones, twos))


def _torch_forward(gm: fx.GraphModule, needed: set[fx.Node], shape: Shape) -> _Forward:
    runs = []
    training = [(m, m.training) for m in gm.modules()]
    gm.eval()
    try:
        for batch in (1, 2):
            example = torch.randn((batch, *shape[1:]),
                                  generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                prop = _Shapes(gm, needed)
                prop.run(example)
            runs.append(prop)
    finally:
        for m, mode in training:
            m.train(mode)
    return _Forward(runs[0].shapes, runs[1].shapes, runs[0].values, runs[1].values)


class _Batch:
    """The batch size, as a value a model computes (`x.size(0)`): not a constant."""

    def __repr__(self) -> str:
        return "the batch size"


BATCH = _Batch()
_SHAPE_METHODS = ("size", "dim")
_SHAPE_ATTRS = ("shape", "ndim", "dtype", "device")
_INPLACE = (operator.iadd, operator.isub, operator.imul, operator.itruediv)
_ARITHMETIC = (operator.getitem, operator.add, operator.sub, operator.mul, operator.floordiv,
               operator.truediv, operator.mod, operator.neg, int, len)
# ops that give a parameter another shape, for a scale or bias (`self.gamma.view(1, -1, 1, 1)`)
_PARAM_VIEWS = ("view", "reshape", "unsqueeze", "squeeze", "flatten")


def _same_at_both(a: Any, b: Any) -> Any:
    """A value from the batch-1 and batch-2 passes: itself when they agree, BATCH where it is
    the batch size."""
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)) and len(a) == len(b):
        return type(a)(_same_at_both(x, y) for x, y in zip(a, b)) if not isinstance(
            a, torch.Size) else tuple(_same_at_both(x, y) for x, y in zip(a, b))
    if a == b:
        return a
    if (a, b) == (1, 2):
        return BATCH
    raise Unsupported(f"a value that depends on the batch size ({a!r} at batch 1, {b!r} at 2)")


@dataclass
class _Builder:
    """The IR under construction: fx nodes → SSA values, names, shapes."""

    gm: fx.GraphModule
    file: str
    forward: _Forward
    value: dict[fx.Node, str | list[str]] = field(default_factory=dict)
    params: dict[fx.Node, str] = field(default_factory=dict)  # parameter (views) → its name
    static: dict[fx.Node, Any] = field(default_factory=dict)
    fused: dict[fx.Node, Layer] = field(default_factory=dict)
    skipped: set[fx.Node] = field(default_factory=set)
    shapes: dict[str, Shape] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)
    names: set[str] = field(default_factory=set)
    calls: dict[str, str] = field(default_factory=dict)  # module path → its first node's name
    param_users: dict[str, str] = field(default_factory=dict)  # parameter → the node using it
    problems: list[SourceError] = field(default_factory=list)

    @property
    def torch_shapes(self) -> dict[fx.Node, Shape | list[Shape]]:
        return self.forward.shapes

    def unique(self, name: str) -> str:
        return unique_name(name, self.names)

    def name_of(self, n: fx.Node) -> str:
        if n.op == "call_module":
            return self.unique(str(n.target))
        scopes = _scopes(n)
        return self.unique(f"{scopes[-1]}.{n.name}" if scopes else n.name)

    def line_of(self, n: fx.Node) -> int:
        file, line = _node_place(n)
        return line if file == _shown(self.file) and line else 0

    def shape_of(self, n: fx.Node) -> Shape | None:
        s = self.torch_shapes.get(n)
        return s if isinstance(s, tuple) else None

    def resolve(self, a: Any) -> Any:
        """An argument's value: constants as they are, shape arithmetic evaluated."""
        if isinstance(a, (list, tuple)):
            return type(a)(self.resolve(x) for x in a)
        if isinstance(a, dict):
            return {k: self.resolve(v) for k, v in a.items()}
        if not isinstance(a, fx.Node):
            return a
        if a not in self.static:
            raise Unsupported(f"a tensor ({a.name}) where a constant is expected")
        v = self.static[a]
        if v is BATCH or (isinstance(v, (list, tuple)) and BATCH in v):
            raise Unsupported(f"{a.name} is (or holds) the batch size, which the layer cannot "
                              "take as a constant")
        return v

    def ctx(self, n: fx.Node) -> Ctx:
        return Ctx(n, self.shape_of, self.torch_shapes.get(n), self.forward.batch_kept(n),
                   self.resolve, self.params.get)

    def _static_value(self, n: fx.Node) -> bool:
        """Record a shape computation's value (`x.size(0)`, `c // groups`); False when the node
        is not one."""
        if n in self.torch_shapes:
            return False
        ins = n.all_input_nodes
        shape_of_tensor = (n.op == "call_method" and n.target in _SHAPE_METHODS) or (
            n.op == "call_function" and n.target is getattr and n.args[1] in _SHAPE_ATTRS)
        arithmetic = n.op == "call_function" and n.target in _ARITHMETIC and all(
            i in self.static for i in ins)
        if not (shape_of_tensor or arithmetic):
            return False
        self.static[n] = _same_at_both(self.forward.values.get(n), self.forward.values2.get(n))
        return True

    def _param(self, n: fx.Node) -> bool:
        """A parameter of the module (`get_attr`), or a view of one, to be a layer's weight."""
        if n.op == "get_attr":
            owner, _, attr = str(n.target).rpartition(".")
            tensor = getattr(self.gm.get_submodule(owner), attr)
            if not isinstance(tensor, nn.Parameter):
                raise Unsupported(f"{n.target} is a buffer or constant, not a parameter (only "
                                  "parameters become a layer's weights)")
            self.params[n] = str(n.target)
            return True
        first = n.args[0] if n.args else None
        if n.op == "call_method" and n.target in _PARAM_VIEWS and first in self.params:
            self.params[n] = self.params[first]
            return True
        return False

    def add(self, n: fx.Node) -> None:
        module = self.gm.get_submodule(n.target) if n.op == "call_module" else None
        try:
            if n in self.skipped or self._param(n) or self._static_value(n):
                return
            if n.op == "call_function" and n.target is operator.getitem and isinstance(
                    self.torch_shapes.get(n.args[0]), list):  # one top of a Slice, a Pooling
                if isinstance(self.value.get(n.args[0]), list):
                    self.value[n] = self.value[n.args[0]][n.args[1]]
                return  # else the layer was refused: reported there
            if n not in self.torch_shapes:
                raise Unsupported("an op that gives no tensor (a value from a tensor's "
                                  "contents, or a Python object) has no layer")
            mapped = self.fused.get(n) or map_node(n, module, self.ctx(n))
            inputs = [mapped] if isinstance(mapped, fx.Node) else list(mapped.inputs)
            used = [i for i in inputs if i in self.params or i in self.static]
            if used:
                raise Unsupported(f"{used[0].name} (a parameter or a constant) as a tensor "
                                  "operand has no layer form")
        except Unsupported as e:
            file, line = _node_place(n)
            self.problems.append(SourceError(str(e), file=file, line=line,
                                             layer=self.name_of(n),
                                             layer_type=op_name(n, module)))
            return
        if any(i not in self.value for i in inputs):  # an input was refused: reported there
            return
        if isinstance(mapped, fx.Node):  # passes its input through
            self.value[n] = self.value[mapped]
            return
        value = self._layer(n, mapped, module)
        self.value[n] = value[mapped.take] if mapped.take is not None else value

    def _layer(self, n: fx.Node, layer: Layer, module: nn.Module | None) -> str | list[str]:
        name = self.name_of(n)
        kind = LAYER_KINDS[layer.type]
        inputs = [self.value[i] for i in layer.inputs]
        in_shapes = [self.shapes[v] for v in inputs]
        attrs = dict(layer.attrs)
        try:
            out_shapes = kind.infer(attrs, in_shapes)
            params = kind.count_params(attrs, in_shapes)
        except ShapeError as e:
            raise e.located(file=_shown(self.file), line=self.line_of(n), layer=name,
                            layer_type=op_name(n, module)) from None
        want = self.torch_shapes.get(n)
        wants = want if isinstance(want, list) else [want] if want is not None else []
        given = out_shapes if layer.take is None else out_shapes[layer.take:layer.take + 1]
        if len(wants) != len(given) or any(
                tuple(w[1:]) != tuple(s[1:]) for w, s in zip(wants, given)):
            raise SourceError(f"{layer.type}'s shape rule gives "
                              f"{' '.join(str(list(s)) for s in out_shapes)} where torch "
                              f"computes {want if want else 'no tensor'} (at batch 1)",
                              file=_shown(self.file), line=self.line_of(n), layer=name,
                              layer_type=op_name(n, module))
        if n.op == "call_module" and params:
            owner = self.calls.setdefault(str(n.target), name)
            if owner != name:  # the same module called again: its weights, once
                attrs["shares"], params = owner, 0
        if layer.weights:
            attrs["weights_from"] = dict(layer.weights)
            owners = {self.param_users.setdefault(t, name) for t in layer.weights.values()}
            if owners != {name}:  # a parameter used again: shared, as a module called again
                if len(owners) != 1:
                    raise SourceError("parameters of two different layers used by one op",
                                      file=_shown(self.file), line=self.line_of(n),
                                      layer=name, layer_type=op_name(n, module))
                attrs["shares"], params = owners.pop(), 0
        outputs = [name] if len(out_shapes) == 1 else [f"{name}:{i}"
                                                       for i in range(len(out_shapes))]
        for v, s in zip(outputs, out_shapes):
            self.shapes[v] = tuple(int(d) for d in s)
        self.nodes.append(Node(name, layer.type, inputs, outputs, attrs, self.line_of(n),
                               shapes=[self.shapes[v] for v in outputs], params=int(params),
                               searchable=kind.searchable))
        return outputs[0] if len(outputs) == 1 else outputs

    def fuse_channel_shuffles(self, needed: set[fx.Node]) -> None:
        """ShuffleNet's `channel_shuffle` (view `[N, g, C/g, H, W]`, transpose(1, 2),
        contiguous, view `[N, C, H, W]`) becomes one ShuffleChannel layer."""
        users = {n: [u for u in n.users if u in needed] for n in needed}
        for last in needed:
            chain = [last]
            x = last.args[0] if last.args and isinstance(last.args[0], fx.Node) else None
            while x is not None and x.op == "call_method" and x.target == "contiguous":
                chain.append(x)
                x = x.args[0]
            swap, view = x, x.args[0] if isinstance(x, fx.Node) and x.args else None
            if not (isinstance(view, fx.Node) and view.args
                    and isinstance(view.args[0], fx.Node)):
                continue
            source = view.args[0]
            if not all(_reshape_like(m) for m in (last, view)) or not _swaps_1_2(swap):
                continue
            s, v, t, out = (self.shape_of(m) for m in (source, view, swap, last))
            if None in (s, v, t, out) or len(s) != 4 or out != s or len(v) != 5:
                continue
            g, k = v[1], v[2]
            if (v[0], g * k, *v[3:]) != s or t != (s[0], k, g, *s[2:]):
                continue
            inner = [view, swap, *chain[1:]]
            if any(len(users[m]) != 1 for m in inner) or not all(
                    self.forward.batch_kept(m) for m in (view, last)):
                continue
            self.fused[last] = Layer("ShuffleChannel", {"group": int(g)}, (source,))
            self.skipped.update(inner)


def _in_place(n: fx.Node, module: nn.Module | None) -> bool:
    """`x.add_(y)`, `x += y`, `F.relu(x, inplace=True)`, `nn.ReLU(inplace=True)`: the op
    writes its first input."""
    return (n.op == "call_method" and str(n.target).endswith("_")
            and not str(n.target).startswith("_")) or (
        n.op == "call_function" and (n.target in _INPLACE or n.kwargs.get("inplace") is True)
    ) or (module is not None and getattr(module, "inplace", False) is True)


def _reshape_like(n: fx.Node) -> bool:
    return (n.op == "call_method" and n.target in ("view", "reshape", "flatten")) or (
        n.op == "call_function" and n.target in (torch.reshape, torch.flatten))


def _swaps_1_2(n: Any) -> bool:
    """transpose(1, 2) or permute(0, 2, 1, 3, 4) of a 5-D tensor."""
    if not isinstance(n, fx.Node) or n.op not in ("call_method", "call_function"):
        return False
    args = [a for a in n.args[1:]]
    if n.target in ("transpose", torch.transpose):
        return sorted(args) == [1, 2] and not n.kwargs
    if n.target in ("permute", torch.permute):
        dims = args[0] if len(args) == 1 and isinstance(args[0], (list, tuple)) else args
        return list(dims) == [0, 2, 1, 3, 4]
    return False


def _refuse(problems: list[SourceError]) -> SourceError:
    """All unsupported ops in one error, one line each (each line names its own place)."""
    if len(problems) == 1:
        return problems[0]
    return SourceError(f"{len(problems)} unsupported ops:\n" + "\n".join(map(str, problems)))


def trace_module(module: nn.Module, input_shape: Shape, *, file: str, name: str,
                 feature: str | None = None) -> tuple[Graph, list[str]]:
    """The module's IR at `input_shape` (N, C, H, W), and notes for the user."""
    gm = _trace(module, file)
    _alias_in_place(gm)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise SourceError(f"forward takes {len(placeholders)} inputs; automtl compiles a "
                          "trunk with one image input", file=file)
    feature_node = _find_feature(gm, feature, file) if feature else None
    needed, outputs = _needed(gm, feature_node)
    builder = _Builder(gm, file, _torch_forward(gm, needed, input_shape))
    builder.fuse_channel_shuffles(needed)
    (x,) = placeholders
    builder.value[x] = builder.unique(x.name)
    builder.shapes[x.name] = tuple(input_shape)
    for n in gm.graph.nodes:
        if n in needed and n.op not in ("placeholder", "output"):
            builder.add(n)
    if builder.problems:
        raise _refuse(builder.problems)
    if not all(isinstance(o, fx.Node) and isinstance(builder.value.get(o), str)
               for o in outputs):
        raise SourceError("forward must return a tensor, or a tuple or dict of tensors",
                          file=file)
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

    A traced module's node is named after its module's path, and the op's module holds the same
    tensors under the same last names; a function's node (`x * self.gamma`, `F.layer_norm`)
    names the parameters it takes in `attrs["weights_from"]`. Shapes are checked, so a mismatch
    fails here, not in training.
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
        named = node.attrs.get("weights_from")
        source = ({k: module.get_parameter(t) for k, t in named.items()} if named
                  else module.get_submodule(node.name).state_dict())
        state = {}
        for key, like in keys.items():
            tensor = source[key.rsplit(".", 1)[-1]]
            if named and tensor.numel() == like.numel():  # `gamma` [C, 1, 1] for a [C] scale
                tensor = tensor.reshape(like.shape)
            if tensor.shape != like.shape:
                raise ValueError(f"{node.name}.{key}: {list(tensor.shape)} in the module, "
                                 f"{list(like.shape)} in the layer")
            state[key] = tensor.detach().clone()
        out[node.name] = state
    return out

"""The op interface: what the front end, the compilers and the writer ask of a prototxt layer type.

Each Caffe layer type is one `LayerKind` subclass, registered under its type name (and aliases) by
`@register_layer`. A kind owns every fact about its type, so that nothing else in automtl branches
on a type name:

* `read`: the fields it reads from the layer, validated, into a plain JSON-able `attrs` dict;
* `infer`: the output shapes from the input shapes, by Caffe's rules;
* `count_params`: its learnable parameters (weights, biases, affine γ/β; never running statistics);
* `flops`: per-image floating-point operations (2 × multiply-adds; 0 for cheap layers);
* `build`: the torch module it becomes;
* `prototxt_layers`: the `layer { }` blocks the writer emits for it (Caffe dialect);
* `searchable`, `elementwise`, `task_stacking_conflict`: what the supermodel needs to know;
* `fork`, `lower`: a fork's type is named in a note, and may become a core kind once shapes are
  known (ConvolutionDepthwise a grouped Convolution, SegNet's BN a BatchNorm or a Scale);
* `role` (`Role`): op (a layer of the network), input (declares graph inputs), data (a train-time
  data source, replaced by a graph input), or drop (loss and accuracy layers, removed).

`docs/adding-an-op.md` says how to add one. The helpers at the end are the geometry that several
families share (spatial pairs, axes, sliding windows).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from google.protobuf.message import Message
from torch import nn

from automtl_cli.errors import SourceError
from automtl_cli.registry import Choice

__all__ = ["LAYER_KINDS", "Attrs", "LayerKind", "LayerText", "ReadContext", "Role", "Shape",
           "ShapeError",
           "get_kind", "register_layer"]

Shape = tuple[int, ...]
Attrs = dict[str, Any]

LAYER_KINDS: dict[str, LayerKind] = {}


class ShapeError(SourceError):
    """A shape rule failed; the graph builder adds the file, line and layer."""


@dataclass
class ReadContext:
    """What `read` may consult besides the layer: the dialect and the fields' lines."""

    dialect: str  # "caffe" or "automtl"
    field_line: Callable[[str], int | None]

    def fail(self, message: str, path: str | None = None) -> SourceError:
        return SourceError(message, line=self.field_line(path) if path else None)


@dataclass(frozen=True)
class LayerText:
    """One `layer { }` block of a written prototxt, before the writer formats it."""

    name: str
    type: str
    bottoms: list[str]
    tops: list[str]
    param_field: str = ""  # the `*_param` block's field; "" writes none
    body: str = ""  # the text inside that block
    param_names: list[str] | None = None  # `param { name }` entries: weights shared by name


def register_layer(cls: type[LayerKind]) -> type[LayerKind]:
    for name in (cls.type, *cls.aliases):
        LAYER_KINDS[name] = cls()
    return cls


def get_kind(type_name: str) -> LayerKind | None:
    return LAYER_KINDS.get(type_name)


class Role(Choice):
    """What a layer type is to the graph builder."""

    OP = "op"  # a layer of the network
    INPUT = "input"  # declares graph inputs
    DATA = "data"  # a train-time data source, replaced by a graph input
    DROP = "drop"  # loss and accuracy layers, removed


class LayerKind:
    type: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    role: ClassVar[Role] = Role.OP
    param_field: ClassVar[str | None] = None  # the LayerParameter field holding its options
    bottoms: ClassVar[tuple[int, int | None]] = (1, 1)  # (min, max); None: no maximum
    tops: ClassVar[tuple[int, int | None]] = (1, 1)
    searchable: ClassVar[bool] = False
    # Acts on each value alone, so it runs on the tasks' stacked `[N, T*C, ...]` tensor as it is
    # (no reshaping to `[N*T, C, ...]`, which every other shared layer needs).
    elementwise: ClassVar[bool] = False
    # normalises with batch statistics: under `--bn` each task may keep its own (BatchNorm)
    batch_statistics: ClassVar[bool] = False
    # A fork's type (not BVLC Caffe's): the fork, named in the note the front end writes when it
    # reads one, e.g. "DeepLab's caffe fork (deeplab-public-ver2)".
    fork: ClassVar[str | None] = None

    def read(self, layer: Message, ctx: ReadContext) -> Attrs:
        return {}

    def lower(self, attrs: Attrs, shapes: list[Shape]) -> tuple[LayerKind, Attrs]:
        """The kind and attributes the IR node takes once the input shapes are known: itself for
        most kinds; a fork type that is a case of a core one becomes that one (a depthwise
        convolution is a Convolution with group = channels), so the rest of automtl, and the
        prototxt written back, see the core kind. Called before `infer`; may raise `ShapeError`.
        """
        return self, attrs

    def infer(self, attrs: Attrs, shapes: list[Shape]) -> list[Shape]:
        return [shapes[0]]

    def count_params(self, attrs: Attrs, shapes: list[Shape]) -> int:
        return 0

    def flops(self, attrs: Attrs, in_shapes: list[Shape], out_shapes: list[Shape]) -> int:
        """Per-image FLOPs; only convolutions and matrix products count (see `docs/method.md`)."""
        return 0

    def build(self, attrs: Attrs, shapes: list[Shape]) -> nn.Module:
        raise NotImplementedError(f"{self.type} does not become a torch module")

    def task_stacking_conflict(self, attrs: Attrs, shapes: list[Shape]) -> str | None:
        """Why one run over the tasks' stacked batch would mix tasks up; None when it would not."""
        return None

    def param_text(self, attrs: Attrs) -> str:
        """The `*_param { ... }` body that reads back as `attrs` (Caffe dialect; writers)."""
        return ""

    def weight_names(self, attrs: Attrs, key: str) -> list[str] | None:
        """`param { name }` entries that make layers written with the same `key` share weights."""
        return None

    def prototxt_layers(self, name: str, bottoms: list[str], tops: list[str], attrs: Attrs,
                        weights_key: str | None = None) -> list[LayerText]:
        """The blocks that read back as this node: one for most kinds."""
        body = self.param_text(attrs)
        names = self.weight_names(attrs, weights_key) if weights_key else None
        return [LayerText(name, self.type, bottoms, tops, self.param_field if body else "", body,
                          names)]

    def params_of(self, layer: Message) -> Message | None:
        if self.param_field is None or not layer.HasField(self.param_field):
            return None
        return getattr(layer, self.param_field)


# --------------------------------------------------------------------------- shared geometry

def read_pair(p: Message, name: str, hw: str | None, default: int | None, ctx: ReadContext,
              path: str, minimum: int = 0) -> tuple[int, int]:
    """Read Caffe's spatial geometry: `name` (one value, or one per axis) or `{hw}_h`/`{hw}_w`.

    Convolution's `name` fields are repeated, Pooling's are scalars; both forms are read here.
    """
    field = p.DESCRIPTOR.fields_by_name[name]
    if field.is_repeated:
        values = [int(v) for v in getattr(p, name)]
    else:
        values = [int(getattr(p, name))] if p.HasField(name) else []
    has_h = hw is not None and p.HasField(f"{hw}_h")
    has_w = hw is not None and p.HasField(f"{hw}_w")
    if has_h or has_w:
        if values:
            raise ctx.fail(f"give either {name} or {hw}_h/{hw}_w, not both", f"{path}.{hw}_h")
        if has_h != has_w and default is None:
            raise ctx.fail(f"{hw}_h and {hw}_w must be given together", f"{path}.{hw}_h")
        result = (int(getattr(p, f"{hw}_h")) if has_h else default,
                  int(getattr(p, f"{hw}_w")) if has_w else default)
    elif not values:
        if default is None:
            raise ctx.fail(f"{name} is required", path)
        result = (default, default)
    elif len(values) == 1:
        result = (values[0], values[0])
    elif len(values) == 2:
        result = (values[0], values[1])
    else:
        raise ctx.fail(f"{name} has {len(values)} values for 2 spatial axes", f"{path}.{name}")
    if min(result) < minimum:
        raise ctx.fail(f"{name} must be at least {minimum}, got {result[0]}x{result[1]}",
                       f"{path}.{name}")
    return result


def need_4d(kind: str, shape: Shape) -> None:
    if len(shape) != 4:
        raise ShapeError(f"{kind} needs a 4-D input (N, C, H, W), got {list(shape)}")


def norm_axis(axis: int, ndim: int, what: str = "axis") -> int:
    """Caffe's CanonicalAxisIndex: a negative axis counts from the end."""
    if not -ndim <= axis < ndim:
        raise ShapeError(f"{what} {axis} is out of range for a {ndim}-D input")
    return axis % ndim


def window_out(size: int, kernel: int, pad: int, stride: int, dilation: int = 1) -> int:
    extent = dilation * (kernel - 1) + 1
    return (size + 2 * pad - extent) // stride + 1


def format_shapes(shapes: list[Shape]) -> str:
    return " vs ".join(str(list(s)) for s in shapes)

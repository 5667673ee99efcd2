"""Layers that are not computation: graph inputs, train-time data sources, and removed sinks.

An `Input` layer declares graph inputs; a data layer (`Data`, `ImageData`, ...) becomes one, its
shape taken from the layer where Caffe says it (MemoryData, DummyData) and otherwise from
`--input-shape` (a `crop_size` gives the hint); losses, accuracy and Silence are dropped, since a
train/val file's TEST phase is read as a deploy network (README, "Reading prototxt").
"""

from __future__ import annotations

from google.protobuf.message import Message

from automtl_cli.frontend.ops.base import Attrs, LayerKind, ReadContext, Role, register_layer

__all__ = ["DROPPED_TYPES", "Data", "DenseImageData", "DummyData", "HDF5Data", "ImageData",
           "Input", "MemoryData", "WindowData"]

DROPPED_TYPES = ("SoftmaxWithLoss", "EuclideanLoss", "SigmoidCrossEntropyLoss", "HingeLoss",
                 "InfogainLoss", "ContrastiveLoss", "MultinomialLogisticLoss", "Accuracy",
                 "Silence")


@register_layer
class Input(LayerKind):
    type = "Input"
    role = Role.INPUT
    param_field = "input_param"
    bottoms = (0, 0)
    tops = (1, None)

    def read(self, layer: Message, ctx: ReadContext) -> Attrs:
        p = self.params_of(layer)
        shapes = [tuple(int(d) for d in s.dim) for s in p.shape] if p is not None else []
        if shapes and len(shapes) not in (1, len(layer.top)):
            raise ctx.fail(f"{len(shapes)} shapes for {len(layer.top)} tops", "input_param.shape")
        if len(shapes) == 1:
            shapes = shapes * len(layer.top)
        return {"shapes": [list(s) for s in shapes]}

    def param_text(self, attrs: Attrs) -> str:
        return " ".join("shape { " + " ".join(f"dim: {d}" for d in s) + " }"
                        for s in attrs["shapes"])


class _DataSource(LayerKind):
    """A train-time data layer: its first top becomes a graph input, its label is unused."""

    role = Role.DATA
    bottoms = (0, 0)
    tops = (1, None)

    def read(self, layer: Message, ctx: ReadContext) -> Attrs:
        return {"shape": None, "hint": self.hint(layer)}

    def hint(self, layer: Message) -> list[int] | None:
        return None


class _CroppedSource(_DataSource):
    """A data layer whose `crop_size` and `batch_size` suggest the input shape, for the error
    that asks for `--input-shape`."""

    def hint(self, layer: Message) -> list[int] | None:
        crop = layer.transform_param.crop_size if layer.HasField("transform_param") else 0
        batch_size = getattr(layer, self.param_field).batch_size
        if crop and batch_size:
            return [int(batch_size), 3, int(crop), int(crop)]
        return None


@register_layer
class Data(_CroppedSource):
    type = "Data"
    param_field = "data_param"


@register_layer
class ImageData(_CroppedSource):
    type = "ImageData"
    param_field = "image_data_param"


@register_layer
class DenseImageData(_DataSource):
    """caffe-segnet's data layer (images and dense label maps): `crop_height`/`crop_width` and
    `batch_size` suggest the input shape."""

    type = "DenseImageData"
    param_field = "dense_image_data_param"
    fork = "SegNet's caffe fork (alexgkendall/caffe-segnet)"

    def hint(self, layer: Message) -> list[int] | None:
        p = layer.dense_image_data_param
        if p.batch_size and p.crop_height and p.crop_width:
            return [int(p.batch_size), 3 if p.is_color else 1, int(p.crop_height),
                    int(p.crop_width)]
        return None


@register_layer
class HDF5Data(_DataSource):
    type = "HDF5Data"
    param_field = "hdf5_data_param"


@register_layer
class WindowData(_DataSource):
    type = "WindowData"
    param_field = "window_data_param"


@register_layer
class MemoryData(_DataSource):
    type = "MemoryData"
    param_field = "memory_data_param"

    def read(self, layer: Message, ctx: ReadContext) -> Attrs:
        p = layer.memory_data_param
        dims = [p.batch_size, p.channels, p.height, p.width]
        return {"shape": dims if all(dims) else None, "hint": None}


@register_layer
class DummyData(_DataSource):
    type = "DummyData"
    param_field = "dummy_data_param"

    def read(self, layer: Message, ctx: ReadContext) -> Attrs:
        p = layer.dummy_data_param
        if p.shape:
            return {"shape": [int(d) for d in p.shape[0].dim], "hint": None}
        if p.num:
            return {"shape": [p.num[0], p.channels[0], p.height[0], p.width[0]], "hint": None}
        return {"shape": None, "hint": None}


class _Dropped(LayerKind):
    """Losses, accuracy and sinks: train-time only, removed from the graph."""

    role = Role.DROP
    bottoms = (0, None)
    tops = (0, None)


for _name in DROPPED_TYPES:
    register_layer(type(_name, (_Dropped,), {"type": _name}))

"""Caffe's legacy V1 `layers {}` blocks, upgraded to V2 `layer {}` messages as Caffe itself does."""

from __future__ import annotations

from automtl_cli.proto import automtl_pb2 as pb

__all__ = ["V1_TYPE_NAMES", "upgrade_v1_layer"]

# V1 enum name → V2 type string (Caffe's UpgradeV1LayerType).
V1_TYPE_NAMES: dict[str, str] = {
    "NONE": "", "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DATA": "Data", "DECONVOLUTION": "Deconvolution", "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise",
    "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col", "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence",
    "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice",
    "TANH": "TanH", "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}

_SHARED_FIELDS = ("name", "bottom", "top", "include", "exclude", "loss_weight", "blobs")
_PARAM_FIELDS = tuple(
    f.name for f in pb.V1LayerParameter.DESCRIPTOR.fields
    if f.name.endswith("_param") and f.name in pb.LayerParameter.DESCRIPTOR.fields_by_name
)


def upgrade_v1_layer(old: pb.V1LayerParameter) -> pb.LayerParameter:
    """A V2 layer with the same name, blobs, rules and `*_param` options as the V1 one."""
    new = pb.LayerParameter()
    for name in _SHARED_FIELDS:
        value = getattr(old, name)
        if old.DESCRIPTOR.fields_by_name[name].is_repeated:
            getattr(new, name).extend(value)
        elif old.HasField(name):
            setattr(new, name, value)
    if old.HasField("type"):
        enum_name = pb.V1LayerParameter.LayerType.Name(old.type)
        new.type = V1_TYPE_NAMES.get(enum_name, enum_name)
    for name in _PARAM_FIELDS:
        if old.HasField(name):
            getattr(new, name).CopyFrom(getattr(old, name))
    return new

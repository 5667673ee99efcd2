"""`.caffemodel` weights for a prototxt: tiny binary NetParameters written here, V2 (`layer`,
`shape`) and V1 (`layers`, legacy num/channels/height/width), read into the nodes' state dicts;
the backbone with them must compute what Caffe computes with those weights, written out by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from automtl_cli.compiler.backbone import backbone_state, build_backbone
from automtl_cli.errors import BadInput, MissingInput, SourceError
from automtl_cli.frontend.build import CompileOptions
from automtl_cli.frontend.sources import build_source
from automtl_cli.proto import automtl_pb2 as pb

PROTOTXT = """name: "tiny"
input: "data"
input_shape { dim: 1 dim: 3 dim: 9 dim: 9 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 2 } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1"
  scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
  convolution_param { num_output: 4 kernel_size: 1 bias_term: false group: 2 } }
layer { name: "bn2" type: "BatchNorm" bottom: "conv2" top: "conv2" }
layer { name: "pool" type: "Pooling" bottom: "conv2" top: "pool"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc"
  inner_product_param { num_output: 5 } }
"""


def _weights(rng: np.random.Generator) -> dict[str, list[np.ndarray]]:
    r = rng.standard_normal
    return {
        "conv1": [r((4, 3, 3, 3)), r(4)],
        "bn1": [r(4), rng.uniform(0.5, 2, 4), np.array([0.5])],  # mean, var, factor
        "scale1": [rng.uniform(0.5, 1.5, 4), r(4)],
        "conv2": [r((4, 2, 1, 1))],
        "bn2": [r(4), rng.uniform(0.5, 2, 4), np.array([2.0])],
        "fc": [r((5, 4 * 3 * 3)), r(5)],
    }


def _blob(a: np.ndarray, legacy: bool) -> pb.BlobProto:
    blob = pb.BlobProto(data=np.asarray(a, np.float32).reshape(-1).tolist())
    if legacy:  # Caffe's old 4-D num/channels/height/width, shorter shapes padded with 1s
        dims = (1,) * (4 - a.ndim) + a.shape
        blob.num, blob.channels, blob.height, blob.width = dims
    else:
        blob.shape.dim.extend(a.shape)
    return blob


def write_caffemodel(path, weights: dict[str, list[np.ndarray]], v1: bool = False) -> str:
    net = pb.NetParameter(name="tiny")
    for name, arrays in weights.items():
        layer = net.layers.add() if v1 else net.layer.add()
        layer.name = name
        layer.blobs.extend(_blob(a, legacy=v1) for a in arrays)
    path.write_bytes(net.SerializeToString())
    return str(path)


def _compile(tmp_path, caffemodel: str):
    proto = tmp_path / "tiny.prototxt"
    proto.write_text(PROTOTXT)
    front, _ = build_source(str(proto), CompileOptions(weights=caffemodel))
    return front


def _caffe(x: torch.Tensor, w: dict[str, list[np.ndarray]]) -> torch.Tensor:
    """The network by hand, as Caffe computes it with these blobs."""
    t = {k: [torch.tensor(a, dtype=torch.float32) for a in v] for k, v in w.items()}

    def bn(y, blobs, eps=1e-5):
        mean, var, factor = blobs
        mean, var = mean / factor, var / factor
        return (y - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + eps)

    y = F.conv2d(x, t["conv1"][0], t["conv1"][1], stride=2, padding=1)
    y = bn(y, t["bn1"]) * t["scale1"][0].view(1, -1, 1, 1) + t["scale1"][1].view(1, -1, 1, 1)
    y = F.relu(y)
    y = bn(F.conv2d(y, t["conv2"][0], groups=2), t["bn2"])
    y = F.max_pool2d(y, 2, 2, ceil_mode=True)  # Caffe rounds pooling up: 5x5 → 3x3
    return F.linear(y.flatten(1), t["fc"][0], t["fc"][1])


@pytest.mark.parametrize("v1", [False, True], ids=["V2", "V1"])
def test_the_backbone_computes_the_caffe_network(tmp_path, v1):
    weights = _weights(np.random.default_rng(0))
    front = _compile(tmp_path, write_caffemodel(tmp_path / "tiny.caffemodel", weights, v1))
    assert set(front.weights) == {"conv1", "bn1", "conv2", "bn2", "fc"}  # scale1 folded in bn1
    assert not [n for n in front.notes if "caffemodel" in n]
    backbone = build_backbone(front.graph, seed=0)
    backbone.load_state_dict(backbone_state(front.graph, front.weights))
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        assert torch.allclose(backbone.eval()(x), _caffe(x, weights), atol=1e-5)


def test_a_zero_factor_means_zero_statistics(tmp_path):
    weights = _weights(np.random.default_rng(1))
    weights["bn2"][2] = np.array([0.0])
    front = _compile(tmp_path, write_caffemodel(tmp_path / "tiny.caffemodel", weights))
    assert torch.equal(front.weights["bn2"]["running_mean"], torch.zeros(4))
    assert torch.equal(front.weights["bn2"]["running_var"], torch.zeros(4))


def test_layers_without_blobs_keep_the_seeds_init(tmp_path):
    weights = _weights(np.random.default_rng(0))
    del weights["conv2"], weights["scale1"]
    front = _compile(tmp_path, write_caffemodel(tmp_path / "tiny.caffemodel", weights))
    assert "conv2" not in front.weights
    assert set(front.weights["bn1"]) == {"running_mean", "running_var", "num_batches_tracked"}
    assert front.notes[-1:] == ["tiny.caffemodel has no weights for 2 layer(s), which keep the "
                           "seed's initialisation: bn1 (weight, bias), conv2"]


def test_a_shape_mismatch_names_the_file_the_layer_and_both_shapes(tmp_path):
    weights = _weights(np.random.default_rng(0))
    weights["conv1"][0] = np.zeros((4, 3, 5, 5))
    path = write_caffemodel(tmp_path / "tiny.caffemodel", weights)
    with pytest.raises(SourceError) as e:
        _compile(tmp_path, path)
    assert str(e.value) == (f'{path}: layer "conv1" (Convolution): blob 0 has shape '
                            "[4, 3, 5, 5] in the caffemodel; the layer expects [4, 3, 3, 3]")
    assert e.value.exit_code == 65
    weights = _weights(np.random.default_rng(0))
    weights["scale1"] = weights["scale1"][:1]
    path = write_caffemodel(tmp_path / "tiny.caffemodel", weights)
    with pytest.raises(SourceError, match=r'layer "scale1" \(Scale\): has 1 blob\(s\) in the '
                                          r"caffemodel; the layer needs blob 1 of shape \[4\]"):
        _compile(tmp_path, path)


def test_bad_weight_files(tmp_path):
    with pytest.raises(MissingInput, match="no such file"):
        _compile(tmp_path, str(tmp_path / "none.caffemodel"))
    (tmp_path / "junk.caffemodel").write_bytes(b"\xff\xff\xff not a net")
    with pytest.raises(BadInput, match="not a binary Caffe NetParameter"):
        _compile(tmp_path, str(tmp_path / "junk.caffemodel"))
    with pytest.raises(BadInput, match=r"a prototxt's --weights is a Caffe \.caffemodel"):
        _compile(tmp_path, str(tmp_path / "weights.pt"))

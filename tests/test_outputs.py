"""The network's outputs: by default the last layer's top, dead branches dropped with a note;
`--feature-blob A,B` keeps several; what the outputs do not need is dropped before it is checked.
"""

from __future__ import annotations

import json
import re

import pytest

from automtl_cli.errors import SourceError
from automtl_cli.frontend.build import CompileOptions, build_graph

HEAD = 'name: "t"\ninput: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 16\ninput_dim: 16\n'


def layer(name: str, type_: str, bottoms: list[str], tops: list[str], body: str = "") -> str:
    b = "".join(f'  bottom: "{x}"\n' for x in bottoms)
    t = "".join(f'  top: "{x}"\n' for x in tops)
    return f'layer {{\n  name: "{name}"\n  type: "{type_}"\n{b}{t}{body}}}\n'


def conv(name: str, bottom: str, top: str, n: int = 4, extra: str = "") -> str:
    return layer(name, "Convolution", [bottom], [top],
                 f"  convolution_param {{ num_output: {n} kernel_size: 3 pad: 1 {extra}}}\n")


def pool(name: str, bottom: str, top: str) -> str:
    return layer(name, "Pooling", [bottom], [top],
                 "  pooling_param { pool: MAX kernel_size: 2 stride: 2 }\n")


def relu(name: str, blob: str) -> str:
    return layer(name, "ReLU", [blob], [blob])


def vgg16_features(dead_pool1: bool) -> str:
    """VGG-16's convolutions and four poolings (a 224-px input gives [1, 512, 14, 14]); with
    `dead_pool1`, pool1 is computed and never read (conv2_1 reads a second pooling)."""
    text = 'name: "VGG16"\ninput: "data"\n' + "".join(
        f"input_dim: {d}\n" for d in (1, 3, 224, 224))
    blob = "data"
    stages = [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]
    for s, (width, convs) in enumerate(stages, 1):
        for c in range(1, convs + 1):
            name = f"conv{s}_{c}"
            text += conv(name, blob, name, width) + relu(f"relu{s}_{c}", name)
            blob = name
        if s < 5:
            if s == 1 and dead_pool1:
                text += pool("pool1", blob, "pool1")
                text += pool("pool1s", blob, "pool1s")
                blob = "pool1s"
            else:
                text += pool(f"pool{s}", blob, f"pool{s}")
                blob = f"pool{s}"
    return text


VGG16_FEATURE_PARAMS = 14_714_688


def test_a_dead_pool1_does_not_become_the_output(tmp_path):
    path = tmp_path / "vgg16.prototxt"
    path.write_text(vgg16_features(dead_pool1=True))
    result = build_graph(path)
    g = result.graph
    assert [g.shape_of(v) for v in g.outputs] == [(1, 512, 14, 14)]
    assert g.params == VGG16_FEATURE_PARAMS
    assert "pool1" not in {n.name for n in g.nodes}
    note = next(n for n in result.notes if "feed no output" in n)
    assert 'the last layer\'s top (conv5_3)' in note and '"pool1" (line' in note
    assert "--feature-blob pool1,conv5_3" in note
    clean = tmp_path / "clean.prototxt"
    clean.write_text(vgg16_features(dead_pool1=False))
    assert build_graph(clean).graph.params == g.params


def googlenet_train_val(deploy: str) -> str:
    """BVLC GoogLeNet's train/val form from its deploy file: Data layers, the two auxiliary
    classifiers (loss1 after inception_4a, loss2 after inception_4d) and the loss layers, as
    in BVLC's models/bvlc_googlenet/train_val.prototxt."""
    data = "".join(layer("data", "Data", [], ["data", "label"],
                         f"  include {{ phase: {phase} }}\n  transform_param {{ crop_size: 224 }}\n"
                         "  data_param { batch_size: 10 }\n") for phase in ("TRAIN", "TEST"))
    text = re.sub(r'layer \{\n  name: "data"\n  type: "Input".*?\n\}\n', lambda _: data, deploy,
                  count=1, flags=re.DOTALL)

    def aux(k: int, bottom: str) -> str:
        p = f"loss{k}"
        return (layer(f"{p}/ave_pool", "Pooling", [bottom], [f"{p}/ave_pool"],
                      "  pooling_param { pool: AVE kernel_size: 5 stride: 3 }\n")
                + layer(f"{p}/conv", "Convolution", [f"{p}/ave_pool"], [f"{p}/conv"],
                        "  convolution_param { num_output: 128 kernel_size: 1 }\n")
                + layer(f"{p}/relu_conv", "ReLU", [f"{p}/conv"], [f"{p}/conv"])
                + layer(f"{p}/fc", "InnerProduct", [f"{p}/conv"], [f"{p}/fc"],
                        "  inner_product_param { num_output: 1024 }\n")
                + layer(f"{p}/relu_fc", "ReLU", [f"{p}/fc"], [f"{p}/fc"])
                + layer(f"{p}/drop_fc", "Dropout", [f"{p}/fc"], [f"{p}/fc"],
                        "  dropout_param { dropout_ratio: 0.7 }\n")
                + layer(f"{p}/classifier", "InnerProduct", [f"{p}/fc"], [f"{p}/classifier"],
                        "  inner_product_param { num_output: 1000 }\n")
                + layer(f"{p}/loss", "SoftmaxWithLoss", [f"{p}/classifier", "label"],
                        [f"{p}/loss{k}"], "  loss_weight: 0.3\n")
                + layer(f"{p}/top-1", "Accuracy", [f"{p}/classifier", "label"], [f"{p}/top-1"],
                        "  include { phase: TEST }\n"))

    for k, blob in ((1, "inception_4a/output"), (2, "inception_4d/output")):
        at = text.index("\nlayer {", text.index(f'name: "{blob}"')) + 1
        text = text[:at] + aux(k, blob) + text[at:]
    prob = text.index('layer {\n  name: "prob"')
    return text[:prob] + layer("loss3/loss3", "SoftmaxWithLoss", ["loss3/classifier", "label"],
                               ["loss3/loss3"]) \
        + layer("loss3/top-1", "Accuracy", ["loss3/classifier", "label"], ["loss3/top-1"],
                "  include { phase: TEST }\n") \
        + layer("loss3/top-5", "Accuracy", ["loss3/classifier", "label"], ["loss3/top-5"],
                "  include { phase: TEST }\n  accuracy_param { top_k: 5 }\n")


def test_googlenet_train_val_does_not_count_its_auxiliary_heads(corpus, tmp_path):
    path = tmp_path / "googlenet_train_val.prototxt"
    path.write_text(googlenet_train_val((corpus / "caffe" / "googlenet_deploy.prototxt")
                                        .read_text()))
    shape = {None: (10, 3, 224, 224)}
    result = build_graph(path, CompileOptions(input_shapes=shape))
    g = result.graph
    assert g.params == 6_998_552  # the deploy file's figure (SOURCES.md)
    assert [result.graph.blobs.get("loss3/classifier")] == g.outputs
    assert g.shape_of(g.output) == (10, 1000)
    assert not any(n.name.startswith(("loss1/", "loss2/")) for n in g.nodes)
    note = next(n for n in result.notes if "feed no output" in n)
    assert '"loss1/classifier"' in note and '"loss2/classifier"' in note
    # Caffe's own reading, every head an output, is one option away.
    every = build_graph(path, CompileOptions(
        input_shapes=shape, feature_blob="loss1/classifier,loss2/classifier,loss3/classifier"))
    assert every.graph.params == 13_378_280
    assert [every.graph.shape_of(v) for v in every.graph.outputs] == [(10, 1000)] * 3


def test_feature_blob_keeps_several_outputs_in_order(tmp_path, run_cli):
    path = tmp_path / "two.prototxt"
    path.write_text(HEAD + conv("a", "data", "a") + conv("b", "data", "b", 8)
                    + conv("c", "b", "c", 2))
    rc, out, err = run_cli("-q", "compile", path, "-o", tmp_path / "r", "--json")
    assert rc == 0, err
    assert json.loads(out)["outputs"] == {"c": [1, 2, 16, 16]}
    rc, out, err = run_cli("-q", "compile", path, "-o", tmp_path / "r", "--json",
                           "--feature-blob", "c, a")
    assert rc == 0, err
    summary = json.loads(out)
    assert list(summary["outputs"]) == ["c", "a"]
    assert summary["params"] == (27 * 4 + 4) + (27 * 8 + 8) + (72 * 2 + 2)
    rc, _, err = run_cli("compile", path, "-o", tmp_path / "r", "--feature-blob", "a,x")
    assert rc == 65 and '--feature-blob "x": no layer writes this blob' in err
    rc, _, err = run_cli("compile", path, "-o", tmp_path / "r", "--tasks", "seg,depth",
                         "--feature-blob", "a,c")
    assert rc == 65 and "needs one feature blob" in err


def test_help_says_what_the_default_output_is(run_cli):
    rc, out, _ = run_cli("compile", "--help")
    assert rc == 0
    assert "the last layer's output" in " ".join(out.split())


# Three layers after the cut that compile would refuse: an unsupported type, an unknown field,
# and a convolution without num_output.
AFTER_THE_CUT = (layer("py", "Python", ["c2"], ["u"])
                 + conv("c3", "u", "c3", extra="wibble: 1 ")
                 + layer("c4", "Convolution", ["c3"], ["c4"],
                         "  convolution_param { kernel_size: 3 }\n"))


def test_layers_after_the_feature_blob_are_not_checked(tmp_path, run_cli):
    path = tmp_path / "net.prototxt"
    path.write_text(HEAD + conv("c1", "data", "c1") + conv("c2", "c1", "c2") + AFTER_THE_CUT)
    rc, out, err = run_cli("-q", "compile", path, "-o", tmp_path / "r", "--json",
                           "--feature-blob", "c2")
    assert rc == 0, err
    summary = json.loads(out)
    assert summary["outputs"] == {"c2": [1, 4, 16, 16]} and summary["layers"] == 2
    assert any("3 after it" in n for n in summary["notes"])
    rc, _, err = run_cli("compile", path, "-o", tmp_path / "r")  # the whole network: refused
    assert rc == 65
    assert 'layer "py" (Python): unsupported layer type' in err


def test_a_dead_branch_is_not_checked_but_a_kept_layer_is(tmp_path, run_cli):
    dead = HEAD + conv("c1", "data", "c1") \
        + layer("up", "Python", ["c1"], ["u"]) \
        + conv("c2", "c1", "c2")
    path = tmp_path / "dead.prototxt"
    path.write_text(dead)
    rc, out, err = run_cli("-q", "compile", path, "-o", tmp_path / "r", "--json")
    assert rc == 0, err
    assert any('ending at "u" (line 14)' in n for n in json.loads(out)["notes"])
    kept = HEAD + conv("c1", "data", "c1") \
        + layer("up", "Python", ["c1"], ["u"]) \
        + conv("c2", "u", "c2") + AFTER_THE_CUT
    path.write_text(kept)
    with pytest.raises(SourceError) as info:
        build_graph(path, CompileOptions(feature_blob="c2"))
    assert info.value.line == 14 and info.value.layer == "up"
    assert "unsupported layer type" in info.value.message

"""Experiment files: the ready specs, the embedded default, conversion, errors naming the place."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from automtl_cli.errors import BadInput, MissingInput, SourceError
from automtl_cli.experiment import (
    NATIVE_SIZE,
    TASK_SETS,
    DataSource,
    ExperimentConfig,
    HeadKind,
    Resize,
    TaskConfig,
    default_experiment,
    load_experiment,
    parse_data_arg,
    parse_tasks_arg,
)

SPECS = Path(__file__).resolve().parent.parent / "specs" / "experiments"


@pytest.mark.parametrize("name", ["synthetic", "synthetic_taskonomy5", "nyuv2", "cityscapes",
                                  "taskonomy"])
def test_every_ready_spec_loads(name):
    experiment = load_experiment(SPECS / f"{name}.prototxt")
    assert experiment.tasks
    assert json.loads(json.dumps(experiment.to_dict()))  # plain data, for artifacts


def test_the_synthetic_spec_is_the_embedded_default():
    assert load_experiment(SPECS / "synthetic.prototxt") == default_experiment().resolve()
    five = load_experiment(SPECS / "synthetic_taskonomy5.prototxt")
    assert five.task_names == TASK_SETS["taskonomy5"]
    assert default_experiment().task_names == TASK_SETS["nyu3"]


def test_real_specs_carry_the_reference_settings():
    nyu = load_experiment(SPECS / "nyuv2.prototxt")
    assert [(t.type, t.loss_weight) for t in nyu.tasks] == [("seg", 3), ("normal", 20),
                                                            ("depth", 3)]
    assert nyu.task("seg").classes == 40
    assert nyu.data.crop_size == (321, 321) and nyu.data.test_size == (321, 321)
    assert nyu.task("seg").head.hidden == 1024 and nyu.task("seg").head.rates == (6, 12, 18, 24)
    assert nyu.task("seg").resize is Resize.LABEL_TO_PRED
    city = load_experiment(SPECS / "cityscapes.prototxt")
    assert city.task_names == ("seg", "depth") and city.task("seg").classes == 19
    assert city.data.crop_size == (224, 224) and city.data.test_size == NATIVE_SIZE
    tiny = load_experiment(SPECS / "taskonomy.prototxt")
    assert [t.loss_weight for t in tiny.tasks] == [1, 3, 2, 7, 7]
    assert tiny.data.test_size == (224, 224) and tiny.task("seg").classes == 17
    assert {e.data.batch_size for e in (nyu, city, tiny)} == {16}
    assert {e.data.val_batch_size for e in (nyu, city, tiny)} == {8}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.prototxt"
    path.write_text(text)
    return path


def test_fields_convert_to_typed_values(tmp_path):
    path = write(tmp_path, """
        task { type: "edge" pos_weight: 2.5 head { type: LIGHT hidden: 24 } resize: PRED_TO_LABEL }
        data { seed: 3 synthetic { image_size: 48 min_object_size: 0.45 fog: 0.1 } }
    """)
    e = load_experiment(path)
    assert e.name == "exp"
    edge = e.task("edge")
    assert edge.pos_weight == 2.5 and edge.resize is Resize.PRED_TO_LABEL
    assert edge.head.kind is HeadKind.LIGHT and edge.head.hidden == 24
    assert e.data.seed == 3 and e.data.synthetic.image_size == 48
    assert e.data.synthetic.min_object_size == 0.45  # not float32's 0.4499999881
    assert e.data.synthetic.fog == 0.1


@pytest.mark.parametrize(("text", "pattern", "line"), [
    ('task { type: "seg" }\nbogus: 1\n', 'unknown field "bogus"', 2),
    ('task { type: "seg" head { widht: 3 } }\n', 'unknown field "widht" in HeadParameter', 1),
    ('task {\n  type: "segmentation"\n}\n', r'task\[0\] \("segmentation"\).*not one of', 1),
    ('task { type: "seg" }\ntask { type: "seg" }\n', "given more than once", None),
    ('task { type: "depth" loss_weight: -1 }\n', "loss_weight must not be negative", 1),
    ('task { type: "normal" }\ndata { source: CITYSCAPES root: "x" }\n', "has no normal", None),
    ('task { type: "seg" }\ndata { source: NYUV2 }\n', "data.root is required", 2),
    ('task { type: "seg" }\ndata { crop_size: [1, 2, 3] }\n', "takes H or H and W", 2),
    ('task { type: "seg" classes: 1 }\n', "at least 2", 1),
    ('task { type: "depth" classes: 3 }\n', "seg only", 1),
    ('task { type: "seg" }\ntask { type: "depth" classes: 3 }\n', r"task\[1\].*seg only", None),
    ('data { synthetic { min_objects: 5 max_objects: 2 } }\ntask { type: "seg" }\n',
     "min_objects", 1),
    ("", "at least one task", None),
    ('task { type: "seg"\n', "unexpected end of file", 1),
])
def test_errors_name_the_file_field_and_line(tmp_path, text, pattern, line):
    path = write(tmp_path, text)
    with pytest.raises(SourceError, match=pattern) as info:
        load_experiment(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    if line is not None:
        assert info.value.line == line
    assert info.value.exit_code == 65


def test_a_missing_file_is_missing_input(tmp_path):
    with pytest.raises(MissingInput):
        load_experiment(tmp_path / "none.prototxt")


def test_dict_round_trip_and_overrides():
    e = load_experiment(SPECS / "nyuv2.prototxt")
    assert ExperimentConfig.from_dict(json.loads(json.dumps(e.to_dict()))) == e
    with pytest.raises(BadInput):
        ExperimentConfig.from_dict({"tasks": [{"type": "nope"}]})
    moved = e.override(source=DataSource.SYNTHETIC, root=None).resolve()
    assert moved.task("seg").classes == 6 and moved.data.crop_size is None
    assert moved.task("normal").loss_weight == 20  # task settings are kept
    picked = default_experiment().override(tasks=("depth", "edge"))
    assert picked.task_names == ("depth", "edge")
    assert picked.task("depth").resize is Resize.PRED_TO_LABEL
    assert picked.task("edge") == TaskConfig(type="edge")


def test_command_line_values():
    assert parse_tasks_arg("nyu3") == ("seg", "depth", "normal")
    assert parse_tasks_arg(" seg, keypoint ") == ("seg", "keypoint")
    for bad in ("", "seg,seg", "seg,depthh"):
        with pytest.raises(BadInput):
            parse_tasks_arg(bad)
    assert parse_data_arg("synthetic") == (DataSource.SYNTHETIC, None)
    assert parse_data_arg("nyuv2:/d/nyu") == (DataSource.NYUV2, "/d/nyu")
    for bad in ("nyuv2", "imagenet:/x", "synthetic:/x", "cityscapes:"):
        with pytest.raises(BadInput):
            parse_data_arg(bad)

"""The real datasets' loaders on tiny files written in their layouts, and every bad-file case."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from automtl_cli.data import build_dataset, build_loader
from automtl_cli.data.real import BGR_MEAN
from automtl_cli.data.transforms import augment
from automtl_cli.errors import BadInput, MissingInput
from automtl_cli.experiment import DataSource

from conftest_data import real_data, write_cityscapes, write_nyuv2, write_taskonomy

NYU = ("seg", "normal", "depth")
TASKONOMY = ("seg", "normal", "depth", "keypoint", "edge2d")


@pytest.fixture
def nyu(tmp_path):
    return write_nyuv2(tmp_path / "nyu")


@pytest.fixture
def cityscapes(tmp_path):
    return write_cityscapes(tmp_path / "cityscapes")


@pytest.fixture
def taskonomy(tmp_path):
    return write_taskonomy(tmp_path / "taskonomy")


# --- reading each layout ---------------------------------------------------------------------

def test_nyuv2_test_sample_matches_the_files(nyu):
    ds = build_dataset(real_data(DataSource.NYUV2, nyu), NYU, "test")
    assert len(ds) == 2 and not ds.augments
    s = ds[0]
    entry = json.loads((nyu / "nyu_v2_3task.json").read_text())["test"][0]
    rgb = np.array(Image.open(nyu / entry[0]))
    assert s["image"].shape == (3, 18, 20)
    assert torch.allclose(s["image"][0], torch.from_numpy(rgb[..., 2] - BGR_MEAN[0]).float())
    seg = np.array(Image.open(nyu / entry[1]))
    assert torch.equal(s["seg"], torch.from_numpy(seg.astype(np.int64)))
    assert (s["seg"][0] == 255).all()
    assert not s["normal_mask"][0, 1].any() and (s["normal"][:, 1] == 0).all()
    assert s["normal_mask"][0, 3:].all()
    norms = s["normal"].norm(dim=0)[s["normal_mask"][0]]
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    depth = np.load(nyu / entry[3])
    assert torch.allclose(s["depth"][0], torch.from_numpy(depth))
    assert not s["depth_mask"][0, 2].any() and s["depth_mask"][0, 3:].all()
    assert np.array_equal(ds.to_rgb(s["image"]), rgb)


def test_training_samples_are_cropped_and_reproducible(nyu):
    ds = build_dataset(real_data(DataSource.NYUV2, nyu), NYU, "train1")
    assert ds.augments
    a, b, c = ds[(1, 3, 0)], ds[(1, 3, 0)], ds[(1, 3, 1)]
    assert a["image"].shape == (3, 12, 16) and a["seg"].shape == (12, 16)
    assert a["normal"].shape == (3, 12, 16) and a["depth_mask"].shape == (1, 12, 16)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_test_size_resizes_labels_by_nearest(nyu):
    ds = build_dataset(real_data(DataSource.NYUV2, nyu, test_size=(9, 10)), NYU, "test")
    s = ds[0]
    assert s["image"].shape == (3, 9, 10) and s["seg"].shape == (9, 10)
    assert set(s["seg"].unique().tolist()) <= set(range(40)) | {255}


def test_cityscapes_maps_unlabelled_to_255_and_reads_float_images(cityscapes):
    ds = build_dataset(real_data(DataSource.CITYSCAPES, cityscapes), ("seg", "depth"), "test")
    s = ds[1]
    assert s["image"].shape == (3, 16, 24)
    assert (s["seg"][:, 0] == 255).all() and (s["seg"][:, 1:] < 19).all()
    assert s["depth"].shape == (1, 16, 24) and not s["depth_mask"][0, 0].any()
    assert ds.info.seg_classes == 19 and ds.info.seg_class_weights is None


def test_taskonomy_encodings_masks_and_class_weights(taskonomy):
    ds = build_dataset(real_data(DataSource.TASKONOMY, taskonomy), TASKONOMY, "test")
    assert len(ds) == 2  # `test` reads test_small
    s = ds[0]
    assert s["image"].shape == (3, 256, 256)  # everything is resized to 256×256 first
    assert set(s["seg"].unique().tolist()) <= set(range(17)) | {255}
    assert (s["depth"] >= 0).all() and (s["depth"] <= 1).all()
    assert not s["depth_mask"][0, :5].any()  # row 0 of 20 px (65535: no depth)
    assert torch.equal(s["normal_mask"], s["depth_mask"])
    for name in ("keypoint", "edge2d"):
        assert s[name].min() >= -1 and s[name].max() <= 1
    weights = np.load(taskonomy / "semseg_prior_factor.npy")
    assert ds.info.seg_class_weights == pytest.approx(tuple(weights))
    train = build_dataset(real_data(DataSource.TASKONOMY, taskonomy), TASKONOMY, "train2")
    assert train[(0, 0, 0)]["image"].shape == (3, 12, 16)


def test_val_falls_back_to_the_test_list(nyu, caplog):
    with caplog.at_level(logging.WARNING, logger="automtl_cli"):
        ds = build_dataset(real_data(DataSource.NYUV2, nyu), NYU, "val")
    assert len(ds) == 2 and "no val split" in caplog.text


def test_flip_negates_normal_x_and_padding_marks_no_label():
    sample = {"image": torch.arange(6.0).reshape(1, 2, 3).repeat(3, 1, 1),
              "seg": torch.ones(2, 3, dtype=torch.long),
              "normal": torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1).repeat(1, 2, 3),
              "normal_mask": torch.ones(1, 2, 3, dtype=torch.bool)}
    flipped = None
    for seed in range(20):
        out = augment(sample, np.random.default_rng(seed), crop=(2, 3), min_scale=1.0,
                      max_scale=1.0, flip=True)
        if torch.equal(out["image"], sample["image"].flip(-1)):
            flipped = out
            break
    assert flipped is not None
    assert (flipped["normal"][0] == -1).all()
    padded = augment(sample, np.random.default_rng(0), crop=(4, 5), min_scale=1.0,
                     max_scale=1.0, flip=False)
    assert padded["seg"].shape == (4, 5)
    assert (padded["seg"] == 255).sum() == 20 - 6
    assert padded["normal_mask"].sum() == 6


# --- bad input -------------------------------------------------------------------------------

def _entry(root, json_name, split="test", index=0):
    return json.loads((root / json_name).read_text())[split][index]


def _break_nyu(root, case):
    entry = _entry(root, "nyu_v2_3task.json")
    if case == "missing file":
        (root / entry[1]).unlink()
        return entry[1], "missing"
    if case == "unreadable image":
        (root / entry[0]).write_bytes(b"\x89PNG garbage")
        return entry[0], "not a readable image"
    if case == "unreadable npy":
        (root / entry[3]).write_bytes(b"garbage")
        return entry[3], "not a readable .npy"
    if case == "depth of another size":
        np.save(root / entry[3], np.ones((5, 5), np.float32))
        return entry[3], "does not match"
    if case == "depth with 3 dimensions":
        np.save(root / entry[3], np.ones((18, 20, 2), np.float32))
        return entry[3], "must be H×W"
    if case == "grey normal map":
        Image.fromarray(np.zeros((18, 20), np.uint8)).save(root / entry[2])
        return entry[2], "must be H×W×3"
    if case == "seg out of range":
        Image.fromarray(np.full((18, 20), 57, np.uint8)).save(root / entry[1])
        return entry[1], "seg value 57 is out of range"
    if case == "NaN depth":
        np.save(root / entry[3], np.full((18, 20), np.nan, np.float32))
        return entry[3], "NaN"
    raise AssertionError(case)


NYU_CASES = ["missing file", "unreadable image", "unreadable npy", "depth of another size",
             "depth with 3 dimensions", "grey normal map", "seg out of range", "NaN depth"]


@pytest.mark.parametrize("case", NYU_CASES)
def test_a_bad_file_stops_with_one_line_naming_it(nyu, case):
    name, what = _break_nyu(nyu, case)
    ds = build_dataset(real_data(DataSource.NYUV2, nyu), NYU, "test")
    with pytest.raises(BadInput) as info:
        ds.load(0, None)
    message = str(info.value)
    assert name in message and what in message and "\n" not in message
    assert info.value.exit_code == 65


def test_a_bad_file_in_a_worker_reaches_the_caller_as_the_same_error(nyu):
    name, _ = _break_nyu(nyu, "seg out of range")
    loader = build_loader(real_data(DataSource.NYUV2, nyu), NYU, "test", batch_size=1,
                          num_workers=2)
    with pytest.raises(BadInput) as info:
        list(loader.epoch(0))
    assert name in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("case", ["not json", "not an object", "missing split", "short entry",
                                  "empty split"])
def test_a_bad_split_list_is_reported(nyu, case):
    path = nyu / "nyu_v2_3task.json"
    table = json.loads(path.read_text())
    text = {"not json": "{oops",
            "not an object": "[]",
            "missing split": json.dumps({"train": table["train"]}),
            "short entry": json.dumps({**table, "test": [table["test"][0][:3]]}),
            "empty split": json.dumps({**table, "test": []})}[case]
    path.write_text(text)
    with pytest.raises(BadInput, match=r"nyu_v2_3task\.json"):
        build_dataset(real_data(DataSource.NYUV2, nyu), NYU, "test")


def test_a_missing_root_is_missing_input(tmp_path):
    with pytest.raises(MissingInput, match="root not found") as info:
        build_dataset(real_data(DataSource.NYUV2, tmp_path / "nowhere"), NYU, "test")
    assert info.value.exit_code == 66
    with pytest.raises(BadInput, match=r"no nyu_v2_3task\.json"):
        build_dataset(real_data(DataSource.NYUV2, tmp_path), NYU, "test")


def test_cityscapes_bad_image_values_and_channels(cityscapes):
    entry = _entry(cityscapes, "cityscape.json")
    np.save(cityscapes / entry[0], np.full((16, 24, 3), 200.0, np.float32))
    ds = build_dataset(real_data(DataSource.CITYSCAPES, cityscapes), ("seg",), "test")
    with pytest.raises(BadInput, match=r"must hold RGB in \[0, 1\]"):
        ds.load(0, None)
    np.save(cityscapes / entry[0], np.zeros((16, 24, 4), np.float32))
    with pytest.raises(BadInput, match="must be H×W×3"):
        ds.load(0, None)


def test_taskonomy_needs_its_class_prior(taskonomy):
    (taskonomy / "semseg_prior_factor.npy").unlink()
    with pytest.raises(BadInput, match=r"semseg_prior_factor\.npy"):
        build_dataset(real_data(DataSource.TASKONOMY, taskonomy), TASKONOMY, "test")
    ds = build_dataset(real_data(DataSource.TASKONOMY, taskonomy), ("depth",), "test")
    assert ds.info.seg_class_weights is None  # not needed without seg


def test_taskonomy_label_maps_must_be_integer_pngs(taskonomy):
    entry = _entry(taskonomy, "taskonomy.json", "test_small")
    Image.fromarray(np.zeros((20, 20), np.float32)).save(taskonomy / entry[3].replace(
        ".png", ".tiff"))
    (taskonomy / entry[3]).write_bytes((taskonomy / entry[3].replace(".png", ".tiff"))
                                       .read_bytes())
    ds = build_dataset(real_data(DataSource.TASKONOMY, taskonomy), ("depth",), "test")
    with pytest.raises(BadInput, match="integer PNG"):
        ds.load(0, None)

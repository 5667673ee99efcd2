"""The synthetic scenes: golden checksums, determinism, splits, the cache, and label sanity."""

from __future__ import annotations

import dataclasses
import hashlib
import logging

import numpy as np
import pytest
import torch

from automtl_cli.data import SceneCache, build_dataset, build_loader
from automtl_cli.data.cache import CHUNK
from automtl_cli.data.synthetic import generate_scenes, quantise_scene, render_scene, scene_rng
from automtl_cli.experiment import TASK_TYPES, SyntheticConfig

from conftest_data import tiny_synthetic

CFG32 = SyntheticConfig(image_size=32)

# sha256 prefixes of the class map and of depth rounded to 1 mm (seed 0, 32 px): exact class
# maps and millimetres are stable across machines where float bytes may not be
# (docs/synthetic-data.md §3).
GOLDEN = {
    ("train", 0): ("d4e21fd0b434d09b", "49095573b934c580"),
    ("train", 1): ("ee8a83f97a86530b", "25954f6fe0662b8d"),
    ("train", 7): ("319963664b5a315a", "b308a000add26541"),
    ("val", 0): ("50ff207a051c4e5f", "121cf3b7deee71cd"),
}


@pytest.fixture(scope="session")
def scene_cache(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "automtl-scene-cache"


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


@pytest.mark.parametrize(("split", "index"), sorted(GOLDEN))
def test_golden_checksums(split, index):
    scene = render_scene(CFG32, scene_rng(0, split, index))
    seg = _digest(scene["seg"].astype(np.uint8))
    depth = _digest(np.round(scene["depth"] * 1000).astype(np.int32))
    assert (seg, depth) == GOLDEN[(split, index)]


def test_scenes_depend_only_on_seed_split_and_index():
    together = generate_scenes(CFG32, 3, "train", 0, 4)
    alone = generate_scenes(CFG32, 3, "train", 2, 2)  # another order, another batch
    for key, value in together.items():
        assert np.array_equal(value[2:], alone[key]), key
    other_seed = generate_scenes(CFG32, 4, "train", 0, 1)
    assert not np.array_equal(other_seed["image"][0], together["image"][0])


def test_splits_draw_different_scenes():
    images = [generate_scenes(CFG32, 0, split, 0, 1)["image"][0]
              for split in ("train", "train1", "train2", "val", "test")]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert not np.array_equal(images[i], images[j])


def test_labels_agree_with_each_other():
    scenes = [render_scene(CFG32, scene_rng(0, "train", i)) for i in range(6)]
    seg = np.stack([s["seg"] for s in scenes])
    assert set(np.unique(seg)) <= set(range(6))
    assert (seg >= 2).mean() > 0.2  # objects cover a real share of the image (fix 2)
    coords = (np.arange(32) + 0.5 - 16) / (16 / np.tan(np.radians(30)))
    rays = np.stack([*np.meshgrid(coords, coords, indexing="xy"), np.ones((32, 32))], -1)
    for s in scenes:
        assert np.allclose(np.linalg.norm(s["normal"], axis=-1), 1.0)
        assert ((s["normal"] * rays).sum(-1) < 1e-6).all()  # every visible surface faces us
        assert (s["depth"] > 0.5).all() and (s["depth"] < 11).all()
        floor = s["seg"] == 0
        assert np.allclose(s["normal"][floor], s["normal"][floor][0])  # a plane: one normal
        assert set(np.unique(s["edge"])) <= {0.0, 1.0}
        assert 0 <= s["edge2d"].min() and s["edge2d"].max() <= 1
        assert 0 <= s["keypoint"].min() and s["keypoint"].max() <= 1
        assert 0 <= s["image"].min() and s["image"].max() <= 1
    assert max(s["keypoint"].max() for s in scenes) > 0.9  # visible keypoints peak near 1


def test_quantised_scenes_are_compact():
    q = quantise_scene(render_scene(SyntheticConfig(image_size=64), scene_rng(0, "train", 0)))
    assert sum(a.nbytes for a in q.values()) < 56_000  # ≈50 kB per 64×64 scene
    assert {k: a.dtype for k, a in q.items()} == {
        "image": np.uint8, "seg": np.uint8, "depth": np.float16, "normal": np.int8,
        "edge": np.uint8, "edge2d": np.uint8, "keypoint": np.uint8}


def test_cache_key_ignores_counts_but_not_knobs(tmp_path):
    base = SceneCache(CFG32, 0, tmp_path)
    more = SceneCache(dataclasses.replace(CFG32, train=5000), 0, tmp_path)
    other = SceneCache(dataclasses.replace(CFG32, fog=0.0), 0, tmp_path)
    reseeded = SceneCache(CFG32, 1, tmp_path)
    assert base.dir == more.dir
    assert len({base.dir, other.dir, reseeded.dir}) == 3
    assert str(base.dir).startswith(str(tmp_path))


def test_cache_content_does_not_depend_on_worker_count(tmp_path):
    serial = SceneCache(CFG32, 5, tmp_path / "a").load("val", CHUNK + 3, num_workers=0)
    pooled = SceneCache(CFG32, 5, tmp_path / "b").load("val", CHUNK + 3, num_workers=2)
    assert all(np.array_equal(serial[k], pooled[k]) for k in serial)
    assert serial["image"].shape == (CHUNK + 3, 32, 32, 3)
    direct = generate_scenes(CFG32, 5, "val", CHUNK, 3)
    assert np.array_equal(serial["seg"][CHUNK:], direct["seg"])


def test_a_corrupt_chunk_is_made_again(tmp_path, caplog):
    cache = SceneCache(CFG32, 0, tmp_path)
    first = cache.load("test", 4)
    cache.chunk_path("test", 0).write_bytes(b"not a zip file")
    with caplog.at_level(logging.WARNING, logger="automtl_cli"):
        again = cache.load("test", 4)
    assert "unreadable" in caplog.text
    assert all(np.array_equal(first[k], again[k]) for k in first)


def test_samples_have_the_documented_format(scene_cache):
    data = tiny_synthetic()
    dataset = build_dataset(data, TASK_TYPES, "train", cache_dir=scene_cache, count=8)
    sample = dataset[(0, 0, 0)]
    assert sample["image"].dtype == torch.float32 and sample["image"].shape == (3, 32, 32)
    assert sample["seg"].dtype == torch.int64 and sample["seg"].shape == (32, 32)
    for name, channels in (("depth", 1), ("normal", 3), ("edge", 1), ("edge2d", 1),
                           ("keypoint", 1)):
        assert sample[name].dtype == torch.float32
        assert sample[name].shape == (channels, 32, 32)
    assert 0.05 < sample["depth"].min() and sample["depth"].max() < 1.1  # metres / 10
    assert torch.allclose(sample["normal"].norm(dim=0), torch.ones(32, 32), atol=1e-5)
    rgb = dataset.to_rgb(sample["image"])
    assert rgb.dtype == np.uint8 and rgb.shape == (32, 32, 3)
    assert np.abs(rgb.astype(int) - dataset.arrays["image"][0]).max() <= 1


def test_batches_do_not_depend_on_worker_count(scene_cache):
    data = tiny_synthetic()
    tasks = ("seg", "depth", "keypoint")
    serial = build_loader(data, tasks, "train", seed=7, cache_dir=scene_cache, num_workers=0)
    pooled = build_loader(data, tasks, "train", seed=7, cache_dir=scene_cache, num_workers=2)
    for epoch in (0, 1):
        a, b = list(serial.epoch(epoch)), list(pooled.epoch(epoch))
        assert len(a) == len(b) == 64 // 8
        for x, y in zip(a, b):
            assert set(x) == {"image", *tasks}
            assert all(torch.equal(x[k], y[k]) for k in x)
    e0, e1 = next(serial.epoch(0)), next(serial.epoch(1))
    assert not torch.equal(e0["image"], e1["image"])  # each epoch is a new shuffle


def test_validation_keeps_order_and_the_last_partial_batch(scene_cache):
    data = tiny_synthetic(val=20)
    loader = build_loader(data, ("seg",), "val", cache_dir=scene_cache)
    sizes = [b["image"].shape[0] for b in loader.epoch(0)]
    assert sizes == [16, 4]
    first = next(loader.epoch(3))
    ds = loader.dataset
    assert torch.equal(first["seg"][0], ds[(0, 0, 0)]["seg"])

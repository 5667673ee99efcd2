"""Scenes by (seed, split, index), quantised to their stored form, stacked in batches.

Each split is a disjoint range of scene indices (`SPLIT_OFFSETS`), and a scene's RNG depends on
nothing but (seed, split, index), so a scene is the same whichever worker makes it, in whatever
order (docs/synthetic-data.md §3).
"""

from __future__ import annotations

import numpy as np

from automtl_cli.data.synthetic.render import render_scene
from automtl_cli.experiment import SyntheticConfig

__all__ = ["GENERATOR_VERSION", "SPLIT_OFFSETS", "generate_scenes", "quantise_scene",
           "scene_rng"]

GENERATOR_VERSION = 1  # bump when a change alters generated pixels (it is part of the cache key)
SPLIT_OFFSETS = {"train": 0, "train1": 10**7, "train2": 2 * 10**7, "val": 3 * 10**7,
                 "test": 4 * 10**7}


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), SPLIT_OFFSETS[split] + int(index)])


def quantise_scene(scene: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The stored form: ~50 kB per 64×64 scene instead of ~700 kB of float32/int64."""
    return {
        "image": np.round(scene["image"] * 255).astype(np.uint8),
        "seg": scene["seg"].astype(np.uint8),
        "depth": scene["depth"].astype(np.float16),
        "normal": np.round(np.clip(scene["normal"], -1, 1) * 127).astype(np.int8),
        "edge": (scene["edge"] > 0.5).astype(np.uint8),
        "edge2d": np.round(scene["edge2d"] * 255).astype(np.uint8),
        "keypoint": np.round(scene["keypoint"] * 255).astype(np.uint8),
    }


def generate_scenes(cfg: SyntheticConfig, seed: int, split: str, start: int,
                    count: int) -> dict[str, np.ndarray]:
    """Quantised scenes `start .. start+count-1` of a split, stacked along a new first axis."""
    scenes = [quantise_scene(render_scene(cfg, scene_rng(seed, split, i)))
              for i in range(start, start + count)]
    return {k: np.stack([s[k] for s in scenes]) for k in scenes[0]}

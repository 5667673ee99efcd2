"""Drawing a synthetic scene: camera, room, objects, light, fog and noise from one RNG stream.

`draw_scene` makes every random draw of a scene, in a fixed order, before anything is rendered;
`render.py` then only computes. The order of the draws is part of the generated data: changing
it changes every scene (and needs a new `GENERATOR_VERSION`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from automtl_cli.data.synthetic.objects import BOX, CONE, CYLINDER, SPHERE, SceneObject
from automtl_cli.data.synthetic.textures import CHECKER, PLAIN, STRIPES, Texture, draw_texture
from automtl_cli.experiment import SyntheticConfig

__all__ = ["FOV", "Scene", "draw_scene", "place_objects"]

FOV = math.radians(60.0)  # the pinhole camera's field of view
# The texture an object gets when its texture follows its class (`texture_class_correlation`).
_CLASS_TEXTURE = {SPHERE: PLAIN, BOX: CHECKER, CYLINDER: STRIPES, CONE: STRIPES}


@dataclass
class Scene:
    height: float  # the camera's, in metres
    pitch: float  # downwards, in radians
    wall_z: float
    floor_texture: Texture
    wall_texture: Texture
    objects: list[SceneObject]
    light: np.ndarray  # unit direction towards the light
    ambient: float
    fog_density: float
    fog_color: np.ndarray
    noise_sigma: float
    noise_seed: int


def place_objects(rng: np.random.Generator, cfg: SyntheticConfig) -> list[SceneObject]:
    """min_objects..max_objects objects on the floor in front of the camera, apart if possible."""
    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    objects: list[SceneObject] = []
    footprints: list[tuple[float, float, float]] = []
    for _ in range(n):
        cls = int(rng.integers(SPHERE, CONE + 1))
        size = float(rng.uniform(cfg.min_object_size, cfg.max_object_size))
        yaw = float(rng.uniform(0.0, math.pi))
        follows_class = rng.uniform() < cfg.texture_class_correlation
        texture = draw_texture(rng, cfg, _CLASS_TEXTURE[cls] if follows_class else None)
        aspect = rng.uniform(0.6, 1.6, 3)
        tall = float(rng.uniform(1.0, 2.0))
        if cls == SPHERE:
            dims = np.array([0.65 * size])
        elif cls == BOX:
            dims = 0.55 * size * aspect
        elif cls == CYLINDER:
            dims = np.array([0.5 * size, size * tall])
        else:
            dims = np.array([0.6 * size, size * (tall + 0.2)])
        radius = float(np.max(dims[:1] if cls != BOX else np.hypot(dims[0], dims[2])))
        cx = cz = 0.0
        for _attempt in range(12):  # a fixed number of draws keeps the RNG stream aligned
            z = float(rng.uniform(1.6, 5.0))
            x = float(rng.uniform(-0.8, 0.8) * z * math.tan(FOV / 2))
            if all(math.hypot(x - fx, z - fz) > 0.8 * (radius + fr) for fx, fz, fr in footprints):
                cx, cz = x, z
                break
            cx, cz = x, z
        footprints.append((cx, cz, radius))
        base_y = dims[0] if cls == SPHERE else 0.0
        objects.append(SceneObject(cls, np.array([cx, base_y, cz]), yaw, dims, texture))
    return objects


def draw_scene(cfg: SyntheticConfig, rng: np.random.Generator) -> Scene:
    """Every random choice of one scene, in the stream's order."""
    height = float(rng.uniform(1.2, 2.0))
    pitch = float(rng.uniform(0.15, 0.45))
    wall_z = float(rng.uniform(7.0, 10.0))
    floor_texture = draw_texture(rng, cfg)
    wall_texture = draw_texture(rng, cfg)
    objects = place_objects(rng, cfg)
    azimuth = float(rng.uniform(0.0, 2 * math.pi))
    elevation = float(rng.uniform(0.5, 1.2))
    light = np.array([math.cos(elevation) * math.cos(azimuth), math.sin(elevation),
                      math.cos(elevation) * math.sin(azimuth)])
    ambient = float(rng.uniform(0.25, 0.45))
    fog_density = float(rng.uniform(0.0, cfg.fog))
    fog_color = np.full(3, rng.uniform(0.5, 0.9)) + rng.uniform(-0.05, 0.05, 3)
    noise_sigma = float(rng.uniform(0.0, cfg.noise))
    noise_seed = int(rng.integers(2**63))
    return Scene(height, pitch, wall_z, floor_texture, wall_texture, objects, light, ambient,
                 fog_density, fog_color, noise_sigma, noise_seed)

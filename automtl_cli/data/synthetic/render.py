"""Rendering a drawn scene: one ray cast gives the image and every label, so they agree.

Rays leave a pinhole camera, one per pixel centre; the nearest hit among floor, back wall and
objects gives depth (the ray parameter along an unnormalised direction is the camera-frame z),
instance ids, classes, normals and albedo. The image adds Lambertian light with cast shadows
(a second ray per lit pixel), fog and sensor noise. Shapes: P = H·W pixels, rays and points
P×3, per-pixel values P until they are reshaped to H×W at the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from automtl_cli.data.synthetic.geometry import dot
from automtl_cli.data.synthetic.labels import edge_map, keypoint_map, sobel
from automtl_cli.data.synthetic.scene import FOV, Scene, draw_scene
from automtl_cli.experiment import SyntheticConfig

__all__ = ["render_scene"]

_FLOOR, _WALL = 0, 1  # instance ids (and seg classes) of the room; object k has id k + 2


@dataclass
class _Camera:
    f: float  # focal length in pixels
    origin: np.ndarray
    axes: tuple[np.ndarray, np.ndarray, np.ndarray]  # camera x (right), y (down), z (forward)
    rays: np.ndarray  # P×3, unnormalised so that t along a ray is the camera-frame depth


def _camera(size: int, scene: Scene) -> _Camera:
    f = (size / 2) / math.tan(FOV / 2)
    coords = (np.arange(size) + 0.5 - size / 2) / f
    v, u = np.meshgrid(coords, coords, indexing="ij")
    sp, cp = math.sin(scene.pitch), math.cos(scene.pitch)
    axes = (np.array([1.0, 0, 0]), np.array([0, -cp, -sp]), np.array([0, -sp, cp]))
    rays = np.stack([u, -v * cp - sp, cp - v * sp], axis=-1).reshape(-1, 3)
    return _Camera(f, np.array([0.0, scene.height, 0.0]), axes, rays)


def _cast(scene: Scene, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Depth and instance id of the nearest hit of every ray."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t_floor = np.where(d[:, 1] < 0, -scene.height / d[:, 1], np.inf)
        t_wall = np.where(d[:, 2] > 0, scene.wall_z / d[:, 2], np.inf)
    depth = np.minimum(t_floor, t_wall)
    ids = np.where(t_floor <= t_wall, _FLOOR, _WALL)
    for k, obj in enumerate(scene.objects):
        t = obj.intersect(o, d)
        closer = t < depth
        depth = np.where(closer, t, depth)
        ids = np.where(closer, k + 2, ids)
    return depth, ids


def _surfaces(scene: Scene, ids: np.ndarray,
              points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World normal, albedo and seg class at every hit point."""
    normal_w = np.zeros_like(points)
    albedo = np.zeros_like(points)
    cls = np.zeros(ids.shape, np.int64)
    normal_w[ids == _FLOOR] = (0.0, 1.0, 0.0)
    normal_w[ids == _WALL] = (0.0, 0.0, -1.0)
    floor_pts, wall_pts = points[ids == _FLOOR], points[ids == _WALL]
    albedo[ids == _FLOOR] = scene.floor_texture.albedo(floor_pts * np.array([1.0, 0.0, 1.0]))
    albedo[ids == _WALL] = scene.wall_texture.albedo(wall_pts * np.array([1.0, 1.0, 0.0]))
    cls[ids == _WALL] = _WALL
    for k, obj in enumerate(scene.objects):
        mask = ids == k + 2
        if mask.any():
            normal_w[mask] = obj.normal(points[mask])
            albedo[mask] = obj.texture.albedo(obj.to_local(points[mask]))
            cls[mask] = obj.cls
    return normal_w, albedo, cls


def _shade(scene: Scene, ids: np.ndarray, points: np.ndarray, normal_w: np.ndarray,
           albedo: np.ndarray, depth: np.ndarray, d: np.ndarray) -> np.ndarray:
    """The clean (noise-free) colour of every pixel: light, cast shadows, fog."""
    light = scene.light
    lit = np.clip(dot(normal_w, light), 0.0, None)
    shadow_o = points + 1e-3 * normal_w
    shadow_d = np.broadcast_to(light, points.shape)
    shadowed = np.zeros(ids.shape, bool)
    for k, obj in enumerate(scene.objects):
        test = (lit > 0) & (ids != k + 2) & ~shadowed
        if test.any():
            shadowed[test] = np.isfinite(obj.intersect(shadow_o[test], shadow_d[test]))
    shade = scene.ambient + (1.0 - scene.ambient) * lit * ~shadowed
    fog = np.exp(-scene.fog_density * depth * np.sqrt(dot(d, d)))[:, None]
    return np.clip(albedo * shade[:, None] * fog + scene.fog_color * (1.0 - fog), 0.0, 1.0)


def render_scene(cfg: SyntheticConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One scene as float arrays: image H×W×3 in [0, 1] and every label (docs/synthetic-data.md)."""
    size = cfg.image_size
    scene = draw_scene(cfg, rng)
    cam = _camera(size, scene)
    depth, ids = _cast(scene, cam.origin, cam.rays)
    points = cam.origin + depth[:, None] * cam.rays
    normal_w, albedo, cls = _surfaces(scene, ids, points)
    clean = _shade(scene, ids, points, normal_w, albedo, depth, cam.rays).reshape(size, size, 3)
    noise = np.random.default_rng(scene.noise_seed).normal(0.0, 1.0, clean.shape)
    image = np.clip(clean + noise * scene.noise_sigma, 0.0, 1.0)

    normal_c = np.stack([dot(normal_w, axis) for axis in cam.axes], axis=-1)
    normal_c = normal_c.reshape(size, size, 3)
    depth = depth.reshape(size, size)
    ids = ids.reshape(size, size)
    gray = clean[..., 0] * 0.299 + clean[..., 1] * 0.587 + clean[..., 2] * 0.114
    keypoint = keypoint_map(scene.objects, cam.origin, cam.axes, cam.f, depth,
                            cfg.keypoint_sigma * size / 64.0)
    return {
        "image": image,
        "seg": cls.reshape(size, size),
        "depth": depth,
        "normal": normal_c,
        "edge": edge_map(ids, depth, normal_c).astype(np.float64),
        "edge2d": sobel(gray),
        "keypoint": keypoint,
    }

"""The objects of the synthetic scenes: sphere, box, cylinder and cone, ray-cast analytically.

Each object is convex and stands on the floor (y = 0), turned by `yaw` about the vertical axis;
its maths works in its own frame (origin at the base centre, or the centre for a sphere): a
quadratic solve for the sphere, the cylinder's side and the cone, the slab method for the box,
a plane test for the cylinder's cap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from automtl_cli.data.synthetic.geometry import EPS, dot, nearest_root, normalise
from automtl_cli.data.synthetic.textures import Texture

__all__ = ["BOX", "CLASS_NAMES", "CONE", "CYLINDER", "SPHERE", "SceneObject"]

CLASS_NAMES = ("floor", "wall", "sphere", "box", "cylinder", "cone")  # the seg class ids
SPHERE, BOX, CYLINDER, CONE = 2, 3, 4, 5


@dataclass
class SceneObject:
    cls: int
    center: np.ndarray  # base centre on the floor for box/cylinder/cone; the centre for spheres
    yaw: float
    dims: np.ndarray  # sphere (r,), box (half x, half y, half z), cylinder/cone (r, height)
    texture: Texture

    def to_local(self, p: np.ndarray) -> np.ndarray:
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        d = p - self.center
        return np.stack([c * d[..., 0] + s * d[..., 2], d[..., 1],
                         -s * d[..., 0] + c * d[..., 2]], axis=-1)

    def to_local_dir(self, v: np.ndarray) -> np.ndarray:
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        return np.stack([c * v[..., 0] + s * v[..., 2], v[..., 1],
                         -s * v[..., 0] + c * v[..., 2]], axis=-1)

    def to_world_dir(self, v: np.ndarray) -> np.ndarray:
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        return np.stack([c * v[..., 0] - s * v[..., 2], v[..., 1],
                         s * v[..., 0] + c * v[..., 2]], axis=-1)

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        """The ray parameter of the nearest hit of rays o + t d (inf where they miss)."""
        lo, ld = self.to_local(o), self.to_local_dir(d)
        if self.cls == SPHERE:
            r = self.dims[0]
            return nearest_root(dot(ld, ld), 2 * dot(lo, ld), dot(lo, lo) - r * r,
                                lambda t: np.ones(t.shape, bool))
        if self.cls == BOX:
            return self._box_t(lo, ld)
        r, h = self.dims
        a = ld[..., 0] ** 2 + ld[..., 2] ** 2
        b = 2 * (lo[..., 0] * ld[..., 0] + lo[..., 2] * ld[..., 2])
        c = lo[..., 0] ** 2 + lo[..., 2] ** 2

        def in_height(t: np.ndarray) -> np.ndarray:
            y = lo[..., 1] + t * ld[..., 1]
            return (y >= 0) & (y <= h)

        if self.cls == CYLINDER:
            side = nearest_root(a, b, c - r * r, in_height)
            with np.errstate(divide="ignore", invalid="ignore"):
                tc = (h - lo[..., 1]) / ld[..., 1]
            px = lo[..., 0] + tc * ld[..., 0]
            pz = lo[..., 2] + tc * ld[..., 2]
            cap = np.where((tc > EPS) & (px * px + pz * pz <= r * r), tc, np.inf)
            return np.minimum(side, cap)
        k2 = (r / h) ** 2  # cone: x² + z² = k² (h − y)²
        hy = h - lo[..., 1]
        return nearest_root(a - k2 * ld[..., 1] ** 2, b + 2 * k2 * hy * ld[..., 1],
                            c - k2 * hy * hy, in_height)

    def _box_t(self, lo: np.ndarray, ld: np.ndarray) -> np.ndarray:
        half = self.dims
        lo = lo - np.array([0.0, half[1], 0.0])
        with np.errstate(divide="ignore", invalid="ignore"):
            t1 = (-half - lo) / ld
            t2 = (half - lo) / ld
        near = np.nan_to_num(np.max(np.minimum(t1, t2), axis=-1), nan=np.inf)
        far = np.nan_to_num(np.min(np.maximum(t1, t2), axis=-1), nan=-np.inf)
        return np.where((near <= far) & (near > EPS), near, np.inf)

    def normal(self, p: np.ndarray) -> np.ndarray:
        """Unit world normals at surface points `p`."""
        lp = self.to_local(p)
        if self.cls == SPHERE:
            n = lp
        elif self.cls == BOX:
            q = (lp - np.array([0.0, self.dims[1], 0.0])) / self.dims
            axis = np.argmax(np.abs(q), axis=-1)
            n = np.zeros_like(lp)
            np.put_along_axis(n, axis[..., None],
                              np.sign(np.take_along_axis(q, axis[..., None], -1)), -1)
        elif self.cls == CYLINDER:
            h = self.dims[1]
            top = lp[..., 1] >= h - 1e-6
            n = np.where(top[..., None], np.array([0.0, 1.0, 0.0]),
                         lp * np.array([1.0, 0.0, 1.0]))
        else:
            r, h = self.dims
            k2 = (r / h) ** 2
            n = np.stack([lp[..., 0], k2 * (h - lp[..., 1]), lp[..., 2]], axis=-1)
        return normalise(self.to_world_dir(n))

    def keypoints(self) -> list[tuple[np.ndarray, float]]:
        """World points and how far behind the visible surface each may lie."""
        if self.cls == SPHERE:
            return [(self.center, float(self.dims[0]))]
        if self.cls == BOX:
            hx, hy, hz = self.dims
            corners = [np.array([sx * hx, hy + sy * hy, sz * hz])
                       for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]
            return [(self.center + self.to_world_dir(c), 0.0) for c in corners]
        return [(self.center + np.array([0.0, self.dims[1], 0.0]), 0.0)]

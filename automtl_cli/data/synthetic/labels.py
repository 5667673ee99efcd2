"""The label maps that need more than the ray cast's per-pixel values: edges and keypoints.

seg, depth and normal come straight out of the ray cast (render.py); the maps here are computed
from it: occlusion and crease edges from instance ids and normals, texture edges from the clean
render, keypoint heatmaps from the objects' 3-D keypoints tested against the z-buffer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from automtl_cli.data.synthetic.geometry import dot
from automtl_cli.data.synthetic.objects import SceneObject

__all__ = ["edge_map", "keypoint_map", "sobel"]

_CREASE_COS = math.cos(math.radians(32.0))  # a normal crease sharper than 32° is an edge


def sobel(gray: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude / 2, clipped to [0, 1] (the edge2d label)."""
    p = np.pad(gray, 1, mode="edge")
    gx = (p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[1:-1, :-2] + p[2:, :-2])
    gy = (p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[:-2, 1:-1] + p[:-2, 2:])
    return np.clip(np.sqrt(gx * gx + gy * gy) / 2.0, 0.0, 1.0)


def edge_map(ids: np.ndarray, depth: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Mark the nearer pixel of every neighbour pair across an instance change or a crease."""
    edge = np.zeros(ids.shape, bool)
    for axis in (0, 1):
        a = [slice(None), slice(None)]
        b = [slice(None), slice(None)]
        a[axis], b[axis] = slice(None, -1), slice(1, None)
        a, b = tuple(a), tuple(b)
        jump = (ids[a] != ids[b]) | (dot(normal[a], normal[b]) < _CREASE_COS)
        a_nearer = depth[a] <= depth[b]
        edge[a] |= jump & a_nearer
        edge[b] |= jump & ~a_nearer
    return edge


def keypoint_map(objects: Sequence[SceneObject], origin: np.ndarray,
                 axes: tuple[np.ndarray, ...], f: float, zbuf: np.ndarray,
                 sigma: float) -> np.ndarray:
    """Gaussian heatmaps (max-combined) at the keypoints the z-buffer shows."""
    size = zbuf.shape[0]
    heat = np.zeros(zbuf.shape)
    grid = np.arange(size, dtype=np.float64)
    for obj in objects:
        for point, behind in obj.keypoints():
            rel = point - origin
            xc, yc, zc = (float(dot(rel, a)) for a in axes)
            if zc < 0.1:
                continue
            col = f * xc / zc + size / 2 - 0.5
            row = f * yc / zc + size / 2 - 0.5
            ri, ci = round(row), round(col)
            if not (0 <= ri < size and 0 <= ci < size):
                continue
            if zc - behind > zbuf[ri, ci] * 1.03 + 0.03:
                continue  # hidden behind something nearer
            g_r = np.exp(-((grid - row) ** 2) / (2 * sigma * sigma))
            g_c = np.exp(-((grid - col) ** 2) / (2 * sigma * sigma))
            heat = np.maximum(heat, g_r[:, None] * g_c[None, :])
    return heat

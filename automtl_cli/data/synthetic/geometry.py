"""Ray and quadric maths of the synthetic scenes, elementwise in numpy.

No BLAS (`@`) anywhere: matrix products may differ by a few ULPs between numpy builds, the
elementwise operations below do not (docs/synthetic-data.md §3).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["EPS", "dot", "nearest_root", "normalise"]

EPS = 1e-4  # the smallest ray parameter that counts as a hit (no self-intersection)


def dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot product without BLAS (bit-stable across numpy builds)."""
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1] + a[..., 2] * b[..., 2]


def normalise(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.sqrt(dot(v, v)), 1e-12)[..., None]


def nearest_root(a: np.ndarray, b: np.ndarray, c: np.ndarray,
                 valid: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Smallest t > eps solving a t² + b t + c = 0 whose hit point passes `valid(t)`."""
    disc = b * b - 4 * a * c
    ok = (disc >= 0) & (np.abs(a) > 1e-12)
    root = np.sqrt(np.where(ok, disc, 0.0))
    den = np.where(ok, 2 * a, 1.0)
    t = np.full(a.shape, np.inf)
    for sign in (1.0, -1.0):  # larger root last, so a valid near root wins
        cand = (-b + sign * root) / den
        good = ok & (cand > EPS) & valid(cand)
        t = np.where(good & (cand < t), cand, t)
    return t

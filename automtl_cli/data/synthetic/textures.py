"""Solid textures of the synthetic scenes: plain, stripes or checker, in a surface's own frame."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from automtl_cli.data.synthetic.geometry import dot, normalise
from automtl_cli.experiment import SyntheticConfig

__all__ = ["CHECKER", "PLAIN", "STRIPES", "Texture", "draw_texture"]

PLAIN, STRIPES, CHECKER = 0, 1, 2


@dataclass
class Texture:
    kind: int  # PLAIN, STRIPES or CHECKER
    color: np.ndarray
    contrast: float
    freq: float
    direction: np.ndarray
    phase: float

    def albedo(self, local: np.ndarray) -> np.ndarray:
        """The colour at points given in the textured surface's frame."""
        if self.kind == STRIPES:
            s = np.floor(self.freq * dot(local, self.direction) + self.phase) % 2
        elif self.kind == CHECKER:
            q = np.floor(self.freq * local + self.phase)
            s = (q[..., 0] + q[..., 1] + q[..., 2]) % 2
        else:
            s = np.zeros(local.shape[:-1])
        return self.color * (1.0 - self.contrast * s)[..., None]


def draw_texture(rng: np.random.Generator, cfg: SyntheticConfig,
                 kind: int | None = None) -> Texture:
    """A random texture; `kind` overrides the drawn kind, which is drawn anyway (stream order)."""
    drawn_kind = int(rng.integers(3))
    col = rng.uniform(0.15, 0.95, 3)
    contrast = float(np.clip(rng.uniform(0.2, 0.7) * cfg.texture_contrast, 0.0, 1.0))
    freq = float(rng.uniform(1.5, 6.0) * cfg.texture_frequency)
    direction = normalise(rng.normal(size=3))
    phase = float(rng.uniform(0.0, 2.0))
    return Texture(drawn_kind if kind is None else kind, col, contrast, freq, direction, phase)

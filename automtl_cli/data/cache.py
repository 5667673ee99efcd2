"""The on-disk cache of generated synthetic scenes: compact chunks, made by worker processes.

Scenes are generated once and kept, never committed: under `$AUTOMTL_CACHE`, else
`~/.cache/automtl`, in `synthetic/v<generator>-<size>px-<key>/<split>/<chunk>.npz`, where the key
hashes everything that changes a scene's pixels (the scene knobs, the data seed and the
generator version) and nothing that does not (split counts), so a larger split reuses the chunks
a smaller one made. A chunk holds `CHUNK` consecutive scenes in their quantised form (about
50 kB a scene at 64×64). Missing chunks are made in parallel by a process pool (`num_workers`);
a scene depends only on (seed, split, index), so the cache's content never depends on the pool.
A chunk that cannot be read back is logged and made again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import zipfile
from pathlib import Path

import numpy as np

from automtl_cli.artifacts import atomic_write, write_json
from automtl_cli.data.synthetic import GENERATOR_VERSION, generate_scenes
from automtl_cli.errors import BadInput
from automtl_cli.experiment import SyntheticConfig

__all__ = ["CHUNK", "SceneCache", "default_cache_dir"]

logger = logging.getLogger(__name__)

CHUNK = 32
_KEYS = ("image", "seg", "depth", "normal", "edge", "edge2d", "keypoint")


def default_cache_dir() -> Path:
    """`$AUTOMTL_CACHE`, else `~/.cache/automtl` (never inside the repository)."""
    env = os.environ.get("AUTOMTL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "automtl"


def _make_chunk(job: tuple[SyntheticConfig, int, str, int, int, str]) -> str:
    """Worker entry: generate one chunk and write it atomically."""
    cfg, seed, split, start, count, path = job
    arrays = generate_scenes(cfg, seed, split, start, count)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write)
    return path


class SceneCache:
    """Chunks of one scene configuration and data seed."""

    def __init__(self, cfg: SyntheticConfig, seed: int, root: str | os.PathLike | None = None):
        self.cfg = cfg
        self.seed = int(seed)
        key_data = {"generator": GENERATOR_VERSION, "seed": self.seed, **cfg.scene_key()}
        key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:16]
        base = Path(root).expanduser() if root is not None else default_cache_dir()
        self.dir = base / "synthetic" / f"v{GENERATOR_VERSION}-{cfg.image_size}px-{key}"
        self._key_data = key_data

    def chunk_path(self, split: str, chunk: int) -> Path:
        return self.dir / split / f"{chunk:06d}.npz"

    def ensure(self, split: str, count: int, num_workers: int = 0) -> None:
        """Generate whatever chunks `count` scenes of `split` need and the cache lacks."""
        chunks = range((count + CHUNK - 1) // CHUNK)
        missing = [c for c in chunks if not self.chunk_path(split, c).is_file()]
        if not missing:
            return
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            if not (self.dir / "config.json").exists():
                write_json(self.dir / "config.json", self._key_data)
        except OSError as e:
            raise BadInput(f"{self.dir}: cannot write the synthetic-data cache ({e}); set "
                           "AUTOMTL_CACHE to a writable directory") from e
        logger.info("generating %d synthetic %s scenes (%dpx) into %s", len(missing) * CHUNK,
                    split, self.cfg.image_size, self.dir)
        jobs = [(self.cfg, self.seed, split, c * CHUNK, CHUNK, str(self.chunk_path(split, c)))
                for c in missing]
        # Generation is a one-off, CPU-bound job: use the machine's cores even when the
        # training loop reads batches in the main process (num_workers 0).
        workers = min(num_workers or min(os.cpu_count() or 1, 8), len(jobs))
        if workers <= 1:
            for job in jobs:
                _make_chunk(job)
            return
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        with ctx.Pool(workers) as pool:
            for _ in pool.imap_unordered(_make_chunk, jobs):
                pass

    def load(self, split: str, count: int, num_workers: int = 0) -> dict[str, np.ndarray]:
        """The first `count` scenes of `split`, generating what is missing."""
        if count <= 0:
            raise BadInput(f"the synthetic {split} split is empty (count {count})")
        self.ensure(split, count, num_workers)
        parts = [self._read_chunk(split, c) for c in range((count + CHUNK - 1) // CHUNK)]
        return {k: np.concatenate([p[k] for p in parts])[:count] for k in _KEYS}

    def _read_chunk(self, split: str, chunk: int) -> dict[str, np.ndarray]:
        path = self.chunk_path(split, chunk)
        for attempt in range(2):
            try:
                with np.load(path) as z:
                    arrays = {k: z[k] for k in _KEYS}
                size = self.cfg.image_size
                if arrays["image"].shape != (CHUNK, size, size, 3):
                    raise ValueError(f"image shape {arrays['image'].shape}")
                return arrays
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
                if attempt:
                    raise BadInput(f"{path}: cached scenes are unreadable after regenerating "
                                   f"them ({e})") from e
                logger.warning("%s: cached scenes are unreadable (%s); generating them again",
                               path, e)
                _make_chunk((self.cfg, self.seed, split, chunk * CHUNK, CHUNK, str(path)))
        raise AssertionError("unreachable")

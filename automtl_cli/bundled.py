"""The backbones and experiments that ship inside the package (`automtl_cli/specs/`).

They are package data, found through importlib.resources, so an installed wheel has them as the
source tree does (where `specs/` at the root links to the same files). A backbone can be named
timm-style: `automtl compile resnet34` or `resnet34.prototxt`, when no such file exists here,
is the bundled spec, with a note saying so.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

__all__ = ["BUNDLED_SUFFIX", "backbone_names", "bundled_backbone", "experiment_file",
           "resolve_backbone", "specs_dir"]

BUNDLED_SUFFIX = ".prototxt"


def specs_dir() -> Path:
    """The bundled specs' directory (a real directory: wheels install unpacked)."""
    return Path(os.fspath(files("automtl_cli") / "specs"))


def backbone_names() -> list[str]:
    """Names of the bundled backbones, sorted (`resnet34`, ...)."""
    return sorted(p.stem for p in specs_dir().glob(f"*{BUNDLED_SUFFIX}"))


def bundled_backbone(name: str) -> Path | None:
    """The bundled backbone `name` (with or without `.prototxt`), or None."""
    stem = name[:-len(BUNDLED_SUFFIX)] if name.endswith(BUNDLED_SUFFIX) else name
    if not stem or os.sep in stem or "/" in stem:
        return None
    path = specs_dir() / f"{stem}{BUNDLED_SUFFIX}"
    return path if path.is_file() else None


def resolve_backbone(spec: str) -> tuple[str, str | None]:
    """(the file to read, a note) for a backbone argument: an existing file is itself (no
    note); a bare bundled name that names no file here is the bundled spec."""
    if ":" in spec or os.path.exists(spec):
        return spec, None
    path = bundled_backbone(spec)
    if path is None:
        return spec, None
    return os.fspath(path), (f"{spec}: no such file here, using the built-in backbone "
                             f"{path.stem} ({path}; `automtl inspect --list` lists them)")


def experiment_file(name: str) -> Path:
    """A bundled experiment, `specs/experiments/NAME.prototxt`."""
    return specs_dir() / "experiments" / f"{name}{BUNDLED_SUFFIX}"

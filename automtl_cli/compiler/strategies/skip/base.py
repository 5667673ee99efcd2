"""The `--skip` axis: what a search node's skip branch is where it must change the shape.

Where input and output shapes agree the skip is the identity in every mode; elsewhere the
strategy picks the `SkipPlan` kind (`compiler/space.py`), which the supermodel, the derived tree
and the export all read.
"""

from __future__ import annotations

from abc import ABC
from typing import ClassVar

from automtl_cli.registry import Choice, Registry

__all__ = ["SKIP_MODES", "SkipMode", "SkipStrategy"]


class SkipMode(Choice):
    REFERENCE = "reference"
    CHEAP = "cheap"


class SkipStrategy(ABC):
    """One `--skip` choice."""

    name: ClassVar[SkipMode]
    reshape_kind: ClassVar[str]  # "conv" (1×1 conv + BN per task) or "free" (no parameters)


SKIP_MODES: Registry[SkipStrategy] = Registry("skip", SkipMode)

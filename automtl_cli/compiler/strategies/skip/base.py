"""The `--skip` axis: what a search node's skip branch is where it must change the shape.

Where input and output shapes agree the skip is the identity in every mode; elsewhere the
strategy picks the `SkipPlan` kind (`compiler/space.py`), which the supermodel, the derived tree
and the export all read.
"""

from __future__ import annotations

from abc import ABC
from typing import ClassVar

from automtl_cli.choices import SkipMode
from automtl_cli.registry import Choice, Registry

__all__ = ["SKIP_MODES", "SkipKind", "SkipMode", "SkipStrategy"]


class SkipKind(Choice):
    """What one node's skip branch is (a `SkipPlan`'s kind)."""

    IDENTITY = "identity"  # shapes agree: the input itself
    CONV = "conv"  # a 1×1 strided convolution + BatchNorm per task
    FREE = "free"  # strided sampling, channels zero-padded or truncated: no parameters


class SkipStrategy(ABC):
    """One `--skip` choice."""

    name: ClassVar[SkipMode]
    reshape_kind: ClassVar[SkipKind]  # where the identity cannot match the output shape


SKIP_MODES: Registry[SkipStrategy] = Registry("skip", SkipMode)

"""`--skip cheap`: parameter-free; the same stride-s sampling as the reference's skip, with
channels zero-padded or truncated instead of a dense 1×1 convolution."""

from __future__ import annotations

from automtl_cli.compiler.strategies.skip.base import SKIP_MODES, SkipKind, SkipMode, SkipStrategy

__all__ = ["CheapSkip"]


@SKIP_MODES.register(SkipMode.CHEAP)
class CheapSkip(SkipStrategy):
    reshape_kind = SkipKind.FREE

"""`--skip reference`, the AutoMTL reference's: a 1×1 convolution with the node's stride followed
by BatchNorm, one per task, wherever the identity cannot match the node's output shape."""

from __future__ import annotations

from automtl_cli.compiler.strategies.skip.base import SKIP_MODES, SkipKind, SkipMode, SkipStrategy

__all__ = ["ReferenceSkip"]


@SKIP_MODES.register(SkipMode.REFERENCE)
class ReferenceSkip(SkipStrategy):
    reshape_kind = SkipKind.CONV

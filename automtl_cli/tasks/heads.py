"""Task heads: the reference's ASPP head, with scaled dilation rates, and a light head.

`ASPPHead` is the DeepLab-v2 "ASPP-L" head of the reference (docs/method.md §4):
four parallel branches, each a dilated 3×3 conv (bias) → ReLU → Dropout → 1×1 conv → ReLU →
Dropout → 1×1 conv to the task's channels, summed; applied to the stride-8 feature without
upsampling. The reference uses hidden width 1024 and rates 6/12/18/24 for a 41×41 feature map
(321 px input at output stride 8). On small inputs those rates read mostly zero padding, so
by default they are scaled by the feature map's size over 41 (≈ input / 321), rounded, at least 1.
`LightHead` (3×3 conv → BN → ReLU → 1×1 conv) suits small models.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from automtl_cli.experiment import HeadConfig, HeadKind

__all__ = ["REFERENCE_FEATURE_SIZE", "ASPPHead", "LightHead", "build_head", "scaled_rates"]

REFERENCE_FEATURE_SIZE = 41  # ceil(321 / 8): the feature map the reference's rates were set for


def scaled_rates(rates: Sequence[int], feature_hw: Sequence[int]) -> tuple[int, ...]:
    """The reference's rates scaled to a feature map of `feature_hw` (rounded, at least 1)."""
    factor = min(feature_hw) / REFERENCE_FEATURE_SIZE
    return tuple(max(1, round(r * factor)) for r in rates)


class ASPPHead(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, *, hidden: int,
                 rates: Sequence[int], dropout: float = 0.5) -> None:
        super().__init__()
        self.rates = tuple(rates)
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(in_channels, hidden, 3, padding=r, dilation=r),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
                nn.Conv2d(hidden, hidden, 1),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
                nn.Conv2d(hidden, out_channels, 1),
            )
            for r in self.rates
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)
        return out


class LightHead(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, *, hidden: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _output_convs(head: nn.Module) -> list[nn.Conv2d]:
    if isinstance(head, ASPPHead):
        return [branch[-1] for branch in head.branches]
    return [head.body[-1]]


def build_head(cfg: HeadConfig, in_channels: int, out_channels: int,
               feature_hw: Sequence[int], *, output_bias: float | None = None) -> nn.Module:
    """A head for a feature map of `in_channels` × `feature_hw`.

    `output_bias` sets the head's initial output (for sparse logit maps, a low prior
    probability, so training does not start by unlearning 0.5 everywhere).
    """
    hidden = cfg.hidden or max(in_channels // 2, 8)
    if cfg.kind is HeadKind.LIGHT:
        head: nn.Module = LightHead(in_channels, out_channels, hidden=hidden)
    else:
        rates = scaled_rates(cfg.rates, feature_hw) if cfg.scale_rates else tuple(cfg.rates)
        head = ASPPHead(in_channels, out_channels, hidden=hidden, rates=rates,
                        dropout=cfg.dropout)
    if output_bias is not None:
        convs = _output_convs(head)
        with torch.no_grad():
            for conv in convs:
                conv.bias.fill_(output_bias / len(convs))
    return head

"""Heads: the reference's ASPP head (shape, size, scaled rates) and the light head."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from automtl_cli.experiment import TASK_TYPES, DataSource, HeadConfig, HeadKind, TaskConfig
from automtl_cli.tasks import ASPPHead, LightHead, build_head, build_task, scaled_rates


def test_rates_scale_with_the_feature_map():
    assert scaled_rates((6, 12, 18, 24), (41, 41)) == (6, 12, 18, 24)
    assert scaled_rates((6, 12, 18, 24), (8, 8)) == (1, 2, 4, 5)  # 64 px at stride 8
    assert scaled_rates((6, 12, 18, 24), (4, 6)) == (1, 1, 2, 2)


def test_aspp_head_keeps_the_feature_size_and_sums_four_branches():
    head = build_head(HeadConfig(hidden=8, dropout=0.0), 16, 5, (8, 8))
    assert isinstance(head, ASPPHead)
    assert [b[0].dilation[0] for b in head.branches] == [1, 2, 4, 5]
    x = torch.randn(2, 16, 8, 8)
    out = head.eval()(x)
    assert out.shape == (2, 5, 8, 8)
    assert torch.allclose(out, sum(b(x) for b in head.branches), atol=1e-6)


def test_aspp_head_has_the_reference_size():
    # the reference's ASPP head (automtl_cli/tasks/heads.py): 23.15 M parameters for 512 input
    # channels and 19 classes
    with torch.device("meta"):
        head = build_head(HeadConfig(hidden=1024, scale_rates=False), 512, 19, (41, 41))
    assert sum(p.numel() for p in head.parameters()) == 23_154_764
    assert [b[0].dilation[0] for b in head.branches] == [6, 12, 18, 24]
    assert head.branches[0][2].p == 0.5


def test_light_head_and_default_width():
    head = build_head(HeadConfig(kind=HeadKind.LIGHT), 32, 3, (8, 8))
    assert isinstance(head, LightHead)
    assert head.body[0].out_channels == 16  # half the feature channels
    assert head(torch.randn(2, 32, 8, 8)).shape == (2, 3, 8, 8)


@pytest.mark.parametrize("name", TASK_TYPES)
def test_every_task_makes_a_head_with_its_channels(name):
    task = build_task(TaskConfig(type=name, head=HeadConfig(hidden=8)), DataSource.SYNTHETIC)
    head = task.make_head(16, (4, 4))
    assert isinstance(head, nn.Module)
    expected = {"seg": 6, "normal": 3}.get(name, 1)
    assert task.channels == expected
    assert head(torch.randn(1, 16, 4, 4)).shape == (1, expected, 4, 4)


def test_sparse_logit_heads_start_near_zero_probability():
    task = build_task(TaskConfig(type="edge", head=HeadConfig(hidden=8)), DataSource.SYNTHETIC)
    head = task.make_head(16, (4, 4))
    for branch in head.branches:
        nn.init.zeros_(branch[-1].weight)
    prob = task.decode(head(torch.randn(1, 16, 4, 4)))
    assert torch.allclose(prob, torch.full_like(prob, torch.sigmoid(torch.tensor(-4.0)).item()))

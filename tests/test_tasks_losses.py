"""Losses on toy tensors: the reference's masks, the resize option, and no NaN on empty batches."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from automtl_cli.experiment import TASK_TYPES, DataSource, Resize, TaskConfig
from automtl_cli.tasks import build_task
from automtl_cli.tasks.losses import (
    align,
    ce_loss,
    depth_loss,
    normal_loss,
    weighted_bce_loss,
)


def test_label_to_pred_downsamples_the_label_by_nearest():
    label = torch.arange(16).reshape(1, 4, 4)
    pred = torch.zeros(1, 3, 2, 2)
    _, small, _ = align(pred, label, None, Resize.LABEL_TO_PRED)
    assert small.tolist() == [[[0, 2], [8, 10]]]
    mask = torch.ones(1, 1, 4, 4, dtype=torch.bool)
    _, depth, small_mask = align(torch.zeros(1, 1, 2, 2), label[:, None].float(), mask,
                                 Resize.LABEL_TO_PRED)
    assert depth.shape == small_mask.shape == (1, 1, 2, 2)


def test_pred_to_label_upsamples_the_prediction():
    pred = torch.zeros(1, 1, 2, 2)
    big, label, _ = align(pred, torch.zeros(1, 1, 8, 8), None, Resize.PRED_TO_LABEL)
    assert big.shape == (1, 1, 8, 8) and label.shape == (1, 1, 8, 8)


def test_cross_entropy_ignores_255_and_is_zero_without_labels():
    pred = torch.randn(2, 3, 4, 4, requires_grad=True)
    label = torch.randint(0, 3, (2, 4, 4))
    label[0] = 255
    expected = F.cross_entropy(pred, label, ignore_index=255)
    assert ce_loss(pred, label).item() == pytest.approx(expected.item())
    empty = ce_loss(pred, torch.full((2, 4, 4), 255))
    assert empty.item() == 0.0
    empty.backward()
    assert torch.isfinite(pred.grad).all()


def test_weighted_cross_entropy_matches_torch():
    pred = torch.randn(2, 3, 4, 4)
    label = torch.randint(0, 3, (2, 4, 4))
    label[1, 0] = 255
    weights = (0.5, 2.0, 1.0)
    expected = F.cross_entropy(pred, label, weight=torch.tensor(weights), ignore_index=255)
    assert ce_loss(pred, label, weights).item() == pytest.approx(expected.item(), rel=1e-5)


def test_depth_loss_is_masked_l1():
    label = torch.tensor([[[[1.0, 2.0, 0.0, 4.0]]]])  # 0: no depth (the reference's 3e-5 rule)
    pred = torch.tensor([[[[1.5, 2.0, 7.0, 5.0]]]])
    assert depth_loss(pred, label, None).item() == pytest.approx((0.5 + 0 + 1.0) / 3)
    mask = torch.tensor([[[[True, True, True, False]]]])
    assert depth_loss(pred, label, mask).item() == pytest.approx(0.25)


def test_normal_loss_is_one_minus_cosine_over_valid_pixels():
    up = torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1)
    label = torch.cat([up, up, torch.zeros(1, 3, 1, 1)], dim=3)  # last pixel unlabelled
    assert normal_loss(label * 5, label, None).item() == pytest.approx(0.0, abs=1e-6)
    opposite = torch.cat([-up, up, up], dim=3)
    assert normal_loss(opposite, label, None).item() == pytest.approx(1.0)  # (2 + 0) / 2


def test_weighted_bce_by_hand():
    label = torch.tensor([[[[0.0, 1.0]]]])
    pred = torch.zeros(1, 1, 1, 2)  # probability 0.5 everywhere: BCE log 2 per pixel
    loss = weighted_bce_loss("edge", pred, label, None, pos_weight=3.0)
    assert loss.item() == pytest.approx(math.log(2))  # (1·log2 + 4·log2) / 5
    pred = torch.tensor([[[[0.0, 2.0]]]])
    bce1 = -math.log(1 / (1 + math.exp(-2)))
    loss = weighted_bce_loss("edge", pred, label, None, pos_weight=3.0)
    assert loss.item() == pytest.approx((math.log(2) + 4 * bce1) / 5)


@pytest.mark.parametrize("resize", list(Resize))
@pytest.mark.parametrize("name", TASK_TYPES)
def test_every_task_loss_is_a_finite_scalar_with_gradients(name, resize):
    task = build_task(TaskConfig(type=name, resize=resize), DataSource.SYNTHETIC)
    g = torch.Generator().manual_seed(1)
    if name == "seg":
        label = torch.randint(0, 6, (2, 8, 8), generator=g)
    elif name == "normal":
        label = F.normalize(torch.randn(2, 3, 8, 8, generator=g), dim=1)
    else:
        label = torch.rand(2, 1, 8, 8, generator=g)
    pred = torch.randn(2, task.channels, 4, 4, generator=g, requires_grad=True)
    loss = task.loss(pred, {name: label})
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0


def test_taskonomy_keypoints_use_the_reference_l1_and_mask():
    task = build_task(TaskConfig(type="keypoint"), DataSource.TASKONOMY)
    assert task.loss_kind == "l1"
    label = torch.tensor([[[[-1.0, 1.0]]]])
    batch = {"keypoint": label, "keypoint_mask": torch.tensor([[[[True, False]]]])}
    assert task.loss(torch.tensor([[[[0.0, 0.0]]]]), batch).item() == pytest.approx(1.0)

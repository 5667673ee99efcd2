"""Metrics on hand-computed toy tensors, in the correct and the reference variant, and Δ_T."""

from __future__ import annotations

import math

import pytest
import torch

from automtl_cli.errors import BadInput
from automtl_cli.experiment import DataSource, TaskConfig
from automtl_cli.tasks import (
    REFERENCE_STL,
    DenseMapMetric,
    DepthMetric,
    NormalMetric,
    SegMetric,
    build_task,
    relative_score,
)


def logits_for(classes: int, argmax: list[list[int]]) -> torch.Tensor:
    """1×C×H×W logits whose argmax is `argmax`."""
    target = torch.tensor(argmax)
    return torch.nn.functional.one_hot(target, classes).permute(2, 0, 1)[None].float() * 10


# --- segmentation ----------------------------------------------------------------------------

def test_miou_and_pixel_accuracy_from_the_confusion_matrix():
    label = torch.tensor([[[0, 0, 1], [2, 255, 1]]])
    pred = logits_for(3, [[0, 1, 1], [2, 2, 0]])
    m = SegMetric("seg", 3)
    m.update(pred, {"seg": label})
    # confusion (rows truth, cols prediction): [[1,1,0],[1,1,0],[0,0,1]]
    assert m.state["confusion"].tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
    out = m.compute()
    assert out["mIoU"] == pytest.approx((1 / 3 + 1 / 3 + 1) / 3)
    assert out["pixel_acc"] == pytest.approx(3 / 5)


def test_reference_miou_drops_classes_without_true_positives():
    # class 3 is in the labels but never predicted right: IoU 0
    label = torch.tensor([[[0, 1, 3, 2]]])
    pred = logits_for(4, [[0, 1, 0, 2]])
    correct, reference = SegMetric("seg", 4), SegMetric("seg", 4, "reference")
    for m in (correct, reference):
        m.update(pred, {"seg": label})
    # IoU: class 0 = 1/2 (one hit, one false positive), class 1 = 1, class 2 = 1, class 3 = 0
    assert correct.compute()["mIoU"] == pytest.approx((0.5 + 1 + 1 + 0) / 4)
    assert reference.compute()["mIoU"] == pytest.approx((0.5 + 1 + 1) / 3)


def test_classes_absent_from_labels_and_predictions_do_not_count():
    label = torch.tensor([[[0, 0, 1, 1]]])
    m = SegMetric("seg", 5)
    m.update(logits_for(5, [[0, 0, 1, 1]]), {"seg": label})
    assert m.compute()["mIoU"] == pytest.approx(1.0)


def test_reference_pixel_accuracy_is_a_batch_weighted_mean_of_batch_means():
    batch_a = {"seg": torch.tensor([[[0, 1, 255, 255]]])}  # 1 image, 2 labelled, 2 right
    pred_a = logits_for(2, [[0, 1, 0, 0]])
    batch_b = {"seg": torch.tensor([[[0, 1, 0, 255]], [[1, 1, 0, 255]]])}  # 2 images, 6, 3
    pred_b = torch.cat([logits_for(2, [[0, 0, 1, 0]]), logits_for(2, [[1, 0, 0, 0]])])
    correct, reference = SegMetric("seg", 2), SegMetric("seg", 2, "reference")
    for m in (correct, reference):
        m.update(pred_a, batch_a)
        m.update(pred_b, batch_b)
    assert correct.compute()["pixel_acc"] == pytest.approx(5 / 8)
    assert reference.compute()["pixel_acc"] == pytest.approx((1 * 1.0 + 2 * 0.5) / 3)


def test_reference_cityscapes_counts_unlabelled_pixels_as_errors():
    batch = {"seg": torch.tensor([[[0, 1, 255, 255]]])}
    pred = logits_for(2, [[0, 1, 0, 0]])
    task = build_task(TaskConfig(type="seg"), DataSource.CITYSCAPES)
    ref = task.metric("reference")
    ref.update(torch.cat([pred, torch.zeros(1, 17, 1, 4)], 1), batch)
    assert ref.compute()["pixel_acc"] == pytest.approx(2 / 4)
    correct = task.metric("correct")
    correct.update(torch.cat([pred, torch.zeros(1, 17, 1, 4)], 1), batch)
    assert correct.compute()["pixel_acc"] == pytest.approx(1.0)


def test_taskonomy_seg_reports_weighted_cross_entropy():
    weights = (2.0, 1.0)
    m = SegMetric("seg", 2, class_weights=weights, report_err=True)
    pred = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])  # 1×2×1×2
    label = torch.tensor([[[0, 1]]])
    m.update(pred, {"seg": label})
    ce0 = -math.log(math.exp(2) / (math.exp(2) + 1))
    ce1 = -math.log(math.exp(1) / (math.exp(1) + 1))
    assert m.compute()["err"] == pytest.approx((2 * ce0 + 1 * ce1) / 3)


def test_predictions_are_upsampled_to_the_label():
    label = torch.zeros(1, 4, 4, dtype=torch.long)
    label[:, :, 2:] = 1
    pred = logits_for(2, [[0, 1], [0, 1]])  # 2×2 prediction of the same layout
    for variant in ("correct", "reference"):
        m = SegMetric("seg", 2, variant)
        m.update(pred, {"seg": label})
        assert m.compute()["pixel_acc"] == pytest.approx(1.0)


# --- depth -----------------------------------------------------------------------------------

def test_depth_errors_and_thresholds():
    label = torch.tensor([[[[1.0, 1.0, 2.0, 0.0]]]])  # the last pixel has no depth
    pred = torch.tensor([[[[1.0, 1.5, 2.2, 9.0]]]])
    m = DepthMetric("depth")
    m.update(pred, {"depth": label})
    out = m.compute()
    assert out["abs_err"] == pytest.approx((0 + 0.5 + 0.2) / 3)
    assert out["rel_err"] == pytest.approx((0 + 0.5 + 0.1) / 3)
    assert out["delta1"] == pytest.approx(100 * 2 / 3)  # ratios 1, 1.5, 1.1
    assert out["delta2"] == pytest.approx(100.0)
    assert out["delta3"] == pytest.approx(100.0)


def test_depth_mask_and_reference_per_batch_means():
    b1 = {"depth": torch.tensor([[[[1.0, 1.0]]]]), "depth_mask": torch.tensor([[[[True, False]]]])}
    p1 = torch.tensor([[[[2.0, 5.0]]]])  # one valid pixel, error 1
    b2 = {"depth": torch.ones(2, 1, 1, 2)}
    p2 = torch.ones(2, 1, 1, 2)  # 4 pixels, error 0
    correct, reference = DepthMetric("depth"), DepthMetric("depth", "reference")
    for m in (correct, reference):
        m.update(p1, b1)
        m.update(p2, b2)
    assert correct.compute()["abs_err"] == pytest.approx(1 / 5)
    assert reference.compute()["abs_err"] == pytest.approx((1 * 1.0 + 2 * 0.0) / 3)


# --- normals ---------------------------------------------------------------------------------

def _tilted(deg: float) -> list[float]:
    r = math.radians(deg)
    return [math.sin(r), 0.0, math.cos(r)]


def test_normal_angles():
    angles = [0.0, 10.0, 20.0, 40.0]
    pred = torch.tensor([_tilted(a) for a in angles] + [[0.0, 0.0, 1.0]]).T.reshape(1, 3, 1, 5)
    label = torch.tensor([[0.0, 0.0, 1.0]] * 4 + [[0.0, 0.0, 0.0]]).T.reshape(1, 3, 1, 5)
    m = NormalMetric("normal")
    m.update(pred * 3.0, {"normal": label})  # predictions need not be unit length
    out = m.compute()
    assert out["mean"] == pytest.approx(17.5, abs=1e-4)
    assert out["median"] == pytest.approx(15.0, abs=0.01)
    assert out["within_11.25"] == pytest.approx(50.0)
    assert out["within_22.5"] == pytest.approx(75.0)
    assert out["within_30"] == pytest.approx(75.0)
    expected_cos = sum(math.cos(math.radians(a)) for a in angles) / 4
    assert out["cos"] == pytest.approx(expected_cos)


def test_normal_median_of_odd_count_and_mask():
    angles = [5.0, 30.0, 60.0]
    pred = torch.tensor([_tilted(a) for a in angles]).T.reshape(1, 3, 1, 3)
    label = torch.tensor([[0.0, 0.0, 1.0]] * 3).T.reshape(1, 3, 1, 3)
    m = NormalMetric("normal")
    m.update(pred, {"normal": label, "normal_mask": torch.tensor([[[[True, True, False]]]])})
    out = m.compute()
    assert out["mean"] == pytest.approx(17.5, abs=1e-4)
    assert out["median"] == pytest.approx(17.5, abs=0.01)


# --- edges and keypoints ---------------------------------------------------------------------

def test_dense_map_errors_balanced_error_and_f1():
    label = torch.tensor([[[[0.0, 0.0, 0.5, 1.0]]]])
    pred = torch.tensor([[[[0.05, 0.0, 0.5, 0.5]]]])
    m = DenseMapMetric("keypoint", balanced=True, f1=True, threshold=0.1)
    m.update(pred, {"keypoint": label})
    out = m.compute()
    assert out["err"] == pytest.approx(0.55 / 4)
    assert out["bal_err"] == pytest.approx((0.25 + 0.025) / 2)
    assert out["f1"] == pytest.approx(1.0)
    m.update(torch.tensor([[[[0.5, 0.0, 0.0, 0.5]]]]), {"keypoint": label})
    # second batch: one false positive (pixel 0), one miss (pixel 2), one hit (pixel 3)
    assert m.compute()["f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))


def test_trivial_answers_score_badly_on_the_balanced_error():
    label = torch.zeros(1, 1, 4, 4)
    label[..., 1, 1] = 1.0
    zero, one = DenseMapMetric("edge", balanced=True), DenseMapMetric("edge", balanced=True)
    zero.update(torch.zeros_like(label), {"edge": label})
    one.update(torch.ones_like(label), {"edge": label})
    assert zero.compute()["bal_err"] == pytest.approx(0.5)
    assert one.compute()["bal_err"] == pytest.approx(0.5)
    assert zero.compute()["err"] == pytest.approx(1 / 16)


def test_synthetic_logit_tasks_decode_with_a_sigmoid():
    task = build_task(TaskConfig(type="edge"), DataSource.SYNTHETIC)
    m = task.metric()
    label = torch.tensor([[[[0.0, 1.0]]]])
    m.update(torch.tensor([[[[-50.0, 50.0]]]]), {"edge": label})
    assert m.compute() == pytest.approx({"err": 0.0, "bal_err": 0.0, "f1": 1.0})


def test_reference_dense_error_is_per_batch():
    m = DenseMapMetric("edge2d", "reference")
    m.update(torch.ones(1, 1, 1, 2), {"edge2d": torch.zeros(1, 1, 1, 2)})  # error 1
    m.update(torch.zeros(3, 1, 2, 2), {"edge2d": torch.zeros(3, 1, 2, 2)})  # error 0
    assert m.compute()["err"] == pytest.approx(1 / 4)


# --- exact reduction -------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["correct", "reference"])
@pytest.mark.parametrize("task_name", ["seg", "depth", "normal", "edge", "edge2d", "keypoint"])
def test_merged_accumulators_equal_one_pass(task_name, variant):
    task = build_task(TaskConfig(type=task_name), DataSource.SYNTHETIC)
    g = torch.Generator().manual_seed(0)
    batches = []
    for n in (2, 3, 1, 2):
        if task_name == "seg":
            label = torch.randint(0, task.channels, (n, 8, 8), generator=g)
        elif task_name == "normal":
            label = torch.nn.functional.normalize(torch.randn(n, 3, 8, 8, generator=g), dim=1)
        else:
            label = torch.rand(n, 1, 8, 8, generator=g) + (0.1 if task_name == "depth" else 0)
        batches.append((torch.randn(n, task.channels, 4, 4, generator=g), {task_name: label}))
    whole, first, second = (task.metric(variant) for _ in range(3))
    for i, (pred, batch) in enumerate(batches):
        whole.update(pred, batch)
        (first if i % 2 else second).update(pred, batch)
    first.merge(second)
    assert first.compute() == pytest.approx(whole.compute(), nan_ok=True)
    assert set(whole.compute()) == set(task.higher_is_better)


# --- Δ_T -------------------------------------------------------------------------------------

def test_relative_score_per_task_and_mean():
    metrics = {"seg": {"mIoU": 0.4, "pixel_acc": 0.9}, "depth": {"abs_err": 0.8}}
    stl = {"seg": {"mIoU": 0.5, "pixel_acc": 0.9}, "depth": {"abs_err": 1.0}}
    hib = {"seg": {"mIoU": True, "pixel_acc": True}, "depth": {"abs_err": False}}
    result = relative_score(metrics, stl, hib)
    assert result.per_task == pytest.approx({"seg": -10.0, "depth": 20.0})
    assert result.mean == pytest.approx(5.0)


def test_relative_score_against_the_reference_values_is_zero_at_the_reference():
    stl = REFERENCE_STL[DataSource.NYUV2]
    tasks = [build_task(TaskConfig(type=t), DataSource.NYUV2) for t in stl]
    result = relative_score(stl, stl, {t.name: t.higher_is_better for t in tasks},
                            {t.name: t.delta_metrics for t in tasks})
    assert result.mean == pytest.approx(0.0)
    assert all(set(t.delta_metrics) == set(stl[t.name]) for t in tasks)


def test_relative_score_refuses_missing_metrics_and_zero_baselines():
    hib = {"depth": {"abs_err": False}}
    with pytest.raises(BadInput, match="missing"):
        relative_score({"depth": {}}, {"depth": {"abs_err": 1.0}}, hib)
    with pytest.raises(BadInput, match="is 0"):
        relative_score({"depth": {"abs_err": 1.0}}, {"depth": {"abs_err": 0.0}}, hib)

"""Confusion-matrix metrics against hand-computed values (ignore pixels, absent classes)."""

from __future__ import annotations

import math

import pytest
import torch
from segcore.evaluation.metrics import SegMetric, confusion_matrix, metrics_from_confusion


def test_confusion_matrix_skips_ignore():
    label = torch.tensor([[0, 0, 1, 255], [1, 2, 2, 255]])
    pred = torch.tensor([[0, 1, 1, 2], [1, 2, 0, 0]])
    cm = confusion_matrix(pred, label, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_metrics_by_hand():
    # rows = ground truth, cols = prediction
    cm = torch.tensor([[3, 1, 0], [0, 2, 0], [1, 0, 1]])
    m = metrics_from_confusion(cm, ["a", "b", "c"])
    iou = [3 / (4 + 4 - 3), 2 / (2 + 3 - 2), 1 / (2 + 1 - 1)]
    acc = [3 / 4, 2 / 2, 1 / 2]
    assert m["mIoU"] == pytest.approx(100 * sum(iou) / 3)
    assert m["mAcc"] == pytest.approx(100 * sum(acc) / 3)
    assert m["aAcc"] == pytest.approx(100 * 6 / 8)
    assert m["mDice"] == pytest.approx(100 * (6 / 8 + 4 / 5 + 2 / 3) / 3)
    assert m["fwIoU"] == pytest.approx(100 * (4 / 8 * iou[0] + 2 / 8 * iou[1] + 2 / 8 * iou[2]))
    assert [c["name"] for c in m["per_class"]] == ["a", "b", "c"]
    assert m["per_class"][1]["IoU"] == pytest.approx(100 * 2 / 3)


def test_absent_class_is_left_out_of_the_mean():
    cm = torch.tensor([[2, 0, 0], [0, 2, 0], [0, 0, 0]])  # class 2: no gt, never predicted
    m = metrics_from_confusion(cm)
    assert m["mIoU"] == pytest.approx(100.0)
    assert math.isnan(m["per_class"][2]["IoU"]) and math.isnan(m["per_class"][2]["Acc"])


def test_predicted_but_absent_class_counts_zero():
    cm = torch.tensor([[1, 1], [0, 0]])  # class 1 never in gt but predicted once: IoU 0, Acc nan (mmseg)
    m = metrics_from_confusion(cm)
    assert m["per_class"][1]["IoU"] == 0.0
    assert m["mIoU"] == pytest.approx(25.0)
    assert m["mAcc"] == pytest.approx(50.0)


def test_streaming_equals_one_shot():
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 5, (4, 16, 16), generator=g)
    label[:, 0] = 255
    pred = torch.randint(0, 5, (4, 16, 16), generator=g)
    metric = SegMetric(5, class_names=list("abcde"))
    for i in range(4):
        metric.update(pred[i], label[i])
    assert torch.equal(metric.confusion, confusion_matrix(pred, label, 5))
    assert metric.compute()["mIoU"] == pytest.approx(metrics_from_confusion(confusion_matrix(pred, label, 5))["mIoU"])

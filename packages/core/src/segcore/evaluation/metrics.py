"""Confusion-matrix segmentation metrics (mIoU, mAcc, aAcc, Dice, fwIoU, F-score, precision, recall), in percent.

The convention follows mmseg's ``IoUMetric`` (datasets.md §1.4): pixels whose label is ``ignore_index`` are
dropped, a class absent from both prediction and ground truth gets ``nan`` IoU and is left out of the mean
(``nanmean``), accuracy of a class is its recall. Precision, recall and F-score follow mmseg's
``total_area_to_metrics`` (beta 1) with its ``nan`` rules: precision = intersection / predicted pixels (``nan`` for a
class never predicted), recall = intersection / ground-truth pixels (``nan`` for a class absent from the labels),
F = 2PR / (P + R), ``nan`` when either is ``nan`` and also when both are 0 (0 / 0: a class predicted and present
but never right); the means skip the ``nan`` classes. Only the ``[K, K]`` confusion matrix is accumulated, never the
logits, so evaluation memory does not grow with the dataset.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["confusion_matrix", "f_scores", "metrics_from_confusion", "SegMetric", "SUMMARY", "PER_CLASS"]

# The headline scores every evaluation returns, and the per-class ones, in the order tables show them.
SUMMARY = ("mIoU", "mAcc", "aAcc", "mDice", "fwIoU", "mFscore", "mPrecision", "mRecall")
PER_CLASS = ("IoU", "Acc", "Dice", "Fscore", "Precision", "Recall")


def confusion_matrix(pred: Tensor, label: Tensor, num_classes: int, ignore_index: int = 255) -> Tensor:
    """Count (ground truth, prediction) pairs.

    Args:
        pred: predicted class ids, any shape.
        label: ground-truth ids of the same shape; ``ignore_index`` pixels are skipped.
        num_classes: ``K``.
        ignore_index: label value to skip.

    Returns:
        ``[K, K]`` int64 matrix, rows = ground truth, columns = prediction, on ``pred``'s device.
    """
    pred = pred.reshape(-1).long()
    label = label.reshape(-1).long().to(pred.device)
    keep = (label != ignore_index) & (label >= 0) & (label < num_classes)
    index = label[keep] * num_classes + pred[keep]
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _nanmean(values: Tensor) -> float:
    finite = values[~torch.isnan(values)]
    return float(finite.mean()) if finite.numel() else math.nan


def f_scores(tp: Tensor, gt: Tensor, predicted: Tensor, beta: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """Per-class ``(F-score, precision, recall)`` as fractions, with mmseg's ``nan`` rules (see the module).

    Args:
        tp: per-class intersection (correct pixels), float64.
        gt: per-class ground-truth pixels.
        predicted: per-class predicted pixels.
        beta: the weight of recall (mmseg's default 1).
    """
    nan = torch.tensor(math.nan, dtype=torch.float64)
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), nan)
    recall = torch.where(gt > 0, tp / gt.clamp(min=1), nan)
    denominator = beta**2 * precision + recall  # nan stays nan; 0 where both are 0, which mmseg's 0 / 0 makes nan
    fscore = torch.where(denominator > 0, (1 + beta**2) * precision * recall / denominator, nan)
    return fscore, precision, recall


def metrics_from_confusion(
    confusion: Tensor, class_names: Sequence[str] | None = None, calibration: Tensor | None = None
) -> dict[str, Any]:
    """Turn a ``[K, K]`` confusion matrix into metrics in percent.

    Args:
        confusion: rows = ground truth, columns = prediction.
        class_names: the ``K`` names (default ``"0"``, ``"1"``, ...).
        calibration: a :func:`segcore.evaluation.confidence.calibration_histogram` of the same pixels: adds
            ``ECE`` (percent) and ``calibration`` (:func:`segcore.evaluation.confidence.reliability`).

    Returns:
        ``{"mIoU", "mAcc", "aAcc", "mDice", "fwIoU", "mFscore", "mPrecision", "mRecall", "per_class": [{"name",
        "IoU", "Acc", "Dice", "Fscore", "Precision", "Recall", "pixels"}]}`` (``pixels``: the class's ground-truth
        pixel count); a ``nan`` entry (e.g. a class with no ground-truth and no predicted pixel) is left out of the
        means.
    """
    cm = confusion.double().cpu()
    k = cm.shape[0]
    tp = cm.diag()
    gt = cm.sum(1)
    predicted = cm.sum(0)
    union = gt + predicted - tp
    nan = torch.tensor(math.nan, dtype=torch.float64)
    iou = torch.where(union > 0, tp / union.clamp(min=1), nan)
    acc = torch.where(gt > 0, tp / gt.clamp(min=1), nan)
    dice = torch.where(gt + predicted > 0, 2 * tp / (gt + predicted).clamp(min=1), nan)
    fscore, prec, recall = f_scores(tp, gt, predicted)
    total = gt.sum()
    freq = gt / total if total > 0 else torch.zeros(k, dtype=torch.float64)
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    out = {
        "mIoU": 100 * _nanmean(iou),
        "mAcc": 100 * _nanmean(acc),
        "aAcc": 100 * float(tp.sum() / total) if total > 0 else math.nan,
        "mDice": 100 * _nanmean(dice),
        "fwIoU": 100 * float((freq * torch.nan_to_num(iou)).sum()),
        "mFscore": 100 * _nanmean(fscore),
        "mPrecision": 100 * _nanmean(prec),
        "mRecall": 100 * _nanmean(recall),
        "per_class": [
            {
                "name": names[i],
                "IoU": 100 * float(iou[i]),
                "Acc": 100 * float(acc[i]),
                "Dice": 100 * float(dice[i]),
                "Fscore": 100 * float(fscore[i]),
                "Precision": 100 * float(prec[i]),
                "Recall": 100 * float(recall[i]),
                "pixels": int(gt[i]),
            }
            for i in range(k)
        ],
    }
    if calibration is not None:
        from segcore.evaluation.confidence import expected_calibration_error, reliability

        out["ECE"] = expected_calibration_error(calibration)
        out["calibration"] = reliability(calibration)
    return out


class SegMetric:
    """Streaming confusion matrix; ``compute()`` sums it over processes (``torch.distributed`` when running).

    Example:
        >>> metric = SegMetric(num_classes=3)
        >>> metric.update(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 1]))
        >>> round(metric.compute()["aAcc"], 2)
        66.67
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        class_names: Sequence[str] | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = class_names
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        from segcore.evaluation.confidence import BINS

        # Beside the confusion matrix: the calibration histogram of the pixels given a confidence (update(...,
        # confidence=)); reduced over processes like it.
        self.calibration = torch.zeros(3, BINS, dtype=torch.int64, device=device)

    def update(self, pred: Tensor, label: Tensor, confidence: Tensor | None = None) -> None:
        """Add a batch of predictions ``[..., H, W]`` and labels of the same shape (and their max probability)."""
        cm = confusion_matrix(pred, label, self.num_classes, self.ignore_index)
        self.confusion += cm.to(self.confusion.device)
        if confidence is not None:
            from segcore.evaluation.confidence import calibration_histogram

            histogram = calibration_histogram(confidence, pred, label, self.num_classes, self.ignore_index)
            self.calibration += histogram.to(self.calibration.device)

    def reduced(self) -> Tensor:
        """The confusion matrix summed over every process."""
        return _summed(self.confusion)

    def reduced_calibration(self) -> Tensor:
        """The calibration histogram summed over every process."""
        return _summed(self.calibration)

    def compute(self) -> dict[str, Any]:
        """Metrics in percent over everything seen by every process (with ``ECE`` when confidences were given)."""
        calibration = self.reduced_calibration()
        return metrics_from_confusion(self.reduced(), self.class_names, calibration if calibration.any() else None)


def _summed(counts: Tensor) -> Tensor:
    """``counts`` summed over every process (a copy; this process's alone when not distributed)."""
    counts = counts.clone()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(counts)
    return counts

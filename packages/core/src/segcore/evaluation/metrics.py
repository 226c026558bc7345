"""Confusion-matrix segmentation metrics (mIoU, mAcc, aAcc, Dice, fwIoU, per class), in percent like the papers.

The convention follows mmseg's ``IoUMetric`` (datasets.md §1.4): pixels whose label is ``ignore_index`` are
dropped, a class absent from both prediction and ground truth gets ``nan`` IoU and is left out of the mean
(``nanmean``), accuracy of a class is its recall. Only the ``[K, K]`` confusion matrix is accumulated, never the
logits, so evaluation memory does not grow with the dataset.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["confusion_matrix", "metrics_from_confusion", "SegMetric"]


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


def metrics_from_confusion(confusion: Tensor, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Turn a ``[K, K]`` confusion matrix into metrics in percent.

    Returns:
        ``{"mIoU", "mAcc", "aAcc", "mDice", "fwIoU", "per_class": [{"name", "IoU", "Acc", "Dice", "pixels"}]}``
        (``pixels``: the class's ground-truth pixel count); a class with no ground-truth and no predicted pixel has
        ``nan`` entries and is left out of the means.
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
    total = gt.sum()
    freq = gt / total if total > 0 else torch.zeros(k, dtype=torch.float64)
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    return {
        "mIoU": 100 * _nanmean(iou),
        "mAcc": 100 * _nanmean(acc),
        "aAcc": 100 * float(tp.sum() / total) if total > 0 else math.nan,
        "mDice": 100 * _nanmean(dice),
        "fwIoU": 100 * float((freq * torch.nan_to_num(iou)).sum()),
        "per_class": [
            {
                "name": names[i],
                "IoU": 100 * float(iou[i]),
                "Acc": 100 * float(acc[i]),
                "Dice": 100 * float(dice[i]),
                "pixels": int(gt[i]),
            }
            for i in range(k)
        ],
    }


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

    def update(self, pred: Tensor, label: Tensor) -> None:
        """Add a batch of predictions ``[..., H, W]`` and labels of the same shape."""
        cm = confusion_matrix(pred, label, self.num_classes, self.ignore_index)
        self.confusion += cm.to(self.confusion.device)

    def reduced(self) -> Tensor:
        """The confusion matrix summed over every process."""
        cm = self.confusion.clone()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(cm)
        return cm

    def compute(self) -> dict[str, Any]:
        """Metrics in percent over everything seen by every process."""
        return metrics_from_confusion(self.reduced(), self.class_names)

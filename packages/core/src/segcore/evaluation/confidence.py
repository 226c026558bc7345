"""Max-softmax confidence: the per-pixel maps ``segcore predict --confidence`` writes, and calibration (ECE).

A pixel's confidence is the largest of its class probabilities, the softmax of the logits (or, under several scales
or flip, the averaged softmax that the label is the argmax of). Calibration is measured as the expected calibration
error over pixels (Guo et al. 2017): the scored pixels (label not ``ignore_index``, inside the classes) are put in
:data:`BINS` equal-width bins of their confidence (bin ``b`` holds ``[b / BINS, (b + 1) / BINS)``, the last one
also 1), and ``ECE = sum_b n_b / n * |accuracy_b - mean confidence_b|``. Only a ``[3, BINS]`` integer histogram is
kept (pixels, confidence sum, correct pixels); the confidence sum is counted in units of ``2**-24`` (float32's
resolution near 1), so that sums over processes are exact and give the single-process numbers.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "BINS",
    "max_probability",
    "confidence_levels",
    "calibration_histogram",
    "expected_calibration_error",
    "reliability",
    "save_confidence",
    "save_probabilities",
]

BINS = 15
_UNIT = 2**24  # confidence sums are integers in units of 2**-24


def max_probability(scores: Tensor, normalised: bool, dim: int = 1) -> Tensor:
    """The largest class probability of each pixel.

    Args:
        scores: class scores, classes along ``dim``: logits, or probabilities when ``normalised``.
        normalised: ``scores`` are probabilities already (averaged softmax of several scales or flip).
        dim: the class dimension.

    Returns:
        ``scores`` without ``dim``, float32 in ``[0, 1]`` (``exp(max - logsumexp)``: no ``K``-sized softmax kept).
    """
    scores = scores.float()
    if normalised:
        return scores.amax(dim)
    return torch.exp(scores.amax(dim) - torch.logsumexp(scores, dim))


def confidence_levels(confidence: Tensor) -> np.ndarray:
    """``round(255 * confidence)`` as uint8 grey levels (whatever the number of classes)."""
    return (confidence.float() * 255).round().clamp(0, 255).to(torch.uint8).cpu().numpy()


def calibration_histogram(
    confidence: Tensor, pred: Tensor, label: Tensor, num_classes: int, ignore_index: int = 255, bins: int = BINS
) -> Tensor:
    """``[3, bins]`` int64: per confidence bin the scored pixels, their confidence sum (units ``2**-24``), the right.

    Args:
        confidence: max class probability per pixel, any shape.
        pred: predicted class ids, the same shape.
        label: ground truth, the same shape; ``ignore_index`` and values outside ``[0, num_classes)`` are skipped,
            as the confusion matrix skips them.
        num_classes: ``K``.
        ignore_index: label value to skip.
        bins: equal-width bins over ``[0, 1]``.
    """
    confidence = confidence.reshape(-1).float()
    pred = pred.reshape(-1).to(confidence.device)
    label = label.reshape(-1).long().to(confidence.device)
    keep = (label != ignore_index) & (label >= 0) & (label < num_classes)
    conf, right = confidence[keep], (pred[keep] == label[keep]).long()
    index = (conf * bins).floor().long().clamp(0, bins - 1)
    units = (conf.double() * _UNIT).round().long()
    out = torch.zeros(3, bins, dtype=torch.int64, device=confidence.device)
    out[0].index_add_(0, index, torch.ones_like(index))
    out[1].index_add_(0, index, units)
    out[2].index_add_(0, index, right)
    return out


def expected_calibration_error(histogram: Tensor) -> float:
    """ECE in percent of a :func:`calibration_histogram` (summed over images); ``nan`` when no pixel was scored."""
    count, units, right = histogram.double().cpu()
    total = float(count.sum())
    if total == 0:
        return math.nan
    return 100 * float((right - units / _UNIT).abs().sum()) / total


def reliability(histogram: Tensor) -> dict[str, Any]:
    """The reliability diagram's data: per bin its edges, pixels, mean confidence and accuracy (``None``: empty).

    Returns:
        ``{"bins", "edges", "count", "confidence", "accuracy"}``, confidence and accuracy as fractions.
    """
    count, units, right = histogram.double().cpu()
    bins = int(count.numel())

    def mean(values: Tensor) -> list[float | None]:
        return [float(v / n) if n > 0 else None for v, n in zip(values, count)]

    return {
        "bins": bins,
        "edges": [b / bins for b in range(bins + 1)],
        "count": [int(n) for n in count],
        "confidence": mean(units / _UNIT),
        "accuracy": mean(right),
    }


def save_confidence(levels: np.ndarray, path: str | Path) -> None:
    """Write an ``[H, W]`` uint8 confidence map as a grey PNG (atomically)."""
    from PIL import Image

    from segcore.data.storage import atomic_open

    with atomic_open(Path(path), "wb") as handle:
        Image.fromarray(np.ascontiguousarray(levels, dtype=np.uint8)).save(handle, format="PNG")


def save_probabilities(probs: np.ndarray, path: str | Path) -> None:
    """Write ``[K, H, W]`` class probabilities as a compressed ``.npz`` (key ``probs``, float16), atomically."""
    from segcore.data.storage import atomic_open

    with atomic_open(Path(path), "wb") as handle:
        np.savez_compressed(handle, probs=np.asarray(probs, dtype=np.float16))

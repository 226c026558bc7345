"""Evaluation of a model on a dataset: one image at a time, sharded over processes, confusion matrices reduced.

Used by the trainer's validation and by ``segcore eval`` (also under ``accelerate launch``, which splits the images
over the processes and gives exactly the single-process numbers: only integer counts are summed, the confusion
matrix and the calibration histogram of :mod:`segcore.evaluation.confidence`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from segcore.config.settings import EvalProtocol
from segcore.errors import EvaluationError

__all__ = ["evaluate", "image_miou", "processes"]


def image_miou(confusion: torch.Tensor) -> float:
    """The mIoU (percent) of one image's ``[K, K]`` confusion matrix over the classes present in it (``nan``: none)."""
    cm = confusion.double()
    tp, gt, predicted = cm.diag(), cm.sum(1), cm.sum(0)
    union = gt + predicted - tp
    present = union > 0
    return 100 * float((tp[present] / union[present]).mean()) if bool(present.any()) else math.nan


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    dataset: Any,
    protocol: EvalProtocol | Mapping[str, Any] | None = None,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world: int = 1,
    max_samples: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """mIoU/mAcc/aAcc/per class (percent) of ``model`` on ``dataset``, one image at a time at its own size.

    Images are split over processes (``rank::world``) and the confusion matrices are summed across them, so every
    process returns the same result.

    Args:
        model: a :class:`~segcore.SegModel` (its config gives the classes and the ignore index).
        dataset: samples ``{"image": uint8 [3, H, W], "label": int64 [H, W]}``.
        protocol: whole/slide, scales, flip; ``None``: whole image, one scale.
        device: where the model runs.
        rank: this process's index.
        world: the number of processes sharing the images.
        max_samples: score the first N images only.
        progress: show a progress bar.

    Returns:
        What :func:`segcore.evaluation.metrics.metrics_from_confusion` returns (with ``ECE`` and ``calibration``:
        the max-softmax histogram is reduced beside the confusion matrix), plus ``confusion`` (the reduced ``[K, K]``
        matrix as nested lists of ints, rows = ground truth) and ``images`` (``[[index, mIoU of that image], ...]``
        over every process, in index order; the mIoU is ``nan`` for an image with nothing scored).

    Raises:
        EvaluationError: when nothing would be scored (no samples, or no pixel outside the ignore index): such
            metrics are nan, which is no result.
    """
    from segcore.evaluation.metrics import SegMetric, metrics_from_confusion

    was_training = model.training
    model.eval()
    cfg = model.config  # type: ignore[union-attr]
    ignore_index = getattr(dataset, "ignore_index", cfg.ignore_index)
    metric = SegMetric(
        cfg.num_classes,
        ignore_index,
        list(getattr(dataset, "classes", cfg.class_names) or []) or None,
        device=device,
    )
    total = len(dataset) if max_samples is None else min(len(dataset), max_samples)
    if total < 1:
        raise EvaluationError(
            f"nothing to evaluate: the dataset has {len(dataset)} samples (max_samples {max_samples})"
        )
    indices = range(rank, total, world)
    if progress:
        from tqdm.auto import tqdm

        indices = tqdm(indices, desc="eval", leave=False)
    images = []
    for i in indices:
        cm = _score(model, dataset[i], protocol, metric, device)
        images.append([i, image_miou(cm.cpu())])  # for the report's worst images
    model.train(was_training)
    confusion = metric.reduced()
    result = metrics_from_confusion(confusion, metric.class_names, metric.reduced_calibration())
    if math.isnan(result["mIoU"]):
        raise EvaluationError(
            f"nothing was scored in {total} samples: every label pixel is the ignore index ({ignore_index}) or "
            "outside the model's classes, so mIoU is undefined"
        )
    result["confusion"] = confusion.cpu().tolist()
    result["images"] = sorted(_gathered(images))
    return result


def _score(model: torch.nn.Module, sample: Mapping[str, Any], protocol: Any, metric: Any, device: Any) -> torch.Tensor:
    """Add one image to ``metric`` (its confusion matrix and calibration histogram); return its confusion matrix."""
    from segcore.evaluation.confidence import calibration_histogram, max_probability
    from segcore.evaluation.inference import infer_logits, returns_probabilities
    from segcore.evaluation.metrics import confusion_matrix

    image = torch.as_tensor(np.asarray(sample["image"]))[None].to(device)
    label = torch.as_tensor(np.asarray(sample["label"])).long().to(device)
    scores = infer_logits(model, image, protocol, metric.num_classes)
    pred = scores.argmax(1)[0]
    cm = confusion_matrix(pred, label, metric.num_classes, metric.ignore_index)
    metric.confusion += cm.to(metric.confusion.device)
    confidence = max_probability(scores, returns_probabilities(protocol))[0]
    histogram = calibration_histogram(confidence, pred, label, metric.num_classes, metric.ignore_index)
    metric.calibration += histogram.to(metric.calibration.device)
    return cm


def processes(device: str | None = None) -> tuple[str, int, int]:
    """``(device, rank, world)`` of this process: under ``accelerate launch`` (``WORLD_SIZE`` > 1) its share.

    Args:
        device: ``cpu`` or ``cuda``; ``None``: CUDA when available. Under several processes each takes its own GPU.

    Example:
        >>> device, rank, world = processes()  # doctest: +SKIP
        >>> evaluate(model, dataset, protocol, device, rank, world)  # doctest: +SKIP
    """
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return device or ("cuda" if torch.cuda.is_available() else "cpu"), 0, 1
    from accelerate import Accelerator

    # As the trainer does: without CUDA, Accelerate sets up the gloo process group only when told to use the CPU.
    accelerator = Accelerator(cpu=device == "cpu" or not torch.cuda.is_available())
    return str(accelerator.device), accelerator.process_index, accelerator.num_processes


def _gathered(items: list[Any]) -> list[Any]:
    """``items`` of every process, concatenated (this process's alone when not distributed)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return items
    parts: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(parts, items)
    return [item for part in parts for item in part]

"""Dataset checks: ``preflight`` (called by the trainer before training) and ``check_dataset`` (``data check``)."""

from __future__ import annotations

from typing import Any

import numpy as np
from segcore.data.check import label_arrays, preflight

__all__ = ["EXPECTED_COUNTS", "preflight", "check_dataset"]

# Release counts after preparation (datasets.md §11).
EXPECTED_COUNTS: dict[str, dict[str, int]] = {
    "ade20k": {"train": 20210, "val": 2000},
    "cityscapes": {"train": 2975, "val": 500, "test": 1525},
    "coco-stuff164k": {"train": 118287, "val": 5000},
    "coco-stuff10k": {"train": 9000, "val": 1000, "test": 1000},
    "voc2012-aug": {"train": 10582, "val": 1449},
    "pascal-context-59": {"train": 4996, "val": 5104},
    "pascal-context-60": {"train": 4996, "val": 5104},
    "isaid": {"train": 33978, "val": 11644},
}


def check_dataset(
    ds: Any, expected: int | None = None, limit: int | None = None, progress: bool = False
) -> dict[str, Any]:
    """Read every sample (or the first ``limit``): count, per-class pixel histogram, problems found.

    The problems start with the dataset's ``layout_problems`` (files it could not pair, each named), then one
    message per sample that failed to load or check.

    Returns:
        ``{"name", "split", "count", "expected", "checked", "histogram": list[int] (C bins + ignore last),
        "missing_classes": [names], "errors": [messages]}``.
    """
    name = getattr(ds, "name", "dataset")
    c = len(ds.classes)
    ignore = getattr(ds, "ignore_index", 255)
    hist = np.zeros(c + 1, np.int64)
    errors: list[str] = [str(p) for p in (getattr(ds, "layout_problems", None) or ())]
    n = len(ds) if limit is None else min(limit, len(ds))
    it: Any = range(n)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc=f"check {name}/{getattr(ds, 'split', '')}", unit="img")
    for i in it:
        try:
            image, label, _ = label_arrays(ds, i)
            if image.shape[:2] != label.shape:
                raise ValueError(f"sample {i}: image size {image.shape[:2]} != label size {label.shape}")
            counts = np.bincount(label.ravel().astype(np.int64), minlength=256)
            hist[:c] += counts[:c]
            hist[c] += counts[ignore]
        except ValueError as err:
            errors.append(str(err))
    return {
        "name": name,
        "split": getattr(ds, "split", ""),
        "count": len(ds),
        "expected": expected,
        "checked": n,
        "histogram": hist.tolist(),
        "missing_classes": [ds.classes[k] for k in range(c) if hist[k] == 0],
        "errors": errors,
    }

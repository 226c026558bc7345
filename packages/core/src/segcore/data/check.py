"""The data preflight: a few samples of a dataset checked before any training (sizes, dtypes, label values)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["preflight"]


def _arrays(ds: Any, i: int) -> tuple[np.ndarray, np.ndarray, str]:
    if hasattr(ds, "load_arrays"):
        out = ds.load_arrays(i)
        image, label = out[0], out[1]
        path = out[2] if len(out) > 2 else f"{getattr(ds, 'name', 'dataset')}[{i}]"
        return image, label, path
    s = ds[i]
    image = np.asarray(s["image"]).transpose(1, 2, 0)
    return image, np.asarray(s["label"]), str(s.get("path", i))


def preflight(ds: Any, n: int = 8, num_classes: int | None = None) -> dict[str, Any]:
    """Load up to ``n`` evenly spread samples and check them; raise ``ValueError`` naming the file on a problem.

    Checks: the dataset is not empty; image is uint8 RGB; image and label sizes are equal; label values lie in
    ``[0, num_classes)`` or equal ``ds.ignore_index``.

    Returns:
        ``{"checked": k, "num_classes": C, "label_values": sorted values seen}``.
    """
    length = len(ds)
    if length == 0:
        raise ValueError(f"{getattr(ds, 'name', 'dataset')}: the dataset is empty")
    c = num_classes if num_classes is not None else len(ds.classes)
    ignore = getattr(ds, "ignore_index", 255)
    idx = sorted(set(np.linspace(0, length - 1, min(n, length)).round().astype(int).tolist()))
    seen: set[int] = set()
    for i in idx:
        image, label, path = _arrays(ds, i)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"{path}: image must be uint8 RGB, got {image.dtype} {image.shape}")
        if image.shape[:2] != label.shape:
            raise ValueError(f"{path}: image size {image.shape[:2]} != label size {label.shape}")
        vals = np.unique(label)
        bad = [int(v) for v in vals if (v < 0 or v >= c) and v != ignore]
        if bad:
            raise ValueError(f"{path}: label value(s) {bad} outside 0..{c - 1} and not ignore {ignore}")
        seen.update(int(v) for v in vals)
    return {"checked": len(idx), "num_classes": c, "label_values": sorted(seen)}

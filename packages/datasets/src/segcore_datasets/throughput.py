"""Throughput of the ADE20K-style train pipeline (JPEG decode + label PNG + TrainTransform to 512x512) on one core."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from segcore_datasets.synthetic import render_shapes

__all__ = ["write_ade_like", "bench_pipeline"]


def write_ade_like(root: Path, n: int = 16, size: tuple[int, int] = (512, 683), seed: int = 0) -> Path:
    """Write ``n`` ADE-layout samples (JPEG q=90 images, PNG labels 0..150) of (h, w) ``size`` under ``root``."""
    rng = np.random.default_rng(seed)
    img_dir, ann_dir = root / "images" / "training", root / "annotations" / "training"
    img_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    h, w = size
    for i in range(n):
        small, lab = render_shapes(rng, 128, 4, 8)
        img = Image.fromarray(small).resize((w, h), Image.BILINEAR)
        noise = rng.normal(0, 12, (h, w, 3))
        img = Image.fromarray(np.clip(np.asarray(img) + noise, 0, 255).astype(np.uint8))
        img.save(img_dir / f"ADE_train_{i + 1:08d}.jpg", quality=90)
        lab150 = (lab.astype(np.int32) * 29 + rng.integers(0, 2)) % 151
        Image.fromarray(lab150.astype(np.uint8)).resize((w, h), Image.NEAREST).save(
            ann_dir / f"ADE_train_{i + 1:08d}.png"
        )
    return root


def bench_pipeline(
    n: int = 16, passes: int = 3, crop: int = 512, root: str | Path | None = None, seed: int = 0
) -> dict[str, Any]:
    """Time decode + ``TrainTransform(crop, (2048, 512))`` over ``passes`` x ``n`` samples in this process.

    Returns:
        ``{"images": k, "seconds": t, "images_per_s": k / t, "cpu_seconds": c, "images_per_cpu_s": k / c}``:
        wall-clock and process-CPU-time rates (one process, one thread = one core; the CPU-time rate is the
        per-core figure when the core is shared with other jobs).
    """
    import torch
    from segcore.data.transforms import TrainTransform

    from segcore_datasets.papers import ade20k

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        data_root = Path(root) if root is not None else write_ade_like(Path(tmp), n=n, seed=seed)
        ds = ade20k(str(data_root), "train")
        tf = TrainTransform((crop, crop), scale=(2048, 512))
        rng = np.random.default_rng(seed)
        tf(ds[0], rng)  # warm-up
        count, t0, c0 = 0, time.perf_counter(), time.process_time()
        for _ in range(passes):
            for i in range(len(ds)):
                tf(ds[i], rng)
                count += 1
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
    return {
        "images": count,
        "seconds": dt,
        "images_per_s": count / dt,
        "cpu_seconds": dc,
        "images_per_cpu_s": count / dc,
    }

"""``segcore data bench``'s pipeline timing runs end to end on a few generated ADE20K-layout files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from segcore_datasets.throughput import bench_pipeline, write_ade_like


def test_write_ade_like_is_an_ade20k_layout(tmp_path: Path) -> None:
    import segcore

    write_ade_like(tmp_path, n=2, size=(40, 50))
    ds = segcore.build_dataset("ade20k", str(tmp_path), "train")
    assert len(ds) == 2 and ds[0]["image"].shape == (3, 40, 50)
    assert np.isin(ds[0]["label"].unique().numpy(), [*range(150), 255]).all()


def test_bench_pipeline_counts_every_transformed_image() -> None:
    r = bench_pipeline(n=2, passes=2, crop=64)
    assert r["images"] == 4 and r["seconds"] > 0 and r["images_per_s"] == r["images"] / r["seconds"]

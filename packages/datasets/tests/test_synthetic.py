"""synthetic-shapes: determinism, class balance, overlapping shapes of varied sizes, textured backgrounds."""

from __future__ import annotations

import numpy as np
import pytest
import segcore
import torch
from segcore.data import TrainTransform


def test_synthetic_shapes_sample_and_determinism() -> None:
    ds = segcore.build_dataset("synthetic-shapes", split="train", size=48, length=10, seed=3)
    s = ds[4]
    assert s["image"].dtype == torch.uint8 and s["image"].shape == (3, 48, 48)
    assert s["label"].dtype == torch.int64 and s["label"].shape == (48, 48)
    again = segcore.build_dataset("synthetic-shapes", split="train", size=48, length=10, seed=3)[4]
    assert torch.equal(s["image"], again["image"]) and torch.equal(s["label"], again["label"])
    other_seed = segcore.build_dataset("synthetic-shapes", split="train", size=48, length=10, seed=4)[4]
    val = segcore.build_dataset("synthetic-shapes", split="val", size=48, length=10, seed=3)[4]
    assert not torch.equal(s["label"], other_seed["label"]) and not torch.equal(s["label"], val["label"])
    tf = TrainTransform.for_dataset(ds)
    assert tf.crop_size == (48, 48) and tf.scale == (192, 48)
    out = tf(s, np.random.default_rng(0))
    assert out["image"].shape == (3, 48, 48) and set(out["label"].unique().tolist()) <= {0, 1, 2, 3, 4, 5, 255}
    assert len(ds) == 10 and ds.classes[0] == "background" and len(ds.palette) == len(ds.classes) == 6
    with pytest.raises(IndexError):
        ds[10]
    with pytest.raises(segcore.errors.OptionsError):
        segcore.build_dataset("synthetic-shapes", split="train", colour=1)


def test_synthetic_shapes_class_balance_and_colour_independence() -> None:
    ds = segcore.build_dataset("synthetic-shapes", split="train", size=64, length=60)
    hist = np.zeros(6)
    colour_by_class: dict[int, list[np.ndarray]] = {k: [] for k in range(1, 6)}
    for i in range(len(ds)):
        img, lab = ds.load_arrays(i)
        hist += np.bincount(lab.ravel(), minlength=6)
        for k in range(1, 6):
            if (lab == k).any():
                colour_by_class[k].append(img[lab == k].mean(axis=0))
    frac = hist / hist.sum()
    assert 0.4 < frac[0] < 0.9
    assert (frac[1:] > 0.02).all(), frac  # every shape is well represented
    # Colour does not identify the class: mean shape colours spread over most of the range for every class.
    for k, cols in colour_by_class.items():
        assert np.ptp(np.array(cols), axis=0).min() > 100, k


def test_synthetic_shapes_overlap_and_vary_in_size() -> None:
    ds = segcore.build_dataset("synthetic-shapes", split="train", size=64, length=40, seed=1)
    touching, areas = 0, {k: [] for k in range(1, 6)}
    for i in range(len(ds)):
        _, lab = ds.load_arrays(i)
        a, b = lab[:, :-1], lab[:, 1:]
        if ((a != b) & (a > 0) & (b > 0)).any():  # two shapes share a border: they overlap (or touch)
            touching += 1
        for k in range(1, 6):
            if (lab == k).any():
                areas[k].append(int((lab == k).sum()))
    assert touching >= 10, touching
    for k, a in areas.items():
        assert max(a) > 3 * min(a), (k, min(a), max(a))  # sizes vary (radius 0.2..0.4 of the side + occlusion)


def test_synthetic_shapes_background_is_textured_and_radius_options() -> None:
    # Every background carries fine stripes while shapes are flat (+ a gentle shading and the pixel noise that
    # both have): neighbouring pixels differ far more on the background than inside a shape, in every image.
    ds = segcore.build_dataset("synthetic-shapes", split="val", length=30)
    for i in range(len(ds)):
        img, lab = ds.load_arrays(i)
        f = img.astype(np.float32)
        step = np.abs(f[1:, 1:] - f[1:, :-1]).sum(-1) + np.abs(f[1:, 1:] - f[:-1, 1:]).sum(-1)
        c = lab[1:, 1:]
        same = (c == lab[1:, :-1]) & (c == lab[:-1, 1:])
        background, inside = step[same & (c == 0)], step[same & (c > 0)]
        assert background.mean() > 1.5 * inside.mean(), (i, background.mean(), inside.mean())
    small = segcore.build_dataset("synthetic-shapes", split="train", length=20, min_radius=0.05, max_radius=0.08)
    big = segcore.build_dataset("synthetic-shapes", split="train", length=20, min_radius=0.3, max_radius=0.35)
    fg = [sum(int((d.load_arrays(i)[1] > 0).sum()) for i in range(20)) for d in (small, big)]
    assert fg[1] > 5 * fg[0], fg
    with pytest.raises(ValueError, match="invalid options"):
        segcore.build_dataset("synthetic-shapes", split="train", min_radius=0.3, max_radius=0.2)

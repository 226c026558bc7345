"""``segcore.data`` transforms: image and label stay aligned, mmseg's augmentation semantics, test-time sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from segcore.data import EvalProtocol, TestTransform, TrainTransform, keep_ratio_size

RNG = np.random.default_rng(0)


def _coord_sample(h: int = 40, w: int = 60) -> dict:
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.stack([xx * 4, yy * 4, np.full_like(xx, 128)]).astype(np.uint8)  # image encodes (x, y)
    label = (xx // 4).astype(np.int64)  # label encodes x in 4-pixel bands (0..14)
    return {"image": torch.from_numpy(image), "label": torch.from_numpy(label), "path": "coords"}


@pytest.mark.parametrize("seed", range(6))
def test_train_transform_keeps_image_and_label_aligned(seed: int) -> None:
    tf = TrainTransform((32, 32), scale=(120, 40), cat_max_ratio=0.75, photometric=False)
    out = tf(_coord_sample(), np.random.default_rng(seed))
    img, lab = out["image"].numpy().astype(float), out["label"].numpy()
    assert out["image"].dtype == torch.uint8 and out["label"].dtype == torch.int64 and lab.shape == (32, 32)
    valid = lab != 255
    assert valid.sum() > 100
    # The x coordinate read from the image channel agrees with the band stored in the label.
    x_img = img[0] / 4.0
    assert np.abs(x_img[valid] // 4 - lab[valid]).max() <= 1
    assert (np.abs(x_img[valid] // 4 - lab[valid]) == 0).mean() > 0.8
    # padding: label 255 and image 0 together
    assert (img[:, ~valid] == 0).all()


def test_train_transform_deterministic_and_flip_and_photometric() -> None:
    tf = TrainTransform((32, 32), scale=(120, 40), flip_prob=1.0)
    a = tf(_coord_sample(), np.random.default_rng(1))
    b = tf(_coord_sample(), np.random.default_rng(1))
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    plain = TrainTransform((40, 60), scale=(60, 40), ratio_range=None, flip_prob=1.0, photometric=False)
    f = plain(_coord_sample(), np.random.default_rng(0))
    assert f["label"][0].tolist() == np.repeat(np.arange(14, -1, -1), 4).tolist()
    assert f["label"][:, 0].eq(14).all() and f["image"][0, 0, 0] == 59 * 4


def test_test_transform_sizes() -> None:
    ade = TestTransform(EvalProtocol(resize=(2048, 512), resize_to_multiple=32))
    assert ade.output_size(512, 683) == (512, 704)
    assert TestTransform(EvalProtocol(resize=(2048, 1024))).output_size(1024, 2048) == (1024, 2048)
    out = TestTransform(EvalProtocol(resize=(2048, 512)))(
        {"image": torch.zeros(3, 100, 200, dtype=torch.uint8), "label": torch.zeros(100, 200, dtype=torch.int64)}
    )
    assert out["image"].shape == (3, 512, 1024) and out["label"].shape == (100, 200) and out["ori_size"] == (100, 200)


class _CountingRng:
    """A numpy Generator wrapper that counts ``integers`` calls (two per crop box)."""

    def __init__(self, seed: int) -> None:
        self.rng, self.integer_calls = np.random.default_rng(seed), 0

    def integers(self, *a, **k):
        self.integer_calls += 1
        return self.rng.integers(*a, **k)

    def __getattr__(self, name):
        return getattr(self.rng, name)


class _ScriptedRng:
    """Returns scripted values for ``integers`` and ``uniform`` (in call order), to drive the photometric step."""

    def __init__(self, ints: list[int], uniforms: list[float]) -> None:
        self.ints, self.uniforms = list(ints), list(uniforms)

    def integers(self, *a, **k):
        return self.ints.pop(0)

    def uniform(self, *a, **k):
        return self.uniforms.pop(0)


def test_ratio_range_scales_between_half_and_twice() -> None:
    # crop larger than any resized image: the valid (non-pad) area is the whole resized image
    tf = TrainTransform(
        (200, 200), scale=(60, 40), ratio_range=(0.5, 2.0), photometric=False, flip_prob=0.0, cat_max_ratio=1.0
    )
    heights = []
    for seed in range(40):
        lab = tf(_coord_sample(), np.random.default_rng(seed))["label"].numpy()
        valid = lab != 255
        h, w = int(valid.any(1).sum()), int(valid.any(0).sum())
        heights.append(h)
        r = np.random.default_rng(seed).uniform(0.5, 2.0)  # the first draw is the ratio
        assert (h, w) == keep_ratio_size(40, 60, (int(60 * r), int(40 * r)))
        assert abs(w / h - 1.5) < 0.1  # keep ratio
    assert min(heights) >= 20 and max(heights) < 80 and max(heights) - min(heights) > 30


def test_cat_max_ratio_tries_ten_boxes_then_takes_the_eleventh() -> None:
    tf = TrainTransform((8, 8), scale=(32, 32), ratio_range=None, cat_max_ratio=0.75, photometric=False)
    flat = {"image": torch.zeros(3, 32, 32, dtype=torch.uint8), "label": torch.zeros(32, 32, dtype=torch.int64)}
    rng = _CountingRng(0)
    tf._crop_box(flat["label"].numpy().astype(np.uint8), rng)
    assert rng.integer_calls == 2 * 11  # one class everywhere: 10 rejected boxes + 1 unchecked
    board = (np.indices((32, 32)).sum(0) % 2).astype(np.uint8)  # every box holds two classes at 50 %
    rng = _CountingRng(0)
    tf._crop_box(board, rng)
    assert rng.integer_calls == 2
    # ignore pixels do not count: a box of one class + ignore is rejected like a one-class box
    half = np.where(np.arange(32)[None, :] < 16, 0, 255).repeat(32, 0).astype(np.uint8)
    rng = _CountingRng(0)
    tf._crop_box(half, rng)
    assert rng.integer_calls == 22
    # the test pulls crops towards the rare class: 4 columns of class 1 at the right border of 32
    stripes = np.zeros((32, 32), np.uint8)
    stripes[:, 28:] = 1
    chosen = [tf._crop_box(stripes, np.random.default_rng(s)) for s in range(20)]
    accepted = [(stripes[y0:y1, x0:x1] == 1).mean() > 0.25 for y0, y1, x0, x1 in chosen]
    # a random 8-wide box holds > 2 columns of class 1 (share > 25 %) with p = 2/25; with 10 tries p = 0.57
    assert sum(accepted) >= 8
    plain = [
        TrainTransform((8, 8), (32, 32), None, cat_max_ratio=1.0)._crop_box(stripes, np.random.default_rng(s))
        for s in range(20)
    ]
    assert sum((stripes[a:b, c:d] == 1).mean() > 0.25 for a, b, c, d in plain) <= 5


def test_train_transform_seed_changes_output() -> None:
    tf = TrainTransform((32, 32), scale=(120, 40))
    a = tf(_coord_sample(), np.random.default_rng(1))
    c = tf(_coord_sample(), np.random.default_rng(2))
    assert not torch.equal(a["image"], c["image"])


def test_photometric_brightness_contrast_are_exact_value_maps() -> None:
    img = np.arange(256, dtype=np.uint8).repeat(3).reshape(16, 16, 3)
    # brightness on (+20), mode 0 (contrast last), no saturation, no hue, contrast on (x 0.5)
    out = TrainTransform._photometric(img, _ScriptedRng([1, 0, 0, 0, 1], [20.0, 0.5]))
    expected = np.clip(np.clip(img.astype(np.float32) + 20, 0, 255).astype(np.uint8) * 0.5, 0, 255).astype(np.uint8)
    assert np.array_equal(out, expected)
    # everything off: unchanged
    assert np.array_equal(TrainTransform._photometric(img, _ScriptedRng([0, 0, 0, 0, 0], [])), img)


def test_photometric_saturation_and_hue_follow_hsv() -> None:
    px = np.array([[[200, 100, 100], [90, 90, 90], [0, 200, 50]]], np.uint8)
    # saturation x 0.5 keeps hue and value: (200, 100, 100) has S = 0.5 -> 0.25, so min 150
    out = TrainTransform._photometric(px, _ScriptedRng([0, 0, 1, 0, 0], [0.5]))
    assert out[0, 0].tolist() == [200, 150, 150] and out[0, 1].tolist() == [90, 90, 90]
    assert out[0, 2].tolist() == [100, 200, 125]
    # saturation x 1.5 is capped at S = 1
    out = TrainTransform._photometric(px, _ScriptedRng([0, 0, 1, 0, 0], [1.5]))
    assert out[0, 0].tolist() == [200, 50, 50] and out[0, 2].tolist() == [0, 200, 50]
    # the numpy saturation path agrees with Pillow's HSV round trip within its quantisation
    rgb = RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    fast = TrainTransform._photometric(rgb, _ScriptedRng([0, 0, 1, 0, 0], [1.3])).astype(int)
    h, s, v = Image.fromarray(rgb).convert("HSV").split()
    s = s.point([min(255, int(x * 1.3)) for x in range(256)])
    ref = np.asarray(Image.merge("HSV", (h, s, v)).convert("RGB")).astype(int)
    assert np.abs(fast - ref).max() <= 12 and np.abs(fast - ref).mean() < 2
    # hue +18 OpenCV units = +36 degrees: pure red turns towards yellow (green rises to 60 % of red)
    red = np.array([[[200, 0, 0]]], np.uint8)
    out = TrainTransform._photometric(red, _ScriptedRng([0, 0, 0, 1, 18, 0], []))
    assert out[0, 0, 0] >= 195 and 110 <= out[0, 0, 1] <= 130 and out[0, 0, 2] <= 5


def test_normalize_before_pad() -> None:
    mean, std = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
    tf = TrainTransform(
        (64, 64), scale=(60, 40), ratio_range=None, photometric=False, flip_prob=0.0, normalize=(mean, std)
    )
    sample = _coord_sample()
    out = tf(sample, np.random.default_rng(0))
    img, lab = out["image"], out["label"]
    assert img.dtype == torch.float32 and img.shape == (3, 64, 64)
    ref = (sample["image"].float() - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    assert torch.allclose(img[:, :40, :60], ref, atol=1e-4)
    assert img[:, 40:].eq(0).all() and img[:, :, 60:].eq(0).all() and lab[40:].eq(255).all()
    with pytest.raises(ValueError, match="std must be positive"):
        TrainTransform(8, normalize=(mean, (1.0, 0.0, 1.0)))

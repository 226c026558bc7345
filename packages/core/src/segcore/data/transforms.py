"""Train and test transforms with mmseg 0.x semantics (datasets.md §1.5, §1.6; segnext.md §5).

Both take and return samples ``{"image": uint8 [3, H, W], "label": int64 [H, W], ...}`` (torch tensors or numpy
arrays). The train transform is described by a :class:`~segcore.config.settings.TrainPipeline` and, as the official
pipelines do, normalises before it pads, so the padded area is 0 in normalised space; the test transform is
described by an :class:`~segcore.config.settings.EvalProtocol`. Resizing uses Pillow (image bilinear, label
nearest); all randomness comes from the ``numpy.random.Generator`` passed in, so a transform is deterministic
given the generator's state.

Differences from mmseg (documented, not bit-exact): Pillow's bilinear resize is not OpenCV's (edge weights differ
slightly when downscaling), and a hue shift uses Pillow's HSV (hue in 0..255, so mmseg's ±18 of OpenCV's 0..180
hue becomes ±25.6) instead of OpenCV's; saturation without a hue shift is computed in closed form (exact HSV).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from segcore.config.settings import EvalProtocol, Photometric, TrainPipeline, keep_ratio_size

__all__ = ["TrainTransform", "TestTransform"]

IGNORE = 255


def _to_numpy(sample: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None, bool]:
    image, label = sample["image"], sample.get("label")
    is_torch = hasattr(image, "numpy")
    img = image.numpy() if is_torch else np.asarray(image)
    if img.ndim != 3 or img.shape[0] != 3 or img.dtype != np.uint8:
        raise ValueError(f"transform expects a uint8 [3, H, W] image, got {img.dtype} {tuple(img.shape)}")
    lab = None
    if label is not None:
        lab = label.numpy() if hasattr(label, "numpy") else np.asarray(label)
        if lab.shape != img.shape[1:]:
            raise ValueError(f"{sample.get('path', '?')}: image size {img.shape[1:]} != label size {lab.shape}")
        if lab.min(initial=0) < 0 or lab.max(initial=0) > 255:
            raise ValueError(f"{sample.get('path', '?')}: label values must lie in 0..255 for the transforms")
    return img.transpose(1, 2, 0), (lab.astype(np.uint8) if lab is not None else None), is_torch


def _from_numpy(sample: dict[str, Any], img: np.ndarray, lab: np.ndarray | None, is_torch: bool) -> dict[str, Any]:
    out = dict(sample)
    chw = np.ascontiguousarray(img.transpose(2, 0, 1))
    lab64 = lab.astype(np.int64) if lab is not None else None
    if is_torch:
        import torch

        out["image"] = torch.from_numpy(chw)
        if lab64 is not None:
            out["label"] = torch.from_numpy(lab64)
    else:
        out["image"] = chw
        if lab64 is not None:
            out["label"] = lab64
    return out


def _resize(img: np.ndarray, lab: np.ndarray | None, h: int, w: int) -> tuple[np.ndarray, np.ndarray | None]:
    if (h, w) == img.shape[:2]:
        return img, lab
    img = np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))
    if lab is not None:
        lab = np.asarray(Image.fromarray(lab).resize((w, h), Image.NEAREST))
    return img, lab


class TrainTransform:
    """Resize (ratio range, keep ratio) -> RandomCrop (cat_max_ratio) -> RandomFlip -> PhotoMetricDistortion -> Pad.

    Args:
        crop_size: (h, w) of the output.
        scale: mmseg ``img_scale`` (long, short) bounds before the random ratio.
        ratio_range: r ~ U[lo, hi); bounds become (int(L r), int(S r)).
        cat_max_ratio: a crop is accepted when it holds >= 2 non-ignore classes and the largest has < this share
            (up to 10 tries, then an 11th crop unchecked); 1.0 disables the test.
        flip_prob: horizontal flip probability.
        photometric: PhotoMetricDistortion settings (each step with p = 0.5; contrast before or after the HSV
            steps at random); ``True`` for mmseg's defaults, ``None``/``False`` for none.
        ignore_index: label pad value and the value skipped by the crop test.
        normalize: ``(mean, std)`` in RGB: output ``(image - mean) / std`` as float32, applied before padding so
            the padded area is ``pad_value`` (0) in normalised space, as mmseg's ``Normalize`` then ``Pad``. None:
            uint8 output padded with 0 (segcore models normalise uint8 images themselves).
        pad_value: image pad value (in normalised space when ``normalize`` is given).

    Call: ``transform(sample, rng)`` with ``rng`` a ``numpy.random.Generator``.
    """

    def __init__(
        self,
        crop_size: tuple[int, int] | int,
        scale: tuple[int, int] = (2048, 512),
        ratio_range: tuple[float, float] | None = (0.5, 2.0),
        cat_max_ratio: float = 0.75,
        flip_prob: float = 0.5,
        photometric: Photometric | bool | None = True,
        ignore_index: int = IGNORE,
        normalize: tuple[Sequence[float], Sequence[float]] | None = None,
        pad_value: float = 0.0,
    ) -> None:
        """Store the settings; see the class docstring."""
        self.crop_size = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
        self.scale = tuple(scale)
        self.ratio_range = ratio_range
        self.cat_max_ratio = cat_max_ratio
        self.flip_prob = flip_prob
        self.photometric = Photometric() if photometric is True else (photometric or None)
        self.ignore_index = ignore_index
        self.pad_value = pad_value
        self.normalize = None
        if normalize is not None:
            mean, std = (np.asarray(x, np.float32).reshape(3) for x in normalize)
            if (std <= 0).any():
                raise ValueError(f"normalize: std must be positive, got {std.tolist()}")
            self.normalize = (mean, std)

    @classmethod
    def from_pipeline(
        cls,
        pipeline: TrainPipeline,
        crop_size: tuple[int, int],
        ignore_index: int = IGNORE,
        scale: tuple[int, int] | None = None,
    ) -> TrainTransform:
        """The transform a recipe's :class:`TrainPipeline` describes, normalising with its mean and std.

        Args:
            pipeline: the recipe's train pipeline.
            crop_size: the training crop.
            ignore_index: label pad value.
            scale: ``img_scale`` to use when the pipeline has none (the dataset's own image size).
        """
        bounds = pipeline.scale or scale
        if bounds is None:
            raise ValueError("the train pipeline has no scale: give the dataset's image size as scale")
        return cls(
            crop_size=crop_size,
            scale=bounds,
            ratio_range=pipeline.ratio_range,
            cat_max_ratio=pipeline.cat_max_ratio,
            flip_prob=pipeline.flip_prob,
            photometric=pipeline.photometric,
            ignore_index=ignore_index,
            normalize=(pipeline.mean, pipeline.std),
            pad_value=pipeline.pad_value,
        )

    @classmethod
    def for_dataset(cls, dataset: Any, **overrides: Any) -> TrainTransform:
        """The train transform of ``dataset``'s reference config (its ``crop_size`` and ``train_scale``, §9)."""
        kwargs: dict[str, Any] = {
            "crop_size": dataset.crop_size,
            "scale": dataset.train_scale,
            "ignore_index": getattr(dataset, "ignore_index", IGNORE),
        }
        kwargs.update(overrides)
        return cls(**kwargs)

    def __repr__(self) -> str:  # noqa: D105
        return (
            f"TrainTransform(crop_size={self.crop_size}, scale={self.scale}, ratio_range={self.ratio_range}, "
            f"cat_max_ratio={self.cat_max_ratio}, flip_prob={self.flip_prob}, photometric={self.photometric})"
        )

    def _crop_box(self, lab: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int, int]:
        ch, cw = self.crop_size
        h, w = lab.shape

        def box() -> tuple[int, int, int, int]:
            y0 = int(rng.integers(0, max(h - ch, 0) + 1))
            x0 = int(rng.integers(0, max(w - cw, 0) + 1))
            return y0, min(y0 + ch, h), x0, min(x0 + cw, w)

        b = box()
        if self.cat_max_ratio < 1.0:
            for _ in range(10):
                crop = lab[b[0] : b[1], b[2] : b[3]]
                counts = np.bincount(crop.ravel(), minlength=256)
                counts[self.ignore_index] = 0
                counts = counts[counts > 0]
                if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                    break
                b = box()
        return b

    def __call__(self, sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        """Augment ``sample`` with draws from ``rng``; returns a new sample of size ``crop_size``."""
        img, lab, is_torch = _to_numpy(sample)
        if lab is None:
            raise ValueError("TrainTransform needs a label")
        h, w = img.shape[:2]
        if self.ratio_range is not None:
            r = rng.uniform(*self.ratio_range)
            bounds = (int(self.scale[0] * r), int(self.scale[1] * r))
        else:
            bounds = self.scale
        nh, nw = keep_ratio_size(h, w, bounds)
        # The label is resized in full (nearest, cheap) because the crop test needs it; the image is resized only
        # inside the chosen crop box. Pillow's box resize uses the same scale and sample centres as a full resize
        # followed by a crop, so the pixels are the same; it just skips the discarded area.
        lab_r = lab if (nh, nw) == (h, w) else np.asarray(Image.fromarray(lab).resize((nw, nh), Image.NEAREST))
        y0, y1, x0, x1 = self._crop_box(lab_r, rng)
        lab = lab_r[y0:y1, x0:x1]
        if (nh, nw) == (h, w):
            img = img[y0:y1, x0:x1]
        else:
            sy, sx = h / nh, w / nw
            img = np.asarray(
                Image.fromarray(img).resize(
                    (x1 - x0, y1 - y0), Image.BILINEAR, box=(x0 * sx, y0 * sy, x1 * sx, y1 * sy)
                )
            )
        flip = rng.random() < self.flip_prob
        if self.photometric is not None:
            img = self._photometric(np.ascontiguousarray(img), rng, self.photometric)
        if flip:  # after the per-pixel photometric step (same result, draws in mmseg's order): the flip stays a view
            img, lab = img[:, ::-1], lab[:, ::-1]
        ch, cw = self.crop_size
        if self.normalize is not None:
            img = (img.astype(np.float32) - self.normalize[0]) / self.normalize[1]
        if img.shape[0] < ch or img.shape[1] < cw:
            pi = np.full((ch, cw, 3), self.pad_value, img.dtype)
            pl = np.full((ch, cw), self.ignore_index, np.uint8)
            pi[: img.shape[0], : img.shape[1]] = img
            pl[: lab.shape[0], : lab.shape[1]] = lab
            img, lab = pi, pl
        return _from_numpy(sample, np.ascontiguousarray(img), np.ascontiguousarray(lab), is_torch)

    @staticmethod
    def _photometric(img: np.ndarray, rng: np.random.Generator, settings: Photometric | None = None) -> np.ndarray:
        """Mmseg PhotoMetricDistortion; random draws in mmseg's order (brightness, mode, ..., hue).

        Brightness and contrast are per-value maps of a uint8 image (mmseg rounds to uint8 after each step), so
        they are applied as exact 256-entry lookup tables through Pillow's ``point`` (C speed). Saturation alone is
        applied in numpy in closed form (HSV with H and V fixed: each channel moves towards V, exact, no HSV round
        trip); with a hue shift the image goes through Pillow's HSV.
        """
        p = settings or Photometric()
        values = np.arange(256, dtype=np.float32)
        pim = Image.fromarray(img)
        if rng.integers(2):
            pim = pim.point(
                np.clip(values + rng.uniform(-p.brightness_delta, p.brightness_delta), 0, 255).astype(np.uint8).tolist()
                * 3
            )
        mode = int(rng.integers(2))
        if mode == 1 and rng.integers(2):
            pim = pim.point(np.clip(values * rng.uniform(*p.contrast_range), 0, 255).astype(np.uint8).tolist() * 3)
        do_sat, sat = bool(rng.integers(2)), 0.0
        if do_sat:
            sat = rng.uniform(*p.saturation_range)
        do_hue, hue = bool(rng.integers(2)), 0
        if do_hue:
            hue = int(rng.integers(-p.hue_delta, p.hue_delta))
        if do_hue:
            hch, sch, vch = pim.convert("HSV").split()
            if do_sat:
                sch = sch.point(np.clip(values * sat, 0, 255).astype(np.uint8).tolist())
            shift = hue * 256.0 / 180.0  # OpenCV hue units (0..180) -> Pillow's (0..255)
            hch = hch.point(np.mod(np.round(values + shift), 256).astype(np.uint8).tolist())
            pim = Image.merge("HSV", (hch, sch, vch)).convert("RGB")
        elif do_sat:
            pim = _saturate(pim, sat)
        if mode == 0 and rng.integers(2):
            pim = pim.point(np.clip(values * rng.uniform(*p.contrast_range), 0, 255).astype(np.uint8).tolist() * 3)
        return np.asarray(pim)


def _saturate(pim: Image.Image, alpha: float) -> Image.Image:
    """Scale HSV saturation by ``alpha`` (clipped to 1) keeping hue and value, without an HSV round trip.

    With H and V fixed, every channel is ``c = V - S V f(H)``; scaling S by ``t`` moves each channel towards V:
    ``c' = V - t (V - c)``, where ``t = min(alpha, V / (V - min))`` caps the new saturation at 1.
    """
    r, g, b = (np.asarray(c, dtype=np.float32) for c in pim.split())
    v = np.maximum(np.maximum(r, g), b)
    d = v - np.minimum(np.minimum(r, g), b)
    t = np.minimum(np.float32(alpha), v / np.maximum(d, 1.0))
    out = []
    for c in (r, g, b):
        x = v - c
        x *= t
        np.subtract(v, x, out=x)
        x += 0.5
        out.append(Image.fromarray(x.astype(np.uint8)))
    return Image.merge("RGB", out)


class TestTransform:
    """Test-time resize of the image only, as an :class:`EvalProtocol` says (labels stay at their size, §1.4).

    Args:
        protocol: the eval protocol whose ``resize``, ``keep_ratio``, ``min_size`` and ``resize_to_multiple``
            give the test size (at scale 1).

    The output sample gets ``"ori_size": (H, W)`` of the input.
    """

    __test__ = False  # not a pytest class despite its name

    def __init__(self, protocol: EvalProtocol) -> None:
        """Store the protocol."""
        self.protocol = protocol

    @classmethod
    def for_dataset(cls, dataset: Any) -> TestTransform:
        """The test transform of ``dataset.eval_protocol`` (papers' configs, §9)."""
        return cls(EvalProtocol.from_dict(getattr(dataset, "eval_protocol", None)))

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        """(h, w) the image of size (h, w) is resized to."""
        return self.protocol.image_size(h, w)

    def __call__(self, sample: dict[str, Any], rng: np.random.Generator | None = None) -> dict[str, Any]:
        """Resize the image of ``sample`` (``rng`` unused: the test pipeline is deterministic)."""
        img, lab, is_torch = _to_numpy({**sample, "label": None})
        h, w = img.shape[:2]
        img, _ = _resize(img, None, *self.output_size(h, w))
        out = _from_numpy({k: v for k, v in sample.items() if k != "label"}, np.ascontiguousarray(img), None, is_torch)
        if "label" in sample:
            out["label"] = sample["label"]
        out["ori_size"] = (h, w)
        return out

"""Typed run settings owned by core: the train pipeline, the eval protocol and a model's names and options.

Recipes (:class:`~segcore.plugins.specs.RecipeSpec`), paper pairs (:class:`~segcore.plugins.specs.PairSpec`),
checkpoints, models
(``config.eval``) and datasets describe their settings with these frozen dataclasses. Each is built strictly:
:meth:`from_dict` rejects an unknown key naming the valid ones, and ``__post_init__`` rejects a value out of range,
so no setting can be registered and then ignored. Every value is also checked for its type and range
(:func:`~segcore.config.options.check_fields`: sizes up to :data:`~segcore.config.options.SIZE_LIMIT` pixels, a mean in
``[0, 255]``), however the dataclass is built. Torch-free (``segcore list`` imports it).

The semantics are mmseg 0.x's, as the papers' configs use them (specs/datasets.md §1.4-§1.6, §9).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from segcore.config.options import FRACTION, SIZE, bounds, check_fields, parse_options, to_jsonable_options
from segcore.errors import OptionsError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MEAN_RANGE",
    "STD_RANGE",
    "Photometric",
    "TrainPipeline",
    "EvalProtocol",
    "ModelSettings",
    "keep_ratio_size",
    "min_size_resize_size",
]

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
# The range of a normalisation mean and std (of 0-255 pixel values): field metadata of every mean/std setting.
MEAN_RANGE = bounds(0.0, 255.0)
STD_RANGE = bounds(0.0, 255.0, open_low=True)
# Resize factors (ratio_range, test scales): positive, and at most 16x.
_FACTOR = bounds(0.0, 16.0, open_low=True)

S = TypeVar("S")


class _Settings:
    """Strict construction from JSON-like dicts and back, shared by the settings dataclasses."""

    @classmethod
    def from_dict(cls: type[S], data: Mapping[str, Any] | S | None, where: str = "") -> S:
        """Build from a mapping; an unknown key is an :class:`OptionsError` naming the valid ones."""
        return parse_options(cls, data or {}, where or cls.__name__)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists); :meth:`from_dict` reads it back."""
        return to_jsonable_options(self)

    def replace(self: S, **changes: Any) -> S:
        """A copy with ``changes`` applied, validated like a new instance."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def _check(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise OptionsError(f"{where}: {message}")


def _positive_pair(value: tuple[int, int] | None, where: str) -> None:
    if value is not None:
        _check(len(value) == 2 and all(v > 0 for v in value), where, f"needs two positive integers, got {value}")


# ------------------------------------------------------------------------------------------------- train pipeline
@dataclass(frozen=True)
class Photometric(_Settings):
    """mmseg ``PhotoMetricDistortion``: each step applied with probability 0.5 (segnext.md §5.2 step 5).

    Attributes:
        brightness_delta: brightness shift drawn from ``U(-delta, delta)``.
        contrast_range: contrast factor range.
        saturation_range: saturation factor range (HSV).
        hue_delta: hue shift drawn from ``randint(-delta, delta)`` in OpenCV units (0..180).
    """

    brightness_delta: int = 32
    contrast_range: tuple[float, float] = (0.5, 1.5)
    saturation_range: tuple[float, float] = (0.5, 1.5)
    hue_delta: int = 18

    def __post_init__(self) -> None:  # noqa: D105
        where = "photometric"
        check_fields(self, where)
        _check(
            0 <= self.brightness_delta <= 255,
            where,
            f"brightness_delta must lie in 0..255, not {self.brightness_delta}",
        )
        _check(0 <= self.hue_delta <= 180, where, f"hue_delta must lie in 0..180, not {self.hue_delta}")
        for name in ("contrast_range", "saturation_range"):
            lo, hi = getattr(self, name)
            _check(0 <= lo <= hi, where, f"{name} must be (low, high) with 0 <= low <= high, not {(lo, hi)}")


@dataclass(frozen=True)
class TrainPipeline(_Settings):
    """The official train pipeline (datasets.md §1.5): resize, crop, flip, photometric, normalise, pad.

    Attributes:
        scale: mmseg ``img_scale`` ``(long, short)`` bounds of the keep-ratio resize; ``None`` uses the dataset's
            own image size (first sample), for data without a reference config.
        ratio_range: the bounds are multiplied by ``r ~ U[low, high)``; ``None`` resizes to ``scale`` itself.
        cat_max_ratio: a crop is accepted when its largest class has less than this share (1.0: no test).
        flip_prob: horizontal flip probability.
        photometric: photometric distortion settings, ``None`` for none.
        mean: per-channel mean (RGB, 0-255) of the normalisation; the trained model keeps it.
        std: per-channel std (RGB, 0-255) of the normalisation.
        pad_value: image pad value in normalised space (the official pipelines normalise, then pad with 0).
    """

    scale: tuple[int, int] | None = field(default=(2048, 512), metadata=SIZE)
    ratio_range: tuple[float, float] | None = field(default=(0.5, 2.0), metadata=_FACTOR)
    cat_max_ratio: float = 0.75
    flip_prob: float = field(default=0.5, metadata=FRACTION)
    photometric: Photometric | None = field(default_factory=Photometric)
    mean: tuple[float, float, float] = field(default=IMAGENET_MEAN, metadata=MEAN_RANGE)
    std: tuple[float, float, float] = field(default=IMAGENET_STD, metadata=STD_RANGE)
    pad_value: float = 0.0

    def __post_init__(self) -> None:  # noqa: D105
        where = "train_pipeline"
        check_fields(self, where)  # a photometric mapping becomes Photometric, parsed as strictly as from_dict
        _positive_pair(self.scale, f"{where}.scale")
        if self.ratio_range is not None:
            lo, hi = self.ratio_range
            _check(0 < lo <= hi, where, f"ratio_range must be (low, high) with 0 < low <= high, not {(lo, hi)}")
        _check(0 < self.cat_max_ratio <= 1, where, f"cat_max_ratio must lie in (0, 1], not {self.cat_max_ratio}")
        _check(0 <= self.flip_prob <= 1, where, f"flip_prob must lie in [0, 1], not {self.flip_prob}")
        _check(all(s > 0 for s in self.std), where, f"std must be positive, not {self.std}")


# ------------------------------------------------------------------------------------------------- eval protocol
def keep_ratio_size(h: int, w: int, scale: tuple[int, int]) -> tuple[int, int]:
    """Mmcv keep-ratio rescale into ``scale = (long, short)``: factor = min(L / long side, S / short side) (§1.4)."""
    long_b, short_b = max(scale), min(scale)
    f = min(long_b / max(h, w), short_b / min(h, w))
    return int(h * f + 0.5), int(w * f + 0.5)


def min_size_resize_size(h: int, w: int, scale: tuple[int, int], min_size: int) -> tuple[int, int]:
    """SegViT's ``min_size`` rule (datasets.md §1.6): short side = max(min(scale), min_size), no long-side cap."""
    short = max(min(scale), min_size)
    f = short / min(h, w)
    return int(h * f + 0.5), int(w * f + 0.5)


@dataclass(frozen=True)
class EvalProtocol(_Settings):
    """How a model is run on an evaluation image (mmseg 0.x test pipeline and ``test_cfg``, datasets.md §1.4).

    The image is resized (``resize`` with ``keep_ratio``, ``min_size`` and ``resize_to_multiple``), run whole or
    in ``crop_size`` windows every ``stride`` pixels, and the logits are resized back to the original size, where
    the label is scored. With several ``scales`` or ``flip`` the softmax of every run is averaged.

    Attributes:
        mode: ``"whole"`` image or sliding-window (``"slide"``) inference.
        crop_size: window ``(H, W)`` of ``slide``.
        stride: window step ``(H, W)`` of ``slide``; at most ``crop_size`` so that every pixel is covered.
        resize: ``img_scale`` ``(long, short)`` of the test-time resize; ``None`` keeps the image size.
        keep_ratio: keep the aspect ratio (mmcv); else resize to exactly ``(H, W) = (resize[1], resize[0])``.
        min_size: SegViT's rule: the short side becomes ``max(min(resize), min_size)`` and the long side follows
            without a cap (datasets.md §1.6).
        resize_to_multiple: then round each side up to a multiple of this (SegNeXt ADE20K / COCO-Stuff,
            ``ResizeToMultiple(32)``, a bilinear resize, not a pad).
        scales: scale factors of ``resize`` (``img_ratios``, multi-scale test); ``(1.0,)`` is single scale.
        flip: also run the horizontally flipped image.
    """

    mode: Literal["whole", "slide"] = "whole"
    crop_size: tuple[int, int] | None = field(default=None, metadata=SIZE)
    stride: tuple[int, int] | None = field(default=None, metadata=SIZE)
    resize: tuple[int, int] | None = field(default=None, metadata=SIZE)
    keep_ratio: bool = True
    min_size: int | None = field(default=None, metadata=SIZE)
    resize_to_multiple: int | None = field(default=None, metadata=SIZE)
    scales: tuple[float, ...] = field(default=(1.0,), metadata=_FACTOR)
    flip: bool = False

    def __post_init__(self) -> None:  # noqa: D105
        where = "eval protocol"
        check_fields(self, where)
        _check(self.mode in ("whole", "slide"), where, f"mode must be 'whole' or 'slide', not {self.mode!r}")
        _positive_pair(self.crop_size, f"{where} crop_size")
        _positive_pair(self.stride, f"{where} stride")
        _positive_pair(self.resize, f"{where} resize")
        if self.mode == "slide":
            _check(
                self.crop_size is not None and self.stride is not None,
                where,
                "mode 'slide' needs crop_size and stride (e.g. --crop-size 512 --stride 341)",
            )
            assert self.crop_size is not None and self.stride is not None
            _check(
                all(s <= c for s, c in zip(self.stride, self.crop_size)),
                where,
                f"stride {self.stride} is larger than crop_size {self.crop_size}: the windows would leave pixels "
                "uncovered; use a stride of at most the crop size",
            )
        _check(self.min_size is None or self.min_size > 0, where, f"min_size must be positive, not {self.min_size}")
        _check(self.min_size is None or self.resize is not None, where, "min_size needs resize")
        _check(
            self.resize_to_multiple is None or self.resize_to_multiple > 0,
            where,
            f"resize_to_multiple must be positive, not {self.resize_to_multiple}",
        )
        _check(len(self.scales) > 0 and all(s > 0 for s in self.scales), where, f"scales must be > 0: {self.scales}")

    def image_size(self, h: int, w: int, factor: float = 1.0) -> tuple[int, int]:
        """The ``(H, W)`` an ``h x w`` image is resized to at scale ``factor`` (mmseg ``MultiScaleFlipAug``)."""
        if self.resize is None:
            nh, nw = max(1, int(h * factor + 0.5)), max(1, int(w * factor + 0.5))
        else:
            # MultiScaleFlipAug scales img_scale first: (int(W * r), int(H * r)); then Resize applies its rule.
            bounds = (int(self.resize[0] * factor), int(self.resize[1] * factor))
            if not self.keep_ratio:  # mmcv reads a scale of (W, H) then
                nh, nw = bounds[1], bounds[0]
            elif self.min_size is not None:
                nh, nw = min_size_resize_size(h, w, bounds, self.min_size)
            else:
                nh, nw = keep_ratio_size(h, w, bounds)
        if self.resize_to_multiple:
            m = self.resize_to_multiple
            nh, nw = -(-nh // m) * m, -(-nw // m) * m
        return nh, nw

    def describe(self) -> str:
        """One line, e.g. ``slide 640x640 stride 608x608, keep-ratio resize into (2048, 640), single scale``."""
        parts = ["whole image" if self.mode == "whole" else "slide"]
        if self.mode == "slide" and self.crop_size and self.stride:
            parts[0] += f" {self.crop_size[0]}x{self.crop_size[1]} stride {self.stride[0]}x{self.stride[1]}"
        if self.resize is None:
            parts.append("native size")
        else:
            rule = "keep-ratio resize into" if self.keep_ratio else "resize to"
            parts.append(f"{rule} {tuple(self.resize)}" + (f" min size {self.min_size}" if self.min_size else ""))
        if self.resize_to_multiple:
            parts.append(f"resize to a multiple of {self.resize_to_multiple}")
        parts.append("single scale" if tuple(self.scales) == (1.0,) else f"scales {list(self.scales)}")
        if self.flip:
            parts.append("flip")
        return ", ".join(parts)


# ----------------------------------------------------------------------------------------------------- model names
@dataclass(frozen=True)
class ModelSettings(_Settings):
    """The model of a recipe: component names and their options (validated against each component's options).

    Attributes:
        encoder: registered encoder name.
        decoder: registered decoder name.
        encoder_options: options of the encoder.
        decoder_options: options of the decoder.
        pretrained_encoder: start from the encoder's registered pretrained weights.
    """

    encoder: str = ""
    decoder: str = ""
    encoder_options: Mapping[str, Any] = field(default_factory=dict)
    decoder_options: Mapping[str, Any] = field(default_factory=dict)
    pretrained_encoder: bool = False

"""Whole-image, sliding-window and multi-scale + flip inference; logits come back at the original image size.

Semantics follow mmseg 0.x ``EncoderDecoder.inference``: the image is optionally rescaled as the
:class:`~segcore.config.settings.EvalProtocol` says (keep-ratio ``resize``, ``min_size``, ``resize_to_multiple``), run
whole or in
``crop_size`` windows every ``stride`` pixels (the last window is shifted back inside the image and the
overlapping logits are averaged), the softmax of every scale (and its horizontal flip) is averaged, and the
result is resized bilinearly to the original size so that labels are scored at their own resolution.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segcore.config.settings import EvalProtocol
from segcore.errors import SegcoreError

__all__ = [
    "EvalProtocol",
    "PRECISIONS",
    "MEMORY_BUDGET",
    "precision",
    "slide_logits",
    "infer_logits",
    "predict_labels",
    "returns_probabilities",
    "predict_label_map",
    "LabelMaps",
    "predict_maps",
]

PRECISIONS = ("fp32", "bf16")


def precision(device: torch.device | str, name: str) -> torch.autocast:
    """The context a forward runs in at precision ``name``: ``"fp32"`` (as is) or ``"bf16"`` (autocast).

    bf16 autocast is faster where the hardware has bf16 matrix units (recent GPUs; CPUs with AMX: 1.2x-2.8x
    for the models of docs/benchmarks.md on 2 cores); logits then differ from fp32 by rounding (about 1e-2
    relative), labels rarely.

    Example:
        >>> with precision("cpu", "bf16"):  # doctest: +SKIP
        ...     labels = predict_labels(model, images)
    """
    if name not in PRECISIONS:
        raise SegcoreError(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=name == "bf16")


def slide_logits(
    model: nn.Module, images: Tensor, crop_size: Sequence[int], stride: Sequence[int], num_classes: int
) -> Tensor:
    """Logits of overlapping windows, averaged where they overlap (mmseg ``slide_inference``).

    Shape:
        images: ``[B, 3, H, W]``; returns ``[B, K, H, W]`` float32.
    """
    b, _, h, w = images.shape
    ch, cw = crop_size
    sh, sw = stride
    if not (1 <= sh <= ch and 1 <= sw <= cw):  # a larger stride leaves pixels no window covers (nan logits)
        raise SegcoreError(f"slide stride {tuple(stride)} must be between 1 and the crop size {tuple(crop_size)}")
    rows = max(h - ch + sh - 1, 0) // sh + 1
    cols = max(w - cw + sw - 1, 0) // sw + 1
    logits = images.new_zeros((b, num_classes, h, w), dtype=torch.float32)
    count = images.new_zeros((1, 1, h, w), dtype=torch.float32)
    for r in range(rows):
        for c in range(cols):
            y2 = min(r * sh + ch, h)
            x2 = min(c * sw + cw, w)
            y1 = max(y2 - ch, 0)
            x1 = max(x2 - cw, 0)
            logits[:, :, y1:y2, x1:x2] += model(images[:, :, y1:y2, x1:x2]).float()
            count[:, :, y1:y2, x1:x2] += 1
    return logits / count


def _resize_images(images: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(images.shape[-2:]) == size:
        return images
    resized = F.interpolate(images.float(), size=size, mode="bilinear", align_corners=False)
    if images.dtype == torch.uint8:
        resized = resized.round().clamp(0, 255).to(torch.uint8)
    return resized


@torch.no_grad()
def infer_logits(
    model: nn.Module,
    images: Tensor,
    protocol: EvalProtocol | Mapping[str, Any] | None = None,
    num_classes: int | None = None,
) -> Tensor:
    """Class scores at the original image size.

    Single scale without flip returns logits; with several scales or flip the averaged softmax (mmseg
    ``aug_test``). Either way ``argmax`` over dim 1 gives the labels.

    Shape:
        images: ``[B, 3, H, W]`` (uint8 or normalised float); returns ``[B, K, H, W]`` float32.
    """
    protocol = EvalProtocol.from_dict(protocol)
    if num_classes is None:
        num_classes = int(model.config.num_classes)  # type: ignore[union-attr]
    h, w = images.shape[-2:]
    several = len(protocol.scales) > 1 or protocol.flip
    total: Tensor | None = None
    for factor in protocol.scales:
        scaled = _resize_images(images, protocol.image_size(h, w, factor))
        for flip in (False, True) if protocol.flip else (False,):
            x = scaled.flip(-1) if flip else scaled
            if protocol.mode == "slide":
                out = slide_logits(model, x, protocol.crop_size, protocol.stride, num_classes)  # type: ignore[arg-type]
            else:
                out = model(x).float()
            if flip:
                out = out.flip(-1)
            if tuple(out.shape[-2:]) != (h, w):
                out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
            if several:
                out = out.softmax(dim=1)
            total = out if total is None else total + out
    assert total is not None
    return total / (len(protocol.scales) * (2 if protocol.flip else 1)) if several else total


def returns_probabilities(protocol: EvalProtocol | Mapping[str, Any] | None) -> bool:
    """Does :func:`infer_logits` return probabilities (several scales or flip: the averaged softmax), not logits?"""
    protocol = EvalProtocol.from_dict(protocol)
    return len(protocol.scales) > 1 or protocol.flip


def predict_labels(
    model: nn.Module,
    images: Tensor,
    protocol: EvalProtocol | Mapping[str, Any] | None = None,
    num_classes: int | None = None,
) -> Tensor:
    """``argmax`` of :func:`infer_logits`: ``[B, H, W]`` long at the original size."""
    return infer_logits(model, images, protocol, num_classes).argmax(dim=1)


# ------------------------------------------------------------------------------------------- images of any size
# Bytes of class scores the bounded path may hold at once (per pass kept, or per band / window).
MEMORY_BUDGET = 512 * 2**20


def _label_dtype(num_classes: int) -> np.dtype:
    # The smallest integer type that holds every class value: class 257 must stay 257, not wrap to 1.
    return np.dtype(np.uint8 if num_classes <= 256 else np.uint16 if num_classes <= 65536 else np.int32)


def _windows(size: int, crop: int, stride: int) -> list[tuple[int, int, int, int]]:
    """``(start, end, keep_from, keep_to)`` of each window along one axis, as :func:`slide_logits` places them.

    Neighbouring windows split their overlap in the middle: each pixel takes the scores of one window only, so no
    score map of the whole image is ever needed.
    """
    n = max(size - crop + stride - 1, 0) // stride + 1
    spans = []
    for i in range(n):
        end = min(i * stride + crop, size)
        spans.append((max(end - crop, 0), end))
    out = []
    for i, (start, end) in enumerate(spans):
        keep_from = 0 if i == 0 else (start + spans[i - 1][1]) // 2
        keep_to = size if i == n - 1 else (spans[i + 1][0] + end) // 2
        out.append((start, end, keep_from, keep_to))
    return out


def _window_scores(model: nn.Module, crop: Tensor, protocol: EvalProtocol, num_classes: int) -> Tensor:
    """Scores of one window: the model's logits, or with several scales / flip their averaged softmax."""
    if len(protocol.scales) == 1 and protocol.scales[0] == 1.0 and not protocol.flip:
        return model(crop).float()
    # The window's own multi-scale / flip test: infer_logits of the window as a whole image at its size.
    whole = EvalProtocol(scales=protocol.scales, flip=protocol.flip)
    return infer_logits(model, crop, whole, num_classes)


def _resize_labels(labels: np.ndarray, h: int, w: int) -> np.ndarray:
    from PIL import Image

    if labels.shape == (h, w):
        return labels
    wide = labels.astype(np.int32)  # Pillow's 32-bit integer mode resizes every label type alike
    return np.asarray(Image.fromarray(wide).resize((w, h), Image.NEAREST)).astype(labels.dtype)


@dataclass
class LabelMaps:
    """What :func:`predict_maps` returns for one ``[H, W]`` image.

    Attributes:
        labels: ``[H, W]`` class ids, uint8 (``K <= 256``), uint16 (``K <= 65536``) or int32.
        confidence: ``[H, W]`` uint8, ``round(255 * max class probability)`` (when asked), 8-bit for any ``K``.
        probs: ``[K, H, W]`` float16 class probabilities (when asked): the ones ``labels`` is the argmax of.
    """

    labels: np.ndarray
    confidence: np.ndarray | None = None
    probs: np.ndarray | None = None


class _Sink:
    """Where the three ways of :func:`predict_maps` put the scores of a region: labels, and what else was asked."""

    def __init__(self, h: int, w: int, k: int, normalised: bool, confidence: bool, probs: bool) -> None:
        self.normalised = normalised
        self.maps = LabelMaps(
            np.empty((h, w), _label_dtype(k)),
            np.empty((h, w), np.uint8) if confidence else None,
            np.empty((k, h, w), np.float16) if probs else None,
        )

    def put(self, scores: Tensor, rows: slice = slice(None), cols: slice = slice(None)) -> None:
        """``scores``: ``[K, h, w]`` logits, or probabilities when the protocol averages several passes."""
        from segcore.evaluation.confidence import confidence_levels, max_probability

        maps = self.maps
        maps.labels[rows, cols] = scores.argmax(0).cpu().numpy().astype(maps.labels.dtype)
        if maps.confidence is not None:
            maps.confidence[rows, cols] = confidence_levels(max_probability(scores, self.normalised, dim=0))
        if maps.probs is not None:
            probs = scores.float() if self.normalised else scores.float().softmax(0)
            maps.probs[:, rows, cols] = probs.cpu().numpy().astype(np.float16)

    def resized(self, h: int, w: int) -> LabelMaps:
        """The maps resized (nearest, as the labels) to ``h x w``."""
        maps = self.maps
        return LabelMaps(
            _resize_labels(maps.labels, h, w),
            None if maps.confidence is None else _resize_labels(maps.confidence, h, w),
            None if maps.probs is None else np.stack([_resize_plane(plane, h, w) for plane in maps.probs]),
        )


def _resize_plane(plane: np.ndarray, h: int, w: int) -> np.ndarray:
    from PIL import Image

    if plane.shape == (h, w):
        return plane
    return np.asarray(Image.fromarray(plane.astype(np.float32)).resize((w, h), Image.NEAREST)).astype(plane.dtype)


@torch.no_grad()
def predict_label_map(
    model: nn.Module,
    image: Tensor,
    protocol: EvalProtocol | Mapping[str, Any] | None = None,
    num_classes: int | None = None,
    memory_budget: int = MEMORY_BUDGET,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Labels of one image of any size: :func:`predict_maps`'s ``labels`` (its docstring says how)."""
    return predict_maps(model, image, protocol, num_classes, memory_budget, progress).labels


@torch.no_grad()
def predict_maps(
    model: nn.Module,
    image: Tensor,
    protocol: EvalProtocol | Mapping[str, Any] | None = None,
    num_classes: int | None = None,
    memory_budget: int = MEMORY_BUDGET,
    progress: Callable[[int, int], None] | None = None,
    confidence: bool = False,
    probs: bool = False,
) -> LabelMaps:
    """Labels (and confidence, probabilities) of one image of any size, holding about ``memory_budget`` bytes of scores.

    Three ways, chosen by size (a whole-image protocol whose scores fit none of them runs as in 1: the model's
    output alone is that large):

    1. The scores at the original size fit: :func:`predict_labels`, exactly as ``segcore eval`` runs.
    2. The scores at the network's size fit (the protocol resizes, e.g. to ``(2048, 512)``): those are computed as
       :func:`infer_logits` does, then resized to the original size and reduced to labels band by band.
    3. Neither fits (a native-size sliding window over an 8000 x 8000 image): each window keeps the middle of its
       overlap with its neighbours and writes labels for that part only; several scales or flip are applied per
       window. A protocol that resizes is applied first and the labels are resized back (nearest).

    The confidence and the probabilities come from the very scores each label is the argmax of (the softmax of the
    logits, or the averaged softmax of several scales or flip), region by region; in way 3 with a resizing protocol
    they are resized back (nearest) as the labels are. ``probs`` (``K x H x W`` float16) is held whole: it is output.

    Args:
        model: a segmentation model taking ``[1, 3, h, w]`` images (uint8 or normalised), returning logits.
        image: ``[1, 3, H, W]``; it may stay on the CPU while the model runs on a GPU (windows are moved).
        protocol: the eval protocol.
        num_classes: classes ``K`` (default: ``model.config.num_classes``).
        memory_budget: bytes of float32 class scores held at once.
        progress: called as ``progress(done, total)`` after each window, pass or band.
        confidence: also return the uint8 confidence map.
        probs: also return the class probabilities.
    """
    protocol = EvalProtocol.from_dict(protocol)
    if num_classes is None:
        num_classes = int(model.config.num_classes)  # type: ignore[union-attr]
    k = num_classes
    device = next((p.device for p in model.parameters()), image.device)
    h, w = image.shape[-2:]
    passes = [(f, flip) for f in protocol.scales for flip in ((False, True) if protocol.flip else (False,))]
    net = [protocol.image_size(h, w, f) for f in protocol.scales]
    biggest = max(nh * nw for nh, nw in net)
    several = returns_probabilities(protocol)
    banded = 4 * k * sum(nh * nw for nh, nw in net) * (2 if protocol.flip else 1) <= memory_budget
    if 4 * k * (h * w + biggest) > memory_budget and (banded or protocol.mode == "slide"):
        if banded:
            sink = _Sink(h, w, k, several, confidence, probs)
            _banded(model, image, protocol, k, sink, passes, memory_budget, progress, device)
            return sink.maps
        nh, nw = protocol.image_size(h, w, 1.0)
        sink = _Sink(nh, nw, k, several, confidence, probs)
        _stitched(model, image, protocol, k, sink, progress, device)
        return sink.resized(h, w)
    # The scores fit; or a whole-image protocol: the model scores the whole image in one forward anyway, its own
    # output is as large as these scores, so the budget cannot be kept without windows (segcore predict switches
    # large images to windows).
    sink = _Sink(h, w, k, several, confidence, probs)
    sink.put(infer_logits(model, image.to(device), protocol, k)[0])
    if progress:
        progress(1, 1)
    return sink.maps


def _network_scores(model: nn.Module, x: Tensor, protocol: EvalProtocol, k: int) -> Tensor:
    if protocol.mode == "slide":
        return slide_logits(model, x, protocol.crop_size, protocol.stride, k)  # type: ignore[arg-type]
    return model(x).float()


def _banded(
    model: nn.Module,
    image: Tensor,
    protocol: EvalProtocol,
    k: int,
    sink: _Sink,
    passes: list[tuple[float, bool]],
    budget: int,
    progress: Callable[[int, int], None] | None,
    device: torch.device,
) -> None:
    h, w = image.shape[-2:]
    several = len(passes) > 1
    band = max(1, min(h, budget // (4 * w * (2 * k + 2))))
    total = len(passes) + -(-h // band)
    kept = []
    for i, (factor, flip) in enumerate(passes):
        x = _resize_images(image, protocol.image_size(h, w, factor)).to(device)
        x = x.flip(-1) if flip else x
        out = _network_scores(model, x, protocol, k)
        kept.append((out.flip(-1) if flip else out).cpu())
        if progress:
            progress(i + 1, total)
    # Sample each band from the network-size scores exactly where F.interpolate(bilinear, align_corners=False)
    # would: x_src = (x + 0.5) * W_in / W_out - 0.5, which grid_sample's normalised coordinates express as
    # (2x + 1) / W_out - 1; "border" clamps at the edges as interpolate does.
    gx = (2 * torch.arange(w, dtype=torch.float64) + 1) / w - 1
    for j, y0 in enumerate(range(0, h, band)):
        y1 = min(h, y0 + band)
        gy = (2 * torch.arange(y0, y1, dtype=torch.float64) + 1) / h - 1
        grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)[None].float()
        total_scores = None
        for scores in kept:
            if tuple(scores.shape[-2:]) == (h, w):
                part = scores[:, :, y0:y1]
            else:
                part = F.grid_sample(scores, grid, mode="bilinear", padding_mode="border", align_corners=False)
            part = part.softmax(1) if several else part
            total_scores = part if total_scores is None else total_scores + part
        assert total_scores is not None
        sink.put(total_scores[0] / len(kept) if several else total_scores[0], slice(y0, y1))  # the mean softmax
        if progress:
            progress(len(passes) + j + 1, total)


def _stitched(
    model: nn.Module,
    image: Tensor,
    protocol: EvalProtocol,
    k: int,
    sink: _Sink,
    progress: Callable[[int, int], None] | None,
    device: torch.device,
) -> None:
    h, w = image.shape[-2:]
    nh, nw = protocol.image_size(h, w, 1.0)
    x = _resize_images(image, (nh, nw))
    assert protocol.crop_size is not None and protocol.stride is not None
    rows = _windows(nh, protocol.crop_size[0], protocol.stride[0])
    cols = _windows(nw, protocol.crop_size[1], protocol.stride[1])
    done, total = 0, len(rows) * len(cols)
    for y1, y2, ky1, ky2 in rows:
        for x1, x2, kx1, kx2 in cols:
            scores = _window_scores(model, x[:, :, y1:y2, x1:x2].to(device), protocol, k)
            sink.put(scores[0, :, ky1 - y1 : ky2 - y1, kx1 - x1 : kx2 - x1], slice(ky1, ky2), slice(kx1, kx2))
            done += 1
            if progress:
                progress(done, total)

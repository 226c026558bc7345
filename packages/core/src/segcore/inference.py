"""Whole-image, sliding-window and multi-scale + flip inference; logits come back at the original image size.

Semantics follow mmseg 0.x ``EncoderDecoder.inference``: the image is optionally rescaled as the
:class:`~segcore.settings.EvalProtocol` says (keep-ratio ``resize``, ``min_size``, ``resize_to_multiple``), run
whole or in
``crop_size`` windows every ``stride`` pixels (the last window is shifted back inside the image and the
overlapping logits are averaged), the softmax of every scale (and its horizontal flip) is averaged, and the
result is resized bilinearly to the original size so that labels are scored at their own resolution.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segcore.errors import SegcoreError
from segcore.settings import EvalProtocol

__all__ = ["EvalProtocol", "PRECISIONS", "precision", "slide_logits", "infer_logits", "predict_labels"]

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


def predict_labels(
    model: nn.Module,
    images: Tensor,
    protocol: EvalProtocol | Mapping[str, Any] | None = None,
    num_classes: int | None = None,
) -> Tensor:
    """``argmax`` of :func:`infer_logits`: ``[B, H, W]`` long at the original size."""
    return infer_logits(model, images, protocol, num_classes).argmax(dim=1)

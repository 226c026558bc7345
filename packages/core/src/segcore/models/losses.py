"""Pixel-wise losses: ``ce``, ``focal`` and ``dice``.

Logits are resized to the label size (bilinear, ``align_corners=False``) before the loss, as mmseg does.
Pixels equal to ``ignore_index`` never contribute to the numerator. ``average`` chooses the
denominator: ``"all"`` divides by every pixel, ignored ones included (mmseg 0.x ``avg_non_ignore=False``,
what the official recipes of SegNeXt, SegViT and SegDeformer used), ``"valid"`` by the labelled pixels only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from segcore.config.options import parse_options
from segcore.errors import OptionsError
from segcore.models.contracts import DecoderOutput, Loss

__all__ = [
    "CrossEntropyOptions",
    "CrossEntropyLoss",
    "FocalOptions",
    "FocalLoss",
    "DiceOptions",
    "DiceLoss",
    "resize_logits",
    "cross_entropy",
]

Average = Literal["all", "valid"]


def resize_logits(logits: Tensor, target: Tensor) -> Tensor:
    """Bilinearly resize ``logits`` ``[B, K, h, w]`` to the ``[H, W]`` of ``target`` ``[B, H, W]``."""
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    return logits


def _class_weight(weight: tuple[float, ...] | None, num_classes: int, ref: Tensor) -> Tensor | None:
    if weight is None:
        return None
    if len(weight) != num_classes:
        raise OptionsError(f"class_weight has {len(weight)} entries for {num_classes} classes")
    return torch.tensor(weight, dtype=ref.dtype, device=ref.device)


def _reduce(per_pixel: Tensor, valid: Tensor, average: Average, denom_weight: Tensor | None = None) -> Tensor:
    total = per_pixel.sum()
    if average == "all":
        return total / max(per_pixel.numel(), 1)
    denom = denom_weight.sum() if denom_weight is not None else valid.sum()
    return total / denom.clamp(min=1e-12) if denom.numel() else total


def cross_entropy(
    logits: Tensor,
    target: Tensor,
    ignore_index: int = 255,
    class_weight: Tensor | None = None,
    average: Average = "all",
) -> Tensor:
    """Pixel-wise cross-entropy of ``logits`` (resized to the target) against ``target``.

    Shape:
        logits: ``[B, K, h, w]``; target: ``[B, H, W]`` long.
    """
    logits = resize_logits(logits, target).float()
    per_pixel = F.cross_entropy(logits, target, weight=class_weight, ignore_index=ignore_index, reduction="none")
    valid = target != ignore_index
    weights = None
    if class_weight is not None and average == "valid":
        weights = class_weight[target.clamp(0, logits.shape[1] - 1)] * valid
    return _reduce(per_pixel, valid, average, weights)


@dataclass(frozen=True)
class CrossEntropyOptions:
    """Options of ``ce``.

    Attributes:
        class_weight: one weight per class, or ``None``.
        average: ``"all"`` (mmseg default: divide by every pixel) or ``"valid"`` (labelled pixels only).
        loss_weight: factor applied to the loss.
    """

    class_weight: tuple[float, ...] | None = None
    average: Average = "all"
    loss_weight: float = 1.0


class CrossEntropyLoss(Loss):
    """Cross-entropy over ``output.logits`` with mmseg's averaging by default.

    Shape:
        target: ``[B, H, W]`` long.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, **options: object) -> None:
        """Validate options; see :class:`CrossEntropyOptions`."""
        super().__init__()
        self.options = parse_options(CrossEntropyOptions, options, "ce")
        if self.options.average not in ("all", "valid"):
            raise OptionsError(f"ce: average must be 'all' or 'valid', got {self.options.average!r}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def forward(self, output: DecoderOutput, target: Tensor) -> dict[str, Tensor]:
        """Return ``{"loss", "loss_ce"}``."""
        weight = _class_weight(self.options.class_weight, self.num_classes, output.logits)
        loss = self.options.loss_weight * cross_entropy(
            output.logits, target, self.ignore_index, weight, self.options.average
        )
        return {"loss": loss, "loss_ce": loss.detach()}


@dataclass(frozen=True)
class FocalOptions:
    """Options of ``focal``.

    Attributes:
        gamma: focusing exponent (paper: 2).
        alpha: per-class balancing weights, or ``None``.
        average: ``"all"`` or ``"valid"``, as for ``ce``.
        loss_weight: factor applied to the loss.
    """

    gamma: float = 2.0
    alpha: tuple[float, ...] | None = None
    average: Average = "valid"
    loss_weight: float = 1.0


class FocalLoss(Loss):
    """Softmax focal loss (Lin et al., arXiv:1708.02002, Eq. 5): ``-alpha_t (1 - p_t)^gamma log p_t``."""

    def __init__(self, num_classes: int, ignore_index: int = 255, **options: object) -> None:
        """Validate options; see :class:`FocalOptions`."""
        super().__init__()
        self.options = parse_options(FocalOptions, options, "focal")
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def forward(self, output: DecoderOutput, target: Tensor) -> dict[str, Tensor]:
        """Return ``{"loss", "loss_focal"}``."""
        logits = resize_logits(output.logits, target).float()
        valid = target != self.ignore_index
        safe = torch.where(valid, target, torch.zeros_like(target))
        log_p = F.log_softmax(logits, dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)
        per_pixel = -((1 - log_p.exp()) ** self.options.gamma) * log_p
        alpha = _class_weight(self.options.alpha, self.num_classes, logits)
        if alpha is not None:
            per_pixel = per_pixel * alpha[safe]
        per_pixel = per_pixel * valid
        loss = self.options.loss_weight * _reduce(per_pixel, valid, self.options.average)
        return {"loss": loss, "loss_focal": loss.detach()}


@dataclass(frozen=True)
class DiceOptions:
    """Options of ``dice``.

    Attributes:
        smooth: added to numerator and denominator.
        exponent: power of the probabilities and targets in the denominator (V-Net uses 2).
        loss_weight: factor applied to the loss.
    """

    smooth: float = 1.0
    exponent: int = 2
    loss_weight: float = 1.0


class DiceLoss(Loss):
    """Soft multi-class Dice loss (Milletari et al., arXiv:1606.04797, Eq. 1), averaged over classes.

    Ignored pixels are removed from both the prediction and the target.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, **options: object) -> None:
        """Validate options; see :class:`DiceOptions`."""
        super().__init__()
        self.options = parse_options(DiceOptions, options, "dice")
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def forward(self, output: DecoderOutput, target: Tensor) -> dict[str, Tensor]:
        """Return ``{"loss", "loss_dice"}``."""
        logits = resize_logits(output.logits, target).float()
        valid = (target != self.ignore_index).unsqueeze(1)
        probs = logits.softmax(dim=1) * valid
        safe = torch.where(valid.squeeze(1), target, torch.zeros_like(target))
        onehot = F.one_hot(safe, self.num_classes).permute(0, 3, 1, 2).to(probs.dtype) * valid
        dims = (0, 2, 3)
        e, s = self.options.exponent, self.options.smooth
        numer = 2 * (probs * onehot).sum(dims) + s
        denom = (probs.pow(e) + onehot.pow(e)).sum(dims) + s
        loss = self.options.loss_weight * (1 - numer / denom).mean()
        return {"loss": loss, "loss_dice": loss.detach()}

"""ATM loss of SegViT: fixed query<->class assignment, CE + sigmoid focal + dice on every cascade output.

Paper: Zhang et al., SegViT, NeurIPS 2022, arXiv 2210.05844; upstream ``losses/atm_loss.py`` and
``losses/criterion.py`` of https://github.com/zbwxp/SegVit (commit 763137e). Written from
``specs/segvit.md`` §5. There is no Hungarian matching: query c is matched to class c when c is present.

What the port changed: option ``ignore_mode="exclude"`` removes ignored pixels from the focal and dice
terms (segcore's DESIGN rule); the default ``"official"`` treats them as background, as upstream does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from segcore.config.options import parse_options
from segcore.models.contracts import DecoderOutput, Loss
from torch import Tensor

__all__ = ["ATMLossOptions", "ATMLoss", "atm_loss"]


@dataclass(frozen=True)
class ATMLossOptions:
    """Options of the ``atm`` loss (defaults: the official configs).

    Attributes:
        no_object_weight: CE weight of the no-object class (``eos_coef``).
        ce_weight: weight of the classification term.
        focal_weight: weight of the sigmoid focal mask term.
        dice_weight: weight of the dice mask term.
        ignore_mode: ``"official"``: ignored pixels are background in every mask target;
            ``"exclude"``: they are left out of the mask terms.
    """

    no_object_weight: float = 0.1
    ce_weight: float = 1.0
    focal_weight: float = 20.0
    dice_weight: float = 1.0
    ignore_mode: Literal["official", "exclude"] = "official"


class ATMLoss(Loss):
    """Loss of the ``atm`` / ``atm-shrunk`` decoders (spec §5).

    Reads ``output.aux["class_logits"]`` ``[S, B, K, K + 1]`` and ``output.aux["mask_logits"]``
    ``[S, B, K, h, w]``; the last entry is the final prediction, the others are auxiliary (suffix ``_k``).

    Shape:
        target: ``[B, H, W]`` long, ``ignore_index`` for ignored pixels.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, options: ATMLossOptions | None = None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.options = options or ATMLossOptions()
        weight = torch.ones(num_classes + 1)
        weight[-1] = self.options.no_object_weight
        self.register_buffer("empty_weight", weight, persistent=False)

    def _terms(self, class_logits: Tensor, mask_logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, k = class_logits.shape[:2]
        classes = torch.arange(k, device=target.device)
        # onehot[b, c, y, x]: pixel has class c (ignored pixels match no class).
        onehot = target.unsqueeze(1) == classes.view(1, -1, 1, 1)
        present = onehot.flatten(2).any(-1)  # [B, K]
        cls_target = torch.where(present, classes.expand(b, -1), torch.full_like(present, k, dtype=torch.long))
        loss_ce = F.cross_entropy(class_logits.transpose(1, 2), cls_target, weight=self.empty_weight.to(class_logits))
        num_masks = present.sum().clamp(min=1).to(mask_logits.dtype)
        logits = F.interpolate(mask_logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
        logits, t = logits[present].flatten(1), onehot[present].flatten(1).to(logits.dtype)  # [M, HW]
        valid = torch.ones_like(t)
        if self.options.ignore_mode == "exclude":
            keep = (target != self.ignore_index).unsqueeze(1).expand_as(onehot)[present].flatten(1)
            valid = keep.to(t.dtype)
        p = logits.sigmoid()
        ce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
        p_t = p * t + (1 - p) * (1 - t)
        alpha_t = 0.25 * t + 0.75 * (1 - t)
        focal = alpha_t * ce * (1 - p_t) ** 2
        loss_mask = ((focal * valid).sum(1) / valid.sum(1).clamp(min=1)).sum() / num_masks
        num = 2 * (p * t * valid).sum(1) + 1
        den = (p * valid).sum(1) + (t * valid).sum(1) + 1
        loss_dice = (1 - num / den).sum() / num_masks
        return loss_ce, loss_mask, loss_dice

    def forward(self, output: DecoderOutput, target: Tensor) -> dict[str, Tensor]:
        """Return ``loss_ce``/``loss_mask``/``loss_dice`` (weighted; ``_k`` for aux output k) and ``loss``."""
        class_logits, mask_logits = output.aux["class_logits"], output.aux["mask_logits"]
        n = class_logits.shape[0]
        o = self.options
        out: dict[str, Tensor] = {}
        for s in range(n):
            suffix = "" if s == n - 1 else f"_{s}"
            ce, mask, dice = self._terms(class_logits[s], mask_logits[s], target)
            out[f"loss_ce{suffix}"] = o.ce_weight * ce
            out[f"loss_mask{suffix}"] = o.focal_weight * mask
            out[f"loss_dice{suffix}"] = o.dice_weight * dice
        out["loss"] = sum(out.values())
        return out


def atm_loss(num_classes: int, ignore_index: int = 255, **options: object) -> ATMLoss:
    """The ``atm`` loss."""
    return ATMLoss(num_classes, ignore_index, parse_options(ATMLossOptions, options, component="atm loss"))

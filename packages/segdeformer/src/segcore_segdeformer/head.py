"""SegDeformer decoder and its loss.

Paper: Shi, Jiang, Zhang, Li, Dai, Zou, Xiong, Tian, *A Transformer-based Decoder for Semantic
Segmentation with Multi-level Context Mining*, ECCV 2022.
Upstream: github.com/lygsbw/segdeformer @ 77f2dacd2579297f77c21ad1cf9ac6ec999c1991, class
``SegDeformerHead3`` in ``mmseg/models/decode_heads/segformer_head.py`` (NVIDIA Source Code License,
non-commercial). This file is written from the spec ``segdeformer.md`` §2-§5 and reproduces the
released class's numerics, not the paper's equations where the two differ (spec §10).

What this port changes:
* both N x N attentions run through :func:`torch.nn.functional.scaled_dot_product_attention` (one head,
  scale ``1/sqrt(C)``, same maths as the official explicit softmax) so the N x N map is never stored
  by the fused kernels; ``attention="materialized"`` keeps the explicit map for checks and benchmarks.
  The class branch keeps an explicit ``N x K`` map: its logits are an output (``aux["mid_logits"]``).
* ``kv_reduction`` (paper §3.4 "efficient self-attention", no official code) is an option, off by default.
* ``fusion="upernet"`` (the paper's † rows, "following Swin, UperNet is introduced"; no official code) builds
  X_inter with a UperNet PPM + FPN instead of SegFormer's MLP fusion; the SegDeformer block is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from segcore.config.options import FRACTION, parse_options
from segcore.errors import OptionsError
from segcore.models.contracts import Decoder, DecoderOutput, Loss
from segcore.models.layers import ConvBNReLU, UPerBody, init_classifier, init_weights
from segcore.models.layers import resize as _resize
from segcore.models.losses import cross_entropy
from segcore.plugins.specs import PYRAMID_STRIDES, FeatureInfo
from torch import Tensor, nn

__all__ = [
    "SegDeformerOptions",
    "SegDeformerHead",
    "SegDeformerLossOptions",
    "SegDeformerLoss",
    "segdeformer",
    "segdeformer_loss",
]

Attention = Literal["sdpa", "materialized"]
Fusion = Literal["mlp", "upernet"]


def _token_map(tokens: Tensor, h: int, w: int) -> Tensor:
    """``[B, h*w, C]`` tokens as a ``[B, C, h, w]`` map; a channels-last view when ``tokens`` is contiguous."""
    return tokens.unflatten(1, (h, w)).permute(0, 3, 1, 2)


@dataclass(frozen=True)
class SegDeformerOptions:
    """Options of the ``segdeformer`` decoder.

    Attributes:
        channels: decoder width C (256 in every released config).
        dropout: ``Dropout2d`` probability before the classifier.
        in_index: which encoder maps to use (all by default); the head works at the first one's size.
        attention: ``"sdpa"`` (fused kernel, default) or ``"materialized"`` (explicit N x N softmax map,
            the official formulation; same numbers, much more memory).
        kv_reduction: R of the paper's efficient self-attention (§3.4): an R x R stride-R conv on the
            projected keys and values of both attentions. 1 = off (the released code). Not official.
        fusion: how X_inter is built from the selected maps: ``"mlp"`` (SegFormer's per-map 1x1 conv,
            resize, concatenate, 1x1 conv: the released code) or ``"upernet"`` (the paper's † variant: a
            UperNet PPM on the last map + FPN, fused at the first map's size; not official).
        pool_scales: PPM output sizes of ``fusion="upernet"`` (mmseg UPerHead's default).
    """

    channels: int = 256
    dropout: float = field(default=0.1, metadata=FRACTION)
    in_index: tuple[int, ...] | None = None
    attention: Attention = "sdpa"
    kv_reduction: int = 1
    fusion: Fusion = "mlp"
    pool_scales: tuple[int, ...] = (1, 2, 3, 6)

    def __post_init__(self) -> None:
        """Reject values the head cannot use, where the options are made."""
        if self.attention not in ("sdpa", "materialized"):
            raise OptionsError(f"segdeformer: attention must be 'sdpa' or 'materialized', got {self.attention!r}")
        if self.kv_reduction < 1:
            raise OptionsError(f"segdeformer: kv_reduction must be >= 1, got {self.kv_reduction}")
        if self.fusion not in ("mlp", "upernet"):
            raise OptionsError(f"segdeformer: fusion must be 'mlp' or 'upernet', got {self.fusion!r}")


class ClassBranch(nn.Module):
    """Mid-level class attention (spec §2.4-5): ``M_mid = k(cls) q(X)^T / sqrt(C)``, ``X_mid = softmax_K(M) info``.

    ``cls_token`` is the class half and ``info_token`` the info half of the paper's decoupled external
    tokens (Eq. 10); the info half is used without a value projection, as in the released code.

    Shape:
        x: ``[B, N, C]``; returns mid logits ``[B, N, K]`` and X_mid ``[B, N, C]``.
    """

    def __init__(self, channels: int, num_classes: int) -> None:
        """Build tokens (trunc-normal .02, cut at +-2) and the q/k linears (PyTorch default init)."""
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, num_classes, channels))
        self.info_token = nn.Parameter(torch.zeros(1, num_classes, channels))
        self.q = nn.Linear(channels, channels)
        self.k = nn.Linear(channels, channels)
        self.scale = channels**-0.5
        nn.init.trunc_normal_(self.cls_token, std=0.02, a=-2.0, b=2.0)
        nn.init.trunc_normal_(self.info_token, std=0.02, a=-2.0, b=2.0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(mid_logits [B, N, K], x_mid [B, N, C])``."""
        keys = self.k(self.cls_token) * self.scale  # [1, K, C]; official scales the keys before the product
        logits = self.q(x) @ keys.transpose(1, 2)  # an N x K map, never N x N
        return logits, logits.softmax(dim=-1) @ self.info_token


class SingleHeadAttention(nn.Module):
    """mmseg ``SelfAttentionBlock`` as SegDeformer configures it (spec §2.6-7).

    Query, key and value projections and an output projection, each a 1x1 conv + BN + ReLU; one head;
    softmax over the N key positions with scale ``1/sqrt(C)``; no residual, norm or FFN inside.

    Shape:
        query_feats, kv_feats: ``[B, C, h, w]``; output ``[B, C, h, w]``.
    """

    def __init__(self, channels: int, attention: Attention, kv_reduction: int) -> None:
        """Build the four projections and the optional key/value reduction conv."""
        super().__init__()
        self.query = ConvBNReLU(channels, channels, 1)
        self.key = ConvBNReLU(channels, channels, 1)
        self.value = ConvBNReLU(channels, channels, 1)
        self.out = ConvBNReLU(channels, channels, 1)
        self.attention = attention
        # Paper §3.4: one R x R stride-R conv shrinks both projected K and V (mmseg's key_downsample hook).
        self.reduce = nn.Conv2d(channels, channels, kv_reduction, kv_reduction) if kv_reduction > 1 else None

    def forward(self, query_feats: Tensor, kv_feats: Tensor) -> Tensor:
        """Attend from every query pixel to every (possibly reduced) key pixel."""
        b, c, h, w = query_feats.shape
        # The fused CPU/GPU SDPA kernels need a unit stride on the channel axis; with NCHW-transposed views
        # PyTorch silently falls back to the math path (an N x N map). Channels-last inputs make the 1x1
        # projections come out token-major already, so the ``contiguous`` below copies nothing.
        query_feats = query_feats.contiguous(memory_format=torch.channels_last)
        kv_feats = kv_feats.contiguous(memory_format=torch.channels_last)
        k, v = self.key(kv_feats), self.value(kv_feats)
        if self.reduce is not None:
            k, v = self.reduce(k), self.reduce(v)
        q, k, v = (t.flatten(2).transpose(1, 2).contiguous() for t in (self.query(query_feats), k, v))
        if self.attention == "sdpa":
            ctx = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)).squeeze(1)
        else:
            ctx = ((q @ k.transpose(1, 2)) * c**-0.5).softmax(dim=-1) @ v
        return self.out(_token_map(ctx, h, w))


class SegDeformerHead(Decoder):
    """SegDeformer head (``SegDeformerHead3``): SegFormer fusion, internal + external attention, classifier.

    ``logits = conv_seg(dropout(X + Attn(X, X) + Attn(X, X_mid)))`` where X is the fused SegFormer map
    and ``X_mid`` is the class-branch output. ``aux["mid_logits"]`` carries the class-branch logits for
    the L_attn term of the loss.

    Shape:
        features: maps ``[B, C_i, H_i, W_i]``; output logits and ``aux["mid_logits"]``: ``[B, K, H_0, W_0]``.
    """

    in_strides = PYRAMID_STRIDES
    default_loss = "segdeformer"

    def __init__(self, in_features: Sequence[FeatureInfo], num_classes: int, options: SegDeformerOptions) -> None:
        """Build the head for the selected ``in_features``."""
        super().__init__()
        o = options
        n = len(in_features)
        self.in_index = tuple(i % n for i in (o.in_index if o.in_index is not None else range(n)))
        c = o.channels
        self.fusion = o.fusion
        if o.fusion == "mlp":
            self.convs = nn.ModuleList(ConvBNReLU(in_features[i].channels, c, 1) for i in self.in_index)
            self.fusion_conv = ConvBNReLU(c * len(self.in_index), c, 1)
        else:
            self.uper = UPerBody([in_features[i].channels for i in self.in_index], c, o.pool_scales)
        self.mid = ClassBranch(c, num_classes)
        self.internal = SingleHeadAttention(c, o.attention, o.kv_reduction)
        self.external = SingleHeadAttention(c, o.attention, o.kv_reduction)
        self.dropout = nn.Dropout2d(o.dropout)
        self.conv_seg = nn.Conv2d(c, num_classes, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        # Spec §4: conv+BN blocks kaiming-normal fan_out (BN 1/0); classifier N(0, 0.01), bias 0.
        init_weights(self, conv="kaiming", norms=True, skip=(self.conv_seg,))
        init_classifier(self.conv_seg)

    def fuse(self, features: Sequence[Tensor]) -> Tensor:
        """X_inter (spec §2.1-3): project, resize to the first selected map, concatenate, fuse (or UperNet)."""
        maps = [features[i] for i in self.in_index]
        if self.fusion == "upernet":
            return self.uper(maps)
        size = maps[0].shape[-2:]
        return self.fusion_conv(torch.cat([_resize(conv(x), size) for conv, x in zip(self.convs, maps)], dim=1))

    def forward(self, features: Sequence[Tensor], image_size: tuple[int, int]) -> DecoderOutput:
        """Decode ``features``; ``image_size`` is unused (logits stay at the first map's size)."""
        # Channels-last throughout the block: token views [B, N, C] of the map are then free (no copies).
        x = self.fuse(features).contiguous(memory_format=torch.channels_last)
        b, c, h, w = x.shape
        mid_logits, x_mid = self.mid(x.flatten(2).transpose(1, 2))
        x_mid = _token_map(x_mid, h, w)
        f_aug = x + self.internal(x, x) + self.external(x, x_mid)
        logits = self.conv_seg(self.dropout(f_aug))
        return DecoderOutput(logits, {"mid_logits": mid_logits.transpose(1, 2).reshape(b, -1, h, w)})


def segdeformer(in_features: Sequence[FeatureInfo], num_classes: int, **options: object) -> SegDeformerHead:
    """Build the ``segdeformer`` decoder; see :class:`SegDeformerOptions`."""
    opts = parse_options(SegDeformerOptions, options, component="segdeformer")
    if opts.in_index is not None:
        opts = SegDeformerOptions(**{**opts.__dict__, "in_index": tuple(opts.in_index)})
    if not isinstance(opts.pool_scales, tuple):
        opts = SegDeformerOptions(**{**opts.__dict__, "pool_scales": tuple(opts.pool_scales)})
    return SegDeformerHead(in_features, num_classes, opts)


@dataclass(frozen=True)
class SegDeformerLossOptions:
    """Options of the ``segdeformer`` loss: ``CE(logits) + alpha * CE(mid_logits)`` (paper Eq. 9).

    Attributes:
        alpha: weight of L_attn (0.4, hard-coded in the official head).
        average: ``"all"`` divides by every pixel, ignored ones included (official, mmseg default);
            ``"valid"`` by labelled pixels only (PyTorch's default mean).
        class_weight: one weight per class, or ``None``.
    """

    alpha: float = 0.4
    average: Literal["all", "valid"] = "all"
    class_weight: tuple[float, ...] | None = None


class SegDeformerLoss(Loss):
    """L_seg + alpha L_attn; both logits are bilinearly resized to the label size first (spec §3).

    Shape:
        target: ``[B, H, W]`` long.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, **options: object) -> None:
        """Validate options; see :class:`SegDeformerLossOptions`."""
        super().__init__()
        self.options = parse_options(SegDeformerLossOptions, options, component="segdeformer")
        if self.options.average not in ("all", "valid"):
            raise OptionsError(f"segdeformer loss: average must be 'all' or 'valid', got {self.options.average!r}")
        if self.options.class_weight is not None and len(self.options.class_weight) != num_classes:
            raise OptionsError(f"class_weight has {len(self.options.class_weight)} entries for {num_classes} classes")
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def forward(self, output: DecoderOutput, target: Tensor) -> dict[str, Tensor]:
        """Return ``{"loss", "loss_seg", "loss_attn"}``."""
        if "mid_logits" not in output.aux:
            raise KeyError("segdeformer loss needs output.aux['mid_logits'] (the segdeformer decoder's output)")
        o = self.options
        weight = None
        if o.class_weight is not None:
            weight = torch.tensor(o.class_weight, dtype=torch.float32, device=output.logits.device)
        seg = cross_entropy(output.logits, target, self.ignore_index, weight, o.average)
        attn = cross_entropy(output.aux["mid_logits"], target, self.ignore_index, weight, o.average)
        return {"loss": seg + o.alpha * attn, "loss_seg": seg.detach(), "loss_attn": attn.detach()}


def segdeformer_loss(num_classes: int, ignore_index: int = 255, **options: object) -> SegDeformerLoss:
    """Build the ``segdeformer`` loss; see :class:`SegDeformerLossOptions`."""
    return SegDeformerLoss(num_classes, ignore_index, **options)

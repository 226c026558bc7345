"""ATM (attention-to-mask) decoders of SegViT: the cascaded ``atm`` head and the Shrunk ``atm-shrunk`` head.

Paper: Zhang et al., "SegViT: Semantic Segmentation with Plain Vision Transformers", NeurIPS 2022,
arXiv 2210.05844. Upstream: https://github.com/zbwxp/SegVit (commit 763137e, ``atm_head.py``,
``atm_single_head.py``, ``tpn_atm_head.py``), AdelaiDet non-commercial licence. Written from the
reference spec (``specs/segvit.md`` §3, §4.2).

What the port changed:
  * Any number of input maps at any strides and non-square inputs: each stage reads one map (deepest
    first), and the stage masks are resized to the finest stage grid before they are summed (for a plain
    ViT all grids are equal, so this is the official rule). Masks are reshaped with the real ``h x w``.
  * The cross-attention logits are computed once and used both as attention (softmax) and, averaged
    over heads, as the mask (spec §3.3).
  * ``DecoderOutput.logits`` is the official semantic map (upsample mask logits, sigmoid, then mix with
    the class probabilities, spec §3.5 / quirk 17) at ``img_size`` when set, else at the input size.
    Per-stage class logits and mask logits go to ``aux`` for the loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from segcore.contracts import Decoder, DecoderOutput
from segcore.options import parse_options
from segcore.specs import FeatureInfo
from torch import Tensor, nn

__all__ = ["ATMOptions", "ATMShrunkOptions", "ATMLayer", "ATMDecoder", "ATMShrunkDecoder", "atm", "atm_shrunk"]


@dataclass(frozen=True)
class ATMOptions:
    """Options of the ``atm`` decoder.

    Attributes:
        embed_dims: decoder width D; ``None``: half the widest input (384 for ViT-B, 512 for ViT-L).
        num_heads: attention heads; ``None``: D / 32.
        num_layers: ATM layers per stage (only the last one of a stage yields the stage mask).
        dropout: dropout inside the decoder layers.
        img_size: size the masks are upsampled to for the semantic map (official ``img_size``); ``None``:
            the input size.
    """

    embed_dims: int | None = None
    num_heads: int | None = None
    num_layers: int = 3
    dropout: float = 0.1
    img_size: int | None = None


@dataclass(frozen=True)
class ATMShrunkOptions:
    """Options of the ``atm-shrunk`` decoder (QU/TPN + one ATM stage whose every layer predicts).

    Attributes:
        embed_dims: decoder width D; ``None``: half the widest input.
        num_heads: attention heads; ``None``: D / 32.
        num_layers: layers of each QU decoder and of the ATM decoder.
        dropout: dropout inside the decoder layers.
        img_size: crop size; fixes the number of pixel queries ``(img_size / 16)^2`` (spec §4.2).
    """

    embed_dims: int | None = None
    num_heads: int | None = None
    num_layers: int = 3
    dropout: float = 0.1
    img_size: int = 640


class CrossAttentionToMask(nn.Module):
    """Cross-attention whose head-averaged, scaled logits are also the mask (spec §3.3 step 2).

    Shape:
        queries: ``[B, N, D]``; memory: ``[B, L, D]``.
        output: update ``[B, N, D]`` and similarity ``[B, N, L]``.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(dropout)

    def forward(self, queries: Tensor, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Return the attention update and the head-averaged scaled logits."""
        b, n, d = queries.shape
        h = self.num_heads
        q = self.q(queries).reshape(b, n, h, d // h).transpose(1, 2)
        k = self.k(memory).reshape(b, -1, h, d // h).transpose(1, 2)
        v = self.v(memory).reshape(b, -1, h, d // h).transpose(1, 2)
        logits = (q @ k.transpose(-2, -1)) * self.scale  # [B, h, N, L], computed once
        attn = self.attn_drop(logits.softmax(dim=-1))
        out = (attn @ v).transpose(1, 2).reshape(b, n, d)
        return self.proj(out), logits.mean(dim=1)


class ATMLayer(nn.Module):
    """Post-norm decoder layer: query self-attention, attention-to-mask cross-attention, ReLU FFN (spec §3.3).

    Shape:
        queries: ``[B, N, D]``; memory: ``[B, L, D]``.
        output: queries ``[B, N, D]`` and similarity ``[B, N, L]``.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.cross_attn = CrossAttentionToMask(dim, num_heads, dropout)
        self.linear1 = nn.Linear(dim, 4 * dim)
        self.linear2 = nn.Linear(4 * dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(self, queries: Tensor, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Return the updated queries and this layer's similarity map."""
        t = self.norm1(queries + self.dropout1(self.self_attn(queries, queries, queries, need_weights=False)[0]))
        update, sim = self.cross_attn(t, memory)
        t = self.norm2(t + self.dropout2(update))
        t = self.norm3(t + self.dropout3(self.linear2(self.dropout(F.relu(self.linear1(t))))))
        return t, sim


def _init_linears(module: nn.Module) -> None:
    """Official head init (spec §3.6): trunc-normal(0.02) Linear weights, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def semantic_map(class_logits: Tensor, mask_logits: Tensor, size: tuple[int, int]) -> Tensor:
    """Official inference rule (spec §3.5): upsample mask logits, sigmoid, mix with class probabilities.

    Shape:
        class_logits: ``[B, N, K + 1]``; mask_logits: ``[B, N, h, w]``; output: ``[B, K, *size]``.
    """
    masks = F.interpolate(mask_logits, size=size, mode="bilinear", align_corners=False).sigmoid()
    probs = class_logits.softmax(dim=-1)[..., :-1]
    return torch.einsum("bqc,bqhw->bchw", probs, masks)


def _dims(in_features: Sequence[FeatureInfo], embed_dims: int | None, num_heads: int | None) -> tuple[int, int]:
    d = embed_dims or max(info.channels for info in in_features) // 2
    return d, num_heads or max(d // 32, 1)


class ATMDecoder(Decoder):
    """SegViT's cascade of ATM stages (spec §3.4): stage s reads the s-th deepest map.

    Shape:
        features: maps ``[B, C_i, h_i, w_i]``; output logits ``[B, K, H', W']`` (``img_size`` or input size);
        aux ``class_logits`` ``[S, B, K, K + 1]`` and cumulative ``mask_logits`` ``[S, B, K, h, w]``.
    """

    input_kind = "any"
    default_loss = "atm"

    def __init__(self, in_features: Sequence[FeatureInfo], num_classes: int, options: ATMOptions) -> None:
        super().__init__()
        self.options = options
        self.num_classes = num_classes
        d, heads = _dims(in_features, options.embed_dims, options.num_heads)
        stages = list(reversed(list(in_features)))
        self.input_proj = nn.ModuleList(nn.Linear(info.channels, d) for info in stages)
        self.proj_norm = nn.ModuleList(nn.LayerNorm(d) for _ in stages)
        self.stages = nn.ModuleList(
            nn.ModuleList(ATMLayer(d, heads, options.dropout) for _ in range(options.num_layers)) for _ in stages
        )
        self.class_queries = nn.Embedding(num_classes, d)
        self.class_embed = nn.Linear(d, num_classes + 1)
        _init_linears(self)

    def forward(self, features: Sequence[Tensor], image_size: tuple[int, int]) -> DecoderOutput:
        """Run the cascade deep -> shallow; see the class docstring."""
        feats = list(reversed(list(features)))
        b = feats[0].shape[0]
        target = max((f.shape[-2:] for f in feats), key=lambda s: s[0] * s[1])
        q = self.class_queries.weight.unsqueeze(0).repeat(b, 1, 1)
        class_logits, mask_logits = [], []
        total = None
        for feat, proj, norm, layers in zip(feats, self.input_proj, self.proj_norm, self.stages):
            h, w = feat.shape[-2:]
            lateral = norm(proj(feat.flatten(2).transpose(1, 2)))
            sim = None
            for layer in layers:
                q, sim = layer(q, lateral)
            sim = sim.reshape(b, -1, h, w)
            if tuple(sim.shape[-2:]) != tuple(target):
                sim = F.interpolate(sim, size=tuple(target), mode="bilinear", align_corners=False)
            total = sim if total is None else total + sim
            class_logits.append(self.class_embed(q))
            mask_logits.append(total)
        size = (self.options.img_size,) * 2 if self.options.img_size else tuple(image_size)
        logits = semantic_map(class_logits[-1], mask_logits[-1], size)
        aux = {"class_logits": torch.stack(class_logits), "mask_logits": torch.stack(mask_logits)}
        return DecoderOutput(logits, aux)


class ATMShrunkDecoder(Decoder):
    """Shrunk SegViT head (spec §4.2): query-based up-sampling, then one ATM stage predicting at every layer.

    QU = two standard transformer decoders whose pixel queries attend first to the 1/16 map, then to the
    1/32 map.

    Shape:
        features: ``[shallow 1/16 map, deep map]``; output logits ``[B, K, img_size, img_size]``;
        aux ``class_logits`` ``[S, B, K, K + 1]`` and per-layer ``mask_logits`` ``[S, B, K, g, g]``.
    """

    input_kind = "any"
    default_loss = "atm"

    def __init__(self, in_features: Sequence[FeatureInfo], num_classes: int, options: ATMShrunkOptions) -> None:
        super().__init__()
        if len(in_features) != 2:
            raise ValueError(f"atm-shrunk needs two maps (1/16 shallow, deep), got {len(in_features)}")
        self.options = options
        d, heads = _dims(in_features, options.embed_dims, options.num_heads)
        self.grid = options.img_size // 16
        self.input_proj = nn.ModuleList(nn.Linear(info.channels, d) for info in in_features)
        self.proj_norm = nn.ModuleList(nn.LayerNorm(d) for _ in in_features)
        self.qu = nn.ModuleList(
            nn.TransformerDecoder(
                nn.TransformerDecoderLayer(d, heads, 4 * d, options.dropout, batch_first=True), options.num_layers
            )
            for _ in in_features
        )
        self.pixel_queries = nn.Embedding(self.grid * self.grid, d)
        self.atm_layers = nn.ModuleList(ATMLayer(d, heads, options.dropout) for _ in range(options.num_layers))
        self.class_queries = nn.Embedding(num_classes, d)
        self.class_embed = nn.Linear(d, num_classes + 1)
        _init_linears(self)

    def forward(self, features: Sequence[Tensor], image_size: tuple[int, int]) -> DecoderOutput:
        """QU then ATM; see the class docstring."""
        b = features[0].shape[0]
        p = self.pixel_queries.weight.unsqueeze(0).repeat(b, 1, 1)
        for feat, proj, norm, decoder in zip(features, self.input_proj, self.proj_norm, self.qu):
            p = decoder(p, norm(proj(feat.flatten(2).transpose(1, 2))))
        q = self.class_queries.weight.unsqueeze(0).repeat(b, 1, 1)
        class_logits, mask_logits = [], []
        for layer in self.atm_layers:
            q, sim = layer(q, p)
            class_logits.append(self.class_embed(q))
            mask_logits.append(sim.reshape(b, -1, self.grid, self.grid))
        size = (self.options.img_size, self.options.img_size)
        logits = semantic_map(class_logits[-1], mask_logits[-1], size)
        aux = {"class_logits": torch.stack(class_logits), "mask_logits": torch.stack(mask_logits)}
        return DecoderOutput(logits, aux)


def atm(in_features: Sequence[FeatureInfo], num_classes: int, **options: object) -> ATMDecoder:
    """SegViT ATM cascade decoder (one stage per input map)."""
    return ATMDecoder(in_features, num_classes, parse_options(ATMOptions, options, component="atm"))


def atm_shrunk(in_features: Sequence[FeatureInfo], num_classes: int, **options: object) -> ATMShrunkDecoder:
    """Shrunk SegViT decoder: QU (TPN) + ATM."""
    return ATMShrunkDecoder(in_features, num_classes, parse_options(ATMShrunkOptions, options, component="atm-shrunk"))

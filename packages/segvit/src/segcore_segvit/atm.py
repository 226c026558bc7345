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
    over heads, as the mask (spec §3.3). Layers whose mask is discarded (all but the last of an ``atm``
    stage) use fused scaled-dot-product attention instead.
  * ``atm-shrunk`` accepts any list of maps: its two QU decoders read a shallow and a deep map chosen by
    :func:`select_qu_maps` (for the official ``[1/16, 1/32]`` pair: exactly those two), each projected to D.
    At inputs other than ``img_size`` the learned ``(img_size/16)^2`` pixel-query grid is resized
    bicubically to the input's 1/16 grid (as ViT position embeddings are), so any size, square or not, works.
  * ``DecoderOutput.logits`` is the official semantic map (upsample mask logits, sigmoid, then mix with
    the class probabilities, spec §3.5 / quirk 17) at ``img_size`` when set, else at the input size.
    Per-stage class logits and mask logits go to ``aux`` for the loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from segcore.config.options import DEPTH, FRACTION, SIZE, parse_options
from segcore.errors import OptionsError, WiringError
from segcore.models.contracts import Decoder, DecoderOutput
from segcore.models.layers import init_weights, packed_attention
from segcore.models.ops import is_tracing
from segcore.plugins.specs import FeatureInfo
from torch import Tensor, nn

from segcore_segvit.vit import resize_pos_embed

__all__ = [
    "ATMOptions",
    "ATMShrunkOptions",
    "ATMLayer",
    "ATMDecoder",
    "ATMShrunkDecoder",
    "select_qu_maps",
    "semantic_map",
    "atm",
    "atm_shrunk",
]


@dataclass(frozen=True)
class ATMOptions:
    """Options of the ``atm`` decoder.

    Attributes:
        embed_dims: decoder width D; ``None``: half the widest input (384 for ViT-B, 512 for ViT-L).
        num_heads: attention heads; ``None``: D / 32, or the largest divisor of D below it (recorded in the config).
        num_layers: ATM layers per stage (only the last one of a stage yields the stage mask).
        dropout: dropout inside the decoder layers.
        img_size: size the masks are upsampled to for the semantic map (official ``img_size``); ``None``:
            the input size.
    """

    embed_dims: int | None = None
    num_heads: int | None = None
    num_layers: int = field(default=3, metadata=DEPTH)
    dropout: float = field(default=0.1, metadata=FRACTION)
    img_size: int | None = field(default=None, metadata=SIZE)


@dataclass(frozen=True)
class ATMShrunkOptions:
    """Options of the ``atm-shrunk`` decoder (QU/TPN + one ATM stage whose every layer predicts).

    Attributes:
        embed_dims: decoder width D; ``None``: half the widest input.
        num_heads: attention heads; ``None``: D / 32, or the largest divisor of D below it (recorded in the config).
        num_layers: layers of each QU decoder and of the ATM decoder.
        dropout: dropout inside the decoder layers.
        img_size: crop size; fixes the number of pixel queries ``(img_size / 16)^2`` (spec §4.2).
    """

    embed_dims: int | None = None
    num_heads: int | None = None
    num_layers: int = field(default=3, metadata=DEPTH)
    dropout: float = field(default=0.1, metadata=FRACTION)
    img_size: int = field(default=640, metadata=SIZE)

    def __post_init__(self) -> None:
        """The pixel-query grid is ``img_size / 16`` per side."""
        if self.img_size % 16 or self.img_size <= 0:
            raise OptionsError(f"atm-shrunk: img_size must be a positive multiple of 16, got {self.img_size}")


class CrossAttentionToMask(nn.Module):
    """Cross-attention whose head-averaged, scaled logits are also the mask (spec §3.3 step 2).

    Shape:
        queries: ``[B, N, D]``; memory: ``[B, L, D]``.
        output: update ``[B, N, D]`` and similarity ``[B, N, L]`` (``None`` when ``need_mask`` is False).
    """

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        """Build the separate q/k/v/proj projections (all with bias, as upstream)."""
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(dropout)

    def forward(self, queries: Tensor, memory: Tensor, need_mask: bool = True) -> tuple[Tensor, Tensor | None]:
        """Return the attention update and the head-averaged scaled logits (if ``need_mask``)."""
        b, n, d = queries.shape
        h = self.num_heads
        q = self.q(queries).reshape(b, n, h, d // h).transpose(1, 2)
        k = self.k(memory).reshape(b, -1, h, d // h).transpose(1, 2)
        v = self.v(memory).reshape(b, -1, h, d // h).transpose(1, 2)
        if not need_mask:  # the mask of this layer is discarded: fused attention, no logits kept
            p = self.attn_drop.p if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p, scale=self.scale)
            return self.proj(out.transpose(1, 2).reshape(b, n, d)), None
        logits = (q @ k.transpose(-2, -1)) * self.scale  # [B, h, N, L], computed once for attention and mask
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
        """Build the layer (upstream module names, so official keys map one to one)."""
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

    def forward(self, queries: Tensor, memory: Tensor, need_mask: bool = True) -> tuple[Tensor, Tensor | None]:
        """Return the updated queries and this layer's similarity map (``None`` unless ``need_mask``)."""
        if is_tracing():  # see _attention: nn.MultiheadAttention does not export with dynamic sizes
            update = _attention(self.self_attn, queries, queries)
        else:
            update = self.self_attn(queries, queries, queries, need_weights=False)[0]
        t = self.norm1(queries + self.dropout1(update))
        update, sim = self.cross_attn(t, memory, need_mask)
        t = self.norm2(t + self.dropout2(update))
        t = self.norm3(t + self.dropout3(self.linear2(self.dropout(F.relu(self.linear1(t))))))
        return t, sim


def semantic_map(class_logits: Tensor, mask_logits: Tensor, size: tuple[int, int]) -> Tensor:
    """Official inference rule (spec §3.5): upsample mask logits, sigmoid, mix with class probabilities.

    The order (upsample the logits, then sigmoid, then mix) is the official one (quirk 17). The upsampling
    runs channels-last and the mixing is one ``[H*W, N] @ [N, K]`` product on that layout, which avoids a
    pass over the ``[B, N, H, W]`` masks (about 1.8x faster on CPU at 512, same values up to float rounding);
    the result is returned with channels-last strides.

    Shape:
        class_logits: ``[B, N, K + 1]``; mask_logits: ``[B, N, h, w]``; output: ``[B, K, *size]``.
    """
    masks = F.interpolate(
        mask_logits.contiguous(memory_format=torch.channels_last), size=size, mode="bilinear", align_corners=False
    )
    masks = masks.sigmoid_()  # in place: interpolate's backward does not need its output
    probs = class_logits.softmax(dim=-1)[..., :-1].to(masks.dtype)
    b, n, h, w = masks.shape
    flat = masks.permute(0, 2, 3, 1).reshape(b, h * w, n)  # a view for channels-last masks
    return torch.bmm(flat, probs).view(b, h, w, -1).permute(0, 3, 1, 2)


def _dims(in_features: Sequence[FeatureInfo], embed_dims: int | None, num_heads: int | None) -> tuple[int, int]:
    """``(D, heads)``: D half the widest input unless given; heads D / 32, else the largest divisor of D below it.

    ViT-B's 384 and ViT-L's 512 get the official 12 and 16 heads. A width that 32 does not divide (RegNetY-002's
    368 channels give D = 184) gets the largest head count at most D / 32 that divides D (4), which the model's
    config then records (``derived_options``).
    """
    d = embed_dims or max(info.channels for info in in_features) // 2
    if num_heads is not None:
        if d % num_heads:
            divisors = [h for h in range(1, min(d, 64) + 1) if d % h == 0]
            raise OptionsError(
                f"atm: num_heads {num_heads} does not divide the decoder width embed_dims={d}; pick one of "
                f"{divisors} or another embed_dims"
            )
        return d, num_heads
    return d, next(h for h in range(max(d // 32, 1), 0, -1) if d % h == 0)


class ATMDecoder(Decoder):
    """SegViT's cascade of ATM stages (spec §3.4): stage s reads the s-th deepest map.

    Shape:
        features: maps ``[B, C_i, h_i, w_i]``; output logits ``[B, K, H', W']`` (``img_size`` or input size);
        aux ``class_logits`` ``[S, B, K, K + 1]`` and cumulative ``mask_logits`` ``[S, B, K, h, w]``.
    """

    in_strides = None  # any list of maps, at any strides
    default_loss = "atm"

    def __init__(self, in_features: Sequence[FeatureInfo], num_classes: int, options: ATMOptions) -> None:
        super().__init__()
        self.options = options
        self.num_classes = num_classes
        d, heads = _dims(in_features, options.embed_dims, options.num_heads)
        self.derived_options = {"embed_dims": d, "num_heads": heads}
        stages = list(reversed(list(in_features)))
        # Masks are summed on the grid of the finest map (the largest one). Which map that is, and which stage
        # masks need resizing to it, follows from the strides, so the decision holds at every input size (also
        # in a traced export); a resize between maps that happen to share a size is an exact copy.
        self.strides = [info.stride for info in stages]
        self.target = self.strides.index(min(self.strides))
        self.input_proj = nn.ModuleList(nn.Linear(info.channels, d) for info in stages)
        self.proj_norm = nn.ModuleList(nn.LayerNorm(d) for _ in stages)
        self.stages = nn.ModuleList(
            nn.ModuleList(ATMLayer(d, heads, options.dropout) for _ in range(options.num_layers)) for _ in stages
        )
        self.class_queries = nn.Embedding(num_classes, d)
        self.class_embed = nn.Linear(d, num_classes + 1)
        init_weights(self, linear_std=0.02)  # official head init (spec §3.6)

    def forward(self, features: Sequence[Tensor], image_size: tuple[int, int]) -> DecoderOutput:
        """Run the cascade deep -> shallow; see the class docstring."""
        feats = list(reversed(list(features)))
        b = feats[0].shape[0]
        target = feats[self.target].shape[-2:]
        q = self.class_queries.weight.unsqueeze(0).repeat(b, 1, 1)
        class_logits, mask_logits = [], []
        total = None
        for stride, feat, proj, norm, layers in zip(self.strides, feats, self.input_proj, self.proj_norm, self.stages):
            h, w = feat.shape[-2:]
            lateral = norm(proj(feat.flatten(2).transpose(1, 2)))
            sim = None
            for i, layer in enumerate(layers):
                q, sim = layer(q, lateral, need_mask=i == len(layers) - 1)  # spec §3.3: last layer's mask only
            sim = sim.reshape(b, -1, h, w)
            if stride != self.strides[self.target]:
                sim = F.interpolate(sim, size=tuple(target), mode="bilinear", align_corners=False)
            total = sim if total is None else total + sim
            class_logits.append(self.class_embed(q))
            mask_logits.append(total)
        size = (self.options.img_size,) * 2 if self.options.img_size else tuple(image_size)
        logits = semantic_map(class_logits[-1], mask_logits[-1], size)
        aux = {"class_logits": torch.stack(class_logits), "mask_logits": torch.stack(mask_logits)}
        return DecoderOutput(logits, aux)


def _attention(attn: nn.MultiheadAttention, query: Tensor, memory: Tensor) -> Tensor:
    """``attn(query, memory, memory, need_weights=False)[0]`` (batch first, no masks) for traced exports.

    ``nn.MultiheadAttention``'s reshapes keep the example's query length when the TorchScript ONNX exporter
    converts them (pytorch/pytorch#120075), and without gradients it runs a fused kernel that has no ONNX form;
    this keeps every length dynamic. Same parameters and products through :func:`segcore.models.layers.packed_attention`
    (k and v in one product instead of two; equal up to float rounding).
    """
    p = attn.dropout if attn.training else 0.0
    return attn.out_proj(packed_attention(query, memory, attn.in_proj_weight, attn.in_proj_bias, attn.num_heads, p))


def _decode_traced(decoder: nn.TransformerDecoder, tgt: Tensor, memory: Tensor) -> Tensor:
    """``decoder(tgt, memory)`` (post-norm layers, no masks) through :func:`_attention`, for traced exports."""
    x = tgt
    for layer in decoder.layers:
        x = layer.norm1(x + layer.dropout1(_attention(layer.self_attn, x, x)))
        x = layer.norm2(x + layer.dropout2(_attention(layer.multihead_attn, x, memory)))
        x = layer.norm3(x + layer.dropout3(layer.linear2(layer.dropout(layer.activation(layer.linear1(x))))))
    return x if decoder.norm is None else decoder.norm(x)


def select_qu_maps(in_features: Sequence[FeatureInfo]) -> tuple[int, int]:
    """Indices ``(shallow, deep)`` of the maps the two QU decoders of ``atm-shrunk`` read.

    Rule: ``deep`` is the last (deepest) map; ``shallow`` is the first of the other maps whose stride is at
    least 16 (the paper's shallow 1/16 features), else the deepest of the other maps; a single map serves
    as both. Official Shrunk ViT ``[1/16, 1/32]`` -> ``(0, 1)``; plain ViT ``[16, 16, 16]`` -> first and last
    layer; hierarchical ``[4, 8, 16, 32]`` -> the 1/16 and 1/32 maps; ``[4, 8]`` -> both.
    """
    n = len(in_features)
    if n == 0:
        raise WiringError("atm-shrunk needs at least one feature map from the encoder")
    if n == 1:
        return 0, 0
    shallow = next((i for i in range(n - 1) if in_features[i].stride >= 16), n - 2)
    return shallow, n - 1


class ATMShrunkDecoder(Decoder):
    """Shrunk SegViT head (spec §4.2): query-based up-sampling, then one ATM stage predicting at every layer.

    QU = two standard transformer decoders whose 1/16 pixel queries attend first to a shallow map, then to a
    deep map (:func:`select_qu_maps`; officially the 1/16 and the 1/32 map of the Shrunk ViT). The learned
    pixel-query grid is ``(img_size/16)^2``; for another input size it is resized bicubically to
    ``ceil(H/16) x ceil(W/16)``, so non-square inputs of any size work (at ``img_size`` it is used as is).

    Shape:
        features: maps ``[B, C_i, h_i, w_i]``; output logits ``[B, K, img_size, img_size]`` when the 1/16 grid
        of the input is the stored one (official; upstream supports only this), else ``[B, K, H, W]``; aux
        ``class_logits`` ``[S, B, K, K + 1]`` and per-layer ``mask_logits`` ``[S, B, K, ceil(H/16), ceil(W/16)]``.
    """

    in_strides = None  # any list of maps, at any strides
    default_loss = "atm"

    def __init__(self, in_features: Sequence[FeatureInfo], num_classes: int, options: ATMShrunkOptions) -> None:
        """Build QU decoders for the maps chosen by :func:`select_qu_maps` and the ATM layers."""
        super().__init__()
        self.options = options
        self.map_indices = select_qu_maps(in_features)
        chosen = [in_features[i] for i in self.map_indices]
        d, heads = _dims(chosen, options.embed_dims, options.num_heads)
        self.derived_options = {"embed_dims": d, "num_heads": heads}
        self.grid = options.img_size // 16
        self.input_proj = nn.ModuleList(nn.Linear(info.channels, d) for info in chosen)
        self.proj_norm = nn.ModuleList(nn.LayerNorm(d) for _ in chosen)
        self.qu = nn.ModuleList(
            nn.TransformerDecoder(
                nn.TransformerDecoderLayer(d, heads, 4 * d, options.dropout, batch_first=True), options.num_layers
            )
            for _ in chosen
        )
        self.pixel_queries = nn.Embedding(self.grid * self.grid, d)
        self.atm_layers = nn.ModuleList(ATMLayer(d, heads, options.dropout) for _ in range(options.num_layers))
        self.class_queries = nn.Embedding(num_classes, d)
        self.class_embed = nn.Linear(d, num_classes + 1)
        init_weights(self, linear_std=0.02)  # official head init (spec §3.6)

    def _pixel_queries(self, image_size: tuple[int, int]) -> tuple[Tensor, tuple[int, int]]:
        """The pixel queries ``[1, gh * gw, D]`` for an input of ``image_size`` and their grid ``(gh, gw)``."""
        grid = (-(-image_size[0] // 16), -(-image_size[1] // 16))
        weight = self.pixel_queries.weight.unsqueeze(0)
        # A traced export always resizes (an exact copy at the stored grid), so it resizes at every size.
        if not is_tracing() and grid == (self.grid, self.grid):
            return weight, grid
        return resize_pos_embed(weight, grid), grid

    def _output_size(self, image_size: tuple[int, int], grid: tuple[int, int]) -> tuple[int, int]:
        """``img_size`` when the 1/16 grid is the stored one (official), else the input size.

        For an input whose sides are multiples of 16 (what :class:`~segcore.SegModel` passes: it pads to its
        size divisor) a stored grid means the input *is* ``img_size``, so the input size is the answer; testing
        that first makes the decision the same at every such size, also in a traced export.
        """
        h, w = image_size
        if (h % 16 or w % 16) and grid == (self.grid, self.grid):
            return (self.options.img_size,) * 2
        return (h, w)

    def forward(self, features: Sequence[Tensor], image_size: tuple[int, int]) -> DecoderOutput:
        """QU then ATM; see the class docstring."""
        b = features[0].shape[0]
        p, (gh, gw) = self._pixel_queries(tuple(image_size))
        p = p.repeat(b, 1, 1)  # a copy: a no-grad view of the weight would upset autograd hooks
        for i, proj, norm, decoder in zip(self.map_indices, self.input_proj, self.proj_norm, self.qu):
            memory = norm(proj(features[i].flatten(2).transpose(1, 2)))
            p = _decode_traced(decoder, p, memory) if is_tracing() else decoder(p, memory)
        q = self.class_queries.weight.unsqueeze(0).repeat(b, 1, 1)
        class_logits, mask_logits = [], []
        for layer in self.atm_layers:
            q, sim = layer(q, p)  # every layer predicts (spec §4.2)
            class_logits.append(self.class_embed(q))
            mask_logits.append(sim.reshape(b, -1, gh, gw))
        size = self._output_size(tuple(image_size), (gh, gw))
        logits = semantic_map(class_logits[-1], mask_logits[-1], size)
        aux = {"class_logits": torch.stack(class_logits), "mask_logits": torch.stack(mask_logits)}
        return DecoderOutput(logits, aux)


def atm(in_features: Sequence[FeatureInfo], num_classes: int, **options: object) -> ATMDecoder:
    """SegViT ATM cascade decoder (one stage per input map)."""
    return ATMDecoder(in_features, num_classes, parse_options(ATMOptions, options, component="atm"))


def atm_shrunk(in_features: Sequence[FeatureInfo], num_classes: int, **options: object) -> ATMShrunkDecoder:
    """Shrunk SegViT decoder: QU (TPN) + ATM."""
    return ATMShrunkDecoder(in_features, num_classes, parse_options(ATMShrunkOptions, options, component="atm-shrunk"))

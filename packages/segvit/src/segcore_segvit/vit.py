"""Plain ViT encoders of SegViT, and the *Shrunk* ViT with query-based down-sampling (QD).

Paper: Zhang et al., "SegViT: Semantic Segmentation with Plain Vision Transformers", NeurIPS 2022,
arXiv 2210.05844. Upstream: https://github.com/zbwxp/SegVit (commit 763137e), which uses
mmsegmentation 0.24's ``VisionTransformer`` and its own ``vit_shrink``; licence of the upstream code:
AdelaiDet non-commercial. This port is written from the reference spec (``specs/segvit.md`` §2, §4.1).

What the port changed:
  * Built on timm's ``VisionTransformer`` (timm parameter names) with ``class_token=False``: mmseg adds a
    class token and drops it before the first layer, so the token and the first position slot are dead
    (spec §2.2); we do not keep them (2·C fewer parameters than the official checkpoints).
  * Position embeddings are resized with plain bicubic ``F.interpolate`` (align_corners False, no
    antialias) exactly as mmseg does, for any input size (timm's own resize uses antialiased bicubic).
  * As in mmseg 0.24, stochastic depth only acts on the FFN residual (spec §2.2 step 4).
  * Outputs are NCHW maps (the Shrunk upstream returns token sequences).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import torch.nn.functional as F
from segcore.config.options import DEPTH, FRACTION, SIZE, parse_options
from segcore.errors import OptionsError
from segcore.models.contracts import Encoder
from segcore.models.layers import packed_attention
from segcore.models.ops import is_tracing
from segcore.plugins.specs import FeatureInfo
from segcore.weights.checkpoints import load_pretrained_encoder
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from segcore_segvit.variants import VIT

__all__ = [
    "ViTOptions",
    "SegViTEncoder",
    "resize_pos_embed",
    "VARIANTS",
    "build_variant",
    "vit_b16",
    "vit_l16",
    "vit_b16_shrunk",
    "vit_l16_shrunk",
]

# timm tags of the AugReg ImageNet-21k -> 1k 384-px weights the paper uses (checkpoints.md §2.2).
TIMM_PRETRAINED = {
    768: "vit_base_patch16_384.augreg_in21k_ft_in1k",
    1024: "vit_large_patch16_384.augreg_in21k_ft_in1k",
}


@dataclass(frozen=True)
class ViTOptions:
    """Options of the SegViT encoders (defaults: ViT-B/16 of ``seg_vit-b16.py``).

    Attributes:
        img_size: crop size the position-embedding grid is stored for (``img_size / 16`` per side).
        embed_dim: token width C.
        depth: number of encoder layers.
        num_heads: attention heads.
        mlp_ratio: FFN hidden width / C.
        out_indices: 0-based layers whose outputs are returned (ascending).
        drop_path_rate: stochastic depth at the last layer (linear from 0), FFN branch only.
        shrink_idx: layer at which the Shrunk QD halves the token grid; ``None`` for the plain ViT.
    """

    img_size: int = field(default=512, metadata=SIZE)
    embed_dim: int = 768
    depth: int = field(default=12, metadata=DEPTH)
    num_heads: int = 12
    mlp_ratio: float = 4.0
    out_indices: tuple[int, ...] = (5, 7, 11)
    drop_path_rate: float = field(default=0.1, metadata=FRACTION)
    shrink_idx: int | None = None

    def __post_init__(self) -> None:
        """Check the layer indices and sizes where they enter (an error names the option)."""
        if self.img_size < 16:
            raise OptionsError(f"vit: img_size must be at least 16 (one patch), got {self.img_size}")
        if min(self.embed_dim, self.depth, self.num_heads) < 1 or self.embed_dim % self.num_heads:
            raise OptionsError(
                f"vit: embed_dim ({self.embed_dim}) must be a positive multiple of num_heads ({self.num_heads}) "
                f"and depth ({self.depth}) positive"
            )
        if not self.out_indices or not all(0 <= i < self.depth for i in self.out_indices):
            raise OptionsError(f"vit: out_indices {tuple(self.out_indices)} must lie in 0..{self.depth - 1}")
        if self.shrink_idx is not None and not 0 <= self.shrink_idx < self.depth:
            raise OptionsError(f"vit: shrink_idx must lie in 0..{self.depth - 1}, got {self.shrink_idx}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise OptionsError(f"vit: drop_path_rate must lie in [0, 1), got {self.drop_path_rate}")


def resize_pos_embed(pos_embed: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize a row-major grid of position embeddings bicubically (mmseg's rule, spec §2.2 step 3).

    Shape:
        pos_embed: ``[1, g_h * g_w, C]`` (square ``g x g`` assumed when the grid side is not given).
        output: ``[1, size[0] * size[1], C]``.
    """
    n, c = int(pos_embed.shape[1]), int(pos_embed.shape[2])  # a parameter's shape: constant when traced
    g = int(round(n**0.5))
    # A traced export always resizes (bicubic at scale 1 is an exact copy), so it resizes at every size.
    if not is_tracing() and (g, g) == tuple(size):
        return pos_embed
    grid = pos_embed.reshape(1, g, g, c).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=size, mode="bicubic", align_corners=False)
    return grid.flatten(2).transpose(1, 2)


class SegViTEncoder(VisionTransformer, Encoder):
    """timm ViT without class token returning the layers SegViT cascades as NCHW maps.

    With ``shrink_idx`` set, layer ``shrink_idx`` uses as queries only the top-left token of every 2x2 block
    (nearest 2x down-sampling) while keys/values keep the full grid (spec §4.1); later layers run at
    stride 32.

    Shape:
        images: ``[B, 3, H, W]``, H and W multiples of 16.
        output: ``[B, C, H / s, W / s]`` per ``out_indices`` entry, ``s`` 16 (or 32 after the QD layer, rounded up:
        ``ceil(H / 32)``).
    """

    def __init__(self, options: ViTOptions) -> None:
        super().__init__(
            img_size=options.img_size,
            patch_size=16,
            num_classes=0,
            global_pool="",
            embed_dim=options.embed_dim,
            depth=options.depth,
            num_heads=options.num_heads,
            mlp_ratio=options.mlp_ratio,
            qkv_bias=True,
            class_token=False,
            final_norm=False,
            dynamic_img_size=True,
            drop_path_rate=options.drop_path_rate,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
        )
        self.options = options
        # mmseg 0.24 applies DropPath to the FFN residual only (spec §2.2, quirk 12).
        for block in self.blocks:
            block.drop_path1 = nn.Identity()
        self.out_indices = tuple(sorted(options.out_indices))
        shrink = options.shrink_idx
        self.feature_info = [
            FeatureInfo(options.embed_dim, 32 if shrink is not None and i >= shrink else 16) for i in self.out_indices
        ]

    @property
    def size_divisor(self) -> int:
        """16, the patch size: mmseg's patch embedding pads the input bottom/right to it ("corner", spec §2.2).

        The Shrunk encoder pads no more: its QD keeps the top-left token of every 2x2 block, ``ceil(h / 2)``
        rows for an odd grid, as upstream's ``[::2, ::2]`` does (spec §4.1).
        """
        return 16

    def _shrink_block(self, block: nn.Module, x: Tensor, hw: tuple[int, int]) -> tuple[Tensor, tuple[int, int]]:
        """Run ``block`` with 2x2-nearest down-sampled queries and full-resolution keys/values (spec §4.1)."""
        b, n, c = x.shape
        h, w = hw
        xq = x.reshape(b, h, w, c)[:, ::2, ::2].reshape(b, -1, c)
        attn = block.attn
        y, yq = block.norm1(x), block.norm1(xq)
        p = attn.attn_drop.p if self.training else 0.0
        out = packed_attention(yq, y, attn.qkv.weight, attn.qkv.bias, attn.num_heads, p)
        out = attn.proj_drop(attn.proj(attn.norm(out)))
        x = xq + block.ls1(out)
        x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
        return x, ((h + 1) // 2, (w + 1) // 2)

    def forward(self, images: Tensor) -> list[Tensor]:
        """Return the ``out_indices`` layer outputs as NCHW maps."""
        x = self.patch_embed(images)  # [B, h, w, C] (dynamic size)
        b, h, w, c = x.shape
        x = x.reshape(b, h * w, c) + resize_pos_embed(self.pos_embed, (h, w))
        x = self.pos_drop(x)
        outs: list[Tensor] = []
        for i, block in enumerate(self.blocks):
            if i == self.options.shrink_idx:
                x, (h, w) = self._shrink_block(block, x, (h, w))
            else:
                x = block(x)
            if i in self.out_indices:
                outs.append(x.transpose(1, 2).reshape(b, c, h, w).contiguous())
        return outs


def _load_augreg(model: SegViTEncoder) -> None:
    """Load timm's AugReg 384-px weights (through timm) into ``model``.

    Drops the class token, final norm and head, removes the class slot of ``pos_embed`` and resizes its
    24x24 grid bicubically to the ``img_size`` grid (spec §2.2 step 3).
    """
    import timm

    tag = TIMM_PRETRAINED.get(model.options.embed_dim)
    if tag is None or model.options.depth not in (12, 24):
        raise OptionsError(
            f"vit: pretrained weights exist only for the ViT-B/16 and ViT-L/16 shapes, not embed_dim "
            f"{model.options.embed_dim} / depth {model.options.depth}; build it without pretrained weights "
            "(pretrained=False, no --pretrained-encoder)"
        )
    source = timm.create_model(tag, pretrained=True).state_dict()
    state = {}
    for key, value in source.items():
        if key.startswith(("head.", "norm.", "fc_norm.")) or key == "cls_token":
            continue
        if key == "pos_embed":
            g = model.options.img_size // 16
            value = resize_pos_embed(value[:, 1:], (g, g))
        state[key] = value
    load_pretrained_encoder(model, f"timm:{tag}", state)  # strict, with a mismatch report


# The encoders live in the torch-free table that the plugin registers from (segcore.models.variants).
VARIANTS = VIT


def build_variant(name: str, pretrained: bool, options: dict) -> SegViTEncoder:
    """Build the plain or Shrunk ViT registered as ``name``: the family builder that every factory below calls.

    Args:
        name: the registered name (``"vit-b16"``), for errors.
        pretrained: load timm's AugReg in21k->in1k 384 weights (ViT-B/16 and ViT-L/16 shapes).
        options: the entry's options with the caller's on top, checked against :class:`ViTOptions`.
    """
    opts = parse_options(ViTOptions, options, component=name)
    if isinstance(opts.out_indices, list):
        opts = ViTOptions(**{**opts.__dict__, "out_indices": tuple(opts.out_indices)})
    model = SegViTEncoder(opts)
    if pretrained:
        _load_augreg(model)
    return model


# One factory per entry of VARIANTS, named mechanically (vit-b16-shrunk -> vit_b16_shrunk); a new encoder adds one
# line here.
vit_b16 = VARIANTS.factory("b16", build_variant)
vit_l16 = VARIANTS.factory("l16", build_variant)
vit_b16_shrunk = VARIANTS.factory("b16-shrunk", build_variant)
vit_l16_shrunk = VARIANTS.factory("l16-shrunk", build_variant)

"""Mix Transformer (MiT-B0..B5), the SegFormer encoder, as a segcore :class:`~segcore.models.contracts.Encoder`.

Paper: Xie, Wang, Yu, Anandkumar, Alvarez, Luo, *SegFormer: Simple and Efficient Design for Semantic
Segmentation with Transformers*, NeurIPS 2021, arXiv:2105.15203.
Upstream: github.com/NVlabs/SegFormer (NVIDIA Source Code License, non-commercial) and the mmseg port
``mmseg/models/backbones/mit.py`` as shipped in github.com/lygsbw/segdeformer @ 77f2dacd (Apache-2.0),
which is the reference for SegDeformer. Written from the spec ``segdeformer.md`` §7, not copied.

What this port changes: attention runs through :func:`torch.nn.functional.scaled_dot_product_attention`
instead of ``nn.MultiheadAttention`` (same maths; the fused in-projection is kept as one
``[3D, D]`` weight so mmseg checkpoints load by renaming only). Module names are shortened
(``stages.{s}.patch_embed`` / ``blocks.{j}`` / ``norm``); :mod:`segcore_segdeformer.convert` maps them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F
from segcore.config.options import DEPTH, FRACTION, parse_options
from segcore.errors import OptionsError
from segcore.models.contracts import Encoder
from segcore.models.layers import init_module, packed_attention
from segcore.plugins.specs import FeatureInfo
from segcore.weights.checkpoints import load_pretrained_encoder
from timm.layers import DropPath
from torch import Tensor, nn

from segcore_segdeformer.variants import MIT

__all__ = [
    "MiTOptions",
    "MixVisionTransformer",
    "VARIANTS",
    "build_variant",
    "mit_b0",
    "mit_b1",
    "mit_b2",
    "mit_b3",
    "mit_b4",
    "mit_b5",
]


@dataclass(frozen=True)
class MiTOptions:
    """Options of the ``mit-b*`` encoders (defaults: the values shared by all released configs).

    Attributes:
        embed_dims: width of each of the 4 stages.
        depths: blocks per stage.
        num_heads: attention heads per stage.
        sr_ratios: spatial-reduction ratio of keys/values per stage.
        patch_sizes: overlapping patch-embedding kernel per stage (stride 4, 2, 2, 2; padding k // 2).
        mlp_ratio: hidden width of the Mix-FFN relative to the stage width.
        drop_path_rate: stochastic depth, spread linearly over all blocks.
        drop_rate: dropout after attention/FFN projections.
        attn_drop_rate: dropout on attention weights.
        norm_eps: LayerNorm epsilon (mmseg's MiT default 1e-6).
    """

    embed_dims: tuple[int, ...] = (64, 128, 320, 512)
    depths: tuple[int, ...] = field(default=(2, 2, 2, 2), metadata=DEPTH)
    num_heads: tuple[int, ...] = (1, 2, 5, 8)
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)
    patch_sizes: tuple[int, ...] = (7, 3, 3, 3)
    mlp_ratio: int = 4
    drop_path_rate: float = field(default=0.1, metadata=FRACTION)
    drop_rate: float = field(default=0.0, metadata=FRACTION)
    attn_drop_rate: float = field(default=0.0, metadata=FRACTION)
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        """Check the stage lists and rates where they enter (an error names the option)."""
        stages = ("embed_dims", "depths", "num_heads", "sr_ratios", "patch_sizes")
        lengths = {name: len(getattr(self, name)) for name in stages}
        if len(set(lengths.values())) != 1:
            raise OptionsError(f"mit: {', '.join(stages)} need one entry per stage each, got lengths {lengths}")
        for name in stages:
            if any(v < 1 for v in getattr(self, name)):
                raise OptionsError(f"mit: {name} must be positive, got {tuple(getattr(self, name))}")
        if any(d % h for d, h in zip(self.embed_dims, self.num_heads)):
            raise OptionsError(f"mit: embed_dims {self.embed_dims} must be multiples of num_heads {self.num_heads}")
        if self.mlp_ratio < 1:
            raise OptionsError(f"mit: mlp_ratio must be >= 1, got {self.mlp_ratio}")
        for name in ("drop_path_rate", "drop_rate", "attn_drop_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise OptionsError(f"mit: {name} must lie in [0, 1), got {getattr(self, name)}")


class OverlapPatchEmbed(nn.Module):
    """Strided conv over overlapping patches, then LayerNorm over channels (SegFormer §3.1)."""

    def __init__(self, in_channels: int, dim: int, patch_size: int, stride: int, eps: float) -> None:
        """Build the conv (``patch_size``, ``stride``, padding ``patch_size // 2``) and its norm."""
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride, patch_size // 2)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: Tensor) -> tuple[Tensor, int, int]:
        """Shape: ``[B, C, H, W]`` -> ``([B, h*w, D], h, w)``."""
        x = self.proj(x)
        h, w = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class EfficientSelfAttention(nn.Module):
    """Multi-head attention whose keys/values come from a ``sr x sr`` strided-conv reduction (SegFormer Eq. 2).

    The in-projection is stored fused (rows ``[W_q; W_k; W_v]``) like ``nn.MultiheadAttention``.
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, attn_drop: float, proj_drop: float, eps: float) -> None:
        """Build projections and, when ``sr_ratio > 1``, the reduction conv + LayerNorm."""
        super().__init__()
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=eps)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        """Shape: ``[B, N, D]`` -> ``[B, N, D]`` with ``N = h * w``."""
        b, n, d = x.shape
        kv_in = x
        if self.sr_ratio > 1:
            kv_in = self.sr(x.transpose(1, 2).reshape(b, d, h, w)).flatten(2).transpose(1, 2)
            kv_in = self.norm(kv_in)
        p = self.attn_drop if self.training else 0.0
        out = packed_attention(x, kv_in, self.in_proj_weight, self.in_proj_bias, self.num_heads, p)
        return self.proj_drop(self.out_proj(out))


class MixFFN(nn.Module):
    """1x1 conv, 3x3 depthwise conv, GELU, 1x1 conv (SegFormer Eq. 3)."""

    def __init__(self, dim: int, hidden: int, drop: float) -> None:
        """Build the three convs."""
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        """Shape: ``[B, N, D]`` -> ``[B, N, D]``."""
        b, n, d = x.shape
        x = self.fc1(x.transpose(1, 2).reshape(b, d, h, w))
        x = self.drop(F.gelu(self.dwconv(x)))
        return self.drop(self.fc2(x)).flatten(2).transpose(1, 2)


class MiTBlock(nn.Module):
    """Pre-norm transformer block: ``x + DropPath(Attn(LN(x)))``, then ``x + DropPath(MixFFN(LN(x)))``."""

    def __init__(
        self, dim: int, heads: int, sr: int, mlp_ratio: int, drop: float, attn_drop: float, drop_path: float, eps: float
    ) -> None:
        """Build norms, attention and Mix-FFN."""
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = EfficientSelfAttention(dim, heads, sr, attn_drop, drop, eps)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.ffn = MixFFN(dim, dim * mlp_ratio, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        """Shape: ``[B, N, D]`` -> ``[B, N, D]``."""
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.ffn(self.norm2(x), h, w))


class MiTStage(nn.Module):
    """Patch embedding, blocks, final LayerNorm; returns an NCHW map."""

    def __init__(
        self,
        in_channels: int,
        dim: int,
        depth: int,
        heads: int,
        sr: int,
        patch: int,
        stride: int,
        o: MiTOptions,
        dpr: list[float],
    ) -> None:
        """Build one stage."""
        super().__init__()
        self.patch_embed = OverlapPatchEmbed(in_channels, dim, patch, stride, o.norm_eps)
        self.blocks = nn.ModuleList(
            MiTBlock(dim, heads, sr, o.mlp_ratio, o.drop_rate, o.attn_drop_rate, dpr[j], o.norm_eps)
            for j in range(depth)
        )
        self.norm = nn.LayerNorm(dim, eps=o.norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        """Shape: ``[B, C, H, W]`` -> ``[B, D, H / stride, W / stride]``."""
        x, h, w = self.patch_embed(x)
        for block in self.blocks:
            x = block(x, h, w)
        return self.norm(x).transpose(1, 2).reshape(x.shape[0], -1, h, w)


class MixVisionTransformer(Encoder):
    """MiT encoder: 4 stages at strides 4, 8, 16, 32.

    Shape:
        images: ``[B, 3, H, W]``, any size; output: 4 maps ``[B, D_s, H / 2^(s+2), W / 2^(s+2)]`` (rounded up
        at sizes that are not multiples of the stride: ``(n + 2p - k) // s + 1`` per patch embedding).
    """

    def __init__(self, options: MiTOptions) -> None:
        """Build the stages and initialise like mmseg's ``MixVisionTransformer.init_weights``."""
        super().__init__()
        o = options
        self.options = o
        dpr = torch.linspace(0, o.drop_path_rate, sum(o.depths), device="cpu").tolist()
        self.stages = nn.ModuleList()
        in_ch, start, stride = 3, 0, 1
        self.feature_info = []
        for s, dim in enumerate(o.embed_dims):
            step = 4 if s == 0 else 2
            stride *= step
            self.stages.append(
                MiTStage(
                    in_ch,
                    dim,
                    o.depths[s],
                    o.num_heads[s],
                    o.sr_ratios[s],
                    o.patch_sizes[s],
                    step,
                    o,
                    dpr[start : start + o.depths[s]],
                )
            )
            self.feature_info.append(FeatureInfo(dim, stride))
            in_ch, start = dim, start + o.depths[s]
        self.apply(partial(init_module, conv="fan_out_normal", linear_std=0.02, norms=True))  # mmseg MiT init

    @property
    def size_divisor(self) -> int:
        """1: no padding.

        The official MiT runs at any size (its overlapping patch embeddings round each map to
        ``(H + 2p - k) // s + 1``) and the segmentor feeds it the unpadded image (spec §7-8).
        """
        return 1

    def forward(self, images: Tensor) -> list[Tensor]:
        """Return the 4 stage outputs."""
        outs, x = [], images
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs


# The sizes live in the torch-free table that the plugin registers from (segcore.models.variants).
VARIANTS = MIT


def build_variant(name: str, pretrained: bool | str, options: dict[str, object]) -> MixVisionTransformer:
    """Build the MiT registered as ``name``: the family builder that every factory below calls.

    Args:
        name: the registered name (``"mit-b0"``), for errors and the pretrained weights.
        pretrained: ``True``: the registered ImageNet weights; a string: a registered name, a Hub repo (the
            transformers MiT encoders ``nvidia/mit-b0`` ... ``b5`` included) or a folder.
        options: the entry's options with the caller's on top, checked against :class:`MiTOptions`.
    """
    model = MixVisionTransformer(parse_options(MiTOptions, options, component=name))
    if pretrained:
        load_pretrained_encoder(model, name, pretrained)
    return model


# One factory per entry of VARIANTS, named mechanically (mit-b0 -> mit_b0); a new size adds one line here.
mit_b0 = VARIANTS.factory("b0", build_variant)
mit_b1 = VARIANTS.factory("b1", build_variant)
mit_b2 = VARIANTS.factory("b2", build_variant)
mit_b3 = VARIANTS.factory("b3", build_variant)
mit_b4 = VARIANTS.factory("b4", build_variant)
mit_b5 = VARIANTS.factory("b5", build_variant)

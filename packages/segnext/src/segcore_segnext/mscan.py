"""MSCAN, the multi-scale convolutional attention encoder of SegNeXt.

Paper: Guo et al., "SegNeXt: Rethinking Convolutional Attention Design for Semantic Segmentation",
NeurIPS 2022, arXiv 2209.08575. Upstream: https://github.com/Visual-Attention-Network/SegNeXt
(commit c87bcae, Apache-2.0). Written from ``shared/specs/segnext.md``; module and parameter names equal
the official ones (minus ``backbone.``) so official weights load through a near-identity converter.
Changes from upstream: the network stays a ``[B, C, H, W]`` tensor between blocks (numerically identical to
the official token layout, spec §2.3), kept in channels-last memory by default because oneDNN runs the 1x1,
depthwise and strip convolutions faster that way on CPU (``memory_format="contiguous"`` restores NCHW);
BatchNorm is plain ``nn.BatchNorm2d`` (SyncBN is eval-equivalent).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from segcore.config.options import DEPTH, FRACTION, parse_options
from segcore.errors import OptionsError
from segcore.models.contracts import Encoder
from segcore.models.layers import MEMORY_FORMATS, MemoryFormat, init_weights
from segcore.plugins.specs import FeatureInfo
from segcore.weights.checkpoints import load_pretrained_encoder
from timm.layers import DropPath
from torch import Tensor, nn

from segcore_segnext.variants import MSCAN as MSCAN_VARIANTS

__all__ = ["MSCANOptions", "MSCAN", "VARIANTS", "build_variant", "mscan_t", "mscan_s", "mscan_b", "mscan_l"]


@dataclass(frozen=True)
class MSCANOptions:
    """Options of MSCAN, named as in the official config (defaults: MSCAN-T).

    Attributes:
        embed_dims: channels of the four stages.
        depths: blocks per stage.
        mlp_ratios: MLP expansion per stage.
        drop_rate: dropout inside the MLP.
        drop_path_rate: stochastic-depth rate of the last block (linear from 0, spec §2.3).
        in_chans: input channels.
        memory_format: ``"channels_last"`` (default) runs the network in NHWC memory, which makes the 1x1,
            depthwise and strip convolutions markedly faster on CPU (see the package README benchmark);
            outputs are ordinary ``[B, C, H, W]`` tensors with channels-last strides. ``"contiguous"`` keeps
            NCHW memory throughout. Both compute the same function (parity holds for either).
    """

    embed_dims: tuple[int, ...] = (32, 64, 160, 256)
    depths: tuple[int, ...] = field(default=(3, 3, 5, 2), metadata=DEPTH)
    mlp_ratios: tuple[float, ...] = (8, 8, 4, 4)
    drop_rate: float = field(default=0.0, metadata=FRACTION)
    drop_path_rate: float = field(default=0.1, metadata=FRACTION)
    in_chans: int = 3
    memory_format: MemoryFormat = "channels_last"

    def __post_init__(self) -> None:
        for name in ("embed_dims", "depths", "mlp_ratios"):
            value = tuple(getattr(self, name))
            object.__setattr__(self, name, value)
            if len(value) != 4:
                raise OptionsError(f"mscan: {name} needs 4 entries (one per stage), got {len(value)}")
        if any(d < 1 for d in self.depths) or any(c < 2 or c % 2 for c in self.embed_dims):
            raise OptionsError("mscan: depths must be >= 1 and embed_dims even and positive")
        if not 0.0 <= self.drop_rate < 1.0 or not 0.0 <= self.drop_path_rate < 1.0:
            raise OptionsError("mscan: drop_rate and drop_path_rate must lie in [0, 1)")


class StemConv(nn.Module):
    """Stage-1 stem: two 3x3 stride-2 convs with BN, GELU between them (total stride 4)."""

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, out_chans // 2, 3, 2, 1),
            nn.BatchNorm2d(out_chans // 2),
            nn.GELU(),
            nn.Conv2d(out_chans // 2, out_chans, 3, 2, 1),
            nn.BatchNorm2d(out_chans),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class OverlapPatchEmbed(nn.Module):
    """Stages 2-4 downsampling: 3x3 stride-2 conv + BN, no activation."""

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, out_chans, 3, 2, 1)
        self.norm = nn.BatchNorm2d(out_chans)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.proj(x))


class DWConv(nn.Module):
    """3x3 depthwise conv; the wrapper keeps the official doubled name ``dwconv.dwconv``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.dwconv(x)


class Mlp(nn.Module):
    """Conv MLP: fc1 -> depthwise 3x3 -> GELU -> dropout -> fc2 -> dropout."""

    def __init__(self, dim: int, hidden: int, drop: float) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        x = self.drop(self.act(self.dwconv(self.fc1(x))))
        return self.drop(self.fc2(x))


class AttentionModule(nn.Module):
    """MSCA: 5x5 depthwise conv, three strip-conv branches (7, 11, 21), 1x1 channel mixing (paper Eq. 1-2)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        for i, k in enumerate((7, 11, 21)):
            # 1xk first, then kx1 (spec §2.2).
            setattr(self, f"conv{i}_1", nn.Conv2d(dim, dim, (1, k), padding=(0, k // 2), groups=dim))
            setattr(self, f"conv{i}_2", nn.Conv2d(dim, dim, (k, 1), padding=(k // 2, 0), groups=dim))
        self.conv3 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.conv0(x)
        s = a + self.conv0_2(self.conv0_1(a)) + self.conv1_2(self.conv1_1(a)) + self.conv2_2(self.conv2_1(a))
        return self.conv3(s) * x


class SpatialAttention(nn.Module):
    """proj_1 -> GELU -> MSCA gate -> proj_2, plus a residual from the (normalised) input."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj_1 = nn.Conv2d(dim, dim, 1)
        self.activation = nn.GELU()
        self.spatial_gating_unit = AttentionModule(dim)
        self.proj_2 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x)))) + x


class Block(nn.Module):
    """MSCAN block: BN -> attention and BN -> MLP, each with layer scale (init 1e-2) and drop path.

    Shape:
        x: ``[B, C, H, W]`` -> ``[B, C, H, W]``.
    """

    def __init__(self, dim: int, mlp_ratio: float, drop: float, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = SpatialAttention(dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.layer_scale_1 = nn.Parameter(torch.full((dim,), 1e-2))
        self.layer_scale_2 = nn.Parameter(torch.full((dim,), 1e-2))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.layer_scale_1[:, None, None] * self.attn(self.norm1(x)))
        return x + self.drop_path(self.layer_scale_2[:, None, None] * self.mlp(self.norm2(x)))


class MSCAN(Encoder):
    """MSCAN encoder returning four maps at strides 4, 8, 16, 32.

    Shape:
        images: ``[B, 3, H, W]``, any size -> ``[B, C_i, H / s_i, W / s_i]`` for ``s_i`` in 4, 8, 16, 32 (rounded
        up at other sizes: each stride-2 conv gives ``(n - 1) // 2 + 1``).
    """

    def __init__(self, options: MSCANOptions | None = None) -> None:
        super().__init__()
        opts = options or MSCANOptions()
        self.options = opts
        # Computed on CPU so the module can also be built under torch.device("meta").
        dpr = torch.linspace(0, opts.drop_path_rate, sum(opts.depths), device="cpu").tolist()
        cur = 0
        for i in range(4):
            dim = opts.embed_dims[i]
            embed = StemConv(opts.in_chans, dim) if i == 0 else OverlapPatchEmbed(opts.embed_dims[i - 1], dim)
            blocks = nn.ModuleList(
                Block(dim, opts.mlp_ratios[i], opts.drop_rate, dpr[cur + j]) for j in range(opts.depths[i])
            )
            cur += opts.depths[i]
            setattr(self, f"patch_embed{i + 1}", embed)
            setattr(self, f"block{i + 1}", blocks)
            setattr(self, f"norm{i + 1}", nn.LayerNorm(dim))
        self.feature_info = [FeatureInfo(c, 4 * 2**i) for i, c in enumerate(opts.embed_dims)]
        self._init_weights()

    def _init_weights(self) -> None:
        # Official init without a pretrained file (spec §2.3): conv N(0, sqrt(2/fan_out)), bias 0; norms 1/0.
        init_weights(self, conv="fan_out_normal", norms=True)

    @property
    def size_divisor(self) -> int:
        """1: no padding.

        The official MSCAN runs at any size (its 3x3 stride-2 convs with padding 1 give ``(n - 1) // 2 + 1``);
        ResizeToMultiple(32) of the ADE/COCO test pipeline is a resize that belongs to the eval protocol, and
        Cityscapes has none (spec §5.2).
        """
        return 1

    def forward(self, images: Tensor) -> list[Tensor]:
        """Return the four stage outputs (after each stage's LayerNorm)."""
        fmt = MEMORY_FORMATS[self.options.memory_format]
        outs = []
        x = images.contiguous(memory_format=fmt)
        for i in range(1, 5):
            x = getattr(self, f"patch_embed{i}")(x)
            for blk in getattr(self, f"block{i}"):
                x = blk(x)
            # LayerNorm over channels at every pixel (an NHWC view: no copy in channels-last memory).
            x = getattr(self, f"norm{i}")(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous(memory_format=fmt)
            outs.append(x)
        return outs


# The sizes live in the torch-free table that the plugin registers from (segcore.models.variants).
VARIANTS = MSCAN_VARIANTS


def build_variant(name: str, pretrained: bool, options: dict[str, Any]) -> MSCAN:
    """Build the MSCAN registered as ``name``: the family builder that every factory below calls.

    Args:
        name: the registered name (``"mscan-t"``), for errors and the pretrained weights.
        pretrained: load the registered ``<name>-imagenet`` weights.
        options: the entry's options with the caller's on top, checked against :class:`MSCANOptions`.
    """
    model = MSCAN(parse_options(MSCANOptions, options, component=name))
    if pretrained:
        load_pretrained_encoder(model, name)  # the registered mscan-<variant>-imagenet weights
    return model


# One factory per entry of VARIANTS, named mechanically (mscan-t -> mscan_t); a new size adds one line here.
mscan_t = VARIANTS.factory("t", build_variant)
mscan_s = VARIANTS.factory("s", build_variant)
mscan_b = VARIANTS.factory("b", build_variant)
mscan_l = VARIANTS.factory("l", build_variant)

"""Layers shared by more than one model family: packed attention, the UPer body, conv blocks, init helpers.

Also the memory formats of NHWC-by-default components and the mmcv weight initialisations of the official models.

Plugins build on these instead of writing them again (STYLE.md §2: blocks shared across packages live in core).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from segcore.models.ops import adaptive_avg_pool2d

__all__ = [
    "MEMORY_FORMATS",
    "MemoryFormat",
    "ConvBNReLU",
    "resize",
    "packed_attention",
    "UPerBody",
    "init_module",
    "init_weights",
    "init_classifier",
]

# The ``memory_format`` option of components that run NHWC by default (an options field typed ``MemoryFormat``
# is checked by ``parse_options``); ``MEMORY_FORMATS[name]`` is the torch format.
MemoryFormat = Literal["channels_last", "contiguous"]
MEMORY_FORMATS: dict[str, torch.memory_format] = {
    "channels_last": torch.channels_last,
    "contiguous": torch.contiguous_format,
}
ConvInit = Literal["fan_out_normal", "kaiming"]


class ConvBNReLU(nn.Sequential):
    """Conv (no bias) + BatchNorm + ReLU, mmcv's ``ConvModule`` with BN and ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1) -> None:
        """Build the block with 'same' padding."""
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


def resize(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize with ``align_corners=False`` (mmseg's ``resize``).

    No shortcut at equal sizes (such a resize is an exact copy): a traced export would keep the shortcut's
    decision for every input size. Callers skip the maps that share the target's stride where it matters.
    """
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def packed_attention(
    query: Tensor, memory: Tensor, weight: Tensor, bias: Tensor | None, num_heads: int, dropout_p: float = 0.0
) -> Tensor:
    """Multi-head attention of ``query`` over ``memory`` with one packed ``[3D, D]`` q/k/v projection.

    ``q = query W_q``, ``(k, v) = memory W_kv`` (the rows ``[:D]`` and ``[D:]`` of ``weight``, as
    ``nn.MultiheadAttention.in_proj_weight`` and timm's ``qkv`` pack them), then
    :func:`torch.nn.functional.scaled_dot_product_attention` per head (fused kernels where available). The output
    projection is the caller's.

    Shape:
        query: ``[B, N, D]``; memory: ``[B, L, D]``; returns ``[B, N, D]``.
    """
    b, n, d = query.shape
    hd = d // num_heads
    q = F.linear(query, weight[:d], None if bias is None else bias[:d]).reshape(b, n, num_heads, hd).transpose(1, 2)
    kv = F.linear(memory, weight[d:], None if bias is None else bias[d:])
    k, v = kv.reshape(b, -1, 2, num_heads, hd).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    return out.transpose(1, 2).reshape(b, n, d)


class UPerBody(nn.Module):
    """UPerNet's PPM + FPN (Xiao et al., arXiv:1807.10221, Sec. 3) up to the fused map, with mmseg's names.

    PPM on the last map, 1x1 lateral convs, top-down addition, 3x3 FPN convs, resize to the first map,
    concatenation and a 3x3 conv; every conv is conv + BN + ReLU. ``UPerHead`` adds the classifier;
    SegDeformer's UperNet variant uses the fused map as its X.

    Shape:
        maps: ``[B, C_i, H_i, W_i]`` finest first; output ``[B, channels, H_0, W_0]``.
    """

    def __init__(self, in_channels: Sequence[int], channels: int, pool_scales: Sequence[int]) -> None:
        """Build the PPM, lateral, FPN and bottleneck convs."""
        super().__init__()
        last = in_channels[-1]
        self.pool_scales = tuple(pool_scales)
        self.psp_modules = nn.ModuleList(ConvBNReLU(last, channels, 1) for _ in self.pool_scales)
        self.bottleneck = ConvBNReLU(last + len(self.pool_scales) * channels, channels, 3)
        self.lateral_convs = nn.ModuleList(ConvBNReLU(c, channels, 1) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvBNReLU(channels, channels, 3) for _ in in_channels[:-1])
        self.fpn_bottleneck = ConvBNReLU(len(in_channels) * channels, channels, 3)

    def _psp(self, x: Tensor) -> Tensor:
        pooled = [
            resize(conv(adaptive_avg_pool2d(x, scale)), x.shape[-2:])
            for scale, conv in zip(self.pool_scales, self.psp_modules)
        ]
        return self.bottleneck(torch.cat([x, *pooled], dim=1))

    def fuse(self, maps: Sequence[Tensor]) -> Tensor:
        """Top-down FPN fusion of all levels at the finest map's size."""
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, maps)]
        laterals.append(self._psp(maps[-1]))
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + resize(laterals[i], laterals[i - 1].shape[-2:])
        outs = [conv(lat) for conv, lat in zip(self.fpn_convs, laterals[:-1])] + [laterals[-1]]
        size = outs[0].shape[-2:]
        return self.fpn_bottleneck(torch.cat([outs[0], *(resize(o, size) for o in outs[1:])], dim=1))

    def forward(self, maps: Sequence[Tensor]) -> Tensor:
        """See :meth:`fuse`."""
        return self.fuse(maps)


def init_module(
    m: nn.Module, *, conv: ConvInit | None = None, linear_std: float | None = None, norms: bool = False
) -> None:
    """Initialise one module as mmcv does for the official models; modules of other types are left alone.

    Args:
        m: the module (use with ``model.apply`` or :func:`init_weights`).
        conv: ``Conv2d`` weights: ``"fan_out_normal"`` is ``normal(0, sqrt(2 / fan_out))`` with the groups counted
            (MiT, MSCAN), ``"kaiming"`` is ``kaiming_normal(fan_out, relu)`` (mmcv ``ConvModule``); biases 0.
        linear_std: ``Linear`` weights ``trunc_normal(0, linear_std)`` within (-2, 2), biases 0.
        norms: ``LayerNorm`` / ``BatchNorm2d`` weights 1, biases 0.
    """
    if isinstance(m, nn.Conv2d) and conv is not None:
        if conv == "fan_out_normal":
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        else:
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    elif isinstance(m, nn.Linear) and linear_std is not None:
        nn.init.trunc_normal_(m.weight, std=linear_std)
    elif norms and isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)) and m.weight is not None:
        nn.init.ones_(m.weight)
    else:
        return
    if m.bias is not None:
        nn.init.zeros_(m.bias)


def init_weights(
    module: nn.Module,
    *,
    skip: Sequence[nn.Module] = (),
    conv: ConvInit | None = None,
    linear_std: float | None = None,
    norms: bool = False,
) -> None:
    """:func:`init_module` on every submodule of ``module`` (pre-order) except those in ``skip``."""
    for m in module.modules():
        if not any(m is s for s in skip):
            init_module(m, conv=conv, linear_std=linear_std, norms=norms)


def init_classifier(conv: nn.Conv2d, std: float = 0.01) -> None:
    """The mmseg classifier init: weights ``normal(0, std)``, bias 0."""
    nn.init.normal_(conv.weight, 0.0, std)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)

"""Layers shared by more than one model family: attention with packed projections, the UPer body, conv blocks.

Plugins build on these instead of writing them again (STYLE.md §2: blocks shared across packages live in core).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from segcore.ops import adaptive_avg_pool2d

__all__ = ["ConvBNReLU", "resize", "packed_attention", "UPerBody"]


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

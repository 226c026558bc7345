"""Multiply-adds are counted the papers' way, attention included, whatever kernel runs it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from segcore.tools.benchmark import _infer_step, count_params_and_macs
from torch import nn


class _Attention(nn.Module):
    """A 1x1 conv then single-head self-attention over the pixels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, channels, 1, bias=False)

    def forward(self, images):
        x = self.proj(images).flatten(2).transpose(1, 2)[:, None].contiguous()  # [B, 1, N, C]
        return F.scaled_dot_product_attention(x, x, x)


def test_conv_and_attention_multiply_adds():
    c, h, w = 8, 6, 10
    n = h * w
    params, macs = count_params_and_macs(_Attention(c), (h, w))
    assert params == 3 * c
    # 1x1 conv: n * 3 * c; attention: q.k^T (n * n * c) + attn.v (n * n * c).
    assert macs == n * 3 * c + 2 * n * n * c


def test_multihead_attention_fast_path_is_counted():
    embed, n = 16, 12

    class _MHA(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(embed, 4, batch_first=True)

        def forward(self, images):
            x = images.reshape(1, n, embed)  # 3 x 8 x 8 values = n x embed
            return self.attn(x, x, x, need_weights=False)[0]

    _, macs = count_params_and_macs(_MHA(), (8, 8))
    # q, k, v and output projections (4 n embed^2) + q.k^T and attn.v (2 n^2 embed)
    assert macs == 4 * n * embed * embed + 2 * n * n * embed


class _Gated(nn.Module):
    """conv -> BN -> GELU gate (product) -> GN without affine -> 2x bilinear upsampling."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.gn = nn.GroupNorm(2, channels, affine=False)

    def forward(self, images):
        x = self.bn(self.proj(images))
        x = self.gn(x * F.gelu(x))
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def test_torchprofile_convention_adds_elementwise_products_norms_and_upsampling():
    c, h, w = 4, 6, 10
    model = _Gated(c)
    conv = h * w * 3 * c
    _, segcore_macs = count_params_and_macs(model, (h, w))
    _, torchprofile_macs = count_params_and_macs(model, (h, w), convention="torchprofile")
    assert segcore_macs == conv
    # + 1 per product value, + 1 per value of the affine BN (the GN has no weight: 0), + 4 per upsampled value.
    assert torchprofile_macs == conv + c * h * w + c * h * w + 4 * c * (2 * h) * (2 * w)


def test_unknown_convention_is_refused():
    with pytest.raises(ValueError, match="torchprofile"):
        count_params_and_macs(_Gated(2), (4, 4), convention="fvcore")


def test_inference_step_returns_the_forward_so_compile_cannot_drop_it():
    # torch.compile removes a forward whose output is unused: the timed step must hand its output back.
    model = nn.Conv2d(3, 4, 1)
    images = torch.randn(1, 3, 8, 8)
    out = _infer_step(model, images)()
    assert isinstance(out, torch.Tensor) and out.shape == (1, 4, 8, 8)

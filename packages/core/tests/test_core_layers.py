"""The shared layers of segcore.models.layers against torch's own modules and the mmcv init rules they stand for."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from segcore.config.options import parse_options
from segcore.errors import OptionsError
from segcore.models.layers import (
    MEMORY_FORMATS,
    MemoryFormat,
    init_classifier,
    init_module,
    init_weights,
    packed_attention,
)
from torch import nn


def test_packed_attention_equals_torch_multihead_attention() -> None:
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(48, 4, batch_first=True).eval()
    query, memory = torch.randn(2, 7, 48), torch.randn(2, 11, 48)
    with torch.no_grad():
        want, _ = mha(query, memory, memory, need_weights=False)
        got = mha.out_proj(packed_attention(query, memory, mha.in_proj_weight, mha.in_proj_bias, num_heads=4))
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_fan_out_normal_counts_groups_and_zeroes_bias() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(64, 256, 3, groups=64)  # fan_out = 3 * 3 * 256 / 64 = 36
    init_module(conv, conv="fan_out_normal")
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / 36), rel=0.05)
    assert conv.bias.abs().max().item() == 0.0


def test_kaiming_linear_and_norm_rules() -> None:
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(32, 128, 3), nn.BatchNorm2d(128), nn.Linear(64, 512), nn.LayerNorm(512))
    with torch.no_grad():
        block[1].weight.fill_(3.0)
        block[3].bias.fill_(3.0)
    init_weights(block, conv="kaiming", linear_std=0.02, norms=True)
    assert block[0].weight.std().item() == pytest.approx(math.sqrt(2 / (9 * 128)), rel=0.05)
    assert block[2].weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert block[2].weight.abs().max().item() <= 2.0 and block[2].bias.abs().max().item() == 0.0
    assert torch.equal(block[1].weight, torch.ones(128)) and torch.equal(block[3].bias, torch.zeros(512))


def test_skip_and_classifier() -> None:
    torch.manual_seed(0)
    head = nn.Sequential(nn.Conv2d(16, 16, 1), nn.Conv2d(16, 5, 1))
    before = head[1].weight.clone()
    init_weights(head, conv="kaiming", skip=(head[1],))
    assert torch.equal(head[1].weight, before)
    init_classifier(head[1])
    assert head[1].weight.std().item() == pytest.approx(0.01, rel=0.3) and head[1].bias.abs().max().item() == 0.0


@dataclass(frozen=True)
class _Options:
    memory_format: MemoryFormat = "channels_last"


def test_memory_format_option_is_checked_where_it_enters() -> None:
    assert MEMORY_FORMATS[parse_options(_Options, {}).memory_format] is torch.channels_last
    assert MEMORY_FORMATS[parse_options(_Options, {"memory_format": "contiguous"}).memory_format] is (
        torch.contiguous_format
    )
    with pytest.raises(OptionsError, match="'nhwc' is not one of 'channels_last', 'contiguous'"):
        parse_options(_Options, {"memory_format": "nhwc"}, component="toy")

"""Baseline decoders: SETR-naive ``linear``, SegFormer ``mlp`` and ``upernet``.

Each follows mmseg 0.x's implementation of the paper (``SETRUPHead`` with ``num_convs=1, kernel 1``,
``SegformerHead``, ``UPerHead``): 1x1/3x3 conv + BN + ReLU blocks, dropout 0.1 before a 1x1 classifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from segcore.config.options import FRACTION, parse_options
from segcore.models.contracts import Decoder, DecoderOutput
from segcore.models.layers import ConvBNReLU, UPerBody
from segcore.models.layers import resize as _resize
from segcore.plugins.specs import PYRAMID_STRIDES, FeatureInfo

__all__ = [
    "ConvBNReLU",
    "LinearHeadOptions",
    "LinearHead",
    "MLPHeadOptions",
    "MLPHead",
    "UPerHeadOptions",
    "UPerHead",
    "linear",
    "mlp",
    "upernet",
]


def _select(in_features: Sequence[FeatureInfo], index: int, what: str) -> int:
    if not -len(in_features) <= index < len(in_features):
        raise ValueError(f"{what}: in_index {index} out of range for {len(in_features)} input maps")
    return index % len(in_features)


@dataclass(frozen=True)
class LinearHeadOptions:
    """Options of ``linear``.

    Attributes:
        channels: width of the 1x1 conv before the classifier.
        in_index: which input map to decode (default: the last).
        dropout: dropout before the classifier.
    """

    channels: int = 256
    in_index: int = -1
    dropout: float = field(default=0.1, metadata=FRACTION)


class LinearHead(Decoder):
    """SETR-naive head (Zheng et al., arXiv:2012.15840, Sec. 3.3): 1x1 conv + BN + ReLU, then a 1x1 classifier.

    Shape:
        output logits: ``[B, K, H / s, W / s]`` at the stride ``s`` of the chosen map.
    """

    in_strides = None  # any list of maps: it reads one of them (in_index)

    def __init__(self, in_features: Sequence[FeatureInfo], num_classes: int, options: LinearHeadOptions) -> None:
        """Build the head for ``in_features``."""
        super().__init__()
        self.index = _select(in_features, options.in_index, "linear")
        self.conv = ConvBNReLU(in_features[self.index].channels, options.channels, 1)
        self.dropout = nn.Dropout2d(options.dropout)
        self.conv_seg = nn.Conv2d(options.channels, num_classes, 1)

    def forward(self, features: Sequence[Tensor], image_size: tuple[int, int]) -> DecoderOutput:
        """Classify the chosen map."""
        return DecoderOutput(self.conv_seg(self.dropout(self.conv(features[self.index]))))


@dataclass(frozen=True)
class MLPHeadOptions:
    """Options of ``mlp``.

    Attributes:
        channels: embedding width of every level and of the fused map (SegFormer: 256; 768 for B2-B5 on
            Cityscapes/ADE in the paper, 256 in mmseg's configs).
        dropout: dropout before the classifier.
    """

    channels: int = 256
    dropout: float = field(default=0.1, metadata=FRACTION)


class MLPHead(Decoder):
    """SegFormer's all-MLP head (Xie et al., arXiv:2105.15203, Eq. 1-4).

    Every level is projected to ``channels`` (1x1 conv + BN + ReLU), upsampled to the finest level,
    concatenated, fused by a 1x1 conv + BN + ReLU, and classified.

    Shape:
        output logits: ``[B, K, H / s0, W / s0]`` at the finest input stride ``s0``.
    """

    in_strides = PYRAMID_STRIDES

    def __init__(self, in_features: Sequence[FeatureInfo], num_classes: int, options: MLPHeadOptions) -> None:
        """Build the head for ``in_features``."""
        super().__init__()
        self.convs = nn.ModuleList(ConvBNReLU(info.channels, options.channels, 1) for info in in_features)
        self.fusion_conv = ConvBNReLU(options.channels * len(in_features), options.channels, 1)
        self.dropout = nn.Dropout2d(options.dropout)
        self.conv_seg = nn.Conv2d(options.channels, num_classes, 1)

    def forward(self, features: Sequence[Tensor], image_size: tuple[int, int]) -> DecoderOutput:
        """Project, upsample to the finest map, fuse and classify."""
        size = features[0].shape[-2:]
        # mmseg's SegformerHead concatenates in input order after upsampling to the first level.
        outs = [
            conv(feat) if i == 0 else _resize(conv(feat), size)
            for i, (conv, feat) in enumerate(zip(self.convs, features))
        ]
        fused = self.fusion_conv(torch.cat(outs, dim=1))
        return DecoderOutput(self.conv_seg(self.dropout(fused)))


@dataclass(frozen=True)
class UPerHeadOptions:
    """Options of ``upernet``.

    Attributes:
        channels: width of the PPM and FPN (mmseg: 512).
        pool_scales: output sizes of the pyramid pooling module.
        dropout: dropout before the classifier.
    """

    channels: int = 512
    pool_scales: tuple[int, ...] = (1, 2, 3, 6)
    dropout: float = field(default=0.1, metadata=FRACTION)


class UPerHead(UPerBody, Decoder):
    """UPerNet's head (Xiao et al., arXiv:1807.10221, Sec. 3): PPM on the coarsest map + FPN over all maps.

    The body is :class:`segcore.models.layers.UPerBody` (mmseg's parameter names); this adds dropout and the classifier.

    Shape:
        output logits: ``[B, K, H / s0, W / s0]`` at the finest input stride ``s0``.
    """

    in_strides = PYRAMID_STRIDES

    def __init__(self, in_features: Sequence[FeatureInfo], num_classes: int, options: UPerHeadOptions) -> None:
        """Build the UPer body for ``in_features`` and the classifier."""
        super().__init__([info.channels for info in in_features], options.channels, options.pool_scales)
        self.dropout = nn.Dropout2d(options.dropout)
        self.conv_seg = nn.Conv2d(options.channels, num_classes, 1)

    def forward(self, features: Sequence[Tensor], image_size: tuple[int, int]) -> DecoderOutput:
        """Top-down FPN fusion of all levels, then classify at the finest one."""
        return DecoderOutput(self.conv_seg(self.dropout(self.fuse(features))))


def linear(in_features: Sequence[FeatureInfo], num_classes: int, **options: object) -> LinearHead:
    """Build the ``linear`` decoder."""
    return LinearHead(in_features, num_classes, parse_options(LinearHeadOptions, options, "linear"))


def mlp(in_features: Sequence[FeatureInfo], num_classes: int, **options: object) -> MLPHead:
    """Build the ``mlp`` decoder."""
    return MLPHead(in_features, num_classes, parse_options(MLPHeadOptions, options, "mlp"))


def upernet(in_features: Sequence[FeatureInfo], num_classes: int, **options: object) -> UPerHead:
    """Build the ``upernet`` decoder."""
    return UPerHead(in_features, num_classes, parse_options(UPerHeadOptions, options, "upernet"))

"""SegFormer's all-MLP decode head as released (NVlabs and transformers), decoder ``segformer``.

Paper: Xie, Wang, Yu, Anandkumar, Alvarez, Luo, *SegFormer: Simple and Efficient Design for Semantic
Segmentation with Transformers*, NeurIPS 2021, arXiv:2105.15203 (Sec. 3.2, Eq. 1-4).
Upstream: github.com/NVlabs/SegFormer ``mmseg/models/decode_heads/segformer_head.py`` (NVIDIA Source Code
License) and transformers' ``SegformerDecodeHead`` (Apache-2.0), which holds the same tensors. Written from
the paper and the key layout of transformers checkpoints, not copied.

Why not core's ``mlp``: that head follows mmseg 0.x's ``SegformerHead``, which projects each level with a
1x1 conv + BatchNorm + ReLU and concatenates in input order. The released SegFormer head projects each level
with a plain linear layer (bias, no norm, no activation) and concatenates the coarsest level first; only the
fusion is conv (no bias) + BatchNorm + ReLU. The two hold different tensors and compute different functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from segcore.config.options import FRACTION, parse_options
from segcore.models.contracts import Decoder, DecoderOutput
from segcore.models.decoders import ConvBNReLU
from segcore.plugins.specs import PYRAMID_STRIDES, FeatureInfo
from torch import Tensor, nn

__all__ = ["SegFormerHeadOptions", "SegFormerHead", "segformer"]


@dataclass(frozen=True)
class SegFormerHeadOptions:
    """Options of ``segformer``.

    Attributes:
        channels: embedding width of every level and of the fused map (``decoder_hidden_size``: 256 for B0/B1,
            768 for B2-B5 in the released models).
        dropout: dropout before the classifier (``classifier_dropout_prob``).
    """

    channels: int = 256
    dropout: float = field(default=0.1, metadata=FRACTION)


class SegFormerHead(Decoder):
    """SegFormer's decoder: per-level linear projection, upsample to the finest level, fuse, classify (Eq. 1-4).

    Shape:
        output logits: ``[B, K, H / s0, W / s0]`` at the finest input stride ``s0``.
    """

    in_strides = PYRAMID_STRIDES

    def __init__(self, in_features: Sequence[FeatureInfo], num_classes: int, options: SegFormerHeadOptions) -> None:
        """Build the projections (``linear_c``), the fusion (``linear_fuse``) and the classifier."""
        super().__init__()
        ch = options.channels
        self.linear_c = nn.ModuleList(nn.Linear(info.channels, ch) for info in in_features)  # Eq. 1
        self.linear_fuse = ConvBNReLU(ch * len(in_features), ch, 1)  # Eq. 3
        # The official head drops whole channels (Dropout2d); transformers drops elements. Both are off in eval.
        self.dropout = nn.Dropout2d(options.dropout)
        self.conv_seg = nn.Conv2d(ch, num_classes, 1)  # Eq. 4

    def forward(self, features: Sequence[Tensor], image_size: tuple[int, int]) -> DecoderOutput:
        """Project, upsample to the first map, concatenate coarsest first, fuse and classify."""
        size = features[0].shape[-2:]
        outs = []
        for i, (proj, feat) in enumerate(zip(self.linear_c, features)):
            x = proj(feat.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # a linear layer over channels, per pixel
            # Eq. 2; the finest map is already at the target size (a same-size bilinear resize is an exact copy).
            outs.append(x if i == 0 else F.interpolate(x, size=size, mode="bilinear", align_corners=False))
        fused = self.linear_fuse(torch.cat(outs[::-1], dim=1))  # the official order: c4, c3, c2, c1
        return DecoderOutput(self.conv_seg(self.dropout(fused)))


def segformer(in_features: Sequence[FeatureInfo], num_classes: int, **options: object) -> SegFormerHead:
    """Build the ``segformer`` decoder.

    Example:
        >>> head = segformer([FeatureInfo(32, 4), FeatureInfo(64, 8), FeatureInfo(160, 16), FeatureInfo(256, 32)],
        ...                  num_classes=150, channels=256)  # doctest: +SKIP
    """
    return SegFormerHead(in_features, num_classes, parse_options(SegFormerHeadOptions, options, "segformer"))

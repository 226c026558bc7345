"""Adapters that let any encoder meet any decoder.

A decoder that needs a pyramid (maps at strictly increasing strides) and an encoder whose maps share
one stride (a plain ViT) are joined by :class:`SimpleFeaturePyramid`: deconvolutions up to strides 4
and 8, identity at 16 and max-pooling to 32, as in ViTDet (Li et al., arXiv:2203.16527, Sec. 3) and
mmseg's ``MultiLevelNeck``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from segcore.contracts import FeatureInfo

__all__ = ["SimpleFeaturePyramid", "is_pyramid", "is_plain"]


def is_pyramid(infos: Sequence[FeatureInfo]) -> bool:
    """True when strides strictly increase (at least two levels)."""
    strides = [i.stride for i in infos]
    return len(strides) >= 2 and all(a < b for a, b in zip(strides, strides[1:]))


def is_plain(infos: Sequence[FeatureInfo]) -> bool:
    """True when every map has the same stride."""
    return len({i.stride for i in infos}) == 1


class _Rescale(nn.Sequential):
    """Change a map's stride by a power-of-two factor: transposed convs up, max-pooling down."""

    def __init__(self, channels: int, factor: float) -> None:
        layers: list[nn.Module] = []
        ch = channels
        while factor > 1:
            out = max(ch // 2, 1)
            layers += [nn.ConvTranspose2d(ch, out, 2, stride=2)]
            factor /= 2
            if factor > 1:  # norm + activation between two deconvolutions, as ViTDet
                layers += [nn.GroupNorm(1, out), nn.GELU()]
            ch = out
        while factor < 1:
            layers += [nn.MaxPool2d(2, 2)]
            factor *= 2
        super().__init__(*layers)
        self.out_channels = ch


class SimpleFeaturePyramid(nn.Module):
    """Turn maps that share one stride into a 4-level pyramid at strides 4, 8, 16 and 32.

    With as many input maps as levels, level ``i`` is built from map ``i`` (shallow layers feed fine
    levels); otherwise every level is built from the last map. Channels halve per upsampling step.

    Args:
        in_features: the plain encoder's outputs (all at one stride).
        strides: output strides.

    Shape:
        input: ``[B, C, H / s, W / s]`` per map.
        output: ``[B, C_i, H / s_i, W / s_i]`` per ``feature_info`` entry.
    """

    def __init__(self, in_features: Sequence[FeatureInfo], strides: Sequence[int] = (4, 8, 16, 32)) -> None:
        """Build one rescaling branch per output stride."""
        super().__init__()
        self.sources = (
            list(range(len(in_features))) if len(in_features) == len(strides) else [len(in_features) - 1] * len(strides)
        )
        self.branches = nn.ModuleList()
        self.feature_info: list[FeatureInfo] = []
        for src, stride in zip(self.sources, strides):
            info = in_features[src]
            branch = _Rescale(info.channels, info.stride / stride)
            self.branches.append(branch)
            self.feature_info.append(FeatureInfo(branch.out_channels, stride))

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        """Return one map per output stride."""
        return [branch(features[src]) for src, branch in zip(self.sources, self.branches)]

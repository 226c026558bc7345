"""Adapters that hand a decoder the levels it declares, whatever levels the encoder returns.

A decoder declares the strides of the maps it reads (``in_strides``, e.g. ``(4, 8, 16, 32)``, or ``None`` for
any list of maps). :func:`build_adapter` reconciles that with the encoder's ``feature_info``:

* the encoder returns exactly those strides, in that order: no adapter, the maps go to the decoder as they are;
* it returns them among other levels (a timm CNN's stride-2 stem level): :class:`SelectLevels` picks them,
  without parameters;
* otherwise :class:`SimpleFeaturePyramid` builds every declared level from the encoder map of closest stride
  (:func:`match_levels`): transposed convolutions up, max-pooling down, identity at equal strides, as in ViTDet
  (Li et al., arXiv:2203.16527, Sec. 3) and mmseg's ``MultiLevelNeck``. A plain ViT (every map at stride 16)
  gets deconvolutions to 4 and 8, identity at 16 and pooling to 32; the 2-level Shrunk ViT (16, 32) gets
  strides 4, 8 and 16 from its stride-16 map and its stride-32 map as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from segcore.errors import WiringError
from segcore.models.contracts import FeatureInfo

__all__ = [
    "SimpleFeaturePyramid",
    "SelectLevels",
    "build_adapter",
    "match_levels",
    "is_pyramid",
    "is_plain",
]


def is_pyramid(infos: Sequence[FeatureInfo]) -> bool:
    """True when strides strictly increase (at least two levels)."""
    strides = [i.stride for i in infos]
    return len(strides) >= 2 and all(a < b for a, b in zip(strides, strides[1:]))


def is_plain(infos: Sequence[FeatureInfo]) -> bool:
    """True when every map has the same stride."""
    return len({i.stride for i in infos}) == 1


def _ratio(a: int, b: int) -> float:
    return max(a, b) / min(a, b)


def match_levels(in_features: Sequence[FeatureInfo], strides: Sequence[int]) -> list[int]:
    """Index of the encoder map each requested stride is built from.

    Each stride takes the encoder stride closest to it by ratio; between a finer and a coarser one at the same
    ratio, the finer (pooling keeps its detail and has no parameters). When several maps share that stride (a
    plain ViT's layers): with exactly as many requested levels built from them as there are maps, level ``k``
    takes map ``k`` (shallow layers feed fine levels); otherwise every such level takes the deepest (last) map,
    as ViTDet builds all levels from the last layer.

    Args:
        in_features: the encoder's maps.
        strides: the requested strides.

    Example:
        >>> match_levels([FeatureInfo(768, 16), FeatureInfo(768, 32)], (4, 8, 16, 32))
        [0, 0, 0, 1]
    """
    if not in_features:
        raise WiringError("the encoder returns no maps")
    have = sorted({info.stride for info in in_features})
    # min() keeps the first of equal keys, and `have` is sorted: a tie goes to the finer stride.
    chosen = [min(have, key=lambda e, s=s: _ratio(e, s)) for s in strides]
    sources = [0] * len(strides)
    for stride in set(chosen):
        maps = [i for i, info in enumerate(in_features) if info.stride == stride]
        levels = [k for k, c in enumerate(chosen) if c == stride]
        for n, k in enumerate(levels):
            sources[k] = maps[n] if len(maps) == len(levels) else maps[-1]
    return sources


def build_adapter(in_features: Sequence[FeatureInfo], strides: Sequence[int] | None) -> nn.Module | None:
    """The module that turns the encoder's maps into maps at ``strides``, or ``None`` when they already are.

    Args:
        in_features: the encoder's maps.
        strides: what the decoder declares (``in_strides``); ``None`` takes the maps as they are.

    Returns:
        ``None`` (exact match or ``strides is None``), a :class:`SelectLevels` (the strides are among the
        encoder's) or a :class:`SimpleFeaturePyramid`.

    Raises:
        WiringError: a level would need rescaling by a factor that is not a power of two (e.g. stride 14 to 4).
    """
    if strides is None:
        return None
    sources = match_levels(in_features, strides)
    if all(in_features[src].stride == s for src, s in zip(sources, strides)):
        if sources == list(range(len(in_features))):
            return None
        return SelectLevels(in_features, sources)
    return SimpleFeaturePyramid(in_features, strides, sources)


def _describe_source(index: int, info: FeatureInfo) -> str:
    return f"map {index} ({info.channels}@s{info.stride})"


class SelectLevels(nn.Module):
    """Pass on some of the encoder's maps (no parameters), e.g. strides 4-32 of a CNN that also returns 2.

    Args:
        in_features: the encoder's maps.
        indices: which maps to pass on, in order.

    Shape:
        input: one map per ``in_features`` entry; output: ``features[i]`` for ``i`` in ``indices``.
    """

    def __init__(self, in_features: Sequence[FeatureInfo], indices: Sequence[int]) -> None:
        """Remember which maps to pass on."""
        super().__init__()
        self.indices = tuple(indices)
        self.in_features = list(in_features)
        self.feature_info: list[FeatureInfo] = [in_features[i] for i in self.indices]

    def describe(self) -> str:
        """The wiring in words: which encoder map each output level is."""
        return "; ".join(
            f"stride {self.in_features[i].stride} <- {_describe_source(i, self.in_features[i])}" for i in self.indices
        )

    def extra_repr(self) -> str:
        """Show the wiring when the model is printed."""
        return self.describe()

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        """Return the selected maps."""
        return [features[i] for i in self.indices]


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
            # ceil_mode: an odd grid keeps its last row/column, giving ceil(n / 2) as strided convs with padding do.
            # Same output as floor mode on the even grids a padded input gives.
            layers += [nn.MaxPool2d(2, 2, ceil_mode=True)]
            factor *= 2
        super().__init__(*layers)
        self.out_channels = ch


class SimpleFeaturePyramid(nn.Module):
    """Build maps at ``strides`` (default 4, 8, 16 and 32) from the encoder maps of closest stride.

    Level ``k`` comes from map ``sources[k]`` (default: :func:`match_levels`): transposed 2x2 convolutions up
    (channels halve per step, GroupNorm + GELU between two), 2x2 max-pooling down, identity at equal stride.
    For a plain ViT that is ViTDet's simple feature pyramid: with as many maps as levels, level ``k`` is built
    from map ``k``; otherwise every level from the last map.

    Args:
        in_features: the encoder's maps.
        strides: output strides.
        sources: index of the map each level is built from.

    Raises:
        WiringError: a level and its source differ by a factor that is not a power of two.

    Shape:
        input: ``[B, C, H / s, W / s]`` per map.
        output: ``[B, C_i, H / s_i, W / s_i]`` per ``feature_info`` entry.
    """

    def __init__(
        self,
        in_features: Sequence[FeatureInfo],
        strides: Sequence[int] = (4, 8, 16, 32),
        sources: Sequence[int] | None = None,
    ) -> None:
        """Build one rescaling branch per output stride."""
        super().__init__()
        self.sources = list(sources) if sources is not None else match_levels(in_features, strides)
        self.in_features = list(in_features)
        self.branches = nn.ModuleList()
        self.feature_info: list[FeatureInfo] = []
        for src, stride in zip(self.sources, strides):
            info = in_features[src]
            ratio = _ratio(info.stride, stride)
            if ratio != int(ratio) or int(ratio) & (int(ratio) - 1):
                raise WiringError(
                    f"stride {stride} would be built from {_describe_source(src, info)}, a factor of {ratio:g}; "
                    "the adapter rescales by powers of two only"
                )
            branch = _Rescale(info.channels, info.stride / stride)
            self.branches.append(branch)
            self.feature_info.append(FeatureInfo(branch.out_channels, stride))

    def describe(self) -> str:
        """The wiring in words: for each output level, its source map and how it is rescaled."""
        parts = []
        for src, info in zip(self.sources, self.feature_info):
            source = self.in_features[src]
            factor = _ratio(source.stride, info.stride)
            how = (
                "as is"
                if factor == 1
                else f"{'up' if source.stride > info.stride else 'down'} x{factor:g} -> {info.channels} channels"
            )
            parts.append(f"stride {info.stride} <- {_describe_source(src, source)} {how}")
        return "; ".join(parts)

    def extra_repr(self) -> str:
        """Show the wiring when the model is printed."""
        return self.describe()

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        """Return one map per output stride."""
        return [branch(features[src]) for src, branch in zip(self.sources, self.branches)]

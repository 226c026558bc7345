"""The contracts every component follows: encoders, decoders, losses and the specs plugins register.

An encoder turns images into a list of feature maps described by :class:`FeatureInfo`; a decoder turns
such a list into a :class:`DecoderOutput`; a loss turns a decoder output and a label map into a dict of
scalars whose ``"loss"`` entry is optimised. Plugins register factories for them through the hooks of
:mod:`segcore.plugins.hookspecs`, wrapped in a :class:`ComponentSpec`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from segcore.plugins.specs import FeatureInfo, check_strides

__all__ = ["FeatureInfo", "DecoderOutput", "Encoder", "Decoder", "Loss", "check_feature_info"]


@dataclass
class DecoderOutput:
    """What a decoder returns.

    Attributes:
        logits: class scores ``[B, K, h, w]`` used for inference, at the decoder's own resolution.
        aux: tensors only the decoder's loss needs (per-layer predictions, attention logits, ...).

    Shape:
        logits: ``[B, K, h, w]``.
    """

    logits: Tensor
    aux: dict[str, Tensor] = field(default_factory=dict)


class Encoder(nn.Module):
    """Base class of encoders: ``forward(images) -> list[Tensor]``, one NCHW map per ``feature_info`` entry.

    Subclasses set ``feature_info`` in ``__init__``. ``size_divisor`` is the padding the encoder needs, as its
    official network pads: :class:`segcore.SegModel` zero-pads the input at the bottom/right to a multiple of
    it and resizes the logits to the unpadded input size (DESIGN.md "Input sizes"). Encoders that run at any
    size, because their strided convolutions round the map sizes (MiT, MSCAN, ResNet), declare 1; a ViT
    declares its patch size (mmseg's "corner" padding). The default, the largest stride, is the conservative
    choice for an encoder that does not say what it needs.

    Shape:
        images: ``[B, 3, H, W]`` with ``H`` and ``W`` multiples of ``size_divisor``.
        output: ``[B, C_i, h_i, w_i]`` for every ``FeatureInfo(C_i, s_i)``: ``h_i = H / s_i`` when ``H`` is a
            multiple of ``s_i``, else the encoder's own rounding (e.g. ``(H + 2p - k) // s + 1`` per conv).
    """

    feature_info: list[FeatureInfo]

    @property
    def size_divisor(self) -> int:
        """Multiple of the input size this encoder needs (the largest stride unless overridden)."""
        return max(info.stride for info in self.feature_info)

    def forward(self, images: Tensor) -> list[Tensor]:  # pragma: no cover - abstract
        """Return one feature map per ``feature_info`` entry."""
        raise NotImplementedError


class Decoder(nn.Module):
    """Base class of decoders, built as ``Decoder(in_features, num_classes, **options)``.

    Class attributes:
        in_strides: the strides of the maps the decoder reads, finest first, one map per entry (``(4, 8, 16,
            32)`` for a head built for hierarchical encoders), or ``None`` when it accepts any list of maps. The
            decoder's :class:`~segcore.ComponentSpec` repeats it (the model reads the spec before it builds the
            decoder): :class:`segcore.SegModel` then hands the decoder exactly these levels, selected from the
            encoder's maps or built by an adapter (see :mod:`segcore.models.adapters`). Checked when the class is
            defined: positive and strictly increasing.
        default_loss: the registered name of the loss that trains it.

    An instance may set ``derived_options`` (a dict) to the values it chose for options given as ``None`` (a head
    count that divides its width, say): the model's config records them (:meth:`SegModelConfig.with_derived`).
    """

    in_strides: ClassVar[tuple[int, ...] | None] = None
    default_loss: ClassVar[str] = "ce"
    default_loss_options: ClassVar[Mapping[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Check a subclass's ``in_strides`` declaration when the class is defined, not when a model is built."""
        super().__init_subclass__(**kwargs)
        if "in_strides" in cls.__dict__:
            cls.in_strides = check_strides(cls.in_strides, f"{cls.__qualname__}.in_strides")

    def forward(self, features: Sequence[Tensor], image_size: tuple[int, int]) -> DecoderOutput:  # pragma: no cover
        """Decode ``features``; ``image_size`` is the network input's ``(H, W)`` (after the encoder's padding).

        Maps may have any size (the encoder's rounding at odd inputs): resize them to the map the head works
        at, as the official heads do, rather than assume that strides line up.
        """
        raise NotImplementedError


class Loss(nn.Module):
    """Base class of losses, built as ``Loss(num_classes, ignore_index=255, **options)``.

    ``forward(output, target)`` returns a dict whose ``"loss"`` entry is the total to optimise and whose
    other entries are logged. Pixels equal to ``ignore_index`` never contribute to the numerator.

    Shape:
        target: ``[B, H, W]`` long, at the label resolution (usually the input size).
    """

    def forward(self, output: DecoderOutput, target: Tensor) -> dict[str, Tensor]:  # pragma: no cover
        """Return the loss terms; ``"loss"`` is the total."""
        raise NotImplementedError


def check_feature_info(encoder: Encoder, features: Sequence[Tensor], image_size: tuple[int, int]) -> None:
    """Raise ``AssertionError`` unless ``features`` match ``encoder.feature_info`` for an input of ``image_size``.

    ``image_size`` must be a multiple of every stride in ``encoder.feature_info`` (and of
    ``encoder.size_divisor``): only there is map ``i`` exactly ``image_size / s_i``. At other sizes the map
    sizes follow the encoder's own rounding, which ``feature_info`` does not describe.
    """
    infos = encoder.feature_info
    assert len(features) == len(infos), f"{len(features)} maps returned, feature_info describes {len(infos)}"
    h, w = image_size
    for i, (feat, info) in enumerate(zip(features, infos)):
        assert isinstance(feat, torch.Tensor) and feat.ndim == 4, f"map {i} is not an NCHW tensor"
        expected = (info.channels, h // info.stride, w // info.stride)
        assert tuple(feat.shape[1:]) == expected, (
            f"map {i}: shape {tuple(feat.shape)} but feature_info says channels={info.channels}, "
            f"stride={info.stride} (expected [B, {expected[0]}, {expected[1]}, {expected[2]}] for input {h}x{w})"
        )

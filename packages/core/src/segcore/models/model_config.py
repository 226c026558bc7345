"""The config of a :class:`~segcore.models.model.SegModel`: what ``config.json`` holds and what rebuilds the model.

It sits below the model, so that the weight I/O (:mod:`segcore.weights.pretrained`,
:mod:`segcore.weights.checkpoints`) reads and writes configs without importing the model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from segcore.config.options import CLASSES_LIMIT, bounds, check_fields
from segcore.config.settings import IMAGENET_MEAN, IMAGENET_STD, MEAN_RANGE, STD_RANGE, EvalProtocol
from segcore.errors import OptionsError
from segcore.models.components import with_pair_defaults

__all__ = ["SegModelConfig"]


@dataclass
class SegModelConfig:
    """Everything needed to rebuild a :class:`SegModel`; saved as ``config.json``.

    Attributes:
        encoder: registered encoder name.
        decoder: registered decoder name.
        num_classes: number of classes ``K``.
        encoder_options: options of the encoder.
        decoder_options: options of the decoder.
        loss: loss name; empty means the decoder's default loss.
        loss_options: options of the loss (merged over the decoder's defaults when ``loss`` is empty).
        class_names: one name per class.
        palette: one RGB colour per class.
        mean: per-channel mean subtracted from 0-255 images.
        std: per-channel std dividing 0-255 images.
        ignore_index: label value that marks unlabelled pixels.
        eval: the evaluation protocol (:class:`~segcore.config.settings.EvalProtocol` as a dict: resize rule, mode,
            crop/stride, scales, flip) used by ``segcore eval``; empty means the dataset's.
        extra: free-form metadata (dataset, recipe, provenance).
    """

    encoder: str
    decoder: str
    num_classes: int = field(metadata=bounds(1, CLASSES_LIMIT))
    encoder_options: dict[str, Any] = field(default_factory=dict)
    decoder_options: dict[str, Any] = field(default_factory=dict)
    loss: str = ""
    loss_options: dict[str, Any] = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)
    palette: list[list[int]] = field(default_factory=list, metadata=bounds(0, 255))
    mean: tuple[float, float, float] = field(default=IMAGENET_MEAN, metadata=MEAN_RANGE)
    std: tuple[float, float, float] = field(default=IMAGENET_STD, metadata=STD_RANGE)
    ignore_index: int = 255
    eval: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Check every field's type and range, and the eval protocol strictly; store the protocol in full.

        Raises:
            OptionsError: naming the field (``num_classes: expected an integer, got 'three'``).
        """
        check_fields(self)
        if self.eval:
            self.eval = EvalProtocol.from_dict(self.eval, "eval").to_dict()

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (tuples become lists)."""
        return _jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config.json") -> SegModelConfig:
        """Rebuild from :meth:`to_dict` output, checking every value's type and range.

        Args:
            data: the contents of ``config.json``.
            source: the file it was read from, named in errors.

        Raises:
            OptionsError: an unknown or missing key, or a value of the wrong type or out of range, naming the field
                and ``source``.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise OptionsError(f"{source} has unknown keys {unknown}; valid keys are {sorted(names)}")
        missing = sorted(f.name for f in dataclasses.fields(cls) if f.name not in data and _required(f))
        if missing:
            raise OptionsError(f"{source} is not a valid segcore config: it lacks {', '.join(missing)}")
        try:
            return cls(**data)
        except OptionsError as err:
            raise OptionsError(
                f"{source} is not a valid segcore config: {err} (fix the value in the file, or save the model again)"
            ) from err

    @classmethod
    def from_names(
        cls,
        encoder: str,
        decoder: str,
        num_classes: int,
        encoder_options: Mapping[str, Any] | None = None,
        decoder_options: Mapping[str, Any] | None = None,
        pair_defaults: bool = True,
        **fields: Any,
    ) -> SegModelConfig:
        """The config of registered ``encoder`` + ``decoder`` with these options (what :func:`build_model` builds).

        Args:
            encoder: encoder name.
            decoder: decoder name.
            num_classes: number of classes.
            encoder_options: encoder options.
            decoder_options: decoder options.
            pair_defaults: apply the options of the registered paper pair of ``encoder`` + ``decoder``, if any,
                under the ones given.
            **fields: other fields (``class_names``, ``mean``, ``loss``, ...).
        """
        encoder_options, decoder_options = dict(encoder_options or {}), dict(decoder_options or {})
        if pair_defaults:
            encoder_options, decoder_options = with_pair_defaults(encoder, decoder, encoder_options, decoder_options)
        return cls(
            encoder=encoder,
            decoder=decoder,
            num_classes=num_classes,
            encoder_options=encoder_options,
            decoder_options=decoder_options,
            **fields,
        )

    def with_derived(self, derived: Mapping[str, Any]) -> SegModelConfig:
        """This config with the decoder options a decoder derived where none was given (``Decoder.derived_options``).

        A decoder that chooses a value the user left out (ATM's head count for a width 32 does not divide) says so
        here, so that ``config.json`` records what was built. Given options are never replaced.
        """
        new = {k: v for k, v in derived.items() if self.decoder_options.get(k) is None}
        return dataclasses.replace(self, decoder_options={**self.decoder_options, **new}) if new else self


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value

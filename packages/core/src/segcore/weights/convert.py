"""Official checkpoint formats -> segcore keys, through the converters plugins register.

A converter (``segcore_converters``) is a pure function from one component's official state dict to segcore's
keys. An mmseg checkpoint (``state_dict`` with ``backbone.`` / ``decode_head.`` keys) is split by prefix, each
part goes through the converter registered for its component, and the result is loaded strictly into a model the
caller built (:func:`segcore.models.model.convert_checkpoint` builds it from names or an official config). This module
builds no model itself.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from segcore.errors import CheckpointError, SegcoreError
from segcore.plugins.registry import components
from segcore.plugins.specs import ConverterSpec, resolve
from segcore.weights.state_dict import load_strict, split_prefix

if TYPE_CHECKING:
    from segcore.models.model import SegModel

__all__ = [
    "MMSEG_AUXILIARY_PREFIX",
    "identity",
    "find_converter",
    "convert_component",
    "official_model_fields",
    "convert_official_state",
    "load_official",
]

logger = logging.getLogger(__name__)
# mmseg's training-only auxiliary FCN head (UperNet-style configs): segcore models have none, so its tensors are
# left out of the conversion, said in a warning and recorded in the model's config (``converted_from``).
MMSEG_AUXILIARY_PREFIX = "auxiliary_head."


def identity(name: str, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The converter of segcore's own format: returns the dict unchanged."""
    return dict(state_dict)


def find_converter(fmt: str, component: str) -> ConverterSpec:
    """Return the converter registered for format ``fmt`` and component name ``component``."""
    matches = [
        spec
        for spec in components("converters").values()
        if spec.format == fmt and any(fnmatch.fnmatchcase(component, pat) for pat in spec.components)
    ]
    if not matches:
        known = sorted({f"{s.format} ({', '.join(s.components)})" for s in components("converters").values()})
        raise SegcoreError(
            f"no converter reads format {fmt!r} for {component!r}; installed converters: {', '.join(known)}"
        )
    return matches[0]


def convert_component(fmt: str, component: str, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Convert one component's official state dict (prefix already stripped) to segcore keys."""
    return find_converter(fmt, component).load_convert()(component, state_dict)


def official_model_fields(official_config: Mapping[str, Any]) -> dict[str, Any]:
    """The encoder, decoder, their options and ``num_classes`` of an official (mmseg) model config.

    Args:
        official_config: the config's ``model`` part (or the whole config): its ``backbone`` and ``decode_head``
            dicts, whose ``type`` a plugin's converter maps (``ConverterSpec.official_types``).
    """
    cfg = official_config.get("model", official_config)
    out: dict[str, Any] = {}
    for part, kind in (("backbone", "encoder"), ("decode_head", "decoder")):
        section = dict(cfg.get(part) or {})
        type_name = section.get("type")
        if not type_name:
            raise SegcoreError(f"official config has no {part}.type")
        builder = None
        for spec in components("converters").values():
            if type_name in spec.official_types:
                builder = resolve(spec.official_types[type_name])
                break
        if builder is None:
            raise SegcoreError(
                f"no installed plugin understands official {part} type {type_name!r}; install the plugin of that "
                "paper (segcore-segnext, segcore-segvit or segcore-segdeformer)"
            )
        name, options = builder(section)
        out[kind] = name
        out[f"{kind}_options"] = options
        if part == "decode_head":
            out["num_classes"] = int(section.get("num_classes", 0))
    return out


def _split_model_state(fmt: str, encoder: str, decoder: str, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    enc_sd = convert_component(fmt, encoder, split_prefix(state, "backbone."))
    dec_sd = convert_component(fmt, decoder, split_prefix(state, "decode_head."))
    return {**{f"encoder.{k}": v for k, v in enc_sd.items()}, **{f"decoder.{k}": v for k, v in dec_sd.items()}}


def convert_official_state(
    state: Mapping[str, Tensor],
    format: str,  # noqa: A002 - the public name of DESIGN.md
    encoder: str,
    decoder: str,
) -> tuple[dict[str, Tensor], int]:
    """Convert a full official model's state dict to segcore keys (``encoder.*`` / ``decoder.*``).

    Args:
        state: the official state dict.
        format: ``"segcore"`` (returned unchanged), ``"mmseg"`` (``backbone.`` / ``decode_head.`` keys, the
            training-only ``auxiliary_head.`` left out) or another format with that layout.
        encoder: the encoder whose converter reads the ``backbone.`` part.
        decoder: the decoder whose converter reads the ``decode_head.`` part.

    Returns:
        The converted dict and how many ``auxiliary_head.*`` tensors were left out.

    Raises:
        CheckpointError: an mmseg checkpoint with top-level modules other than backbone and decode_head.
    """
    if format == "segcore":
        return dict(state), 0
    if format != "mmseg":
        return _split_model_state(format, encoder, decoder, state), 0
    known = ("backbone.", "decode_head.", MMSEG_AUXILIARY_PREFIX)
    unknown = sorted({k.split(".")[0] for k in state if not k.startswith(known)})
    if unknown:
        raise CheckpointError(
            f"not an mmseg checkpoint: top-level modules {unknown} are neither backbone nor decode_head"
        )
    dropped = sum(k.startswith(MMSEG_AUXILIARY_PREFIX) for k in state)
    if dropped:
        logger.warning(
            "leaving out %d auxiliary_head.* tensors: mmseg's auxiliary head only adds a training loss and "
            "segcore models have none",
            dropped,
        )
    return _split_model_state(format, encoder, decoder, state), dropped


def load_official(
    model: SegModel,
    state: Mapping[str, Tensor],
    format: str,  # noqa: A002 - the public name of DESIGN.md
    path: str | Path | None = None,
) -> SegModel:
    """Convert an official state dict to ``model``'s keys, load it strictly and record where it came from.

    Args:
        model: the model built for the checkpoint (its config names the encoder and decoder).
        state: the official state dict.
        format: the official format (see :func:`convert_official_state`).
        path: the file ``state`` was read from, if any (named in errors and in ``config.extra["converted_from"]``).

    Returns:
        ``model``, loaded.

    Raises:
        CheckpointError: missing, unexpected or mis-shaped keys, listed by module.
    """
    converted, dropped = convert_official_state(state, format, model.config.encoder, model.config.decoder)
    load_strict(model, converted, source=str(path) if path is not None else "state dict")
    source = {"format": format, "file": Path(str(path)).name if path is not None else "state dict"}
    if dropped:
        source["dropped"] = f"{dropped} auxiliary_head.* tensors"
    model.config.extra.setdefault("converted_from", source)
    return model

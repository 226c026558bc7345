"""Official checkpoints -> segcore models, through the converters plugins register.

Official files are read with ``torch.load(weights_only=True)`` (no pickle code runs) or safetensors.
A mmseg checkpoint (``state_dict`` with ``backbone.`` / ``decode_head.`` keys) is split by prefix; each
part goes through the converter registered for its component; the model is loaded strictly and any
mismatch is reported grouped by module.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from segcore.errors import CheckpointError, SegcoreError
from segcore.registry import components
from segcore.specs import ConverterSpec

logger = logging.getLogger(__name__)
# mmseg's training-only auxiliary FCN head (UperNet-style configs): segcore models have none, so its tensors are
# left out of the conversion, said in a warning and recorded in the model's config (``converted_from``).
MMSEG_AUXILIARY_PREFIX = "auxiliary_head."

if TYPE_CHECKING:
    from segcore.model import SegModel

__all__ = [
    "load_state_dict_file",
    "find_converter",
    "convert_component",
    "convert_checkpoint",
    "load_strict",
    "mismatch_report",
    "identity",
    "split_prefix",
    "rename_keys",
]

_WRAPPERS = ("state_dict", "model", "module", "model_state", "params")


def identity(name: str, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The converter of segcore's own format: returns the dict unchanged."""
    return dict(state_dict)


def rename_keys(state_dict: Mapping[str, Tensor], rules: Sequence[tuple[str, str]], what: str) -> dict[str, Tensor]:
    """Rename every key with the first ``(pattern, replacement)`` rule that matches it (``re.subn``).

    A key no rule matches is an error naming a few of them, so an unexpected layout never loads half-converted.
    """
    out: dict[str, Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        for pattern, repl in rules:
            new, n = re.subn(pattern, repl, key)
            if n:
                out[new] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"{what}: {len(unknown)} keys not understood, e.g. {unknown[:5]}")
    return out


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """Read a checkpoint file safely and return its flat ``name -> tensor`` dict.

    ``.safetensors`` files are read with safetensors; anything else with ``torch.load(weights_only=True)``.
    Wrappers such as ``{"state_dict": ...}`` or ``{"model": ...}`` are unwrapped, non-tensor entries dropped.

    Raises:
        CheckpointError: the file is missing, truncated, not a checkpoint, or needs pickle code to load.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            data: Any = load_file(str(path))
        else:
            data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"cannot read checkpoint {path}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''} "
            "(is the file complete? re-download it; pickled objects other than tensors are refused for safety)"
        ) from err
    for _ in range(3):
        if isinstance(data, Mapping):
            inner = next((data[k] for k in _WRAPPERS if k in data and isinstance(data[k], Mapping)), None)
            if inner is not None and not any(isinstance(v, Tensor) for v in data.values()):
                data = inner
                continue
        break
    if not isinstance(data, Mapping):
        raise CheckpointError(f"checkpoint {path} holds a {type(data).__name__}, not a state dict")
    tensors = {k: v for k, v in data.items() if isinstance(v, Tensor)}
    if not tensors:
        raise CheckpointError(f"checkpoint {path} holds no tensors (keys: {list(data)[:8]})")
    return tensors


def split_prefix(state_dict: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """Return the entries under ``prefix`` with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


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


def _from_official_config(official_config: Mapping[str, Any]) -> dict[str, Any]:
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
                from segcore.specs import resolve

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


def convert_checkpoint(
    checkpoint: str | Path | Mapping[str, Tensor],
    format: str = "mmseg",  # noqa: A002 - the public name of DESIGN.md
    encoder: str | None = None,
    decoder: str | None = None,
    num_classes: int | None = None,
    official_config: Mapping[str, Any] | None = None,
    encoder_options: Mapping[str, Any] | None = None,
    decoder_options: Mapping[str, Any] | None = None,
    **config: Any,
) -> SegModel:
    """Build a :class:`SegModel` and load an official full-model checkpoint into it.

    Args:
        checkpoint: a file path or an already loaded state dict.
        format: the official format (``"mmseg"``: ``backbone.`` / ``decode_head.`` keys).
        encoder: encoder name, unless ``official_config`` gives it.
        decoder: decoder name, unless ``official_config`` gives it.
        num_classes: classes of the head, unless ``official_config`` gives it.
        official_config: the ``model`` part of an official config (its ``backbone`` and ``decode_head``
            dicts); builds the matching model.
        encoder_options: options overriding those derived from ``official_config``.
        decoder_options: options overriding those derived from ``official_config``.
        **config: further :class:`SegModelConfig` fields (``class_names``, ``palette``, ...).

    Raises:
        CheckpointError: missing, unexpected or mis-shaped keys, listed by module.

    Example:
        >>> model = segcore.convert_checkpoint("segnext_tiny_512x512_ade_160k.pth", format="mmseg",
        ...                                    encoder="mscan-t", decoder="ham", num_classes=150)  # doctest: +SKIP
    """
    from segcore.model import build_model

    built: dict[str, Any] = {}
    if official_config is not None:
        built = _from_official_config(official_config)
    encoder = encoder or built.get("encoder")
    decoder = decoder or built.get("decoder")
    num_classes = num_classes or built.get("num_classes")
    if not (encoder and decoder and num_classes):
        raise SegcoreError("give encoder, decoder and num_classes, or official_config")
    enc_opts = {**built.get("encoder_options", {}), **(encoder_options or {})}
    dec_opts = {**built.get("decoder_options", {}), **(decoder_options or {})}
    state = load_state_dict_file(checkpoint) if isinstance(checkpoint, (str, Path)) else dict(checkpoint)
    model = build_model(encoder, decoder, int(num_classes), enc_opts, dec_opts, **config)
    dropped = 0  # auxiliary-head tensors left out (mmseg format)
    if format == "segcore":
        converted = dict(state)
    elif format == "mmseg":
        unknown = sorted(
            {k.split(".")[0] for k in state if not k.startswith(("backbone.", "decode_head.", MMSEG_AUXILIARY_PREFIX))}
        )
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
        converted = {}
        enc_sd = convert_component(format, encoder, split_prefix(state, "backbone."))
        dec_sd = convert_component(format, decoder, split_prefix(state, "decode_head."))
        converted.update({f"encoder.{k}": v for k, v in enc_sd.items()})
        converted.update({f"decoder.{k}": v for k, v in dec_sd.items()})
    else:
        enc_sd = convert_component(format, encoder, split_prefix(state, "backbone."))
        dec_sd = convert_component(format, decoder, split_prefix(state, "decode_head."))
        converted = {**{f"encoder.{k}": v for k, v in enc_sd.items()}, **{f"decoder.{k}": v for k, v in dec_sd.items()}}
    from_file = isinstance(checkpoint, (str, Path))
    load_strict(model, converted, source=str(checkpoint) if from_file else "state dict")
    source = {"format": format, "file": Path(str(checkpoint)).name if from_file else "state dict"}
    if dropped:
        source["dropped"] = f"{dropped} auxiliary_head.* tensors"
    model.config.extra.setdefault("converted_from", source)
    return model


def _group(keys: list[str], depth: int = 2) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for key in keys:
        parts = key.split(".")
        groups[".".join(parts[:depth])].append(".".join(parts[depth:]) or key)
    return dict(groups)


def mismatch_report(
    missing: list[str], unexpected: list[str], shapes: list[tuple[str, tuple[int, ...], tuple[int, ...]]]
) -> str:
    """Describe a state-dict mismatch grouped by module, as a multi-line string."""
    lines = []
    for title, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            lines.append(f"{len(keys)} {title} keys:")
            for module, names in sorted(_group(keys).items()):
                shown = ", ".join(names[:6]) + (f", ... (+{len(names) - 6})" if len(names) > 6 else "")
                lines.append(f"  {module}: {shown}")
    if shapes:
        lines.append(f"{len(shapes)} keys with the wrong shape (checkpoint vs model):")
        for key, got, want in shapes[:20]:
            lines.append(f"  {key}: {list(got)} vs {list(want)}")
        if len(shapes) > 20:
            lines.append(f"  ... (+{len(shapes) - 20})")
    return "\n".join(lines)


def load_strict(module: nn.Module, state_dict: Mapping[str, Tensor], source: str = "checkpoint") -> None:
    """Load ``state_dict`` into ``module`` requiring an exact match of keys and shapes.

    Raises:
        CheckpointError: with :func:`mismatch_report` of what differs.
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = [
        (k, tuple(state_dict[k].shape), tuple(own[k].shape))
        for k in sorted(set(own) & set(state_dict))
        if tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"{source} does not match the model:\n{mismatch_report(missing, unexpected, shapes)}\n"
            "Check that encoder, decoder, num_classes and options match the checkpoint's (or pass "
            "official_config=), and that the file was converted with the right format."
        )
    module.load_state_dict(dict(state_dict), strict=True)

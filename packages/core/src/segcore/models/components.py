"""Build registered components by name, validating their options first."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from segcore.config.options import option_names, parse_options, to_jsonable_options, unknown_options_message
from segcore.errors import OptionsError
from segcore.models.contracts import Decoder, Encoder, Loss
from segcore.plugins.registry import Kind, components, get_spec
from segcore.plugins.specs import ComponentSpec, FeatureInfo, PairSpec

__all__ = [
    "build_encoder",
    "build_decoder",
    "build_loss",
    "build_dataset",
    "validate_options",
    "find_pair",
    "with_skip_bad",
    "with_pair_defaults",
    "resolved_options",
]


def validate_options(kind: Kind, name: str, options: Mapping[str, Any]) -> None:
    """Raise :class:`OptionsError` if ``options`` has a key that component ``name`` does not accept."""
    spec: ComponentSpec = get_spec(kind, name)
    options_cls = spec.load_options()
    if options_cls is None:
        return
    valid = option_names(options_cls)
    unknown = [k for k in options if k not in valid]
    if unknown:
        raise OptionsError(unknown_options_message(name, unknown, valid))


def _call(kind: Kind, name: str, *args: Any, fixed: Mapping[str, Any] | None = None, **options: Any) -> Any:
    """Validate ``options`` and call the factory of ``name`` with ``args``, ``fixed`` keywords and ``options``."""
    spec: ComponentSpec = get_spec(kind, name)
    validate_options(kind, name, options)
    factory = spec.load_factory()
    if name not in components(kind):  # a namespaced name such as timm:resnet18
        args = (name.split(":", 1)[1], *args)
    return factory(*args, **(fixed or {}), **options)


def build_encoder(name: str, pretrained: bool = False, **options: Any) -> Encoder:
    """Build the encoder registered as ``name`` (``"mscan-b"``, ``"timm:resnet50"``, ...).

    Example:
        >>> enc = build_encoder("timm:resnet18")  # doctest: +SKIP
        >>> [f.stride for f in enc.feature_info]  # doctest: +SKIP
        [4, 8, 16, 32]
    """
    encoder = _call("encoders", name, fixed={"pretrained": pretrained}, **options)
    if not getattr(encoder, "feature_info", None):
        raise TypeError(f"encoder {name!r} has no feature_info; every encoder must describe its outputs")
    return encoder


def build_decoder(name: str, in_features: Sequence[FeatureInfo], num_classes: int, **options: Any) -> Decoder:
    """Build the decoder registered as ``name`` for encoder outputs described by ``in_features``."""
    return _call("decoders", name, list(in_features), num_classes, **options)


def build_loss(name: str, num_classes: int, ignore_index: int = 255, **options: Any) -> Loss:
    """Build the loss registered as ``name``."""
    return _call("losses", name, num_classes, fixed={"ignore_index": ignore_index}, **options)


def build_dataset(name: str, root: str | None = None, split: str = "train", **options: Any) -> Any:
    """Build the dataset registered as ``name`` (needs ``segcore-datasets`` for the first-party ones).

    ``ds[i]`` is ``{"image": uint8 [3, H, W], "label": int64 [H, W], "path": str}``; ``ds.classes``,
    ``ds.palette`` and ``ds.ignore_index`` describe it.

    Example:
        >>> ds = build_dataset("synthetic-shapes", split="val")  # doctest: +SKIP
    """
    return _call("datasets", name, root, split, **options)


def with_skip_bad(name: str, options: Mapping[str, Any], flag: str = "--skip-bad") -> dict[str, Any]:
    """``options`` of dataset ``name`` with ``skip_bad=True``: rows that cannot be decoded are left out and counted.

    ``--skip-bad`` is the flag for it (the same as ``--dataset-opt skip_bad=true``); a dataset that reads no rows
    (a ``folder`` dataset lists the files it cannot pair or read, and goes on without it) is refused, saying so.

    Raises:
        OptionsError: the dataset has no ``skip_bad`` option.
    """
    options_cls = get_spec("datasets", name).load_options()
    if options_cls is None or "skip_bad" not in option_names(options_cls):
        raise OptionsError(
            f"{flag}: dataset {name!r} has no rows to skip (it takes no skip_bad option); it is for hf: datasets and "
            "the registered datasets' hf: copies. Folder datasets list the files they cannot read and go on"
        )
    return {**options, "skip_bad": True}


def find_pair(encoder: str, decoder: str) -> tuple[str, PairSpec] | None:
    """The registered paper pair ``(name, spec)`` of ``encoder`` + ``decoder``, or ``None``."""
    for name, spec in components("pairs").items():
        if spec.encoder == encoder and spec.decoder == decoder:
            return name, spec
    return None


def with_pair_defaults(
    encoder: str, decoder: str, encoder_options: Mapping[str, Any], decoder_options: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The options of a registered paper pair with ``encoder_options`` / ``decoder_options`` over them.

    Example:
        >>> with_pair_defaults("mscan-b", "ham", {}, {"dropout": 0.0})[1]  # doctest: +SKIP
        {'channels': 512, 'ham_channels': 512, 'md_r': 64, 'dropout': 0.0}
    """
    found = find_pair(encoder, decoder)
    if found is None:
        return dict(encoder_options), dict(decoder_options)
    pair = found[1]
    return {**pair.encoder_options, **encoder_options}, {**pair.decoder_options, **decoder_options}


def resolved_options(kind: Kind, name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Every option of component ``name`` with ``options`` applied: what the component will be built with."""
    spec: ComponentSpec = get_spec(kind, name)
    options_cls = spec.load_options()
    if options_cls is None:
        return dict(options)
    return to_jsonable_options(parse_options(options_cls, {**spec.load_defaults(), **options}, component=name))

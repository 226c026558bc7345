"""Typed, validated component options.

Every component keeps its options in a frozen dataclass whose defaults are the paper's base setting.
:func:`parse_options` builds that dataclass from keyword arguments and rejects unknown keys with the
list of valid ones, so a typo fails where it is made.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from segcore.errors import OptionsError

__all__ = ["parse_options", "option_names", "coerce_option", "unknown_options_message"]

T = TypeVar("T")


def option_names(options_cls: type) -> list[str]:
    """Return the field names of an options dataclass."""
    return [f.name for f in dataclasses.fields(options_cls)]


def unknown_options_message(component: str, unknown: list[str], valid: list[str]) -> str:
    """Say which keys are unknown, suggest close ones and list the valid ones."""
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, valid, n=1)
        hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return f"{component}: unknown option {', '.join(hints)}. Valid options: {', '.join(valid) or '(none)'}."


def parse_options(options_cls: type[T], options: Mapping[str, Any], component: str = "") -> T:
    """Build ``options_cls`` from ``options``, rejecting keys it does not have.

    Args:
        options_cls: a dataclass type whose defaults are the component's base setting.
        options: the keyword arguments given by the user.
        component: the component name, used in error messages.

    Raises:
        OptionsError: for an unknown key, naming the valid ones.

    Example:
        >>> @dataclasses.dataclass(frozen=True)
        ... class HeadOptions:
        ...     channels: int = 256
        >>> parse_options(HeadOptions, {"channels": 128}).channels
        128
    """
    valid = option_names(options_cls)
    unknown = [k for k in options if k not in valid]
    if unknown:
        raise OptionsError(unknown_options_message(component or options_cls.__name__, unknown, valid))
    return options_cls(**dict(options))


def _field_types(options_cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(options_cls)
    except Exception:  # noqa: BLE001 - unresolvable annotations: fall back to strings
        return {f.name: f.type for f in dataclasses.fields(options_cls)}


def coerce_option(options_cls: type | None, key: str, text: str, component: str = "") -> Any:
    """Turn the string ``text`` given on the command line into the type of option ``key``.

    Integers, floats, booleans (``true``/``false``), ``none`` and comma-separated tuples are understood;
    without an options class the value is parsed by its look.
    """
    if options_cls is not None:
        valid = option_names(options_cls)
        if key not in valid:
            raise OptionsError(unknown_options_message(component or options_cls.__name__, [key], valid))
        hint = _field_types(options_cls).get(key)
    else:
        hint = None
    return _coerce(text, hint)


def _coerce(text: str, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        others = [a for a in args if a is not type(None)]
        return _coerce(text, others[0] if len(others) == 1 else None)
    if origin in (tuple, list) or hint in (tuple, list):
        item = args[0] if args else None
        parts = [p for p in text.split(",") if p.strip()]
        values = [_coerce(p.strip(), item) for p in parts]
        return tuple(values) if (origin or hint) is tuple else values
    if hint is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise OptionsError(f"expected true or false, got {text!r}")
    if hint is int:
        return int(text)
    if hint is float:
        return float(text)
    if hint is str:
        return text
    # No usable annotation: infer from the text.
    if "," in text:
        return tuple(_coerce(p.strip(), None) for p in text.split(",") if p.strip())
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if text.lower() in ("none", "null"):
        return None
    return text

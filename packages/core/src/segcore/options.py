"""Typed, validated component options.

Every component keeps its options in a frozen dataclass whose defaults are the paper's base setting.
:func:`parse_options` builds that dataclass from keyword arguments and rejects unknown keys with the
list of valid ones, so a typo fails where it is made.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from segcore.errors import OptionsError

__all__ = ["parse_options", "option_names", "coerce_option", "unknown_options_message", "to_jsonable_options"]

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
    """Build ``options_cls`` from ``options``, rejecting keys it does not have and values of the wrong kind.

    Values are converted where JSON loses the type: lists become tuples for ``tuple`` fields, mappings become
    nested dataclasses, ints become floats; ``Literal`` fields accept only their listed values.

    Args:
        options_cls: a dataclass type whose defaults are the component's base setting.
        options: the keyword arguments given by the user (or read from JSON).
        component: the component name, used in error messages.

    Raises:
        OptionsError: for an unknown key (naming the valid ones) or a value that does not fit its field.

    Example:
        >>> @dataclasses.dataclass(frozen=True)
        ... class HeadOptions:
        ...     channels: int = 256
        >>> parse_options(HeadOptions, {"channels": 128}).channels
        128
    """
    if isinstance(options, options_cls):
        return options
    if not isinstance(options, Mapping):
        raise OptionsError(f"{component or options_cls.__name__}: expected a mapping of options, got {options!r}")
    where = component or options_cls.__name__
    valid = option_names(options_cls)
    unknown = [k for k in options if k not in valid]
    if unknown:
        raise OptionsError(unknown_options_message(where, unknown, valid))
    hints = _field_types(options_cls)
    kwargs = {key: _convert(value, hints.get(key), f"{where}.{key}") for key, value in options.items()}
    try:
        return options_cls(**kwargs)
    except (TypeError, ValueError) as err:
        if isinstance(err, OptionsError):
            raise
        raise OptionsError(f"{where}: {err}") from err


def _convert(value: Any, hint: Any, where: str) -> Any:
    """Convert a (JSON) value to the annotation ``hint``; raise :class:`OptionsError` when it cannot fit."""
    if hint is None or hint is Any or isinstance(hint, str):
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise OptionsError(f"{where}: None is not allowed")
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, where)
            except OptionsError as err:
                errors.append(str(err))
        raise OptionsError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of {hint}")
    if origin is typing.Literal:
        if value not in args:
            raise OptionsError(f"{where}: {value!r} is not one of {', '.join(repr(a) for a in args)}")
        return value
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return parse_options(hint, value, where) if value is not None else value
    if origin is tuple or hint is tuple:
        if not isinstance(value, (list, tuple)):
            raise OptionsError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], where) for v in value)
        if args and len(args) != len(value):
            raise OptionsError(f"{where}: expected {len(args)} values, got {len(value)} ({value!r})")
        return tuple(_convert(v, a, where) for v, a in zip(value, args)) if args else tuple(value)
    if origin in (dict, Mapping) or hint in (dict, Mapping) or origin is collections.abc.Mapping:
        if not isinstance(value, Mapping):
            raise OptionsError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if origin is list or hint is list:
        if not isinstance(value, (list, tuple)):
            raise OptionsError(f"{where}: expected a list, got {value!r}")
        return [_convert(v, args[0], where) for v in value] if args else list(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise OptionsError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise OptionsError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise OptionsError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise OptionsError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def to_jsonable_options(options: Any) -> dict[str, Any]:
    """An options dataclass as a JSON-ready dict (tuples become lists, nested dataclasses dicts)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(options)


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
        # Names keep their empty entries (``classes=a,,b``), for the name check to refuse them by position.
        parts = text.split(",") if item is str else [p for p in text.split(",") if p.strip()]
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

"""Typed, validated component options.

Every component keeps its options in a frozen dataclass whose defaults are the paper's base setting.
:func:`parse_options` builds that dataclass from keyword arguments and rejects unknown keys with the
list of valid ones, so a typo fails where it is made.

Every value is also checked against a bound, so that a tampered ``config.json`` cannot ask for a terabyte: an
integer lies in ``[-INT_LIMIT, INT_LIMIT]`` (channels, dims, depths, heads, indices) and a float is finite, unless
the field declares its own range as metadata (``field(default=..., metadata=bounds(low, high))``; :data:`SIZE` for
image sizes, :data:`FRACTION` for probabilities and rates, :data:`DEPTH` for blocks per stage, :data:`COUNT` and
:data:`SEED`). A tuple's or list's bound applies to each item.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from segcore.errors import OptionsError

__all__ = [
    "Range",
    "parse_options",
    "check_fields",
    "bounds",
    "option_names",
    "coerce_option",
    "unknown_options_message",
    "to_jsonable_options",
    "INT_LIMIT",
    "SIZE_LIMIT",
    "CLASSES_LIMIT",
    "SIZE",
    "FRACTION",
    "DEPTH",
    "COUNT",
    "SEED",
]

T = TypeVar("T")

# The largest integer option (channels, dims, depths, heads, ...) unless its field declares a range.
INT_LIMIT = 65_536
# The largest image, crop or window side in pixels.
SIZE_LIMIT = 16_384
# The most classes a model may have (labels are stored as 16-bit PNGs, and 65535 is left for ignore).
CLASSES_LIMIT = 65_535
BOUNDS_KEY = "segcore_bounds"


@dataclass(frozen=True)
class Range:
    """The valid values of a number: ``kind`` between ``low`` and ``high``.

    ``kind`` is ``int``, ``float`` or ``None`` for either (floats must be finite); bounds are inclusive unless
    ``low_open`` / ``high_open``, and ``None`` is no bound.

    The one range type: options declare theirs with :func:`bounds`, settings with ``setting(range=...)``.
    """

    kind: type | None = int
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def describe(self) -> str:
        """The range in words, e.g. ``an integer >= 1`` or ``a number in (0, 1)``."""
        what = "an integer" if self.kind is int else "a number"
        low, high = (None if v is None else self._text(v) for v in (self.low, self.high))
        if low is not None and high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{what} in {left}{low}, {high}{right}"
        if low is not None:
            return f"{what} {'>' if self.low_open else '>='} {low}"
        if high is not None:
            return f"{what} {'<' if self.high_open else '<='} {high}"
        return what

    def _text(self, value: float) -> str:
        return f"{int(value)}" if self.kind is int else f"{value:g}"

    def interval(self) -> str:
        """The range as an interval, e.g. ``[0.0, 1.0]`` or ``(0, inf]``."""
        low = "-inf" if self.low is None else self.low
        high = "inf" if self.high is None else self.high
        return f"{'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"

    def contains(self, value: float) -> bool:
        """Whether ``value`` is finite and inside the range."""
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.high_open and value == self.high)))


def bounds(low: float | None = None, high: float | None = None, *, open_low: bool = False) -> dict[str, Any]:
    """Field metadata giving the range ``[low, high]`` of an option (of each item, for a tuple or list).

    Args:
        low: the smallest value; ``None``: no lower bound.
        high: the largest value; ``None``: no upper bound.
        open_low: exclude ``low`` itself (``(low, high]``), e.g. for a std that must be positive.

    Example:
        >>> @dataclasses.dataclass(frozen=True)
        ... class HeadOptions:
        ...     dropout: float = dataclasses.field(default=0.1, metadata=bounds(0.0, 1.0))
        >>> parse_options(HeadOptions, {"dropout": 2.0})
        Traceback (most recent call last):
        ...
        segcore.errors.OptionsError: HeadOptions.dropout: 2.0 is out of range [0.0, 1.0]; give a value in that range
    """
    return {BOUNDS_KEY: Range(None, low, high, low_open=open_low)}


SIZE = bounds(1, SIZE_LIMIT)  # an image, crop or window side in pixels
FRACTION = bounds(0.0, 1.0)  # a probability, a dropout or drop-path rate
DEPTH = bounds(0, 1_024)  # blocks or layers of a stage: each is Python objects, even on the meta device
COUNT = bounds(0, 2**31 - 1)  # a number of samples or iterations
SEED = bounds(0, 2**64 - 1)  # a random seed (torch takes up to 2**64 - 1)


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
    hints, limits = _field_types(options_cls), _field_limits(options_cls)
    kwargs = {key: _convert(value, hints.get(key), f"{where}.{key}", limits.get(key)) for key, value in options.items()}
    try:
        return options_cls(**kwargs)
    except (TypeError, ValueError) as err:
        if isinstance(err, OptionsError):
            raise
        raise OptionsError(f"{where}: {err}") from err


def check_fields(instance: Any, where: str = "") -> None:
    """Check and convert every field of the dataclass ``instance`` in place, as :func:`parse_options` does.

    For dataclasses that are also built directly (not only from JSON): a ``__post_init__`` calls it so that a
    value of the wrong type or out of range fails at construction, naming the field (``where.field``).

    Raises:
        OptionsError: for a value that does not fit its field's type or range.
    """
    hints, limits = _field_types(type(instance)), _field_limits(type(instance))
    for f in dataclasses.fields(instance):
        name = f"{where}.{f.name}" if where else f.name
        value = _convert(getattr(instance, f.name), hints.get(f.name), name, limits.get(f.name))
        object.__setattr__(instance, f.name, value)  # frozen dataclasses too


def _field_limits(options_cls: type) -> dict[str, Range]:
    return {f.name: f.metadata[BOUNDS_KEY] for f in dataclasses.fields(options_cls) if BOUNDS_KEY in f.metadata}


def _check_range(value: float, limits: Range | None, where: str) -> None:
    """Raise unless ``value`` lies in ``limits`` (default: ``|value| <= INT_LIMIT`` for integers, finite floats)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise OptionsError(f"{where}: {value} is not a finite number; give a number")
    default = limits is None
    if limits is None:
        limits = Range(None, -INT_LIMIT, INT_LIMIT) if isinstance(value, int) else Range(None)
    if not limits.contains(value):
        why = " (segcore's bound on an integer option: channels, dims, depths, heads, indices)" if default else ""
        raise OptionsError(f"{where}: {value} is out of range {limits.interval()}{why}; give a value in that range")


def _convert(value: Any, hint: Any, where: str, limits: Range | None = None) -> Any:
    """Convert a (JSON) value to ``hint`` within ``limits`` (:func:`bounds`); raise :class:`OptionsError` if not."""
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
                return _convert(value, arg, where, limits)
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
            return tuple(_convert(v, args[0], where, limits) for v in value)
        if args and len(args) != len(value):
            raise OptionsError(f"{where}: expected {len(args)} values, got {len(value)} ({value!r})")
        return tuple(_convert(v, a, where, limits) for v, a in zip(value, args)) if args else tuple(value)
    if origin in (dict, Mapping) or hint in (dict, Mapping) or origin is collections.abc.Mapping:
        if not isinstance(value, Mapping):
            raise OptionsError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if origin is list or hint is list:
        if not isinstance(value, (list, tuple)):
            raise OptionsError(f"{where}: expected a list, got {value!r}")
        return [_convert(v, args[0], where, limits) for v in value] if args else list(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise OptionsError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise OptionsError(f"{where}: expected an integer, got {value!r}")
        _check_range(value, limits, where)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise OptionsError(f"{where}: expected a number, got {value!r}")
        _check_range(float(value), limits, where)
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

"""One declaration per setting: a dataclass field whose metadata holds its flag, help, range and resume rule.

A settings dataclass (:class:`~segcore.train.schema.TrainSettings`) declares each field with :func:`setting`. Every
other place derives from that declaration: the command line's parser (``segcore_cli.flags``), the range check of
:func:`check_ranges` (run in ``__post_init__``), which flags ``--resume`` may change (:func:`resume_rule`), the
dry-run view and ``settings.json``. Adding a flag is one :func:`setting` line plus the code that uses it. Torch-free.

Example:
    >>> @dataclass
    ... class Settings:
    ...     iters: int | None = setting(help="training iterations", range=Range(int, low=1), on_resume="may-change")
    >>> [d.flag for d in declared(Settings)]
    ['--iters']
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from segcore.config.options import BOUNDS_KEY, Range

__all__ = [
    "Range",
    "Setting",
    "Declared",
    "setting",
    "declared",
    "check_ranges",
    "resume_rule",
    "fallbacks",
    "plain_type",
]

OnResume = Literal["agree", "may-change", "invocation"]


@dataclass(frozen=True)
class Setting:
    """What a field declares besides its name, type and default.

    Attributes:
        help: the flag's help text (``--help``), also the field's documentation.
        flag: the command-line flag; ``None``: ``--<name with dashes>``.
        range: the valid values of a number.
        on_resume: ``agree`` (a resumed run keeps the run's value; a flag that differs is an error), ``may-change``
            (``--resume`` may give a new value) or ``invocation`` (about this command, never saved or compared).
        fallback: the value when neither the flag nor a recipe sets it (``None``: a recipe always does, or none).
        metavar: the value's name in ``--help``.
        parse: how the command line reads the value when the type does not say: ``path`` (non-empty text),
            ``name`` (one path component), ``pairs`` (repeated ``K=V``), ``optional-value`` (``--flag`` alone or
            ``--flag VALUE``), ``negate`` (a ``--no-<name>`` switch for a field that defaults to true),
            ``positional`` (the command's operands, one or more).
        checks: more rules as ``(test, message)``: ``test(value)`` false raises the message (for a value given).
        required: the command line must give the flag.
    """

    help: str
    flag: str | None = None
    range: Range | None = None
    on_resume: OnResume = "agree"
    fallback: Any = None
    metavar: str | None = None
    parse: str | None = None
    checks: tuple[tuple[Callable[[Any], bool], str], ...] = ()
    required: bool = False


@dataclass(frozen=True)
class Declared:
    """One declared field of a settings class: its name, its plain type, its default and its :class:`Setting`."""

    name: str
    type: Any
    default: Any
    setting: Setting

    @property
    def flag(self) -> str:
        """The command-line flag (``--no-<name>`` for a ``negate`` switch)."""
        prefix = "--no-" if self.setting.parse == "negate" else "--"
        return self.setting.flag or prefix + self.name.replace("_", "-")

    def shown(self, value: Any) -> Any:
        """``value`` as the flag says it (a ``negate`` switch is on when the field is false)."""
        return not value if self.setting.parse == "negate" else value

    @property
    def choices(self) -> tuple[Any, ...] | None:
        """The values of a ``Literal`` type, else ``None``."""
        return typing.get_args(self.type) if typing.get_origin(self.type) is Literal else None


def setting(default: Any = None, **declaration: Any) -> Any:
    """A dataclass field declared once: ``default`` plus the :class:`Setting` keywords (``help=...`` first)."""
    declared_setting = Setting(**declaration)
    metadata: dict[str, Any] = {"setting": declared_setting}
    if declared_setting.range is not None:  # the type check of check_fields holds values to the same range
        metadata[BOUNDS_KEY] = declared_setting.range
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def plain_type(hint: Any) -> Any:
    """``hint`` without ``| None``: ``int | None`` -> ``int``; ``bool | str | None`` stays a union of the rest."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        rest = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]  # noqa: UP007 - built from a tuple
    return hint


@functools.cache
def declared(cls: type) -> tuple[Declared, ...]:
    """The declared fields of settings dataclass ``cls``, in order (fields without a :func:`setting` are left out).

    Read once per class (every ``__post_init__`` checks against it).
    """
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if "setting" not in f.metadata:
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        out.append(Declared(f.name, plain_type(hints[f.name]), default, f.metadata["setting"]))
    return tuple(out)


def not_a_single_name(name: Any) -> str | None:
    """What keeps ``name`` from being one path component (a tracker's project or run name), or ``None``."""
    if not isinstance(name, str) or not name.strip():
        return f"must not be empty: got {name!r}"
    if "/" in name or "\\" in name or name in (".", ".."):
        return f"must be a single name, not a path: got {name!r} (no /, \\, . or ..)"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return f"must be a single name without control characters, got {name!r}"
    return None


def _numbers(value: Any) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def check_ranges(settings: Any, error: type[Exception]) -> None:
    """Raise ``error`` naming the flag and its valid values for the first given value out of its declaration.

    A range applies to each item of a tuple or list; a value of the wrong type is left to
    :func:`segcore.config.options.check_fields`, which names the type.
    """
    for d in declared(type(settings)):
        value = getattr(settings, d.name)
        if value is None:
            continue
        r, numbers = d.setting.range, _numbers(value)
        typed = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers)
        if r is not None and typed and not all(r.contains(v) for v in numbers):  # a wrong type: check_fields says
            raise error(f"{d.flag} must be {r.describe()}, got {value}")
        if d.choices is not None and value not in d.choices:
            raise error(f"{d.flag} must be one of {', '.join(map(str, d.choices))}, not {value!r}")
        for test, message in d.setting.checks:
            if not test(value):
                raise error(f"{d.flag} {message}, got {value!r}")


def resume_rule(cls: type, rule: OnResume) -> tuple[str, ...]:
    """The names of the fields of ``cls`` whose ``on_resume`` is ``rule``."""
    return tuple(d.name for d in declared(cls) if d.setting.on_resume == rule)


def fallbacks(cls: type) -> Mapping[str, Any]:
    """``name -> fallback`` for the fields of ``cls`` that declare one."""
    return {d.name: d.setting.fallback for d in declared(cls) if d.setting.fallback is not None}

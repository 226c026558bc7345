"""Command-line flags derived from a settings dataclass's declarations (:mod:`segcore.config.fields`).

:func:`add_settings` adds one argparse argument per declared field, its ``type=`` built from the field's type and
range (so a bad value stops at parsing, naming the flag); :func:`settings_kwargs` reads them back; and
:func:`resume_help` lists the flags ``--resume`` may change. Nothing about a flag is written here. Torch-free.
"""

from __future__ import annotations

import argparse
import typing
from collections.abc import Container
from typing import Any

from segcore.config.fields import Declared, declared, resume_rule

from segcore_cli._common import PRECISION_HELP, NameList, NonEmpty, Number, PositiveList, SingleName, SizePair

__all__ = ["add_settings", "settings_kwargs", "resume_help", "argument_of", "PRECISION_HELP"]


def argument_of(d: Declared) -> tuple[list[str], dict[str, Any]]:
    """``(flags, add_argument keywords)`` for declared field ``d``."""
    kw: dict[str, Any] = {"dest": d.name, "help": d.setting.help + _default_text(d)}
    parse, kind = d.setting.parse, d.type
    if d.setting.metavar:
        kw["metavar"] = d.setting.metavar
    if d.setting.required:
        kw["required"] = True
    if parse == "positional":
        return [d.name], {"help": d.setting.help, "nargs": "+", "metavar": d.setting.metavar or d.name.upper()}
    if parse == "negate":
        return [d.flag], {**kw, "action": "store_false", "default": True}
    if kind is bool:
        return [d.flag], {**kw, "action": "store_true", "default": False}
    if parse == "pairs":
        return [d.flag], {**kw, "action": "append", "default": []}
    if parse == "optional-value":
        return [d.flag], {**kw, "nargs": "?", "const": True, "default": None}
    if d.choices is not None:
        kw["choices"] = d.choices
    else:
        kw["type"] = _value_type(d)
    return [d.flag], {**kw, "default": d.default}


def _default_text(d: Declared) -> str:
    """`` (default X)`` from the declared fallback, or from a default that is a value (not off or unset)."""
    shown = d.setting.fallback if d.setting.fallback is not None else d.default
    hidden = shown is None or isinstance(shown, bool) or shown == {} or shown == []
    return "" if hidden else f" (default {shown})"


def _value_type(d: Declared) -> Any:
    """The ``type=`` of a flag taking one value."""
    r, origin = d.setting.range, typing.get_origin(d.type)
    if origin is tuple and typing.get_args(d.type)[-1:] == (Ellipsis,):
        return PositiveList()
    if origin is tuple:
        return SizePair(high=int(r.high) if r is not None and r.high is not None else None)
    if origin is list:
        return NameList()
    if r is not None:
        return Number(r.kind, r.low, r.high, r.low_open, r.high_open)
    if d.type in (int, float):
        return Number(d.type)
    if d.setting.parse == "name":
        return SingleName()
    return NonEmpty() if d.setting.parse == "path" else str


def add_settings(parser: argparse.ArgumentParser, cls: type, skip: Container[str] = ()) -> None:
    """Add an argument for every declared field of ``cls`` not named in ``skip``."""
    for d in declared(cls):
        if d.name not in skip:
            flags, kw = argument_of(d)
            parser.add_argument(*flags, **kw)


def settings_kwargs(cls: type, args: argparse.Namespace, skip: Container[str] = ()) -> dict[str, Any]:
    """``field -> parsed value`` for every declared field of ``cls`` (``K=V`` lists stay unparsed: see ``skip``)."""
    return {d.name: getattr(args, d.name) for d in declared(cls) if d.name not in skip}


def resume_help(cls: type) -> str:
    """The flags of ``cls`` that ``--resume`` may change, as they appear on the command line."""
    names = set(resume_rule(cls, "may-change"))
    return ", ".join(d.flag for d in declared(cls) if d.name in names)

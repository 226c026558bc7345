"""Helpers shared by sub-commands (torch-free at import)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any


def add_component_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--encoder-opt`` / ``--decoder-opt`` (repeatable ``key=value``)."""
    parser.add_argument(
        "--encoder-opt",
        action="append",
        default=[],
        metavar="K=V",
        help="encoder option, repeatable (e.g. drop_path_rate=0.1, embed_dims=32,64,160,256)",
    )
    parser.add_argument(
        "--decoder-opt",
        action="append",
        default=[],
        metavar="K=V",
        help="decoder option, repeatable (e.g. channels=128)",
    )


def add_precision_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--precision fp32|bf16`` (what :func:`segcore.inference.precision` takes)."""
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="bf16: run the model under bfloat16 autocast, faster where the hardware has bf16 matrix units (recent "
        "GPUs, CPUs with AMX); scores differ from fp32 by rounding (default fp32)",
    )


def parse_component_options(kind: str, name: str, pairs: Sequence[str]) -> dict[str, Any]:
    """Turn ``["k=v", ...]`` into typed options of component ``name``, rejecting unknown keys."""
    from segcore.errors import OptionsError
    from segcore.options import coerce_option
    from segcore.registry import get_spec

    options_cls = get_spec(kind, name).load_options()
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise OptionsError(f"--{kind[:-1]}-opt expects key=value, got {pair!r}")
        out[key.strip()] = coerce_option(options_cls, key.strip(), value.strip(), component=name)
    return out


def print_json(data: Any) -> None:
    """Print one JSON document."""
    print(json.dumps(data, indent=2, default=str))

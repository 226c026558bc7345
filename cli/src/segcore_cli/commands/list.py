"""``segcore list``: every installed component with its plugin and version."""

from __future__ import annotations

import argparse
import json

KINDS = ("encoders", "decoders", "losses", "datasets", "checkpoints", "converters", "recipes")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``list`` parser."""
    p = sub.add_parser(
        "list",
        help="list installed encoders, decoders, losses, datasets, checkpoints, ...",
        description="List every installed component with the plugin that provides it.",
    )
    p.add_argument("--kind", choices=KINDS, help="only this kind")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print the components."""
    from segcore.registry import list_components

    table = list_components(args.kind)
    if args.json:
        print(json.dumps({k: [vars(r) for r in rows] for k, rows in table.items()}, indent=2))
        return 0
    for kind, rows in table.items():
        print(f"{kind} ({len(rows)})")
        width = max((len(r.name) for r in rows), default=0)
        pwidth = max((len(f"{r.plugin} {r.version}") for r in rows), default=0)
        for r in rows:
            print(f"  {r.name:<{width}}  {f'{r.plugin} {r.version}':<{pwidth}}  {r.description}")
        print()
    return 0

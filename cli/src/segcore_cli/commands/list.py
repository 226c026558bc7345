"""``segcore list``: every installed component with its plugin and version."""

from __future__ import annotations

import argparse
import json

KINDS = ("encoders", "decoders", "losses", "datasets", "checkpoints", "converters", "recipes", "pairs")

# What --json adds per kind beyond name, plugin, version and description (the spec's typed settings).
_DETAILS = {
    "checkpoints": ("encoder", "decoder", "num_classes", "dataset", "metric", "eval_protocol", "repo_id"),
    "pairs": ("encoder", "decoder", "encoder_options", "decoder_options", "source"),
    "recipes": ("dataset", "iters", "batch_size", "crop_size", "eval", "source"),
}


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
    from segcore.config.options import to_jsonable_options
    from segcore.plugins.registry import components, list_components

    table = list_components(args.kind)
    if args.json:
        out = {}
        for kind, rows in table.items():
            specs = components(kind)
            out[kind] = []
            for r in rows:
                spec = specs[r.name]
                row = {**vars(r), **{k: to_jsonable_options(getattr(spec, k)) for k in _DETAILS.get(kind, ())}}
                if kind == "checkpoints":
                    row["checkpoint_kind"] = spec.kind  # "model" or "encoder"; "kind" is the registry kind
                out[kind].append(row)
        print(json.dumps(out, indent=2))
        return 0
    for kind, rows in table.items():
        print(f"{kind} ({len(rows)})")
        width = max((len(r.name) for r in rows), default=0)
        pwidth = max((len(f"{r.plugin} {r.version}") for r in rows), default=0)
        for r in rows:
            print(f"  {r.name:<{width}}  {f'{r.plugin} {r.version}':<{pwidth}}  {r.description}")
        print()
    return 0

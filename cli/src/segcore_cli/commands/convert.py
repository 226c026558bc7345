"""``segcore convert``: an official checkpoint -> a ``from_pretrained`` folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from segcore_cli._common import NUM_CLASSES, add_component_options, parse_component_options, print_json


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``convert`` parser."""
    p = sub.add_parser(
        "convert",
        help="convert an official checkpoint into a segcore model folder",
        description="Convert an official checkpoint (read safely: safetensors or torch.load(weights_only=True)) "
        "into a folder with config.json + model.safetensors + a model card. Name the model with --encoder/"
        "--decoder/--num-classes, or give the official config's model part as JSON with --official-config. "
        "With --format transformers, CHECKPOINT is a transformers folder or Hub repo id (SegFormer, UperNet + "
        "ConvNeXt): the architecture, class names and normalisation come from its config.json and "
        "preprocessor_config.json, and transformers need not be installed.",
    )
    p.add_argument(
        "checkpoint",
        type=Path,
        help="the official file (.pth, .bin or .safetensors); with --format transformers a folder or Hub repo id",
    )
    p.add_argument("--format", default="mmseg", help="official format: mmseg (default), transformers, segcore")
    p.add_argument("--revision", help="Hub revision (--format transformers with a repo id)")
    p.add_argument("--encoder", help="encoder name, e.g. mscan-t")
    p.add_argument("--decoder", help="decoder name, e.g. ham")
    p.add_argument("--num-classes", type=NUM_CLASSES, help="classes of the head")
    p.add_argument(
        "--official-config",
        type=Path,
        metavar="CFG.json",
        help="JSON with the official config's model part (backbone and decode_head dicts)",
    )
    add_component_options(p)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Convert and save."""
    import segcore

    if args.format == "transformers":
        model = _from_transformers(args)
        return _finish(args, model)
    official = json.loads(args.official_config.read_text()) if args.official_config else None
    if official is not None and "config" in official and "backbone" not in official:
        official = official["config"]  # a fixture case.json
    enc_opts = parse_component_options("encoders", args.encoder, args.encoder_opt) if args.encoder else {}
    dec_opts = parse_component_options("decoders", args.decoder, args.decoder_opt) if args.decoder else {}
    model = segcore.convert_checkpoint(
        args.checkpoint,
        format=args.format,
        encoder=args.encoder,
        decoder=args.decoder,
        num_classes=args.num_classes,
        official_config=official,
        encoder_options=enc_opts,
        decoder_options=dec_opts,
    )
    return _finish(args, model)


def _from_transformers(args: argparse.Namespace) -> Any:
    import segcore
    from segcore.weights.pretrained import CONFIG_NAME

    if args.encoder or args.decoder or args.num_classes or args.official_config:
        raise segcore.SegcoreError(
            "--format transformers reads the architecture from the repo's config.json: drop --encoder, --decoder, "
            "--num-classes and --official-config"
        )
    source = str(args.checkpoint)
    local = Path(source).expanduser()
    if local.is_dir():
        from segcore.weights.transformers_format import is_transformers_config

        config = local / CONFIG_NAME
        if config.is_file() and not is_transformers_config(json.loads(config.read_text() or "{}")):
            raise segcore.SegcoreError(f"{config} is not a transformers config (it has no model_type)")
    return segcore.SegModel.from_pretrained(source, revision=args.revision)


def _finish(args: argparse.Namespace, model: Any) -> int:
    model.save_pretrained(args.out)
    summary = {
        "out": str(args.out),
        "encoder": model.config.encoder,
        "decoder": model.config.decoder,
        "num_classes": model.config.num_classes,
        "params": sum(p.numel() for p in model.parameters()),
    }
    if args.json:
        print_json(summary)
    else:
        print(
            f"converted {args.checkpoint} -> {args.out} ({summary['encoder']} + {summary['decoder']}, "
            f"{summary['num_classes']} classes, {summary['params'] / 1e6:.3f} M parameters)"
        )
    return 0

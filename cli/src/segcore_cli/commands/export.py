"""``segcore export``: a model -> an ONNX file with dynamic batch/height/width, verified with onnxruntime."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segcore_cli._common import (
    NUM_CLASSES,
    POSITIVE_INT,
    TOLERANCE,
    Number,
    add_component_options,
    parse_component_options,
    print_json,
)

if TYPE_CHECKING:
    from segcore import SegModel


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` parser."""
    p = sub.add_parser(
        "export",
        help="export a model to ONNX and verify it against PyTorch",
        description="Export SegModel.forward (normalised float images [B, 3, H, W] -> logits [B, K, H, W], padding "
        "included) to ONNX with dynamic batch, height and width, then run onnxruntime at the example size and at "
        "batch 2 with sides that are multiples neither of the size divisor nor of the largest map stride, and "
        "compare with PyTorch. Needs onnx and onnxruntime (pip install 'segcore[onnx]').",
    )
    p.add_argument(
        "model", nargs="?", metavar="MODEL", help="a folder, Hub repo or checkpoint name (or use --encoder/--decoder)"
    )
    p.add_argument("out", type=Path, metavar="OUT.onnx", help="the ONNX file to write")
    p.add_argument("--format", choices=("onnx",), default="onnx", help="export format (default: onnx)")
    p.add_argument("--encoder", help="instead of MODEL: build a fresh model with this encoder")
    p.add_argument("--decoder", help="instead of MODEL: build a fresh model with this decoder")
    p.add_argument("--num-classes", type=NUM_CLASSES, default=150, help="classes of a fresh model (default 150)")
    add_component_options(p)
    p.add_argument(
        "--size",
        type=POSITIVE_INT,
        nargs="+",
        metavar="S",
        help="example size: S or H W (default: 64, or 2 x size divisor)",
    )
    p.add_argument("--batch-size", type=POSITIVE_INT, default=1, help="batch of the traced example (default 1)")
    p.add_argument("--opset", type=Number(int, low=7), help="ONNX opset (default 17)")
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime comparison")
    p.add_argument("--atol", type=TOLERANCE, default=1e-4, help="absolute tolerance of the comparison (default 1e-4)")
    p.add_argument("--rtol", type=TOLERANCE, default=1e-4, help="tolerance relative to max |logit| (default 1e-4)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(run=run)


def _with_options(model: SegModel, encoder_options: dict[str, Any], decoder_options: dict[str, Any]) -> SegModel:
    """Rebuild ``model`` with some options changed and its weights loaded (options that change no parameter)."""
    import dataclasses

    import segcore

    config = dataclasses.replace(
        model.config,
        encoder_options={**model.config.encoder_options, **encoder_options},
        decoder_options={**model.config.decoder_options, **decoder_options},
    )
    rebuilt = segcore.SegModel(config, check=False)
    try:
        rebuilt.load_state_dict(model.state_dict(), strict=True)
    except RuntimeError as err:
        changed = ", ".join(f"{k}={v!r}" for k, v in {**encoder_options, **decoder_options}.items())
        raise segcore.SegcoreError(
            f"options {changed} change the model's parameters, so its weights no longer fit; with MODEL, give only "
            "options that leave the weights as they are (e.g. nmf_seed)"
        ) from err
    return rebuilt


def _load(args: argparse.Namespace) -> SegModel:
    import segcore

    if args.model and (args.encoder or args.decoder):
        raise segcore.SegcoreError("give MODEL or --encoder/--decoder, not both")
    if args.model:
        model = segcore.SegModel.from_pretrained(args.model)
        enc = parse_component_options("encoders", model.config.encoder, args.encoder_opt)
        dec = parse_component_options("decoders", model.config.decoder, args.decoder_opt)
        return _with_options(model, enc, dec) if enc or dec else model
    if args.encoder and args.decoder:
        return segcore.build_model(
            args.encoder,
            args.decoder,
            args.num_classes,
            encoder_options=parse_component_options("encoders", args.encoder, args.encoder_opt),
            decoder_options=parse_component_options("decoders", args.decoder, args.decoder_opt),
        )
    raise segcore.SegcoreError("give MODEL (a folder, Hub repo or checkpoint name), or --encoder and --decoder")


def run(args: argparse.Namespace) -> int:
    """Load or build, export, verify, print."""
    import segcore
    from segcore.tools.export import DEFAULT_OPSET, export_onnx

    if args.size is not None and len(args.size) not in (1, 2):
        raise segcore.SegcoreError(f"--size takes S or H W, got {len(args.size)} numbers")
    if args.out.suffix != ".onnx":
        raise segcore.SegcoreError(f"OUT must end in .onnx, got {str(args.out)!r}")
    model = _load(args)
    report = export_onnx(
        model,
        args.out,
        example_size=None if args.size is None else (args.size[0], args.size[-1]),
        batch_size=args.batch_size,
        opset=args.opset or DEFAULT_OPSET,
        verify=not args.no_verify,
        atol=args.atol,
        rtol=args.rtol,
    )
    cfg = model.config
    if args.json:
        print_json(report.to_dict() | {"encoder": cfg.encoder, "decoder": cfg.decoder, "num_classes": cfg.num_classes})
        return 0
    print(
        f"exported {cfg.encoder} + {cfg.decoder} ({cfg.num_classes} classes) -> {report.path} "
        f"({report.size_mb:.1f} MB, opset {report.opset}, traced at {'x'.join(map(str, report.example_shape))})"
    )
    print(
        f"  input  {report.input_name!r} float32 [batch, 3, height, width]: (RGB 0-255 - mean) / std, "
        f"mean {list(cfg.mean)}, std {list(cfg.std)}"
    )
    print(f"  output {report.output_name!r} float32 [batch, {cfg.num_classes}, height, width]: class logits")
    if report.checks:
        print(f"verified with onnxruntime {report.onnxruntime} against PyTorch (eval mode, random inputs):")
        for check in report.checks:
            print(f"  {check.describe()}")
    else:
        print("not verified (--no-verify)")
    return 0

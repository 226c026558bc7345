"""``segcore benchmark``: parameters, multiply-adds, latency, throughput and peak memory of a model."""

from __future__ import annotations

import argparse

from segcore_cli._common import (
    COUNT,
    NUM_CLASSES,
    POSITIVE_INT,
    add_component_options,
    add_precision_option,
    parse_component_options,
    print_json,
)

# Kept in step with segcore.tools.benchmark.MACS_CONVENTIONS (not imported: building the parser must not import torch).
MACS_CONVENTIONS = ("segcore", "torchprofile")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``benchmark`` parser."""
    p = sub.add_parser(
        "benchmark",
        help="count parameters and multiply-adds, time inference or training steps",
        description="Measure a model built from --encoder/--decoder (or loaded with --model). Multiply-adds count "
        "conv, linear, matmul/bmm/einsum and attention, one multiply-add = 1 (the papers' 'GFLOPs').",
    )
    p.add_argument("--encoder", help="encoder name")
    p.add_argument("--decoder", help="decoder name")
    p.add_argument("--model", help="instead of --encoder/--decoder: a folder, Hub repo or checkpoint name")
    p.add_argument("--num-classes", type=NUM_CLASSES, default=150, help="classes (default 150, as ADE20K)")
    add_component_options(p)
    p.add_argument(
        "--size", type=POSITIVE_INT, nargs="+", default=[512], metavar="S", help="input size: S or H W (default 512)"
    )
    p.add_argument("--batch-size", type=POSITIVE_INT, default=1)
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    add_precision_option(p)
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    p.add_argument("--compile", action="store_true", help="torch.compile the step")
    p.add_argument("--iters", type=COUNT, default=10, help="timed iterations (0: count params and MACs only)")
    p.add_argument("--warmup", type=COUNT, default=3, help="untimed iterations first")
    p.add_argument("--threads", type=POSITIVE_INT, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--train", action="store_true", help="time a training step (forward, loss, backward, AdamW)")
    p.add_argument(
        "--macs",
        choices=MACS_CONVENTIONS,
        default="segcore",
        help="multiply-add convention: segcore (conv, linear, matmul, attention; default) or torchprofile "
        "(also element-wise products, affine norms, pooling and 4 per bilinear-upsampled value, as the SegNeXt "
        "paper counted)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Build, measure, print."""
    import segcore
    import torch
    from segcore.tools.benchmark import benchmark_model

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model:
        model = segcore.SegModel.from_pretrained(args.model)
    elif args.encoder and args.decoder:
        model = segcore.build_model(
            args.encoder,
            args.decoder,
            args.num_classes,
            encoder_options=parse_component_options("encoders", args.encoder, args.encoder_opt),
            decoder_options=parse_component_options("decoders", args.decoder, args.decoder_opt),
        )
    else:
        raise segcore.SegcoreError("give --encoder and --decoder, or --model")
    size = (args.size[0], args.size[-1])
    result = benchmark_model(
        model,
        size,
        batch_size=args.batch_size,
        iters=args.iters,
        warmup=args.warmup,
        device=args.device,
        precision=args.precision,
        channels_last=args.channels_last,
        compile=args.compile,
        train=args.train,
        macs_convention=args.macs,
    )
    data = result.to_dict() | {
        "encoder": model.config.encoder,
        "decoder": model.config.decoder,
        "num_classes": model.config.num_classes,
    }
    if args.json:
        print_json(data)
        return 0
    print(f"{data['encoder']} + {data['decoder']} ({data['num_classes']} classes) at {size[0]}x{size[1]}")
    print(f"  params      {data['params']:,} ({data['params'] / 1e6:.3f} M)")
    print(f"  multiply-adds {data['gmacs']:.2f} G ({args.macs} convention)")
    if data["latency_ms"] is not None:
        mode = "train step" if args.train else "inference"
        print(
            f"  {mode} latency {data['latency_ms']:.1f} ms (median of {args.iters}), "
            f"throughput {data['throughput']:.2f} img/s, batch {args.batch_size}"
        )
        print(f"  peak memory {data['peak_memory_mb']:.0f} MB ({'CUDA allocated' if 'cuda' in args.device else 'RSS'})")
        print(
            f"  device {args.device}, {args.precision}, channels_last={args.channels_last}, compile={args.compile}, "
            f"torch {data['torch']}, threads {data['threads']}"
        )
    return 0

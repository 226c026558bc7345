"""CPU latency of SegNeXt-B (``mscan-b + ham``) against Hugging Face SegFormer-B2, measured in one run.

Both models are built from their configs with random weights (no network), 150 classes, and produce
logits at the input size (SegFormer's stride-4 logits are resized bilinearly, as ``SegModel.forward``
does for ours). Repetitions are interleaved (ours, theirs, ours, ...) so both see the same machine state;
the reported latency is the median (the minimum is printed too: on a shared machine it is the least
disturbed figure). ``mscan-b + ham`` is timed in its default channels-last memory format and, with the
same weights, in NCHW (``memory_format="contiguous"``) to show what the format buys. ``transformers`` is
needed for this script only; it is not a dependency of ``segcore-segnext``.

Usage (from the repository root, on an otherwise idle machine):

    .venv/bin/python packages/segnext/benchmarks/bench_vs_segformer.py --json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from collections.abc import Callable

import segcore
import torch
import torch.nn.functional as F  # noqa: N812
from segcore.tools.benchmark import build_segformer_b2, time_interleaved

# SegFormer-B2, the interleaved timing and the SegNeXt-B head settings (spec §3.1) live in the repository's
# scripts/benchmarks.py, which also runs this comparison for docs/benchmarks.md (its --peer section).


def build_segnext_b(num_classes: int, memory_format: str = "channels_last") -> segcore.SegModel:
    """Return ``mscan-b + ham`` in eval mode (random weights) running in ``memory_format``."""
    return segcore.build_model(
        "mscan-b",
        "ham",
        num_classes,
        encoder_options={"memory_format": memory_format},
        decoder_options={"memory_format": memory_format},  # SegNeXt-B's head: the segnext-b pair
    ).eval()


def main() -> None:
    """Run the interleaved benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--num-classes", type=int, default=150)
    parser.add_argument("--reps", type=int, default=7, help="timed repetitions per model (interleaved)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ours = build_segnext_b(args.num_classes)
    nchw = build_segnext_b(args.num_classes, "contiguous")
    nchw.load_state_dict(ours.state_dict())
    theirs = build_segformer_b2(args.num_classes)
    images = torch.randn(1, 3, args.size, args.size)

    def run_segformer() -> torch.Tensor:
        logits = theirs(pixel_values=images).logits
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)

    runs: dict[str, Callable[[], torch.Tensor]] = {
        "segnext_b": lambda: ours(images),
        "segnext_b_nchw": lambda: nchw(images),
        "segformer_b2": run_segformer,
    }
    with torch.no_grad():
        for run in runs.values():
            assert run().shape == (1, args.num_classes, args.size, args.size)
        times = time_interleaved(runs, args.reps, args.warmup)
    result: dict[str, object] = {
        "size": args.size,
        "precision": "fp32",
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "reps": args.reps,
    }
    for name, values in times.items():
        result[f"{name}_median_ms"] = round(statistics.median(values) * 1e3, 1)
        result[f"{name}_min_ms"] = round(min(values) * 1e3, 1)
        result[f"{name}_all_ms"] = [round(t * 1e3, 1) for t in values]
    for stat in ("median", "min"):
        result[f"ratio_{stat}"] = round(result[f"segnext_b_{stat}_ms"] / result[f"segformer_b2_{stat}_ms"], 3)
        result[f"ratio_nchw_{stat}"] = round(result[f"segnext_b_nchw_{stat}_ms"] / result[f"segformer_b2_{stat}_ms"], 3)
    # Ratio of each interleaved pair, then the median: robust to slow drifts of the machine's load.
    pairs = [a / b for a, b in zip(times["segnext_b"], times["segformer_b2"])]
    result["ratio_paired_median"] = round(statistics.median(pairs), 3)
    result["segnext_b_params"] = sum(p.numel() for p in ours.parameters())
    result["segformer_b2_params"] = sum(p.numel() for p in theirs.parameters())
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{args.size}x{args.size} fp32 CPU, {result['threads']} threads, {args.reps} interleaved reps "
            f"(median / min): mscan-b + ham {result['segnext_b_median_ms']} / {result['segnext_b_min_ms']} ms, "
            f"NCHW {result['segnext_b_nchw_median_ms']} / {result['segnext_b_nchw_min_ms']} ms, SegFormer-B2 "
            f"{result['segformer_b2_median_ms']} / {result['segformer_b2_min_ms']} ms; ratio "
            f"{result['ratio_median']} / {result['ratio_min']} (NCHW {result['ratio_nchw_median']} / "
            f"{result['ratio_nchw_min']})"
        )


if __name__ == "__main__":
    main()

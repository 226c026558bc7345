"""SDPA vs materialised N x N attention in the SegDeformer head (MiT-B2, 512 x 512, eval, batch 1).

All implementations share the same weights (same seed; only the ``attention`` option differs). Each one
runs in its own subprocess so its peak resident memory (``ru_maxrss``) is its own; the figure reported is
the peak during the timed forwards minus the RSS measured just before the first forward (model and input
already built), i.e. the activation memory of one forward. Latency is the median of ``--iters`` forwards
after one warm-up; "attention time" is the part of it spent inside the two ``SingleHeadAttention`` modules
(projections and the N x N attention), timed by forward hooks. The parent checks that all produce the same
logits.

Usage (repository root; the lock keeps other benchmarks from running at the same time)::

    .venv/bin/python packages/segdeformer/benchmarks/attention.py --iters 2 --threads 2
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IMPLEMENTATIONS = ("sdpa", "materialized")


def _rss_mib() -> float:
    """Current resident set size in MiB."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _child(args: argparse.Namespace) -> None:
    """Run one implementation, print its figures as JSON and save its outputs."""
    import segcore
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = segcore.build_model(args.encoder, "segdeformer", 150, decoder_options={"attention": args.attention})
    model.eval()
    images = torch.randn(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
    from segcore_segdeformer.head import SingleHeadAttention

    inside = [0.0]  # seconds spent in the attention modules during the timed forwards
    entered: list[float] = []

    def _enter(*_: object) -> None:
        entered.append(time.perf_counter())

    def _leave(*_: object) -> None:
        inside[0] += time.perf_counter() - entered.pop()

    for module in model.modules():
        if isinstance(module, SingleHeadAttention):
            module.register_forward_pre_hook(_enter)
            module.register_forward_hook(_leave)
    before = _rss_mib()
    times = []
    with torch.no_grad():
        out = model.forward_output(images)  # warm-up, also the output compared by the parent
        inside[0] = 0.0
        for _ in range(args.iters):
            start = time.perf_counter()
            model.forward_output(images)
            times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    torch.save({"logits": out.logits, "mid_logits": out.aux["mid_logits"]}, args.out)
    print(
        json.dumps(
            {
                "attention": args.attention,
                "peak_delta_mib": peak - before,
                "median_s": statistics.median(times),
                "attention_s": inside[0] / len(times),
                "times_s": times,
            }
        )
    )


def main() -> None:
    """Run both implementations in subprocesses and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="mit-b2")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--attention", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attention:
        _child(args)
        return
    import torch

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for attention in IMPLEMENTATIONS:
            out = str(Path(tmp) / f"{attention}.pt")
            cmd = [
                sys.executable,
                __file__,
                "--encoder",
                args.encoder,
                "--size",
                str(args.size),
                "--iters",
                str(args.iters),
                "--threads",
                str(args.threads),
                "--attention",
                attention,
                "--out",
                out,
            ]
            proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
            results[attention] = json.loads(proc.stdout.strip().splitlines()[-1])
            results[attention]["outputs"] = torch.load(out)
        ref = results["materialized"]["outputs"]
        diff = {name: max((r["outputs"][k] - ref[k]).abs().max().item() for k in ref) for name, r in results.items()}
    m = results["materialized"]
    print(f"{args.encoder} + segdeformer, {args.size}x{args.size}, batch 1, CPU float32, {args.threads} threads")
    print(
        "| attention | peak activation memory (MiB) | median latency (s) | memory ratio | speed-up "
        "| attention time (s, mean) | attention speed-up | max diff |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['peak_delta_mib']:.0f} | {r['median_s']:.2f} | "
            f"{r['peak_delta_mib'] / m['peak_delta_mib']:.3f} | {m['median_s'] / r['median_s']:.2f}x | "
            f"{r['attention_s']:.2f} | {m['attention_s'] / r['attention_s']:.2f}x | {diff[name]:.1e} |"
        )


if __name__ == "__main__":
    main()

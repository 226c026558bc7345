"""Parameters and multiply-adds of the paper-table models through ``segcore.tools.benchmark.count_params_and_macs``.

Usage (repository root)::

    .venv/bin/python packages/segdeformer/benchmarks/macs.py
"""

from __future__ import annotations

import argparse

import segcore
import torch
from segcore.tools.benchmark import count_params_and_macs

# (encoder, decoder, released-code params, released-code GMACs) — issue 7 / spec §10 item 6.
TABLE = [
    ("mit-b1", "mlp", 13_716_822, None),
    ("mit-b1", "segdeformer", 14_453_590, 301.92),
    ("mit-b2", "segdeformer", 25_498_454, 311.76),
    ("mit-b5", "segdeformer", 82_745_174, 361.07),
]


def measure(encoder: str, decoder: str, size: int = 512, num_classes: int = 150) -> dict:
    """Parameters and multiply-adds (segcore's convention, as ``segcore benchmark --iters 0``) at ``size``."""
    torch.manual_seed(0)
    model = segcore.build_model(encoder, decoder, num_classes).eval()
    params, macs = count_params_and_macs(model, (size, size))
    return {"params": params, "gmacs": macs / 1e9}


def main() -> None:
    """Print the table (markdown)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    print("| model | params | released code | GMACs | released code | diff |")
    print("|---|---|---|---|---|---|")
    for encoder, decoder, params, gmacs in TABLE:
        r = measure(encoder, decoder)
        diff = f"{100 * (r['gmacs'] - gmacs) / gmacs:+.2f} %" if gmacs else ""
        ref = f"{gmacs:.2f}" if gmacs else "-"
        print(f"| {encoder} + {decoder} | {r['params']:,} | {params:,} | {r['gmacs']:.2f} | {ref} | {diff} |")


if __name__ == "__main__":
    main()

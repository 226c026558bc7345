"""``make demo``: train a first-party model on ``synthetic-shapes`` on CPU, evaluate it and draw its predictions.

Every step is a ``segcore`` command, so the demo shows what a user runs:

1. ``segcore train`` (the CPU preset of ``synthetic-shapes``; with ``--resume`` when the folder already holds
   a checkpoint of the demo, so that a second ``make demo`` continues or reuses the run instead of failing);
2. a few validation images written as PNG files next to their ground truth;
3. ``segcore predict`` on them (label PNGs and overlays);
4. a summary: the final mIoU and where the pictures are.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import segcore
from PIL import Image
from segcore_cli.main import main as segcore_main

PAIRS = (("mscan-t", "ham"), ("mit-b0", "segdeformer"), ("timm:resnet18", "mlp"))


def _first_installed_pair() -> tuple[str, str]:
    """mscan-t + ham when segcore-segnext is installed, else the next first-party pair, else core's own."""
    from segcore.errors import UnknownComponentError
    from segcore.plugins.registry import get_spec

    for encoder, decoder in PAIRS:
        try:
            get_spec("encoders", encoder)
            get_spec("decoders", decoder)
        except UnknownComponentError:
            continue
        return encoder, decoder
    raise SystemExit("no encoder/decoder pair is installed")


def _write_samples(out: Path, count: int) -> list[Path]:
    """Write ``count`` validation images of synthetic-shapes as PNG, with a colour ground truth next to each."""
    ds = segcore.build_dataset("synthetic-shapes", split="val")
    palette = np.array(ds.palette, dtype=np.uint8)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        sample = ds[i]
        image = np.asarray(sample["image"]).transpose(1, 2, 0)
        path = out / f"val_{i:03d}.png"
        Image.fromarray(image).save(path)
        Image.fromarray(palette[np.asarray(sample["label"])]).save(out / f"val_{i:03d}_truth.png")
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="runs/demo")
    parser.add_argument("--samples", type=int, default=6, help="validation images to draw")
    parser.add_argument("train_args", nargs="*", help="extra `segcore train` flags (after --)")
    args = parser.parse_args(argv)
    out = Path(args.output_dir)
    encoder, decoder = _first_installed_pair()
    # --resume never starts a run from scratch: ask for it only when there is a checkpoint to continue from.
    resume = ["--resume"] if any((out / "checkpoints").glob("iter_*/trainer_state.json")) else []
    tic = time.time()
    code = segcore_main(
        [
            "train",
            "--encoder",
            encoder,
            "--decoder",
            decoder,
            "--dataset",
            "synthetic-shapes",
            "--output-dir",
            str(out),
            *resume,
            *args.train_args,
        ]
    )
    if code:
        return code
    train_minutes = (time.time() - tic) / 60
    images = _write_samples(out / "samples", args.samples)
    code = segcore_main(["predict", "--model", str(out), *map(str, images), "--out", str(out / "predictions")])
    if code:
        return code
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"mIoU"' in line]
    print()
    print(f"segcore demo: {encoder} + {decoder} on synthetic-shapes, {train_minutes:.1f} min of training + eval")
    if evals:
        print(
            f"  validation mIoU {evals[-1]['mIoU']:.2f} (best {max(e['mIoU'] for e in evals):.2f}) "
            f"at iteration {evals[-1]['iter']}"
        )
    print(f"  curves:      {out / 'curves.png'}")
    print(f"  predictions: {out / 'predictions'}/*_overlay.png (inputs and ground truth in {out / 'samples'})")
    print(f"  model:       {out}  (segcore eval --model {out} --dataset synthetic-shapes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

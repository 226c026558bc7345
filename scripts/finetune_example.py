"""The README's measured fine-tuning example: a synthetic-shapes model fine-tuned on a folder of other classes.

Every step but the data and the "before" number is a ``segcore`` command (printed as it runs):

1. ``segcore train`` a short synthetic-shapes run (M: 6 classes: background, disc, square, triangle, star, ring);
2. a folder dataset (and the same data as parquet shards for ``hf:``) of new synthetic images whose classes are
   merged and renamed: background, round (disc, ring), pointed (square, triangle, star);
3. mIoU before: M's encoder and decoder with the new, re-initialised 3-class classifier, which is the model that
   ``--init-from`` starts training from;
4. ``segcore train --init-from M`` on the folder with the CPU preset's schedule, then ``segcore eval``: mIoU after;
5. the same schedule from scratch (no ``--init-from``), for comparison.

Run: ``python scripts/finetune_example.py --work runs/finetune-example`` (8.3 minutes measured on 2 busy CPU cores,
7.2 of them the source run; ``--reuse-source`` keeps that run for a second try).
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path

import numpy as np
import segcore
from PIL import Image
from segcore_cli.main import main as segcore_main

NEW_CLASSES = ("background", "round", "pointed")
# synthetic-shapes label value -> new label value (background, disc, square, triangle, star, ring).
MERGE = np.array([0, 1, 2, 2, 2, 1] + [255] * 250, dtype=np.uint8)


def run(command: str) -> None:
    """Run one ``segcore`` command as a user would type it."""
    print(f"$ {command}", flush=True)
    code = segcore_main(shlex.split(command)[1:])
    if code:
        raise SystemExit(f"{command!r} exited with {code}")


def write_data(root: Path, train: int, val: int) -> tuple[Path, Path]:
    """New synthetic images with the merged classes, as a folder and as parquet shards; ``(folder, shards)``."""
    folder, shards = root / "blobs", root / "blobs-parquet"
    (folder).mkdir(parents=True, exist_ok=True)
    (folder / "classes.txt").write_text("\n".join(NEW_CLASSES) + "\n")
    rows: dict[str, dict[str, list]] = {}
    for split, count, hf_split in (("train", train, "train"), ("val", val, "validation")):
        source = segcore.build_dataset("synthetic-shapes", split=split, length=count, seed=7)  # images M never saw
        rows[hf_split] = {"image": [], "annotation": []}
        for i in range(count):
            image, label = source.load_arrays(i)
            label = MERGE[label]
            for kind, array in (("images", image), ("masks", label)):
                (folder / kind / split).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(folder / kind / split / f"{i:04d}.png")
            rows[hf_split]["image"].append(Image.fromarray(image))
            rows[hf_split]["annotation"].append(Image.fromarray(label))
    import datasets

    features = datasets.Features({"image": datasets.Image(), "annotation": datasets.Image()})
    (shards / "data").mkdir(parents=True, exist_ok=True)
    for split, table in rows.items():
        datasets.Dataset.from_dict(table, features=features).to_parquet(str(shards / "data" / f"{split}-0.parquet"))
    (shards / "id2label.json").write_text(json.dumps(dict(enumerate(NEW_CLASSES))))
    return folder, shards


def miou_before(model_dir: Path, folder: Path) -> float:
    """The mIoU of the model ``--init-from model_dir`` starts from on ``folder``: M's weights, a new classifier."""
    import torch
    from segcore.train import evaluate
    from segcore.train.init_from import load_init_weights

    m = segcore.SegModel.from_pretrained(model_dir)
    val = segcore.build_dataset("folder", root=str(folder), split="val")
    c = m.config
    torch.manual_seed(0)
    model = segcore.build_model(
        c.encoder,
        c.decoder,
        len(val.classes),
        c.encoder_options,
        c.decoder_options,
        pair_defaults=False,
        mean=c.mean,
        std=c.std,
        class_names=list(val.classes),
    )
    fresh, _ = load_init_weights(model, str(model_dir))
    print(f"re-initialised for {len(val.classes)} classes: {', '.join(fresh)}")
    return float(evaluate(model, val, c.eval or None)["mIoU"])


def final_miou(run_dir: Path) -> float:
    """The last validation mIoU a run logged."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return float([r for r in rows if "mIoU" in r][-1]["mIoU"])


def main() -> None:
    """Run the example and print the mIoU before and after fine-tuning."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default="runs/finetune-example", help="folder for the data and the runs")
    parser.add_argument("--source-iters", type=int, default=300, help="iterations of the synthetic-shapes run")
    parser.add_argument("--iters", type=int, default=150, help="fine-tuning iterations")
    parser.add_argument("--train", type=int, default=200, help="training images of the new dataset")
    parser.add_argument("--val", type=int, default=50, help="validation images of the new dataset")
    parser.add_argument("--scratch", action=argparse.BooleanOptionalAction, default=True, help="also from scratch")
    parser.add_argument("--reuse-source", action="store_true", help="keep an existing synthetic-shapes run in WORK")
    args = parser.parse_args()
    work, started = Path(args.work), time.time()
    m, tuned, scratch = work / "shapes", work / "finetuned", work / "scratch"
    quiet = "--no-progress --overwrite"
    if not (args.reuse_source and (m / "config.json").exists()):
        run(f"segcore train --dataset synthetic-shapes --iters {args.source_iters} --output-dir {m} {quiet}")
    folder, shards = write_data(work, args.train, args.val)
    before = miou_before(m, folder)
    preset = f"--recipe synthetic-shapes-cpu --iters {args.iters} --eval-every {args.iters}"
    run(f"segcore train --init-from {m} {preset} --dataset folder --data-root {folder} --output-dir {tuned} {quiet}")
    run(f"segcore eval --model {tuned} --dataset folder --data-root {folder}")
    after = final_miou(tuned)
    results = {"before": round(before, 2), "after": round(after, 2)}
    if args.scratch:
        run(f"segcore train {preset} --dataset folder --data-root {folder} --output-dir {scratch} {quiet}")
        results["scratch"] = round(final_miou(scratch), 2)
    results["minutes"] = round((time.time() - started) / 60, 1)
    print(f"hf: layout of the same data: {shards}")
    print(f"mIoU on {folder} val: " + json.dumps(results))


if __name__ == "__main__":
    main()

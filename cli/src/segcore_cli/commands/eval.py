"""``segcore eval``: mIoU/mAcc/aAcc/per class of a model on a dataset split, with the model's own protocol.

Under ``accelerate launch --num_processes N`` the images are split over the processes and their confusion matrices
summed, which gives exactly the single-process numbers; only the main process prints and writes.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Literal

from segcore.config.fields import setting
from segcore.config.options import Range
from segcore.train.schema import SKIP_BAD_HELP

from segcore_cli._common import parse_component_options
from segcore_cli.flags import PRECISION_HELP, add_settings


@dataclass
class EvalFlags:
    """The flags of ``segcore eval``, each declared once (:func:`segcore.config.fields.setting`)."""

    model: str | None = setting(help="registered name, Hub repo id or folder (a training run too)", required=True)
    dataset: str | None = setting(help="dataset name (default: the one the model was trained on)")
    data_root: str | None = setting(help="dataset folder")
    split: str = setting("val", help="the split to evaluate")
    mode: Literal["whole", "slide"] | None = setting(help="override the model's eval mode")
    crop_size: tuple[int, int] | None = setting(help="slide window S or H,W")
    stride: tuple[int, int] | None = setting(help="slide stride S or H,W, at most the window")
    scales: tuple[float, ...] | None = setting(
        help="comma-separated scale factors > 0, e.g. 0.5,0.75,1.0,1.25,1.5,1.75"
    )
    flip: bool = setting(False, help="also average the horizontally flipped image")
    max_samples: int | None = setting(help="evaluate on the first N images only", range=Range(int, low=1))
    device: str | None = setting(help="cpu or cuda (default: cuda when available)")
    precision: Literal["fp32", "bf16"] = setting("fp32", help=PRECISION_HELP)
    dataset_opt: dict[str, Any] = setting({}, help="dataset option (repeat)", metavar="K=V", parse="pairs")
    skip_bad: bool = setting(False, help=SKIP_BAD_HELP)
    json: bool = setting(False, help="print one JSON document")
    report: str | None = setting(
        help="write DIR/report.html (protocol, scores, sorted per-class IoU, confusion matrix, worst images, a run's "
        "training curves) with the per-class table (per_class.json/.csv) and the confusion matrix "
        "(confusion.csv/.png). DIR must be missing, empty or an earlier report's (marked by .segcore-report.json), and "
        "outside the dataset and the model folder: nothing else is replaced. Without it a local model folder keeps "
        "the tables in MODEL/eval/DATASET-SPLIT/",
        metavar="DIR",
        parse="path",
    )
    write_card: bool = setting(
        False,
        help="record the result in the model folder (config.json and its model card's model-index); --model must "
        "be a local folder segcore wrote",
    )


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``eval`` parser: one argument per declared field of :class:`EvalFlags`."""
    p = sub.add_parser(
        "eval",
        help="evaluate a model (mIoU, mAcc, aAcc, mFscore, ECE, per class)",
        description="Evaluate a model on a dataset split. The protocol saved with the model "
        "(config.eval) is used unless flags override it. A model whose class count differs from the dataset's is "
        "refused; class names that differ at the same count are a warning.",
    )
    add_settings(p, EvalFlags)
    p.set_defaults(run=run)


def _check_data(model: Any, model_ref: str, dataset: Any, dataset_name: str, split: str) -> list[str]:
    """Refuse a model whose class count differs from the dataset's; return warnings (renamed classes, lone files)."""
    from segcore.data import check_classes

    cfg = model.config
    names = list(cfg.class_names or [])
    ours = names if len(names) == cfg.num_classes else cfg.num_classes
    fix = (
        "evaluate it on data labelled with its classes (the same values in the same order), or fine-tune it on "
        f"this dataset first (segcore train --init-from {model_ref} --dataset {dataset_name} ...)"
    )
    result = check_classes(
        ours, list(dataset.classes), model=f"model {model_ref}", dataset=f"dataset {dataset_name} ({split})", fix=fix
    )
    notes = []
    if result.renamed:
        notes.append(
            f"{len(result.renamed)} of {result.model_count} class names differ between the model and the dataset "
            f"(value, model vs dataset: {result.describe_renamed()}); the scores are listed under the dataset's names"
        )
    lone = list(getattr(dataset, "layout_problems", None) or [])
    if lone:
        notes.append(
            f"{len(lone)} file(s) have no partner and are left out, e.g. {lone[0]} (segcore data check lists them)"
        )
    return notes


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the metrics."""
    import sys

    import segcore
    from segcore.config.settings import EvalProtocol
    from segcore.evaluation.evaluate import evaluate, processes
    from segcore.evaluation.inference import precision
    from segcore.models.components import with_skip_bad

    device, rank, world = processes(args.device)
    main = rank == 0
    model = segcore.SegModel.from_pretrained(args.model).to(device).eval()
    dataset_name = args.dataset or model.config.extra.get("dataset")
    if not dataset_name:
        raise ValueError("give --dataset (the model does not record the dataset it was trained on)")
    options = parse_component_options("datasets", dataset_name, args.dataset_opt)
    if args.skip_bad:
        options = with_skip_bad(dataset_name, options)
    dataset = segcore.build_dataset(dataset_name, root=args.data_root, split=args.split, **options)
    notes = _check_data(model, args.model, dataset, dataset_name, args.split)
    if args.report:  # before the evaluation: a folder that cannot take the report is refused at once
        from segcore.evaluation.report import check_report_folder

        check_report_folder(args.report, dataset, model_folder=args.model)
    for note in notes if main else ():
        print(f"segcore eval: warning: {note}", file=sys.stderr)
    # The model's own protocol (a paper checkpoint's test pipeline, or the one it was trained with), else the
    # dataset's reference protocol; flags override single fields and the result is validated as a whole.
    protocol = EvalProtocol.from_dict(model.config.eval or getattr(dataset, "eval_protocol", None))
    changes: dict = {}
    if args.mode:
        changes["mode"] = args.mode
    if args.crop_size:
        changes["crop_size"] = args.crop_size
    if args.stride:
        changes["stride"] = args.stride
    if args.scales:
        changes["scales"] = args.scales
    if args.flip:
        changes["flip"] = True
    protocol = protocol.replace(**changes)
    if main and not args.json:
        print(f"protocol: {protocol.describe()}")
    with precision(device, args.precision):
        result = evaluate(
            model, dataset, protocol, device, rank, world, max_samples=args.max_samples, progress=main and not args.json
        )
    if not main:  # every process holds the reduced result: one of them reports
        return 0
    if args.report:
        _write_report(args, model, dataset, dataset_name, protocol, result, device)
    else:
        _save_tables(args, result, dataset_name)
    if args.write_card:
        _write_card(args.model, model, result, protocol, dataset_name, args.split, quiet=args.json)
    _print_result(args, result, protocol, dataset_name, notes)
    return 0


def _print_result(args: argparse.Namespace, result: dict, protocol: Any, dataset_name: str, notes: list[str]) -> None:
    """The scores as a table, or as one JSON document with ``--json``."""
    import json
    import math

    def num(v: float) -> float | None:
        return None if math.isnan(v) else round(v, 2)

    if args.json:
        facts = {"protocol": protocol.to_dict(), "dataset": dataset_name, "split": args.split}
        print(json.dumps({**_scores_json(result, num), **facts, "precision": args.precision, "warnings": notes}))
        return
    _print_table(result)
    print(
        f"\nmIoU {result['mIoU']:.2f}  mAcc {result['mAcc']:.2f}  aAcc {result['aAcc']:.2f}  "
        f"mFscore {result['mFscore']:.2f}  mPrecision {result['mPrecision']:.2f}  mRecall {result['mRecall']:.2f}  "
        f"ECE {result['ECE']:.2f}  "
        f"({dataset_name} {args.split}, {protocol.mode}, scales {list(protocol.scales)}, flip {protocol.flip}, "
        f"{args.precision})"
    )


def _scores_json(result: dict, num: Any) -> dict:
    """The headline scores (mmseg's names, ``ECE`` in percent) and the per-class ones, rounded, ``nan`` as null."""
    from segcore.evaluation.metrics import PER_CLASS, SUMMARY

    scores = {key: num(result[key]) for key in (*SUMMARY, "ECE")}
    per_class = [{"name": c["name"], **{key: num(c[key]) for key in PER_CLASS}} for c in result["per_class"]]
    return {**scores, "per_class": per_class, "calibration": result.get("calibration")}


def _print_table(result: dict) -> None:
    """The per-class table: IoU, Acc (= recall), Fscore, Precision."""
    width = max(len("class"), *(len(c["name"]) for c in result["per_class"]))
    columns = ("IoU", "Acc", "Fscore", "Precision")
    print(f"{'class':<{width}}" + "".join(f"  {key:>9}" for key in columns))
    for c in result["per_class"]:
        print(f"{c['name']:<{width}}" + "".join(f"  {c[key]:9.2f}" for key in columns))


def _save_tables(args: argparse.Namespace, result: dict, dataset_name: str) -> None:
    """Without ``--report``: a local model folder keeps the tables under ``eval/<dataset>-<split>/`` (its own)."""
    import re
    from pathlib import Path

    from segcore.evaluation.report import save_tables

    folder = Path(args.model).expanduser()
    if not (folder / "config.json").is_file():
        if not args.json:
            print("tables not saved (the model is not a local folder): --report DIR saves them with a report page")
        return
    target = folder / "eval" / re.sub(r"[^A-Za-z0-9._-]+", "_", f"{dataset_name}-{args.split}")
    save_tables(result, target)
    if not args.json:
        print(f"tables: {target} (per_class.json/.csv, confusion.csv/.png)")


def _write_report(
    args: argparse.Namespace, model: Any, dataset: Any, dataset_name: str, protocol: Any, result: dict, device: str
) -> None:
    """The tables and ``report.html`` in ``--report``; a training run's folder adds its curves."""
    from pathlib import Path

    from segcore.evaluation.report import write_report

    run_metrics = Path(args.model).expanduser() / "metrics.jsonl"
    facts = {"model": args.model, "dataset": f"{dataset_name} ({args.split})", "precision": args.precision}
    if args.max_samples:
        facts["images"] = f"the first {min(args.max_samples, len(dataset))} of {len(dataset)}"
    page = write_report(
        args.report,
        result,
        model,
        dataset,
        protocol,
        title=f"segcore eval: {args.model} on {dataset_name} {args.split}",
        facts=facts,
        metrics_file=run_metrics if run_metrics.is_file() else None,
        device=device,
    )
    if not args.json:
        print(f"report: {page}")


def _write_card(
    folder: str, model: object, result: dict, protocol: object, dataset: str, split: str, quiet: bool
) -> None:
    """Add the result to a local model folder's config.json and regenerate its card (a user's README.md is kept)."""
    from pathlib import Path

    import segcore
    from segcore.weights.cards import eval_result, with_eval_results
    from segcore.weights.pretrained import save_pretrained

    path = Path(folder).expanduser()
    if not (path / "config.json").is_file():
        raise segcore.SegcoreError(f"--write-card needs --model to be a local model folder; {folder!r} is not one")
    entry = eval_result(result, protocol, dataset, split, source="segcore eval")
    config = with_eval_results(model.config, entry)
    save_pretrained(model.to("cpu"), path, config=config)
    if not quiet:
        print(
            f"recorded mIoU {entry.get('mIoU')} ({'multi-scale' if entry['multi_scale'] else 'single scale'}) in {path}"
        )

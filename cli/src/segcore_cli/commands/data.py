"""``segcore data``: prepare, check and benchmark datasets (needs ``segcore-datasets``)."""

from __future__ import annotations

import argparse
import json

from segcore_cli._common import POSITIVE_INT, parse_component_options


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``data`` parser with ``prepare``, ``check`` and ``bench`` actions."""
    p = sub.add_parser(
        "data", help="prepare, check and benchmark datasets", description="Dataset tools (from segcore-datasets)."
    )
    actions = p.add_subparsers(dest="data_command", metavar="ACTION")
    pr = actions.add_parser(
        "prepare",
        help="convert a release layout into the layout the readers expect",
        description="Convert a dataset release (SRC) into the prepared layout (DST); "
        "datasets: cityscapes, coco-stuff164k, coco-stuff10k, voc2012-aug, "
        "pascal-context, isaid.",
    )
    pr.add_argument("dataset")
    pr.add_argument("src")
    pr.add_argument("dst")
    pr.add_argument("--quiet", action="store_true", help="no progress bars")
    ck = actions.add_parser("check", help="check layout, counts and label histogram of a dataset split")
    ck.add_argument("--dataset", required=True)
    ck.add_argument("--data-root", default=None, help="dataset folder, or hf:<repo id or saved dir>")
    ck.add_argument("--split", default=None, help="one split (default: train and val)")
    ck.add_argument("--limit", type=POSITIVE_INT, default=None, help="read only the first N samples of each split")
    ck.add_argument("--dataset-opt", action="append", default=[], metavar="K=V", help="dataset option (repeat)")
    ck.add_argument("--json", action="store_true", help="print one JSON document")
    bn = actions.add_parser("bench", help="images/s of the ADE20K-style train pipeline on generated JPEGs (1 core)")
    bn.add_argument("--n", type=POSITIVE_INT, default=16, help="generated images")
    bn.add_argument("--passes", type=POSITIVE_INT, default=3)
    bn.add_argument("--crop", type=POSITIVE_INT, default=512)
    bn.add_argument("--data-root", default=None, help="an ADE20K folder to read instead of generated files")
    p.set_defaults(run=run, _data_parser=p)


def run(args: argparse.Namespace) -> int:
    """Run the chosen action."""
    action = getattr(args, "data_command", None)
    if action == "prepare":
        from segcore_datasets.prepare import prepare

        counts = prepare(args.dataset, args.src, args.dst, quiet=args.quiet)
        print(f"prepared {args.dataset} into {args.dst}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        return 0
    if action == "check":
        return _check(args)
    if action == "bench":
        from segcore_datasets.throughput import bench_pipeline

        r = bench_pipeline(n=args.n, passes=args.passes, crop=args.crop, root=args.data_root)
        print(
            f"ADE20K-style train pipeline (decode + resize/crop/flip/photometric to {args.crop}x{args.crop}), "
            f"1 process: {r['images_per_s']:.1f} images/s wall clock ({r['images']} images in {r['seconds']:.2f} s), "
            f"{r['images_per_cpu_s']:.1f} images per CPU-second ({r['cpu_seconds']:.2f} s of CPU)"
        )
        return 0
    args._data_parser.print_help()
    return 0


def _check(args: argparse.Namespace) -> int:
    import segcore
    from segcore_datasets.audit import EXPECTED_COUNTS, check_dataset

    options = parse_component_options("datasets", args.dataset, args.dataset_opt)
    splits = [args.split] if args.split else ["train", "val"]
    reports = []
    for split in splits:
        ds = segcore.build_dataset(args.dataset, args.data_root, split, **options)
        expected = EXPECTED_COUNTS.get(args.dataset, {}).get(split)
        reports.append(check_dataset(ds, expected=expected, limit=args.limit, progress=not args.json))
    if args.json:
        print(json.dumps(reports, indent=2))
    else:
        for r in reports:
            exp = (
                ""
                if r["expected"] is None
                else (" (matches the release)" if r["count"] == r["expected"] else f" (release has {r['expected']})")
            )
            print(f"{r['name']} {r['split']}: {r['count']} samples{exp}; read {r['checked']}")
            total = max(sum(r["histogram"]), 1)
            names = list(ds.classes) + ["<ignore>"]
            shown = ", ".join(f"{n.strip()} {100 * c / total:.1f}%" for n, c in zip(names, r["histogram"]) if c)
            print(f"  label histogram: {shown}")
            if r["missing_classes"]:
                print(f"  classes with no pixels: {', '.join(c.strip() for c in r['missing_classes'])}")
            for e in r["errors"]:
                print(f"  error: {e}")
    return 1 if any(r["errors"] for r in reports) else 0

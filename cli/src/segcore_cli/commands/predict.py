"""``segcore predict``: a label PNG and an overlay PNG per image, at the image's own size and orientation.

Inputs are files, folders (searched recursively for the types of :data:`segcore.data.io.IMAGE_EXTENSIONS`) and glob
patterns. Outputs keep the inputs' layout relative to the folder that holds them all: ``a/x.png`` and ``b/x.jpg``
give ``OUT/a/x_label.png`` and ``OUT/b/x_label.png``; two images of one folder with one name (``x.png``,
``x.jpg``) give ``x_png_label.png`` and ``x_jpg_label.png``. Images are read by core's reader with their EXIF
orientation applied, so a label lines up with the photo as viewers show it. A file that cannot be read is reported
at the end and the others are still written (exit status 1).

Nothing under ``--out`` that predict did not write is replaced: ``OUT/.segcore-predict.json`` lists the files its
runs wrote, and a run whose outputs would land on any other file refuses before predicting, naming those files.
Each file is written to a temporary name and renamed into place, so Ctrl-C never leaves a truncated PNG.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from segcore.config.fields import setting
from segcore.config.options import Range

from segcore_cli.flags import PRECISION_HELP, add_settings

MIN_SIDE = 32  # the coarsest stride of the encoders: a smaller window holds no feature map
MANIFEST = ".segcore-predict.json"  # in --out: the files predict wrote there (the ones a later run may replace)


@dataclass
class PredictFlags:
    """The flags of ``segcore predict``, each declared once (:func:`segcore.config.fields.setting`)."""

    model: str | None = setting(help="registered name, Hub repo id or folder (a training run too)", required=True)
    images: list[str] | None = setting(
        help="image files, folders (recursive) or glob patterns", metavar="PATH", parse="positional"
    )
    out: str | None = setting(help="output folder", required=True)
    alpha: float = setting(
        0.5,
        help="overlay opacity of the label colours, 0..1 (0: image only, 1: label colours only)",
        range=Range(float, low=0.0, high=1.0),
    )
    max_side: int = setting(
        1024,
        help=f"images larger than this run in sliding windows of this size (at least {MIN_SIDE})",
        range=Range(int, low=MIN_SIDE),
    )
    device: str | None = setting(help="cpu or cuda (default: cuda when available)")
    precision: Literal["fp32", "bf16"] = setting("fp32", help=PRECISION_HELP)
    progress: bool = setting(True, help="no progress bar", parse="negate")
    json: bool = setting(False, help="print the written files (and failures) as JSON")
    confidence: bool = setting(
        False,
        help="also write <name>_confidence.png: 8-bit grey, 255 x the largest class probability of each pixel (the "
        "probabilities the label is the argmax of, after the protocol's scales and flip)",
    )
    save_probs: bool = setting(
        False,
        help="also write <name>_probs.npz: the class probabilities, float16 [K, H, W] under the key probs (held in "
        "memory whole: 2 x K x H x W bytes per image)",
    )
    overlay: Literal["classes", "confidence"] = setting(
        "classes",
        help="overlay style: classes, or confidence (each pixel's colour times its confidence: unsure is dark)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``predict`` parser: one argument per declared field of :class:`PredictFlags`."""
    p = sub.add_parser(
        "predict",
        help="segment images: label PNGs and overlays",
        description="Segment images (files, folders, globs) and write <name>_label.png and <name>_overlay.png under "
        "--out, keeping the inputs' folder layout. Label PNGs hold the class values: palette PNGs up to 256 classes, "
        "16-bit grey PNGs above. --confidence adds <name>_confidence.png (255 x the largest class probability, 8-bit "
        "for any number of classes), --save-probs <name>_probs.npz (float16 [K, H, W], key probs).",
    )
    add_settings(p, PredictFlags)
    p.set_defaults(run=run)


def _glob_base(pattern: str) -> Path:
    import glob

    parts = Path(pattern).parts
    fixed = [p for p in parts[: next((i for i, p in enumerate(parts) if glob.has_magic(p)), len(parts))]]
    return Path(*fixed) if fixed else Path(".")


def _scan(folder: Path, skip: Path) -> list[Path]:
    from segcore.data.io import IMAGE_EXTENSIONS

    out = []
    for f in sorted(folder.rglob("*")):
        rel = f.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or f.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if f.is_file() and not f.absolute().is_relative_to(skip):  # never our own outputs of an earlier run
            out.append(f)
    return out


def collect_inputs(items: list[str], out: Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    """The images the arguments name, each with its output stem under ``--out``, and the arguments naming nothing.

    Returns ``([(file, stem)], [message])``. The stems keep each file's path relative to the folder holding every
    input (the common parent of the folders given, of glob bases and of single files' folders); equal stems get the
    file's extension appended.
    """
    import glob
    import os

    skip = out.absolute()
    found: list[tuple[Path, Path]] = []  # (file, anchor)
    missing: list[str] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            files = _scan(path, skip)
            found += [(f, path) for f in files]
            if not files:
                missing.append(f"{item}: no images in this folder")
        elif path.is_file():
            found.append((path, path.parent))
        elif glob.has_magic(item):
            base = _glob_base(item)
            matches = [Path(m) for m in sorted(glob.glob(item, recursive=True))]
            files = [m for m in matches if m.is_file()] + [f for m in matches if m.is_dir() for f in _scan(m, skip)]
            found += [(f, base) for f in files]
            if not files:
                missing.append(f"{item}: matches no file")
        else:
            missing.append(f"{item}: no such file or folder")
    seen: set[Path] = set()
    unique = []
    for f, anchor in found:
        key = Path(os.path.abspath(f))
        if key not in seen:
            seen.add(key)
            unique.append((key, Path(os.path.abspath(anchor))))
    if not unique:
        return [], missing
    root = Path(os.path.commonpath([str(a) for _, a in unique]))
    rels = [f.relative_to(root) for f, _ in unique]
    groups: dict[Path, int] = {}
    for rel in rels:
        groups[rel.with_suffix("")] = groups.get(rel.with_suffix(""), 0) + 1
    stems: list[Path] = []
    taken: set[Path] = set()
    for rel in rels:
        stem = rel.with_suffix("")
        if groups[stem] > 1:  # x.png next to x.jpg: keep both, named after their extension
            stem = rel.with_name(f"{rel.stem}_{rel.suffix[1:]}")
        candidate, n = stem, 1
        while candidate in taken:  # x.JPG next to x.jpg on a case-sensitive disk
            n += 1
            candidate = stem.with_name(f"{stem.name}_{n}")
        taken.add(candidate)
        stems.append(candidate)
    return [(f, s) for (f, _), s in zip(unique, stems)], missing


def _palette(config: Any, k: int) -> Any:
    import numpy as np

    palette = np.array(config.palette or [], dtype=np.uint8).reshape(-1, 3)[:k]
    if len(palette) < k:  # no palette saved: a fixed pseudo-random one
        rng = np.random.default_rng(0)
        palette = np.concatenate([palette, rng.integers(0, 256, (k - len(palette), 3), dtype=np.uint8)])
    return palette


def _save_label(labels: Any, palette: Any, path: Path) -> None:
    import numpy as np
    from PIL import Image
    from segcore.data.storage import atomic_open

    if labels.dtype == np.uint8:
        img = Image.fromarray(labels, mode="P")
        img.putpalette(palette[:256].reshape(-1).tolist())
    else:
        # More than 256 classes: a palette PNG would wrap class 257 to 1; a 16-bit grey PNG keeps every value.
        img = Image.fromarray(labels.astype(np.uint16))
    with atomic_open(path, "wb") as handle:
        img.save(handle, format="PNG")


def _save_overlay(rgb: Any, labels: Any, palette: Any, alpha: float, path: Path, shade: Any = None) -> None:
    import numpy as np
    from PIL import Image
    from segcore.data.storage import atomic_open

    out = np.empty_like(rgb)
    band = max(1, (1 << 22) // max(1, rgb.shape[1]))  # rows per step: float temporaries of ~100 MB at most
    for y in range(0, rgb.shape[0], band):
        part = rgb[y : y + band] * (1 - alpha) + palette[labels[y : y + band]] * alpha
        if shade is not None:  # --overlay confidence: uncertain pixels dimmed (uint8 confidence / 255)
            part = part * (shade[y : y + band, :, None] / 255.0)
        out[y : y + band] = part.round().astype(np.uint8)
    with atomic_open(path, "wb") as handle:
        Image.fromarray(out).save(handle, format="PNG")


def _outputs(out: Path, stem: Path, extras: tuple[str, ...] = ()) -> tuple[Path, ...]:
    """The label PNG, the overlay PNG and the ``extras`` (name endings) of the input with output stem ``stem``."""
    endings = ("_label.png", "_overlay.png", *extras)
    return tuple(out / stem.parent / f"{stem.name}{ending}" for ending in endings)


def _extras(args: argparse.Namespace) -> tuple[str, ...]:
    """The name endings of the optional outputs asked for: ``_confidence.png``, ``_probs.npz``."""
    return (("_confidence.png",) if args.confidence else ()) + (("_probs.npz",) if args.save_probs else ())


def check_out(out: Path, items: list[tuple[Path, Path]], extras: tuple[str, ...] = ()) -> list[str]:
    """Refuse, before predicting, outputs that would replace files predict did not write; return what it wrote.

    Returns:
        The files (relative to ``out``) that earlier runs listed in ``out``'s manifest.

    Raises:
        OutputFolderError: ``out`` is a file, or files of other origin are where outputs would go (named).
    """
    from segcore.data.storage import read_manifest
    from segcore.errors import OutputFolderError

    if out.exists() and not out.is_dir():
        raise OutputFolderError(f"--out {out} is a file, not a folder: give a folder (it is created if missing)")
    earlier = read_manifest(out / MANIFEST) or []
    ours = set(earlier)
    blocked = [
        target
        for _, stem in items
        for target in _outputs(out, stem, extras)
        if (target.exists() or target.is_symlink()) and target.relative_to(out).as_posix() not in ours
    ]
    if blocked:
        shown = ", ".join(map(str, blocked[:5])) + (f" and {len(blocked) - 5} more" if len(blocked) > 5 else "")
        raise OutputFolderError(
            f"--out {out}: {len(blocked)} output file(s) would replace files that segcore predict did not write "
            f"({shown}); nothing was predicted. Give another --out, or remove (or move) those files first."
        )
    return earlier


def _write(rgb: Any, maps: Any, palette: Any, args: argparse.Namespace, files: tuple[Path, ...]) -> str | None:
    """Write the label PNG, the overlay PNG and the asked extras (atomically); a failure is returned as a message."""
    from segcore.errors import SegcoreError

    try:
        files[0].parent.mkdir(parents=True, exist_ok=True)
        _save_label(maps.labels, palette, files[0])
        shade = maps.confidence if args.overlay == "confidence" else None
        _save_overlay(rgb, maps.labels, palette, args.alpha, files[1], shade)
        _write_extras(maps, files[2:])
    except OSError as err:  # a StorageError names the file and the cause
        return str(err) if isinstance(err, SegcoreError) else f"cannot write its outputs ({type(err).__name__}: {err})"
    return None


def run(args: argparse.Namespace) -> int:
    """Predict every image; exit 1 when some could not be read or written."""
    import json
    import sys

    import segcore
    from segcore.data.storage import write_manifest

    out = Path(args.out)
    items, failed = collect_inputs(args.images, out)
    if not items:
        raise ValueError("no images to segment: " + "; ".join(failed))
    earlier = check_out(out, items, _extras(args))
    model = segcore.SegModel.from_pretrained(args.model)
    # Listed before anything is written, so that a run stopped midway leaves its files marked as its own.
    planned = [f.relative_to(out).as_posix() for _, stem in items for f in _outputs(out, stem, _extras(args))]
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(out / MANIFEST, [*earlier, *planned], "segcore predict")
    try:
        written = _predict_all(args, model, items, out, failed)
    finally:  # the manifest keeps only files that exist
        kept = [f for f in {*earlier, *planned} if (out / f).exists()]
        write_manifest(out / MANIFEST, kept, "segcore predict")
    if args.json:
        print(json.dumps(written + [{"error": message} for message in failed]))
    else:
        for row in written:
            print(f"{row['image']} -> " + ", ".join(v for key, v in row.items() if key != "image"))
    if failed:
        print(f"segcore predict: {len(failed)} input(s) failed, the others were written:", file=sys.stderr)
        for message in failed:
            print(f"  {message}", file=sys.stderr)
        return 1
    return 0


def _predict_all(
    args: argparse.Namespace, model: Any, items: list[tuple[Path, Path]], out: Path, failed: list[str]
) -> list[dict[str, str]]:
    """Predict and write every image; failures are appended to ``failed``; returns the written files."""
    import sys

    import torch
    from segcore.data.io import read_image
    from segcore.errors import ImageReadError
    from segcore.evaluation.inference import EvalProtocol, precision, predict_maps
    from tqdm.auto import tqdm

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device).eval()
    k = model.config.num_classes
    palette = _palette(model.config, k)
    base = EvalProtocol.from_dict(model.config.eval)
    written: list[dict[str, str]] = []
    bar = tqdm(items, unit="img", desc="predict", disable=not args.progress, file=sys.stderr)
    for path, stem in bar:
        try:
            rgb = read_image(path, exif=True)
        except ImageReadError as err:
            failed.append(str(err))
            continue
        protocol = base
        if max(rgb.shape[:2]) > args.max_side and base.mode == "whole" and base.resize is None:
            side = args.max_side
            protocol = base.replace(mode="slide", crop_size=(side, side), stride=(side * 2 // 3, side * 2 // 3))
        inner: list[Any] = []

        def step(done: int, total: int, inner: list[Any] = inner, name: str = path.name) -> None:
            # A second bar, for the windows of an image big enough to need several steps.
            if total > 1 and args.progress:
                if not inner:
                    inner.append(tqdm(total=total, desc=name, unit="step", leave=False, position=1, file=sys.stderr))
                inner[0].update(done - inner[0].n)

        if not rgb.flags.writeable:
            rgb = rgb.copy()  # Pillow's arrays are read-only views; torch wants to own writable memory
        image = torch.from_numpy(rgb).permute(2, 0, 1)[None]
        with precision(device, args.precision):
            maps = predict_maps(
                model,
                image,
                protocol,
                k,
                progress=step,
                confidence=args.confidence or args.overlay == "confidence",
                probs=args.save_probs,
            )
        if inner:
            inner[0].close()
        files = _outputs(out, stem, _extras(args))
        problem = _write(rgb, maps, palette, args, files)
        if problem:
            failed.append(f"{path}: {problem}")
            continue
        row = {"image": str(path), "label": str(files[0]), "overlay": str(files[1])}
        written.append({**row, **{_KEYS[f.name.rsplit("_", 1)[1]]: str(f) for f in files[2:]}})
    bar.close()
    return written


# The --json keys of the extra outputs, by the end of their names.
_KEYS = {"confidence.png": "confidence", "probs.npz": "probs"}


def _write_extras(maps: Any, files: tuple[Path, ...]) -> None:
    """Write the confidence PNG and the probabilities ``.npz`` that ``files`` names (atomically)."""
    from segcore.evaluation.confidence import save_confidence, save_probabilities

    for path in files:
        if path.name.endswith("_confidence.png"):
            save_confidence(maps.confidence, path)
        else:
            save_probabilities(maps.probs, path)

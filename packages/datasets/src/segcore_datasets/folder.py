"""A user's own data with no code: the ``folder`` dataset (images/ + masks/ + classes.txt).

Layout (``root`` = ``--data-root``)::

    root/classes.txt                  one class name per line: line i names label value i
      or root/classes.json            {"names": [...], "palette": [[r, g, b], ...], "ignore_index": 255}
    root/images/<split>/**/<name>.<jpg|jpeg|png|bmp|tif|tiff|webp>
    root/masks/<split>/**/<name>.png  (labels/ or annotations/ in place of masks/)

``<split>`` is ``train`` and ``val`` (or ``validation``). An image and its mask pair by their path relative to the
split folder, without the extension (``images/train/a/x.jpg`` with ``masks/train/a/x.png``). Masks hold class
values (grey or palette-mode PNGs; a palette PNG gives its indices, datasets.md §1.2) or, when classes.json gives a
palette, RGB colours mapped through it (a colour not in it is an error naming the file and the colour). The ignore
value (255 unless classes.json says otherwise) is mapped to 255. Files that do not pair are listed in
``layout_problems``, which the preflight and ``segcore data check`` report by name.

The crop size and the eval protocol come from the data (the first image's size; whole-image evaluation at the
native size); options override them (``--dataset-opt crop_size=256 eval_mode=slide``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segcore_datasets.dataset import IGNORE, DatasetError, SegDataset
from segcore_datasets.own_data import (
    DEFAULT_CROP,
    OPTION_SOURCE,
    ClassInfo,
    OwnDataOptions,
    class_names,
    data_defaults,
    default_palette,
    label_lut,
    pair_files,
    parse_own_options,
    read_class_files,
)

__all__ = ["FolderDatasetOptions", "folder", "LAYOUT"]

LAYOUT = (
    "  <root>/classes.txt (one class name per line: line i is label value i) or <root>/classes.json\n"
    "  <root>/images/{train,val}/**/*.jpg|png|...\n"
    "  <root>/masks/{train,val}/**/*.png (or labels/, annotations/), paired by path without extension"
)
MASK_DIRS = ("masks", "labels", "annotations")
SPLIT_DIRS = {"train": ("train",), "val": ("val", "validation"), "validation": ("validation", "val")}


@dataclass(frozen=True)
class FolderDatasetOptions(OwnDataOptions):
    """Options of the ``folder`` dataset: those of :class:`OwnDataOptions`."""


def _split_dirs(r: Path, split: str) -> tuple[Path, Path]:
    if split not in SPLIT_DIRS:
        raise DatasetError(f"folder: unknown split {split!r}; valid: train, val (or validation)")
    sub = next((s for s in SPLIT_DIRS[split] if (r / "images" / s).is_dir()), None)
    if sub is None:
        want = " or ".join(f"{r / 'images' / s}" for s in SPLIT_DIRS[split])
        raise DatasetError(f"folder: no {split} split: {want} not found; expected layout:\n{LAYOUT}")
    # The masks' split folder may use the other spelling (images/validation with masks/val).
    names = (sub, *(s for s in SPLIT_DIRS[split] if s != sub))
    mask_dir = next((r / d / s for d in MASK_DIRS for s in names if (r / d / s).is_dir()), None)
    if mask_dir is None:
        raise DatasetError(
            f"folder: no masks for {r / 'images' / sub}: none of {', '.join(str(r / d / sub) for d in MASK_DIRS)} "
            f"exists; expected layout:\n{LAYOUT}"
        )
    return r / "images" / sub, mask_dir


def _image_size(path: str) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as img:  # reads the header only
            return img.height, img.width
    except Exception as err:  # noqa: BLE001 - Pillow raises many types for foreign files
        raise DatasetError(f"{path}: unreadable image ({type(err).__name__}: {err})") from None


def folder(root: str | None, split: str = "train", **options: Any) -> SegDataset:
    """A folder of images and masks with a class list (layout in the module docstring).

    Example:
        >>> ds = folder("data/pets", "train")  # doctest: +SKIP
        >>> ds.classes, ds.crop_size, ds.eval_protocol.mode  # doctest: +SKIP
        (('background', 'cat', 'dog'), (375, 375), 'whole')
    """
    opts: FolderDatasetOptions = parse_own_options(FolderDatasetOptions, options, "folder")
    if not root:
        raise DatasetError(f"folder needs its folder: give --data-root DIR (Python: root=DIR) laid out as\n{LAYOUT}")
    r = Path(root)
    if not r.is_dir():
        raise DatasetError(f"folder: {r} not found; expected layout:\n{LAYOUT}")
    img_dir, mask_dir = _split_dirs(r, split)
    info = read_class_files(r)
    if opts.classes:
        info = ClassInfo(
            class_names(opts.classes, OPTION_SOURCE),
            info.palette if info and info.palette and len(info.palette) == len(opts.classes) else None,
            info.ignore_index if info else IGNORE,
            OPTION_SOURCE,
        )
    if info is None:
        raise DatasetError(
            f"folder: {r} has no classes.txt or classes.json; write one class name per line to {r / 'classes.txt'} "
            "(line i is label value i) or give --dataset-opt classes=a,b,c"
        )
    ignore = opts.ignore_index if opts.ignore_index is not None else info.ignore_index
    lut = label_lut(len(info.names), ignore, info.source)
    samples, problems = pair_files(img_dir, mask_dir)
    if not samples and not problems:
        raise DatasetError(f"folder: no images under {img_dir}; expected layout:\n{LAYOUT}")
    if problems:
        warnings.warn(
            f"folder {r} {split}: {len(problems)} file(s) without a partner, e.g. {problems[0]}; "
            "training refuses this split (segcore data check lists them all)",
            stacklevel=2,
        )
    crop, scale, protocol = data_defaults(_image_size(samples[0][0]) if samples else (DEFAULT_CROP,) * 2, opts)
    return SegDataset(
        "folder",
        split,
        classes=info.names,
        palette=info.palette or default_palette(len(info.names)),
        samples=samples,
        lut=lut,
        colours=np.array(info.palette, np.uint8) if info.palette else None,
        strict_colours=True,
        eval_protocol=protocol,
        crop_size=crop,
        train_scale=scale,
        check_values=opts.check_values,
        root=str(root),
        layout_problems=problems,
    )

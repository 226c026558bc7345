"""What the own-data datasets share (``folder`` and ``hf:``): their options, class files, palettes, label tables.

``folder`` (:mod:`segcore_datasets.folder`) and ``hf:`` (:mod:`segcore_datasets.hf`) take the same options
(:class:`OwnDataOptions`), read class names by the same rules (:func:`class_names`, the check of
:func:`segcore.data.check.check_class_names`), map the ignore value through the same table (:func:`label_lut`) and
take their crop size and eval protocol from the data the same way (:func:`data_defaults`). :func:`pair_files` pairs
images and masks by their path without the extension.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from segcore.config.settings import EvalProtocol
from segcore.data.io import IMAGE_EXTENSIONS

from segcore_datasets.dataset import IGNORE, DatasetError

__all__ = [
    "OwnDataOptions",
    "OPTION_SOURCE",
    "DEFAULT_CROP",
    "ClassInfo",
    "normalise_options",
    "parse_own_options",
    "class_names",
    "read_text",
    "read_json_file",
    "read_class_files",
    "default_palette",
    "label_lut",
    "data_defaults",
    "pair_files",
]

DEFAULT_CROP = 512  # the usual training crop of the papers; smaller images train at their own short side


@dataclass(frozen=True)
class OwnDataOptions:
    """Options shared by the ``folder`` and ``hf:`` datasets (``--dataset-opt k=v``).

    Attributes:
        classes: class names, value i = name i; overrides the classes the data declares.
        ignore_index: the label value that marks unlabelled pixels (mapped to 255); default: the data's, else 255.
        crop_size: training crop ``(H, W)``; default: the first image's short side, at most 512.
        eval_mode: ``"whole"`` image (default) or sliding-window (``"slide"``) evaluation.
        eval_crop_size: slide window ``(H, W)``; default: ``crop_size``.
        eval_stride: slide step ``(H, W)``; default: two thirds of the window.
        eval_resize: test-time keep-ratio resize ``(long, short)``; default: none (native size).
        check_values: raise when a label holds a value that is neither a class nor the ignore value.
    """

    classes: tuple[str, ...] | None = None
    ignore_index: int | None = None
    crop_size: tuple[int, int] | None = None
    eval_mode: Literal["whole", "slide"] = "whole"
    eval_crop_size: tuple[int, int] | None = None
    eval_stride: tuple[int, int] | None = None
    eval_resize: tuple[int, int] | None = None
    check_values: bool = True


_PAIRS = ("crop_size", "eval_crop_size", "eval_stride", "eval_resize")


def normalise_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Options as the command line gives them (``256``, ``"a,b"``, ``(1, 2)``) in the form the dataclass takes.

    ``--dataset-opt`` values are parsed by their look when no dataset is named yet, so ``crop_size=256`` arrives
    as an int and ``classes=cat`` as a str: both are accepted here, before strict parsing.
    """
    out = dict(options)
    if isinstance(out.get("classes"), str):  # empty entries are kept: class_names refuses them by position
        out["classes"] = tuple(c.strip() for c in out["classes"].split(","))
    elif isinstance(out.get("classes"), list | tuple):
        # Integer names are their digits; anything else that is not text is refused by the options check.
        out["classes"] = tuple(str(c) if isinstance(c, int) and not isinstance(c, bool) else c for c in out["classes"])
    for key in _PAIRS:
        value = out.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            out[key] = (value, value)
        elif isinstance(value, list | tuple) and len(value) == 1:
            out[key] = (value[0], value[0])
    return out


def parse_own_options(cls: type, options: Mapping[str, Any], name: str) -> Any:
    """Parse ``options`` strictly into ``cls`` (an unknown key names the valid ones)."""
    from segcore.config.options import parse_options

    return parse_options(cls, normalise_options(options), component=name)


# --------------------------------------------------------------------------------------------------------- classes
OPTION_SOURCE = "--dataset-opt classes"


def class_names(names: Sequence[Any], source: str, entry: Callable[[int], str] | None = None) -> tuple[str, ...]:
    """:func:`segcore.data.check.check_class_names` for a dataset: the same rules for every source of names.

    Raises:
        DatasetError: naming ``source`` and the entry (empty, repeated, holding a control character, not text).
    """
    from segcore.data.check import check_class_names
    from segcore.errors import ClassNamesError

    try:
        return check_class_names(list(names), source, *([entry] if entry else []))
    except ClassNamesError as err:
        raise DatasetError(str(err)) from None


def read_text(path: Path) -> str:
    """The UTF-8 text of a dataset's metadata file; one in another encoding is a :class:`DatasetError` naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DatasetError(
            f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}); save it as UTF-8"
        ) from None


def read_json_file(path: Path, shown: str | None = None) -> Any:
    """The JSON value of a dataset's metadata file; bad text or bad JSON is a :class:`DatasetError` naming it."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise DatasetError(f"{shown or path}: not valid JSON ({err})") from None


@dataclass(frozen=True)
class ClassInfo:
    """What a dataset's class files say.

    Attributes:
        names: class names; label value i is class i.
        palette: one RGB colour per class, or ``None`` when the data gives none.
        ignore_index: the on-disk value of unlabelled pixels.
        source: where the names come from (for messages).
    """

    names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...] | None
    ignore_index: int
    source: str


def default_palette(n: int) -> tuple[tuple[int, int, int], ...]:
    """The PASCAL VOC colour map extended to ``n`` classes: distinct, deterministic colours (class 0 black)."""
    colours = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colours.append((r, g, b))
    return tuple(colours)


def _palette(value: Any, n: int, where: str) -> tuple[tuple[int, int, int], ...]:
    ok = isinstance(value, list) and all(
        isinstance(c, list) and len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c) for c in value
    )
    if not ok:
        raise DatasetError(f'{where}: "palette" must be a list of [r, g, b] lists with values 0..255')
    if len(value) != n:
        raise DatasetError(f'{where}: "palette" has {len(value)} colours for {n} class names; give one per class')
    colours = [tuple(c) for c in value]
    seen: dict[tuple[int, ...], int] = {}
    for i, c in enumerate(colours):
        if c in seen:
            raise DatasetError(f"{where}: colour {list(c)} is given to class {seen[c]} and class {i}")
        seen[c] = i
    return tuple(colours)  # type: ignore[return-value]


def _read_json(path: Path) -> ClassInfo:
    data = read_json_file(path)
    valid = ("names", "palette", "ignore_index")
    if not isinstance(data, dict) or not isinstance(data.get("names"), list) or not data["names"]:
        raise DatasetError(f'{path}: expected {{"names": ["class 0", ...], "palette": [...], "ignore_index": 255}}')
    unknown = [k for k in data if k not in valid]
    if unknown:
        raise DatasetError(f"{path}: unknown key(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(valid)}")
    names = class_names(data["names"], str(path), lambda i: f'"names" entry {i} (class {i})')
    palette = _palette(data["palette"], len(names), str(path)) if data.get("palette") is not None else None
    ignore = data.get("ignore_index")
    if ignore is None:
        ignore = IGNORE
    if not isinstance(ignore, int) or isinstance(ignore, bool):
        raise DatasetError(f'{path}: "ignore_index" must be an integer, got {ignore!r}')
    return ClassInfo(names, palette, ignore, str(path))


def _read_txt(path: Path) -> tuple[str, ...]:
    lines = [line.strip() for line in read_text(path).splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise DatasetError(f"{path} is empty; write one class name per line (line i is label value i)")
    empty = [i + 1 for i, line in enumerate(lines) if not line]
    if empty:
        raise DatasetError(
            f"{path}: line(s) {empty} are empty; every line up to the last names the class of its value "
            "(line 1 is value 0)"
        )
    return class_names(lines, str(path), lambda i: f"line {i + 1} (class {i})")


def read_class_files(root: str | Path) -> ClassInfo | None:
    """The classes of a folder dataset from ``classes.json`` or ``classes.txt`` at ``root`` (``None``: neither).

    Raises:
        DatasetError: for a malformed file, or two files that name different classes.
    """
    r = Path(root)
    js, txt = r / "classes.json", r / "classes.txt"
    info = _read_json(js) if js.is_file() else None
    names = _read_txt(txt) if txt.is_file() else None
    if info is not None and names is not None and names != info.names:
        raise DatasetError(f"{txt} and {js} name different classes; keep one of them")
    if info is None and names is not None:
        info = ClassInfo(names, None, IGNORE, str(txt))
    return info


def label_lut(num_classes: int, ignore_index: int, where: str, reduce_zero_label: bool = False) -> np.ndarray:
    """The 256-entry table from on-disk values to train ids: classes kept, the ignore value -> 255.

    Raises:
        DatasetError: when the ignore value is also a class value or out of 0..255, or there are more classes
            than 8-bit masks hold.
    """
    if not 1 <= num_classes <= 255:
        raise DatasetError(f"{where}: {num_classes} classes; 8-bit masks hold 1 to 255 classes besides ignore")
    if not 0 <= ignore_index <= 255:
        raise DatasetError(f"{where}: ignore index {ignore_index} must lie in 0..255 (masks are 8-bit)")
    first = 1 if reduce_zero_label else 0
    if first <= ignore_index < num_classes + first:
        raise DatasetError(
            f"{where}: ignore index {ignore_index} is also the value of class {ignore_index - first}; "
            f"use a value outside {first}..{num_classes + first - 1} (255 by default)"
        )
    lut = np.arange(256, dtype=np.int16) - first
    if reduce_zero_label:
        lut[0] = IGNORE
    lut[ignore_index] = IGNORE
    if ignore_index != IGNORE:
        # 255 is not unlabelled in this data: keep it visible as an out-of-range value (254 is never a class here,
        # as the ignore value lies at or above the class count) so the value check names it instead of ignoring it.
        lut[IGNORE] = IGNORE - 1
    return lut.clip(0, 255).astype(np.uint8)


def data_defaults(size: tuple[int, int], opts: OwnDataOptions) -> tuple[tuple[int, int], tuple[int, int], EvalProtocol]:
    """``(crop_size, train_scale, eval_protocol)`` from the first image's ``(H, W)``, with the options over them."""
    h, w = size
    side = min(DEFAULT_CROP, h, w)
    crop = tuple(opts.crop_size) if opts.crop_size else (side, side)
    window = tuple(opts.eval_crop_size) if opts.eval_crop_size else crop
    stride = tuple(opts.eval_stride) if opts.eval_stride else tuple(max(1, c * 2 // 3) for c in window)
    slide = opts.eval_mode == "slide"
    protocol = EvalProtocol(
        mode=opts.eval_mode,
        crop_size=window if slide else None,  # type: ignore[arg-type]
        stride=stride if slide else None,  # type: ignore[arg-type]
        resize=tuple(opts.eval_resize) if opts.eval_resize else None,  # type: ignore[arg-type]
    )
    return crop, (max(h, w), min(h, w)), protocol  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------------- pairing
def _files(folder: Path, keep: Any) -> dict[str, list[Path]]:
    by_key: dict[str, list[Path]] = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file() or not keep(p):
            continue  # hidden files (.DS_Store, editor backups) are not data
        by_key.setdefault(rel.with_suffix("").as_posix(), []).append(p)
    return by_key


def pair_files(img_dir: Path, mask_dir: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """Pair ``img_dir/<key>.<image ext>`` with ``mask_dir/<key>.png``; return the pairs and the unpaired files."""
    images = _files(img_dir, lambda p: p.suffix.lower() in IMAGE_EXTENSIONS)
    masks = _files(mask_dir, lambda p: p.suffix.lower() in IMAGE_EXTENSIONS) if mask_dir.is_dir() else {}
    pairs: list[tuple[str, str]] = []
    problems: list[str] = []
    for key in sorted(images):
        found = images[key]
        if len(found) > 1:
            problems.append(f"{', '.join(map(str, found))}: two images with one name; a mask pairs with one of them")
            continue
        pngs = [m for m in masks.get(key, []) if m.suffix.lower() == ".png"]
        if pngs:
            pairs.append((str(found[0]), str(pngs[0])))
            continue
        others = masks.get(key, [])
        hint = f" (found {others[0]}: masks must be .png)" if others else ""
        problems.append(f"{found[0]}: no mask {mask_dir / key}.png{hint}")
    for key in sorted(set(masks) - set(images)):
        for m in masks[key]:
            problems.append(f"{m}: mask without an image {img_dir / key}.<{'|'.join(e[1:] for e in IMAGE_EXTENSIONS)}>")
    return pairs, problems

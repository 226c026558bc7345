"""Data checks owned by core: the preflight run before any training, and the model-versus-dataset class check.

Both are torch-free and duck-typed: a dataset is anything with ``len``, ``ds[i]`` (or ``load_arrays``), ``classes``
and ``ignore_index``; one that knows of files it could not pair lists them in ``layout_problems``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from segcore.errors import ClassMismatchError, ClassNamesError

__all__ = ["preflight", "label_arrays", "ClassComparison", "compare_classes", "check_classes", "check_class_names"]

# The preflight's message lists this many problems, then counts the rest (``segcore data check`` lists them all).
MAX_LISTED = 50


def label_arrays(ds: Any, i: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Sample ``i`` of a duck-typed dataset as ``(image [H, W, 3], label [H, W], path)``.

    ``ds.load_arrays(i)`` when the dataset has it (no tensors made), else ``ds[i]`` with its ``[3, H, W]`` image
    seen as ``[H, W, 3]``; the path names the sample in messages.
    """
    if hasattr(ds, "load_arrays"):
        out = ds.load_arrays(i)
        image, label = out[0], out[1]
        path = out[2] if len(out) > 2 else f"{getattr(ds, 'name', 'dataset')}[{i}]"
        return image, label, path
    s = ds[i]
    image = np.asarray(s["image"]).transpose(1, 2, 0)
    return image, np.asarray(s["label"]), str(s.get("path", i))


def _sample_problems(ds: Any, i: int, c: int, ignore: int, seen: set[int]) -> list[str]:
    try:
        image, label, path = label_arrays(ds, i)
    except ValueError as err:  # a reader's own check (missing file, value out of range) names the file
        return [str(err)]
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        return [f"{path}: image must be uint8 RGB, got {image.dtype} {image.shape}"]
    if image.shape[:2] != label.shape:
        return [f"{path}: image size {image.shape[:2]} != label size {label.shape}"]
    vals = np.unique(label)
    seen.update(int(v) for v in vals)
    bad = [int(v) for v in vals if (v < 0 or v >= c) and v != ignore]
    return [f"{path}: label value(s) {bad} outside 0..{c - 1} and not ignore {ignore}"] if bad else []


def preflight(ds: Any, n: int = 8, num_classes: int | None = None) -> dict[str, Any]:
    """Load up to ``n`` evenly spread samples and check them; raise ``ValueError`` naming every bad file found.

    Checks: the dataset is not empty; every entry of ``ds.layout_problems`` (files the dataset could not pair,
    e.g. an image without a mask); image is uint8 RGB; image and label sizes are equal; label values lie in
    ``[0, num_classes)`` or equal ``ds.ignore_index``. All problems are collected before raising, one per line.

    Returns:
        ``{"checked": k, "num_classes": C, "label_values": sorted values seen}``.
    """
    name = getattr(ds, "name", "dataset")
    problems = [str(p) for p in (getattr(ds, "layout_problems", None) or ())]
    length = len(ds)
    if length == 0 and not problems:
        raise ValueError(f"{name}: the dataset is empty")
    c = num_classes if num_classes is not None else len(ds.classes)
    ignore = getattr(ds, "ignore_index", 255)
    idx = sorted(set(np.linspace(0, length - 1, min(n, length)).round().astype(int).tolist())) if length else []
    seen: set[int] = set()
    for i in idx:
        problems += _sample_problems(ds, i, c, ignore, seen)
    if problems:
        # One line per problem, the first one first (so a single problem reads as before), then the count.
        lines = problems[:MAX_LISTED]
        if len(problems) > len(lines):
            lines.append(f"... and {len(problems) - len(lines)} more (segcore data check lists them all)")
        if len(problems) > 1:
            lines.append(f"{len(problems)} problems in {name}")
        raise ValueError("\n".join(lines))
    return {"checked": len(idx), "num_classes": c, "label_values": sorted(seen)}


# ------------------------------------------------------------------------------------------------- class checks
def _key(name: str) -> str:
    # Names from different sources differ in case and stray spaces (mmseg's ADE20K 'bed '): not a real difference.
    return " ".join(str(name).split()).casefold()


def _class_entry(i: int) -> str:
    return f"class {i}"


def check_class_names(names: Sequence[Any], source: str, entry: Callable[[int], str] = _class_entry) -> tuple[str, ...]:
    """The class names of one source (a file or an option), checked by the rules every source shares.

    Each name is text (an integer is taken as its digits), stripped of surrounding spaces, not empty, free of
    control characters (Unicode category Cc, line and paragraph separators) and different from every other name,
    comparing as :func:`compare_classes` does (case and runs of spaces do not count): the trackers and the tables
    keep one value per name, and a name is one line of text.

    Args:
        names: the names, class 0 first.
        source: the file or option they come from (``data/classes.txt``, ``--dataset-opt classes``).
        entry: how the message names entry ``i`` (default ``class i``; ``line i+1`` for a text file).

    Returns:
        The stripped names.

    Raises:
        ClassNamesError: naming ``source`` and the first offending entry, and saying how to fix it.

    Example:
        >>> check_class_names([" background", "cat "], "classes.txt")
        ('background', 'cat')
    """
    out: list[str] = []
    seen: dict[str, int] = {}
    if not names:
        raise ClassNamesError(f"{source}: no class names; give one name per class (class 0 first)")
    for i, raw in enumerate(names):
        if isinstance(raw, bool) or not isinstance(raw, str | int):
            raise ClassNamesError(f"{source}: {entry(i)} is {raw!r}, not a name; give each class a text name")
        name = str(raw).strip()
        if not name:
            raise ClassNamesError(f"{source}: {entry(i)} has an empty name; give every class value a name")
        bad = next((ch for ch in name if unicodedata.category(ch) in ("Cc", "Zl", "Zp")), None)
        if bad is not None:
            raise ClassNamesError(
                f"{source}: {entry(i)} {name!r} holds the control character U+{ord(bad):04X}; a class name is "
                "one line of plain text: remove it"
            )
        first = seen.setdefault(_key(name), i)
        if first != i:
            raise ClassNamesError(
                f"{source}: {entry(i)} {name!r} repeats {entry(first)} {out[first]!r} (names are compared "
                "ignoring case and spaces); give every class its own name"
            )
        out.append(name)
    return tuple(out)


@dataclass(frozen=True)
class ClassComparison:
    """A model's classes against a dataset's, label value by label value.

    Attributes:
        model_count: number of classes the model predicts.
        dataset_count: number of classes of the dataset.
        model_names: the model's class names (empty when it does not record them).
        dataset_names: the dataset's class names.
        renamed: ``(value, model name, dataset name)`` for every value below both counts whose names differ
            (ignoring case and surrounding spaces); empty when either side has no names.
    """

    model_count: int
    dataset_count: int
    model_names: tuple[str, ...]
    dataset_names: tuple[str, ...]
    renamed: tuple[tuple[int, str, str], ...]

    @property
    def same_count(self) -> bool:
        """Whether the model's output channels match the dataset's label values one to one."""
        return self.model_count == self.dataset_count

    @property
    def identical(self) -> bool:
        """Same count and no name that differs."""
        return self.same_count and not self.renamed

    def describe_renamed(self, limit: int = 5) -> str:
        """The differing names as one line, e.g. ``1 'disc' vs 'circle', 2 'square' vs 'box'``."""
        shown = ", ".join(f"{v} {m.strip()!r} vs {d.strip()!r}" for v, m, d in self.renamed[:limit])
        more = len(self.renamed) - limit
        return shown + (f" and {more} more" if more > 0 else "")


def compare_classes(model_classes: Sequence[str] | int, dataset_classes: Sequence[str] | int) -> ClassComparison:
    """Compare a model's classes with a dataset's: counts, and names at each label value.

    Args:
        model_classes: the model's class names, or only their number when it records no names.
        dataset_classes: the dataset's class names (or their number).

    Example:
        >>> compare_classes(["bg", "cat"], ["background", "cat"]).renamed
        ((0, 'bg', 'background'),)
    """
    m_names = () if isinstance(model_classes, int) else tuple(str(n) for n in model_classes)
    d_names = () if isinstance(dataset_classes, int) else tuple(str(n) for n in dataset_classes)
    m_count = model_classes if isinstance(model_classes, int) else len(m_names)
    d_count = dataset_classes if isinstance(dataset_classes, int) else len(d_names)
    renamed = tuple(
        (v, m, d) for v, (m, d) in enumerate(zip(m_names, d_names)) if _key(m) != _key(d)
    )  # zip stops at the shorter list: beyond it there is nothing to compare
    return ClassComparison(int(m_count), int(d_count), m_names, d_names, renamed)


def check_classes(
    model_classes: Sequence[str] | int,
    dataset_classes: Sequence[str] | int,
    model: str = "the model",
    dataset: str = "the dataset",
    fix: str = "",
) -> ClassComparison:
    """:func:`compare_classes`, raising when the counts differ; the caller decides what to do with renamed classes.

    Args:
        model_classes: the model's class names (or their number).
        dataset_classes: the dataset's class names (or their number).
        model: how the message names the model (e.g. its path).
        dataset: how the message names the dataset (e.g. ``folder data/pets val``).
        fix: what the user can do, appended to the message.

    Raises:
        ClassMismatchError: naming both counts (and ``fix``) when they differ.
    """
    result = compare_classes(model_classes, dataset_classes)
    if not result.same_count:
        message = f"{model} predicts {result.model_count} classes but {dataset} has {result.dataset_count}"
        raise ClassMismatchError(message + (f": {fix}" if fix else ""))
    return result

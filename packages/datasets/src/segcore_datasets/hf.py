"""Any Hugging Face dataset as a segmentation dataset: ``--dataset hf:<repo id or local folder>``.

Reading goes through the ``datasets`` library: a Hub repo and a local folder of parquet shards
(``data/train-*.parquet``, ``data/validation-*.parquet``) through ``load_dataset``, a folder written by
``save_to_disk`` through ``load_from_disk``. Our ``train`` split is the Hub's ``train``; our ``val`` is its
``validation``, else ``val``, else ``test`` (``--dataset-opt hf_split=NAME`` picks another).

Columns are found by name among those holding images or 2-D arrays (image: ``image``, ``pixel_values``, ``img``;
label: ``label``, ``annotation``, ``mask``, ``semantic_segmentation``, ``segmentation``, ...) or named with
``image_column=`` / ``label_column=``. Classes come from ``classes=a,b,c``, else ``id2label.json`` at the repo's top
(``{"0": "background", "1": "cat"}``, the convention of many Hub segmentation datasets), else a ``ClassLabel``
feature of the label column.

Nothing is decoded up front: the two columns are read with ``decode=False`` and each row's image and label are
decoded when the sample is read, by the same readers as every other dataset (no EXIF rotation, datasets.md §12).
``load_dataset`` keeps its usual Arrow cache of the encoded rows (for a Hub repo, that is its download). A cell that
cannot be decoded is an error naming the split, row and column; ``skip_bad=true`` leaves such rows out and counts
them (:func:`skip_bad_rows`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segcore_datasets.dataset import IGNORE, SKIP_HINT, DatasetError, SegDataset, as_pil
from segcore_datasets.own_data import (
    OPTION_SOURCE,
    OwnDataOptions,
    class_names,
    data_defaults,
    default_palette,
    label_lut,
    parse_own_options,
    read_json_file,
)

__all__ = [
    "HubDatasetOptions",
    "hub_dataset",
    "load_table",
    "find_columns",
    "skip_bad_rows",
    "encoded",
    "IMAGE_COLUMNS",
    "LABEL_COLUMNS",
]

IMAGE_COLUMNS = ("image", "pixel_values", "img")
LABEL_COLUMNS = ("label", "annotation", "mask", "semantic_segmentation", "segmentation", "stuff_map", "seg", "gt")
# Our split -> the Hub split names tried in order.
SPLITS = {
    "train": ("train",),
    "val": ("validation", "val", "test"),
    "validation": ("validation", "val", "test"),
    "test": ("test",),
}


@dataclass(frozen=True)
class HubDatasetOptions(OwnDataOptions):
    """Options of the ``hf:`` datasets: those of :class:`~segcore_datasets.own_data.OwnDataOptions` and these.

    Attributes:
        image_column: the column holding the images (default: found by name).
        label_column: the column holding the label maps (default: found by name).
        hf_split: the Hub split to read (default: ``train`` for train; ``validation``, ``val`` or ``test`` for val).
        config: the dataset's configuration name (``load_dataset(repo, name=config)``), when it has several.
        reduce_zero_label: value 0 is "unlabelled": it becomes ignore and value v becomes class v - 1
            (datasets.md §1.3, e.g. ``scene_parse_150``).
        skip_bad: read every row once when the dataset is built and leave out the rows that cannot be read (not
            an image, truncated, sizes that differ, values outside the classes), counting them in a warning and
            listing them in ``dataset.skipped``; without it the first bad row stops the run, named by its split,
            row and column.
    """

    image_column: str | None = None
    label_column: str | None = None
    hf_split: str | None = None
    config: str | None = None
    reduce_zero_label: bool = False
    skip_bad: bool = False


def _is_saved(local: Path) -> bool:
    return (local / "dataset_dict.json").is_file() or (local / "state.json").is_file()


def _pick(available: list[str], split: str, wanted: tuple[str, ...], where: str) -> str:
    pick = next((s for s in wanted if s in available), None)
    if pick is None:
        raise DatasetError(
            f"{where} has no split {' / '.join(repr(s) for s in wanted)} for {split!r}; it has {available} "
            "(--dataset-opt hf_split=NAME picks one)"
        )
    return pick


def load_table(
    ref: str, split: str, wanted: tuple[str, ...] | None = None, config: str | None = None
) -> tuple[Any, str]:
    """The ``datasets.Dataset`` of one split of ``ref`` (Hub repo id, parquet folder or save_to_disk folder).

    Args:
        ref: Hub repo id or local folder.
        split: our split name (for messages and as the default Hub name).
        wanted: the Hub split names to try, in order (default: :data:`SPLITS` of ``split``).
        config: the dataset's configuration name, if it has several.

    Returns:
        ``(table, hub split name)``.

    Raises:
        DatasetError: when the split does not exist, naming those that do.
    """
    import datasets as hfds

    where = f"Hub dataset {ref}"
    wanted = wanted or SPLITS.get(split, (split,))
    local = Path(ref)
    if local.is_dir() and _is_saved(local):
        obj = hfds.load_from_disk(str(local))
        if isinstance(obj, hfds.DatasetDict):
            pick = _pick(list(obj), split, wanted, where)
            return obj[pick], pick
        return obj, wanted[0]
    if not local.exists() and (ref.startswith((".", "/", "~")) or ref.count("/") > 1):
        raise DatasetError(f"{where}: no such folder, and not a Hub repo id (<owner>/<name>)")
    try:
        builder = hfds.load_dataset_builder(str(local) if local.is_dir() else ref, name=config)
    except Exception as err:  # noqa: BLE001 - network, auth and format errors all end here: say which dataset
        from segcore.weights.hub import is_network_error, network_failure

        if is_network_error(err):
            raise network_failure(err, f"read the Hub dataset {ref!r}") from None
        raise DatasetError(f"{where}: datasets.load_dataset cannot open it ({type(err).__name__}: {err})") from None
    files = builder.config.data_files or {}
    available = [str(s) for s in files] or [str(s) for s in (builder.info.splits or {})]
    pick = _pick(available, split, wanted, where) if available else wanted[0]
    return hfds.load_dataset(str(local) if local.is_dir() else ref, name=config, split=pick), pick


def _kind(feature: Any) -> str:
    """``"image"`` for an Image feature, ``"array"`` for (nested) lists/arrays of numbers, else ``"other"``."""
    import datasets as hfds

    if isinstance(feature, hfds.Image):
        return "image"
    if type(feature).__name__.startswith("Array"):
        return "array"
    inner = getattr(feature, "feature", None)
    if inner is not None and not isinstance(feature, dict):
        sub = _kind(inner)
        return "array" if sub in ("array", "scalar") else "other"
    if isinstance(feature, hfds.ClassLabel) or (
        isinstance(feature, hfds.Value) and feature.dtype.startswith(("int", "uint", "bool"))
    ):
        return "scalar"
    return "other"


def find_columns(
    table: Any, image_column: str | None, label_column: str | None, where: str, label_names: tuple[str, ...]
) -> tuple[str, str]:
    """The image and label columns: the ones named, else the first known name holding images or 2-D arrays.

    A ``label`` column of class indices (image classification) is skipped: only pictures and arrays are masks.
    """
    feats = table.features
    cols = list(table.column_names)
    for given in (image_column, label_column):
        if given is not None and given not in cols:
            raise DatasetError(f"{where}: no column {given!r}; it has {cols}")

    def first(names: tuple[str, ...]) -> str | None:
        return next((c for c in names if c in cols and _kind(feats[c]) in ("image", "array")), None)

    img = image_column or first(IMAGE_COLUMNS)
    lab = label_column or first(label_names)
    if img is None or lab is None:
        described = ", ".join(f"{c} ({type(feats[c]).__name__})" for c in cols)
        raise DatasetError(
            f"{where}: found no {'image' if img is None else 'label'} column among {described}; name them with "
            "--dataset-opt image_column=NAME label_column=NAME (Python: image_column=..., label_column=...)"
        )
    return img, lab


def _class_label_names(feature: Any) -> tuple[str, ...] | None:
    import datasets as hfds

    while feature is not None:
        if isinstance(feature, hfds.ClassLabel):
            return tuple(feature.names)
        feature = getattr(feature, "feature", None)
    return None


def _id2label(ref: str) -> tuple[Any, str] | None:
    local = Path(ref)
    if local.is_dir():
        path = local / "id2label.json"
        return (read_json_file(path), str(path)) if path.is_file() else None
    try:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(ref, "id2label.json", repo_type="dataset")
    except Exception:  # noqa: BLE001 - absent file, offline or private: the other sources of classes follow
        return None
    shown = f"{ref}/id2label.json (Hub dataset)"
    return read_json_file(Path(path), shown), shown


def _names_from_id2label(data: Any, source: str, ignore: int) -> tuple[str, ...]:
    if not isinstance(data, dict) or not data:
        raise DatasetError(f'{source}: expected {{"0": "class 0", "1": "class 1", ...}}')
    try:
        table = {int(k): v for k, v in data.items()}
    except ValueError:
        raise DatasetError(f"{source}: keys must be label values (integers as strings)") from None
    table.pop(ignore, None)  # some repos name their ignore value ("255": "unlabeled"): it is not a class
    top = max(table) + 1
    gaps = [i for i in range(top) if i not in table]
    if gaps:
        raise DatasetError(
            f"{source}: no name for value(s) {gaps[:10]}; name every value from 0 to {top - 1} "
            "or give --dataset-opt classes=a,b,c"
        )
    return class_names([table[i] for i in range(top)], source, lambda i: f'key "{i}"')


def _first_size(table: Any, column: str, where: str, row: int = 0) -> tuple[int, int]:
    if len(table) == 0:
        raise DatasetError(f"{where}: the split is empty")
    img = as_pil(table[row][column], f"{where} row {row}, column {column!r}")
    return img.height, img.width


def skip_bad_rows(ds: SegDataset) -> tuple[list[int], list[str]]:
    """Read every row of a table dataset once: the rows that read, and one message per row that does not.

    This is what ``skip_bad`` does; the bad rows are counted in a warning (as the ``folder`` dataset counts the
    files it leaves out) and each message names the row's split, row number and column.

    Raises:
        DatasetError: when no row can be read.
    """
    good: list[int] = []
    bad: list[str] = []
    for i in range(len(ds)):
        try:
            ds.load_arrays(i)
        except ValueError as err:  # DatasetError and the image reader's errors, each naming the row
            bad.append(str(err).removesuffix(SKIP_HINT))
        else:
            good.append(i)
    where = f"{ds.root} ({ds.hf_split} split)"
    if bad and not good:
        raise DatasetError(f"{where}: none of its {len(bad)} rows can be read, e.g. {bad[0]}")
    if bad:
        warnings.warn(
            f"{where}: skipped {len(bad)} of {len(bad) + len(good)} row(s) that cannot be read (skip_bad), "
            f"e.g. {bad[0]}",
            stacklevel=3,
        )
    return good, bad


def hub_dataset(ref: str, root: str | None = None, split: str = "train", **options: Any) -> SegDataset:
    """``hf:<ref>``: a Hub repo id, a local folder of parquet shards or a ``save_to_disk`` folder.

    Example:
        >>> ds = hub_dataset("segments/sidewalk-semantic", split="train")  # doctest: +SKIP
        >>> ds = segcore.build_dataset("hf:data/my_parquet", split="val", label_column="mask")  # doctest: +SKIP
    """
    opts: HubDatasetOptions = parse_own_options(HubDatasetOptions, options, "hf:")
    if ref and root:
        raise DatasetError(f"hf:{ref}: give the dataset once, as --dataset hf:REPO_OR_DIR (not also --data-root)")
    ref = ref or str(root or "")
    if not ref:
        raise DatasetError("hf: needs a repo id or folder: --dataset hf:<owner>/<name> or hf:<folder>")
    name = f"hf:{ref}"
    table, hub_split = load_table(ref, split, (opts.hf_split,) if opts.hf_split else None, opts.config)
    where = f"{name} ({hub_split} split)"
    img_col, lab_col = find_columns(table, opts.image_column, opts.label_column, where, LABEL_COLUMNS)
    table = encoded(table.select_columns([img_col] if img_col == lab_col else [img_col, lab_col]))
    ignore = opts.ignore_index if opts.ignore_index is not None else IGNORE
    names, source = _classes(ref, table, lab_col, opts, ignore)
    kw: dict[str, Any] = dict(
        classes=names,
        palette=default_palette(len(names)),
        hf=table,
        hf_columns=(img_col, lab_col),
        hf_split=hub_split,
        root=name,
        lut=label_lut(len(names), ignore, source, reduce_zero_label=opts.reduce_zero_label),
        check_values=opts.check_values,
        reduce_zero_label=opts.reduce_zero_label,
    )
    if opts.skip_bad:
        kw["hf_rows"], kw["skipped"] = skip_bad_rows(SegDataset(name, split, **kw))
    first = kw["hf_rows"][0] if kw.get("hf_rows") else 0
    crop, scale, protocol = data_defaults(_first_size(table, img_col, where, first), opts)
    return SegDataset(name, split, eval_protocol=protocol, crop_size=crop, train_scale=scale, **kw)


def _classes(ref: str, table: Any, lab_col: str, opts: HubDatasetOptions, ignore: int) -> tuple[tuple[str, ...], str]:
    if opts.classes:
        return class_names(opts.classes, OPTION_SOURCE), OPTION_SOURCE
    found = _id2label(ref)
    if found is not None:
        return _names_from_id2label(found[0], found[1], ignore), found[1]
    from_feature = _class_label_names(table.features[lab_col])
    if from_feature:
        source = f"hf:{ref} ClassLabel of column {lab_col!r}"
        return class_names(from_feature, source), source
    raise DatasetError(
        f"hf:{ref}: no class names: add id2label.json at the repo's top "
        '({"0": "background", "1": "cat", ...}), store the labels with a ClassLabel feature, '
        "or give --dataset-opt classes=a,b,c"
    )


def encoded(table: Any) -> Any:
    """The table with its Image columns left encoded (``decode=False``): each row is decoded when read, by us.

    ``datasets``' own decoding applies EXIF rotation, which would turn a photo away from its mask (datasets.md §12).
    """
    import datasets as hfds

    for col, feature in table.features.items():
        if isinstance(feature, hfds.Image) and feature.decode:
            table = table.cast_column(col, hfds.Image(decode=False))
    return table

"""File-based paper datasets with mmseg 0.x conventions (datasets.md §§1-8) and Hub copies (``root="hf:..."``).

Pairing (§1.1): with a split file, ``img_dir/stem+img_suffix`` and ``ann_dir/stem+seg_suffix``; without one, a
sorted recursive scan of ``img_dir``. Labels are decoded with Pillow "unchanged" semantics (palette PNGs give their
indices, §1.2) and mapped to train ids through a 256-entry lookup table that folds in ``reduce_zero_label`` (§1.3)
and the release-to-train-id maps (Cityscapes labelIds, COCO-Stuff raw 182 ids). Images are decoded to RGB without
EXIF rotation (§12).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from segcore.settings import EvalProtocol

from segcore_datasets import meta

__all__ = [
    "DatasetError",
    "FolderOptions",
    "SegDataset",
    "read_image",
    "read_label",
    "read_mat_label",
    "coco_stuff10k_mat_lut",
    "reduce_zero_label_lut",
    "ade20k",
    "cityscapes",
    "coco_stuff164k",
    "coco_stuff10k",
    "voc2012_aug",
    "pascal_context_59",
    "pascal_context_60",
    "isaid",
]

IGNORE = 255
# How a message about one bad row of a table says what to do (``skip_bad`` drops it from the rows it leaves out).
SKIP_HINT = "; fix or drop the row, or pass --dataset-opt skip_bad=true to leave bad rows out"


class DatasetError(ValueError):
    """Bad or missing data; the message names the file (or folder) and the reason."""


@dataclass(frozen=True)
class FolderOptions:
    """Options of the file-based datasets.

    Attributes:
        check_values: raise when a mapped label holds a value >= num_classes that is not the ignore index.
        hf_split: for ``root="hf:..."``, the Hub split name to read (default: the requested split, with
            ``val`` falling back to ``validation``).
        skip_bad: for ``root="hf:..."``, read every row once when the dataset is built and leave out (and count)
            the rows that cannot be read, instead of stopping at the first one.
    """

    check_values: bool = True
    hf_split: str | None = None
    skip_bad: bool = False


def reduce_zero_label_lut() -> np.ndarray:
    """256-entry table of §1.3: 0 -> 255, v -> v - 1 (1 <= v <= 254), 255 -> 255."""
    lut = np.arange(256, dtype=np.int16) - 1
    lut[0] = IGNORE
    lut[255] = IGNORE
    return lut.astype(np.uint8)


def coco_stuff10k_mat_lut() -> np.ndarray:
    """COCO-Stuff 10k ``S`` values (0 unlabeled, 1..182) -> prepared values (0, trainId + 1) (datasets.md §5.2)."""
    lut = np.zeros(256, np.uint8)
    for raw, tid in meta.COCO_STUFF_RAW_TO_TRAINID.items():
        lut[raw + 1] = tid + 1  # the 164k map shifted by one; 0 (unlabeled) stays 0
    return lut[:183]


def _map_lut(mapping: dict[int, int], default: int = IGNORE) -> np.ndarray:
    lut = np.full(256, default, np.uint8)
    for k, v in mapping.items():
        lut[k] = v
    return lut


def read_image(path: str | Path, source: Any = None) -> np.ndarray:
    """Decode an image file (or an open PIL image) to uint8 RGB [H, W, 3] with core's reader, without EXIF rotation.

    Grey/RGBA/palette images become RGB; 16-bit and float images are rescaled (see :mod:`segcore.data.io`), the same
    way ``segcore predict`` reads them.
    """
    from segcore.data.io import read_image as _read
    from segcore.errors import ImageReadError

    try:
        return _read(source if source is not None else path, name=str(path))
    except ImageReadError as err:
        raise DatasetError(str(err)) from None


def read_label(
    path: str | Path, colours: np.ndarray | None = None, source: Any = None, strict_colours: bool = False
) -> np.ndarray:
    """Decode a label map to uint8 [H, W] with Pillow "unchanged" semantics (§1.2).

    Palette PNGs give their indices; 16-bit maps are accepted when every value fits in 0..255 and refused
    otherwise. A colour (RGB) label is mapped through ``colours`` (row i = colour of id i) when given, taken as grey
    when its channels are equal, refused otherwise. An unknown colour becomes 0, as mmseg's iSAID converter does,
    or, with ``strict_colours``, is a :class:`DatasetError` naming the file and the colour.
    """
    try:
        img = source if source is not None else Image.open(path)
        img.load()
    except FileNotFoundError:
        raise DatasetError(f"{path}: label file not found") from None
    except Exception as err:  # noqa: BLE001
        raise DatasetError(f"{path}: unreadable or truncated label ({type(err).__name__}: {err})") from None
    if img.mode in ("RGBA", "LA"):
        img = img.convert("RGB" if img.mode == "RGBA" else "L")
    arr = np.asarray(img)
    if arr.ndim == 3:
        if colours is not None:
            if strict_colours:
                return colours_to_ids_strict(arr[..., :3], colours, str(path))
            return colours_to_ids(arr[..., :3], colours)
        if (arr[..., 0] == arr[..., 1]).all() and (arr[..., 0] == arr[..., 2]).all():
            return np.ascontiguousarray(arr[..., 0]).astype(np.uint8)
        raise DatasetError(
            f"{path}: label is a colour image (mode {img.mode}); expected a single-channel index map (L or P mode "
            'PNG), or give the class colours (folder datasets: "palette" in classes.json)'
        )
    if arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise DatasetError(
                f"{path}: {img.mode} label holds values up to {int(arr.max())}; only 8-bit values 0..255 are supported"
            )
        arr = arr.astype(np.uint8)
    return arr


def read_mat_label(path: str | Path, field: Sequence[str], lut: np.ndarray | None = None) -> np.ndarray:
    """Read a release ``.mat`` label map (COCO-Stuff 10k ``S``, SBD ``GTcls.Segmentation``) as uint8 [H, W].

    ``field`` is the path of the map inside the file (struct fields are followed in order); ``lut`` maps the stored
    values (0..len(lut)-1) to the prepared PNG values, as ``segcore data prepare`` would write them.
    """
    from scipy.io import loadmat

    try:
        obj: Any = loadmat(str(path))
    except FileNotFoundError:
        raise DatasetError(f"{path}: label file not found") from None
    except Exception as err:  # noqa: BLE001 - scipy raises several types for truncated files
        raise DatasetError(f"{path}: unreadable or truncated .mat label ({type(err).__name__}: {err})") from None
    for key in field:
        try:
            obj = obj[key] if isinstance(obj, dict) else obj[0, 0][key]
        except (KeyError, ValueError, IndexError):
            raise DatasetError(f"{path}: no field {'.'.join(field)} in the .mat label") from None
    arr = np.asarray(obj)
    if arr.ndim != 2 or arr.size == 0:
        raise DatasetError(f"{path}: .mat label {'.'.join(field)} has shape {arr.shape}; expected a 2-D map")
    top = 255 if lut is None else len(lut) - 1
    if arr.min() < 0 or arr.max() > top:
        raise DatasetError(f"{path}: .mat label holds values {int(arr.min())}..{int(arr.max())}; expected 0..{top}")
    arr = arr.astype(np.int64)
    return (lut[arr] if lut is not None else arr).astype(np.uint8)


def colours_to_ids(rgb: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Map an RGB label [H, W, 3] to ids by exact colour match; unmatched colours become 0."""
    code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    table = (colours[:, 0].astype(np.int64) << 16) | (colours[:, 1].astype(np.int64) << 8) | colours[:, 2]
    out = np.zeros(code.shape, np.uint8)
    for i, c in enumerate(table):
        out[code == c] = i
    return out


def colours_to_ids_strict(rgb: np.ndarray, colours: np.ndarray, path: str) -> np.ndarray:
    """Map an RGB label [H, W, 3] to ids by exact colour match; a colour not in ``colours`` is an error.

    Raises:
        DatasetError: naming ``path``, the unknown colour(s) and where the first one is.
    """
    code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    table = (colours[:, 0].astype(np.int64) << 16) | (colours[:, 1].astype(np.int64) << 8) | colours[:, 2]
    order = np.argsort(table, kind="stable")
    ordered = table[order]
    pos = np.searchsorted(ordered, code).clip(max=len(ordered) - 1)
    known = ordered[pos] == code
    if not known.all():
        unknown = np.unique(code[~known])
        y, x = (int(v[0]) for v in np.nonzero(~known))
        shown = ", ".join(str(((int(c) >> 16) & 255, (int(c) >> 8) & 255, int(c) & 255)) for c in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise DatasetError(
            f"{path}: colour {shown}{more} (first at row {y}, column {x}) is not in the palette of "
            f"{len(colours)} class colours; add it to the palette or fix the mask"
        )
    return order[pos].astype(np.uint8)


class SegDataset:
    """A segmentation dataset: list of (image, label) files or a Hub/``datasets`` table, plus its conventions.

    ``ds[i]`` -> ``{"image": uint8 [3, H, W], "label": int64 [H, W] (train ids, ignore 255), "path": str}``.

    Attributes:
        classes, palette, ignore_index: class names, RGB palette, ignore value.
        lut: 256-entry uint8 table from on-disk values to train ids (reduction and release maps folded in).
        test_resize: the keep-ratio test ``img_scale`` (long, short) of the papers' configs (§9), or None.
        eval_protocol: the reference test pipeline of the papers' configs (§9), used by ``segcore eval`` for a
            model that carries no protocol of its own.
        crop_size: the training crop of the reference configs.
        train_scale: the train ``img_scale`` (long, short) that the random ratio multiplies (§9).
        layout_problems: files that could not be paired (an image without a mask, a mask without an image), one
            message per file naming it; the preflight refuses a split that has any.
    """

    ignore_index = IGNORE

    def __init__(
        self,
        name: str,
        split: str,
        classes: tuple[str, ...],
        palette: tuple[tuple[int, int, int], ...],
        samples: list[tuple[str, str]] | None = None,
        lut: np.ndarray | None = None,
        colours: np.ndarray | None = None,
        eval_protocol: EvalProtocol | None = None,
        crop_size: tuple[int, int] = (512, 512),
        check_values: bool = True,
        hf: Any = None,
        hf_columns: tuple[str, str] | None = None,
        root: str | None = None,
        reduce_zero_label: bool = False,
        train_scale: tuple[int, int] = (2048, 512),
        mat_label: tuple[tuple[str, ...], np.ndarray | None] | None = None,
        strict_colours: bool = False,
        layout_problems: Sequence[str] = (),
        hf_split: str | None = None,
        hf_rows: Sequence[int] | None = None,
        skipped: Sequence[str] = (),
    ) -> None:
        self.name, self.split, self.root = name, split, root
        self.classes, self.palette = classes, palette
        self.samples = samples or []
        self.lut = lut if lut is not None else np.arange(256, dtype=np.uint8)
        self.colours = colours
        self.eval_protocol = eval_protocol or EvalProtocol()
        self.test_resize = self.eval_protocol.resize
        self.crop_size = crop_size
        self.train_scale = train_scale
        self.check_values = check_values
        self.reduce_zero_label = reduce_zero_label
        self._hf, self._hf_columns = hf, hf_columns
        self.mat_label: tuple[tuple[str, ...], np.ndarray | None] = mat_label or (("S",), None)
        self.strict_colours = strict_colours
        self.layout_problems = list(layout_problems)
        self.hf_split = hf_split or split
        self._hf_rows = list(hf_rows) if hf_rows is not None else None
        self.skipped = list(skipped)

    @property
    def num_classes(self) -> int:
        """Number of classes C (train ids 0..C-1)."""
        return len(self.classes)

    def __len__(self) -> int:
        if self._hf_rows is not None:
            return len(self._hf_rows)
        return len(self._hf) if self._hf is not None else len(self.samples)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, split={self.split!r}, n={len(self)}, root={self.root!r})"

    def load_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        """Sample ``index`` as (uint8 RGB [H, W, 3], uint8 train-id label [H, W], path)."""
        if self._hf is not None:
            image, raw, path = self._hf_arrays(int(index))
            where, label_file = self.hf_row_name(int(index)), ""
        else:
            img_path, label_file = self.samples[index][0], self.samples[index][1]
            image = read_image(img_path)
            if label_file.endswith(".mat"):
                raw = read_mat_label(label_file, *self.mat_label)
            else:
                raw = read_label(label_file, self.colours, strict_colours=self.strict_colours)
            path = where = img_path
        label = self.lut[raw]
        if image.shape[:2] != label.shape:
            # A photo whose EXIF tag rotates it for display, labelled as displayed: datasets read stored pixels.
            turned = image.shape[:2] == label.shape[::-1]
            raise DatasetError(
                f"{where}: image size {image.shape[0]}x{image.shape[1]} differs from label size "
                f"{label.shape[0]}x{label.shape[1]} ({label_file})"
                + ("; if the image carries an EXIF rotation, the mask must follow its stored pixels" if turned else "")
            )
        if self.check_values:
            bad = (label >= self.num_classes) & (label != IGNORE)
            if bad.any():
                vals = sorted(set(np.unique(raw[bad]).tolist()))
                raise DatasetError(
                    f"{label_file or where}: label value(s) {vals} outside the {self.num_classes} classes of "
                    f"{self.name} (and not ignore {IGNORE})"
                )
        return image, label, path

    def hf_row_name(self, index: int, column: str | None = None) -> str:
        """How messages name sample ``index`` of a table: its dataset, split and row (and ``column``)."""
        row = self._hf_rows[index] if self._hf_rows is not None else index
        return f"{self.root} ({self.hf_split} split) row {row}" + (f", column {column!r}" if column else "")

    def _hf_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        """Row ``index`` of the table decoded: (RGB image, raw label, path); a bad cell names its row and column."""
        row = self._hf[self._hf_rows[index] if self._hf_rows is not None else index]
        img_col, lab_col = self._hf_columns
        at_img, at_lab = self.hf_row_name(index, img_col), self.hf_row_name(index, lab_col)
        image = read_image(at_img, source=_as_pil(row[img_col], at_img))
        raw = read_label(at_lab, self.colours, source=_as_pil(row[lab_col], at_lab), strict_colours=self.strict_colours)
        return image, raw, f"{self.root}/{self.split}/{index}"

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        if not -len(self) <= index < len(self):
            raise IndexError(f"{self.name}: index {index} out of range for {len(self)} samples")
        image, label, path = self.load_arrays(int(index) % len(self))
        if not image.flags.writeable or not image.flags.c_contiguous:
            image = np.array(image)  # Pillow's arrays are read-only views of bytes
        # A [3, H, W] view of the HWC array: no transposing copy here, and the transforms' HWC view of it is
        # contiguous again, so Pillow takes it without another copy.
        return {
            "image": torch.from_numpy(image).permute(2, 0, 1),
            "label": torch.from_numpy(label.astype(np.int64)),
            "path": path,
        }


def _as_pil(value: Any, path: str) -> Any:
    """A table cell as a PIL image, still encoded where it can be (decoded by the reader, which names the row)."""
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict) and value.get("bytes") is not None:
        import io

        data = value["bytes"]
        try:
            return Image.open(io.BytesIO(data))
        except Exception as err:  # noqa: BLE001 - Pillow raises many types for foreign bytes
            what = "no image format Pillow knows" if isinstance(err, UnidentifiedImageError) else type(err).__name__
            raise DatasetError(
                f"{path}: cannot decode the image ({len(data)} bytes starting {bytes(data[:8])!r}: {what}){SKIP_HINT}"
            ) from None
    if isinstance(value, dict) and value.get("path"):
        try:
            return Image.open(value["path"])
        except (OSError, ValueError) as err:
            raise DatasetError(f"{path}: cannot open {value['path']} ({type(err).__name__}: {err})") from None
    if isinstance(value, np.ndarray | list):
        arr = np.asarray(value)
        if arr.dtype.kind in "iub" and arr.ndim == 3 and 1 in (arr.shape[0], arr.shape[-1]):
            arr = arr.reshape(arr.shape[1:] if arr.shape[0] == 1 else arr.shape[:-1])
        if arr.dtype.kind in "iub" and arr.ndim == 2:
            # Integer masks stored as arrays (Array2D, nested lists of ClassLabel): 8-bit when they fit, else kept
            # wide so that the label reader names the value that does not fit.
            fits = arr.size == 0 or (arr.min() >= 0 and arr.max() <= 255)
            arr = arr.astype(np.uint8 if fits else np.int32)
        elif arr.dtype.kind == "f" or arr.ndim == 3:
            from segcore.data.io import array_to_rgb

            arr = array_to_rgb(arr)
        try:
            return Image.fromarray(arr)
        except (TypeError, ValueError) as err:
            raise DatasetError(
                f"{path}: cannot make an image of a {arr.dtype} array of shape {arr.shape} ({err})"
            ) from None
    raise DatasetError(f"{path}: cannot decode a {type(value).__name__} as an image")


# ---------------------------------------------------------------------------------------------------------------
# Pairing (§1.1)


def _require_dir(path: Path, dataset: str, layout: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{dataset}: folder {path} not found; expected layout:\n{layout}")
    return path


def _scan(
    img_dir: Path, ann_dir: Path, img_suffix: str, seg_suffix: str, dataset: str, layout: str
) -> list[tuple[str, str]]:
    _require_dir(img_dir, dataset, layout)
    rels = sorted(str(p.relative_to(img_dir)) for p in img_dir.rglob(f"*{img_suffix}") if p.is_file())
    if not rels:
        raise DatasetError(f"{dataset}: no '*{img_suffix}' images under {img_dir}; expected layout:\n{layout}")
    return [(str(img_dir / r), str(ann_dir / (r[: -len(img_suffix)] + seg_suffix))) for r in rels]


def _listed(
    img_dir: Path, ann_dir: Path, split_file: Path, img_suffix: str, seg_suffix: str, dataset: str, layout: str
) -> list[tuple[str, str]]:
    _require_dir(img_dir, dataset, layout)
    if not split_file.is_file():
        raise DatasetError(f"{dataset}: split file {split_file} not found; expected layout:\n{layout}")
    stems = [s.strip() for s in split_file.read_text().splitlines() if s.strip()]
    if not stems:
        raise DatasetError(f"{dataset}: split file {split_file} is empty")
    return [(str(img_dir / (s + img_suffix)), str(ann_dir / (s + seg_suffix))) for s in stems]


def _need_file(path: Path, layout: str) -> Path:
    if not path.is_file():
        raise DatasetError(f"{path} not found; expected layout:\n{layout}")
    return path


def _split_name(dataset: str, split: str, names: dict[str, str]) -> str:
    if split not in names:
        raise DatasetError(f"{dataset}: unknown split {split!r}; valid: {', '.join(names)}")
    return names[split]


def _hub(name: str, root: str, split: str, opts: FolderOptions, **kw: Any) -> SegDataset:
    """A Hub copy: ``hf:<saved dir>`` (``load_from_disk``), ``hf:<folder of parquet shards>`` or ``hf:<repo id>``.

    The named dataset's conventions (classes, label mapping, protocol) apply; ``val`` reads the Hub's ``val`` or
    ``validation`` split. Rows are decoded one at a time, when read (see :mod:`segcore_datasets.hub`).
    """
    from segcore_datasets.hub import _encoded, find_columns, load_table, skip_bad_rows

    ref = root[3:]
    wanted = (opts.hf_split,) if opts.hf_split else ((split, "validation") if split == "val" else (split,))
    table, hub_split = load_table(ref, split, wanted)
    where = f"{name}: Hub dataset {ref} ({hub_split} split)"
    labels = ("annotation", "label", "mask", "semantic_segmentation", "stuff_map", "seg", "gt")
    img_col, lab_col = find_columns(table, None, None, where, labels)
    table = _encoded(table.select_columns([img_col, lab_col]))
    kw.update(hf=table, hf_columns=(img_col, lab_col), root=root, check_values=opts.check_values, hf_split=hub_split)
    if opts.skip_bad:
        kw["hf_rows"], kw["skipped"] = skip_bad_rows(SegDataset(name, split, **kw))
    return SegDataset(name, split, **kw)


def _opts(options: dict[str, Any], name: str, root: str | None) -> FolderOptions:
    from segcore.options import parse_options

    if not root:
        raise DatasetError(
            f"{name} needs its folder: give --data-root DIR (Python: root=DIR), the prepared release "
            f"(segcore data prepare {name} ...) or hf:<repo> for a Hub copy"
        )
    return parse_options(FolderOptions, options, component=name)


# ---------------------------------------------------------------------------------------------------------------
# The datasets (§§2-8); eval protocols from §9.

_SEGNEXT_512 = EvalProtocol(mode="whole", resize=(2048, 512), resize_to_multiple=32)


def ade20k(root: str, split: str = "train", **options: Any) -> SegDataset:
    """ADE20K (``ADEChallengeData2016``): values 0..150, reduce_zero_label -> 150 classes (§2)."""
    opts = _opts(options, "ade20k", root)
    kw = dict(
        classes=meta.ADE20K_CLASSES,
        palette=meta.ADE20K_PALETTE,
        lut=reduce_zero_label_lut(),
        eval_protocol=_SEGNEXT_512,
        reduce_zero_label=True,
    )
    if str(root).startswith("hf:"):
        return _hub("ade20k", root, split, opts, **kw)
    sub = _split_name("ade20k", split, {"train": "training", "val": "validation", "validation": "validation"})
    layout = "  <root>/images/{training,validation}/*.jpg\n  <root>/annotations/{training,validation}/*.png"
    r = Path(root)
    samples = _scan(r / "images" / sub, r / "annotations" / sub, ".jpg", ".png", "ade20k", layout)
    return SegDataset("ade20k", split, samples=samples, root=str(root), check_values=opts.check_values, **kw)


def cityscapes(root: str, split: str = "train", **options: Any) -> SegDataset:
    """Cityscapes fine: ``*_gtFine_labelTrainIds.png`` when present, else ``*_gtFine_labelIds.png`` mapped (§3)."""
    opts = _opts(options, "cityscapes", root)
    train_lut = np.arange(256, dtype=np.uint8)
    id_lut = _map_lut(meta.CITYSCAPES_LABELID_TO_TRAINID)
    ev = EvalProtocol(mode="slide", crop_size=(1024, 1024), stride=(768, 768), resize=(2048, 1024))
    kw = dict(
        classes=meta.CITYSCAPES_CLASSES,
        palette=meta.CITYSCAPES_PALETTE,
        eval_protocol=ev,
        crop_size=(1024, 1024),
        train_scale=(2048, 1024),
    )
    if str(root).startswith("hf:"):
        return _hub("cityscapes", root, split, opts, lut=train_lut, **kw)
    sub = _split_name("cityscapes", split, {"train": "train", "val": "val", "test": "test"})
    layout = (
        "  <root>/leftImg8bit/{train,val}/<city>/*_leftImg8bit.png\n"
        "  <root>/gtFine/{train,val}/<city>/*_gtFine_labelTrainIds.png (or *_gtFine_labelIds.png)"
    )
    r = Path(root)
    samples = _scan(
        r / "leftImg8bit" / sub,
        r / "gtFine" / sub,
        "_leftImg8bit.png",
        "_gtFine_labelTrainIds.png",
        "cityscapes",
        layout,
    )
    lut = train_lut
    if not Path(samples[0][1]).exists():
        alt = [(i, a.replace("_gtFine_labelTrainIds.png", "_gtFine_labelIds.png")) for i, a in samples]
        if Path(alt[0][1]).exists():
            samples, lut = alt, id_lut
    return SegDataset(
        "cityscapes", split, samples=samples, root=str(root), lut=lut, check_values=opts.check_values, **kw
    )


def coco_stuff164k(root: str, split: str = "train", **options: Any) -> SegDataset:
    """COCO-Stuff 164k: prepared ``*_labelTrainIds.png`` or raw 182-id maps mapped to 171 classes (§4)."""
    opts = _opts(options, "coco-stuff164k", root)
    raw_lut = _map_lut(meta.COCO_STUFF_RAW_TO_TRAINID)
    kw = dict(classes=meta.COCO_STUFF_CLASSES, palette=meta.COCO_STUFF_PALETTE, eval_protocol=_SEGNEXT_512)
    if str(root).startswith("hf:"):  # Hub copies carry the raw stuffthingmaps (§10)
        return _hub("coco-stuff164k", root, split, opts, lut=raw_lut, **kw)
    sub = _split_name("coco-stuff164k", split, {"train": "train2017", "val": "val2017"})
    layout = "  <root>/images/{train2017,val2017}/*.jpg\n  <root>/annotations/{train2017,val2017}/*_labelTrainIds.png"
    r = Path(root)
    samples = _scan(r / "images" / sub, r / "annotations" / sub, ".jpg", "_labelTrainIds.png", "coco-stuff164k", layout)
    lut = np.arange(256, dtype=np.uint8)
    if not Path(samples[0][1]).exists() and Path(samples[0][1].replace("_labelTrainIds.png", ".png")).exists():
        samples = [(i, a.replace("_labelTrainIds.png", ".png")) for i, a in samples]
        lut = raw_lut
    return SegDataset(
        "coco-stuff164k", split, samples=samples, root=str(root), lut=lut, check_values=opts.check_values, **kw
    )


def coco_stuff10k(root: str, split: str = "train", **options: Any) -> SegDataset:
    """COCO-Stuff 10k prepared by ``segcore data prepare coco-stuff10k``: values 0..171, reduce_zero_label (§5)."""
    opts = _opts(options, "coco-stuff10k", root)
    ev = EvalProtocol(mode="slide", crop_size=(512, 512), stride=(341, 341), resize=(2048, 512), min_size=512)
    kw = dict(
        classes=meta.COCO_STUFF_CLASSES,
        palette=meta.COCO_STUFF_PALETTE,
        lut=reduce_zero_label_lut(),
        eval_protocol=ev,
        reduce_zero_label=True,
    )
    if str(root).startswith("hf:"):
        return _hub("coco-stuff10k", root, split, opts, **kw)
    sub = _split_name("coco-stuff10k", split, {"train": "train2014", "val": "test2014", "test": "test2014"})
    layout = (
        "  <root>/images/{train2014,test2014}/*.jpg\n  <root>/annotations/{train2014,test2014}/*_labelTrainIds.png\n"
        "or the release: <root>/images/*.jpg, <root>/annotations/*.mat, <root>/imageLists/{train,test}.txt"
    )
    r = Path(root)
    if (r / "imageLists").is_dir() and not (r / "images" / sub).is_dir():
        # The v1.1 release as unzipped: labels read from the .mat files (field S), mapped as the converter does.
        samples = _listed(
            r / "images",
            r / "annotations",
            r / "imageLists" / f"{sub[:-4]}.txt",
            ".jpg",
            ".mat",
            "coco-stuff10k",
            layout,
        )
        return SegDataset(
            "coco-stuff10k",
            split,
            samples=samples,
            root=str(root),
            check_values=opts.check_values,
            mat_label=(("S",), coco_stuff10k_mat_lut()),
            **kw,
        )
    samples = _scan(r / "images" / sub, r / "annotations" / sub, ".jpg", "_labelTrainIds.png", "coco-stuff10k", layout)
    return SegDataset("coco-stuff10k", split, samples=samples, root=str(root), check_values=opts.check_values, **kw)


def voc2012_aug(root: str, split: str = "train", **options: Any) -> SegDataset:
    """VOC 2012 + SBD (root ``VOCdevkit/VOC2012``): train = train.txt (VOC labels) + aug.txt (SBD labels) (§6)."""
    opts = _opts(options, "voc2012-aug", root)
    ev = EvalProtocol(mode="whole", resize=(2048, 512))
    kw = dict(classes=meta.VOC_CLASSES, palette=meta.VOC_PALETTE, eval_protocol=ev)
    if str(root).startswith("hf:"):
        return _hub("voc2012-aug", root, split, opts, **kw)
    _split_name("voc2012-aug", split, {"train": "", "val": ""})
    layout = (
        "  <root>/JPEGImages/*.jpg\n  <root>/SegmentationClass/*.png\n  <root>/SegmentationClassAug/*.png\n"
        "  <root>/ImageSets/Segmentation/{train,val,aug}.txt"
    )
    r = Path(root)
    lists = r / "ImageSets" / "Segmentation"
    if split == "train":
        samples = _listed(
            r / "JPEGImages", r / "SegmentationClass", lists / "train.txt", ".jpg", ".png", "voc2012-aug", layout
        )
        sbd = next(
            (
                d
                for d in (r.parent / "VOCaug" / "dataset", r.parent / "benchmark_RELEASE" / "dataset")
                if (d / "cls").is_dir()
            ),
            None,
        )
        if (lists / "aug.txt").is_file() or sbd is None:
            samples += _listed(
                r / "JPEGImages",
                r / "SegmentationClassAug",
                lists / "aug.txt",
                ".jpg",
                ".png",
                "voc2012-aug",
                layout + "\n  (or the SBD release at <root>/../VOCaug/dataset/cls/*.mat)",
            )
        else:
            # Unprepared: SBD's cls/*.mat read directly; aug = (SBD train + val) - (VOC train + val) (§6.2).
            voc = {Path(a).stem for a, _ in samples}
            voc |= {s.strip() for s in _need_file(lists / "val.txt", layout).read_text().splitlines() if s.strip()}
            sbd_all = set()
            for f in ("train.txt", "val.txt"):
                sbd_all |= {s.strip() for s in _need_file(sbd / f, layout).read_text().splitlines() if s.strip()}
            samples += [
                (str(r / "JPEGImages" / f"{s}.jpg"), str(sbd / "cls" / f"{s}.mat")) for s in sorted(sbd_all - voc)
            ]
            kw["mat_label"] = (("GTcls", "Segmentation"), None)
    else:
        samples = _listed(
            r / "JPEGImages", r / "SegmentationClass", lists / "val.txt", ".jpg", ".png", "voc2012-aug", layout
        )
    return SegDataset("voc2012-aug", split, samples=samples, root=str(root), check_values=opts.check_values, **kw)


def _pascal_context(name: str, root: str, split: str, options: dict[str, Any], reduce: bool) -> SegDataset:
    opts = _opts(options, name, root)
    ev = EvalProtocol(mode="slide", crop_size=(480, 480), stride=(320, 320), resize=(520, 520), min_size=480)
    classes = meta.PASCAL_CONTEXT_59_CLASSES if reduce else meta.PASCAL_CONTEXT_60_CLASSES
    palette = meta.PASCAL_CONTEXT_60_PALETTE[1:] if reduce else meta.PASCAL_CONTEXT_60_PALETTE
    kw = dict(
        classes=classes,
        palette=palette,
        eval_protocol=ev,
        crop_size=(480, 480),
        train_scale=(520, 520),
        reduce_zero_label=reduce,
        lut=reduce_zero_label_lut() if reduce else None,
    )
    if str(root).startswith("hf:"):
        return _hub(name, root, split, opts, **kw)
    sub = _split_name(name, split, {"train": "train", "val": "val", "test": "val"})
    layout = (
        "  <root>/JPEGImages/*.jpg\n  <root>/SegmentationClassContext/*.png (values 0..59)\n"
        "  <root>/ImageSets/SegmentationContext/{train,val}.txt"
    )
    r = Path(root)
    samples = _listed(
        r / "JPEGImages",
        r / "SegmentationClassContext",
        r / "ImageSets" / "SegmentationContext" / f"{sub}.txt",
        ".jpg",
        ".png",
        name,
        layout,
    )
    return SegDataset(name, split, samples=samples, root=str(root), check_values=opts.check_values, **kw)


def pascal_context_60(root: str, split: str = "train", **options: Any) -> SegDataset:
    """Pascal Context, 60 classes (background scored, §7); root ``VOCdevkit/VOC2010``."""
    return _pascal_context("pascal-context-60", root, split, options, reduce=False)


def pascal_context_59(root: str, split: str = "train", **options: Any) -> SegDataset:
    """Pascal Context, 59 classes (same files, background -> ignore by reduce_zero_label, §7)."""
    return _pascal_context("pascal-context-59", root, split, options, reduce=True)


def isaid(root: str, split: str = "train", **options: Any) -> SegDataset:
    """The iSAID patches (``img_dir``/``ann_dir``); index-map labels, or RGB masks mapped by the 16 colours (§8)."""
    opts = _opts(options, "isaid", root)
    ev = EvalProtocol(mode="whole", resize=(896, 896))
    kw = dict(
        classes=meta.ISAID_CLASSES,
        palette=meta.ISAID_PALETTE,
        eval_protocol=ev,
        crop_size=(896, 896),
        train_scale=(896, 896),
        colours=np.array(meta.ISAID_PALETTE, np.uint8),
    )
    if str(root).startswith("hf:"):
        return _hub("isaid", root, split, opts, **kw)
    sub = _split_name("isaid", split, {"train": "train", "val": "val"})
    layout = "  <root>/img_dir/{train,val}/*.png\n  <root>/ann_dir/{train,val}/*_instance_color_RGB.png"
    r = Path(root)
    samples = _scan(r / "img_dir" / sub, r / "ann_dir" / sub, ".png", "_instance_color_RGB.png", "isaid", layout)
    return SegDataset("isaid", split, samples=samples, root=str(root), check_values=opts.check_values, **kw)

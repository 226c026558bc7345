"""A segmentation dataset and its readers: :class:`SegDataset`, the image/label decoders and the label tables.

Labels are decoded with Pillow "unchanged" semantics (palette PNGs give their indices, datasets.md §1.2) and mapped
to train ids through a 256-entry lookup table that folds in ``reduce_zero_label`` (§1.3) and the release-to-train-id
maps. Images are decoded to RGB without EXIF rotation (§12). A table cell (a ``datasets`` row: bytes, a path, an
array) becomes an image through :func:`as_pil`. Every dataset of this package is a :class:`SegDataset`; which files
(or rows) it holds is decided by :mod:`segcore_datasets.papers`, :mod:`segcore_datasets.folder` and
:mod:`segcore_datasets.hf`.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from segcore.config.settings import EvalProtocol

__all__ = [
    "IGNORE",
    "SKIP_HINT",
    "DatasetError",
    "SegDataset",
    "read_image",
    "read_label",
    "read_mat_label",
    "as_pil",
    "colours_to_ids",
    "colours_to_ids_strict",
    "reduce_zero_label_lut",
    "map_lut",
]

IGNORE = 255
# How a message about one bad row of a table says what to do (``skip_bad`` drops it from the rows it leaves out).
SKIP_HINT = "; fix or drop the row, or pass --dataset-opt skip_bad=true to leave bad rows out"


class DatasetError(ValueError):
    """Bad or missing data; the message names the file (or folder) and the reason."""


def reduce_zero_label_lut() -> np.ndarray:
    """256-entry table of §1.3: 0 -> 255, v -> v - 1 (1 <= v <= 254), 255 -> 255."""
    lut = np.arange(256, dtype=np.int16) - 1
    lut[0] = IGNORE
    lut[255] = IGNORE
    return lut.astype(np.uint8)


def map_lut(mapping: Mapping[int, int], default: int = IGNORE) -> np.ndarray:
    """256-entry table with ``mapping``'s values at its keys and ``default`` elsewhere (a release-id map)."""
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
        image = read_image(at_img, source=as_pil(row[img_col], at_img))
        raw = read_label(at_lab, self.colours, source=as_pil(row[lab_col], at_lab), strict_colours=self.strict_colours)
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


def as_pil(value: Any, path: str) -> Any:
    """A table cell as a PIL image, still encoded where it can be (decoded by the reader, which names the row)."""
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict) and value.get("bytes") is not None:
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

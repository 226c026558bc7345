"""Bad data fails with the file and the fix: missing layouts, truncated images, stray label values, sizes, modes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import segcore
import torch
from PIL import Image
from segcore.testing import write_image, write_label
from segcore_datasets.audit import check_dataset, preflight
from segcore_datasets.dataset import DatasetError

RNG = np.random.default_rng(0)


def _ade(root: Path, lab: np.ndarray, h: int = 2, w: int = 3, mode: str = "RGB") -> Path:
    write_image(root / "images" / "training" / "ADE_train_00000001.jpg", h, w, mode=mode)
    write_label(root / "annotations" / "training" / "ADE_train_00000001.png", lab)
    return root


def test_missing_or_empty_folder_names_layout(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"images/\{training,validation\}"):
        segcore.build_dataset("ade20k", str(tmp_path / "nope"), "train")
    (tmp_path / "empty" / "images" / "training").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no '\\*.jpg' images"):
        segcore.build_dataset("ade20k", str(tmp_path / "empty"), "train")
    (tmp_path / "empty" / "JPEGImages").mkdir()
    with pytest.raises(DatasetError, match="split file .*val.txt not found"):
        segcore.build_dataset("voc2012-aug", str(tmp_path / "empty"), "val")


def test_truncated_image_and_missing_label(tmp_path: Path) -> None:
    root = _ade(tmp_path, np.zeros((2, 3)))
    jpg = root / "images" / "training" / "ADE_train_00000001.jpg"
    jpg.write_bytes(jpg.read_bytes()[:40])
    ds = segcore.build_dataset("ade20k", str(root), "train")
    with pytest.raises(DatasetError, match="ADE_train_00000001.jpg: unreadable or truncated image"):
        ds[0]
    write_image(jpg, 2, 3)
    (root / "annotations" / "training" / "ADE_train_00000001.png").unlink()
    with pytest.raises(DatasetError, match="ADE_train_00000001.png: label file not found"):
        ds[0]


def test_label_value_out_of_range_names_value_and_file(tmp_path: Path) -> None:
    root = _ade(tmp_path, np.array([[0, 1, 200], [3, 3, 3]]))
    ds = segcore.build_dataset("ade20k", str(root), "train")
    with pytest.raises(DatasetError, match=r"ADE_train_00000001.png: label value\(s\) \[200\]"):
        ds[0]
    with pytest.raises(ValueError, match=r"\[199\]"):
        preflight(segcore.build_dataset("ade20k", str(root), "train", check_values=False))
    rep = check_dataset(ds)
    assert rep["errors"] and "200" in rep["errors"][0]


def test_size_mismatch(tmp_path: Path) -> None:
    root = _ade(tmp_path, np.zeros((4, 3)), h=2, w=3)
    with pytest.raises(DatasetError, match="ADE_train_00000001.jpg: image size 2x3 differs from label size 4x3"):
        segcore.build_dataset("ade20k", str(root), "train")[0]


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_image_modes_converted(tmp_path: Path, mode: str) -> None:
    root = tmp_path / "d"
    p = root / "images" / "training" / "ADE_train_00000001.png"
    arr = write_image(p, 2, 3, mode=mode)
    # png image under a .jpg name is still decoded by content
    p.rename(p.with_suffix(".jpg"))
    write_label(root / "annotations" / "training" / "ADE_train_00000001.png", np.ones((2, 3)))
    s = segcore.build_dataset("ade20k", str(root), "train")[0]
    assert s["image"].shape == (3, 2, 3) and s["image"].dtype == torch.uint8
    expected = np.asarray(Image.fromarray(arr).convert(mode).convert("RGB")).transpose(2, 0, 1)
    assert np.array_equal(s["image"].numpy(), expected)


def test_16bit_labels_and_colour_labels(tmp_path: Path) -> None:
    root = _ade(tmp_path, np.zeros((2, 3)))
    lab_path = root / "annotations" / "training" / "ADE_train_00000001.png"
    Image.fromarray(np.array([[0, 1, 150], [2, 3, 4]], np.uint16)).save(lab_path)
    assert Image.open(lab_path).mode.startswith("I")
    ds = segcore.build_dataset("ade20k", str(root), "train")
    assert ds[0]["label"].tolist() == [[255, 0, 149], [1, 2, 3]]
    Image.fromarray(np.array([[0, 1, 300], [2, 3, 4]], np.uint16)).save(lab_path)
    with pytest.raises(DatasetError, match="values up to 300"):
        ds[0]
    Image.fromarray(RNG.integers(0, 255, (2, 3, 3), dtype=np.uint8)).save(lab_path)
    with pytest.raises(DatasetError, match="colour image"):
        ds[0]

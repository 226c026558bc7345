"""The ``folder`` and ``hf:`` datasets (a user's own data) on layouts written by the tests (CPU, no network)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import segcore
from PIL import Image
from segcore.data import preflight
from segcore_datasets.audit import check_dataset
from segcore_datasets.dataset import DatasetError

RNG = np.random.default_rng(0)


def _image(path: Path, h: int = 12, w: int = 16) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = RNG.integers(0, 255, (h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return arr


def _mask(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, np.uint8)).save(path)


@pytest.fixture(autouse=True)
def _hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # load_dataset keeps an Arrow cache of what it reads: keep it in the test's folder.
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


# ------------------------------------------------------------------------------------------------------ folder
def test_folder_pairs_by_relative_path_and_takes_defaults_from_the_data(tmp_path: Path) -> None:
    root = tmp_path / "pets"
    root.mkdir()
    (root / "classes.txt").write_text("background\ncat\ndog\n\n")
    _image(root / "images" / "train" / "a" / "x.jpg", 20, 30)
    _mask(root / "labels" / "train" / "a" / "x.png", np.full((20, 30), 2))  # labels/ in place of masks/
    _image(root / "images" / "train" / "b" / "x.png", 20, 30)  # same name, other folder: its own pair
    _mask(root / "labels" / "train" / "b" / "x.png", np.array([[0, 1, 255] * 10] * 20))
    _image(root / "images" / "validation" / "y.jpeg", 20, 30)  # "validation" serves split "val"
    _mask(root / "labels" / "val" / "y.png", np.ones((20, 30)))  # either spelling on either side

    ds = segcore.build_dataset("folder", root=str(root), split="train")
    assert ds.classes == ("background", "cat", "dog") and len(ds.palette) == 3 and ds.ignore_index == 255
    assert [Path(i).relative_to(root).as_posix() for i, _ in ds.samples] == [
        "images/train/a/x.jpg",
        "images/train/b/x.png",
    ]
    assert ds[0]["label"].unique().tolist() == [2]
    assert ds[1]["label"][0, :3].tolist() == [0, 1, 255] and ds[1]["image"].shape == (3, 20, 30)
    # Defaults from the data: a crop of the first image's short side (at most 512), whole-image evaluation.
    assert ds.crop_size == (20, 20) and ds.train_scale == (30, 20)
    assert ds.eval_protocol.mode == "whole" and ds.eval_protocol.resize is None
    assert len(segcore.build_dataset("folder", root=str(root), split="val")) == 1
    assert preflight(ds)["label_values"] == [0, 1, 2, 255]

    tuned = segcore.build_dataset("folder", root=str(root), split="val", crop_size=16, eval_mode="slide")
    assert tuned.crop_size == (16, 16)
    assert (tuned.eval_protocol.mode, tuned.eval_protocol.crop_size, tuned.eval_protocol.stride) == (
        "slide",
        (16, 16),
        (10, 10),
    )
    with pytest.raises(segcore.OptionsError, match="crop_sise"):
        segcore.build_dataset("folder", root=str(root), split="val", crop_sise=16)
    with pytest.raises(DatasetError, match="unknown split 'test'"):
        segcore.build_dataset("folder", root=str(root), split="test")


def test_folder_preflight_names_every_unpaired_file_and_value_out_of_range(tmp_path: Path) -> None:
    root = tmp_path / "d"
    root.mkdir()
    (root / "classes.txt").write_text("bg\nfg\n")
    for name in ("a", "b", "c"):
        _image(root / "images" / "train" / f"{name}.jpg")
    _mask(root / "masks" / "train" / "a.png", np.zeros((12, 16)))
    _mask(root / "masks" / "train" / "c.png", np.full((12, 16), 7))  # class 7 of 2
    _mask(root / "masks" / "train" / "extra" / "z.png", np.zeros((12, 16)))  # no image
    (root / "masks" / "train" / "b.jpg").write_bytes((root / "images" / "train" / "b.jpg").read_bytes())

    with pytest.warns(UserWarning, match="2 file"):
        ds = segcore.build_dataset("folder", root=str(root), split="train")
    assert len(ds) == 2  # a and c pair; b has only a JPEG mask, z only a mask
    with pytest.raises(ValueError) as info:
        preflight(ds)
    message = str(info.value)
    assert message.endswith("3 problems in folder")
    assert f"{root / 'images' / 'train' / 'b.jpg'}: no mask" in message and "masks must be .png" in message
    assert f"{root / 'masks' / 'train' / 'extra' / 'z.png'}: mask without an image" in message
    assert f"{root / 'masks' / 'train' / 'c.png'}: label value(s) [7]" in message
    report = check_dataset(ds)
    assert len(report["errors"]) == 3 and report["count"] == 2


def test_folder_classes_json_maps_colour_masks_and_the_ignore_value(tmp_path: Path) -> None:
    root = tmp_path / "d"
    classes = {"names": ["sky", "tree"], "palette": [[0, 0, 255], [0, 128, 0]], "ignore_index": 100}
    (root).mkdir()
    (root / "classes.json").write_text(json.dumps(classes))
    _image(root / "images" / "train" / "a.png", 2, 3)
    rgb = np.array([[[0, 0, 255], [0, 128, 0], [0, 0, 255]]] * 2, np.uint8)
    _mask(root / "annotations" / "train" / "a.png", np.zeros((2, 3)))
    Image.fromarray(rgb).save(root / "annotations" / "train" / "a.png")
    ds = segcore.build_dataset("folder", root=str(root), split="train")
    assert ds.classes == ("sky", "tree") and ds.palette == ((0, 0, 255), (0, 128, 0))
    assert ds[0]["label"].tolist() == [[0, 1, 0], [0, 1, 0]]
    rgb[1, 2] = (9, 9, 9)
    Image.fromarray(rgb).save(root / "annotations" / "train" / "a.png")
    with pytest.raises(DatasetError, match=r"a.png: colour \(9, 9, 9\) \(first at row 1, column 2\) is not in the"):
        ds[0]
    # A grey mask: the declared ignore value (100) becomes 255; 255 itself is then a value out of range.
    _mask(root / "annotations" / "train" / "a.png", np.array([[0, 1, 100], [1, 1, 1]]))
    grey = segcore.build_dataset("folder", root=str(root), split="train")
    assert grey[0]["label"].tolist() == [[0, 1, 255], [1, 1, 1]]
    _mask(root / "annotations" / "train" / "a.png", np.array([[0, 1, 255], [1, 1, 1]]))
    with pytest.raises(DatasetError, match=r"a.png: label value\(s\) \[255\]"):
        grey[0]


def test_folder_class_files_are_checked(tmp_path: Path) -> None:
    root = tmp_path / "d"
    _image(root / "images" / "train" / "a.png", 2, 3)
    _mask(root / "masks" / "train" / "a.png", np.zeros((2, 3)))
    with pytest.raises(DatasetError, match="no classes.txt or classes.json"):
        segcore.build_dataset("folder", root=str(root), split="train")
    assert segcore.build_dataset("folder", root=str(root), split="train", classes="a,b").classes == ("a", "b")
    (root / "classes.txt").write_text("a\n\nb\n")
    with pytest.raises(DatasetError, match=r"line\(s\) \[2\] are empty"):
        segcore.build_dataset("folder", root=str(root), split="train")
    (root / "classes.txt").write_text("a\nb\n")
    (root / "classes.json").write_text(json.dumps({"names": ["a", "c"]}))
    with pytest.raises(DatasetError, match="name different classes"):
        segcore.build_dataset("folder", root=str(root), split="train")
    (root / "classes.json").write_text(json.dumps({"names": ["a", "b"], "ignore_index": 1}))
    with pytest.raises(DatasetError, match="ignore index 1 is also the value of class 1"):
        segcore.build_dataset("folder", root=str(root), split="train")
    (root / "classes.json").write_text(json.dumps({"names": ["a", "b"], "colours": []}))
    with pytest.raises(DatasetError, match="unknown key.*'colours'"):
        segcore.build_dataset("folder", root=str(root), split="train")
    with pytest.raises(DatasetError, match="needs its folder"):
        segcore.build_dataset("folder", split="train")


# --------------------------------------------------------------------------------------------------------- hub
def _hub_rows(n: int, h: int = 6, w: int = 8) -> tuple[list[Image.Image], list[Image.Image]]:
    images = [Image.fromarray(RNG.integers(0, 255, (h, w, 3), dtype=np.uint8)) for _ in range(n)]
    masks = [Image.fromarray(np.full((h, w), i % 3, np.uint8)) for i in range(n)]
    return images, masks


def test_hub_parquet_shards_find_columns_and_read_id2label(tmp_path: Path) -> None:
    import datasets

    images, masks = _hub_rows(3)
    feats = datasets.Features(
        {
            "label": datasets.ClassLabel(names=["indoor", "outdoor"]),  # a scene label, not a mask: skipped
            "pixel_values": datasets.Image(),
            "semantic_segmentation": datasets.Image(),
        }
    )
    rows = {"label": [0, 1, 0], "pixel_values": images, "semantic_segmentation": masks}
    table = datasets.Dataset.from_dict(rows, features=feats)
    (tmp_path / "repo" / "data").mkdir(parents=True)
    table.to_parquet(str(tmp_path / "repo" / "data" / "train-00000-of-00001.parquet"))
    table.select([0]).to_parquet(str(tmp_path / "repo" / "data" / "validation-00000-of-00001.parquet"))
    (tmp_path / "repo" / "id2label.json").write_text(json.dumps({"0": "road", "1": "car", "2": "tree", "255": "void"}))

    ds = segcore.build_dataset(f"hf:{tmp_path / 'repo'}", split="train")
    assert (
        ds.classes == ("road", "car", "tree")
        and len(ds) == 3
        and ds._hf_columns
        == (
            "pixel_values",
            "semantic_segmentation",
        )
    )
    assert ds[2]["label"].unique().tolist() == [2]
    assert np.array_equal(ds[1]["image"].permute(1, 2, 0).numpy(), np.asarray(images[1]))
    assert ds.crop_size == (6, 6) and ds.eval_protocol.mode == "whole"
    assert len(segcore.build_dataset(f"hf:{tmp_path / 'repo'}", split="val")) == 1  # the Hub's "validation"
    # Decoding is lazy: the columns stay encoded, only the rows read are decoded.
    assert ds._hf.features["pixel_values"].decode is False and ds._hf.column_names == [
        "pixel_values",
        "semantic_segmentation",
    ]
    named = segcore.build_dataset(
        f"hf:{tmp_path / 'repo'}", split="train", image_column="pixel_values", label_column="semantic_segmentation"
    )
    assert named.classes == ds.classes
    with pytest.raises(DatasetError, match="no column 'mask'"):
        segcore.build_dataset(f"hf:{tmp_path / 'repo'}", split="train", label_column="mask")
    with pytest.raises(DatasetError, match="no split 'test'"):
        segcore.build_dataset(f"hf:{tmp_path / 'repo'}", split="val", hf_split="test")


def test_hub_save_to_disk_class_label_masks_and_class_option(tmp_path: Path) -> None:
    import datasets

    images, _ = _hub_rows(2, 4, 5)
    grid = [[[0, 1, 1, 2, 2]] * 4, [[2, 2, 0, 0, 1]] * 4]
    names = ["water", "land", "cloud"]
    feats = datasets.Features(
        {"image": datasets.Image(), "mask": datasets.Sequence(datasets.Sequence(datasets.ClassLabel(names=names)))}
    )
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"image": images, "mask": grid}, features=feats),
            "test": datasets.Dataset.from_dict({"image": images[:1], "mask": grid[:1]}, features=feats),
        }
    )
    dd.save_to_disk(str(tmp_path / "saved"))
    ds = segcore.build_dataset(f"hf:{tmp_path / 'saved'}", split="train")
    assert ds.classes == tuple(names)  # from the ClassLabel inside the label column
    assert ds[0]["label"][0].tolist() == [0, 1, 1, 2, 2]
    val = segcore.build_dataset(f"hf:{tmp_path / 'saved'}", split="val", classes="a,b,c")  # val -> the Hub's test
    assert len(val) == 1 and val.classes == ("a", "b", "c")
    with pytest.raises(DatasetError, match="give the dataset once"):
        segcore.build_dataset(f"hf:{tmp_path / 'saved'}", root=str(tmp_path), split="train")


def test_hub_without_classes_or_columns_says_how_to_name_them(tmp_path: Path) -> None:
    import datasets

    images, masks = _hub_rows(2)
    feats = datasets.Features({"photo": datasets.Image(), "annotation": datasets.Image()})
    datasets.Dataset.from_dict({"photo": images, "annotation": masks}, features=feats).save_to_disk(str(tmp_path / "s"))
    with pytest.raises(DatasetError, match="found no image column.*image_column=NAME"):
        segcore.build_dataset(f"hf:{tmp_path / 's'}", split="train")
    with pytest.raises(DatasetError, match="no class names: add id2label.json"):
        segcore.build_dataset(f"hf:{tmp_path / 's'}", split="train", image_column="photo")
    ds = segcore.build_dataset(f"hf:{tmp_path / 's'}", split="train", image_column="photo", classes=("x", "y", "z"))
    assert ds.classes == ("x", "y", "z") and ds[1]["label"].unique().tolist() == [1]


def test_the_image_folder_fixture_writes_a_folder_dataset(image_folder) -> None:
    """segcore.testing's ``image_folder`` writes this package's own-data layout: it loads and passes preflight."""
    root = image_folder(classes=("background", "red", "green"), counts={"train": 3, "val": 2}, size=20)
    train = segcore.build_dataset("folder", root=str(root), split="train")
    assert train.classes == ("background", "red", "green") and len(train) == 3
    assert len(segcore.build_dataset("folder", root=str(root), split="val")) == 2
    assert train[0]["image"].shape == (3, 20, 20) and train.crop_size == (20, 20)
    assert preflight(train)["label_values"] == [0, 1, 2]

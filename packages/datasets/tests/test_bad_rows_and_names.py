"""Bad ``hf:`` rows name their split, row and column (``skip_bad`` leaves them out and counts them); class names
follow one set of rules whatever file or option gives them, and a bad metadata file is named (CPU, no network)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import segcore
from PIL import Image
from segcore_datasets.audit import check_dataset
from segcore_datasets.dataset import DatasetError

RNG = np.random.default_rng(0)
GARBAGE = b"this is not an image at all"


@pytest.fixture(autouse=True)
def _hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def _png(arr: np.ndarray) -> dict:
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def _table(bad: dict[int, str], n: int = 4):
    """``n`` rows of 6x8 images with masks of value ``i % 3``; ``bad`` = {row: "image" | "mask"} holds garbage."""
    import datasets

    images, masks = [], []
    for i in range(n):
        images.append(
            {"bytes": GARBAGE, "path": None}
            if bad.get(i) == "image"
            else _png(RNG.integers(0, 255, (6, 8, 3), np.uint8))
        )
        masks.append(
            {"bytes": GARBAGE, "path": None} if bad.get(i) == "mask" else _png(np.full((6, 8), i % 3, np.uint8))
        )
    feats = datasets.Features({"image": datasets.Image(), "mask": datasets.Image()})
    return datasets.Dataset.from_dict({"image": images, "mask": masks}, features=feats)


def _parquet(tmp_path: Path, bad: dict[int, str]) -> str:
    (tmp_path / "repo" / "data").mkdir(parents=True)
    _table(bad).to_parquet(str(tmp_path / "repo" / "data" / "train-00000-of-00001.parquet"))
    return f"hf:{tmp_path / 'repo'}"


def _saved(tmp_path: Path, bad: dict[int, str]) -> str:
    _table(bad).save_to_disk(str(tmp_path / "saved"))
    return f"hf:{tmp_path / 'saved'}"


@pytest.mark.parametrize(("store", "column"), [(_parquet, "image"), (_saved, "mask")], ids=["parquet", "arrow"])
def test_hub_garbage_row_names_split_row_and_column(tmp_path, store, column):
    ref = store(tmp_path, {2: column})
    ds = segcore.build_dataset(ref, split="train", classes="a,b,c")
    ds[1]  # the good rows read
    with pytest.raises(DatasetError) as err:
        ds[2]
    text = str(err.value)
    assert text.startswith(f"{ref} (train split) row 2, column '{column}': cannot decode the image"), text
    assert "BytesIO" not in text and "skip_bad=true" in text
    report = check_dataset(ds)  # data check lists the row instead of stopping
    assert report["checked"] == 4 and len(report["errors"]) == 1 and "row 2" in report["errors"][0]


def test_hub_garbage_first_row_is_named_when_the_dataset_is_built(tmp_path):
    ref = _parquet(tmp_path, {0: "image"})
    with pytest.raises(DatasetError, match=r"\(train split\) row 0, column 'image': cannot decode the image"):
        segcore.build_dataset(ref, split="train", classes="a,b,c")


@pytest.mark.parametrize("store", [_parquet, _saved], ids=["parquet", "arrow"])
def test_hub_skip_bad_leaves_bad_rows_out_and_counts_them(tmp_path, store):
    ref = store(tmp_path, {0: "image", 2: "mask"})
    with pytest.warns(UserWarning, match=r"skipped 2 of 4 row\(s\) that cannot be read \(skip_bad\), e.g. .*row 0"):
        ds = segcore.build_dataset(ref, split="train", classes="a,b,c", skip_bad=True)
    assert len(ds) == 2 and len(ds.skipped) == 2
    assert "row 0, column 'image'" in ds.skipped[0] and "row 2, column 'mask'" in ds.skipped[1]
    assert [ds[i]["label"].unique().tolist() for i in range(2)] == [[1], [0]]  # rows 1 and 3 (values i % 3)
    assert ds.crop_size == (6, 6)  # taken from the first good row
    assert check_dataset(ds)["errors"] == []
    with pytest.raises(DatasetError, match="none of its 4 rows can be read"):
        bad_all = tmp_path / "all"
        bad_all.mkdir()
        segcore.build_dataset(
            _saved(bad_all, dict.fromkeys(range(4), "image")), split="train", classes="a,b,c", skip_bad=True
        )


def test_paper_dataset_hub_copy_takes_skip_bad(tmp_path):
    ref = _saved(tmp_path, {1: "image"})
    ds = segcore.build_dataset("voc2012-aug", root=ref, split="train", check_values=False)
    with pytest.raises(DatasetError, match=r"row 1, column 'image'"):
        ds[1]
    with pytest.warns(UserWarning, match="skipped 1 of 4"):
        ds = segcore.build_dataset("voc2012-aug", root=ref, split="train", skip_bad=True)
    assert len(ds) == 3


# --------------------------------------------------------------------------------------------------------- names
def _folder(root: Path) -> Path:
    for split in ("train",):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        Image.fromarray(RNG.integers(0, 255, (4, 5, 3), np.uint8)).save(root / "images" / split / "a.png")
        Image.fromarray(np.zeros((4, 5), np.uint8)).save(root / "masks" / split / "a.png")
    return root


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("classes.txt", "cat\ndog\nCat\n", r"classes.txt: line 3 \(class 2\) 'Cat' repeats line 1 \(class 0\) 'cat'"),
        ("classes.txt", "cat\nd\x07og\n", r"classes.txt: line 2 \(class 1\) 'd\\x07og' holds the control character"),
        ("classes.json", {"names": ["cat", ""]}, r'classes.json: "names" entry 1 \(class 1\) has an empty name'),
        ("classes.json", {"names": ["cat", "cat"]}, r'classes.json: "names" entry 1 \(class 1\) \'cat\' repeats'),
        ("classes.json", {"names": ["cat", None]}, r'classes.json: "names" entry 1 \(class 1\) is None, not a name'),
        ("classes.json", {"names": ["cat", "a\u2028b"]}, "holds the control character U[+]2028"),
    ],
    ids=["txt-duplicate", "txt-control", "json-empty", "json-duplicate", "json-null", "json-line-separator"],
)
def test_folder_class_files_refuse_bad_names_naming_file_and_entry(tmp_path, file, content, message):
    root = _folder(tmp_path / "d")
    text = content if isinstance(content, str) else json.dumps(content)
    (root / file).write_text(text, encoding="utf-8")
    with pytest.raises(DatasetError, match=f"^{root / file}: ") as err:
        segcore.build_dataset("folder", root=str(root), split="train")
    assert err.match(message)


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        ("a,,b", "class 1 has an empty name"),
        (("a", "b", "a"), "class 2 'a' repeats class 0 'a'"),
        ("a,b\x00", "class 1 'b.x00' holds the control character U[+]0000"),
    ],
    ids=["empty", "duplicate", "nul"],
)
@pytest.mark.parametrize("dataset", ["folder", "hf"])
def test_classes_option_follows_the_same_rules(tmp_path, classes, message, dataset):
    if dataset == "folder":
        kw = {"root": str(_folder(tmp_path / "d"))}
        name = "folder"
    else:
        name, kw = _saved(tmp_path, {}), {}
    with pytest.raises(DatasetError, match=f"^--dataset-opt classes: {message}"):
        segcore.build_dataset(name, split="train", classes=classes, **kw)


def test_hub_id2label_and_class_label_names_follow_the_same_rules(tmp_path):
    import datasets

    ref = _saved(tmp_path, {})
    id2label = tmp_path / "saved" / "id2label.json"
    id2label.write_text(json.dumps({"0": "road", "1": " ", "2": "car"}))
    with pytest.raises(DatasetError, match=f'^{id2label}: key "1" has an empty name'):
        segcore.build_dataset(ref, split="train")
    id2label.write_text(json.dumps({"0": "road", "1": "Road", "2": "car"}))
    with pytest.raises(DatasetError, match=f"^{id2label}: key \"1\" 'Road' repeats key \"0\" 'road'"):
        segcore.build_dataset(ref, split="train")
    id2label.unlink()
    feats = datasets.Features(
        {
            "image": datasets.Image(),
            "mask": datasets.Sequence(datasets.Sequence(datasets.ClassLabel(names=["x", "x "]))),
        }
    )
    grid = [[[0, 1]] * 2]
    datasets.Dataset.from_dict(
        {"image": [_png(np.zeros((2, 2, 3), np.uint8))], "mask": grid}, features=feats
    ).save_to_disk(str(tmp_path / "cl"))
    with pytest.raises(DatasetError, match=r"ClassLabel of column 'mask': class 1 'x' repeats class 0 'x'"):
        segcore.build_dataset(f"hf:{tmp_path / 'cl'}", split="train")


# ----------------------------------------------------------------------------------------- files that name themselves
@pytest.mark.parametrize("file", ["classes.txt", "classes.json"])
def test_class_file_that_is_not_utf8_is_named(tmp_path, file):
    root = _folder(tmp_path / "d")
    text = "caf\xe9\ndog\n" if file == "classes.txt" else json.dumps({"names": ["caf\xe9"]}, ensure_ascii=False)
    (root / file).write_bytes(text.encode("latin-1"))
    with pytest.raises(
        DatasetError, match=f"^{root / file}: not UTF-8 text \\(byte 0xe9 at offset \\d+\\); save it as UTF-8"
    ):
        segcore.build_dataset("folder", root=str(root), split="train")


@pytest.mark.parametrize(
    ("content", "message"), [(b'{"0": "road",', "not valid JSON"), (b'{"0": "caf\xe9"}', "not UTF-8")]
)
def test_bad_id2label_json_is_named(tmp_path, content, message):
    ref = _saved(tmp_path, {})
    (tmp_path / "saved" / "id2label.json").write_bytes(content)
    with pytest.raises(DatasetError, match=f"^{tmp_path / 'saved' / 'id2label.json'}: {message}"):
        segcore.build_dataset(ref, split="train")


def test_hub_dataset_network_failure_is_worded(monkeypatch):
    import datasets
    from segcore.errors import HubNetworkError

    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'me/data' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset_builder", unreachable)
    with pytest.raises(HubNetworkError, match="^network failure: cannot reach .* to read the Hub dataset 'me/data'"):
        segcore.build_dataset("hf:me/data", split="train")

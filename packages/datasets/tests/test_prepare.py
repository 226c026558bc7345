"""``segcore_datasets.prepare``: official annotation formats (.mat, Detail-API RLE, iSAID colours) to label files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import segcore
from PIL import Image
from segcore.testing import write_image
from segcore_datasets.dataset import DatasetError
from segcore_datasets.prepare import isaid_windows, prepare


def test_coco_stuff10k_prepare_from_mat(tmp_path: Path) -> None:
    from scipy.io import savemat

    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "imageLists").mkdir(parents=True)
    (src / "imageLists" / "train.txt").write_text("COCO_train2014_000000000077\n")
    (src / "imageLists" / "test.txt").write_text("COCO_train2014_000000000078\n")
    for stem in ("COCO_train2014_000000000077", "COCO_train2014_000000000078"):
        write_image(src / "images" / f"{stem}.jpg", 2, 3)
        (src / "annotations").mkdir(exist_ok=True)
        savemat(src / "annotations" / f"{stem}.mat", {"S": np.array([[0, 1, 13], [182, 92, 2]], np.uint16)})
    assert prepare("coco-stuff10k", src, dst, quiet=True) == {"train2014": 1, "test2014": 1}
    ds = segcore.build_dataset("coco-stuff10k", str(dst), "train")
    # on disk: 0, trainId + 1; after reduce_zero_label: 255 and the trainId of the 164k table
    assert ds[0]["label"].tolist() == [[255, 0, 11], [170, 80, 1]]
    assert segcore.build_dataset("coco-stuff10k", str(dst), "val").eval_protocol.min_size == 512


def _rle_string(mask: np.ndarray) -> str:
    """COCO compressed RLE of a binary mask, written independently of the reader (column order, 5-bit groups)."""
    flat = mask.T.ravel().astype(bool)
    runs, current, length = [], False, 0
    for v in flat:
        if v == current:
            length += 1
        else:
            runs.append(length)
            current, length = v, 1
    runs.append(length)
    out = []
    for i, x in enumerate(runs):
        x = x - runs[i - 2] if i > 2 else x
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            out.append(chr(c + (0x20 if more else 0) + 48))
    return "".join(out)


def test_rle_strings_decode_as_the_coco_mask_api_writes_them() -> None:
    from segcore_datasets.prepare import rle_counts, rle_decode

    assert rle_counts("121") == [1, 2, 1]
    assert rle_counts("X1") == [40]  # two 5-bit groups: 8 + 1 * 32
    assert rle_counts("0:3H") == [0, 10, 3, 2]  # the 4th run is stored as 2 - 10 = -8 ('H': sign bit set)
    # Runs go down the columns: [[0, 1, 0], [1, 0, 0]] is 1 zero, 2 ones, 3 zeros.
    assert rle_decode({"size": [2, 3], "counts": [1, 2, 3]}).tolist() == [[0, 1, 0], [1, 0, 0]]
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = rng.random((7, 9)) < rng.random()
        assert (rle_decode({"size": [7, 9], "counts": _rle_string(mask)}) == mask).all()
    with pytest.raises(DatasetError, match="do not cover"):
        rle_decode({"size": [2, 3], "counts": [1, 2]})


def test_pascal_context_prepare_from_the_detail_json(tmp_path: Path) -> None:
    voc, dst = tmp_path / "VOCdevkit" / "VOC2010", tmp_path / "prepared"
    h, w = 2, 3
    stems = ["2008_000002", "2008_000003", "2008_000004", "2008_000005"]
    phases = ["train", "train", "val", "val"]
    for stem in stems:
        write_image(voc / "JPEGImages" / f"{stem}.jpg", h, w)

    def ann(ann_id: int, image: int, category: int, rows: list[list[int]]) -> dict:
        rle = {"size": [h, w], "counts": _rle_string(np.array(rows, bool))}
        return {"id": ann_id, "image_id": image, "category_id": category, "segmentation": rle}

    ids = [2008000002, 2008000003, 2008000004, 2008000005]
    data = {
        "images": [
            {"image_id": i, "file_name": f"{s}.jpg", "phase": ph, "height": h, "width": w}
            for i, s, ph in zip(ids, stems, phases, strict=True)
        ],
        "annos_segmentation": [
            ann(1, ids[0], 2, [[1, 1, 0], [0, 0, 0]]),  # aeroplane (Detail id 2 -> 1)
            ann(2, ids[0], 458, [[0, 1, 1], [0, 0, 0]]),  # wood (458 -> 59) paints over the aeroplane
            ann(3, ids[1], 9, [[1, 1, 1], [1, 1, 1]]),  # bag (9 -> 2)
            ann(4, ids[2], 454, [[1, 0, 0], [0, 0, 0]]),  # skipped by the Detail API when it opens 'val' (below)
            ann(5, ids[3], 65, [[0, 0, 0], [1, 1, 1]]),  # cat (65 -> 15)
            ann(6, ids[3], 44, [[1, 0, 0], [0, 0, 0]]),  # building (44 -> 11)
        ],
    }
    (voc / "trainval_merged.json").write_text(json.dumps(data))
    assert prepare("pascal-context", voc.parent, dst, quiet=True) == {"train": 2, "val": 2}
    assert (dst / "ImageSets" / "SegmentationContext" / "val.txt").read_text() == "2008_000004\n2008_000005\n"
    ds60 = segcore.build_dataset("pascal-context-60", str(dst), "train")
    assert ds60[0]["label"].tolist() == [[1, 59, 59], [0, 0, 0]]
    assert ds60[1]["label"].tolist() == [[2, 2, 2], [2, 2, 2]]
    val = segcore.build_dataset("pascal-context-60", str(dst), "val")
    # Opening 'val', the Detail API drops annotations 1 and 3 while iterating and so skips 2 and 4: image 4's
    # only annotation is lost, exactly as in mmseg's converter.
    assert val[0]["label"].tolist() == [[0, 0, 0], [0, 0, 0]]
    assert val[1]["label"].tolist() == [[11, 0, 0], [15, 15, 15]]
    assert segcore.build_dataset("pascal-context-59", str(dst), "val")[1]["label"].tolist() == [
        [10, 255, 255],
        [14, 14, 14],
    ]

    data["annos_segmentation"].insert(0, ann(7, ids[0], 1, [[0, 0, 0], [1, 0, 0]]))  # a rare class (459-label id 1)
    (voc / "trainval_merged.json").write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"2008_000002\.jpg has category ids \[1\]"):
        prepare("pascal-context", voc, tmp_path / "again", quiet=True)
    (voc / "trainval_merged.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not a Detail-API annotation file"):
        prepare("pascal-context", voc, tmp_path / "again", quiet=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="trainval_merged.json"):
        prepare("pascal-context", tmp_path / "empty", tmp_path / "again", quiet=True)


def test_isaid_prepare_and_read(tmp_path: Path) -> None:
    src, dst = tmp_path / "iSAID", tmp_path / "prep"
    h, w = 20, 40
    write_image(src / "train" / "images" / "P0001.png", h, w)
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[:, :10] = (0, 0, 63)  # ship -> 1
    rgb[:, 10:20] = (0, 100, 155)  # Harbor -> 15
    rgb[:, 20:30] = (9, 9, 9)  # unknown colour -> 0
    (src / "train" / "Semantic_masks" / "images").mkdir(parents=True)
    Image.fromarray(rgb).save(src / "train" / "Semantic_masks" / "images" / "P0001_instance_color_RGB.png")
    # patch 16, overlap 8 -> step 8; a window overrunning the side ends at it: y 0, 8->4, 16->4; x ..., 32->24
    assert isaid_windows(20, 16, 8) == [0, 4, 4] and isaid_windows(40, 16, 8) == [0, 8, 16, 24, 24]
    from segcore_datasets.prepare import prepare_isaid

    counts = prepare_isaid(src, dst, patch=16, overlap=8, quiet=True)
    assert counts == {"train": 15}
    ds = segcore.build_dataset("isaid", str(dst), "train")
    assert len(ds) == 8  # repeated windows overwrite each other (same name), as in mmseg
    lab_file = dst / "ann_dir" / "train" / "P0001_0_16_8_24_instance_color_RGB.png"
    assert Image.open(lab_file).mode == "P"
    i = [k for k, (_, a) in enumerate(ds.samples) if a == str(lab_file)][0]
    lab = ds[i]["label"]
    assert lab[:, :2].eq(1).all() and lab[:, 2:12].eq(15).all() and lab[:, 12:].eq(0).all()
    # an RGB (unprepared) mask is mapped by colour on read
    Image.fromarray(rgb[:16, :16]).save(lab_file)
    assert ds[i]["label"][:, :2].eq(1).all()


def test_prepare_shows_a_progress_bar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "iSAID"
    write_image(src / "train" / "images" / "P0001.png", 20, 20)
    (src / "train" / "Semantic_masks" / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(
        src / "train" / "Semantic_masks" / "images" / "P0001_instance_color_RGB.png"
    )
    prepare("isaid", src, tmp_path / "out")
    err = capsys.readouterr().err
    assert "isaid train" in err and "1/1" in err
    prepare("isaid", src, tmp_path / "out2", quiet=True)
    assert "isaid train" not in capsys.readouterr().err

"""Tests of segcore-datasets on tiny layouts written by the tests (CPU, no network)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import segcore
import torch
from PIL import Image
from segcore.data import EvalProtocol, TestTransform, TrainTransform, keep_ratio_size
from segcore_datasets import meta
from segcore_datasets.base import DatasetError, reduce_zero_label_lut
from segcore_datasets.check import check_dataset, preflight
from segcore_datasets.prepare import isaid_windows, prepare

RNG = np.random.default_rng(0)


def _img(path: Path, h: int = 8, w: int = 12, mode: str = "RGB") -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = RNG.integers(0, 255, (h, w, 3), dtype=np.uint8)
    im = Image.fromarray(arr)
    if mode != "RGB":
        im = im.convert(mode)
    im.save(path)
    return arr


def _lab(path: Path, arr: np.ndarray, mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr.astype(np.uint8), mode="L")
    if mode == "P":
        im = im.convert("P")
    im.save(path)


# --------------------------------------------------------------------------------------------------- synthetic


def test_synthetic_shapes_sample_and_determinism() -> None:
    ds = segcore.build_dataset("synthetic-shapes", split="train", size=48, length=10, seed=3)
    s = ds[4]
    assert s["image"].dtype == torch.uint8 and s["image"].shape == (3, 48, 48)
    assert s["label"].dtype == torch.int64 and s["label"].shape == (48, 48)
    again = segcore.build_dataset("synthetic-shapes", split="train", size=48, length=10, seed=3)[4]
    assert torch.equal(s["image"], again["image"]) and torch.equal(s["label"], again["label"])
    other_seed = segcore.build_dataset("synthetic-shapes", split="train", size=48, length=10, seed=4)[4]
    val = segcore.build_dataset("synthetic-shapes", split="val", size=48, length=10, seed=3)[4]
    assert not torch.equal(s["label"], other_seed["label"]) and not torch.equal(s["label"], val["label"])
    tf = TrainTransform.for_dataset(ds)
    assert tf.crop_size == (48, 48) and tf.scale == (192, 48)
    out = tf(s, np.random.default_rng(0))
    assert out["image"].shape == (3, 48, 48) and set(out["label"].unique().tolist()) <= {0, 1, 2, 3, 4, 5, 255}
    assert len(ds) == 10 and ds.classes[0] == "background" and len(ds.palette) == len(ds.classes) == 6
    with pytest.raises(IndexError):
        ds[10]
    with pytest.raises(segcore.errors.OptionsError):
        segcore.build_dataset("synthetic-shapes", split="train", colour=1)


def test_synthetic_shapes_class_balance_and_colour_independence() -> None:
    ds = segcore.build_dataset("synthetic-shapes", split="train", size=64, length=60)
    hist = np.zeros(6)
    colour_by_class: dict[int, list[np.ndarray]] = {k: [] for k in range(1, 6)}
    for i in range(len(ds)):
        img, lab = ds.load_arrays(i)
        hist += np.bincount(lab.ravel(), minlength=6)
        for k in range(1, 6):
            if (lab == k).any():
                colour_by_class[k].append(img[lab == k].mean(axis=0))
    frac = hist / hist.sum()
    assert 0.4 < frac[0] < 0.9
    assert (frac[1:] > 0.02).all(), frac  # every shape is well represented
    # Colour does not identify the class: mean shape colours spread over most of the range for every class.
    for k, cols in colour_by_class.items():
        assert np.ptp(np.array(cols), axis=0).min() > 100, k


# --------------------------------------------------------------------------------------------------- datasets


def test_reduce_zero_label_lut() -> None:
    lut = reduce_zero_label_lut()
    assert lut[[0, 1, 150, 255]].tolist() == [255, 0, 149, 255]


def test_ade20k_values(tmp_path: Path) -> None:
    root = tmp_path / "ADEChallengeData2016"
    for split, stem in (("training", "ADE_train_00000001"), ("validation", "ADE_val_00000001")):
        _img(root / "images" / split / f"{stem}.jpg", 2, 3)
        _lab(root / "annotations" / split / f"{stem}.png", np.array([[0, 1, 150], [255, 7, 2]]))
    ds = segcore.build_dataset("ade20k", str(root), "train")
    assert len(ds) == 1 and ds.classes[7] == "bed " and ds.palette[0] == (120, 120, 120) and len(ds.classes) == 150
    assert ds[0]["label"].tolist() == [[255, 0, 149], [255, 6, 1]]
    assert ds[0]["path"].endswith("ADE_train_00000001.jpg")
    assert segcore.build_dataset("ade20k", str(root), "val").test_resize == (2048, 512)


def test_cityscapes_label_ids_and_train_ids(tmp_path: Path) -> None:
    root = tmp_path / "cs"
    stem = "aachen/aachen_000000_000019"
    _img(root / "leftImg8bit" / "train" / f"{stem}_leftImg8bit.png", 2, 4)
    _lab(root / "gtFine" / "train" / f"{stem}_gtFine_labelIds.png", np.array([[0, 7, 8, 33], [26, 9, 24, 23]]))
    ds = segcore.build_dataset("cityscapes", str(root), "train")
    assert ds[0]["label"].tolist() == [[255, 0, 1, 18], [13, 255, 11, 10]]
    counts = prepare("cityscapes", root, root, quiet=True)
    assert counts == {"train": 1}
    out = np.asarray(Image.open(root / "gtFine" / "train" / f"{stem}_gtFine_labelTrainIds.png"))
    assert out.tolist() == [[255, 0, 1, 18], [13, 255, 11, 10]]
    ds2 = segcore.build_dataset("cityscapes", str(root), "train")  # now reads the labelTrainIds file
    assert ds2.samples[0][1].endswith("_gtFine_labelTrainIds.png") and ds2[0]["label"].tolist() == out.tolist()


def test_coco_stuff164k_raw_and_prepared(tmp_path: Path) -> None:
    root = tmp_path / "coco"
    _img(root / "images" / "val2017" / "000000000001.jpg", 2, 3)
    raw = np.array([[0, 12, 91], [181, 255, 66]])
    _lab(root / "annotations" / "val2017" / "000000000001.png", raw)
    ds = segcore.build_dataset("coco-stuff164k", str(root), "val")
    assert len(ds.classes) == 171 and ds.classes[-1] == "wood"
    assert ds[0]["label"].tolist() == [[0, 11, 80], [170, 255, 60]]
    prepare("coco-stuff164k", root, root, quiet=True)
    conv = np.asarray(Image.open(root / "annotations" / "val2017" / "000000000001_labelTrainIds.png"))
    assert conv.tolist() == [[0, 11, 80], [170, 255, 60]]
    _lab(root / "annotations" / "val2017" / "000000000001.png", np.array([[11, 0, 0], [0, 0, 0]]))
    with pytest.raises(DatasetError, match=r"\[11\]"):
        prepare("coco-stuff164k", root, root, quiet=True)


def test_coco_stuff10k_prepare_from_mat(tmp_path: Path) -> None:
    from scipy.io import savemat

    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "imageLists").mkdir(parents=True)
    (src / "imageLists" / "train.txt").write_text("COCO_train2014_000000000077\n")
    (src / "imageLists" / "test.txt").write_text("COCO_train2014_000000000078\n")
    for stem in ("COCO_train2014_000000000077", "COCO_train2014_000000000078"):
        _img(src / "images" / f"{stem}.jpg", 2, 3)
        (src / "annotations").mkdir(exist_ok=True)
        savemat(src / "annotations" / f"{stem}.mat", {"S": np.array([[0, 1, 13], [182, 92, 2]], np.uint16)})
    assert prepare("coco-stuff10k", src, dst, quiet=True) == {"train2014": 1, "test2014": 1}
    ds = segcore.build_dataset("coco-stuff10k", str(dst), "train")
    # on disk: 0, trainId + 1; after reduce_zero_label: 255 and the trainId of the 164k table
    assert ds[0]["label"].tolist() == [[255, 0, 11], [170, 80, 1]]
    assert segcore.build_dataset("coco-stuff10k", str(dst), "val").eval_protocol.min_size == 512


def test_voc2012_aug_train_concat_and_prepare(tmp_path: Path) -> None:
    from scipy.io import savemat

    src = tmp_path / "VOCdevkit"
    voc = src / "VOC2012"
    lists = voc / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("2007_000032\n")
    (lists / "val.txt").write_text("2007_000033\n")
    for stem in ("2007_000032", "2007_000033", "2008_000001"):
        _img(voc / "JPEGImages" / f"{stem}.jpg", 2, 3)
    _lab(voc / "SegmentationClass" / "2007_000032.png", np.array([[0, 1, 255], [20, 15, 0]]), mode="P")
    _lab(voc / "SegmentationClass" / "2007_000033.png", np.array([[0, 0, 0], [5, 5, 5]]), mode="P")
    sbd = src / "VOCaug" / "dataset"
    (sbd / "cls").mkdir(parents=True)
    (sbd / "train.txt").write_text("2008_000001\n2007_000033\n")
    (sbd / "val.txt").write_text("2007_000032\n")
    for stem, seg in (
        ("2008_000001", [[3, 3, 0], [0, 19, 19]]),
        ("2007_000033", [[0] * 3] * 2),
        ("2007_000032", [[1] * 3] * 2),
    ):
        savemat(sbd / "cls" / f"{stem}.mat", {"GTcls": {"Segmentation": np.array(seg, np.uint8)}})
    counts = prepare("voc2012-aug", src, voc, quiet=True)
    assert counts == {"sbd_mat": 3, "trainaug": 2, "aug": 1}
    assert (lists / "aug.txt").read_text() == "2008_000001\n"
    ds = segcore.build_dataset("voc2012-aug", str(voc), "train")
    assert len(ds) == 2 and len(ds.classes) == 21
    assert ds[0]["label"].tolist() == [[0, 1, 255], [20, 15, 0]]  # palette indices, VOC labels for VOC train
    assert ds[1]["label"].tolist() == [[3, 3, 0], [0, 19, 19]]  # SBD label for the aug image
    assert segcore.build_dataset("voc2012-aug", str(voc), "val")[0]["label"].tolist() == [[0, 0, 0], [5, 5, 5]]


def test_pascal_context_59_60_and_prepare(tmp_path: Path) -> None:
    from scipy.io import savemat

    src, dst = tmp_path / "ctx", tmp_path / "VOC2010"
    (src / "trainval").mkdir(parents=True)
    (src / "train.txt").write_text("2008_000002\n")
    (src / "val.txt").write_text("2008_000003\n")
    for stem in ("2008_000002", "2008_000003"):
        _img(src / "JPEGImages" / f"{stem}.jpg", 2, 3)
        # 459-label ids: 2 aeroplane, 458 wood, 0 unlabeled, 1 (rare class -> background), 9 bag, 454 window
        savemat(src / "trainval" / f"{stem}.mat", {"LabelMap": np.array([[2, 458, 0], [1, 9, 454]], np.uint16)})
    assert prepare("pascal-context-60", src, dst, quiet=True) == {"train": 1, "val": 1}
    ds60 = segcore.build_dataset("pascal-context-60", str(dst), "train")
    ds59 = segcore.build_dataset("pascal-context-59", str(dst), "train")
    assert len(ds60.classes) == 60 and len(ds59.classes) == 59 and ds59.classes[0] == "aeroplane"
    assert ds60[0]["label"].tolist() == [[1, 59, 0], [0, 2, 58]]
    assert ds59[0]["label"].tolist() == [[0, 58, 255], [255, 1, 57]]
    tr = TrainTransform.for_dataset(ds59)
    assert tr.crop_size == (480, 480) and tr.scale == (520, 520)
    tt = TestTransform.for_dataset(ds60)
    assert tt.output_size(375, 500) == (520, 693)  # SegViT min_size: short side 520, no long-side cap


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
        _img(voc / "JPEGImages" / f"{stem}.jpg", h, w)

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
    _img(src / "train" / "images" / "P0001.png", h, w)
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


def test_hub_dataset_from_disk(tmp_path: Path) -> None:
    import datasets

    imgs = [Image.fromarray(RNG.integers(0, 255, (4, 5, 3), dtype=np.uint8)) for _ in range(2)]
    anns = [Image.fromarray(np.array([[0, 1, 150, 255, 3]] * 4, np.uint8)) for _ in range(2)]
    feats = datasets.Features({"image": datasets.Image(), "annotation": datasets.Image()})
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"image": imgs, "annotation": anns}, features=feats),
            "validation": datasets.Dataset.from_dict({"image": imgs[:1], "annotation": anns[:1]}, features=feats),
        }
    )
    dd.save_to_disk(str(tmp_path / "hfade"))
    ds = segcore.build_dataset("ade20k", f"hf:{tmp_path / 'hfade'}", "train")
    assert len(ds) == 2
    s = ds[1]
    assert s["image"].shape == (3, 4, 5) and s["label"][0].tolist() == [255, 0, 149, 255, 2]
    assert torch.equal(s["image"], torch.from_numpy(np.asarray(imgs[1]).transpose(2, 0, 1).copy()))
    assert len(segcore.build_dataset("ade20k", f"hf:{tmp_path / 'hfade'}", "val")) == 1
    with pytest.raises(DatasetError, match="no split"):
        segcore.build_dataset("ade20k", f"hf:{tmp_path / 'hfade'}", "val", hf_split="test")
    # a local folder of parquet shards (a Hub repo snapshot)
    (tmp_path / "pq" / "data").mkdir(parents=True)
    dd["train"].to_parquet(str(tmp_path / "pq" / "data" / "train-00000-of-00001.parquet"))
    dd["validation"].to_parquet(str(tmp_path / "pq" / "data" / "validation-00000-of-00001.parquet"))
    pq = segcore.build_dataset("ade20k", f"hf:{tmp_path / 'pq'}", "val")
    assert len(pq) == 1 and pq[0]["label"][0].tolist() == [255, 0, 149, 255, 2]
    assert torch.equal(pq[0]["image"], ds[0]["image"])


# --------------------------------------------------------------------------------------------------- transforms


def _coord_sample(h: int = 40, w: int = 60) -> dict:
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.stack([xx * 4, yy * 4, np.full_like(xx, 128)]).astype(np.uint8)  # image encodes (x, y)
    label = (xx // 4).astype(np.int64)  # label encodes x in 4-pixel bands (0..14)
    return {"image": torch.from_numpy(image), "label": torch.from_numpy(label), "path": "coords"}


@pytest.mark.parametrize("seed", range(6))
def test_train_transform_keeps_image_and_label_aligned(seed: int) -> None:
    tf = TrainTransform((32, 32), scale=(120, 40), cat_max_ratio=0.75, photometric=False)
    out = tf(_coord_sample(), np.random.default_rng(seed))
    img, lab = out["image"].numpy().astype(float), out["label"].numpy()
    assert out["image"].dtype == torch.uint8 and out["label"].dtype == torch.int64 and lab.shape == (32, 32)
    valid = lab != 255
    assert valid.sum() > 100
    # The x coordinate read from the image channel agrees with the band stored in the label.
    x_img = img[0] / 4.0
    assert np.abs(x_img[valid] // 4 - lab[valid]).max() <= 1
    assert (np.abs(x_img[valid] // 4 - lab[valid]) == 0).mean() > 0.8
    # padding: label 255 and image 0 together
    assert (img[:, ~valid] == 0).all()


def test_train_transform_deterministic_and_flip_and_photometric() -> None:
    tf = TrainTransform((32, 32), scale=(120, 40), flip_prob=1.0)
    a = tf(_coord_sample(), np.random.default_rng(1))
    b = tf(_coord_sample(), np.random.default_rng(1))
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    plain = TrainTransform((40, 60), scale=(60, 40), ratio_range=None, flip_prob=1.0, photometric=False)
    f = plain(_coord_sample(), np.random.default_rng(0))
    assert f["label"][0].tolist() == np.repeat(np.arange(14, -1, -1), 4).tolist()
    assert f["label"][:, 0].eq(14).all() and f["image"][0, 0, 0] == 59 * 4


def test_test_transform_sizes() -> None:
    ade = TestTransform(EvalProtocol(resize=(2048, 512), resize_to_multiple=32))
    assert ade.output_size(512, 683) == (512, 704)
    assert TestTransform(EvalProtocol(resize=(2048, 1024))).output_size(1024, 2048) == (1024, 2048)
    out = TestTransform(EvalProtocol(resize=(2048, 512)))(
        {"image": torch.zeros(3, 100, 200, dtype=torch.uint8), "label": torch.zeros(100, 200, dtype=torch.int64)}
    )
    assert out["image"].shape == (3, 512, 1024) and out["label"].shape == (100, 200) and out["ori_size"] == (100, 200)


# --------------------------------------------------------------------------------------------------- bad data


def _ade(root: Path, lab: np.ndarray, h: int = 2, w: int = 3, mode: str = "RGB") -> Path:
    _img(root / "images" / "training" / "ADE_train_00000001.jpg", h, w, mode=mode)
    _lab(root / "annotations" / "training" / "ADE_train_00000001.png", lab)
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
    _img(jpg, 2, 3)
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
    arr = _img(p, 2, 3, mode=mode)
    # png image under a .jpg name is still decoded by content
    p.rename(p.with_suffix(".jpg"))
    _lab(root / "annotations" / "training" / "ADE_train_00000001.png", np.ones((2, 3)))
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


# --------------------------------------------------------------------------------------------------- CLI


def test_cli_data_check_and_prepare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from segcore_cli.main import main

    assert main(["data", "check", "--dataset", "synthetic-shapes", "--limit", "4", "--json"]) == 0
    assert '"count": 2000' in capsys.readouterr().out
    root = _ade(tmp_path / "ade", np.array([[0, 1, 2], [3, 3, 3]]))
    _img(root / "images" / "validation" / "ADE_val_00000001.jpg", 2, 3)
    _lab(root / "annotations" / "validation" / "ADE_val_00000001.png", np.array([[0, 1, 2], [3, 3, 3]]))
    assert main(["data", "check", "--dataset", "ade20k", "--data-root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "ade20k train: 1 samples (release has 20210)" in out and "wall" in out
    assert main(["data", "prepare", "ade20k", str(root), str(tmp_path / "x")]) == 2
    assert "no preparation" in capsys.readouterr().err


def test_plugin_lists_all_datasets() -> None:
    from segcore.registry import components

    names = set(components("datasets"))
    assert {
        "synthetic-shapes",
        "ade20k",
        "cityscapes",
        "coco-stuff164k",
        "coco-stuff10k",
        "voc2012-aug",
        "pascal-context-59",
        "pascal-context-60",
        "isaid",
    } <= names
    assert len(meta.ADE20K_PALETTE) == 150 and len(meta.COCO_STUFF_PALETTE) == 171


# ------------------------------------------------------------------------------------------ augmentation semantics


class _CountingRng:
    """A numpy Generator wrapper that counts ``integers`` calls (two per crop box)."""

    def __init__(self, seed: int) -> None:
        self.rng, self.integer_calls = np.random.default_rng(seed), 0

    def integers(self, *a, **k):
        self.integer_calls += 1
        return self.rng.integers(*a, **k)

    def __getattr__(self, name):
        return getattr(self.rng, name)


class _ScriptedRng:
    """Returns scripted values for ``integers`` and ``uniform`` (in call order), to drive the photometric step."""

    def __init__(self, ints: list[int], uniforms: list[float]) -> None:
        self.ints, self.uniforms = list(ints), list(uniforms)

    def integers(self, *a, **k):
        return self.ints.pop(0)

    def uniform(self, *a, **k):
        return self.uniforms.pop(0)


def test_ratio_range_scales_between_half_and_twice() -> None:
    # crop larger than any resized image: the valid (non-pad) area is the whole resized image
    tf = TrainTransform(
        (200, 200), scale=(60, 40), ratio_range=(0.5, 2.0), photometric=False, flip_prob=0.0, cat_max_ratio=1.0
    )
    heights = []
    for seed in range(40):
        lab = tf(_coord_sample(), np.random.default_rng(seed))["label"].numpy()
        valid = lab != 255
        h, w = int(valid.any(1).sum()), int(valid.any(0).sum())
        heights.append(h)
        r = np.random.default_rng(seed).uniform(0.5, 2.0)  # the first draw is the ratio
        assert (h, w) == keep_ratio_size(40, 60, (int(60 * r), int(40 * r)))
        assert abs(w / h - 1.5) < 0.1  # keep ratio
    assert min(heights) >= 20 and max(heights) < 80 and max(heights) - min(heights) > 30


def test_cat_max_ratio_tries_ten_boxes_then_takes_the_eleventh() -> None:
    tf = TrainTransform((8, 8), scale=(32, 32), ratio_range=None, cat_max_ratio=0.75, photometric=False)
    flat = {"image": torch.zeros(3, 32, 32, dtype=torch.uint8), "label": torch.zeros(32, 32, dtype=torch.int64)}
    rng = _CountingRng(0)
    tf._crop_box(flat["label"].numpy().astype(np.uint8), rng)
    assert rng.integer_calls == 2 * 11  # one class everywhere: 10 rejected boxes + 1 unchecked
    board = (np.indices((32, 32)).sum(0) % 2).astype(np.uint8)  # every box holds two classes at 50 %
    rng = _CountingRng(0)
    tf._crop_box(board, rng)
    assert rng.integer_calls == 2
    # ignore pixels do not count: a box of one class + ignore is rejected like a one-class box
    half = np.where(np.arange(32)[None, :] < 16, 0, 255).repeat(32, 0).astype(np.uint8)
    rng = _CountingRng(0)
    tf._crop_box(half, rng)
    assert rng.integer_calls == 22
    # the test pulls crops towards the rare class: 4 columns of class 1 at the right border of 32
    stripes = np.zeros((32, 32), np.uint8)
    stripes[:, 28:] = 1
    chosen = [tf._crop_box(stripes, np.random.default_rng(s)) for s in range(20)]
    accepted = [(stripes[y0:y1, x0:x1] == 1).mean() > 0.25 for y0, y1, x0, x1 in chosen]
    # a random 8-wide box holds > 2 columns of class 1 (share > 25 %) with p = 2/25; with 10 tries p = 0.57
    assert sum(accepted) >= 8
    plain = [
        TrainTransform((8, 8), (32, 32), None, cat_max_ratio=1.0)._crop_box(stripes, np.random.default_rng(s))
        for s in range(20)
    ]
    assert sum((stripes[a:b, c:d] == 1).mean() > 0.25 for a, b, c, d in plain) <= 5


def test_train_transform_seed_changes_output() -> None:
    tf = TrainTransform((32, 32), scale=(120, 40))
    a = tf(_coord_sample(), np.random.default_rng(1))
    c = tf(_coord_sample(), np.random.default_rng(2))
    assert not torch.equal(a["image"], c["image"])


def test_photometric_brightness_contrast_are_exact_value_maps() -> None:
    img = np.arange(256, dtype=np.uint8).repeat(3).reshape(16, 16, 3)
    # brightness on (+20), mode 0 (contrast last), no saturation, no hue, contrast on (x 0.5)
    out = TrainTransform._photometric(img, _ScriptedRng([1, 0, 0, 0, 1], [20.0, 0.5]))
    expected = np.clip(np.clip(img.astype(np.float32) + 20, 0, 255).astype(np.uint8) * 0.5, 0, 255).astype(np.uint8)
    assert np.array_equal(out, expected)
    # everything off: unchanged
    assert np.array_equal(TrainTransform._photometric(img, _ScriptedRng([0, 0, 0, 0, 0], [])), img)


def test_photometric_saturation_and_hue_follow_hsv() -> None:
    px = np.array([[[200, 100, 100], [90, 90, 90], [0, 200, 50]]], np.uint8)
    # saturation x 0.5 keeps hue and value: (200, 100, 100) has S = 0.5 -> 0.25, so min 150
    out = TrainTransform._photometric(px, _ScriptedRng([0, 0, 1, 0, 0], [0.5]))
    assert out[0, 0].tolist() == [200, 150, 150] and out[0, 1].tolist() == [90, 90, 90]
    assert out[0, 2].tolist() == [100, 200, 125]
    # saturation x 1.5 is capped at S = 1
    out = TrainTransform._photometric(px, _ScriptedRng([0, 0, 1, 0, 0], [1.5]))
    assert out[0, 0].tolist() == [200, 50, 50] and out[0, 2].tolist() == [0, 200, 50]
    # the numpy saturation path agrees with Pillow's HSV round trip within its quantisation
    rgb = RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    fast = TrainTransform._photometric(rgb, _ScriptedRng([0, 0, 1, 0, 0], [1.3])).astype(int)
    h, s, v = Image.fromarray(rgb).convert("HSV").split()
    s = s.point([min(255, int(x * 1.3)) for x in range(256)])
    ref = np.asarray(Image.merge("HSV", (h, s, v)).convert("RGB")).astype(int)
    assert np.abs(fast - ref).max() <= 12 and np.abs(fast - ref).mean() < 2
    # hue +18 OpenCV units = +36 degrees: pure red turns towards yellow (green rises to 60 % of red)
    red = np.array([[[200, 0, 0]]], np.uint8)
    out = TrainTransform._photometric(red, _ScriptedRng([0, 0, 0, 1, 18, 0], []))
    assert out[0, 0, 0] >= 195 and 110 <= out[0, 0, 1] <= 130 and out[0, 0, 2] <= 5


def test_normalize_before_pad() -> None:
    mean, std = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
    tf = TrainTransform(
        (64, 64), scale=(60, 40), ratio_range=None, photometric=False, flip_prob=0.0, normalize=(mean, std)
    )
    sample = _coord_sample()
    out = tf(sample, np.random.default_rng(0))
    img, lab = out["image"], out["label"]
    assert img.dtype == torch.float32 and img.shape == (3, 64, 64)
    ref = (sample["image"].float() - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    assert torch.allclose(img[:, :40, :60], ref, atol=1e-4)
    assert img[:, 40:].eq(0).all() and img[:, :, 60:].eq(0).all() and lab[40:].eq(255).all()
    with pytest.raises(ValueError, match="std must be positive"):
        TrainTransform(8, normalize=(mean, (1.0, 0.0, 1.0)))


# --------------------------------------------------------------------------------------------------- synthetic shapes


def test_synthetic_shapes_overlap_and_vary_in_size() -> None:
    ds = segcore.build_dataset("synthetic-shapes", split="train", size=64, length=40, seed=1)
    touching, areas = 0, {k: [] for k in range(1, 6)}
    for i in range(len(ds)):
        _, lab = ds.load_arrays(i)
        a, b = lab[:, :-1], lab[:, 1:]
        if ((a != b) & (a > 0) & (b > 0)).any():  # two shapes share a border: they overlap (or touch)
            touching += 1
        for k in range(1, 6):
            if (lab == k).any():
                areas[k].append(int((lab == k).sum()))
    assert touching >= 10, touching
    for k, a in areas.items():
        assert max(a) > 3 * min(a), (k, min(a), max(a))  # sizes vary (radius 0.2..0.4 of the side + occlusion)


def test_synthetic_shapes_background_is_textured_and_radius_options() -> None:
    # Every background carries fine stripes while shapes are flat (+ a gentle shading and the pixel noise that
    # both have): neighbouring pixels differ far more on the background than inside a shape, in every image.
    ds = segcore.build_dataset("synthetic-shapes", split="val", length=30)
    for i in range(len(ds)):
        img, lab = ds.load_arrays(i)
        f = img.astype(np.float32)
        step = np.abs(f[1:, 1:] - f[1:, :-1]).sum(-1) + np.abs(f[1:, 1:] - f[:-1, 1:]).sum(-1)
        c = lab[1:, 1:]
        same = (c == lab[1:, :-1]) & (c == lab[:-1, 1:])
        background, inside = step[same & (c == 0)], step[same & (c > 0)]
        assert background.mean() > 1.5 * inside.mean(), (i, background.mean(), inside.mean())
    small = segcore.build_dataset("synthetic-shapes", split="train", length=20, min_radius=0.05, max_radius=0.08)
    big = segcore.build_dataset("synthetic-shapes", split="train", length=20, min_radius=0.3, max_radius=0.35)
    fg = [sum(int((d.load_arrays(i)[1] > 0).sum()) for i in range(20)) for d in (small, big)]
    assert fg[1] > 5 * fg[0], fg
    with pytest.raises(ValueError, match="invalid options"):
        segcore.build_dataset("synthetic-shapes", split="train", min_radius=0.3, max_radius=0.2)


# --------------------------------------------------------------------------------------------------- prepare progress


def test_prepare_shows_a_progress_bar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "iSAID"
    _img(src / "train" / "images" / "P0001.png", 20, 20)
    (src / "train" / "Semantic_masks" / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(
        src / "train" / "Semantic_masks" / "images" / "P0001_instance_color_RGB.png"
    )
    prepare("isaid", src, tmp_path / "out")
    err = capsys.readouterr().err
    assert "isaid train" in err and "1/1" in err
    prepare("isaid", src, tmp_path / "out2", quiet=True)
    assert "isaid train" not in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------- release layouts


def test_coco_stuff10k_release_layout_read_directly(tmp_path: Path) -> None:
    from scipy.io import savemat

    root = tmp_path / "cocostuff-10k-v1.1"
    (root / "imageLists").mkdir(parents=True)
    (root / "imageLists" / "train.txt").write_text("COCO_train2014_000000000077\n")
    (root / "imageLists" / "test.txt").write_text("COCO_train2014_000000000078\n")
    (root / "annotations").mkdir()
    for stem in ("COCO_train2014_000000000077", "COCO_train2014_000000000078"):
        _img(root / "images" / f"{stem}.jpg", 2, 3)
        savemat(root / "annotations" / f"{stem}.mat", {"S": np.array([[0, 1, 13], [182, 92, 2]], np.uint16)})
    ds = segcore.build_dataset("coco-stuff10k", str(root), "train")
    assert len(ds) == 1 and ds.samples[0][1].endswith(".mat")
    # S: 0 unlabeled -> 255; 1-based raw 1 (person) -> 0, 13 (raw 12, stop sign) -> 11, 182 (wood) -> 170, ...
    assert ds[0]["label"].tolist() == [[255, 0, 11], [170, 80, 1]]
    assert len(segcore.build_dataset("coco-stuff10k", str(root), "val")) == 1
    savemat(root / "annotations" / "COCO_train2014_000000000077.mat", {"S": np.array([[0, 200]], np.uint16)})
    with pytest.raises(DatasetError, match=r"000000000077.mat: .mat label holds values 0..200"):
        ds[0]
    savemat(root / "annotations" / "COCO_train2014_000000000077.mat", {"X": np.zeros((2, 3))})
    with pytest.raises(DatasetError, match="no field S"):
        ds[0]


def test_voc2012_aug_release_with_sbd_read_directly(tmp_path: Path) -> None:
    from scipy.io import savemat

    voc = tmp_path / "VOCdevkit" / "VOC2012"
    lists = voc / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("2007_000032\n")
    (lists / "val.txt").write_text("2007_000033\n")
    for stem in ("2007_000032", "2007_000033", "2008_000001", "2008_000002"):
        _img(voc / "JPEGImages" / f"{stem}.jpg", 2, 3)
    _lab(voc / "SegmentationClass" / "2007_000032.png", np.array([[0, 1, 255], [20, 15, 0]]), mode="P")
    sbd = tmp_path / "VOCdevkit" / "VOCaug" / "dataset"
    (sbd / "cls").mkdir(parents=True)
    (sbd / "train.txt").write_text("2008_000002\n2007_000033\n")
    (sbd / "val.txt").write_text("2007_000032\n2008_000001\n")
    for stem, seg in (("2008_000001", [[3, 3, 0], [0, 19, 19]]), ("2008_000002", [[7, 0, 0], [0, 0, 1]])):
        savemat(sbd / "cls" / f"{stem}.mat", {"GTcls": {"Segmentation": np.array(seg, np.uint8)}})
    ds = segcore.build_dataset("voc2012-aug", str(voc), "train")
    assert [Path(i).stem for i, _ in ds.samples] == ["2007_000032", "2008_000001", "2008_000002"]
    assert ds[0]["label"].tolist() == [[0, 1, 255], [20, 15, 0]]
    assert ds[1]["label"].tolist() == [[3, 3, 0], [0, 19, 19]] and ds[2]["label"].tolist() == [[7, 0, 0], [0, 0, 1]]


# --------------------------------------------------------------------------------------------------- loader


def test_train_loader_same_batches_with_and_without_workers() -> None:
    from segcore_datasets.loader import train_loader

    ds = segcore.build_dataset("synthetic-shapes", split="train", size=32, length=8)
    tf = TrainTransform.for_dataset(ds)
    one = list(train_loader(ds, tf, batch_size=4, num_workers=0, seed=5))
    two = list(train_loader(ds, tf, batch_size=4, num_workers=2, seed=5, pin_memory=False))
    assert len(one) == len(two) == 2 and one[0]["image"].shape == (4, 3, 32, 32)
    assert all(torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"]) for a, b in zip(one, two))
    other = list(train_loader(ds, tf, batch_size=4, num_workers=0, seed=6))
    assert not torch.equal(one[0]["image"], other[0]["image"])

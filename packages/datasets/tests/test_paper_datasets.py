"""The paper datasets read from tiny copies of their layouts (as released and as prepared) and from Hub copies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import segcore
import torch
from PIL import Image
from segcore.data import TestTransform, TrainTransform
from segcore.testing import write_image, write_label
from segcore_datasets.dataset import DatasetError, reduce_zero_label_lut
from segcore_datasets.prepare import prepare

RNG = np.random.default_rng(0)


def test_reduce_zero_label_lut() -> None:
    lut = reduce_zero_label_lut()
    assert lut[[0, 1, 150, 255]].tolist() == [255, 0, 149, 255]


def test_ade20k_values(tmp_path: Path) -> None:
    root = tmp_path / "ADEChallengeData2016"
    for split, stem in (("training", "ADE_train_00000001"), ("validation", "ADE_val_00000001")):
        write_image(root / "images" / split / f"{stem}.jpg", 2, 3)
        write_label(root / "annotations" / split / f"{stem}.png", np.array([[0, 1, 150], [255, 7, 2]]))
    ds = segcore.build_dataset("ade20k", str(root), "train")
    assert len(ds) == 1 and ds.classes[7] == "bed " and ds.palette[0] == (120, 120, 120) and len(ds.classes) == 150
    assert ds[0]["label"].tolist() == [[255, 0, 149], [255, 6, 1]]
    assert ds[0]["path"].endswith("ADE_train_00000001.jpg")
    assert segcore.build_dataset("ade20k", str(root), "val").test_resize == (2048, 512)


def test_cityscapes_label_ids_and_train_ids(tmp_path: Path) -> None:
    root = tmp_path / "cs"
    stem = "aachen/aachen_000000_000019"
    write_image(root / "leftImg8bit" / "train" / f"{stem}_leftImg8bit.png", 2, 4)
    write_label(root / "gtFine" / "train" / f"{stem}_gtFine_labelIds.png", np.array([[0, 7, 8, 33], [26, 9, 24, 23]]))
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
    write_image(root / "images" / "val2017" / "000000000001.jpg", 2, 3)
    raw = np.array([[0, 12, 91], [181, 255, 66]])
    write_label(root / "annotations" / "val2017" / "000000000001.png", raw)
    ds = segcore.build_dataset("coco-stuff164k", str(root), "val")
    assert len(ds.classes) == 171 and ds.classes[-1] == "wood"
    assert ds[0]["label"].tolist() == [[0, 11, 80], [170, 255, 60]]
    prepare("coco-stuff164k", root, root, quiet=True)
    conv = np.asarray(Image.open(root / "annotations" / "val2017" / "000000000001_labelTrainIds.png"))
    assert conv.tolist() == [[0, 11, 80], [170, 255, 60]]
    write_label(root / "annotations" / "val2017" / "000000000001.png", np.array([[11, 0, 0], [0, 0, 0]]))
    with pytest.raises(DatasetError, match=r"\[11\]"):
        prepare("coco-stuff164k", root, root, quiet=True)


def test_voc2012_aug_train_concat_and_prepare(tmp_path: Path) -> None:
    from scipy.io import savemat

    src = tmp_path / "VOCdevkit"
    voc = src / "VOC2012"
    lists = voc / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("2007_000032\n")
    (lists / "val.txt").write_text("2007_000033\n")
    for stem in ("2007_000032", "2007_000033", "2008_000001"):
        write_image(voc / "JPEGImages" / f"{stem}.jpg", 2, 3)
    write_label(voc / "SegmentationClass" / "2007_000032.png", np.array([[0, 1, 255], [20, 15, 0]]), mode="P")
    write_label(voc / "SegmentationClass" / "2007_000033.png", np.array([[0, 0, 0], [5, 5, 5]]), mode="P")
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
        write_image(src / "JPEGImages" / f"{stem}.jpg", 2, 3)
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


def test_coco_stuff10k_release_layout_read_directly(tmp_path: Path) -> None:
    from scipy.io import savemat

    root = tmp_path / "cocostuff-10k-v1.1"
    (root / "imageLists").mkdir(parents=True)
    (root / "imageLists" / "train.txt").write_text("COCO_train2014_000000000077\n")
    (root / "imageLists" / "test.txt").write_text("COCO_train2014_000000000078\n")
    (root / "annotations").mkdir()
    for stem in ("COCO_train2014_000000000077", "COCO_train2014_000000000078"):
        write_image(root / "images" / f"{stem}.jpg", 2, 3)
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
        write_image(voc / "JPEGImages" / f"{stem}.jpg", 2, 3)
    write_label(voc / "SegmentationClass" / "2007_000032.png", np.array([[0, 1, 255], [20, 15, 0]]), mode="P")
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

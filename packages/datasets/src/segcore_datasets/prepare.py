"""Dataset preparation (``segcore data prepare <dataset> SRC DST``), following mmseg's converters (datasets.md).

Each function reads a release layout under ``src`` and writes the prepared layout the readers in
:mod:`segcore_datasets.base` expect under ``dst`` (which may equal ``src`` for in-place conversion).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from segcore_datasets import meta
from segcore_datasets.base import DatasetError, _map_lut, coco_stuff10k_mat_lut, colours_to_ids, read_label

__all__ = [
    "PREPARERS",
    "prepare",
    "prepare_cityscapes",
    "prepare_coco_stuff164k",
    "prepare_coco_stuff10k",
    "prepare_voc_aug",
    "prepare_pascal_context",
    "prepare_isaid",
]


def _progress(items: Iterable[Any], desc: str, total: int | None = None, quiet: bool = False) -> Iterable[Any]:
    if quiet:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, total=total, unit="file")


def _save_l(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8), mode="L").save(path)


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise DatasetError(f"{path} not found ({what})")
    return path


def _load_mat(path: Path) -> Any:
    from scipy.io import loadmat

    try:
        return loadmat(str(path))
    except Exception as err:  # noqa: BLE001
        raise DatasetError(f"{path}: unreadable .mat file ({type(err).__name__}: {err})") from None


def prepare_cityscapes(src: Path, dst: Path, quiet: bool = False) -> dict[str, int]:
    """``*_gtFine_labelIds.png`` -> ``*_gtFine_labelTrainIds.png`` via the labelId->trainId table (§3.2 alternative)."""
    gt = _need(src / "gtFine", "Cityscapes gtFine/ folder")
    files = sorted(gt.rglob("*_gtFine_labelIds.png"))
    if not files:
        raise DatasetError(f"{gt}: no *_gtFine_labelIds.png files")
    lut = _map_lut(meta.CITYSCAPES_LABELID_TO_TRAINID)
    counts: dict[str, int] = {}
    for f in _progress(files, "cityscapes labelTrainIds", quiet=quiet):
        rel = f.relative_to(src)
        out = dst / str(rel).replace("_gtFine_labelIds.png", "_gtFine_labelTrainIds.png")
        _save_l(lut[read_label(f)], out)
        counts[rel.parts[1]] = counts.get(rel.parts[1], 0) + 1
    if src.resolve() != dst.resolve() and (src / "leftImg8bit").is_dir():
        shutil.copytree(src / "leftImg8bit", dst / "leftImg8bit", dirs_exist_ok=True)
    return counts


def prepare_coco_stuff164k(src: Path, dst: Path, quiet: bool = False) -> dict[str, int]:
    """Raw stuffthingmaps (0..181, 255) -> ``<stem>_labelTrainIds.png`` (0..170, 255) (§4.2)."""
    lut = _map_lut(meta.COCO_STUFF_RAW_TO_TRAINID)
    lut[255] = 255
    counts: dict[str, int] = {}
    for split in ("train2017", "val2017"):
        ann = src / "annotations" / split
        if not ann.is_dir():
            continue
        files = sorted(p for p in ann.glob("*.png") if not p.name.endswith("_labelTrainIds.png"))
        for f in _progress(files, f"coco-stuff164k {split}", quiet=quiet):
            raw = read_label(f)
            unused = np.setdiff1d(np.unique(raw), np.array([*meta.COCO_STUFF_RAW_TO_TRAINID, 255]))
            if unused.size:
                raise DatasetError(f"{f}: raw value(s) {unused.tolist()} are not COCO-Stuff classes")
            _save_l(lut[raw], dst / "annotations" / split / f"{f.stem}_labelTrainIds.png")
        counts[split] = len(files)
        if src.resolve() != dst.resolve() and (src / "images" / split).is_dir():
            shutil.copytree(src / "images" / split, dst / "images" / split, dirs_exist_ok=True)
    if not counts:
        raise DatasetError(f"{src}: expected annotations/train2017 and/or annotations/val2017 with raw PNG maps")
    return counts


def prepare_coco_stuff10k(src: Path, dst: Path, quiet: bool = False) -> dict[str, int]:
    """COCO-Stuff 10k v1.1: ``annotations/*.mat`` (field S, 0..182) -> 0 + 1..171 PNGs, images split (§5.2)."""
    lists = src / "imageLists"
    lut = coco_stuff10k_mat_lut()
    counts: dict[str, int] = {}
    for name, sub in (("train", "train2014"), ("test", "test2014")):
        stems = [
            s.strip() for s in _need(lists / f"{name}.txt", "COCO-Stuff 10k list").read_text().splitlines() if s.strip()
        ]
        for stem in _progress(stems, f"coco-stuff10k {name}", quiet=quiet):
            mat = _load_mat(_need(src / "annotations" / f"{stem}.mat", "COCO-Stuff 10k annotation"))
            if "S" not in mat:
                raise DatasetError(f"{src / 'annotations' / (stem + '.mat')}: no field 'S'")
            s = np.asarray(mat["S"])
            if s.min() < 0 or s.max() > 182:
                raise DatasetError(f"{stem}.mat: values outside 0..182")
            _save_l(lut[s.astype(np.uint8)], dst / "annotations" / sub / f"{stem}_labelTrainIds.png")
            img = _need(src / "images" / f"{stem}.jpg", "COCO-Stuff 10k image")
            (dst / "images" / sub).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(img, dst / "images" / sub / img.name)
        counts[sub] = len(stems)
    return counts


def prepare_voc_aug(src: Path, dst: Path, quiet: bool = False) -> dict[str, int]:
    """VOC 2012 + SBD: ``src`` holds ``VOC2012/`` and ``VOCaug/dataset/`` (or ``benchmark_RELEASE/dataset``).

    Writes ``dst/SegmentationClassAug/<stem>.png`` from every SBD ``cls/*.mat`` and the lists ``trainaug.txt`` and
    ``aug.txt`` into ``dst/ImageSets/Segmentation/`` (§6.2); copies the VOC folders when ``dst`` differs.
    """
    voc = _need(src / "VOC2012", "VOCdevkit/VOC2012 folder")
    sbd = src / "VOCaug" / "dataset"
    if not sbd.is_dir():
        sbd = _need(src / "benchmark_RELEASE" / "dataset", "SBD dataset/ folder (VOCaug/dataset)")
    if dst.resolve() != voc.resolve():
        for sub in ("JPEGImages", "SegmentationClass", "ImageSets"):
            if (voc / sub).is_dir():
                shutil.copytree(voc / sub, dst / sub, dirs_exist_ok=True)
    mats = sorted(_need(sbd / "cls", "SBD cls/ folder").glob("*.mat"))
    for m in _progress(mats, "voc sbd .mat", quiet=quiet):
        seg = _load_mat(m)["GTcls"][0, 0]["Segmentation"]
        _save_l(np.asarray(seg).astype(np.uint8), dst / "SegmentationClassAug" / f"{m.stem}.png")

    def read(p: Path) -> set[str]:
        return {s.strip() for s in _need(p, "split list").read_text().splitlines() if s.strip()}

    seg_lists = voc / "ImageSets" / "Segmentation"
    voc_train, voc_val = read(seg_lists / "train.txt"), read(seg_lists / "val.txt")
    sbd_all = read(sbd / "train.txt") | read(sbd / "val.txt")
    trainaug = sorted((voc_train | sbd_all) - voc_val)
    aug = sorted(sbd_all - (voc_train | voc_val))
    out = dst / "ImageSets" / "Segmentation"
    out.mkdir(parents=True, exist_ok=True)
    (out / "trainaug.txt").write_text("".join(s + "\n" for s in trainaug))
    (out / "aug.txt").write_text("".join(s + "\n" for s in aug))
    return {"sbd_mat": len(mats), "trainaug": len(trainaug), "aug": len(aug)}


def prepare_pascal_context(src: Path, dst: Path, quiet: bool = False) -> dict[str, int]:
    """Pascal Context from the 459-label ``.mat`` release (``src/trainval/<stem>.mat``, field ``LabelMap``).

    The 59 frequent categories become 1..59 (rank of their 459-label id, §7.2 table); every other id becomes 0.
    Split lists are read from ``src/train.txt`` and ``src/val.txt`` (the Detail API's ``train``/``val`` phases)
    and written to ``dst/ImageSets/SegmentationContext/``; images are copied from ``src/JPEGImages`` when present.
    This equals mmseg's Detail-API converter when the ``.mat`` maps match the Detail JSON's masks.
    """
    ids = meta.PASCAL_CONTEXT_DETAIL_IDS
    lut = np.zeros(max(ids) + 1 + 1024, np.uint8)
    for rank, cid in enumerate(ids):
        lut[cid] = rank
    counts: dict[str, int] = {}
    out_lists = dst / "ImageSets" / "SegmentationContext"
    out_lists.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        stems = sorted(
            {
                s.strip()
                for s in _need(src / f"{split}.txt", "Pascal Context split list").read_text().splitlines()
                if s.strip()
            }
        )
        for stem in _progress(stems, f"pascal-context {split}", quiet=quiet):
            mat = _load_mat(_need(src / "trainval" / f"{stem}.mat", "Pascal Context 459-label .mat"))
            lm = np.asarray(mat["LabelMap"]).astype(np.int64)
            if lm.min() < 0 or lm.max() >= lut.size:
                raise DatasetError(f"{stem}.mat: LabelMap values outside 0..{lut.size - 1}")
            _save_l(lut[lm], dst / "SegmentationClassContext" / f"{stem}.png")
            img = src / "JPEGImages" / f"{stem}.jpg"
            if img.exists() and src.resolve() != dst.resolve():
                (dst / "JPEGImages").mkdir(parents=True, exist_ok=True)
                shutil.copyfile(img, dst / "JPEGImages" / img.name)
        (out_lists / f"{split}.txt").write_text("".join(s + "\n" for s in stems))
        counts[split] = len(stems)
    return counts


def isaid_windows(side: int, patch: int = 896, step: int = 512) -> list[int]:
    """Window starts along one axis (§8.2): 0, step, 2 step, ... while < side; overrunning ones end at the side."""
    return [min(x, side - patch) if x + patch > side else x for x in range(0, side, step)]


def prepare_isaid(src: Path, dst: Path, patch: int = 896, overlap: int = 384, quiet: bool = False) -> dict[str, int]:
    """iSAID: cut DOTA images and iSAID colour masks into ``patch`` x ``patch`` windows (§8.2).

    Reads ``src/{train,val}/images/P*.png`` and ``src/{train,val}/Semantic_masks/images/P*_instance_color_RGB.png``;
    writes ``patch`` windows (step ``patch - overlap``), colours -> ids (unknown -> 0), pad (image 0, label 255) (§8.2).
    """
    step = patch - overlap
    colours = np.array(meta.ISAID_PALETTE, np.uint8)
    counts: dict[str, int] = {}
    for split in ("train", "val"):
        img_dir = src / split / "images"
        if not img_dir.is_dir():
            continue
        files = sorted(p for p in img_dir.glob("P*.png") if "_instance" not in p.name)
        n = 0
        for f in _progress(files, f"isaid {split}", quiet=quiet):
            mask_p = src / split / "Semantic_masks" / "images" / f"{f.stem}_instance_color_RGB.png"
            img = np.asarray(Image.open(f).convert("RGB"))
            lab = colours_to_ids(np.asarray(Image.open(_need(mask_p, "iSAID mask")).convert("RGB")), colours)
            if img.shape[:2] != lab.shape:
                raise DatasetError(f"{mask_p}: size {lab.shape} differs from image {img.shape[:2]} ({f})")
            h, w = lab.shape
            # mmseg's padding rule, quirk included: a side is padded only in the listed cases.
            ph = patch if (h < patch and w > patch) or (h < patch and w < patch) else h
            pw = patch if (h > patch and w < patch) or (h < patch and w < patch) else w
            if (ph, pw) != (h, w):
                pi = np.zeros((ph, pw, 3), np.uint8)
                pl = np.full((ph, pw), 255, np.uint8)
                pi[:h, :w], pl[:h, :w] = img, lab
                img, lab, h, w = pi, pl, ph, pw
            for y in isaid_windows(h, patch, step):
                for x in isaid_windows(w, patch, step):
                    name = f"{f.stem}_{y}_{y + patch}_{x}_{x + patch}"
                    (dst / "img_dir" / split).mkdir(parents=True, exist_ok=True)
                    (dst / "ann_dir" / split).mkdir(parents=True, exist_ok=True)
                    Image.fromarray(np.ascontiguousarray(img[y : y + patch, x : x + patch])).save(
                        dst / "img_dir" / split / f"{name}.png"
                    )
                    p_img = Image.fromarray(np.ascontiguousarray(lab[y : y + patch, x : x + patch]), mode="L").convert(
                        "P"
                    )
                    p_img.save(dst / "ann_dir" / split / f"{name}_instance_color_RGB.png")
                    n += 1
        counts[split] = n
    if not counts:
        raise DatasetError(f"{src}: expected train/images and/or val/images with iSAID/DOTA PNGs")
    return counts


PREPARERS: dict[str, Callable[..., dict[str, int]]] = {
    "cityscapes": prepare_cityscapes,
    "coco-stuff164k": prepare_coco_stuff164k,
    "coco-stuff10k": prepare_coco_stuff10k,
    "voc2012-aug": prepare_voc_aug,
    "pascal-context": prepare_pascal_context,
    "isaid": prepare_isaid,
}


def prepare(dataset: str, src: str | Path, dst: str | Path, quiet: bool = False) -> dict[str, int]:
    """Run the preparation of ``dataset`` (a key of :data:`PREPARERS`); returns counts written per split."""
    key = {"pascal-context-59": "pascal-context", "pascal-context-60": "pascal-context"}.get(dataset, dataset)
    if key not in PREPARERS:
        raise DatasetError(f"no preparation for {dataset!r}; available: {', '.join(PREPARERS)} (ade20k needs none)")
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise DatasetError(f"{src}: source folder not found")
    dst.mkdir(parents=True, exist_ok=True)
    return PREPARERS[key](src, dst, quiet=quiet)

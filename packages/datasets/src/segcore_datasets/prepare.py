"""Dataset preparation (``segcore data prepare <dataset> SRC DST``), following mmseg's converters (datasets.md).

Each function reads a release layout under ``src`` and writes the prepared layout the readers in
:mod:`segcore_datasets.papers` expect under ``dst`` (which may equal ``src`` for in-place conversion).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from segcore.data.storage import atomic_open, write_atomic

from segcore_datasets import meta
from segcore_datasets.dataset import DatasetError, colours_to_ids, map_lut, read_label
from segcore_datasets.papers import coco_stuff10k_mat_lut

__all__ = [
    "PREPARERS",
    "prepare",
    "prepare_cityscapes",
    "prepare_coco_stuff164k",
    "prepare_coco_stuff10k",
    "prepare_voc_aug",
    "prepare_pascal_context",
    "prepare_isaid",
    "rle_counts",
    "rle_decode",
]


def _progress(items: Iterable[Any], desc: str, total: int | None = None, quiet: bool = False) -> Iterable[Any]:
    if quiet:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, total=total, unit="file")


def _save_png(image: Image.Image, path: Path) -> None:
    """Write ``image`` as a PNG at ``path`` atomically (a temporary name, then a rename): never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as handle:
        image.save(handle, format="PNG")


def _save_l(arr: np.ndarray, path: Path) -> None:
    _save_png(Image.fromarray(arr.astype(np.uint8), mode="L"), path)


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
    lut = map_lut(meta.CITYSCAPES_LABELID_TO_TRAINID)
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
    lut = map_lut(meta.COCO_STUFF_RAW_TO_TRAINID)
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
    write_atomic(out / "trainaug.txt", "".join(s + "\n" for s in trainaug))
    write_atomic(out / "aug.txt", "".join(s + "\n" for s in aug))
    return {"sbd_mat": len(mats), "trainaug": len(trainaug), "aug": len(aug)}


def rle_counts(counts: str | bytes | list[int]) -> list[int]:
    """Run lengths of a COCO RLE: a list as is, or the compressed string of the COCO/Detail mask API.

    The string holds one signed number per run, 5 bits per character (offset 48, bit 0x20 = more characters
    follow, bit 0x10 of the last one = negative); from the fourth run on, the number is the difference to the
    run two places earlier.
    """
    if isinstance(counts, list):
        return [int(c) for c in counts]
    text = counts.decode("ascii") if isinstance(counts, bytes) else counts
    runs: list[int] = []
    pos = 0
    while pos < len(text):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(text):
                raise DatasetError("truncated RLE string (its last run has no final character)")
            c = ord(text[pos]) - 48
            pos += 1
            value |= (c & 0x1F) << shift
            shift += 5
            more = bool(c & 0x20)
            if not more and c & 0x10:
                value -= 1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def rle_decode(rle: dict[str, Any]) -> np.ndarray:
    """Binary mask ``[h, w]`` (uint8) of a COCO RLE ``{"size": [h, w], "counts": ...}`` (runs in column order)."""
    h, w = (int(v) for v in rle["size"])
    runs = rle_counts(rle["counts"])
    if any(r < 0 for r in runs) or sum(runs) != h * w:
        raise DatasetError(f"RLE runs do not cover the {h}x{w} mask (sum {sum(runs)}, expected {h * w})")
    values = np.zeros(len(runs), np.uint8)
    values[1::2] = 1  # runs alternate 0, 1, 0, ... starting with zeros
    return np.repeat(values, runs).reshape(w, h).T


def _detail_phase_filter(items: list[dict[str, Any]], keep: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """What the Detail API (v4.0) keeps of ``items`` when it opens one phase.

    It removes the unwanted entries from the list while iterating over it, so the entry right after each removed
    one is skipped: neither removed nor indexed, even when wanted. mmseg's converter inherits this; it is
    reproduced here so that the outputs match the converter's.
    """
    remaining, kept, i = list(items), [], 0
    while i < len(remaining):
        item = remaining[i]
        if keep(item):
            kept.append(item)
        else:
            del remaining[i]
        i += 1
    return kept


def _copy_image(image: Path, folder: Path) -> None:
    """Copy ``image`` into ``folder`` when it exists and is not already there (in-place preparation)."""
    if image.exists() and image.parent.resolve() != folder.resolve():
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image, folder / image.name)


def _find_detail_json(src: Path) -> Path | None:
    for candidate in (src / "trainval_merged.json", src / "VOC2010" / "trainval_merged.json"):
        if candidate.is_file():
            return candidate
    return None


def _prepare_pascal_context_detail(dst: Path, json_path: Path, quiet: bool) -> dict[str, int]:
    """Pascal Context from the Detail-API annotation file (mmseg ``convert_datasets/pascal_context.py``, §7.2)."""
    import json

    try:
        data = json.loads(json_path.read_text())
        images, annotations = data["images"], data["annos_segmentation"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DatasetError(
            f"{json_path}: not a Detail-API annotation file ({type(err).__name__}: {err}); expected a JSON object "
            "with 'images' and 'annos_segmentation' (trainval_merged.json of the PASCAL in Detail release)"
        ) from None
    ids = meta.PASCAL_CONTEXT_DETAIL_IDS
    rank = {cid: r for r, cid in enumerate(ids)}
    lut = np.zeros(max(ids) + 1, np.uint8)
    for cid, r in rank.items():
        lut[cid] = r
    voc = json_path.parent
    jpegs = voc / "JPEGImages"
    counts: dict[str, int] = {}
    out_lists = dst / "ImageSets" / "SegmentationContext"
    out_lists.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        # One Detail(json, phase) per split, as mmseg's converter opens it: images of the phase, then the
        # segmentation annotations of those images, both through the API's filtering.
        phase_images = _detail_phase_filter(images, lambda img, split=split: img["phase"] == split)
        image_ids = {img["image_id"] for img in phase_images}
        by_image: dict[Any, list[dict[str, Any]]] = {}
        for ann in _detail_phase_filter(annotations, lambda a, ids=image_ids: a["image_id"] in ids):
            by_image.setdefault(ann["image_id"], []).append(ann)
        stems = []
        for img in _progress(phase_images, f"pascal-context {split}", quiet=quiet):
            stem = Path(img["file_name"]).stem
            mask = np.zeros((int(img["height"]), int(img["width"])), np.int64)
            for ann in by_image.get(img["image_id"], []):  # later annotations paint over earlier ones
                try:
                    m = rle_decode(ann["segmentation"])
                except DatasetError as err:
                    where = f"{json_path}: annotation {ann.get('id')} of {img['file_name']}"
                    raise DatasetError(f"{where}: {err}") from None
                if m.shape != mask.shape:
                    raise DatasetError(
                        f"{json_path}: annotation {ann.get('id')} of {img['file_name']} is {m.shape[0]}x{m.shape[1]}, "
                        f"the image is {mask.shape[0]}x{mask.shape[1]}"
                    )
                mask[m.astype(bool)] = int(ann["category_id"])
            unknown = sorted(set(np.unique(mask).tolist()) - set(rank))
            if unknown:
                raise DatasetError(
                    f"{json_path}: {img['file_name']} has category ids {unknown} outside the 60 of Pascal Context "
                    "(0 and the 59 frequent classes); is this the trainval_merged.json of Pascal Context?"
                )
            _save_l(lut[mask], dst / "SegmentationClassContext" / f"{stem}.png")
            _copy_image(jpegs / f"{stem}.jpg", dst / "JPEGImages")
            stems.append(stem)
        stems.sort()
        write_atomic(out_lists / f"{split}.txt", "".join(s + "\n" for s in stems))
        counts[split] = len(stems)
    return counts


def prepare_pascal_context(src: Path, dst: Path, quiet: bool = False) -> dict[str, int]:
    """Pascal Context, from either public form of its labels.

    * The Detail-API release (what mmseg's converter reads): ``trainval_merged.json`` in ``src`` (the
      ``VOCdevkit/VOC2010`` folder) or in ``src/VOC2010``, images in ``JPEGImages/`` next to it. Every image of
      the ``train`` / ``val`` phase gets the class mask of its RLE annotations (later ones paint over earlier
      ones); the 60 allowed ids (0 + the 59 frequent classes) become their rank 0..59 (§7.2 table), any other id
      is refused. Read without the ``detail`` package; its phase filtering (which skips the entry after each
      one it drops) is reproduced, so the outputs match mmseg's converter's.
    * The 459-label ``.mat`` release (``src/trainval/<stem>.mat``, field ``LabelMap``) with ``src/train.txt``
      and ``src/val.txt``: the 59 frequent categories become 1..59, every other id 0.

    Writes ``dst/SegmentationClassContext/<stem>.png`` and ``dst/ImageSets/SegmentationContext/{train,val}.txt``
    (stems, sorted) and copies the images to ``dst/JPEGImages`` when ``dst`` is another folder.
    """
    json_path = _find_detail_json(src)
    if json_path is not None:
        return _prepare_pascal_context_detail(dst, json_path, quiet)
    if not (src / "trainval").is_dir():
        raise DatasetError(
            f"{src}: no Pascal Context labels found; expected either trainval_merged.json (the Detail-API file, "
            "in VOCdevkit/VOC2010/ next to JPEGImages/) or trainval/<stem>.mat (the 459-label release) with "
            "train.txt and val.txt"
        )
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
            _copy_image(src / "JPEGImages" / f"{stem}.jpg", dst / "JPEGImages")
        write_atomic(out_lists / f"{split}.txt", "".join(s + "\n" for s in stems))
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
                    _save_png(
                        Image.fromarray(np.ascontiguousarray(img[y : y + patch, x : x + patch])),
                        dst / "img_dir" / split / f"{name}.png",
                    )
                    p_img = Image.fromarray(np.ascontiguousarray(lab[y : y + patch, x : x + patch]), mode="L").convert(
                        "P"
                    )
                    _save_png(p_img, dst / "ann_dir" / split / f"{name}_instance_color_RGB.png")
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

"""The paper datasets (datasets.md §§2-8) as one table: an entry per dataset, one factory for all of them.

Each :class:`Paper` entry declares what :mod:`segcore_datasets.meta` and the mmseg 0.x configs say about a dataset:
classes and palette, ``reduce_zero_label``, the eval protocol (§9), the training crop and scale, our split names ->
release folders, the expected layout (shown when files are missing) and where images and labels lie.
:func:`paper_dataset` builds any of them; the named factories below (``ade20k`` ... ``isaid``) are what the plugin
registers. Four releases need more than a scan or a split list, each a small function its entry names: the
Cityscapes ``labelIds`` and COCO-Stuff 164k raw maps (``release_labels``), the COCO-Stuff 10k ``.mat`` release and
VOC + SBD aug (``find``).

Pairing (§1.1): with a split file, ``images/stem+image_suffix`` and ``labels/stem+label_suffix``; without one, a
sorted recursive scan of ``images``. ``root="hf:..."`` reads a Hub copy with the dataset's conventions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from segcore.config.settings import EvalProtocol

from segcore_datasets import meta
from segcore_datasets.dataset import DatasetError, SegDataset, map_lut, reduce_zero_label_lut
from segcore_datasets.hf import encoded, find_columns, load_table, skip_bad_rows

__all__ = [
    "PaperDatasetOptions",
    "Paper",
    "PAPERS",
    "paper_dataset",
    "coco_stuff10k_mat_lut",
    "ade20k",
    "cityscapes",
    "coco_stuff164k",
    "coco_stuff10k",
    "voc2012_aug",
    "pascal_context_59",
    "pascal_context_60",
    "isaid",
]

Samples = list[tuple[str, str]]
# The label columns a Hub copy of a paper dataset may use, in the order they are looked for.
HUB_LABEL_COLUMNS = ("annotation", "label", "mask", "semantic_segmentation", "stuff_map", "seg", "gt")


@dataclass(frozen=True)
class PaperDatasetOptions:
    """Options of the paper datasets.

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


@dataclass(frozen=True)
class Paper:
    """One paper dataset: its conventions and where its files lie.

    Attributes:
        name: the registered name (``coco-stuff164k``).
        classes, palette: from :mod:`segcore_datasets.meta`.
        eval_protocol: the reference test pipeline (§9).
        splits: our split name -> the release's name for it (``{"val": "validation"}``).
        layout: the expected layout, shown when a folder or file is missing.
        images, labels: folders under the root, ``{split}`` standing for the release's split name.
        suffixes: ``(image suffix, label suffix)``; a label is its image's stem plus the label suffix.
        split_file: the list of stems under the root (``{split}`` as above); ``None``: scan ``images``.
        reduce_zero_label: value 0 is ignored, value v is class v - 1 (§1.3).
        crop_size, train_scale: the training crop and the train ``img_scale`` (long, short) (§9).
        colour_labels: labels are RGB masks in the palette's colours (iSAID).
        release_labels: ``(label suffix, release id -> train id)``: when the first prepared label is missing and
            the one with this suffix exists, the release's maps are read and mapped.
        hub_ids: release id -> train id for the Hub copies (which carry the release's maps), when they differ.
        find: the samples of a release that a scan or a split list does not describe, given
            ``(entry, root, release split, split)``; returns the samples and the :class:`SegDataset` arguments
            that differ from the entry's.
    """

    name: str
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    eval_protocol: EvalProtocol
    splits: Mapping[str, str]
    layout: str
    images: str
    labels: str
    suffixes: tuple[str, str]
    split_file: str | None = None
    reduce_zero_label: bool = False
    crop_size: tuple[int, int] = (512, 512)
    train_scale: tuple[int, int] = (2048, 512)
    colour_labels: bool = False
    release_labels: tuple[str, Mapping[int, int]] | None = None
    hub_ids: Mapping[int, int] | None = None
    find: Callable[[Paper, Path, str, str], tuple[Samples, dict[str, Any]]] | None = None

    def conventions(self) -> dict[str, Any]:
        """The :class:`SegDataset` arguments every copy of this dataset shares (files and Hub copies alike)."""
        return dict(
            classes=self.classes,
            palette=self.palette,
            lut=reduce_zero_label_lut() if self.reduce_zero_label else None,
            eval_protocol=self.eval_protocol,
            crop_size=self.crop_size,
            train_scale=self.train_scale,
            reduce_zero_label=self.reduce_zero_label,
            colours=np.array(self.palette, np.uint8) if self.colour_labels else None,
        )


def coco_stuff10k_mat_lut() -> np.ndarray:
    """COCO-Stuff 10k ``S`` values (0 unlabeled, 1..182) -> prepared values (0, trainId + 1) (datasets.md §5.2)."""
    lut = np.zeros(256, np.uint8)
    for raw, tid in meta.COCO_STUFF_RAW_TO_TRAINID.items():
        lut[raw + 1] = tid + 1  # the 164k map shifted by one; 0 (unlabeled) stays 0
    return lut[:183]


# ---------------------------------------------------------------------------------------------------------------
# Pairing (§1.1)


def _require_dir(path: Path, dataset: str, layout: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{dataset}: folder {path} not found; expected layout:\n{layout}")
    return path


def _scan(img_dir: Path, ann_dir: Path, img_suffix: str, seg_suffix: str, dataset: str, layout: str) -> Samples:
    _require_dir(img_dir, dataset, layout)
    rels = sorted(str(p.relative_to(img_dir)) for p in img_dir.rglob(f"*{img_suffix}") if p.is_file())
    if not rels:
        raise DatasetError(f"{dataset}: no '*{img_suffix}' images under {img_dir}; expected layout:\n{layout}")
    return [(str(img_dir / r), str(ann_dir / (r[: -len(img_suffix)] + seg_suffix))) for r in rels]


def _listed(
    img_dir: Path, ann_dir: Path, split_file: Path, img_suffix: str, seg_suffix: str, dataset: str, layout: str
) -> Samples:
    _require_dir(img_dir, dataset, layout)
    if not split_file.is_file():
        raise DatasetError(f"{dataset}: split file {split_file} not found; expected layout:\n{layout}")
    stems = [s.strip() for s in split_file.read_text().splitlines() if s.strip()]
    if not stems:
        raise DatasetError(f"{dataset}: split file {split_file} is empty")
    return [(str(img_dir / (s + img_suffix)), str(ann_dir / (s + seg_suffix))) for s in stems]


def _stems(path: Path, layout: str) -> set[str]:
    if not path.is_file():
        raise DatasetError(f"{path} not found; expected layout:\n{layout}")
    return {s.strip() for s in path.read_text().splitlines() if s.strip()}


def _split_name(dataset: str, split: str, names: Mapping[str, str]) -> str:
    if split not in names:
        raise DatasetError(f"{dataset}: unknown split {split!r}; valid: {', '.join(names)}")
    return names[split]


def _files(entry: Paper, root: Path, sub: str, split: str) -> tuple[Samples, dict[str, Any]]:
    """The entry's samples: its split list, else a scan of its image folder; release maps when only they exist.

    The default of :attr:`Paper.find` (so it takes the finders' arguments; ``split`` is not needed here).
    """
    img_dir, ann_dir = root / entry.images.format(split=sub), root / entry.labels.format(split=sub)
    image_suffix, label_suffix = entry.suffixes
    if entry.split_file is not None:
        split_file = root / entry.split_file.format(split=sub)
        samples = _listed(img_dir, ann_dir, split_file, image_suffix, label_suffix, entry.name, entry.layout)
    else:
        samples = _scan(img_dir, ann_dir, image_suffix, label_suffix, entry.name, entry.layout)
    if entry.release_labels is not None:
        release_suffix, ids = entry.release_labels
        if not Path(samples[0][1]).exists() and Path(samples[0][1].replace(label_suffix, release_suffix)).exists():
            return [(i, a.replace(label_suffix, release_suffix)) for i, a in samples], {"lut": map_lut(ids)}
    return samples, {}


# ---------------------------------------------------------------------------------------------------------------
# The releases that a scan or a split list does not describe


def _coco_stuff10k_release(entry: Paper, root: Path, sub: str, split: str) -> tuple[Samples, dict[str, Any]]:
    """The v1.1 release as unzipped: labels read from the .mat files (field S), mapped as the converter does."""
    if not (root / "imageLists").is_dir() or (root / "images" / sub).is_dir():
        return _files(entry, root, sub, split)
    split_file = root / "imageLists" / f"{sub[:-4]}.txt"
    samples = _listed(root / "images", root / "annotations", split_file, ".jpg", ".mat", entry.name, entry.layout)
    return samples, {"mat_label": (("S",), coco_stuff10k_mat_lut())}


def _voc_aug(entry: Paper, root: Path, sub: str, split: str) -> tuple[Samples, dict[str, Any]]:
    """VOC train.txt (VOC labels) + aug.txt (SBD labels, prepared), or SBD's ``cls/*.mat`` read directly (§6.2)."""
    samples, extra = _files(entry, root, sub, split)
    if split != "train":
        return samples, extra
    lists = root / "ImageSets" / "Segmentation"
    releases = (root.parent / "VOCaug" / "dataset", root.parent / "benchmark_RELEASE" / "dataset")
    sbd = next((d for d in releases if (d / "cls").is_dir()), None)
    if (lists / "aug.txt").is_file() or sbd is None:
        layout = entry.layout + "\n  (or the SBD release at <root>/../VOCaug/dataset/cls/*.mat)"
        aug = _listed(
            root / "JPEGImages", root / "SegmentationClassAug", lists / "aug.txt", ".jpg", ".png", entry.name, layout
        )
        return samples + aug, extra
    # Unprepared: aug = (SBD train + val) - (VOC train + val).
    voc = {Path(a).stem for a, _ in samples} | _stems(lists / "val.txt", entry.layout)
    sbd_all = _stems(sbd / "train.txt", entry.layout) | _stems(sbd / "val.txt", entry.layout)
    aug = [(str(root / "JPEGImages" / f"{s}.jpg"), str(sbd / "cls" / f"{s}.mat")) for s in sorted(sbd_all - voc)]
    return samples + aug, {**extra, "mat_label": (("GTcls", "Segmentation"), None)}


# ---------------------------------------------------------------------------------------------------------------
# The table; eval protocols from §9.

_SEGNEXT_512 = EvalProtocol(mode="whole", resize=(2048, 512), resize_to_multiple=32)
_PASCAL_CONTEXT_60 = Paper(
    name="pascal-context-60",
    classes=meta.PASCAL_CONTEXT_60_CLASSES,
    palette=meta.PASCAL_CONTEXT_60_PALETTE,
    eval_protocol=EvalProtocol(mode="slide", crop_size=(480, 480), stride=(320, 320), resize=(520, 520), min_size=480),
    splits={"train": "train", "val": "val", "test": "val"},
    layout=(
        "  <root>/JPEGImages/*.jpg\n  <root>/SegmentationClassContext/*.png (values 0..59)\n"
        "  <root>/ImageSets/SegmentationContext/{train,val}.txt"
    ),
    images="JPEGImages",
    labels="SegmentationClassContext",
    suffixes=(".jpg", ".png"),
    split_file="ImageSets/SegmentationContext/{split}.txt",
    crop_size=(480, 480),
    train_scale=(520, 520),
)

PAPERS: dict[str, Paper] = {
    p.name: p
    for p in (
        Paper(
            name="ade20k",
            classes=meta.ADE20K_CLASSES,
            palette=meta.ADE20K_PALETTE,
            eval_protocol=_SEGNEXT_512,
            splits={"train": "training", "val": "validation", "validation": "validation"},
            layout="  <root>/images/{training,validation}/*.jpg\n  <root>/annotations/{training,validation}/*.png",
            images="images/{split}",
            labels="annotations/{split}",
            suffixes=(".jpg", ".png"),
            reduce_zero_label=True,
        ),
        Paper(
            name="cityscapes",
            classes=meta.CITYSCAPES_CLASSES,
            palette=meta.CITYSCAPES_PALETTE,
            eval_protocol=EvalProtocol(mode="slide", crop_size=(1024, 1024), stride=(768, 768), resize=(2048, 1024)),
            splits={"train": "train", "val": "val", "test": "test"},
            layout=(
                "  <root>/leftImg8bit/{train,val}/<city>/*_leftImg8bit.png\n"
                "  <root>/gtFine/{train,val}/<city>/*_gtFine_labelTrainIds.png (or *_gtFine_labelIds.png)"
            ),
            images="leftImg8bit/{split}",
            labels="gtFine/{split}",
            suffixes=("_leftImg8bit.png", "_gtFine_labelTrainIds.png"),
            crop_size=(1024, 1024),
            train_scale=(2048, 1024),
            release_labels=("_gtFine_labelIds.png", meta.CITYSCAPES_LABELID_TO_TRAINID),
        ),
        Paper(
            name="coco-stuff164k",
            classes=meta.COCO_STUFF_CLASSES,
            palette=meta.COCO_STUFF_PALETTE,
            eval_protocol=_SEGNEXT_512,
            splits={"train": "train2017", "val": "val2017"},
            layout=(
                "  <root>/images/{train2017,val2017}/*.jpg\n"
                "  <root>/annotations/{train2017,val2017}/*_labelTrainIds.png"
            ),
            images="images/{split}",
            labels="annotations/{split}",
            suffixes=(".jpg", "_labelTrainIds.png"),
            release_labels=(".png", meta.COCO_STUFF_RAW_TO_TRAINID),
            hub_ids=meta.COCO_STUFF_RAW_TO_TRAINID,  # Hub copies carry the raw stuffthingmaps (§10)
        ),
        Paper(
            name="coco-stuff10k",
            classes=meta.COCO_STUFF_CLASSES,
            palette=meta.COCO_STUFF_PALETTE,
            eval_protocol=EvalProtocol(
                mode="slide", crop_size=(512, 512), stride=(341, 341), resize=(2048, 512), min_size=512
            ),
            splits={"train": "train2014", "val": "test2014", "test": "test2014"},
            layout=(
                "  <root>/images/{train2014,test2014}/*.jpg\n"
                "  <root>/annotations/{train2014,test2014}/*_labelTrainIds.png\n"
                "or the release: <root>/images/*.jpg, <root>/annotations/*.mat, <root>/imageLists/{train,test}.txt"
            ),
            images="images/{split}",
            labels="annotations/{split}",
            suffixes=(".jpg", "_labelTrainIds.png"),
            reduce_zero_label=True,
            find=_coco_stuff10k_release,
        ),
        Paper(
            name="voc2012-aug",
            classes=meta.VOC_CLASSES,
            palette=meta.VOC_PALETTE,
            eval_protocol=EvalProtocol(mode="whole", resize=(2048, 512)),
            splits={"train": "train", "val": "val"},
            layout=(
                "  <root>/JPEGImages/*.jpg\n  <root>/SegmentationClass/*.png\n  <root>/SegmentationClassAug/*.png\n"
                "  <root>/ImageSets/Segmentation/{train,val,aug}.txt"
            ),
            images="JPEGImages",
            labels="SegmentationClass",
            suffixes=(".jpg", ".png"),
            split_file="ImageSets/Segmentation/{split}.txt",
            find=_voc_aug,
        ),
        _PASCAL_CONTEXT_60,
        replace(
            _PASCAL_CONTEXT_60,
            name="pascal-context-59",
            classes=meta.PASCAL_CONTEXT_59_CLASSES,
            palette=meta.PASCAL_CONTEXT_60_PALETTE[1:],
            reduce_zero_label=True,
        ),
        Paper(
            name="isaid",
            classes=meta.ISAID_CLASSES,
            palette=meta.ISAID_PALETTE,
            eval_protocol=EvalProtocol(mode="whole", resize=(896, 896)),
            splits={"train": "train", "val": "val"},
            layout="  <root>/img_dir/{train,val}/*.png\n  <root>/ann_dir/{train,val}/*_instance_color_RGB.png",
            images="img_dir/{split}",
            labels="ann_dir/{split}",
            suffixes=(".png", "_instance_color_RGB.png"),
            crop_size=(896, 896),
            train_scale=(896, 896),
            colour_labels=True,
        ),
    )
}


# ---------------------------------------------------------------------------------------------------------------
# The factory


def _options(options: dict[str, Any], name: str, root: str | None) -> PaperDatasetOptions:
    from segcore.config.options import parse_options

    if not root:
        raise DatasetError(
            f"{name} needs its folder: give --data-root DIR (Python: root=DIR), the prepared release "
            f"(segcore data prepare {name} ...) or hf:<repo> for a Hub copy"
        )
    return parse_options(PaperDatasetOptions, options, component=name)


def _hub(entry: Paper, root: str, split: str, opts: PaperDatasetOptions) -> SegDataset:
    """A Hub copy: ``hf:<saved dir>`` (``load_from_disk``), ``hf:<folder of parquet shards>`` or ``hf:<repo id>``.

    The named dataset's conventions (classes, label mapping, protocol) apply; ``val`` reads the Hub's ``val`` or
    ``validation`` split. Rows are decoded one at a time, when read (see :mod:`segcore_datasets.hf`).
    """
    ref = root[3:]
    wanted = (opts.hf_split,) if opts.hf_split else ((split, "validation") if split == "val" else (split,))
    table, hub_split = load_table(ref, split, wanted)
    where = f"{entry.name}: Hub dataset {ref} ({hub_split} split)"
    img_col, lab_col = find_columns(table, None, None, where, HUB_LABEL_COLUMNS)
    kw = entry.conventions()
    if entry.hub_ids is not None:
        kw["lut"] = map_lut(entry.hub_ids)
    kw.update(
        hf=encoded(table.select_columns([img_col, lab_col])),
        hf_columns=(img_col, lab_col),
        root=root,
        check_values=opts.check_values,
        hf_split=hub_split,
    )
    if opts.skip_bad:
        kw["hf_rows"], kw["skipped"] = skip_bad_rows(SegDataset(entry.name, split, **kw))
    return SegDataset(entry.name, split, **kw)


def paper_dataset(name: str, root: str, split: str = "train", **options: Any) -> SegDataset:
    """The paper dataset ``name`` (a key of :data:`PAPERS`) from its folder, or its Hub copy (``root="hf:..."``).

    Raises:
        DatasetError: for an unknown name or split, a missing folder or split file (showing the expected layout).

    Example:
        >>> ds = paper_dataset("ade20k", "data/ADEChallengeData2016", "val")  # doctest: +SKIP
    """
    if name not in PAPERS:
        raise DatasetError(f"unknown paper dataset {name!r}; known: {', '.join(PAPERS)}")
    entry = PAPERS[name]
    opts = _options(options, name, root)
    if str(root).startswith("hf:"):
        return _hub(entry, root, split, opts)
    sub = _split_name(name, split, entry.splits)
    samples, extra = (entry.find or _files)(entry, Path(root), sub, split)
    kw = {**entry.conventions(), **extra}
    return SegDataset(name, split, samples=samples, root=str(root), check_values=opts.check_values, **kw)


# ---------------------------------------------------------------------------------------------------------------
# The registered factories (datasets.md §§2-8)


def ade20k(root: str, split: str = "train", **options: Any) -> SegDataset:
    """ADE20K (``ADEChallengeData2016``): values 0..150, reduce_zero_label -> 150 classes (§2)."""
    return paper_dataset("ade20k", root, split, **options)


def cityscapes(root: str, split: str = "train", **options: Any) -> SegDataset:
    """Cityscapes fine: ``*_gtFine_labelTrainIds.png`` when present, else ``*_gtFine_labelIds.png`` mapped (§3)."""
    return paper_dataset("cityscapes", root, split, **options)


def coco_stuff164k(root: str, split: str = "train", **options: Any) -> SegDataset:
    """COCO-Stuff 164k: prepared ``*_labelTrainIds.png`` or raw 182-id maps mapped to 171 classes (§4)."""
    return paper_dataset("coco-stuff164k", root, split, **options)


def coco_stuff10k(root: str, split: str = "train", **options: Any) -> SegDataset:
    """COCO-Stuff 10k prepared by ``segcore data prepare coco-stuff10k``: values 0..171, reduce_zero_label (§5).

    The v1.1 release as unzipped (``images/``, ``annotations/*.mat``, ``imageLists/``) is read directly.
    """
    return paper_dataset("coco-stuff10k", root, split, **options)


def voc2012_aug(root: str, split: str = "train", **options: Any) -> SegDataset:
    """VOC 2012 + SBD (root ``VOCdevkit/VOC2012``): train = train.txt (VOC labels) + aug.txt (SBD labels) (§6)."""
    return paper_dataset("voc2012-aug", root, split, **options)


def pascal_context_60(root: str, split: str = "train", **options: Any) -> SegDataset:
    """Pascal Context, 60 classes (background scored, §7); root ``VOCdevkit/VOC2010``."""
    return paper_dataset("pascal-context-60", root, split, **options)


def pascal_context_59(root: str, split: str = "train", **options: Any) -> SegDataset:
    """Pascal Context, 59 classes (same files, background -> ignore by reduce_zero_label, §7)."""
    return paper_dataset("pascal-context-59", root, split, **options)


def isaid(root: str, split: str = "train", **options: Any) -> SegDataset:
    """The iSAID patches (``img_dir``/``ann_dir``); index-map labels, or RGB masks mapped by the 16 colours (§8)."""
    return paper_dataset("isaid", root, split, **options)

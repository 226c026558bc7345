"""Registers segcore-datasets' datasets through the ``segcore_datasets`` hook (no torch import here)."""

from __future__ import annotations

from segcore.plugins.hookspecs import hookimpl
from segcore.plugins.specs import ComponentSpec

_P = "segcore_datasets.papers"
_M = "segcore_datasets.meta"
_MMSEG = "mmsegmentation 0.x conventions (datasets.md)"


@hookimpl
def segcore_datasets() -> dict[str, ComponentSpec]:
    """Return the datasets of this package."""

    def paper(key: str, desc: str, classes: str) -> ComponentSpec:
        return ComponentSpec(
            factory=f"{_P}:{key.replace('-', '_')}",
            options=f"{_P}:PaperDatasetOptions",
            description=desc,
            source=_MMSEG,
            classes=f"{_M}:{classes}",
        )

    return {
        "synthetic-shapes": ComponentSpec(
            factory="segcore_datasets.synthetic:synthetic_shapes",
            options="segcore_datasets.synthetic:SyntheticShapesOptions",
            description="generated on the fly: 5 shapes + background (class = shape, not colour), no files",
            source="segcore",
            classes="segcore_datasets.synthetic:SHAPES_CLASSES",
        ),
        "ade20k": paper("ade20k", "ADE20K SceneParsing, 150 classes (0 = other -> ignore)", "ADE20K_CLASSES"),
        "cityscapes": paper(
            "cityscapes", "Cityscapes fine, 19 classes (labelTrainIds, or labelIds mapped)", "CITYSCAPES_CLASSES"
        ),
        "coco-stuff164k": paper(
            "coco-stuff164k", "COCO-Stuff 164k, 171 classes (raw 182-id maps mapped)", "COCO_STUFF_CLASSES"
        ),
        "coco-stuff10k": paper(
            "coco-stuff10k", "COCO-Stuff 10k v1.1, 171 classes (0 = unlabeled -> ignore)", "COCO_STUFF_CLASSES"
        ),
        "voc2012-aug": paper("voc2012-aug", "Pascal VOC 2012 + SBD aug, 21 classes (10,582 train)", "VOC_CLASSES"),
        "pascal-context-59": paper(
            "pascal-context-59", "Pascal Context, 59 classes (background ignored)", "PASCAL_CONTEXT_59_CLASSES"
        ),
        "pascal-context-60": paper(
            "pascal-context-60", "Pascal Context, 60 classes (background scored)", "PASCAL_CONTEXT_60_CLASSES"
        ),
        "isaid": paper("isaid", "iSAID 896x896 patches, 16 classes", "ISAID_CLASSES"),
        "folder": ComponentSpec(
            factory="segcore_datasets.folder:folder",
            options="segcore_datasets.folder:FolderDatasetOptions",
            description="your own data: images/<split>/ + masks/<split>/*.png + classes.txt (--data-root DIR)",
            source="segcore",
        ),
        "hf:": ComponentSpec(
            factory="segcore_datasets.hf:hub_dataset",
            options="segcore_datasets.hf:HubDatasetOptions",
            description="any Hugging Face dataset: hf:<repo id>, a parquet folder or a save_to_disk folder",
            source="https://huggingface.co/docs/datasets",
        ),
    }

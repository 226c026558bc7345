"""The segcore-datasets plugin registers every dataset, with its class names and palette."""

from __future__ import annotations

from segcore_datasets import meta


def test_plugin_lists_all_datasets() -> None:
    from segcore.plugins.registry import components

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

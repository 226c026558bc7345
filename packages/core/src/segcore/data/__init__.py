"""Data in and out, owned by core: transforms, the preflight, the class checks, the image reader, output files.

The transforms are what recipes and eval protocols describe; :mod:`segcore.data.io` is the one image reader, and
:mod:`segcore.data.storage` the one way files are written (atomically, with storage errors in words).

Datasets themselves come from plugins (``segcore_datasets`` hook).
"""

from __future__ import annotations

from segcore.config.settings import EvalProtocol, Photometric, TrainPipeline, keep_ratio_size, min_size_resize_size
from segcore.data.check import ClassComparison, check_class_names, check_classes, compare_classes, preflight
from segcore.data.io import IMAGE_EXTENSIONS, read_image
from segcore.data.transforms import TestTransform, TrainTransform

__all__ = [
    "TrainTransform",
    "TestTransform",
    "TrainPipeline",
    "Photometric",
    "EvalProtocol",
    "keep_ratio_size",
    "min_size_resize_size",
    "preflight",
    "ClassComparison",
    "compare_classes",
    "check_classes",
    "check_class_names",
    "IMAGE_EXTENSIONS",
    "read_image",
]

"""Data pipelines owned by core: the transforms that recipes and eval protocols describe, and the preflight.

Datasets themselves come from plugins (``segcore_datasets`` hook).
"""

from __future__ import annotations

from segcore.data.check import preflight
from segcore.data.transforms import TestTransform, TrainTransform
from segcore.settings import EvalProtocol, Photometric, TrainPipeline, keep_ratio_size, min_size_resize_size

__all__ = [
    "TrainTransform",
    "TestTransform",
    "TrainPipeline",
    "Photometric",
    "EvalProtocol",
    "keep_ratio_size",
    "min_size_resize_size",
    "preflight",
]

"""segcore-datasets: paper datasets with mmseg 0.x label conventions, Hub copies, synthetic-shapes and transforms.

Importing this package is cheap (no torch); the names below load their module on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "SyntheticShapes": "segcore_datasets.synthetic",
    "SyntheticShapesOptions": "segcore_datasets.synthetic",
    "SegDataset": "segcore_datasets.dataset",
    "DatasetError": "segcore_datasets.dataset",
    "TrainTransform": "segcore.data.transforms",
    "TestTransform": "segcore.data.transforms",
    "preflight": "segcore_datasets.audit",
    "train_loader": "segcore_datasets.loader",
    "check_dataset": "segcore_datasets.audit",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'segcore_datasets' has no attribute {name!r}")

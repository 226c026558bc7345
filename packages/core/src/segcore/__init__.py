"""segcore: semantic segmentation where any encoder works with any decoder.

Heavy modules (torch, model code) are imported on first attribute access, so ``import segcore`` and the
``segcore`` command stay fast.

Example:
    >>> import segcore
    >>> model = segcore.build_model(encoder="timm:resnet18", decoder="upernet", num_classes=21)  # doctest: +SKIP
    >>> labels = model.predict(images)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from segcore.errors import (
    CheckpointError,
    ComponentClashError,
    HubNetworkError,
    NotCachedError,
    OptionsError,
    SegcoreError,
    UnknownComponentError,
    WiringError,
)
from segcore.hookspecs import hookimpl
from segcore.specs import CheckpointSpec, ComponentSpec, ConverterSpec, FeatureInfo, ParamGroupRule, RecipeSpec

__version__ = "0.1.0"

_LAZY = {
    "DecoderOutput": "segcore.contracts",
    "Encoder": "segcore.contracts",
    "Decoder": "segcore.contracts",
    "Loss": "segcore.contracts",
    "SegModel": "segcore.model",
    "SegModelConfig": "segcore.model",
    "build_model": "segcore.model",
    "build_encoder": "segcore.components",
    "build_decoder": "segcore.components",
    "build_loss": "segcore.components",
    "build_dataset": "segcore.components",
    "list_components": "segcore.registry",
    "ComponentInfo": "segcore.registry",
    "parse_options": "segcore.options",
    "convert_checkpoint": "segcore.model",
    "load_state_dict_file": "segcore.state_dict",
    "export_onnx": "segcore.export",
}

__all__ = [
    "__version__",
    "hookimpl",
    "FeatureInfo",
    "ComponentSpec",
    "CheckpointSpec",
    "ConverterSpec",
    "RecipeSpec",
    "ParamGroupRule",
    "SegcoreError",
    "UnknownComponentError",
    "OptionsError",
    "ComponentClashError",
    "WiringError",
    "CheckpointError",
    "HubNetworkError",
    "NotCachedError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'segcore' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # the names of _LAZY, for type checkers (they are in __all__ through *_LAZY)
    from segcore.components import build_dataset, build_decoder, build_encoder, build_loss  # noqa: F401
    from segcore.contracts import Decoder, DecoderOutput, Encoder, Loss  # noqa: F401
    from segcore.export import export_onnx  # noqa: F401
    from segcore.model import SegModel, SegModelConfig, build_model, convert_checkpoint  # noqa: F401
    from segcore.options import parse_options  # noqa: F401
    from segcore.registry import ComponentInfo, list_components  # noqa: F401
    from segcore.state_dict import load_state_dict_file  # noqa: F401

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
from segcore.plugins.hookspecs import hookimpl
from segcore.plugins.specs import CheckpointSpec, ComponentSpec, ConverterSpec, FeatureInfo, ParamGroupRule, RecipeSpec

__version__ = "0.1.0"

_LAZY = {
    "DecoderOutput": "segcore.models.contracts",
    "Encoder": "segcore.models.contracts",
    "Decoder": "segcore.models.contracts",
    "Loss": "segcore.models.contracts",
    "SegModel": "segcore.models.model",
    "SegModelConfig": "segcore.models.model",
    "build_model": "segcore.models.model",
    "build_encoder": "segcore.models.components",
    "build_decoder": "segcore.models.components",
    "build_loss": "segcore.models.components",
    "build_dataset": "segcore.models.components",
    "list_components": "segcore.plugins.registry",
    "ComponentInfo": "segcore.plugins.registry",
    "parse_options": "segcore.config.options",
    "convert_checkpoint": "segcore.models.model",
    "load_state_dict_file": "segcore.weights.state_dict",
    "export_onnx": "segcore.tools.export",
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
    from segcore.config.options import parse_options  # noqa: F401
    from segcore.models.components import build_dataset, build_decoder, build_encoder, build_loss  # noqa: F401
    from segcore.models.contracts import Decoder, DecoderOutput, Encoder, Loss  # noqa: F401
    from segcore.models.model import SegModel, SegModelConfig, build_model, convert_checkpoint  # noqa: F401
    from segcore.plugins.registry import ComponentInfo, list_components  # noqa: F401
    from segcore.tools.export import export_onnx  # noqa: F401
    from segcore.weights.state_dict import load_state_dict_file  # noqa: F401

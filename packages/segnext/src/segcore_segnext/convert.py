"""Official SegNeXt checkpoints -> segcore keys (spec §4).

Our module names equal the official ones, so conversion is near-identity: ``num_batches_tracked`` is kept
(our BatchNorm has it too), the MMSeg 1.x rename ``mlp.dwconv.{weight,bias}`` is mapped back to
``mlp.dwconv.dwconv.*``, a ``module.`` prefix is stripped, and an ImageNet classifier (``head.*``) is dropped.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from typing import Any

from torch import Tensor

__all__ = ["convert", "mscan_from_official", "ham_from_official"]

_MM1_DWCONV = re.compile(r"^(block\d+\.\d+\.mlp\.dwconv)\.(weight|bias)$")
# Keys of an ImageNet classifier that MSCAN (a backbone) does not have.
_CLASSIFIER = ("head.", "fc.", "classifier.")


def convert(name: str, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Convert the ``backbone.``- or ``decode_head.``-stripped part of an official checkpoint.

    Pure: returns a new dict; an already converted dict comes back with the same keys and tensors.
    """
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith("module."):
            key = key[len("module.") :]
        if name.startswith("mscan"):
            if key.startswith("backbone."):
                key = key[len("backbone.") :]
            if key.startswith(_CLASSIFIER):
                continue
            key = _MM1_DWCONV.sub(r"\1.dwconv.\2", key)
        elif key.startswith("loss_decode."):
            continue
        out[key] = value
    return out


def _tuple(cfg: Mapping[str, Any], key: str, default: Any) -> tuple:
    return tuple(cfg.get(key, default))


def mscan_from_official(cfg: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Map an official ``type="MSCAN"`` config to ``(encoder name, options)``; picks t/s/b/l by size."""
    from segcore_segnext.mscan import _VARIANTS

    dims = _tuple(cfg, "embed_dims", (64, 128, 256, 512))
    depths = _tuple(cfg, "depths", (3, 4, 6, 3))
    name = next(
        (f"mscan-{v}" for v, d in _VARIANTS.items() if d["embed_dims"] == dims and d["depths"] == depths), "mscan-t"
    )
    options: dict[str, Any] = {"embed_dims": dims, "depths": depths}
    for key in ("mlp_ratios",):
        if key in cfg:
            options[key] = tuple(cfg[key])
    for key in ("drop_rate", "drop_path_rate"):
        if key in cfg:
            options[key] = float(cfg[key])
    if "in_channels" in cfg:
        options["in_chans"] = int(cfg["in_channels"])
    norm = (cfg.get("norm_cfg") or {}).get("type", "BN")
    if norm not in ("BN", "SyncBN"):
        warnings.warn(f"MSCAN norm_cfg type {norm!r} is built as BatchNorm2d", stacklevel=2)
    return name, options


def ham_from_official(cfg: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Map an official ``type="LightHamHead"`` config to ``("ham", options)``."""
    options: dict[str, Any] = {}
    if "in_index" in cfg:
        options["in_index"] = tuple(cfg["in_index"])
    for key in ("channels", "ham_channels"):
        if key in cfg:
            options[key] = int(cfg[key])
    if "dropout_ratio" in cfg:
        options["dropout_ratio"] = float(cfg["dropout_ratio"])
    groups = (cfg.get("norm_cfg") or {}).get("num_groups")
    if groups is not None:
        options["num_groups"] = int(groups)
    kw = cfg.get("ham_kwargs") or {}
    for key, opt in (("MD_S", "md_s"), ("MD_R", "md_r"), ("TRAIN_STEPS", "train_steps"), ("EVAL_STEPS", "eval_steps")):
        if key in kw:
            options[opt] = int(kw[key])
    options.setdefault("md_r", 64)  # official default when ham_kwargs omits MD_R (B and L)
    return "ham", options

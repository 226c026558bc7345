"""Official SegNeXt checkpoints -> segcore keys (spec §4).

Our module names equal the official ones, so conversion is near-identity: ``num_batches_tracked`` is kept
(our BatchNorm has it too), the MMSeg 1.x rename ``mlp.dwconv.{weight,bias}`` is mapped back to
``mlp.dwconv.dwconv.*``, a ``module.`` prefix is stripped, and an ImageNet classifier (``head.*``) is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from segcore.errors import OptionsError
from torch import Tensor

from segcore_segnext.variants import MSCAN

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
    """Map an official ``type="MSCAN"`` config to ``(encoder name, options)``.

    The name is the variant table's entry with these widths and depths (``mscan-t`` when none has them).
    A key the config omits takes the official ``MSCAN.__init__`` default (``embed_dims`` 64/128/256/512,
    ``depths`` 3/4/6/3, ``mlp_ratios`` 4/4/4/4, no dropout), as the official builder would, so every option
    is passed explicitly and the variant name only labels the model.
    """
    dims = _tuple(cfg, "embed_dims", (64, 128, 256, 512))
    depths = _tuple(cfg, "depths", (3, 4, 6, 3))
    name = MSCAN.find(embed_dims=dims, depths=depths) or MSCAN.name("t")
    options: dict[str, Any] = {
        "embed_dims": dims,
        "depths": depths,
        "mlp_ratios": _tuple(cfg, "mlp_ratios", (4, 4, 4, 4)),
        "drop_rate": float(cfg.get("drop_rate", 0.0)),
        "drop_path_rate": float(cfg.get("drop_path_rate", 0.0)),
        "in_chans": int(cfg.get("in_chans", cfg.get("in_channels", 3))),
    }
    if int(cfg.get("num_stages", 4)) != 4:
        raise OptionsError(f"MSCAN num_stages={cfg['num_stages']} is not supported (segcore builds 4 stages)")
    norm = (cfg.get("norm_cfg") or {}).get("type", "BN")
    if norm not in ("BN", "SyncBN"):
        raise OptionsError(f"MSCAN norm_cfg type {norm!r} is not supported; the official configs use SyncBN / BN")
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
    norm = dict(cfg.get("norm_cfg") or {"type": "GN", "num_groups": 32})
    if norm.get("type") != "GN":
        raise OptionsError(f"LightHamHead norm_cfg type {norm.get('type')!r} is not supported (the official is GN)")
    if cfg.get("align_corners", False):
        raise OptionsError("LightHamHead align_corners=True is not supported (the official configs use False)")
    groups = norm.get("num_groups")
    if groups is not None:
        options["num_groups"] = int(groups)
    kw = cfg.get("ham_kwargs") or {}
    for key in ("SPATIAL", "RAND_INIT"):
        if not kw.get(key, True):
            raise OptionsError(f"LightHamHead ham_kwargs {key}=False is not supported (SegNeXt uses True)")
    for key, opt in (("MD_S", "md_s"), ("MD_R", "md_r"), ("TRAIN_STEPS", "train_steps"), ("EVAL_STEPS", "eval_steps")):
        if key in kw:
            options[opt] = int(kw[key])
    options.setdefault("md_r", 64)  # official default when ham_kwargs omits MD_R (B and L)
    return "ham", options

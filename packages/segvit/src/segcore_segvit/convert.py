"""Convert official SegViT (mmseg 0.24) checkpoints and configs to segcore (spec ``segvit.md`` §2.5, §10).

``convert(name, state_dict)`` receives the ``backbone.``- or ``decode_head.``-stripped part of an official
state dict and returns it under our keys; an already converted dict is returned unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from segcore.errors import OptionsError
from torch import Tensor

from segcore_segvit.variants import VIT

__all__ = [
    "convert",
    "convert_vit",
    "convert_atm",
    "convert_atm_shrunk",
    "vit_from_official",
    "vit_shrink_from_official",
    "atm_from_official",
    "tpn_atm_from_official",
]

# mmseg ViT -> timm ViT (spec §2.5), applied to the part after ``layers.{i}.``.
_VIT_BLOCK = (
    ("ln1.", "norm1."),
    ("ln2.", "norm2."),
    ("attn.attn.in_proj_weight", "attn.qkv.weight"),
    ("attn.attn.in_proj_bias", "attn.qkv.bias"),
    ("attn.attn.out_proj.", "attn.proj."),
    ("ffn.layers.0.0.", "mlp.fc1."),
    ("ffn.layers.1.", "mlp.fc2."),
)


def convert_vit(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Mmseg ``VisionTransformer`` / ``vit_shrink`` keys -> our timm-named encoder.

    Drops the dead ``cls_token`` and the class slot of ``pos_embed`` (the class token is removed before the
    first layer, spec §2.2), and the unused final norm ``ln1``.
    """
    if "patch_embed.proj.weight" in state_dict:
        return dict(state_dict)
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key == "cls_token" or key.startswith("ln1."):
            continue
        if key == "pos_embed":
            n = value.shape[1]
            g = int(round((n - 1) ** 0.5))
            if g * g == n - 1:
                value = value[:, 1:]
            out[key] = value.contiguous()
            continue
        if key.startswith("patch_embed.projection."):
            out["patch_embed.proj." + key[len("patch_embed.projection.") :]] = value
            continue
        m = re.match(r"layers\.(\d+)\.(.*)", key)
        if m:
            rest = m.group(2)
            for old, new in _VIT_BLOCK:
                if rest.startswith(old):
                    rest = new + rest[len(old) :]
                    break
            else:
                raise KeyError(f"unknown mmseg ViT key {key!r}")
            out[f"blocks.{m.group(1)}.{rest}"] = value
            continue
        raise KeyError(f"unknown mmseg ViT key {key!r}")
    return out


def _atm_layer_key(rest: str) -> str:
    return rest.replace("multihead_attn.", "cross_attn.", 1) if rest.startswith("multihead_attn.") else rest


def convert_atm(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``ATMHead`` keys -> ``atm`` keys; drops the loss buffer ``loss_decode.*`` (spec §3.7, §10)."""
    if "class_queries.weight" in state_dict:
        return dict(state_dict)
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith("loss_decode."):
            continue
        if key == "q.weight":
            out["class_queries.weight"] = value
        elif key.startswith("class_embed."):
            out[key] = value
        elif m := re.match(r"(input_proj|proj_norm)_(\d+)\.(.*)", key):
            out[f"{m.group(1)}.{int(m.group(2)) - 1}.{m.group(3)}"] = value
        elif m := re.match(r"decoder_(\d+)\.layers\.(\d+)\.(.*)", key):
            out[f"stages.{int(m.group(1)) - 1}.{m.group(2)}.{_atm_layer_key(m.group(3))}"] = value
        else:
            raise KeyError(f"unknown ATMHead key {key!r}")
    return out


def convert_atm_shrunk(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``TPNATMHead`` keys -> ``atm-shrunk`` keys; drops both loss buffers (spec §4.4, §10)."""
    if "class_queries.weight" in state_dict:
        return dict(state_dict)
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith(("loss_decode.", "atm.loss_decode.")):
            continue
        if key == "q.weight":
            out["pixel_queries.weight"] = value
        elif key == "atm.q.weight":
            out["class_queries.weight"] = value
        elif key.startswith("atm.class_embed."):
            out[key[len("atm.") :]] = value
        elif m := re.match(r"(input_proj|proj_norm)_(\d+)\.(.*)", key):
            out[f"{m.group(1)}.{int(m.group(2)) - 1}.{m.group(3)}"] = value
        elif m := re.match(r"decoder_(\d+)\.layers\.(\d+)\.(.*)", key):
            out[f"qu.{int(m.group(1)) - 1}.layers.{m.group(2)}.{m.group(3)}"] = value
        elif m := re.match(r"atm\.decoder_1\.layers\.(\d+)\.(.*)", key):
            out[f"atm_layers.{m.group(1)}.{_atm_layer_key(m.group(2))}"] = value
        else:
            raise KeyError(f"unknown TPNATMHead key {key!r}")
    return out


def convert(name: str, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Registered converter: dispatch on the component name."""
    if name.startswith("vit-"):
        return convert_vit(state_dict)
    if name == "atm":
        return convert_atm(state_dict)
    if name == "atm-shrunk":
        return convert_atm_shrunk(state_dict)
    raise KeyError(f"segvit converter does not handle component {name!r}")


def _img_size(value: Any) -> int:
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise OptionsError(f"ViT img_size {value} is not supported: segcore builds square position grids")
        return int(value[0])
    return int(value)


def _vit_options(cfg: dict[str, Any]) -> dict[str, Any]:
    if cfg.get("with_cls_token", True) or cfg.get("final_norm", False):
        raise OptionsError(
            "VisionTransformer with_cls_token=True or final_norm=True is not supported (SegViT configs use False)"
        )
    if cfg.get("patch_size", 16) != 16:
        raise OptionsError(f"VisionTransformer patch_size={cfg.get('patch_size')} is not supported (SegViT uses 16)")
    depth = int(cfg.get("num_layers", 12))
    out = cfg.get("out_indices", depth - 1)
    out_indices = (out,) if isinstance(out, int) else tuple(int(i) for i in out)
    return {
        "img_size": _img_size(cfg.get("img_size", 224)),
        "embed_dim": int(cfg.get("embed_dims", 768)),
        "depth": depth,
        "num_heads": int(cfg.get("num_heads", 12)),
        "mlp_ratio": float(cfg.get("mlp_ratio", 4)),
        "out_indices": tuple(d if d >= 0 else depth + d for d in out_indices),
        "drop_path_rate": float(cfg.get("drop_path_rate", 0.0)),
    }


def vit_from_official(cfg: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Official ``VisionTransformer`` config -> (the plain ``vit-*`` entry of this width, else ``vit-b16``; options)."""
    options = _vit_options(cfg)
    name = VIT.find(embed_dim=options["embed_dim"], shrink_idx=None) or VIT.name("b16")
    return name, options


def vit_shrink_from_official(cfg: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Official ``vit_shrink`` config -> (the Shrunk ``vit-*`` entry of its width, else ``vit-b16-shrunk``; options)."""
    options = _vit_options(cfg)
    options["shrink_idx"] = int(cfg.get("shrink_idx", 8))
    shrunk = VIT.find(lambda o: o["shrink_idx"] is not None, embed_dim=options["embed_dim"])
    return shrunk or VIT.name("b16-shrunk"), options


def _head_options(cfg: dict[str, Any]) -> dict[str, Any]:
    return {
        "embed_dims": int(cfg.get("embed_dims", 768)),
        "num_heads": int(cfg.get("num_heads", 8)),
        "num_layers": int(cfg.get("num_layers", 3)),
        "img_size": _img_size(cfg.get("img_size", 640)),
    }


def atm_from_official(cfg: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Official ``ATMHead`` config -> (``atm``, options)."""
    if not cfg.get("use_proj", True):
        raise OptionsError("ATMHead use_proj=False is not supported (the official configs use True)")
    return "atm", _head_options(cfg)


def tpn_atm_from_official(cfg: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Official ``TPNATMHead`` config -> (``atm-shrunk``, options)."""
    return "atm-shrunk", _head_options(cfg)

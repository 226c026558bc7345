"""Convert official MiT / SegDeformer weights to segcore names (pure functions on state dicts).

Formats read (``checkpoints.md`` §4):

* mmseg full model (format A) and mmseg-converted MiT backbones (B-mm): ``layers.{s}.0.projection`` ...
* NVlabs ImageNet MiT (B-nv): ``patch_embed{n}``, ``block{n}.{j}.attn.q`` / ``attn.kv`` ...
* Hugging Face transformers Segformer / MiT (E): ``segformer.encoder.patch_embeddings.{s}`` ...
* the ``decode_head.`` part of a SegDeformer (``SegDeformerHead3``) mmseg checkpoint (spec §6).
* transformers ``SegformerForSemanticSegmentation`` (format ``transformers``): MiT as above and the released
  SegFormer head (``decode_head.linear_c`` ...) onto the ``segformer`` decoder; ``segformer_from_transformers``
  and ``segformer_head_from_transformers`` read the architecture from its ``config.json``.

An already converted dict passes unchanged. Unknown keys raise :class:`segcore.errors.CheckpointError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import torch
from segcore.errors import CheckpointError
from segcore.weights.state_dict import rename_keys
from torch import Tensor

from segcore_segdeformer.variants import MIT

__all__ = [
    "convert",
    "convert_mit",
    "convert_segdeformer_head",
    "convert_segformer_head",
    "mit_from_official",
    "segdeformer_from_official",
    "segformer_from_official",
    "convert_transformers",
    "convert_segformer_decode_head",
    "segformer_from_transformers",
    "segformer_head_from_transformers",
]

_Rules = list[tuple[str, str]]

# mmseg MixVisionTransformer -> segcore MixVisionTransformer (spec §7 table).
_MIT_MMSEG: _Rules = [
    (r"^layers\.(\d+)\.0\.projection\.", r"stages.\1.patch_embed.proj."),
    (r"^layers\.(\d+)\.0\.norm\.", r"stages.\1.patch_embed.norm."),
    (r"^layers\.(\d+)\.1\.(\d+)\.attn\.attn\.in_proj_", r"stages.\1.blocks.\2.attn.in_proj_"),
    (r"^layers\.(\d+)\.1\.(\d+)\.attn\.attn\.out_proj\.", r"stages.\1.blocks.\2.attn.out_proj."),
    (r"^layers\.(\d+)\.1\.(\d+)\.attn\.(sr|norm)\.", r"stages.\1.blocks.\2.attn.\3."),
    (r"^layers\.(\d+)\.1\.(\d+)\.(norm1|norm2)\.", r"stages.\1.blocks.\2.\3."),
    (r"^layers\.(\d+)\.1\.(\d+)\.ffn\.layers\.0\.", r"stages.\1.blocks.\2.ffn.fc1."),
    (r"^layers\.(\d+)\.1\.(\d+)\.ffn\.layers\.1\.", r"stages.\1.blocks.\2.ffn.dwconv."),
    (r"^layers\.(\d+)\.1\.(\d+)\.ffn\.layers\.4\.", r"stages.\1.blocks.\2.ffn.fc2."),
    (r"^layers\.(\d+)\.2\.", r"stages.\1.norm."),
]

# SegDeformerHead3 -> SegDeformerHead (spec §6).
_HEAD_MMSEG: _Rules = [
    (r"^(convs\.\d+|fusion_conv)\.conv\.", r"\1.0."),
    (r"^(convs\.\d+|fusion_conv)\.bn\.", r"\1.1."),
    (r"^class_token\.cls_token$", "mid.cls_token"),
    (r"^class_token\.prop_token$", "mid.info_token"),
    (r"^class_token\.(q|k)\.", r"mid.\1."),
    (r"^trans\.attn\.(query|key|value|out)_project\.conv\.", r"internal.\1.0."),
    (r"^trans\.attn\.(query|key|value|out)_project\.bn\.", r"internal.\1.1."),
    (r"^trans\.cross_attn\.(query|key|value|out)_project\.conv\.", r"external.\1.0."),
    (r"^trans\.cross_attn\.(query|key|value|out)_project\.bn\.", r"external.\1.1."),
    (r"^conv_seg\.", "conv_seg."),
]

_MIT_OURS = re.compile(r"^stages\.\d+\.(patch_embed\.(proj|norm)|blocks\.\d+\.(norm1|norm2|attn|ffn)|norm)\.")
_HEAD_OURS = re.compile(r"^(convs\.\d+\.[01]|fusion_conv\.[01]|uper|mid|internal|external|conv_seg)\.")


def _nvlabs_to_mmseg(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """NVlabs ``mit_b*.pth`` names -> mmseg names (what ``mit2mmseg.py`` does); ``head.*`` dropped."""
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        if key.startswith("head."):
            continue
        m = re.match(r"^(patch_embed|block|norm)(\d+)\.(.*)$", key)
        if not m:
            raise CheckpointError(f"mit (NVlabs format): key {key!r} not understood")
        kind, s, rest = m.group(1), int(m.group(2)) - 1, m.group(3)
        if kind == "patch_embed":
            out[f"layers.{s}.0.{rest.replace('proj.', 'projection.', 1)}"] = value
        elif kind == "norm":
            out[f"layers.{s}.2.{rest}"] = value
        else:
            j, sub = rest.split(".", 1)
            base = f"layers.{s}.1.{j}."
            if sub.startswith("attn.q."):
                kv = sd[f"block{s + 1}.{j}.attn.kv.{sub[len('attn.q.') :]}"]
                out[base + "attn.attn.in_proj_" + sub.rsplit(".", 1)[1]] = torch.cat([value, kv], dim=0)
            elif sub.startswith("attn.kv."):
                continue
            elif sub.startswith("attn.proj."):
                out[base + "attn.attn.out_proj." + sub.rsplit(".", 1)[1]] = value
            elif sub.startswith(("mlp.fc1.", "mlp.fc2.")):
                idx = 0 if sub.startswith("mlp.fc1.") else 4
                v = value.reshape(*value.shape, 1, 1) if value.ndim == 2 else value
                out[base + f"ffn.layers.{idx}." + sub.rsplit(".", 1)[1]] = v
            elif sub.startswith("mlp.dwconv.dwconv."):
                out[base + "ffn.layers.1." + sub.rsplit(".", 1)[1]] = value
            else:  # norm1, norm2, attn.sr, attn.norm keep their names
                out[base + sub] = value
    return out


def _hf_to_mmseg(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Transformers Segformer names -> mmseg names (inverse of its ``rename_keys`` + ``read_in_k_v``)."""
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        if key.startswith(("classifier.", "decode_head.")):
            continue
        k = re.sub(r"^(segformer\.)?encoder\.", "", key)
        if m := re.match(r"^patch_embeddings\.(\d+)\.(proj|layer_norm)\.(\w+)$", k):
            out[f"layers.{m[1]}.0.{'projection' if m[2] == 'proj' else 'norm'}.{m[3]}"] = value
        elif m := re.match(r"^layer_norm\.(\d+)\.(\w+)$", k):
            out[f"layers.{m[1]}.2.{m[2]}"] = value
        elif m := re.match(r"^block\.(\d+)\.(\d+)\.(.*)\.(\w+)$", k):
            base, sub, p = f"layers.{m[1]}.1.{m[2]}.", m[3], m[4]
            simple = {
                "layer_norm_1": "norm1",
                "layer_norm_2": "norm2",
                "attention.self.sr": "attn.sr",
                "attention.self.layer_norm": "attn.norm",
                "attention.output.dense": "attn.attn.out_proj",
                "mlp.dense1": "ffn.layers.0",
                "mlp.dense2": "ffn.layers.4",
                "mlp.dwconv.dwconv": "ffn.layers.1",
            }
            if sub == "attention.self.query":
                prefix = key[: -len(f"query.{p}")]
                qkv = [sd[f"{prefix}{n}.{p}"] for n in ("query", "key", "value")]
                out[f"{base}attn.attn.in_proj_{p}"] = torch.cat(qkv, dim=0)
            elif sub in ("attention.self.key", "attention.self.value"):
                continue
            elif sub in simple:
                v = value.reshape(*value.shape, 1, 1) if sub.startswith("mlp.dense") and value.ndim == 2 else value
                out[f"{base}{simple[sub]}.{p}"] = v
            else:
                raise CheckpointError(f"mit (transformers format): key {key!r} not understood")
        else:
            raise CheckpointError(f"mit (transformers format): key {key!r} not understood")
    return out


def convert_mit(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Convert MiT weights in mmseg, NVlabs or transformers naming to segcore ``mit-*`` keys.

    The format is detected from the keys; a ``state_dict`` already in segcore names passes unchanged.
    """
    keys = list(state_dict)
    if keys and all(_MIT_OURS.match(k) for k in keys):
        return dict(state_dict)
    if any(re.match(r"^(patch_embed|block)\d+\.", k) for k in keys):
        state_dict = _nvlabs_to_mmseg(state_dict)
    elif any("patch_embeddings." in k for k in keys):
        state_dict = _hf_to_mmseg(state_dict)
    return rename_keys(state_dict, _MIT_MMSEG, "mit")


def convert_segdeformer_head(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Convert a ``SegDeformerHead3`` state dict (``decode_head.`` stripped) to ``segdeformer`` keys."""
    keys = list(state_dict)
    if keys and all(_HEAD_OURS.match(k) for k in keys) and not any(k.startswith("class_token") for k in keys):
        return dict(state_dict)
    return rename_keys(state_dict, _HEAD_MMSEG, "segdeformer")


def convert_segformer_head(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Convert an mmseg ``SegformerHead`` state dict to core's ``mlp`` decoder keys (same modules, renamed)."""
    keys = list(state_dict)
    if keys and all(re.match(r"^(convs\.\d+\.[01]|fusion_conv\.[01]|conv_seg)\.", k) for k in keys):
        return dict(state_dict)
    out = rename_keys(state_dict, _HEAD_MMSEG, "mlp")
    extra = [k for k in out if not k.startswith(("convs.", "fusion_conv.", "conv_seg."))]
    if extra:
        raise CheckpointError(f"mlp: keys of another head in a SegformerHead checkpoint, e.g. {extra[:5]}")
    return out


_CONVERTERS: dict[str, Callable[[Mapping[str, Tensor]], dict[str, Tensor]]] = {
    "segdeformer": convert_segdeformer_head,
    "mlp": convert_segformer_head,
}


def convert(component: str, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Entry point of the ``mmseg`` converters: ``mit-*`` encoders, ``segdeformer`` and SegFormer's ``mlp``."""
    if component.startswith("mit-"):
        return convert_mit(state_dict)
    if component in _CONVERTERS:
        return _CONVERTERS[component](state_dict)
    raise CheckpointError(f"segdeformer converter: unknown component {component!r}")


def _mit_variant(base: int, depths: tuple[int, ...]) -> str:
    """The registered ``mit-bX`` whose first width and depths these are (from the variant table), else ``mit-b0``."""
    return MIT.find(lambda o: o["embed_dims"][0] == base, depths=depths) or MIT.name("b0")


def mit_from_official(cfg: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Mmseg ``MixVisionTransformer`` config -> ``("mit-bX", options)`` with every option spelled out."""
    if cfg.get("in_channels", 3) != 3 or tuple(cfg.get("out_indices", (0, 1, 2, 3))) != (0, 1, 2, 3):
        raise CheckpointError("mit: only in_channels=3 and out_indices=(0, 1, 2, 3) are supported")
    base = int(cfg.get("embed_dims", 64))
    heads = tuple(cfg.get("num_heads", (1, 2, 5, 8)))
    depths = tuple(cfg.get("num_layers", (3, 4, 6, 3)))
    options = {
        "embed_dims": tuple(base * h for h in heads),
        "depths": depths,
        "num_heads": heads,
        "sr_ratios": tuple(cfg.get("sr_ratios", (8, 4, 2, 1))),
        "patch_sizes": tuple(cfg.get("patch_sizes", (7, 3, 3, 3))),
        "mlp_ratio": int(cfg.get("mlp_ratio", 4)),
        "drop_rate": float(cfg.get("drop_rate", 0.0)),
        "attn_drop_rate": float(cfg.get("attn_drop_rate", 0.0)),
        "drop_path_rate": float(cfg.get("drop_path_rate", 0.0)),
    }
    return _mit_variant(base, depths), options


def segdeformer_from_official(cfg: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Mmseg ``SegDeformerHead3`` config -> ``("segdeformer", options)``."""
    in_index = cfg.get("in_index", (0, 1, 2, 3))
    return "segdeformer", {
        "channels": int(cfg.get("channels", 256)),
        "dropout": float(cfg.get("dropout_ratio", 0.1)),
        "in_index": tuple(in_index) if isinstance(in_index, (list, tuple)) else (int(in_index),),
    }


def segformer_from_official(cfg: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Mmseg ``SegformerHead`` config -> core's ``("mlp", options)``."""
    if tuple(cfg.get("in_index", (0, 1, 2, 3))) != (0, 1, 2, 3):
        raise CheckpointError("SegformerHead: only in_index=(0, 1, 2, 3) maps onto core's mlp decoder")
    return "mlp", {"channels": int(cfg.get("channels", 256)), "dropout": float(cfg.get("dropout_ratio", 0.1))}


# transformers SegformerDecodeHead -> segcore_segdeformer.segformer.SegFormerHead.
_SEGFORMER_HF: _Rules = [
    (r"^linear_c\.(\d+)\.proj\.", r"linear_c.\1."),
    (r"^linear_fuse\.", "linear_fuse.0."),
    (r"^batch_norm\.", "linear_fuse.1."),
    (r"^classifier\.", "conv_seg."),
]
_SEGFORMER_OURS = re.compile(r"^(linear_c\.\d+\.(weight|bias)$|linear_fuse\.[01]\.|conv_seg\.)")


def convert_segformer_decode_head(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Convert a transformers ``SegformerDecodeHead`` state dict (``decode_head.`` stripped) to ``segformer`` keys."""
    keys = list(state_dict)
    if keys and all(_SEGFORMER_OURS.match(k) for k in keys):
        return dict(state_dict)
    return rename_keys(state_dict, _SEGFORMER_HF, "segformer")


def convert_transformers(component: str, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Entry point of the ``transformers`` converters: ``mit-*`` encoders and the ``segformer`` decoder."""
    if component.startswith("mit-"):
        return convert_mit(state_dict)
    if component == "segformer":
        return convert_segformer_decode_head(state_dict)
    raise CheckpointError(f"segdeformer transformers converter: unknown component {component!r}")


def _check_hf(cfg: Mapping[str, Any], key: str, expected: Any) -> None:
    value = cfg.get(key, expected)
    if (list(value) if isinstance(value, (list, tuple)) else value) != expected:
        raise CheckpointError(f"segformer config: {key}={value!r} is not supported (segcore's MiT has {expected!r})")


def segformer_from_transformers(cfg: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """A transformers ``SegformerConfig`` (``model_type: segformer``) -> ``("mit-bX", options)``, all spelled out.

    transformers builds every LayerNorm of the encoder with PyTorch's default epsilon (1e-5), mmseg with 1e-6: the
    options say 1e-5 so that the outputs match transformers'.
    """
    _check_hf(cfg, "num_channels", 3)
    _check_hf(cfg, "num_encoder_blocks", 4)
    _check_hf(cfg, "strides", [4, 2, 2, 2])
    _check_hf(cfg, "hidden_act", "gelu")
    _check_hf(cfg, "reshape_last_stage", True)
    ratios = set(cfg.get("mlp_ratios", [4, 4, 4, 4]))
    if len(ratios) != 1:
        raise CheckpointError(f"segformer config: mlp_ratios {cfg['mlp_ratios']} differ per stage; MiT has one ratio")
    dims = tuple(int(d) for d in cfg.get("hidden_sizes", (32, 64, 160, 256)))
    depths = tuple(int(d) for d in cfg.get("depths", (2, 2, 2, 2)))
    options = {
        "embed_dims": dims,
        "depths": depths,
        "num_heads": tuple(int(h) for h in cfg.get("num_attention_heads", (1, 2, 5, 8))),
        "sr_ratios": tuple(int(r) for r in cfg.get("sr_ratios", (8, 4, 2, 1))),
        "patch_sizes": tuple(int(p) for p in cfg.get("patch_sizes", (7, 3, 3, 3))),
        "mlp_ratio": int(ratios.pop()),
        "drop_path_rate": float(cfg.get("drop_path_rate", 0.1)),
        "drop_rate": float(cfg.get("hidden_dropout_prob", 0.0)),
        "attn_drop_rate": float(cfg.get("attention_probs_dropout_prob", 0.0)),
        "norm_eps": 1e-5,
    }
    return _mit_variant(dims[0], depths), options


def segformer_head_from_transformers(cfg: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """A transformers ``SegformerConfig`` -> ``("segformer", options)`` of its decode head."""
    return "segformer", {
        "channels": int(cfg.get("decoder_hidden_size", 256)),
        "dropout": float(cfg.get("classifier_dropout_prob", 0.1)),
    }

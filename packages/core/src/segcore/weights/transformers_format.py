"""transformers checkpoints (``config.json`` + safetensors) -> segcore models, without transformers installed.

A transformers segmentation repo is recognised by the ``model_type`` of its ``config.json``. Its model splits
into an encoder part and a head, each converted by the converter a plugin registers for format
``"transformers"`` (``segcore_converters``):

* ``segformer`` (``SegformerForSemanticSegmentation``): the encoder part is the config itself (model type
  ``segformer`` -> ``mit-bX``, from segcore-segdeformer) under ``segformer.``, the head ``SegformerDecodeHead``
  (-> ``segformer``) under ``decode_head.``.
* ``upernet`` (``UperNetForSemanticSegmentation``): the encoder part is ``backbone_config`` (model type
  ``convnext`` -> ``timm:convnext_*``, registered by core) under ``backbone.``, the head ``UperNetHead``
  (-> ``upernet``) under ``decode_head.``. The training-only ``auxiliary_head.`` is left out and reported.
  A Swin backbone is refused: timm's Swin orders the window padding and the cyclic shift differently, so it
  does not reproduce transformers' outputs at sizes off the window grid (see ``_NOT_REPRODUCIBLE``).

The keys of a converter's ``official_types`` are those transformers model types (encoder parts) and head class
names. Class names come from ``id2label``; mean and std from ``preprocessor_config.json`` when the repo has one.
The same functions back ``segcore convert --format transformers`` and the Hub's MiT ImageNet encoders
(``SegformerForImageClassification``: ``segformer.`` + an ImageNet ``classifier.``, which is left out).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from segcore.config.settings import IMAGENET_MEAN, IMAGENET_STD
from segcore.errors import CheckpointError
from segcore.models.model_config import SegModelConfig
from segcore.plugins.registry import components
from segcore.plugins.specs import resolve
from segcore.weights.convert import convert_component
from segcore.weights.state_dict import load_state_dict_file, load_strict, rename_keys, split_prefix

if TYPE_CHECKING:
    from segcore.models.model import SegModel

__all__ = [
    "FORMAT",
    "WEIGHT_FILES",
    "PREPROCESSOR_NAME",
    "is_transformers_config",
    "model_config_from_transformers",
    "normalization_from_preprocessor",
    "convert_transformers_state",
    "build_from_transformers",
    "encoder_state_from_transformers",
    "read_weights",
    "convnext_from_transformers",
    "upernet_head_from_transformers",
    "convert_convnext",
    "convert_upernet_head",
    "convert_core",
]

logger = logging.getLogger(__name__)

FORMAT = "transformers"
PREPROCESSOR_NAME = "preprocessor_config.json"
# In the order they are tried: safetensors (single file, then sharded), then a PyTorch file read with
# torch.load(weights_only=True), which runs no pickle code.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


@dataclass(frozen=True)
class _Layout:
    encoder_prefix: str
    head: str
    backbone_key: str | None  # where the encoder's own config lives (None: the config itself)
    dropped: tuple[str, ...]  # prefixes of tensors segcore models do not have (training-only heads)


_LAYOUTS = {
    "segformer": _Layout("segformer.", "SegformerDecodeHead", None, ("classifier.",)),
    "upernet": _Layout("backbone.", "UperNetHead", "backbone_config", ("auxiliary_head.",)),
}


def is_transformers_config(data: Mapping[str, Any]) -> bool:
    """True for a transformers ``config.json`` (it has a ``model_type``; segcore's has ``encoder``/``decoder``)."""
    return "model_type" in data and not ("encoder" in data and "decoder" in data)


def _layout(config: Mapping[str, Any]) -> _Layout:
    model_type = config.get("model_type")
    if model_type not in _LAYOUTS:
        raise CheckpointError(
            f"transformers model type {model_type!r} ({', '.join(config.get('architectures') or [])}) has no "
            f"segcore converter; supported: {', '.join(sorted(_LAYOUTS))} (upernet with a ConvNeXt backbone)"
        )
    return _LAYOUTS[model_type]


def _builder(key: str) -> tuple[Callable[[Mapping[str, Any]], tuple[str, dict[str, Any]]], str]:
    for name, spec in components("converters").items():
        if spec.format == FORMAT and key in spec.official_types:
            return resolve(spec.official_types[key]), name
    known = sorted(k for s in components("converters").values() if s.format == FORMAT for k in s.official_types)
    hint = " (install segcore-segdeformer for SegFormer / MiT)" if key in ("segformer", "SegformerDecodeHead") else ""
    raise CheckpointError(
        f"no installed converter reads transformers {key!r}{hint}; installed: {', '.join(known) or '(none)'}"
    )


# Backbones whose timm counterpart computes something else, so that no converter maps them: the reason is the
# refusal's message. Swin: measured with transformers 5.24 and timm 1.0.31 (swin-tiny, random weights; issue #17).
_NOT_REPRODUCIBLE = {
    "swin": (
        "timm's Swin cannot reproduce transformers' (mmseg's) Swin backbone at every input size. In the shifted "
        "window blocks transformers pads each stage's map to a multiple of window_size and then rolls it by "
        "shift_size; timm rolls the unpadded map and then pads (no option changes that order). The two agree only "
        "when every stage's height and width are multiples of the window (inputs that are multiples of 4 * 8 * "
        "window_size, e.g. 224 for window 7: max diff 3e-6 with timm's always_partition=True); elsewhere, even at "
        "multiples of 32 such as 256 or 512, the stage outputs differ by 5e-2 (stage 1) to 1.0 (stage 4). timm's "
        "Swin patch embedding also floors sizes that are not multiples of the patch instead of padding"
    ),
}


def _encoder_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    layout = _layout(config)
    if layout.backbone_key is None:
        return config
    backbone = config.get(layout.backbone_key)
    if not isinstance(backbone, Mapping) or "model_type" not in backbone:
        raise CheckpointError(
            f"{config.get('model_type')} config: no {layout.backbone_key} with a model_type (a timm or "
            "AutoBackbone checkpoint name is not supported; segcore reads the backbone's own config)"
        )
    reason = _NOT_REPRODUCIBLE.get(str(backbone["model_type"]))
    if reason is not None:
        raise CheckpointError(
            f"{config.get('model_type')} with a {backbone['model_type']} backbone is not supported: {reason}. "
            "segcore does not load it approximately; supported upernet backbones: convnext"
        )
    return backbone


def normalization_from_preprocessor(pre: Mapping[str, Any] | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` on 0-255 images from a transformers ``preprocessor_config.json`` (ImageNet's without one).

    transformers rescales (``x * rescale_factor``) and then normalises with ``image_mean``/``image_std``; segcore
    normalises 0-255 images, so both are divided by the rescale factor.
    """
    if not pre:
        return IMAGENET_MEAN, IMAGENET_STD
    scale = float(pre.get("rescale_factor", 1 / 255)) if pre.get("do_rescale", True) else 1.0
    if not pre.get("do_normalize", True):
        return (0.0, 0.0, 0.0), tuple(round(1 / scale, 6) for _ in range(3))
    mean = pre.get("image_mean", [0.485, 0.456, 0.406])
    std = pre.get("image_std", [0.229, 0.224, 0.225])
    if len(mean) != 3 or len(std) != 3:
        raise CheckpointError(f"{PREPROCESSOR_NAME}: image_mean/image_std must have 3 values, got {mean} / {std}")
    return tuple(round(float(m) / scale, 6) for m in mean), tuple(round(float(s) / scale, 6) for s in std)


def _class_names(config: Mapping[str, Any]) -> list[str]:
    id2label = config.get("id2label") or {}
    try:
        pairs = sorted((int(k), str(v)) for k, v in id2label.items())
    except ValueError as err:
        raise CheckpointError(f"config.json id2label has a key that is not a class index: {err}") from err
    if [i for i, _ in pairs] != list(range(len(pairs))):
        raise CheckpointError(f"config.json id2label must number the classes 0..K-1, got {[i for i, _ in pairs]}")
    return [name for _, name in pairs]


def model_config_from_transformers(
    config: Mapping[str, Any], preprocessor: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The :func:`segcore.build_model` arguments of the segcore model matching a transformers ``config.json``.

    Returns:
        ``encoder``, ``decoder``, ``num_classes``, ``encoder_options``, ``decoder_options``, ``class_names``,
        ``mean`` and ``std``.
    """
    layout = _layout(config)
    enc_cfg = _encoder_config(config)
    enc_builder, _ = _builder(str(enc_cfg["model_type"]))
    dec_builder, _ = _builder(layout.head)
    encoder, encoder_options = enc_builder(enc_cfg)
    decoder, decoder_options = dec_builder(config)
    names = _class_names(config)
    num_classes = int(config.get("num_labels") or len(names))
    if names and len(names) != num_classes:
        raise CheckpointError(f"config.json: num_labels {num_classes} but id2label names {len(names)} classes")
    mean, std = normalization_from_preprocessor(preprocessor)
    return {
        "encoder": encoder,
        "decoder": decoder,
        "num_classes": num_classes,
        "encoder_options": encoder_options,
        "decoder_options": decoder_options,
        "class_names": names,
        "mean": mean,
        "std": std,
    }


def _fit_linear_to_conv(converted: dict[str, Tensor], own: Mapping[str, Tensor]) -> dict[str, Tensor]:
    # A linear layer and a 1x1 conv hold the same numbers ([out, in] vs [out, in, 1, 1]); timm builds some
    # variants (ConvNeXt atto..nano) with convs where transformers has linears.
    out = {}
    for key, value in converted.items():
        want = own.get(key)
        if want is not None and want.shape != value.shape and want.numel() == value.numel():
            if [d for d in want.shape if d != 1] == [d for d in value.shape if d != 1]:
                value = value.reshape(want.shape)
        out[key] = value
    return out


def convert_transformers_state(
    config: Mapping[str, Any], state: Mapping[str, Tensor], encoder: str, decoder: str
) -> tuple[dict[str, Tensor], dict[str, int]]:
    """Convert a transformers state dict to segcore keys (``encoder.*`` / ``decoder.*``).

    Returns:
        The converted dict and, per left-out prefix (training-only heads), how many tensors were left out.

    Raises:
        CheckpointError: tensors under a prefix the layout does not know.
    """
    layout = _layout(config)
    dropped = {p: sum(k.startswith(p) for k in state) for p in layout.dropped}
    dropped = {p: n for p, n in dropped.items() if n}
    known = (layout.encoder_prefix, "decode_head.", *layout.dropped)
    unknown = sorted({k.split(".")[0] for k in state if not k.startswith(known)})
    if unknown:
        raise CheckpointError(f"{config.get('model_type')} checkpoint: unexpected top-level modules {unknown}")
    enc = convert_component(FORMAT, encoder, split_prefix(state, layout.encoder_prefix))
    dec = convert_component(FORMAT, decoder, split_prefix(state, "decode_head."))
    return {**{f"encoder.{k}": v for k, v in enc.items()}, **{f"decoder.{k}": v for k, v in dec.items()}}, dropped


def build_from_transformers(
    model_cls: type[SegModel],
    config: Mapping[str, Any],
    state: Mapping[str, Tensor],
    preprocessor: Mapping[str, Any] | None = None,
    source: str = "transformers checkpoint",
) -> SegModel:
    """Build the segcore model of a transformers segmentation checkpoint and load its weights strictly.

    Training-only tensors (UperNet's ``auxiliary_head``) are left out: a warning says how many, and the model's
    ``config.extra["converted_from"]`` records it.

    Args:
        model_cls: the model class to build (:class:`~segcore.models.model.SegModel`).
        config: the repo's ``config.json``.
        state: its weights.
        preprocessor: its ``preprocessor_config.json``, if any (mean and std).
        source: where it comes from (named in errors and in ``config.extra["converted_from"]``).

    Raises:
        CheckpointError: an unsupported architecture, or tensors that do not match, listed by module.
    """
    kwargs = model_config_from_transformers(config, preprocessor)
    model = model_cls(SegModelConfig.from_names(pair_defaults=False, **kwargs))
    converted, dropped = convert_transformers_state(config, state, kwargs["encoder"], kwargs["decoder"])
    converted = _fit_linear_to_conv(converted, model.state_dict())
    load_strict(model, converted, source=source)
    record: dict[str, Any] = {
        "format": FORMAT,
        "source": source,
        "architecture": ", ".join(config.get("architectures") or [str(config.get("model_type"))]),
        "normalization": PREPROCESSOR_NAME if preprocessor else "ImageNet (no preprocessor_config.json)",
    }
    if dropped:
        what = ", ".join(f"{n} {p}* tensors" for p, n in dropped.items())
        logger.warning("%s: left out %s (training-only head; segcore models have none)", source, what)
        record["dropped"] = what
    model.config.extra["converted_from"] = record
    return model.eval()


def encoder_state_from_transformers(config: Mapping[str, Any], state: Mapping[str, Tensor], encoder: str) -> dict:
    """Encoder weights (segcore keys of ``encoder``) from a transformers repo's config and state dict.

    The repo may hold a full segmentation model or an encoder-only one such as ``nvidia/mit-b0``
    (``SegformerForImageClassification``; its ImageNet classifier is left out).
    """
    model_type = config.get("model_type")
    prefix = _LAYOUTS[model_type].encoder_prefix if model_type in _LAYOUTS else ""
    part = split_prefix(state, prefix) if prefix and any(k.startswith(prefix) for k in state) else dict(state)
    return convert_component(FORMAT, encoder, part)


def read_weights(folder: str | Path) -> dict[str, Tensor]:
    """Read a transformers folder's weights: ``model.safetensors``, sharded safetensors or ``pytorch_model.bin``.

    Raises:
        CheckpointError: none of :data:`WEIGHT_FILES` is there.
    """
    folder = Path(folder)
    if (folder / WEIGHT_FILES[0]).is_file():
        return load_state_dict_file(folder / WEIGHT_FILES[0])
    index = folder / WEIGHT_FILES[1]
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, Tensor] = {}
        for shard in shards:
            state.update(load_state_dict_file(folder / shard))
        return state
    if (folder / WEIGHT_FILES[2]).is_file():
        return load_state_dict_file(folder / WEIGHT_FILES[2])
    raise CheckpointError(f"{folder} holds a transformers config.json but none of {', '.join(WEIGHT_FILES)}")


# ------------------------------------------------------------------------------------ core's own converters
# ConvNeXt (transformers ConvNextBackbone) onto timm's ConvNeXt; UperNetHead onto core's ``upernet``.
_CONVNEXT_TIMM = {
    ((40, 80, 160, 320), (2, 2, 6, 2)): "convnext_atto",
    ((48, 96, 192, 384), (2, 2, 6, 2)): "convnext_femto",
    ((64, 128, 256, 512), (2, 2, 6, 2)): "convnext_pico",
    ((80, 160, 320, 640), (2, 2, 8, 2)): "convnext_nano",
    ((96, 192, 384, 768), (3, 3, 9, 3)): "convnext_tiny",
    ((96, 192, 384, 768), (3, 3, 27, 3)): "convnext_small",
    ((128, 256, 512, 1024), (3, 3, 27, 3)): "convnext_base",
    ((192, 384, 768, 1536), (3, 3, 27, 3)): "convnext_large",
    ((256, 512, 1024, 2048), (3, 3, 27, 3)): "convnext_xlarge",
}


def convnext_from_transformers(cfg: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """A transformers ``ConvNextConfig`` (as UperNet's backbone) -> ``("timm:convnext_*", options)``.

    transformers' backbone normalises every returned map (``hidden_states_norms``, LayerNorm eps 1e-6) and runs at
    the input size (its strided convs floor): the options say so (``out_norm``, ``size_divisor=1``).
    """
    dims = tuple(int(d) for d in cfg.get("hidden_sizes", (96, 192, 384, 768)))
    depths = tuple(int(d) for d in cfg.get("depths", (3, 3, 9, 3)))
    name = _CONVNEXT_TIMM.get((dims, depths))
    if name is None:
        raise CheckpointError(
            f"ConvNeXt with hidden_sizes {list(dims)} and depths {list(depths)} has no timm counterpart; known: "
            + ", ".join(f"{n} {list(d)}/{list(s)}" for (d, s), n in _CONVNEXT_TIMM.items())
        )
    problems = []
    if cfg.get("patch_size", 4) != 4 or cfg.get("num_stages", 4) != 4 or cfg.get("num_channels", 3) != 3:
        problems.append("patch_size 4, 4 stages and 3 input channels")
    if cfg.get("hidden_act", "gelu") != "gelu":
        problems.append("hidden_act gelu")
    if not cfg.get("layer_scale_init_value", 1e-6):
        problems.append("layer scale (layer_scale_init_value > 0)")
    out = list(cfg.get("out_features") or ["stage1", "stage2", "stage3", "stage4"])
    if out != ["stage1", "stage2", "stage3", "stage4"]:
        problems.append(f"out_features stage1..stage4 (got {out})")
    if problems:
        raise CheckpointError(f"ConvNeXt backbone: segcore's timm:{name} needs {'; '.join(problems)}")
    options = {"drop_path_rate": float(cfg.get("drop_path_rate", 0.0)), "size_divisor": 1, "out_norm": "layernorm"}
    options["out_norm_eps"] = 1e-6
    return f"timm:{name}", options


def upernet_head_from_transformers(cfg: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """A transformers ``UperNetConfig`` -> ``("upernet", options)`` of its decode head.

    transformers' head has no dropout before the classifier; mmseg's (where these weights were trained) has 0.1,
    which is what a fine-tune uses. Inference is the same.
    """
    return "upernet", {
        "channels": int(cfg.get("hidden_size", 512)),
        "pool_scales": tuple(cfg.get("pool_scales") or (1, 2, 3, 6)),
    }


_CONVNEXT_RULES = [
    (r"^embeddings\.patch_embeddings\.", "model.stem_0."),
    (r"^embeddings\.layernorm\.", "model.stem_1."),
    (r"^encoder\.stages\.(\d+)\.downsampling_layer\.(\d)\.", r"model.stages_\1.downsample.\2."),
    (r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.layer_scale_parameter$", r"model.stages_\1.blocks.\2.gamma"),
    (r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.dwconv\.", r"model.stages_\1.blocks.\2.conv_dw."),
    (r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.layernorm\.", r"model.stages_\1.blocks.\2.norm."),
    (r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.pwconv1\.", r"model.stages_\1.blocks.\2.mlp.fc1."),
    (r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.pwconv2\.", r"model.stages_\1.blocks.\2.mlp.fc2."),
]
_CONV_MODULE = [(r"\.conv\.", ".0."), (r"\.batch_norm\.", ".1.")]


def convert_convnext(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Map transformers ``ConvNextBackbone`` keys (``backbone.`` stripped) -> ``timm:convnext_*`` encoder keys."""
    if all(k.startswith(("model.", "out_norms.")) for k in state_dict):
        return dict(state_dict)
    norms = {}
    rest = {}
    for key, value in state_dict.items():
        if m := re.match(r"^hidden_states_norms\.stage(\d+)\.(weight|bias)$", key):
            norms[f"out_norms.{int(m[1]) - 1}.{m[2]}"] = value
        else:
            rest[key] = value
    return {**rename_keys(rest, _CONVNEXT_RULES, "convnext (transformers)"), **norms}


def convert_upernet_head(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Map transformers ``UperNetHead`` keys (``decode_head.`` stripped) -> core ``upernet`` keys."""
    out = {}
    for key, value in state_dict.items():
        new = re.sub(r"^classifier\.", "conv_seg.", key)
        new = re.sub(r"^psp_modules\.(\d+)\.1\.(conv|batch_norm)\.", r"psp_modules.\1.\2.", new)
        new = new.replace(".conv.", ".0.").replace(".batch_norm.", ".1.")
        if not re.match(
            r"^(psp_modules\.\d+|bottleneck|lateral_convs\.\d+|fpn_convs\.\d+|fpn_bottleneck)\.[01]\.", new
        ):
            if not new.startswith("conv_seg."):
                raise CheckpointError(f"upernet (transformers): key {key!r} not understood")
        out[new] = value
    return out


def convert_core(component: str, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Entry point of core's ``transformers`` converter: ``timm:convnext*`` encoders and the ``upernet`` head."""
    if component.startswith("timm:convnext"):
        return convert_convnext(state_dict)
    if component == "upernet":
        return convert_upernet_head(state_dict)
    raise CheckpointError(f"core transformers converter: unknown component {component!r}")

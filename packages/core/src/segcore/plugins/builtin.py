"""Core's own components, registered through the same hooks as any plugin."""

from __future__ import annotations

from segcore.plugins.hookspecs import hookimpl
from segcore.plugins.specs import PYRAMID_STRIDES, ComponentSpec, ConverterSpec, RecipeSpec

_DEC = "segcore.models.decoders"
_LOSS = "segcore.models.losses"


@hookimpl
def segcore_encoders() -> dict[str, ComponentSpec]:
    """Register the ``timm:`` namespace: any timm model that can return features."""
    return {
        "timm:": ComponentSpec(
            factory="segcore.models.encoders:timm_encoder",
            options="segcore.models.encoders:TimmEncoderOptions",
            description="any timm model with features_only or forward_intermediates (timm:<model name>)",
            source="https://github.com/huggingface/pytorch-image-models",
        )
    }


@hookimpl
def segcore_decoders() -> dict[str, ComponentSpec]:
    """Register the baseline decoders."""
    return {
        "linear": ComponentSpec(
            factory=f"{_DEC}:linear",
            options=f"{_DEC}:LinearHeadOptions",
            description="SETR-naive head: 1x1 conv + BN + ReLU + 1x1 classifier on the last map",
            source="Zheng et al., SETR, arXiv:2012.15840",
        ),
        "mlp": ComponentSpec(
            factory=f"{_DEC}:mlp",
            options=f"{_DEC}:MLPHeadOptions",
            description="SegFormer all-MLP head: per-level 1x1 projections, upsample, fuse, classify",
            source="Xie et al., SegFormer, arXiv:2105.15203",
            in_strides=PYRAMID_STRIDES,
        ),
        "upernet": ComponentSpec(
            factory=f"{_DEC}:upernet",
            options=f"{_DEC}:UPerHeadOptions",
            description="UPerNet head: pyramid pooling module on the last map + FPN over all levels",
            source="Xiao et al., UPerNet, arXiv:1807.10221",
            in_strides=PYRAMID_STRIDES,
        ),
    }


@hookimpl
def segcore_losses() -> dict[str, ComponentSpec]:
    """Register the pixel-wise losses."""
    return {
        "ce": ComponentSpec(
            factory=f"{_LOSS}:CrossEntropyLoss",
            options=f"{_LOSS}:CrossEntropyOptions",
            description="pixel-wise cross-entropy with ignore_index, class weights and mmseg's averaging",
        ),
        "focal": ComponentSpec(
            factory=f"{_LOSS}:FocalLoss",
            options=f"{_LOSS}:FocalOptions",
            description="softmax focal loss (Lin et al., arXiv:1708.02002) with ignore_index",
        ),
        "dice": ComponentSpec(
            factory=f"{_LOSS}:DiceLoss",
            options=f"{_LOSS}:DiceOptions",
            description="soft multi-class Dice loss over labelled pixels",
        ),
    }


@hookimpl
def segcore_converters() -> dict[str, ConverterSpec]:
    """Register the converter of segcore's own format (identity) so round trips go through one path."""
    return {
        "segcore": ConverterSpec(
            format="segcore",
            components=("*",),
            convert="segcore.weights.convert:identity",
            description="segcore state dicts (already converted)",
        ),
        # transformers UperNet repos with a ConvNeXt backbone (segcore.weights.transformers_format).
        "core-transformers": ConverterSpec(
            format="transformers",
            components=("timm:convnext*", "upernet"),
            convert="segcore.weights.transformers_format:convert_core",
            official_types={
                "convnext": "segcore.weights.transformers_format:convnext_from_transformers",
                "UperNetHead": "segcore.weights.transformers_format:upernet_head_from_transformers",
            },
            description="transformers UperNet + ConvNeXt repos (config.json + safetensors) onto timm + upernet",
        ),
    }


@hookimpl
def segcore_recipes() -> dict[str, RecipeSpec]:
    """Register core's CPU-friendly preset for ``synthetic-shapes``."""
    from segcore.plugins.recipes import core_recipes

    return core_recipes()

"""segcore plugin of SegDeformer (MiT encoders, decoder, loss, converter, checkpoints, recipe).

Imports no torch at import time.
"""

from __future__ import annotations

from segcore.plugins.hookspecs import hookimpl
from segcore.plugins.specs import PYRAMID_STRIDES, CheckpointSpec, ComponentSpec, ConverterSpec, PairSpec, RecipeSpec

from segcore_segdeformer.recipes import SEGDEFORMER_ADE20K_160K, segdeformer_recipes
from segcore_segdeformer.variants import MIT

_PKG = "segcore_segdeformer"
_MIT_SRC = MIT.source
_SD_SRC = "Shi et al., SegDeformer, ECCV 2022; github.com/lygsbw/segdeformer@77f2dacd"
# Release data, keyed by variant: the mmseg ImageNet files' hashes and the official SegDeformer training logs.
_MIT_HASH = {"b0": "7e0fe6dd", "b1": "02e5a6a1", "b2": "66e8bf70", "b3": "13b1141c", "b4": "d588d980", "b5": "658746d9"}
_MIT_LOG = {"b1": "44.12", "b2": "47.34", "b5": "50.34"}
_TRAINED = ", ".join(v.upper() for v in list(_MIT_LOG)[:-1]) + f" and {list(_MIT_LOG)[-1].upper()}"
# MiT's ImageNet weights (and so every SegDeformer / SegFormer model trained from them) are NVIDIA's
# (checkpoints.md §3.2, segdeformer.md header).
_NVIDIA_LICENSE = {
    "license": "other",
    "license_name": "nvidia-source-code-license",
    "license_note": "Non-commercial use only: the MiT weights are under the NVIDIA Source Code License "
    "(github.com/NVlabs/SegFormer/blob/master/LICENSE).",
}


@hookimpl
def segcore_encoders() -> dict[str, ComponentSpec]:
    """Register one ``mit-*`` encoder per entry of the variant table (MiT-B0..B5)."""
    return MIT.encoders()


@hookimpl
def segcore_decoders() -> dict[str, ComponentSpec]:
    """Register the SegDeformer head and SegFormer's own head."""
    return {
        "segformer": ComponentSpec(
            factory=f"{_PKG}.segformer:segformer",
            options=f"{_PKG}.segformer:SegFormerHeadOptions",
            description="SegFormer's released head: per-level linear, upsample, fuse (conv+BN+ReLU), classify",
            source=_MIT_SRC + "; transformers SegformerDecodeHead",
            in_strides=PYRAMID_STRIDES,
        ),
        "segdeformer": ComponentSpec(
            factory=f"{_PKG}.head:segdeformer",
            options=f"{_PKG}.head:SegDeformerOptions",
            description="SegDeformer: SegFormer fusion + internal and external (class-token) attention",
            source=_SD_SRC,
            in_strides=PYRAMID_STRIDES,
            default_loss="segdeformer",
        ),
    }


@hookimpl
def segcore_pairs() -> dict[str, PairSpec]:
    """SegDeformer on every MiT size (the paper trained B1, B2, B5), and the SegFormer baselines on core's ``mlp``."""
    config = "configs/segformer/segformer_mit-{}_512x512_160k_ade20k{}.py"
    pairs = {
        f"segdeformer-{MIT.name(v)}": PairSpec(
            encoder=MIT.name(v),
            decoder="segdeformer",
            description=f"SegFormer-{v.upper()} + SegDeformer (channels 256, dropout 0.1)"
            + ("" if v in _MIT_LOG else f"; the paper trained {_TRAINED}"),
            decoder_options={"channels": 256, "dropout": 0.1},
            source=f"{_SD_SRC} " + config.format(v, "_segdeformer3"),
        )
        for v in MIT.variants
    }
    # mmseg's SegFormer configs use an all-MLP head of width 256 for every size (checkpoints.md §3.3).
    pairs.update(
        {
            f"segformer-{v}": PairSpec(
                encoder=MIT.name(v),
                decoder="mlp",
                description=f"SegFormer-{v.upper()} (mmseg): MiT-{v.upper()} + all-MLP head of width 256",
                decoder_options={"channels": 256},
                source=f"{_MIT_SRC}; mmseg " + config.format(v, ""),
            )
            for v in MIT.variants
        }
    )
    return pairs


@hookimpl
def segcore_losses() -> dict[str, ComponentSpec]:
    """Register L_seg + 0.4 L_attn."""
    return {
        "segdeformer": ComponentSpec(
            factory=f"{_PKG}.head:segdeformer_loss",
            options=f"{_PKG}.head:SegDeformerLossOptions",
            description="CE(logits) + 0.4 CE(mid attention logits), both at label size, mmseg averaging",
            source=_SD_SRC,
        )
    }


@hookimpl
def segcore_converters() -> dict[str, ConverterSpec]:
    """Register the mmseg converter (also reads NVlabs and transformers MiT names)."""
    return {
        "segdeformer-mmseg": ConverterSpec(
            format="mmseg",
            components=(f"{MIT.family}-*", "segdeformer"),
            convert=f"{_PKG}.convert:convert",
            official_types={
                "MixVisionTransformer": f"{_PKG}.convert:mit_from_official",
                "SegDeformerHead3": f"{_PKG}.convert:segdeformer_from_official",
            },
            description="mmseg MiT / SegDeformerHead3 checkpoints; MiT also from NVlabs and transformers names",
        ),
        # SegFormer baselines (mmseg ``segformer_mit-b*`` checkpoints) onto core's ``mlp`` decoder.
        "segformer-mmseg": ConverterSpec(
            format="mmseg",
            components=("mlp",),
            convert=f"{_PKG}.convert:convert",
            official_types={"SegformerHead": f"{_PKG}.convert:segformer_from_official"},
            description="mmseg SegformerHead checkpoints onto core's mlp decoder",
        ),
        # transformers SegFormer repos (``model_type: segformer``): MiT + the released head, and the Hub's MiT
        # ImageNet encoders (``nvidia/mit-b*``). Keys of ``official_types``: the transformers model type of the
        # encoder part and the class name of the head (see segcore.weights.transformers_format).
        "segformer-transformers": ConverterSpec(
            format="transformers",
            components=(f"{MIT.family}-*", "segformer"),
            convert=f"{_PKG}.convert:convert_transformers",
            official_types={
                "segformer": f"{_PKG}.convert:segformer_from_transformers",
                "SegformerDecodeHead": f"{_PKG}.convert:segformer_head_from_transformers",
            },
            description="transformers SegFormer / MiT repos (config.json + safetensors) onto mit-* + segformer",
        ),
    }


@hookimpl
def segcore_checkpoints() -> dict[str, CheckpointSpec]:
    """Register the MiT ImageNet encoders and the SegDeformer ADE20K names (no official weights exist)."""
    out: dict[str, CheckpointSpec] = {}
    for v, h in _MIT_HASH.items():
        fname = f"mit_{v}_20220624-{h}.pth"
        out[f"mit-{v}-imagenet"] = CheckpointSpec(
            repo_id=f"segcore/mit-{v}-imagenet",
            revision="main",
            description=f"MiT-{v.upper()} ImageNet-1k weights (NVlabs, mmseg conversion of 2022-06-24)",
            kind="encoder",
            encoder=MIT.name(v),
            dataset="imagenet-1k",
            official_url=f"https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segformer/{fname}",
            official_filename=fname,
            sha256=h,
            format="mmseg",
            **_NVIDIA_LICENSE,
        )
    for v, miou in _MIT_LOG.items():
        out[f"segdeformer-mit-{v}-ade20k"] = CheckpointSpec(
            repo_id=f"segcore/segdeformer-mit-{v}-ade20k",
            revision="main",
            description=f"MiT-{v.upper()} + SegDeformer on ADE20K 512x512 (official log: {miou} mIoU ss)",
            encoder=MIT.name(v),
            decoder="segdeformer",
            num_classes=150,
            dataset="ade20k",
            metric=f"mIoU {miou} (ss, official training log log/segdeformer{v}.log.json)",
            eval_protocol=SEGDEFORMER_ADE20K_160K.eval,
            format="mmseg",
            **_NVIDIA_LICENSE,
            manual_step=(
                "The SegDeformer authors released configs and logs but no trained weights "
                "(github.com/lygsbw/segdeformer README). Train with `segcore train --recipe segdeformer-ade20k-160k` "
                f"(encoder mit-{v}), or convert your own mmseg checkpoint with "
                f"`segcore convert --format mmseg --encoder mit-{v} --decoder segdeformer --num-classes 150 FILE`."
            ),
        )
    return out


@hookimpl
def segcore_recipes() -> dict[str, RecipeSpec]:
    """Register the ADE20K recipe (official config) and the Cityscapes / COCO-Stuff ones (paper text)."""
    return segdeformer_recipes()

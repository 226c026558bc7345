"""segcore plugin of SegViT: encoders, decoders, loss, converter, checkpoints and recipes (torch-free import)."""

from __future__ import annotations

from segcore.hookspecs import hookimpl
from segcore.specs import CheckpointSpec, ComponentSpec, ConverterSpec, ParamGroupRule, RecipeSpec

_PAPER = "Zhang et al., SegViT, NeurIPS 2022, arXiv:2210.05844 (https://github.com/zbwxp/SegVit)"
_VIT = "segcore_segvit.vit"
_ATM = "segcore_segvit.atm"
_HF = "https://huggingface.co/Akide/SegViTv1/resolve/main/"


@hookimpl
def segcore_encoders() -> dict[str, ComponentSpec]:
    """Plain and Shrunk ViT-B/16 and ViT-L/16 (timm names, AugReg weights through timm)."""
    common = {"options": f"{_VIT}:ViTOptions", "source": _PAPER}
    return {
        "vit-b16": ComponentSpec(
            factory=f"{_VIT}:vit_b16",
            description="ViT-B/16 (no cls token), layers 6/8/12 at stride 16, bicubic pos-embed resize",
            **common,
        ),
        "vit-l16": ComponentSpec(
            factory=f"{_VIT}:vit_l16",
            description="ViT-L/16 (no cls token), layers 8/16/24 at stride 16, grid for 640",
            **common,
        ),
        "vit-b16-shrunk": ComponentSpec(
            factory=f"{_VIT}:vit_b16_shrunk",
            description="Shrunk ViT-B/16: 2x2 query down-sampling at layer index 6; outputs at strides 16 and 32",
            **common,
        ),
        "vit-l16-shrunk": ComponentSpec(
            factory=f"{_VIT}:vit_l16_shrunk",
            description="Shrunk ViT-L/16: 2x2 query down-sampling at layer index 8; outputs at strides 16 and 32",
            **common,
        ),
    }


@hookimpl
def segcore_decoders() -> dict[str, ComponentSpec]:
    """The ATM cascade and the Shrunk QU + ATM head."""
    return {
        "atm": ComponentSpec(
            factory=f"{_ATM}:atm",
            options=f"{_ATM}:ATMOptions",
            source=_PAPER,
            description="SegViT attention-to-mask cascade: class queries, masks = head-mean attention logits",
            default_loss="atm",
        ),
        "atm-shrunk": ComponentSpec(
            factory=f"{_ATM}:atm_shrunk",
            options=f"{_ATM}:ATMShrunkOptions",
            source=_PAPER,
            description="Shrunk SegViT head: query up-sampling (TPN) to 1/16 pixel queries, then ATM",
            default_loss="atm",
        ),
    }


@hookimpl
def segcore_losses() -> dict[str, ComponentSpec]:
    """The ATM loss."""
    return {
        "atm": ComponentSpec(
            factory="segcore_segvit.loss:atm_loss",
            options="segcore_segvit.loss:ATMLossOptions",
            source=_PAPER,
            description="SegViT loss: fixed query=class assignment, CE (no-object 0.1) + 20x focal + dice per stage",
        )
    }


@hookimpl
def segcore_converters() -> dict[str, ConverterSpec]:
    """Mmseg 0.24 SegViT checkpoints and configs."""
    conv = "segcore_segvit.convert"
    return {
        "segvit-mmseg": ConverterSpec(
            format="mmseg",
            components=("vit-*", "atm", "atm-shrunk"),
            convert=f"{conv}:convert",
            official_types={
                "VisionTransformer": f"{conv}:vit_from_official",
                "vit_shrink": f"{conv}:vit_shrink_from_official",
                "ATMHead": f"{conv}:atm_from_official",
                "TPNATMHead": f"{conv}:tpn_atm_from_official",
            },
            description="official SegViT (zbwxp/SegVit, mmseg 0.24) checkpoints: ViT, ATMHead, TPNATMHead",
        )
    }


def _ckpt(
    name: str,
    file: str,
    encoder: str,
    decoder: str,
    classes: int,
    dataset: str,
    img: int,
    metric: str,
    protocol: str,
    source: str,
    drop_path_rate: float = 0.3,
) -> CheckpointSpec:
    return CheckpointSpec(
        repo_id=f"segcore/{name}",
        revision="main",
        description=f"SegViT {encoder} + {decoder} on {dataset} ({img} crop), official weights; source: {source}",
        encoder=encoder,
        decoder=decoder,
        num_classes=classes,
        dataset=dataset,
        metric=metric,
        eval_protocol=protocol,
        official_url=_HF + file,
        official_filename=file,
        format="mmseg",
        encoder_options={"img_size": img, "drop_path_rate": drop_path_rate},
        decoder_options={"img_size": img},
        # The ViT-L configs normalise with mean = std = 127.5 (spec §2.1); the ViT-B one with ImageNet's.
        model_config=_VIT_L_NORM if encoder.startswith("vit-l16") else {},
    )


_VIT_L_NORM = {"mean": (127.5, 127.5, 127.5), "std": (127.5, 127.5, 127.5)}


_ADE_B = "slide 512/341, keep-ratio resize (2048, 512); ms: 0.5-1.75 + flip"
_ADE = "slide 640/608, keep-ratio resize (2048, 640); ms: 0.5-1.75 + flip"
_COCO = "slide 512/341, resize (2048, 512) min 512; ms: 0.5-1.75 + flip"
_PC = "slide 480/320, resize (520, 520) min 480; ms: 0.5-1.75 + flip; 60 classes incl. background"


@hookimpl
def segcore_checkpoints() -> dict[str, CheckpointSpec]:
    """Official SegViT models (checkpoints.md §2.1; Hub repo Akide/SegViTv1)."""
    readme = "SegViT README + Hub Akide/SegViTv1"
    return {
        "segvit-vit-b16-ade20k": _ckpt(
            "segvit-vit-b16-ade20k",
            "ade_51.3.pth",
            "vit-b16",
            "atm",
            150,
            "ade20k",
            512,
            "mIoU 51.3 (ss) / 53.0 (ms+flip)",
            _ADE_B,
            readme,
            drop_path_rate=0.1,
        ),
        "segvit-vit-l16-ade20k": _ckpt(
            "segvit-vit-l16-ade20k",
            "ade_54.6.pth",
            "vit-l16",
            "atm",
            150,
            "ade20k",
            640,
            "mIoU 54.6 (ss) / 55.2 (ms+flip)",
            _ADE,
            readme,
        ),
        "segvit-vit-l16-shrunk-ade20k": _ckpt(
            "segvit-vit-l16-shrunk-ade20k",
            "ade_shrunk_53.9.pth",
            "vit-l16-shrunk",
            "atm-shrunk",
            150,
            "ade20k",
            640,
            "mIoU 53.9 (ss) / 55.1 (ms+flip)",
            _ADE,
            readme,
        ),
        "segvit-vit-l16-coco-stuff10k": _ckpt(
            "segvit-vit-l16-coco-stuff10k",
            "COCOstuff_49.9.pth",
            "vit-l16",
            "atm",
            171,
            "coco-stuff10k",
            512,
            "mIoU 49.9 (ss) / 50.3 (ms+flip)",
            _COCO,
            readme,
        ),
        "segvit-vit-l16-shrunk-coco-stuff10k": _ckpt(
            "segvit-vit-l16-shrunk-coco-stuff10k",
            "COCOstuff10k_shrunk_49.1.pth",
            "vit-l16-shrunk",
            "atm-shrunk",
            171,
            "coco-stuff10k",
            512,
            "mIoU 49.1 (ss) / 49.4 (ms+flip)",
            _COCO,
            readme,
        ),
        "segvit-vit-l16-pascal-context": _ckpt(
            "segvit-vit-l16-pascal-context",
            "PC59cls_64.1.pth",
            "vit-l16",
            "atm",
            60,
            "pascal-context-60",
            480,
            "mIoU 64.1 (ss) / 65.3 (ms+flip), README '59cls'",
            _PC,
            readme,
        ),
        "segvit-vit-l16-shrunk-pascal-context": _ckpt(
            "segvit-vit-l16-shrunk-pascal-context",
            "PC59cls_62.3.pth",
            "vit-l16-shrunk",
            "atm-shrunk",
            60,
            "pascal-context-60",
            480,
            "mIoU 62.3 (ss) / 63.7 (ms+flip), README '59cls'",
            _PC,
            readme,
        ),
    }


# Official paramwise custom_keys {'head': lr x10, 'norm': decay 0, 'ln': decay 0} match substrings of the
# official names; 'head' hits every decode_head.* parameter first (head norms keep their decay), 'ln' only
# hits backbone ln1/ln2 and 'norm' nothing in the backbone (spec §7.2). In segcore names that is:
# every decoder.* parameter lr x10 with full decay, encoder block norm1/norm2 decay 0. "decoder." is longer
# than "norm", so it is tried first, as 'head' is in mmcv.
SEGVIT_PARAM_RULES = (ParamGroupRule("decoder.", lr_mult=10.0), ParamGroupRule("norm", decay_mult=0.0))


def _recipe(
    dataset: str,
    iters: int,
    batch: int,
    crop: int,
    wd: float,
    power: float,
    scale: tuple[int, int],
    eval_cfg: dict,
    ckpt_every: int,
    config: str,
) -> RecipeSpec:
    return RecipeSpec(
        description=f"SegViT ViT-L/16 + ATM on {dataset}, {crop} crop, {iters // 1000}k iters (official config)",
        dataset=dataset,
        iters=iters,
        batch_size=batch,
        crop_size=(crop, crop),
        lr=2e-5,
        weight_decay=wd,
        betas=(0.9, 0.999),
        param_rules=SEGVIT_PARAM_RULES,
        power=power,
        min_lr=0.0,
        warmup_iters=1500,
        warmup_ratio=1e-6,
        train_pipeline={
            "scale": scale,
            "ratio_range": (0.5, 2.0),
            "cat_max_ratio": 0.75,
            "flip_prob": 0.5,
            "photometric": True,
            "mean": (127.5, 127.5, 127.5),
            "std": (127.5, 127.5, 127.5),
            "grad_clip": 35.0,
        },
        eval=eval_cfg,
        eval_every=4000,
        checkpoint_every=ckpt_every,
        model={
            "encoder": "vit-l16",
            "decoder": "atm",
            "encoder_options": {"img_size": crop, "drop_path_rate": 0.3},
            "decoder_options": {"img_size": crop},
            "pretrained_encoder": True,
        },
        source=f"zbwxp/SegVit@763137e configs/segvit/{config}",
    )


@hookimpl
def segcore_recipes() -> dict[str, RecipeSpec]:
    """Official SegViT ViT-L training recipes (spec §7; batch 16 as in the paper)."""
    return {
        "segvit-ade20k-160k": _recipe(
            "ade20k",
            160_000,
            16,
            640,
            0.01,
            1.0,
            (2048, 640),
            {"mode": "slide", "crop_size": (640, 640), "stride": (608, 608), "resize": (2048, 640), "keep_ratio": True},
            16000,
            "segvit_vit-l_jax_640x640_160k_ade20k.py",
        ),
        "segvit-coco-stuff10k-80k": _recipe(
            "coco-stuff10k",
            80_000,
            16,
            512,
            0.02,
            2.0,
            (2048, 512),
            {
                "mode": "slide",
                "crop_size": (512, 512),
                "stride": (341, 341),
                "resize": (2048, 512),
                "keep_ratio": True,
                "min_size": 512,
            },
            8000,
            "segvit_vit-l_jax_512x512_80k_cocostuff10k.py",
        ),
        "segvit-pascal-context-80k": _recipe(
            "pascal-context-60",
            80_000,
            16,
            480,
            0.03,
            1.0,
            (520, 520),
            {
                "mode": "slide",
                "crop_size": (480, 480),
                "stride": (320, 320),
                "resize": (520, 520),
                "keep_ratio": True,
                "min_size": 480,
            },
            8000,
            "segvit_vit-l_jax_480x480_80k_pc.py",
        ),
    }

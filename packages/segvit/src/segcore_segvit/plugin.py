"""segcore plugin of SegViT: encoders, decoders, loss, converter, checkpoints and recipes (torch-free import)."""

from __future__ import annotations

from typing import NamedTuple

from segcore.config.settings import EvalProtocol, ModelSettings, Photometric, TrainPipeline
from segcore.plugins.hookspecs import hookimpl
from segcore.plugins.specs import CheckpointSpec, ComponentSpec, ConverterSpec, PairSpec, ParamGroupRule, RecipeSpec

from segcore_segvit.variants import VIT

_PAPER = VIT.source
_ATM = "segcore_segvit.atm"
_HF = "https://huggingface.co/Akide/SegViTv1/resolve/main/"


@hookimpl
def segcore_encoders() -> dict[str, ComponentSpec]:
    """One ``vit-*`` encoder per entry of the variant table: plain and Shrunk ViT-B/16 and ViT-L/16 (timm names)."""
    return VIT.encoders()


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
def segcore_pairs() -> dict[str, PairSpec]:
    """SegViT's models: each ViT with its head at the paper's crop (ViT-B 512, ViT-L 640; spec §2.1, §3.1)."""
    pairs = {}
    for key, variant in VIT.variants.items():
        img = variant.options["img_size"]
        pairs[f"segvit-{VIT.name(key)}"] = PairSpec(
            encoder=VIT.name(key),
            decoder=variant.pair["decoder"],
            description=f"SegViT {variant.pair['title']} at {img}",
            encoder_options={"img_size": img, "drop_path_rate": variant.options["drop_path_rate"]},
            decoder_options={"img_size": img},
            source=_PAPER,
        )
    return pairs


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
            components=(f"{VIT.family}-*", "atm", "atm-shrunk"),
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


_VIT_L_NORM = {"mean": (127.5, 127.5, 127.5), "std": (127.5, 127.5, 127.5)}


# Test pipelines (spec §6, datasets.md §9): keep-ratio resize (with min_size for COCO-Stuff-10k and Pascal
# Context), then sliding windows.
_ADE_B = EvalProtocol(mode="slide", crop_size=(512, 512), stride=(341, 341), resize=(2048, 512))
_ADE = EvalProtocol(mode="slide", crop_size=(640, 640), stride=(608, 608), resize=(2048, 640))
_COCO = EvalProtocol(mode="slide", crop_size=(512, 512), stride=(341, 341), resize=(2048, 512), min_size=512)
_PC = EvalProtocol(mode="slide", crop_size=(480, 480), stride=(320, 320), resize=(520, 520), min_size=480)


class _Release(NamedTuple):
    """One official SegViT model: its file on Akide/SegViTv1, what it was trained on and its reported score."""

    name: str
    file: str
    encoder: str
    dataset: str
    classes: int
    img: int
    metric: str
    protocol: EvalProtocol


# The official SegViT models (checkpoints.md §2.1; Hub repo Akide/SegViTv1); each decoder is its encoder's pair.
_RELEASE_SOURCE = "SegViT README + Hub Akide/SegViTv1"
_RELEASES = (
    _Release(
        "segvit-vit-b16-ade20k",
        "ade_51.3.pth",
        "vit-b16",
        "ade20k",
        150,
        512,
        "mIoU 51.3 (ss) / 53.0 (ms+flip)",
        _ADE_B,
    ),
    _Release(
        "segvit-vit-l16-ade20k",
        "ade_54.6.pth",
        "vit-l16",
        "ade20k",
        150,
        640,
        "mIoU 54.6 (ss) / 55.2 (ms+flip)",
        _ADE,
    ),
    _Release(
        "segvit-vit-l16-shrunk-ade20k",
        "ade_shrunk_53.9.pth",
        "vit-l16-shrunk",
        "ade20k",
        150,
        640,
        "mIoU 53.9 (ss) / 55.1 (ms+flip)",
        _ADE,
    ),
    _Release(
        "segvit-vit-l16-coco-stuff10k",
        "COCOstuff_49.9.pth",
        "vit-l16",
        "coco-stuff10k",
        171,
        512,
        "mIoU 49.9 (ss) / 50.3 (ms+flip)",
        _COCO,
    ),
    _Release(
        "segvit-vit-l16-shrunk-coco-stuff10k",
        "COCOstuff10k_shrunk_49.1.pth",
        "vit-l16-shrunk",
        "coco-stuff10k",
        171,
        512,
        "mIoU 49.1 (ss) / 49.4 (ms+flip)",
        _COCO,
    ),
    _Release(
        "segvit-vit-l16-pascal-context",
        "PC59cls_64.1.pth",
        "vit-l16",
        "pascal-context-60",
        60,
        480,
        "mIoU 64.1 (ss) / 65.3 (ms+flip), README '59cls'",
        _PC,
    ),
    _Release(
        "segvit-vit-l16-shrunk-pascal-context",
        "PC59cls_62.3.pth",
        "vit-l16-shrunk",
        "pascal-context-60",
        60,
        480,
        "mIoU 62.3 (ss) / 63.7 (ms+flip), README '59cls'",
        _PC,
    ),
)


def _checkpoint(release: _Release) -> CheckpointSpec:
    """The spec of one official model: its Hub copy, the official file to convert, its options and licence."""
    variant = VIT.variants[release.encoder.removeprefix(f"{VIT.family}-")]
    decoder = variant.pair["decoder"]
    return CheckpointSpec(
        repo_id=f"segcore/{release.name}",
        revision="main",
        description=f"SegViT {release.encoder} + {decoder} on {release.dataset} ({release.img} crop), official "
        f"weights; source: {_RELEASE_SOURCE}",
        encoder=release.encoder,
        decoder=decoder,
        num_classes=release.classes,
        dataset=release.dataset,
        metric=release.metric,
        eval_protocol=release.protocol,
        official_url=_HF + release.file,
        official_filename=release.file,
        format="mmseg",
        # The encoder's own stochastic depth (its variant table entry): the official configs train with it.
        encoder_options={"img_size": release.img, "drop_path_rate": variant.options["drop_path_rate"]},
        decoder_options={"img_size": release.img},
        # The ViT-L configs normalise with mean = std = 127.5 (spec §2.1); the ViT-B one with ImageNet's.
        model_config=_VIT_L_NORM if release.encoder.startswith("vit-l16") else {},
        # The licence tag of the Hub repo the weights come from (checkpoints.md §2.1).
        license="other",
        license_name="adelaidet-non-commercial",
        license_note="Non-commercial use only: the official SegViT weights (Akide/SegViTv1) carry the AdelaiDet "
        "non-commercial licence.",
    )


@hookimpl
def segcore_checkpoints() -> dict[str, CheckpointSpec]:
    """Official SegViT models (checkpoints.md §2.1; Hub repo Akide/SegViTv1), one per entry of ``_RELEASES``."""
    return {release.name: _checkpoint(release) for release in _RELEASES}


# Official paramwise custom_keys {'head': lr x10, 'norm': decay 0, 'ln': decay 0} match substrings of the
# official names; 'head' hits every decode_head.* parameter first (head norms keep their decay), 'ln' only
# hits backbone ln1/ln2 and 'norm' nothing in the backbone (spec §7.2). In segcore names that is:
# every decoder.* parameter lr x10 with full decay, encoder block norm1/norm2 decay 0. "decoder." is longer
# than "norm", so it is tried first, as 'head' is in mmcv.
SEGVIT_PARAM_RULES = (ParamGroupRule("decoder.", lr_mult=10.0), ParamGroupRule("norm", decay_mult=0.0))


# Common to the three official configs (spec §7.1): mean = std = 127.5, mmseg's PhotoMetricDistortion.
_NORM_127 = {"mean": (127.5, 127.5, 127.5), "std": (127.5, 127.5, 127.5)}
_IMAGENET_NORM: dict = {}  # _base_/models/seg_vit-b16.py's dataset file uses ImageNet's (spec §7.4)


def _models(crop: int, drop_path: float, large: bool) -> tuple[ModelSettings, dict[str, ModelSettings]]:
    """The recipe's model at this crop, and the other SegViT models (plain / Shrunk, B / L) at the same crop."""

    def model(encoder: str, decoder: str, rate: float) -> ModelSettings:
        return ModelSettings(
            encoder=encoder,
            decoder=decoder,
            encoder_options={"img_size": crop, "drop_path_rate": rate},
            decoder_options={"img_size": crop},
            pretrained_encoder=True,
        )

    variants = {
        VIT.name(key): model(VIT.name(key), v.pair["decoder"], v.options["drop_path_rate"])
        for key, v in VIT.variants.items()
    }
    return variants["vit-l16" if large else "vit-b16"], variants


def _recipe(
    dataset: str,
    iters: int,
    batch: int,
    crop: int,
    wd: float,
    power: float,
    scale: tuple[int, int],
    test: EvalProtocol,
    ckpt_every: int,
    source: str,
    large: bool = True,
) -> RecipeSpec:
    model, variants = _models(crop, 0.3 if large else 0.1, large)
    what = "ViT-L/16" if large else "ViT-B/16"
    return RecipeSpec(
        description=f"SegViT {what} + ATM on {dataset}, {crop} crop, {iters // 1000}k iters",
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
        clip_grad=35.0,  # optimizer_config grad_clip max_norm 35, L2 (spec §7.1)
        train_pipeline=TrainPipeline(
            scale=scale,
            ratio_range=(0.5, 2.0),
            cat_max_ratio=0.75,
            flip_prob=0.5,
            photometric=Photometric(),
            **(_NORM_127 if large else _IMAGENET_NORM),
        ),
        eval=test,
        eval_every=4000,
        checkpoint_every=ckpt_every,
        model=model,
        model_variants=variants,
        source=source,
    )


_REPO = "zbwxp/SegVit@763137e configs/segvit/"


@hookimpl
def segcore_recipes() -> dict[str, RecipeSpec]:
    """Official SegViT recipes (spec §7; batch 16 as in the paper) and ViT-B on ADE20K (spec §7.4)."""
    return {
        "segvit-ade20k-160k": _recipe(
            "ade20k",
            160_000,
            16,
            640,
            0.01,
            1.0,
            (2048, 640),
            _ADE,
            16000,
            _REPO + "segvit_vit-l_jax_640x640_160k_ade20k.py",
        ),
        "segvit-coco-stuff10k-80k": _recipe(
            "coco-stuff10k",
            80_000,
            16,
            512,
            0.02,
            2.0,
            (2048, 512),
            _COCO,
            8000,
            _REPO + "segvit_vit-l_jax_512x512_80k_cocostuff10k.py",
        ),
        "segvit-pascal-context-80k": _recipe(
            "pascal-context-60",
            80_000,
            16,
            480,
            0.03,
            1.0,
            (520, 520),
            _PC,
            8000,
            _REPO + "segvit_vit-l_jax_480x480_80k_pc.py",
        ),
        # No ViT-B training config was released (spec §7.4): the model, test pipeline (slide 512/341) and
        # normalisation (ImageNet) of _base_/models/seg_vit-b16.py + the ADE20K dataset file; the schedule is the
        # ViT-L ADE20K one at crop 512 and 160k iterations (paper: batch 16), train scale (2048, 512).
        "segvit-vit-b16-ade20k-160k": _recipe(
            "ade20k",
            160_000,
            16,
            512,
            0.01,
            1.0,
            (2048, 512),
            _ADE_B,
            16000,
            "paper Table 1 (ViT-B, 512, 160k, batch 16) + zbwxp/SegVit@763137e configs/_base_/models/seg_vit-b16.py "
            "and the ViT-L ADE20K config's schedule (spec §7.4)",
            large=False,
        ),
    }

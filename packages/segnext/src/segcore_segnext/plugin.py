"""segcore plugin of SegNeXt: MSCAN encoders, the ``ham`` decoder, the converter, checkpoints and recipes.

Torch-free at import time (factories are ``"module:attr"`` strings), so ``segcore list`` stays fast.
"""

from __future__ import annotations

from segcore.config.settings import EvalProtocol, ModelSettings, Photometric, TrainPipeline
from segcore.plugins.hookspecs import hookimpl
from segcore.plugins.specs import (
    PYRAMID_STRIDES,
    CheckpointSpec,
    ComponentSpec,
    ConverterSpec,
    PairSpec,
    ParamGroupRule,
    RecipeSpec,
)

from segcore_segnext.variants import MSCAN

_PAPER = MSCAN.source
_HUB_ORG = "segcore"
_TSINGHUA = "https://cloud.tsinghua.edu.cn/f/{}/?dl=1"
_MSCAN_DIR = "https://cloud.tsinghua.edu.cn/d/c15b25a6745946618462/files/?p=%2Fmscan_{}.pth&dl=1"
_MMSEG = "https://download.openmmlab.com/mmsegmentation/v0.5"

_IMAGENET_TOP1 = {"t": "75.9", "s": "81.2", "b": "83.0", "l": "83.9"}
_ADE = {  # token, ss / ms mIoU (checkpoints.md §1.1)
    "t": ("5da98841b8384ba0988a", "41.1 / 42.2"),
    "s": ("b2d1eb94f5944d60b3d2", "44.3 / 45.8"),
    "b": ("1ea8000916284493810b", "48.5 / 49.9"),
    "l": ("d4f8e1020643414fbf7f", "51.0 / 52.1"),
}
_CITY = {
    "t": ("b1613af9955849bba910", "79.8 / 81.4"),
    "s": ("14148cf5371a4f248db1", "81.3 / 82.7"),
    "b": ("adb49029f66f426bb046", "82.6 / 83.8"),
    "l": ("b5308d092b034f81aac0", "83.2 / 83.9"),
}
_MMSEG_ADE = {  # (file stem, sha256 prefix, ss / ms) — checkpoints.md §1.3
    "t": ("segnext_mscan-t_1x16_512x512_adamw_160k_ade20k_20230210_140244", "05bd8466", "41.50 / 42.59"),
    "s": ("segnext_mscan-s_1x16_512x512_adamw_160k_ade20k_20230214_113014", "43013668", "44.16 / 45.81"),
    "b": ("segnext_mscan-b_1x16_512x512_adamw_160k_ade20k_20230209_172053", "b6f6c70c", "48.03 / 49.68"),
    "l": ("segnext_mscan-l_1x16_512x512_adamw_160k_ade20k_20230209_172055", "19b14b63", "50.99 / 52.10"),
}
_MMSEG_MSCAN = {"t": "119e8c9f", "s": "f33ccdf2", "b": "3ab7d230", "l": "cef260d4"}
# Test pipelines (spec §5.2): ADE20K / COCO-Stuff keep-ratio resize into (2048, 512) then ResizeToMultiple(32),
# whole image; Cityscapes keep-ratio resize into (2048, 1024), no ResizeToMultiple, slide 1024 / 768.
_TEST_ADE = EvalProtocol(mode="whole", resize=(2048, 512), resize_to_multiple=32)
_TEST_CITY = EvalProtocol(mode="slide", crop_size=(1024, 1024), stride=(768, 768), resize=(2048, 1024))


@hookimpl
def segcore_encoders() -> dict[str, ComponentSpec]:
    """Register one ``mscan-*`` encoder per entry of the variant table (``mscan-t/s/b/l``)."""
    return MSCAN.encoders()


@hookimpl
def segcore_decoders() -> dict[str, ComponentSpec]:
    """Register ``ham`` (LightHamHead)."""
    return {
        "ham": ComponentSpec(
            factory="segcore_segnext.ham:ham",
            options="segcore_segnext.ham:LightHamHeadOptions",
            description="SegNeXt LightHamHead: concat strides 8-32, NMF Hamburger, logits at stride 8",
            source=_PAPER,
            in_strides=PYRAMID_STRIDES,
            default_loss="ce",
            default_loss_options={"average": "all"},
        )
    }


@hookimpl
def segcore_pairs() -> dict[str, PairSpec]:
    """SegNeXt-T/S/B/L: each MSCAN size with its official LightHam head (spec §3.1, Table 2)."""
    return {
        f"segnext-{v}": PairSpec(
            encoder=MSCAN.name(v),
            decoder="ham",
            description=f"SegNeXt-{v.upper()}: MSCAN-{v.upper()} + LightHam, head width {variant.pair['channels']}",
            decoder_options=dict(variant.pair),
            source=f"{_PAPER}; local_configs/segnext/{variant.facts['config']}/*.py",
        )
        for v, variant in MSCAN.variants.items()
    }


@hookimpl
def segcore_converters() -> dict[str, ConverterSpec]:
    """Register the mmseg converter (formats A, A', B-orig, B-mm of checkpoints.md §4)."""
    return {
        "segnext-mmseg": ConverterSpec(
            format="mmseg",
            components=(f"{MSCAN.family}-*", "ham"),
            convert="segcore_segnext.convert:convert",
            official_types={
                "MSCAN": "segcore_segnext.convert:mscan_from_official",
                "LightHamHead": "segcore_segnext.convert:ham_from_official",
            },
            description="official SegNeXt / mmseg 1.x SegNeXt checkpoints and MSCAN ImageNet files",
        )
    }


def _model(
    v: str, dataset: str, num_classes: int, url: str, metric: str, protocol: EvalProtocol, **extra: str
) -> CheckpointSpec:
    return CheckpointSpec(
        repo_id=f"{_HUB_ORG}/segnext-{v}-{dataset}",
        revision="main",
        description=f"SegNeXt-{v.upper()} on {dataset}, official weights (mIoU ss/ms {metric})",
        kind="model",
        encoder=MSCAN.name(v),
        decoder="ham",
        num_classes=num_classes,
        dataset=dataset,
        metric=f"mIoU {metric} (ss / ms+flip)",
        eval_protocol=protocol,
        official_url=url,
        format="mmseg",
        decoder_options=dict(MSCAN.variants[v].pair),
        **extra,
    )


@hookimpl
def segcore_checkpoints() -> dict[str, CheckpointSpec]:
    """Register official SegNeXt models and MSCAN ImageNet encoders (checkpoints.md §1)."""
    out: dict[str, CheckpointSpec] = {}
    for v in _ADE:  # the sizes with official weights (release data, keyed by variant)
        token, metric = _ADE[v]
        out[f"segnext-{v}-ade20k"] = _model(v, "ade20k", 150, _TSINGHUA.format(token), metric, _TEST_ADE)
        token, metric = _CITY[v]
        out[f"segnext-{v}-cityscapes"] = _model(v, "cityscapes", 19, _TSINGHUA.format(token), metric, _TEST_CITY)
        stem, sha, metric = _MMSEG_ADE[v]
        out[f"segnext-{v}-ade20k-mmseg"] = _model(
            v,
            "ade20k-mmseg",
            150,
            f"{_MMSEG}/segnext/{stem.rsplit('_', 2)[0]}/{stem}-{sha}.pth",
            metric,
            _TEST_ADE,
            official_filename=f"{stem}-{sha}.pth",
            sha256=sha,
        )
        out[f"mscan-{v}-imagenet"] = CheckpointSpec(
            repo_id=f"{_HUB_ORG}/mscan-{v}-imagenet",
            revision="main",
            description=f"MSCAN-{v.upper()} ImageNet-1k weights (official, top-1 {_IMAGENET_TOP1[v]})",
            kind="encoder",
            encoder=MSCAN.name(v),
            dataset="imagenet-1k",
            metric=f"top-1 {_IMAGENET_TOP1[v]} (ImageNet-1k val, 224x224, paper Table 3)",
            official_url=_MSCAN_DIR.format(v),
            official_filename=f"mscan_{v}.pth",
            format="mmseg",
        )
        out[f"mscan-{v}-imagenet-mmseg"] = CheckpointSpec(
            repo_id=f"{_HUB_ORG}/mscan-{v}-imagenet-mmseg",
            revision="main",
            description=f"MSCAN-{v.upper()} ImageNet-1k weights, mmseg re-release (same weights, renamed keys)",
            kind="encoder",
            encoder=MSCAN.name(v),
            dataset="imagenet-1k",
            metric=f"top-1 {_IMAGENET_TOP1[v]} (ImageNet-1k val, 224x224, paper Table 3)",
            official_url=f"{_MMSEG}/pretrain/segnext/mscan_{v}_20230227-{_MMSEG_MSCAN[v]}.pth",
            official_filename=f"mscan_{v}_20230227-{_MMSEG_MSCAN[v]}.pth",
            sha256=_MMSEG_MSCAN[v],
            format="mmseg",
        )
    out["segnext-l-coco-stuff164k"] = _model(
        "l",
        "coco-stuff164k",
        171,
        _TSINGHUA.format("aca5733f73d645feb43f"),
        "46.5 / 47.2",
        _TEST_ADE,
    )
    return out


# Recipe (spec §5): mmcv custom keys in segcore names. "head" matches every decode_head parameter; ours
# live under "decoder." (and "adapter." if an adapter is inserted). "norm" matches the patch-embed norms,
# block norm1/norm2 and the stage LayerNorms — the same parameters in our names, since they are unchanged.
_RULES = (
    ParamGroupRule("pos_block", decay_mult=0.0),
    ParamGroupRule("decoder.", lr_mult=10.0),
    ParamGroupRule("adapter.", lr_mult=10.0),
    ParamGroupRule("norm", decay_mult=0.0),
)


def _recipe(
    dataset: str,
    iters: int,
    batch: int,
    crop: int,
    scale: tuple[int, int],
    test: EvalProtocol,
    source: str,
    variants: dict[str, ModelSettings] | None = None,
) -> RecipeSpec:
    return RecipeSpec(
        description=f"SegNeXt on {dataset}, {iters // 1000}k iterations, AdamW 6e-5, poly, batch {batch}",
        dataset=dataset,
        iters=iters,
        batch_size=batch,
        crop_size=(crop, crop),
        lr=6e-5,
        weight_decay=0.01,
        betas=(0.9, 0.999),
        param_rules=_RULES,
        power=1.0,
        min_lr=0.0,
        warmup_iters=1500,
        warmup_ratio=1e-6,
        clip_grad=None,  # optimizer_config = {} (spec §5.1)
        train_pipeline=TrainPipeline(
            scale=scale, ratio_range=(0.5, 2.0), cat_max_ratio=0.75, flip_prob=0.5, photometric=Photometric()
        ),
        eval=test,
        eval_every=8000,
        checkpoint_every=8000,
        # The T config; another MSCAN size gets its own head from the segnext-* pairs (spec §3.1).
        model=ModelSettings(encoder="mscan-t", decoder="ham", pretrained_encoder=True),
        model_variants=variants or {},
        source=source,
    )


_CONFIGS = "Visual-Attention-Network/SegNeXt@c87bcae local_configs/segnext/*/"
_APPENDIX = "SegNeXt paper appendix Table 1 (crop, batch, iterations)"
# iSAID has official (Jittor) configs: whole image in (896, 896) + ResizeToMultiple(32); B's drop path is 0.2 there.
_TEST_ISAID = EvalProtocol(mode="whole", resize=(896, 896), resize_to_multiple=32)
_ISAID_B = ModelSettings(
    encoder="mscan-b", decoder="ham", encoder_options={"drop_path_rate": 0.2}, pretrained_encoder=True
)


@hookimpl
def segcore_recipes() -> dict[str, RecipeSpec]:
    """Register the official SegNeXt training schedules (spec §5)."""
    return {
        "segnext-ade20k-160k": _recipe(
            "ade20k", 160_000, 16, 512, (2048, 512), _TEST_ADE, _CONFIGS + "segnext.*.512x512.ade.160k.py"
        ),
        "segnext-cityscapes-160k": _recipe(
            "cityscapes", 160_000, 8, 1024, (2048, 1024), _TEST_CITY, _CONFIGS + "segnext.*.1024x1024.city.160k.py"
        ),
        "segnext-coco-stuff164k-80k": _recipe(
            "coco-stuff164k",
            80_000,
            16,
            512,
            (2048, 512),
            _TEST_ADE,
            _CONFIGS + "segnext.*.512x512.coco_stuff164k.80k.py",
        ),
        # No configs were released for Pascal VOC and Pascal Context: crop, batch and iterations from the appendix
        # (VOC: the 80k trainaug stage; the paper then fine-tunes 80k on trainval), the rest is the ADE20K recipe
        # (whole image, ResizeToMultiple(32)) with the datasets' own resize bounds from mmseg's base dataset configs
        # (datasets.md §9: VOC (2048, 512), Pascal Context (520, 520)).
        "segnext-voc2012-aug-80k": _recipe(
            "voc2012-aug",
            80_000,
            16,
            512,
            (2048, 512),
            _TEST_ADE,
            f"{_APPENDIX} + the ADE20K config; mmseg pascal_voc12_aug.py scales",
        ),
        "segnext-pascal-context-59-80k": _recipe(
            "pascal-context-59",
            80_000,
            16,
            480,
            (520, 520),
            EvalProtocol(mode="whole", resize=(520, 520), resize_to_multiple=32),
            f"{_APPENDIX} + the ADE20K config; mmseg pascal_context_59.py scales (paper: 59 classes + background)",
        ),
        "segnext-isaid-160k": _recipe(
            "isaid",
            160_000,
            16,
            896,
            (896, 896),
            _TEST_ISAID,
            "Jittor/JSeg@c14696d project/segnext/*/segnext_*_896x896_isaid_160k.py (+ appendix Table 1)",
            variants={"mscan-b": _ISAID_B},
        ),
    }

"""The official SegDeformer training preset (spec §8), translated to segcore parameter names.

Official ``paramwise_cfg.custom_keys`` are ``head`` (lr x10), ``norm`` (decay 0) and ``pos_block`` (matches
nothing in MiT), matched as substrings of mmseg names. In segcore names: every ``decoder.*`` parameter gets
lr x10 with decay; encoder parameters whose name contains ``norm`` (``norm1``, ``norm2``, ``attn.norm``,
``patch_embed.norm``) get no decay; the stage-final LayerNorms are ``layers.{s}.2`` in mmseg (no "norm" in
the name) so they keep decay: our ``stages.{s}.norm.`` rules restore that. ``adapter.*`` (absent with MiT;
only a plain encoder gets one) is new, head-like and gets lr x10 (not official).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from segcore.config.settings import EvalProtocol, ModelSettings, Photometric, TrainPipeline
from segcore.plugins.specs import ParamGroupRule, RecipeSpec

__all__ = [
    "segdeformer_recipes",
    "param_rule_for",
    "SEGDEFORMER_ADE20K_160K",
    "SEGDEFORMER_CITYSCAPES_160K",
    "SEGDEFORMER_COCO_STUFF164K_160K",
]

_RULES = (
    ParamGroupRule("decoder.", lr_mult=10.0, decay_mult=1.0),
    ParamGroupRule("adapter.", lr_mult=10.0, decay_mult=1.0),
    ParamGroupRule("norm", lr_mult=1.0, decay_mult=0.0),
    *(ParamGroupRule(f"encoder.stages.{s}.norm.", lr_mult=1.0, decay_mult=1.0) for s in range(4)),
)

SEGDEFORMER_ADE20K_160K = RecipeSpec(
    description="SegDeformer (ECCV 2022), ADE20K 512x512, 160k iterations, batch 16, AdamW 6e-5, poly",
    dataset="ade20k",
    iters=160_000,
    batch_size=16,
    crop_size=(512, 512),
    lr=6e-5,
    weight_decay=0.01,
    betas=(0.9, 0.999),
    param_rules=_RULES,
    norm_decay_mult=None,
    bias_decay_mult=None,
    power=1.0,
    min_lr=0.0,
    warmup_iters=1500,
    warmup_ratio=1e-6,
    train_pipeline=TrainPipeline(
        scale=(2048, 512), ratio_range=(0.5, 2.0), cat_max_ratio=0.75, flip_prob=0.5, photometric=Photometric()
    ),
    # Spec §8 "Test": keep-ratio resize into (2048, 512), no padding, whole image, no flip.
    eval=EvalProtocol(mode="whole", resize=(2048, 512)),
    eval_every=16_000,
    checkpoint_every=16_000,
    model=ModelSettings(
        encoder="mit-b1",
        decoder="segdeformer",
        decoder_options={"channels": 256, "dropout": 0.1},
        pretrained_encoder=True,
    ),
    source=(
        "github.com/lygsbw/segdeformer@77f2dacd configs/segformer/segformer_mit-b1_512x512_160k_ade20k_segdeformer3.py"
    ),
)


# No config was released for Cityscapes or COCO-Stuff (spec §1, §8 "Paper extras"): the paper gives the crop,
# the batch and a sliding-window test; everything else is the ADE20K recipe. The test windows and resize bounds
# are mmseg's for these datasets (datasets.md §9: Cityscapes 1024 / 768 in (2048, 1024) as SegNeXt's and
# mmseg's SegFormer configs; COCO-Stuff 512 / 341 in (2048, 512) as mmseg's slide configs at crop 512).
_PAPER_TEXT = "SegDeformer paper (crop, batch, sliding-window test) + the ADE20K config's optimiser and schedule"

SEGDEFORMER_CITYSCAPES_160K = dataclasses.replace(
    SEGDEFORMER_ADE20K_160K,
    description="SegDeformer, Cityscapes 1024x1024, 160k iterations, batch 8, AdamW 6e-5, poly, slide test",
    dataset="cityscapes",
    batch_size=8,
    crop_size=(1024, 1024),
    train_pipeline=dataclasses.replace(SEGDEFORMER_ADE20K_160K.train_pipeline, scale=(2048, 1024)),
    eval=EvalProtocol(mode="slide", crop_size=(1024, 1024), stride=(768, 768), resize=(2048, 1024)),
    source=_PAPER_TEXT,
)

SEGDEFORMER_COCO_STUFF164K_160K = dataclasses.replace(
    SEGDEFORMER_ADE20K_160K,
    description="SegDeformer, COCO-Stuff 164k 512x512, 160k iterations, batch 16, AdamW 6e-5, poly, slide test",
    dataset="coco-stuff164k",
    eval=EvalProtocol(mode="slide", crop_size=(512, 512), stride=(341, 341), resize=(2048, 512)),
    source=_PAPER_TEXT,
)


def param_rule_for(name: str, rules: Iterable[ParamGroupRule]) -> ParamGroupRule | None:
    """The rule applying to parameter ``name``: the longest key contained in it (mmcv 1.x ``custom_keys``)."""
    best = None
    for rule in rules:
        if rule.key in name and (best is None or len(rule.key) > len(best.key)):
            best = rule
    return best


def segdeformer_recipes() -> dict[str, RecipeSpec]:
    """The presets this plugin registers."""
    return {
        "segdeformer-ade20k-160k": SEGDEFORMER_ADE20K_160K,
        "segdeformer-cityscapes-160k": SEGDEFORMER_CITYSCAPES_160K,
        "segdeformer-coco-stuff164k-160k": SEGDEFORMER_COCO_STUFF164K_160K,
    }

"""The official SegDeformer training preset (spec §8), translated to segcore parameter names.

Official ``paramwise_cfg.custom_keys`` are ``head`` (lr x10), ``norm`` (decay 0) and ``pos_block`` (matches
nothing in MiT), matched as substrings of mmseg names. In segcore names: every ``decoder.*`` parameter gets
lr x10 with decay; encoder parameters whose name contains ``norm`` (``norm1``, ``norm2``, ``attn.norm``,
``patch_embed.norm``) get no decay; the stage-final LayerNorms are ``layers.{s}.2`` in mmseg (no "norm" in
the name) so they keep decay: our ``stages.{s}.norm.`` rules restore that. ``adapter.*`` (absent with MiT;
only a plain encoder gets one) is new, head-like and gets lr x10 (not official).
"""

from __future__ import annotations

from collections.abc import Iterable

from segcore.specs import ParamGroupRule, RecipeSpec

__all__ = ["segdeformer_recipes", "param_rule_for", "SEGDEFORMER_ADE20K_160K"]

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
    train_pipeline={
        "scale": (2048, 512),
        "ratio_range": (0.5, 2.0),
        "cat_max_ratio": 0.75,
        "flip_prob": 0.5,
        "photometric": True,
    },
    eval={"mode": "whole", "resize": (2048, 512), "keep_ratio": True, "flip": False},
    eval_every=16_000,
    checkpoint_every=16_000,
    model={
        "encoder": "mit-b1",
        "decoder": "segdeformer",
        "decoder_options": {"channels": 256, "dropout": 0.1},
        "pretrained_encoder": True,
    },
    source=(
        "github.com/lygsbw/segdeformer@77f2dacd configs/segformer/segformer_mit-b1_512x512_160k_ade20k_segdeformer3.py"
    ),
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
    return {"segdeformer-ade20k-160k": SEGDEFORMER_ADE20K_160K}

"""The official recipe: which parameters get lr x10 / no weight decay (spec §8, mmcv custom_keys)."""

from __future__ import annotations

import pytest
import segcore
from segcore.plugins.registry import components
from segcore_segdeformer.recipes import SEGDEFORMER_ADE20K_160K, param_rule_for


def _groups(model: segcore.SegModel) -> dict[tuple[float, float], int]:
    out: dict[tuple[float, float], int] = {}
    for name, p in model.named_parameters():
        rule = param_rule_for(name, SEGDEFORMER_ADE20K_160K.param_rules)
        key = (rule.lr_mult, rule.decay_mult) if rule else (1.0, 1.0)
        out[key] = out.get(key, 0) + p.numel()
    return out


def test_recipe_param_groups_match_official_mmcv_groups() -> None:
    # spec §8: groups built by genuine mmcv for B1: (6e-5, .01) 13,139,136, (6e-5, 0) 12,288, (6e-4, .01) 1,302,166.
    import torch

    with torch.device("meta"):
        model = segcore.build_model("mit-b1", "segdeformer", 150)
    assert _groups(model) == {(1.0, 1.0): 13_139_136, (1.0, 0.0): 12_288, (10.0, 1.0): 1_302_166}


def test_recipe_rules_on_names() -> None:
    rules = SEGDEFORMER_ADE20K_160K.param_rules
    expect = {
        "encoder.stages.0.blocks.0.norm1.weight": (1.0, 0.0),
        "encoder.stages.2.blocks.1.attn.norm.bias": (1.0, 0.0),
        "encoder.stages.1.patch_embed.norm.weight": (1.0, 0.0),
        "encoder.stages.3.norm.weight": (1.0, 1.0),  # mmseg layers.3.2: no "norm" in the official name
        "encoder.stages.0.blocks.0.attn.in_proj_bias": None,
        "decoder.internal.query.1.weight": (10.0, 1.0),
        "decoder.mid.cls_token": (10.0, 1.0),
    }
    for name, want in expect.items():
        rule = param_rule_for(name, rules)
        assert (None if rule is None else (rule.lr_mult, rule.decay_mult)) == want, name


def test_recipe_registered() -> None:
    spec = components("recipes")["segdeformer-ade20k-160k"]
    assert spec is SEGDEFORMER_ADE20K_160K
    names = {c.name for c in segcore.list_components("recipes")["recipes"]}
    assert "segdeformer-ade20k-160k" in names
    for kind, name in [
        ("encoders", "mit-b3"),
        ("decoders", "segdeformer"),
        ("losses", "segdeformer"),
        ("checkpoints", "mit-b2-imagenet"),
        ("checkpoints", "segdeformer-mit-b5-ade20k"),
    ]:
        assert name in components(kind), (kind, name)
    assert components("decoders")["segdeformer"].default_loss == "segdeformer"
    assert (spec.lr, spec.weight_decay, spec.iters, spec.batch_size, spec.warmup_iters) == (
        6e-5,
        0.01,
        160_000,
        16,
        1500,
    )
    # spec §8: poly power 1 to 0, linear warm-up ratio 1e-6, torch AdamW betas, 512 crops, eval every 16k
    assert (spec.power, spec.min_lr, spec.warmup_ratio, spec.betas) == (1.0, 0.0, 1e-6, (0.9, 0.999))
    assert (spec.crop_size, spec.eval_every, spec.checkpoint_every) == ((512, 512), 16_000, 16_000)
    assert spec.train_pipeline.ratio_range == (0.5, 2.0) and spec.train_pipeline.cat_max_ratio == 0.75
    # "no decay on bias" (DESIGN.md) is not the official rule (spec §8, §10 item 11): biases keep decay
    assert spec.bias_decay_mult is None and spec.norm_decay_mult is None


def test_recipe_through_core_optimizer_groups() -> None:
    import torch

    optim = pytest.importorskip("segcore.train.optim")
    with torch.device("meta"):
        model = segcore.build_model("mit-b1", "segdeformer", 150)
    spec = SEGDEFORMER_ADE20K_160K
    groups = optim.param_groups(
        model, spec.lr, spec.weight_decay, spec.param_rules, spec.norm_decay_mult, spec.bias_decay_mult
    )
    sizes = {(round(g["lr"], 12), g["weight_decay"]): sum(p.numel() for p in g["params"]) for g in groups}
    assert sizes == {(6e-5, 0.01): 13_139_136, (6e-5, 0.0): 12_288, (6e-4, 0.01): 1_302_166}

"""Parameter groups (mmcv 1.x custom_keys semantics), poly schedule with warm-up, core recipes."""

from __future__ import annotations

import math

import pytest
import torch
from segcore.plugins.recipes import core_recipes
from segcore.plugins.specs import ParamGroupRule
from segcore.train.optim import param_groups, poly_lr_factor
from torch import nn


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.pos_block = nn.Linear(2, 2)
        self.encoder.norm = nn.LayerNorm(2)
        self.encoder.conv = nn.Conv2d(2, 2, 1)
        self.decoder = nn.Module()
        self.decoder.bn = nn.BatchNorm2d(2)
        self.decoder.cls = nn.Conv2d(2, 2, 1)


def _settings(groups) -> dict[str, tuple[float, float]]:
    return {name: (g["lr"], g["weight_decay"]) for g in groups for name in g["names"]}


def test_longest_key_wins_and_substring_match():
    rules = (
        ParamGroupRule("encoder", lr_mult=1.0, decay_mult=1.0),
        ParamGroupRule("norm", decay_mult=0.0),
        ParamGroupRule("pos_block", decay_mult=0.0),
        ParamGroupRule("decoder", lr_mult=10.0),
        ParamGroupRule("encoder.pos_block.bias", lr_mult=2.0, decay_mult=0.5),
    )
    got = _settings(param_groups(Toy(), lr=1.0, weight_decay=0.1, rules=rules))
    assert got["encoder.pos_block.weight"] == (1.0, 0.0)  # "pos_block" (9) beats "encoder" (7)
    assert got["encoder.pos_block.bias"] == (2.0, 0.05)  # the longest key of all
    assert got["encoder.norm.weight"] == (1.0, 0.1)  # "norm" (4) loses to "encoder" (7): mmcv order
    assert got["encoder.conv.weight"] == (1.0, 0.1)
    assert got["decoder.bn.weight"] == (10.0, 0.1)  # matched rule: norm_decay_mult not applied
    assert got["decoder.cls.bias"] == (10.0, 0.1)


def test_norm_and_bias_multipliers_apply_to_unmatched_only():
    rules = (ParamGroupRule("decoder.cls", lr_mult=10.0),)
    got = _settings(
        param_groups(Toy(), lr=1.0, weight_decay=0.1, rules=rules, norm_decay_mult=0.0, bias_decay_mult=0.5)
    )
    assert got["encoder.norm.weight"] == (1.0, 0.0)
    assert got["encoder.norm.bias"] == (1.0, 0.0)  # norm wins over bias for norm biases
    assert got["decoder.bn.bias"] == (1.0, 0.0)
    assert got["encoder.conv.bias"] == (1.0, 0.05)
    assert got["encoder.conv.weight"] == (1.0, 0.1)
    assert got["decoder.cls.bias"] == (10.0, 0.1)
    total = sum(len(g["params"]) for g in param_groups(Toy(), 1.0, 0.1, rules))
    assert total == len(list(Toy().parameters()))


def test_frozen_parameters_are_left_out():
    model = Toy()
    model.encoder.conv.weight.requires_grad_(False)
    names = {n for g in param_groups(model, 1.0, 0.1) for n in g["names"]}
    assert "encoder.conv.weight" not in names and "encoder.conv.bias" in names


@pytest.mark.parametrize(("step", "expected"), [(0, 1e-6), (750, 0.5 * (1 - 1e-6) + 1e-6), (1500, None)])
def test_poly_with_linear_warmup(step, expected):
    iters, warm = 160000, 1500
    got = poly_lr_factor(step, iters, power=1.0, warmup_iters=warm, warmup_ratio=1e-6)
    poly = 1 - step / iters
    if expected is None:  # warm-up over: plain poly
        assert math.isclose(got, poly)
    else:
        assert math.isclose(got, poly * expected, rel_tol=1e-9)


def test_poly_min_lr_and_end():
    assert poly_lr_factor(100, 100, power=0.9, min_lr_ratio=0.01) == pytest.approx(0.01)
    assert poly_lr_factor(50, 100, power=0.9) == pytest.approx(0.5**0.9)


def test_optimizer_follows_recipe():
    from segcore.train.optim import build_optimizer

    recipe = core_recipes()["synthetic-shapes-cpu"]
    opt = build_optimizer(Toy(), recipe, lr=recipe.lr, weight_decay=recipe.weight_decay)
    assert isinstance(opt, torch.optim.AdamW)
    by_mult = {(g["lr_mult"], g["decay_mult"]) for g in opt.param_groups}
    assert (1.0, 0.0) in by_mult and (1.0, 1.0) in by_mult  # norms without decay
    assert opt.defaults["fused"]  # float parameters on the CPU: the fused kernel, not the per-tensor loop
    with torch.device("meta"):  # no fused kernel there: the default loop
        assert not build_optimizer(Toy(), recipe, lr=recipe.lr, weight_decay=recipe.weight_decay).defaults["fused"]


def test_core_recipes_module_is_torch_free():
    import subprocess
    import sys

    code = "import sys, segcore.plugins.recipes as r; r.core_recipes(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"

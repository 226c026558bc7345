"""Losses against hand computations: ignore handling, averaging, class weights."""

from __future__ import annotations

import math

import pytest
import segcore
import torch
import torch.nn.functional as F
from segcore.models.contracts import DecoderOutput


def _logits_and_target():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4)
    target = torch.randint(0, 3, (2, 4, 4))
    target[0, 0, :] = 255
    return logits, target


def test_ce_average_all_divides_by_every_pixel():
    logits, target = _logits_and_target()
    loss = segcore.build_loss("ce", 3)(DecoderOutput(logits), target)["loss"]
    per_pixel = F.cross_entropy(logits, target, ignore_index=255, reduction="none")
    assert per_pixel[0, 0].abs().sum() == 0
    torch.testing.assert_close(loss, per_pixel.sum() / target.numel())


def test_ce_average_valid_equals_torch_mean():
    logits, target = _logits_and_target()
    loss = segcore.build_loss("ce", 3, average="valid")(DecoderOutput(logits), target)["loss"]
    torch.testing.assert_close(loss, F.cross_entropy(logits, target, ignore_index=255))


def test_ce_class_weight_valid_matches_torch():
    logits, target = _logits_and_target()
    weight = (1.0, 2.0, 0.5)
    loss = segcore.build_loss("ce", 3, class_weight=weight, average="valid")(DecoderOutput(logits), target)["loss"]
    torch.testing.assert_close(loss, F.cross_entropy(logits, target, weight=torch.tensor(weight), ignore_index=255))


def test_ignored_pixels_do_not_change_the_numerator():
    logits, target = _logits_and_target()
    loss_fn = segcore.build_loss("ce", 3)
    changed = logits.clone()
    changed[0, :, 0, :] = 100 * torch.randn_like(changed[0, :, 0, :])
    torch.testing.assert_close(
        loss_fn(DecoderOutput(logits), target)["loss"], loss_fn(DecoderOutput(changed), target)["loss"]
    )


def test_logits_are_resized_to_label_size():
    logits = torch.zeros(1, 2, 2, 2)
    logits[:, 1] = 5.0
    target = torch.ones(1, 8, 8, dtype=torch.long)
    loss = segcore.build_loss("ce", 2)(DecoderOutput(logits), target)["loss"]
    assert math.isclose(float(loss), math.log(1 + math.exp(-5.0)), rel_tol=1e-5)


def test_focal_with_gamma_zero_is_cross_entropy():
    logits, target = _logits_and_target()
    focal = segcore.build_loss("focal", 3, gamma=0.0)(DecoderOutput(logits), target)["loss"]
    torch.testing.assert_close(focal, F.cross_entropy(logits, target, ignore_index=255))


def test_dice_is_zero_for_a_perfect_prediction_and_ignores_ignored_pixels():
    target = torch.randint(0, 3, (1, 8, 8))
    logits = 50 * F.one_hot(target, 3).permute(0, 3, 1, 2).float()
    target_ignored = target.clone()
    target_ignored[0, :2] = 255
    logits[0, :, :2] = torch.randn(3, 2, 8)  # garbage where ignored
    loss = segcore.build_loss("dice", 3, smooth=0.0)(DecoderOutput(logits), target_ignored)["loss"]
    assert float(loss) < 1e-4


@pytest.mark.parametrize("name", ["ce", "focal", "dice"])
def test_losses_backpropagate(name):
    logits, target = _logits_and_target()
    logits.requires_grad_(True)
    segcore.build_loss(name, 3)(DecoderOutput(logits), target)["loss"].backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0

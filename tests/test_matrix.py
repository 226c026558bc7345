"""Every registered encoder x every registered decoder: build, forward, loss, backward, eval at odd sizes.

Parametrised from the registry (like timm's tests/test_models.py): a new component is tested without
editing this file. `pytest tests/test_matrix.py -k mscan-b` selects one encoder.
"""

from __future__ import annotations

import segcore
import torch
from segcore.contracts import check_feature_info

NUM_CLASSES = 5


def test_encoder_feature_info_matches_outputs(encoder_name):
    encoder = segcore.build_encoder(encoder_name).eval()
    d = encoder.size_divisor
    size = (2 * d, 3 * d) if d >= 32 else (64, 96)
    with torch.no_grad():
        check_feature_info(encoder, encoder(torch.randn(1, 3, *size)), size)


def test_pair_trains_and_infers_at_any_size(encoder_name, decoder_name):
    torch.manual_seed(0)
    model = segcore.build_model(encoder_name, decoder_name, NUM_CLASSES)
    model.train()
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    labels = torch.randint(0, NUM_CLASSES, (2, 64, 64))
    labels[0, :8] = 255
    losses = model.compute_loss(images, labels)
    assert torch.isfinite(losses["loss"]), losses
    losses["loss"].backward()
    with_grad = [p for p in model.parameters() if p.grad is not None]
    assert with_grad and any(p.grad.abs().sum() > 0 for p in model.decoder.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad():
        for size in ((80, 96), (45, 70)):
            logits = model(torch.randn(1, 3, *size))
            assert logits.shape == (1, NUM_CLASSES, *size)
            assert torch.isfinite(logits).all()


def test_optimiser_steps_lower_the_loss_on_a_fixed_batch(encoder_name):
    torch.manual_seed(0)
    model = segcore.build_model(encoder_name, "linear", NUM_CLASSES, decoder_options={"dropout": 0.0})
    model.eval()  # fixed BN statistics: the same batch must score better after a few steps
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    labels = torch.full((2, 64, 64), 3)  # learnable in a few steps whatever the features
    labels[:, :, :16] = 1
    optimizer = torch.optim.AdamW(model.decoder.parameters(), lr=1e-2)
    first = None
    for _ in range(5):
        optimizer.zero_grad()
        loss = model.compute_loss(images, labels)["loss"]
        first = float(loss.detach()) if first is None else first
        loss.backward()
        optimizer.step()
    assert float(model.compute_loss(images, labels)["loss"]) < first


def _assert_same_outputs(model, loaded):
    x = torch.randn(1, 3, 64, 64)
    with torch.random.fork_rng():  # decoders that draw random numbers (NMF) draw the same ones
        torch.manual_seed(1)
        a = model(x)
        torch.manual_seed(1)
        b = loaded(x)
    assert torch.equal(a, b)


def test_encoder_round_trip(tmp_path, encoder_name):
    model = segcore.build_model(encoder_name, "linear", NUM_CLASSES).eval()
    model.save_pretrained(tmp_path)
    _assert_same_outputs(model, segcore.SegModel.from_pretrained(tmp_path))


def test_decoder_round_trip(tmp_path, decoder_name):
    model = segcore.build_model("timm:resnet18", decoder_name, NUM_CLASSES).eval()
    model.save_pretrained(tmp_path)
    _assert_same_outputs(model, segcore.SegModel.from_pretrained(tmp_path))

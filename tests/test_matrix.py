"""Every registered encoder x every registered decoder: build, forward, loss, backward, eval at odd sizes.

Parametrised from the registry (like timm's tests/test_models.py): a new component is tested without
editing this file. `pytest tests/test_matrix.py -k mscan-b` selects one encoder. Heavy encoders run at a
tiny size given by their family's option overrides (conftest.TINY_ENCODER_OPTIONS); `-m slow` runs every
pair at the registered sizes.
"""

from __future__ import annotations

import copy

import pytest
import segcore
import torch
from segcore.models.adapters import SelectLevels
from segcore.models.contracts import check_feature_info
from segcore.plugins.registry import get_spec

NUM_CLASSES = 5


def test_encoder_feature_info_matches_outputs(encoder_name, encoder_options):
    encoder = segcore.build_encoder(encoder_name, **encoder_options).eval()
    d = max(encoder.size_divisor, *(i.stride for i in encoder.feature_info))  # LeViT's last map is at stride 64
    size = (2 * d, 3 * d) if d >= 32 else (64, 96)
    with torch.no_grad():
        check_feature_info(encoder, encoder(torch.randn(1, 3, *size)), size)


def _check_levels(model, decoder_name):
    """The decoder got exactly the levels it declares, through the cheapest adapter that gives them."""
    spec = get_spec("decoders", decoder_name)
    declared = getattr(type(model.decoder), "in_strides", None)
    assert declared in (None, spec.in_strides), f"class declares {declared}, spec {spec.in_strides}"
    encoder_strides = [i.stride for i in model.encoder.feature_info]
    if spec.in_strides is None or tuple(encoder_strides) == spec.in_strides:
        assert model.adapter is None
        return
    assert tuple(i.stride for i in model.decoder_in_features) == spec.in_strides
    if set(spec.in_strides) <= set(encoder_strides):
        assert isinstance(model.adapter, SelectLevels) and not list(model.adapter.parameters())


def _train_step_and_eval(model):
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


@pytest.fixture(scope="module")
def _last_encoder():
    return {}


@pytest.fixture
def reuse_encoder(monkeypatch, _last_encoder):
    """Build each encoder once for the decoders that follow it (pytest varies the decoder fastest).

    ``SegModel`` builds its encoder through ``segcore.models.model.build_encoder``: this returns a deep copy of the
    last encoder built with the same arguments (seeded, so the weights do not depend on which tests run).
    """
    import segcore.models.model

    build = segcore.models.model.build_encoder

    def cached(name, pretrained=False, **options):
        key = (name, pretrained, repr(sorted(options.items())))
        if _last_encoder.get("key") != key:
            _last_encoder.clear()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                _last_encoder.update(key=key, encoder=build(name, pretrained=pretrained, **options))
        return copy.deepcopy(_last_encoder["encoder"])

    monkeypatch.setattr(segcore.models.model, "build_encoder", cached)


def test_pair_trains_and_infers_at_any_size(
    encoder_name, encoder_options, decoder_name, decoder_options, reuse_encoder
):
    torch.manual_seed(0)
    model = segcore.build_model(
        encoder_name, decoder_name, NUM_CLASSES, encoder_options=encoder_options, decoder_options=decoder_options
    )
    _check_levels(model, decoder_name)
    _train_step_and_eval(model)


@pytest.mark.slow
def test_pair_trains_and_infers_at_registered_size(encoder_name, encoder_options, decoder_name):
    if not encoder_options:
        pytest.skip("the default suite already runs this pair at its registered size")
    torch.manual_seed(0)
    model = segcore.build_model(encoder_name, decoder_name, NUM_CLASSES)
    _check_levels(model, decoder_name)
    _train_step_and_eval(model)


def test_optimiser_steps_lower_the_loss_on_a_fixed_batch(encoder_name, encoder_options):
    torch.manual_seed(0)
    model = segcore.build_model(
        encoder_name, "linear", NUM_CLASSES, encoder_options=encoder_options, decoder_options={"dropout": 0.0}
    )
    model.eval()  # fixed BN statistics: the same batch must score better after a few steps
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    labels = torch.full((2, 64, 64), 3)  # learnable in a few steps whatever the features
    labels[:, :, :16] = 1
    # 1e-3: MaxViT's large features make 1e-2 oscillate on this batch.
    optimizer = torch.optim.AdamW(model.decoder.parameters(), lr=1e-3)
    first = None
    for _ in range(5):
        optimizer.zero_grad()
        loss = model.compute_loss(images, labels)["loss"]
        first = float(loss.detach()) if first is None else first
        loss.backward()
        optimizer.step()
    assert float(model.compute_loss(images, labels)["loss"].detach()) < first


def _assert_same_outputs(model, loaded):
    x = torch.randn(1, 3, 64, 64)
    with torch.random.fork_rng():  # decoders that draw random numbers (NMF) draw the same ones
        torch.manual_seed(1)
        a = model(x)
        torch.manual_seed(1)
        b = loaded(x)
    assert torch.equal(a, b)


def test_encoder_round_trip(tmp_path, encoder_name, encoder_options):
    model = segcore.build_model(encoder_name, "linear", NUM_CLASSES, encoder_options=encoder_options).eval()
    model.save_pretrained(tmp_path)
    _assert_same_outputs(model, segcore.SegModel.from_pretrained(tmp_path))


def test_decoder_round_trip(tmp_path, decoder_name):
    model = segcore.build_model("timm:resnet18", decoder_name, NUM_CLASSES).eval()
    model.save_pretrained(tmp_path)
    _assert_same_outputs(model, segcore.SegModel.from_pretrained(tmp_path))


# The pairs of issue #14: a 2-level Shrunk ViT (strides 16, 32) meeting a decoder that reads 4 levels.
_SHRUNK_TINY = {"embed_dim": 64, "num_heads": 2, "depth": 3, "out_indices": (0, 2), "shrink_idx": 1}


@pytest.mark.parametrize(
    ("encoder", "decoder", "decoder_options"),
    [
        ("vit-b16-shrunk", "ham", {"nmf_seed": 0, "dropout_ratio": 0.0, "channels": 64, "ham_channels": 64}),
        ("vit-l16-shrunk", "segdeformer", {"dropout": 0.0, "channels": 32}),
    ],
    ids=["vit-b16-shrunk-ham", "vit-l16-shrunk-segdeformer"],
)
def test_shrunk_vit_meets_a_four_level_decoder_and_trains(encoder, decoder, decoder_options):
    torch.manual_seed(0)
    model = segcore.build_model(
        encoder, decoder, NUM_CLASSES, encoder_options=_SHRUNK_TINY, decoder_options=decoder_options
    )
    # strides 4, 8 and 16 from the 1/16 map (deconvolutions, identity), 32 is the encoder's own 1/32 map
    assert model.adapter.sources == [0, 0, 0, 1]
    assert [(i.channels, i.stride) for i in model.decoder_in_features] == [(16, 4), (32, 8), (64, 16), (64, 32)]
    model.eval()  # fixed BN statistics: the same batch must score better after a few steps
    images = torch.randint(0, 256, (2, 3, 64, 96), dtype=torch.uint8)
    labels = torch.full((2, 64, 96), 3)
    labels[:, :, :24] = 1
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = model.compute_loss(images, labels)["loss"]
        losses.append(float(loss.detach()))
        loss.backward()
        # every parameter of the encoder, and of the adapter levels the decoder reads, learns
        assert all(p.grad is not None for p in model.encoder.parameters())
        optimizer.step()
    assert float(model.compute_loss(images, labels)["loss"].detach()) < losses[0], losses
    with torch.no_grad():
        assert model(torch.randn(1, 3, 45, 70)).shape == (1, NUM_CLASSES, 45, 70)

"""Model assembly with core components: any size in, logits at that size out; wiring errors in words."""

from __future__ import annotations

import pytest
import segcore
import torch
from segcore.errors import SegcoreError, WiringError
from segcore.models.adapters import SimpleFeaturePyramid
from segcore.models.contracts import Decoder, DecoderOutput, check_feature_info
from torch import nn

TIMM_ENCODERS = ["timm:resnet18", "timm:pvt_v2_b0", "timm:vit_tiny_patch16_224"]  # CNN, hierarchical, plain ViT
CORE_DECODERS = ["linear", "mlp", "upernet"]


@pytest.mark.parametrize("name", TIMM_ENCODERS, ids=TIMM_ENCODERS)
def test_feature_info_matches_outputs(name):
    encoder = segcore.build_encoder(name).eval()
    stride = max(i.stride for i in encoder.feature_info)  # maps are exactly H / s at multiples of every stride
    size = (2 * stride, 3 * stride)
    with torch.no_grad():
        check_feature_info(encoder, encoder(torch.randn(1, 3, *size)), size)


@pytest.mark.parametrize("decoder", CORE_DECODERS, ids=CORE_DECODERS)
@pytest.mark.parametrize("encoder", TIMM_ENCODERS, ids=TIMM_ENCODERS)
def test_core_pairs_forward_loss_backward_at_odd_size(encoder, decoder):
    torch.manual_seed(0)
    model = segcore.build_model(encoder, decoder, num_classes=4)
    images = torch.randint(0, 256, (2, 3, 80, 96), dtype=torch.uint8)
    labels = torch.randint(0, 4, (2, 80, 96))
    labels[:, :5] = 255
    losses = model.compute_loss(images, labels)
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()
    grads = [p.grad for p in model.decoder.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    model.eval()
    for size in ((80, 96), (61, 47)):
        logits = model(torch.randn(1, 3, *size))
        assert logits.shape == (1, 4, *size)
        assert torch.isfinite(logits).all()
    pred = model.predict(images)
    assert pred.shape == (2, 80, 96) and pred.dtype == torch.long and int(pred.max()) < 4


def test_plain_encoder_gets_a_pyramid_only_for_pyramid_decoders():
    linear = segcore.build_model("timm:vit_tiny_patch16_224", "linear", 3)
    upernet = segcore.build_model("timm:vit_tiny_patch16_224", "upernet", 3)
    assert linear.adapter is None
    assert isinstance(upernet.adapter, SimpleFeaturePyramid)
    assert [i.stride for i in upernet.decoder_in_features] == [4, 8, 16, 32]


def test_padding_does_not_change_aligned_inputs():
    model = segcore.build_model("timm:resnet18", "mlp", 3).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        direct = nn.functional.interpolate(
            model.forward_output(x).logits, size=(64, 64), mode="bilinear", align_corners=False
        )
        torch.testing.assert_close(model(x), direct)


def test_uint8_images_are_normalised_with_config_mean_std():
    model = segcore.build_model("timm:resnet18", "linear", 3).eval()
    images = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    mean = torch.tensor(model.config.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.config.std).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(images), model((images.float() - mean) / std))


class _BrokenDecoder(Decoder):
    def __init__(self, in_features, num_classes):
        super().__init__()
        self.proj = nn.Conv2d(999, num_classes, 1)  # wrong input width on purpose

    def forward(self, features, image_size):
        return DecoderOutput(self.proj(features[-1]))


def test_wiring_mismatch_is_reported_at_build_time_in_words():
    import types

    from segcore.plugins import registry

    plugin = types.ModuleType("broken_plugin")

    @segcore.hookimpl
    def segcore_decoders():
        return {"broken": segcore.ComponentSpec(factory=_BrokenDecoder, description="wrong widths")}

    plugin.segcore_decoders = segcore_decoders
    registry.register_plugin(plugin, "broken-plugin")
    try:
        with pytest.raises(WiringError) as err:
            segcore.build_model("timm:resnet18", "broken", 3)
        assert "decoder 'broken' cannot run on the outputs of encoder 'timm:resnet18'" in str(err.value)
    finally:
        registry.unregister_plugin("broken-plugin")


def test_bad_labels_and_images_are_refused_with_the_reason():
    model = segcore.build_model("timm:resnet18", "linear", 3)
    images = torch.randn(1, 3, 64, 64)
    labels = torch.zeros(1, 64, 64, dtype=torch.long)
    labels[0, 0, 0] = 7
    with pytest.raises(SegcoreError, match=r"values \[7\] outside 0..2"):
        model.compute_loss(images, labels)
    with pytest.raises(SegcoreError, match="do not match images"):
        model.compute_loss(images, labels[:, :32])
    with pytest.raises(SegcoreError, match=r"\[B, 3, H, W\]"):
        model(torch.randn(3, 64, 64))


def test_config_round_trips_through_dict():
    model = segcore.build_model(
        "timm:resnet18", "upernet", 5, decoder_options={"channels": 32}, class_names=list("abcde")
    )
    data = model.config.to_dict()
    again = segcore.SegModelConfig.from_dict(data)
    assert again == model.config
    with pytest.raises(SegcoreError, match="unknown keys"):
        segcore.SegModelConfig.from_dict({**data, "bogus": 1})

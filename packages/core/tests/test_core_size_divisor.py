"""Input sizes (DESIGN.md "Input sizes"): SegModel pads only what its encoder declares, decoders resize maps.

``SegModel.size_divisor`` is ``Encoder.size_divisor``, no longer the lcm of the decoder's input strides: a CNN
runs unpadded at any size (its strided convs round the map sizes), a plain ViT is padded bottom/right to its
patch size, and the logits are resized to the unpadded input size. Decoders and the ViT adapter meet maps of
any size (e.g. 3x2 after the adapter's max-pooling of a 7x5 grid) and resize them.
"""

from __future__ import annotations

import pytest
import segcore
import torch
import torch.nn.functional as F
from segcore.encoders import ANY_SIZE_MODULES, _size_divisor

SIZE = (83, 117)


def _images(size: tuple[int, int] = SIZE, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(0))


def _labels(size: tuple[int, int] = SIZE, num_classes: int = 4) -> torch.Tensor:
    labels = torch.randint(0, num_classes, (2, *size), generator=torch.Generator().manual_seed(1))
    labels[:, :7] = 255
    return labels


def test_size_divisor_is_the_encoders_not_the_lcm_of_the_decoder_strides():
    cnn = segcore.build_model("timm:resnet18", "mlp", 3)
    vit = segcore.build_model("timm:vit_tiny_patch16_224", "upernet", 3, decoder_options={"channels": 32})
    # The decoder inputs are at strides 4..32 in both (the ViT through the adapter): their lcm would be 32.
    assert [i.stride for i in cnn.decoder_in_features] == [i.stride for i in vit.decoder_in_features] == [4, 8, 16, 32]
    assert cnn.size_divisor == cnn.encoder.size_divisor == 1
    assert vit.size_divisor == vit.encoder.size_divisor == 16


@pytest.mark.parametrize(
    ("name", "strides", "divisor"),
    [
        ("resnet50", [4, 8, 16, 32], 1),  # a CNN: any size
        ("convnext_tiny.fb_in1k", [4, 8, 16, 32], 1),  # a pretrained tag resolves to its architecture
        ("vit_base_patch16_224", [16, 16, 16], 16),  # a plain ViT: its patch size
        ("swin_tiny_patch4_window7_224", [4, 8, 16, 32], 32),  # windows: unsure, the conservative largest stride
        ("hrnet_w18_small", [4, 8, 16, 32], 32),  # branches that must line up: fails at odd sizes
    ],
    ids=["resnet", "tag", "vit", "swin", "hrnet"],
)
def test_timm_size_divisor_per_kind(name, strides, divisor):
    assert _size_divisor(name, strides) == divisor


# One small representative per module of ANY_SIZE_MODULES (vgg builds a large head: slow only).
REPRESENTATIVES = {
    "byobnet": "repvgg_a0",
    "convnext": "convnext_atto",
    "cspnet": "cs3darknet_focus_s",
    "densenet": "densenet121",
    "dpn": "dpn48b",
    "efficientnet": "efficientnet_b0",
    "ghostnet": "ghostnet_100",
    "mobilenetv3": "mobilenetv3_small_050",
    "pvt_v2": "pvt_v2_b0",
    "regnet": "regnetx_002",
    "res2net": "res2net50_14w_8s",
    "resnest": "resnest14d",
    "resnet": "resnet18",
    "rexnet": "rexnet_100",
    "vgg": pytest.param("vgg11", marks=pytest.mark.slow),
    "xception_aligned": "xception41p",
}


def test_every_any_size_module_has_a_representative():
    assert sorted(REPRESENTATIVES) == sorted(ANY_SIZE_MODULES)


@pytest.mark.parametrize("name", list(REPRESENTATIVES.values()), ids=list(REPRESENTATIVES))
def test_any_size_timm_modules_run_unpadded(name):
    """The modules declared size divisor 1 run at 83x117 and round each map to within one pixel of H / s."""
    from timm.models import is_model_in_modules

    encoder = segcore.build_encoder(f"timm:{name}").eval()
    assert encoder.size_divisor == 1 and is_model_in_modules(name, ANY_SIZE_MODULES)
    with torch.no_grad():
        feats = encoder(_images(batch=1))
    for feat, info in zip(feats, encoder.feature_info):
        assert abs(feat.shape[-2] - SIZE[0] / info.stride) < 1 and abs(feat.shape[-1] - SIZE[1] / info.stride) < 1


@pytest.mark.parametrize("decoder", ["linear", "mlp", "upernet"])
def test_cnn_runs_unpadded_and_resizes_the_logits(decoder):
    """ResNet at 83x117, batch 2: no padding; maps of the conv arithmetic ((n - 1) // 2 + 1 per stride-2 step:
    21x30, 11x15, 6x8, 3x4); model(x) = bilinear(decoder(encoder(x)), input size); the loss compares logits
    upsampled to the unpadded labels."""
    torch.manual_seed(0)
    model = segcore.build_model("timm:resnet18", decoder, 4, decoder_options={"channels": 32}).eval()
    x, labels = _images(), _labels()
    with torch.no_grad():
        feats = model.encoder(x)
        out = model.decoder(feats, SIZE)
        got = model(x)
        loss = model.compute_loss(x, labels)["loss"]
    assert [tuple(f.shape[-2:]) for f in feats] == [(21, 30), (11, 15), (6, 8), (3, 4)]
    torch.testing.assert_close(got, F.interpolate(out.logits, size=SIZE, mode="bilinear", align_corners=False))
    torch.testing.assert_close(loss, model.loss_fn(out, labels)["loss"])


@pytest.mark.parametrize("decoder", ["linear", "mlp", "upernet"])
def test_plain_vit_pads_bottom_right_to_its_patch_and_decoders_resize_adapter_maps(decoder):
    """timm ViT at 100x76: padded to 112x80 (16, not 32), grid 7x5; the adapter gives 28x20, 14x10, 7x5 and
    3x2 (max-pooling floors), which do not line up by stride; the decoders resize them. The logits are resized
    to 100x76; the loss pads the labels with ignore_index to 112x80, like the image."""
    torch.manual_seed(0)
    model = segcore.build_model("timm:vit_tiny_patch16_224", decoder, 4, decoder_options={"channels": 32}).eval()
    size = (100, 76)
    x, labels = _images(size), _labels(size)
    assert model._padding(*size) == (12, 4)
    padded = F.pad(x, (0, 4, 0, 12))
    with torch.no_grad():
        feats = model.encoder(padded)
        maps = model.adapter(feats) if model.adapter is not None else feats
        out = model.decoder(maps, (112, 80))
        got = model(x)
        loss = model.compute_loss(x, labels)["loss"]
    assert {tuple(f.shape[-2:]) for f in feats} == {(7, 5)}
    if model.adapter is not None:
        assert [tuple(m.shape[-2:]) for m in maps] == [(28, 20), (14, 10), (7, 5), (3, 2)]
    torch.testing.assert_close(got, F.interpolate(out.logits, size=size, mode="bilinear", align_corners=False))
    expected = model.loss_fn(out, F.pad(labels, (0, 4, 0, 12), value=255))["loss"]
    torch.testing.assert_close(loss, expected)

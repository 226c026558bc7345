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
    ("name", "divisor"),
    [
        ("test_resnet", 1),  # CNNs with "same" padding run at any size
        ("test_efficientnet", 1),
        ("test_byobnet", 1),
        ("test_vit", 16),  # a plain ViT: its patch size
        ("test_convnext", 32),  # patchify stem (k4 s4, no padding) drops the last rows: conservative
        ("test_maxvit", 160),  # 5-token windows and grids at stride 32 tile multiples of 160 only
        ("hrnet_w18_small", 32),  # branches that must line up fail at odd sizes: conservative
    ],
    ids=["resnet", "efficientnet", "byobnet", "vit", "convnext", "maxvit", "hrnet"],
)
def test_timm_size_divisor_is_found_out_per_model(name, divisor):
    assert segcore.build_encoder(f"timm:{name}").size_divisor == divisor


ANY_SIZE = ["resnet18", "efficientnet_b0", "mobilenetv3_small_050", "regnetx_002", "pvt_v2_b0", "resnest14d"]


@pytest.mark.parametrize("name", ANY_SIZE, ids=ANY_SIZE)
def test_any_size_timm_models_cover_every_pixel_unpadded(name):
    """Size divisor 1: at 83x117 each map is ``ceil(H / s) x ceil(W / s)``, as MiT's and MSCAN's convs give."""
    encoder = segcore.build_encoder(f"timm:{name}").eval()
    assert encoder.size_divisor == 1
    with torch.no_grad():
        feats = encoder(_images(batch=1))
    sizes = [(-(-SIZE[0] // i.stride), -(-SIZE[1] // i.stride)) for i in encoder.feature_info]
    assert [tuple(f.shape[-2:]) for f in feats] == sizes


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
    4x3 (max-pooling with ceil_mode keeps the odd grid's last row), which do not line up by stride; the decoders
    resize them. The logits are resized
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
        assert [tuple(m.shape[-2:]) for m in maps] == [(28, 20), (14, 10), (7, 5), (4, 3)]
    torch.testing.assert_close(got, F.interpolate(out.logits, size=size, mode="bilinear", align_corners=False))
    expected = model.loss_fn(out, F.pad(labels, (0, 4, 0, 12), value=255))["loss"]
    torch.testing.assert_close(loss, expected)

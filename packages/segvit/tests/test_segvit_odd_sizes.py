"""SegViT (official fixture weights) at input sizes that are not multiples of 16 or 32, batch 2.

Official semantics (mmseg 0.24, specs/segvit.md): the ViT's patch embedding zero-pads the image at the
bottom/right to a multiple of 16 only ("corner" padding, §2.2 step 1; the Shrunk ViT has the same patch
embedding, §4.1); the head's semantic map is computed at the configured ``img_size`` (mask logits upsampled
to ``img_size x img_size``, sigmoid, mixed with the class probabilities, §3.5 and quirk 17); the segmentor
then resizes that map bilinearly (align_corners=False) to the image it was given, i.e. the unpadded input
(§1, §6: ``encode_decode``), a resize and not a crop. Upstream's head only reshapes square token grids
(quirk 10), so the official code cannot run at 100x76 at all; what is checked is the padding, the grid, the
size of the semantic map and the resize, with the fixture's weights (verified against the official outputs at
128x128 and 160x160 in ``test_segvit_parity.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import segcore
import torch
import torch.nn.functional as F
from segcore_segvit.loss import atm_loss

SHARED = Path(__file__).resolve().parents[3].parent / "shared"
FIXTURES = SHARED / "fixtures" / "segvit"
SIZES = [(100, 76), (83, 117)]
IMG_SIZE = 128  # the fixtures' configured img_size (case.json)


def _load(case: str) -> tuple[segcore.SegModel, torch.Tensor]:
    folder = FIXTURES / case
    if not folder.exists():
        pytest.skip("shared/fixtures not found (segvit parity fixtures)")
    from safetensors.torch import load_file

    cfg = json.loads((folder / "case.json").read_text())
    model = segcore.convert_checkpoint(folder / "official.safetensors", format="mmseg", official_config=cfg["config"])
    return model.eval(), load_file(str(folder / "io.safetensors"))["image"]


@pytest.fixture(scope="module")
def atm_case() -> tuple[segcore.SegModel, torch.Tensor]:
    return _load("atm_tiny")


@pytest.fixture(scope="module")
def shrunk_case() -> tuple[segcore.SegModel, torch.Tensor]:
    return _load("shrunk_tiny")


def _batch(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Two different crops of the fixture's (normalised) 128x128 image: real image statistics, batch 2."""
    h, w = size
    return torch.cat([image[..., :h, :w], image[..., -h:, -w:]])


def _corner_pad(x: torch.Tensor) -> torch.Tensor:
    """mmseg's "corner" padding: zeros at the bottom/right up to the next multiple of 16 (spec §2.2 step 1)."""
    h, w = x.shape[-2:]
    return F.pad(x, (0, -w % 16, 0, -h % 16))


@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_atm_pads_to_16_and_resizes_the_img_size_map_to_the_input(atm_case, size) -> None:
    """ViT + ATM: pad bottom/right to 16 only, semantic map at ``img_size``, resized (not cropped) to the input.

    Checks: the padding is ``(-H) % 16`` rows and ``(-W) % 16`` columns (100x76 -> 112x80, not 128x96); the
    three ViT maps are on the ``ceil(H/16) x ceil(W/16)`` grid (7x5); the decoder's semantic map is
    ``img_size x img_size`` whatever the input (§3.5) and equals the official rule recomputed from its aux
    outputs (upsample the last cumulative mask logits to ``img_size``, sigmoid, mix with the softmax class
    probabilities without the no-object column); and ``model(x)`` is that map resized bilinearly
    (align_corners=False) to ``(H, W)``.
    """
    model, image = atm_case
    x = _batch(image, size)
    h, w = size
    assert model.size_divisor == 16 and model._padding(h, w) == (-h % 16, -w % 16)
    padded = _corner_pad(x)
    with torch.no_grad():
        feats = model.encoder(padded)
        out = model.decoder(feats, tuple(padded.shape[-2:]))
        got = model(x)
    grid = (-(-h // 16), -(-w // 16))
    assert [tuple(f.shape[-2:]) for f in feats] == [grid] * 3
    assert out.logits.shape == (2, 21, IMG_SIZE, IMG_SIZE)
    masks = F.interpolate(out.aux["mask_logits"][-1], size=(IMG_SIZE,) * 2, mode="bilinear", align_corners=False)
    probs = out.aux["class_logits"][-1].softmax(dim=-1)[..., :-1]
    rule = torch.einsum("bqc,bqhw->bchw", probs, masks.sigmoid())
    torch.testing.assert_close(out.logits, rule, atol=1e-5, rtol=1e-5)
    expected = F.interpolate(out.logits, size=size, mode="bilinear", align_corners=False)
    diff = (got - expected).abs().max().item()
    print(f"vit + atm {size}: model vs pad16 -> components -> resize max abs diff {diff:.1e}")
    assert got.shape == (2, 21, *size) and diff < 1e-5


@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_atm_resize_is_not_a_crop(atm_case, size) -> None:
    """Sensitivity: cropping the padded-size map (the former rule) gives another output, so the test above can
    fail; the resize of the whole map is what upstream's ``encode_decode`` does."""
    model, image = atm_case
    x = _batch(image, size)
    padded = _corner_pad(x)
    with torch.no_grad():
        semseg = model.decoder(model.encoder(padded), tuple(padded.shape[-2:])).logits
        crop = F.interpolate(semseg, size=padded.shape[-2:], mode="bilinear", align_corners=False)
        diff = (model(x) - crop[..., : size[0], : size[1]]).abs().max().item()
    print(f"vit + atm {size}: resize vs crop max abs diff {diff:.3f}")
    assert diff > 1e-2


@pytest.mark.parametrize("case", ["atm_tiny", "shrunk_tiny"], ids=["atm", "atm-shrunk"])
def test_square_size_on_the_stored_grid_is_the_official_case(case) -> None:
    """120x120: the official code runs here (pad 8 -> 128x128, the stored 8x8 grid, square).

    Checks: the map is computed at ``img_size`` (128) and resized to 120x120, for the plain and the Shrunk
    head (spec §3.5, §4.2: pixel queries used as stored).
    """
    model, image = _load(case)
    x = _batch(image, (120, 120))
    with torch.no_grad():
        feats = model.encoder(F.pad(x, (0, 8, 0, 8)))
        semseg = model.decoder(feats, (128, 128)).logits
        got = model(x)
    assert semseg.shape[-2:] == (IMG_SIZE, IMG_SIZE)
    expected = F.interpolate(semseg, size=(120, 120), mode="bilinear", align_corners=False)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_shrunk_pads_to_16_only_and_halves_odd_grids_upwards(shrunk_case) -> None:
    """Shrunk ViT + ``atm-shrunk`` at 100x76: padded to 112x80 (16, like the plain ViT), not to 32.

    Checks: the 7x5 grid of the stride-16 map and the 4x3 grid after the QD (top-left token of every 2x2
    block, ``x[::2, ::2]``: ``ceil(h / 2)``, spec §4.1); ``model(x)`` is the decoder output on the padded
    image resized to 100x76. Away from the stored grid the pixel queries are resized (our extension, see the
    README), so there the map is at the padded input size.
    """
    model, image = shrunk_case
    x = _batch(image, SIZES[0])
    assert model.size_divisor == 16 and model._padding(*SIZES[0]) == (12, 4)
    padded = _corner_pad(x)
    with torch.no_grad():
        feats = model.encoder(padded)
        out = model.decoder(feats, (112, 80))
        got = model(x)
    assert [tuple(f.shape[-2:]) for f in feats] == [(7, 5), (4, 3)]
    assert out.logits.shape[-2:] == (112, 80)
    expected = F.interpolate(out.logits, size=SIZES[0], mode="bilinear", align_corners=False)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_loss_pads_labels_with_ignore_only_to_16(atm_case) -> None:
    """Training semantics: image and labels padded together to 16 (image 0, label 255), as mmseg's train-time
    Pad; the ATM loss resizes the mask logits to the (padded) label size (spec §5)."""
    model, image = atm_case
    size = SIZES[0]
    x = _batch(image, size)
    labels = torch.randint(0, 21, (2, *size), generator=torch.Generator().manual_seed(0))
    labels[:, :10] = 255
    with torch.no_grad():
        terms = model.compute_loss(x, labels)
        out = model.decoder(model.encoder(_corner_pad(x)), (112, 80))
    expected = atm_loss(21)(out, F.pad(labels, (0, 4, 0, 12), value=255))
    assert set(terms) == set(expected)
    for name, value in expected.items():
        assert terms[name].item() == pytest.approx(value.item(), rel=1e-5), name

"""MSCAN-T + LightHamHead (official SegNeXt-T fixture weights) at sizes that are not multiples of 32, batch 2.

The official model runs unpadded at any size (spec §1, §2.3, §3.3): MSCAN's 3x3 stride-2 convs round the map
sizes, the head resizes the stride-16 and stride-32 maps to the stride-8 one, and the segmentor resizes the
logits to the input. ``ResizeToMultiple(32)`` of the ADE20K/COCO-Stuff test pipeline (spec §5.2) is a resize
of the image done by the eval protocol before the model, not a padding inside it, and Cityscapes has none.
The official code cannot run here, so these tests pin that behaviour down from the spec; the weights are the
fixture's (verified against the official outputs at 256x256 in ``test_segnext_parity.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import segcore
import torch
import torch.nn.functional as F

SHARED = Path(__file__).resolve().parents[3].parent / "shared"
FIXTURE = SHARED / "fixtures" / "segnext" / "mscan_t_ham"
SIZES = [(100, 76), (83, 117)]
SEED = 123  # NMF draws its bases from the global RNG (spec §7): the same seed before every compared forward


@pytest.fixture(scope="module")
def case() -> tuple[segcore.SegModel, torch.Tensor]:
    if not (FIXTURE / "case.json").is_file():
        pytest.skip("shared/fixtures not found (segnext/mscan_t_ham)")
    from safetensors.torch import load_file

    config = json.loads((FIXTURE / "case.json").read_text())["config"]
    model = segcore.convert_checkpoint(FIXTURE / "official.safetensors", format="mmseg", official_config=config)
    return model.eval(), load_file(str(FIXTURE / "io.safetensors"))["image"]


def _batch(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Two different crops of the fixture's (normalised) image: real image statistics, batch 2."""
    h, w = size
    return torch.cat([image[..., :h, :w], image[..., -h:, -w:]])


def _mscan_sizes(n: int) -> list[int]:
    # Every MSCAN downsampling is a 3x3 conv, stride 2, padding 1: (n + 2 - 3) // 2 + 1 (spec §2.2); the stem
    # has two of them (stride 4), stages 2-4 one each.
    sizes = []
    for convs in (2, 1, 1, 1):
        for _ in range(convs):
            n = (n + 2 - 3) // 2 + 1
        sizes.append(n)
    return sizes


@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_no_padding_output_equals_the_components_on_the_unpadded_image(case, size) -> None:
    """No padding: ``model(x)`` = bilinear(decoder(encoder(x)), input size), with the official map sizes.

    Checks: the model pads nothing (size divisor 1); the four MSCAN maps have the sizes the strided convs give
    (100x76 -> 25x19, 13x10, 7x5, 4x3), not those of a padded or resized input; the logits are at the stride-8
    map's size (spec §3.3 step 7); and the model output is exactly encoder -> decoder -> bilinear resize
    (align_corners=False) to the input size on the unpadded image (spec §1), with the same NMF seed.
    """
    model, image = case
    x = _batch(image, size)
    assert model.size_divisor == 1 and model._padding(*size) == (0, 0)
    with torch.no_grad():
        feats = model.encoder(x)
        torch.manual_seed(SEED)
        logits = model.decoder(feats, size).logits
        expected = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        torch.manual_seed(SEED)
        got = model(x)
    sizes = list(zip(_mscan_sizes(size[0]), _mscan_sizes(size[1])))
    assert [tuple(f.shape[-2:]) for f in feats] == sizes
    assert logits.shape == (2, 150, *sizes[1])
    diff = (got - expected).abs().max().item()
    print(f"mscan-t + ham {size}: model vs components max abs diff {diff:.1e}")
    assert got.shape == (2, 150, *size) and diff < 1e-5


@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_padding_to_32_would_change_the_logits(case, size) -> None:
    """Sensitivity: the former padding to 32 (then a crop) gives other logits, so the test above can fail."""
    model, image = case
    x = _batch(image, size)
    h, w = size
    padded = F.pad(x, (0, -w % 32, 0, -h % 32))
    with torch.no_grad():
        torch.manual_seed(SEED)
        old = model.forward_output(padded).logits
        old = F.interpolate(old, size=padded.shape[-2:], mode="bilinear", align_corners=False)[..., :h, :w]
        torch.manual_seed(SEED)
        diff = (model(x) - old).abs().max().item()
    print(f"mscan-t + ham {size}: unpadded vs padded-to-32 max abs diff {diff:.3f}")
    assert diff > 1e-2


def test_loss_at_odd_size_resizes_the_logits_to_the_labels(case) -> None:
    """Training semantics (spec §5.1): labels at the input size, logits upsampled to them inside the loss.

    ``compute_loss`` pads nothing for MSCAN; the loss is the cross entropy of the bilinearly upsampled
    stride-8 logits against the 100x76 labels, summed and divided by all pixels, ignored ones included.
    """
    model, image = case
    size = SIZES[0]
    x = _batch(image, size)
    labels = torch.randint(0, 150, (2, *size), generator=torch.Generator().manual_seed(0))
    labels[:, :10] = 255
    with torch.no_grad():
        torch.manual_seed(SEED)
        loss = model.compute_loss(x, labels)["loss"]
        torch.manual_seed(SEED)
        logits = model.decoder(model.encoder(x), size).logits
    up = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    expected = F.cross_entropy(up, labels, ignore_index=255, reduction="sum") / labels.numel()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)

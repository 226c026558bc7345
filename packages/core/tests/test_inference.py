"""Whole / sliding-window / multi-scale + flip inference."""

from __future__ import annotations

import pytest
import segcore
import torch
from segcore.evaluation.inference import EvalProtocol, infer_logits, slide_logits
from torch import nn


class PixelModel(nn.Module):
    """A per-pixel model (1x1 conv): its logits do not depend on the window, so slide must equal whole."""

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, k, 1)

    def forward(self, x):
        return self.conv(x.float())


@pytest.mark.parametrize(
    ("size", "crop", "stride"),
    [((37, 50), (16, 16), (10, 12)), ((16, 16), (16, 16), (8, 8)), ((10, 12), (16, 16), (8, 8))],
)
def test_slide_equals_whole_for_pixelwise_model(size, crop, stride):
    model = PixelModel()
    x = torch.rand(2, 3, *size)
    assert torch.allclose(slide_logits(model, x, crop, stride, 3), model(x), atol=1e-6)


def test_slide_windows_follow_mmseg():
    seen = []

    class Recorder(nn.Module):
        def forward(self, x):
            seen.append(tuple(x.shape[-2:]))
            return torch.zeros(x.shape[0], 2, *x.shape[-2:])

    slide_logits(Recorder(), torch.zeros(1, 3, 40, 30), (16, 16), (12, 12), 2)
    # rows: (40 - 16 + 11) // 12 + 1 = 3, cols: (30 - 16 + 11) // 12 + 1 = 3
    assert len(seen) == 9 and set(seen) == {(16, 16)}


def test_flip_and_scales_are_averaged_at_original_size():
    model = PixelModel()
    x = torch.rand(1, 3, 20, 24)
    out = infer_logits(model, x, {"mode": "whole", "scales": [0.5, 1.0, 1.5], "flip": True}, num_classes=3)
    assert out.shape == (1, 3, 20, 24)
    assert torch.allclose(out.sum(1), torch.ones(1, 20, 24), atol=1e-5)  # averaged probabilities
    single = infer_logits(model, x, {"mode": "whole", "flip": True}, num_classes=3)
    assert torch.allclose(single, model(x).softmax(1), atol=1e-6)  # flip of a pixel model changes nothing


def test_resize_keep_ratio_scores_at_original_size():
    model = PixelModel()
    x = (torch.rand(1, 3, 30, 60) * 255).to(torch.uint8)
    seen = []

    def hook(module, args, output):
        seen.append(tuple(args[0].shape[-2:]))

    model.register_forward_hook(hook)
    out = infer_logits(model, x, {"mode": "whole", "resize": [120, 40]}, num_classes=3)
    assert seen == [(40, 80)]  # min(120 / 60, 40 / 30) = 1.333
    assert out.shape == (1, 3, 30, 60)


def test_protocol_round_trip_and_errors():
    p = EvalProtocol.from_dict({"mode": "slide", "crop_size": [512, 512], "stride": [341, 341]})
    assert p.crop_size == (512, 512) and p.stride == (341, 341)
    assert EvalProtocol.from_dict(p.to_dict()) == p
    # An unknown key is an error naming the valid ones: a setting can no longer vanish into ``extra``.
    with pytest.raises(segcore.OptionsError, match=r"unknown option 'test_scale'.*Valid options: mode, crop_size"):
        EvalProtocol.from_dict({"mode": "whole", "test_scale": [2048, 512]})
    with pytest.raises(segcore.OptionsError, match="crop_size and stride"):
        EvalProtocol.from_dict({"mode": "slide"})
    with pytest.raises(segcore.OptionsError, match="'whole', 'slide'"):
        EvalProtocol.from_dict({"mode": "tiles"})
    with pytest.raises(segcore.OptionsError, match="leave pixels uncovered"):
        EvalProtocol(mode="slide", crop_size=(16, 16), stride=(40, 40))


def test_real_model_slide_close_to_whole():
    import segcore

    model = segcore.build_model("timm:test_convnext", "mlp", num_classes=3, decoder_options={"channels": 8}).eval()
    x = (torch.rand(1, 3, 48, 64) * 255).to(torch.uint8)
    out = infer_logits(model, x, {"mode": "slide", "crop_size": [32, 32], "stride": [16, 16]})
    assert out.shape == (1, 3, 48, 64) and torch.isfinite(out).all()
    # A window covering the whole image is exactly whole-image inference.
    full = infer_logits(model, x, {"mode": "slide", "crop_size": [48, 64], "stride": [48, 64]})
    assert torch.allclose(full, model(x), atol=1e-5)


def test_precision_context():
    from segcore.errors import SegcoreError
    from segcore.evaluation.inference import precision

    conv = torch.nn.Conv2d(3, 4, 1)
    x = torch.randn(1, 3, 8, 8)
    with precision("cpu", "bf16"):
        assert conv(x).dtype == torch.bfloat16
    with precision(torch.device("cpu"), "fp32"):
        assert conv(x).dtype == torch.float32
    with pytest.raises(SegcoreError, match="fp32, bf16"):
        precision("cpu", "fp16")

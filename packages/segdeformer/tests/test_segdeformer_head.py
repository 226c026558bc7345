"""SegDeformer head and loss: options, SDPA == materialised attention, loss terms, kv_reduction."""

from __future__ import annotations

import pytest
import segcore
import torch
from segcore.errors import OptionsError
from segcore.models.contracts import DecoderOutput
from segcore.plugins.specs import FeatureInfo
from segcore_segdeformer.head import SegDeformerLoss, segdeformer

IN = [FeatureInfo(8, 4), FeatureInfo(16, 8), FeatureInfo(24, 16), FeatureInfo(32, 32)]


def _features(b: int = 2, size: int = 64) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(b, i.channels, size // i.stride, size // i.stride, generator=g) for i in IN]


def _randomise_bn(head: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for m in head.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))


def test_head_output_shapes_and_aux() -> None:
    head = segdeformer(IN, 5, channels=16).eval()
    out = head(_features(), (64, 64))
    assert out.logits.shape == (2, 5, 16, 16)
    assert out.aux["mid_logits"].shape == (2, 5, 16, 16)


def test_sdpa_equals_materialised_attention() -> None:
    torch.manual_seed(0)
    sdpa = segdeformer(IN, 5, channels=16, attention="sdpa").eval()
    _randomise_bn(sdpa)
    mat = segdeformer(IN, 5, channels=16, attention="materialized").eval()
    mat.load_state_dict(sdpa.state_dict())
    feats = _features()
    with torch.no_grad():
        a, b = sdpa(feats, (64, 64)), mat(feats, (64, 64))
    torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.aux["mid_logits"], b.aux["mid_logits"])
    # the attentions matter: a head without them would give other logits
    assert (a.logits - sdpa.conv_seg(sdpa.fuse(feats))).abs().max() > 1e-3


def test_in_index_selects_maps_and_sets_resolution() -> None:
    head = segdeformer(IN, 3, channels=16, in_index=(1, 2, 3)).eval()
    out = head(_features(), (64, 64))
    assert out.logits.shape[-2:] == (8, 8)
    assert head.fusion_conv[0].in_channels == 48


def test_options_are_validated() -> None:
    with pytest.raises(OptionsError, match="channels"):
        segdeformer(IN, 3, width=16)
    with pytest.raises(OptionsError, match="attention"):
        segdeformer(IN, 3, attention="flash")
    with pytest.raises(OptionsError, match="kv_reduction"):
        segdeformer(IN, 3, kv_reduction=0)


def test_kv_reduction_adds_one_conv_per_attention() -> None:
    c, r = 16, 2
    base = sum(p.numel() for p in segdeformer(IN, 3, channels=c).parameters())
    head = segdeformer(IN, 3, channels=c, kv_reduction=r).eval()
    assert sum(p.numel() for p in head.parameters()) - base == 2 * (c * c * r * r + c)
    assert head(_features(), (64, 64)).logits.shape == (2, 3, 16, 16)


def test_loss_is_ce_plus_alpha_mid_ce_with_all_pixel_average() -> None:
    g = torch.Generator().manual_seed(0)
    logits, mid = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    target = torch.randint(0, 4, (2, 32, 32), generator=g)
    target[:, :8] = 255
    out = DecoderOutput(logits, {"mid_logits": mid})

    def ce(x: torch.Tensor, average: str) -> torch.Tensor:
        up = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
        per = torch.nn.functional.cross_entropy(up, target, ignore_index=255, reduction="none")
        return per.sum() / (per.numel() if average == "all" else (target != 255).sum())

    terms = SegDeformerLoss(4)(out, target)
    torch.testing.assert_close(terms["loss"], ce(logits, "all") + 0.4 * ce(mid, "all"))
    valid = SegDeformerLoss(4, average="valid", alpha=1.0)(out, target)
    torch.testing.assert_close(valid["loss"], ce(logits, "valid") + ce(mid, "valid"))
    assert not torch.allclose(terms["loss_seg"], valid["loss_seg"])


def test_registered_and_trains_one_step() -> None:
    model = segcore.build_model(
        "mit-b0",
        "segdeformer",
        3,
        encoder_options={"embed_dims": (8, 16, 24, 32), "num_heads": (1, 1, 1, 2)},
        decoder_options={"channels": 16},
    )
    images = torch.randn(2, 3, 64, 64)
    labels = torch.randint(0, 3, (2, 64, 64))
    terms = model.compute_loss(images, labels)
    assert set(terms) >= {"loss", "loss_seg", "loss_attn"}
    terms["loss"].backward()
    assert model.decoder.mid.cls_token.grad is not None and model.decoder.mid.cls_token.grad.abs().sum() > 0
    assert model.decoder.mid.info_token.grad.abs().sum() > 0


def test_sdpa_path_uses_a_fused_kernel_not_the_math_fallback() -> None:
    from torch.profiler import profile

    head = segdeformer(IN, 5, channels=16).eval()
    with torch.no_grad(), profile() as prof:
        head(_features(b=1), (64, 64))
    ops = {e.key for e in prof.key_averages()}
    assert "aten::scaled_dot_product_attention" in ops
    # the math fallback materialises the N x N map (it is taken for inputs without a unit channel stride)
    assert "aten::_scaled_dot_product_attention_math" not in ops


def test_upernet_fusion_feeds_the_segdeformer_block() -> None:
    torch.manual_seed(0)
    head = segdeformer(IN, 5, channels=16, fusion="upernet", pool_scales=(1, 2)).eval()
    assert not hasattr(head, "fusion_conv") and hasattr(head, "uper")
    # PPM on the last map + one lateral and one 3x3 FPN conv per other map + 3x3 bottleneck over 4 levels
    uper = head.uper
    assert len(uper.psp_modules) == 2 and len(uper.lateral_convs) == len(uper.fpn_convs) == 3
    assert uper.fpn_bottleneck[0].in_channels == 4 * 16 and uper.fpn_bottleneck[0].kernel_size == (3, 3)
    feats = _features()
    with torch.no_grad():
        out = head(feats, (64, 64))
        x = head.fuse(feats)
    assert out.logits.shape == out.aux["mid_logits"].shape == (2, 5, 16, 16)
    assert torch.equal(x, uper(feats))
    # the SegDeformer block still acts on the UperNet map
    assert (out.logits - head.conv_seg(x)).abs().max() > 1e-3
    with pytest.raises(OptionsError, match="fusion"):
        segdeformer(IN, 3, fusion="fpn")


def test_flat_encoder_goes_through_the_core_pyramid_adapter() -> None:
    from segcore.models.adapters import SimpleFeaturePyramid

    torch.manual_seed(0)
    images = torch.randn(1, 3, 64, 64)
    model = segcore.build_model("timm:vit_tiny_patch16_224", "segdeformer", 3, decoder_options={"channels": 16}).eval()
    assert isinstance(model.adapter, SimpleFeaturePyramid)
    assert [i.stride for i in model.decoder_in_features] == [4, 8, 16, 32]
    with torch.no_grad():
        assert model.forward_output(images).logits.shape[-2:] == (16, 16)  # stride 4, as with MiT
    # the paper's flat-encoder setting works at stride 16 (spec §5): select the adapter's 1/16 and 1/32 levels
    cheap = segcore.build_model(
        "timm:vit_tiny_patch16_224", "segdeformer", 3, decoder_options={"channels": 16, "in_index": (2, 3)}
    ).eval()
    with torch.no_grad():
        out = cheap.forward_output(images)
    assert out.logits.shape[-2:] == out.aux["mid_logits"].shape[-2:] == (4, 4)
    assert cheap(images).shape == (1, 3, 64, 64)


def test_upernet_variant_round_trips_and_its_keys_pass_the_converter(tmp_path) -> None:
    from segcore_segdeformer.convert import convert_segdeformer_head

    torch.manual_seed(0)
    opts = {"channels": 16, "fusion": "upernet", "pool_scales": [1, 2]}
    model = segcore.build_model("mit-b0", "segdeformer", 3, decoder_options=opts).eval()
    model.save_pretrained(tmp_path)
    loaded = segcore.SegModel.from_pretrained(tmp_path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    sd = {k[len("decoder.") :]: v for k, v in model.state_dict().items() if k.startswith("decoder.")}
    assert convert_segdeformer_head(sd).keys() == sd.keys()

"""Official parity (MiT-B0 + SegDeformerHead3, fixture from lygsbw/segdeformer@77f2dacd) and param counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import segcore
import torch
from segcore_segdeformer.convert import convert_segdeformer_head

SHARED = Path(__file__).resolve().parents[3].parent / "shared"
FIXTURE = SHARED / "fixtures" / "segdeformer" / "mit_b0_segdeformer"


@pytest.fixture(scope="module")
def case() -> tuple[dict, dict[str, torch.Tensor], segcore.SegModel]:
    if not FIXTURE.is_dir():
        pytest.skip("shared/fixtures not found")
    from safetensors.torch import load_file

    meta = json.loads((FIXTURE / "case.json").read_text())
    io = load_file(str(FIXTURE / "io.safetensors"))
    model = segcore.convert_checkpoint(
        FIXTURE / "official.safetensors", format="mmseg", official_config=meta["config"]
    ).eval()
    return meta, io, model


def test_parity_logits_mid_logits_upsampled(case) -> None:
    meta, io, model = case
    with torch.no_grad():
        feats = model.encoder(io["image"])
        out = model.forward_output(io["image"])
        up = model(io["image"])
        up_uint8 = model(io["image_uint8"])
    for i, f in enumerate(feats):
        torch.testing.assert_close(f, io[f"features.{i}"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.logits, io["logits"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.aux["mid_logits"], io["mid_logits"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(up, io["seg_logits_upsampled"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(up_uint8, io["seg_logits_upsampled"], atol=1e-4, rtol=1e-4)


def test_parity_intermediates(case) -> None:
    _, io, model = case
    head = model.decoder
    with torch.no_grad():
        feats = model.encoder(io["image"])
        x = head.fuse(feats)
        b, c, h, w = x.shape
        _, x_mid = head.mid(x.flatten(2).transpose(1, 2))
        x_mid = x_mid.transpose(1, 2).reshape(b, c, h, w)
        y_inter, y_exter = head.internal(x, x), head.external(x, x_mid)
    for name, value in (("fused", x), ("x_mid", x_mid), ("y_inter", y_inter), ("y_exter", y_exter)):
        torch.testing.assert_close(value, io[f"head.{name}"], atol=1e-4, rtol=1e-4, msg=name)


def test_parity_official_loss(case) -> None:
    meta, io, model = case
    with torch.no_grad():
        output = model.forward_output(io["image"])
        terms = model.loss_fn(output, io["gt_semantic_seg"][:, 0])
    assert terms["loss"].item() == pytest.approx(meta["loss"]["loss_ce"], abs=1e-5)
    assert terms["loss_seg"].item() == pytest.approx(meta["loss"]["ce_main"], abs=1e-5)
    assert terms["loss_attn"].item() == pytest.approx(meta["loss"]["ce_mid"], abs=1e-5)
    valid = segcore.build_loss("segdeformer", 19, average="valid")(output, io["gt_semantic_seg"][:, 0])
    assert valid["loss_seg"].item() == pytest.approx(
        meta["loss"]["torch_default_ce_main_for_contrast(mean over non-ignored)"], abs=1e-5
    )


def test_parity_param_counts(case) -> None:
    meta, _, model = case
    assert sum(p.numel() for p in model.encoder.parameters()) == meta["param_counts"]["backbone"]
    assert sum(p.numel() for p in model.decoder.parameters()) == meta["param_counts"]["decode_head"]


def test_head_converter_passes_converted_dicts(case) -> None:
    _, _, model = case
    sd = {k[len("decoder.") :]: v for k, v in model.state_dict().items() if k.startswith("decoder.")}
    assert convert_segdeformer_head(sd) is not sd and convert_segdeformer_head(sd).keys() == sd.keys()


# spec §10 item 6 (150 classes, 512x512): params from the released code, MACs measured by the lead's counter.
MODELS = {
    "mit-b1+segdeformer": ("mit-b1", "segdeformer", 14_453_590, 301.92e9),
    "mit-b2+segdeformer": ("mit-b2", "segdeformer", 25_498_454, 311.76e9),
    "mit-b5+segdeformer": ("mit-b5", "segdeformer", 82_745_174, 361.07e9),
    "mit-b1+mlp": ("mit-b1", "mlp", 13_716_822, None),
}


@pytest.mark.parametrize("name", list(MODELS), ids=list(MODELS))
def test_param_counts_150_classes(name: str) -> None:
    encoder, decoder, params, _ = MODELS[name]
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = segcore.build_model(encoder, decoder, 150)
    assert sum(p.numel() for p in model.parameters()) == params


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in MODELS if MODELS[n][3]], ids=[n for n in MODELS if MODELS[n][3]])
def test_macs_512(name: str) -> None:
    from segcore.tools.benchmark import count_params_and_macs

    encoder, decoder, params, macs = MODELS[name]
    torch.manual_seed(0)
    counted_params, counted_macs = count_params_and_macs(segcore.build_model(encoder, decoder, 150), (512, 512))
    assert counted_params == params
    assert abs(counted_macs - macs) / macs < 0.03


def test_segformer_mlp_baseline_converts_and_matches_fused_map() -> None:
    """SegformerHead keys are the convs/fusion_conv/conv_seg subset of SegDeformerHead3 (spec §6, §11)."""
    if not FIXTURE.is_dir():
        pytest.skip("shared/fixtures not found")
    from safetensors.torch import load_file

    meta = json.loads((FIXTURE / "case.json").read_text())
    io = load_file(str(FIXTURE / "io.safetensors"))
    sd = load_file(str(FIXTURE / "official.safetensors"))
    keep = ("backbone.", "decode_head.convs.", "decode_head.fusion_conv.", "decode_head.conv_seg.")
    sd = {k: v for k, v in sd.items() if k.startswith(keep)}
    config = {
        "backbone": meta["config"]["backbone"],
        "decode_head": {**meta["config"]["decode_head"], "type": "SegformerHead"},
    }
    model = segcore.convert_checkpoint(sd, format="mmseg", official_config=config).eval()
    assert model.config.decoder == "mlp"
    with torch.no_grad():
        logits = model.forward_output(io["image"]).logits
        expected = model.decoder.conv_seg(io["head.fused"])
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)


def test_converter_reports_unknown_and_missing_keys(tmp_path: Path) -> None:
    """A ``.pth`` file is read with ``weights_only``; unknown head keys and missing keys are errors, not dropped."""
    if not FIXTURE.is_dir():
        pytest.skip("shared/fixtures not found")
    from safetensors.torch import load_file
    from segcore.errors import CheckpointError

    meta = json.loads((FIXTURE / "case.json").read_text())
    sd = load_file(str(FIXTURE / "official.safetensors"))
    path = tmp_path / "official.pth"
    torch.save({"meta": {"mmseg_version": "0.29.1"}, "state_dict": sd}, path)
    model = segcore.convert_checkpoint(path, format="mmseg", official_config=meta["config"])  # wrapped .pth loads
    assert model.config.extra["converted_from"] == {"format": "mmseg", "file": "official.pth"}
    with pytest.raises(CheckpointError, match="segdeformer: 1 keys not understood.*extra.weight"):
        segcore.convert_checkpoint({**sd, "decode_head.extra.weight": torch.zeros(1)}, official_config=meta["config"])
    missing = {k: v for k, v in sd.items() if k != "decode_head.class_token.q.bias"}
    with pytest.raises(CheckpointError, match=r"1 missing keys:\n  decoder.mid: q.bias"):
        segcore.convert_checkpoint(missing, format="mmseg", official_config=meta["config"])

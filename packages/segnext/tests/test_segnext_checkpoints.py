"""Official checkpoint formats, the strict report and the registered checkpoints through a local Hub.

Every path starts from the official fixture weights (``shared/fixtures/segnext/mscan_t_ham``) and ends
with the official outputs, so a wrong key map or a wrong load fails here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import segcore
import torch
from segcore.errors import CheckpointError
from segcore.plugins.registry import components
from segcore.weights.convert import convert_component
from segcore.weights.state_dict import load_state_dict_file, load_strict

SHARED = Path(__file__).resolve().parents[3].parent / "shared"
FIXTURE = SHARED / "fixtures" / "segnext" / "mscan_t_ham"
TOL = 1e-4
HEAD_T = {"channels": 256, "ham_channels": 256, "md_r": 16}


@pytest.fixture(scope="module")
def fixture() -> dict:
    if not (FIXTURE / "case.json").is_file():
        pytest.skip("shared/fixtures not found (segnext/mscan_t_ham)")
    from safetensors.torch import load_file

    return {
        "config": json.loads((FIXTURE / "case.json").read_text())["config"],
        "io": load_file(str(FIXTURE / "io.safetensors")),
        "official": load_state_dict_file(FIXTURE / "official.safetensors"),
    }


def _max_diffs(model: segcore.SegModel, io: dict) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        feats = model.encoder(io["image"])
        torch.manual_seed(123)  # case.json: immediately before the forward
        logits = model.forward_output(io["image"]).logits
    diffs = {f"features.{i}": (f - io[f"features.{i}"]).abs().max().item() for i, f in enumerate(feats)}
    diffs["logits"] = (logits - io["logits"]).abs().max().item()
    return diffs


def _mmseg1x(state: dict) -> dict:
    """The MMSeg 1.x naming: the MLP depthwise conv sits directly under ``mlp``."""
    return {k.replace("mlp.dwconv.dwconv.", "mlp.dwconv."): v for k, v in state.items()}


def test_mmcv_pth_with_mmseg1x_names_reproduces_fixture(fixture: dict, tmp_path: Path) -> None:
    renamed = _mmseg1x(fixture["official"])
    assert sum(".mlp.dwconv.weight" in k for k in renamed) == 13  # one per block of T
    path = tmp_path / "segnext_mscan-t_ade20k.pth"
    # An mmcv checkpoint: meta + state_dict (read with torch.load(weights_only=True)).
    torch.save({"meta": {"mmseg_version": "1.0.0", "CLASSES": ["wall"] * 150}, "state_dict": renamed}, path)
    model = segcore.convert_checkpoint(path, format="mmseg", official_config=fixture["config"])
    diffs = _max_diffs(model, fixture["io"])
    assert max(diffs.values()) <= TOL, diffs


def test_pth_with_pickled_code_is_refused(fixture: dict, tmp_path: Path) -> None:
    import types

    path = tmp_path / "evil.pth"
    # A class instance needs pickle code to load; weights_only=True refuses it.
    torch.save({"state_dict": fixture["official"], "meta": types.SimpleNamespace(a=1)}, path)
    with pytest.raises(CheckpointError, match="refused"):
        segcore.convert_checkpoint(path, format="mmseg", official_config=fixture["config"])


def test_mismatch_report_names_modules_and_shapes(fixture: dict) -> None:
    state = dict(fixture["official"])
    state.pop("backbone.block2.1.layer_scale_1")
    state["decode_head.hamburger.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as err:
        # 171 classes do not fit the 150-class classifier of the fixture.
        segcore.convert_checkpoint(
            state, format="mmseg", encoder="mscan-t", decoder="ham", num_classes=171, decoder_options=HEAD_T
        )
    text = str(err.value)
    assert "1 missing keys" in text and "encoder.block2: 1.layer_scale_1" in text
    assert "1 unexpected keys" in text and "decoder.hamburger: extra.weight" in text
    assert "decoder.conv_seg.weight: [150, 256, 1, 1] vs [171, 256, 1, 1]" in text


def test_wrong_variant_is_reported_not_loaded(fixture: dict) -> None:
    with pytest.raises(CheckpointError, match="wrong shape"):
        segcore.convert_checkpoint(
            fixture["official"],
            format="mmseg",
            encoder="mscan-s",
            decoder="ham",
            num_classes=150,
            decoder_options=HEAD_T,
        )


@pytest.mark.parametrize("flavour", ["original", "mmseg"], ids=["imagenet-original", "imagenet-mmseg"])
def test_imagenet_file_reproduces_fixture_features(fixture: dict, tmp_path: Path, flavour: str) -> None:
    backbone = {k[len("backbone.") :]: v for k, v in fixture["official"].items() if k.startswith("backbone.")}
    if flavour == "mmseg":
        backbone = _mmseg1x(backbone)
    # The ImageNet files carry a classifier the segmentation backbone does not have.
    backbone |= {"head.weight": torch.zeros(1000, 256), "head.bias": torch.zeros(1000)}
    path = tmp_path / "mscan_t.pth"
    torch.save({"state_dict": backbone}, path)
    state = convert_component("mmseg", "mscan-t", load_state_dict_file(path))
    enc = segcore.build_encoder("mscan-t")
    load_strict(enc, state)
    with torch.no_grad():
        feats = enc.eval()(fixture["io"]["image"])
    for i, f in enumerate(feats):
        assert (f - fixture["io"][f"features.{i}"]).abs().max().item() <= TOL


def test_registered_checkpoints_load_through_local_hub(fixture: dict, tmp_path: Path, monkeypatch, local_hub) -> None:
    """The official file converted and pushed (what `segcore hub mirror` does); the registered names then load."""
    from safetensors.torch import save_file
    from segcore.weights.checkpoints import convert_registered

    monkeypatch.setenv("SEGCORE_CACHE", str(tmp_path / "cache"))
    spec = components("checkpoints")["segnext-t-ade20k"]
    official = tmp_path / "segnext_tiny_512x512_ade_160k.pth"
    torch.save({"meta": {}, "state_dict": fixture["official"]}, official)
    enc_dir = tmp_path / "mscan-t-imagenet"
    enc_dir.mkdir()
    backbone = {k[len("backbone.") :]: v for k, v in fixture["official"].items() if k.startswith("backbone.")}
    save_file(convert_component("mmseg", "mscan-t", backbone), str(enc_dir / "model.safetensors"))
    local_hub.add_repo("segcore/mscan-t-imagenet", enc_dir)
    convert_registered(segcore.SegModel, "segnext-t-ade20k", spec, official).push_to_hub(spec.repo_id)
    card = (local_hub.repo_dir(spec.repo_id) / "README.md").read_text()
    model = segcore.SegModel.from_pretrained("segnext-t-ade20k")
    encoder = segcore.build_encoder("mscan-t", pretrained=True)
    assert any(p.endswith(f"{spec.repo_id}/resolve/main/model.safetensors") for _, p in local_hub.requests)
    # The model card states source, converter, expected metric and eval protocol.
    assert spec.official_url in card and "segcore convert --format mmseg" in card
    assert "mIoU 41.1 / 42.2" in card and "resize to a multiple of 32" in card
    # ... and the model carries that protocol as typed data, so `segcore eval` runs it by default.
    assert model.config.eval == spec.eval_protocol.to_dict() and model.config.eval["resize_to_multiple"] == 32
    diffs = _max_diffs(model, fixture["io"])
    assert max(diffs.values()) <= TOL, diffs
    with torch.no_grad():
        feats = encoder.eval()(fixture["io"]["image"])
    assert (feats[3] - fixture["io"]["features.3"]).abs().max().item() <= TOL


def test_every_registered_model_matches_its_architecture() -> None:
    """Each registered model checkpoint builds the official architecture of its variant (spec §3.1)."""
    ckpts = components("checkpoints")
    names = {f"segnext-{v}-{d}" for v in "tsbl" for d in ("ade20k", "cityscapes", "ade20k-mmseg")}
    names |= {"segnext-l-coco-stuff164k"}
    assert names <= ckpts.keys()
    expected_head = {"t": 256, "s": 256, "b": 512, "l": 1024}
    for name in sorted(names):
        spec = ckpts[name]
        v = spec.encoder[-1]
        assert spec.kind == "model" and spec.format == "mmseg" and spec.official_url.startswith("https://")
        assert spec.decoder_options["channels"] == spec.decoder_options["ham_channels"] == expected_head[v]
        assert spec.decoder_options["md_r"] == (16 if v in "ts" else 64)
        assert spec.metric.startswith("mIoU") and spec.eval_protocol
        assert spec.num_classes == {"ade20k": 150, "ade20k-mmseg": 150, "cityscapes": 19}.get(spec.dataset, 171)


def test_mmseg_auxiliary_head_is_left_out_with_a_warning(fixture: dict, caplog: pytest.LogCaptureFixture) -> None:
    state = dict(fixture["official"])
    state["auxiliary_head.conv_seg.weight"] = torch.zeros(150, 256, 1, 1)
    state["auxiliary_head.conv_seg.bias"] = torch.zeros(150)
    with caplog.at_level("WARNING", logger="segcore.weights.convert"):
        model = segcore.convert_checkpoint(state, format="mmseg", official_config=fixture["config"])
    assert "leaving out 2 auxiliary_head.* tensors" in caplog.text
    assert model.config.extra["converted_from"]["dropped"] == "2 auxiliary_head.* tensors"
    assert max(_max_diffs(model, fixture["io"]).values()) <= TOL  # the rest converts as without them

"""Registered checkpoints through the local Hub server: MiT ImageNet encoders and the SegDeformer ADE20K names."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import types
from pathlib import Path

import pytest
import segcore
import torch
from segcore.errors import CheckpointError
from segcore.plugins import registry
from segcore.plugins.registry import components
from segcore.weights.checkpoints import load_pretrained_encoder_state
from segcore.weights.convert import convert_component
from segcore_segdeformer.convert import convert_mit

SHARED = Path(__file__).resolve().parents[3].parent / "shared"
FIXTURE = SHARED / "fixtures" / "segdeformer" / "mit_b0_segdeformer"
VARIANTS = ["b0", "b1", "b2", "b3", "b4", "b5"]


@pytest.mark.parametrize("v", VARIANTS, ids=[f"mit-{v}-imagenet" for v in VARIANTS])
def test_mit_imagenet_checkpoints_are_registered_with_their_official_source(v: str) -> None:
    spec = components("checkpoints")[f"mit-{v}-imagenet"]
    assert (spec.kind, spec.encoder, spec.format, spec.dataset) == ("encoder", f"mit-{v}", "mmseg", "imagenet-1k")
    assert spec.official_filename == f"mit_{v}_20220624-{spec.sha256}.pth" and len(spec.sha256) == 8
    assert spec.official_url.endswith("/pretrain/segformer/" + spec.official_filename)
    assert spec.repo_id == f"segcore/mit-{v}-imagenet"


@pytest.mark.parametrize("v, miou", [("b1", "44.12"), ("b2", "47.34"), ("b5", "50.34")], ids=["b1", "b2", "b5"])
def test_segdeformer_ade20k_names_carry_card_facts(v: str, miou: str) -> None:
    spec = components("checkpoints")[f"segdeformer-mit-{v}-ade20k"]
    assert (spec.kind, spec.encoder, spec.decoder, spec.num_classes) == ("model", f"mit-{v}", "segdeformer", 150)
    assert miou in spec.metric and spec.dataset == "ade20k"
    # spec §8 "Test": keep-ratio resize into (2048, 512), whole image, no flip, no padding
    assert spec.eval_protocol.to_dict() == {
        "mode": "whole",
        "crop_size": None,
        "stride": None,
        "resize": [2048, 512],
        "keep_ratio": True,
        "min_size": None,
        "resize_to_multiple": None,
        "scales": [1.0],
        "flip": False,
    }


def _plugin(name: str, spec: segcore.CheckpointSpec) -> types.ModuleType:
    plugin = types.ModuleType("segdeformer_test_checkpoints")

    @segcore.hookimpl
    def segcore_checkpoints() -> dict[str, segcore.CheckpointSpec]:
        return {name: spec}

    plugin.segcore_checkpoints = segcore_checkpoints
    return plugin


def _mmseg_backbone_to_nvlabs(mm: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MiT mmseg names -> NVlabs ``mit_bX.pth`` names (inverse of ``mit2mmseg.py``, written independently)."""
    nv: dict[str, torch.Tensor] = {"head.weight": torch.zeros(1000, 256), "head.bias": torch.zeros(1000)}
    for key, value in mm.items():
        s, rest = re.match(r"layers\.(\d)\.(.*)", key).groups()
        n = int(s) + 1
        if m := re.match(r"0\.(projection|norm)\.(\w+)", rest):
            nv[f"patch_embed{n}.{'proj' if m[1] == 'projection' else 'norm'}.{m[2]}"] = value
        elif m := re.match(r"2\.(\w+)", rest):
            nv[f"norm{n}.{m[1]}"] = value
        else:
            j, sub, p = re.match(r"1\.(\d+)\.(.*)\.(\w+)$", rest).groups()
            b = f"block{n}.{j}."
            if sub == "attn.attn":  # in_proj_weight / in_proj_bias: q rows, then the kv rows
                d = value.shape[0] // 3
                p = p.removeprefix("in_proj_")
                nv[f"{b}attn.q.{p}"], nv[f"{b}attn.kv.{p}"] = value[:d], value[d:]
            elif sub == "attn.attn.out_proj":
                nv[f"{b}attn.proj.{p}"] = value
            elif sub in ("ffn.layers.0", "ffn.layers.4"):
                nv[f"{b}mlp.fc{1 if sub.endswith('0') else 2}.{p}"] = value.flatten(1) if value.ndim == 4 else value
            elif sub == "ffn.layers.1":
                nv[f"{b}mlp.dwconv.dwconv.{p}"] = value
            else:  # norm1, norm2, attn.sr, attn.norm
                nv[f"{b}{sub}.{p}"] = value
    return nv


def _nvlabs_backbone() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The fixture's MiT-B0 backbone in mmseg names and in NVlabs names."""
    if not FIXTURE.is_dir():
        pytest.skip("shared/fixtures not found")
    from safetensors.torch import load_file

    mm = {k[9:]: v for k, v in load_file(str(FIXTURE / "official.safetensors")).items() if k.startswith("backbone.")}
    return mm, _mmseg_backbone_to_nvlabs(mm)


def test_mit_imagenet_official_file_fallback_converts_nvlabs_names(tmp_path: Path, monkeypatch, local_hub) -> None:
    """No Hub copy: the official file is downloaded (from the local server), verified, converted and cached."""
    monkeypatch.setenv("SEGCORE_CACHE", str(tmp_path / "cache"))
    mm, nv = _nvlabs_backbone()
    official = tmp_path / "mit_b0.pth"
    torch.save(nv, official)
    digest = hashlib.sha256(official.read_bytes()).hexdigest()
    registered = components("checkpoints")["mit-b0-imagenet"]
    url = local_hub.add_file("mit_b0.pth", official)
    for sha in ("0badc0de", digest[:8]):
        spec = dataclasses.replace(
            registered,
            repo_id="segcore-test/not-mirrored",
            official_url=url,
            official_filename="mit_b0.pth",
            sha256=sha,
        )
        registry.register_plugin(_plugin("mit-b0-imagenet-local", spec), "segdeformer-test-ckpt")
        try:
            if sha == "0badc0de":
                with pytest.raises(CheckpointError, match="expected 0badc0de"):
                    load_pretrained_encoder_state("mit-b0-imagenet-local")
                continue
            state = load_pretrained_encoder_state("mit-b0-imagenet-local")
        finally:
            registry.unregister_plugin("segdeformer-test-ckpt")
    reference = convert_mit(mm)
    assert state.keys() == reference.keys()
    assert all(torch.equal(state[k], reference[k]) for k in reference)
    assert (tmp_path / "cache" / "converted" / "mit-b0-imagenet-local" / "model.safetensors").is_file()
    segcore.build_encoder("mit-b0").load_state_dict(state)  # strict


def test_segdeformer_ade20k_without_hub_copy_says_how_to_get_weights(tmp_path: Path, monkeypatch, local_hub) -> None:
    monkeypatch.setenv("SEGCORE_CACHE", str(tmp_path))
    with pytest.raises(CheckpointError, match="no trained weights.*segdeformer-ade20k-160k"):
        segcore.SegModel.from_pretrained("segdeformer-mit-b1-ade20k")


_TO_MMSEG = [  # segcore names -> mmseg names, the inverse of convert.py's tables (written independently)
    (r"^encoder\.stages\.(\d)\.patch_embed\.proj\.", r"backbone.layers.\1.0.projection."),
    (r"^encoder\.stages\.(\d)\.patch_embed\.norm\.", r"backbone.layers.\1.0.norm."),
    (r"^encoder\.stages\.(\d)\.blocks\.(\d+)\.attn\.(in_proj_\w+)$", r"backbone.layers.\1.1.\2.attn.attn.\3"),
    (r"^encoder\.stages\.(\d)\.blocks\.(\d+)\.attn\.out_proj\.", r"backbone.layers.\1.1.\2.attn.attn.out_proj."),
    (r"^encoder\.stages\.(\d)\.blocks\.(\d+)\.ffn\.fc1\.", r"backbone.layers.\1.1.\2.ffn.layers.0."),
    (r"^encoder\.stages\.(\d)\.blocks\.(\d+)\.ffn\.dwconv\.", r"backbone.layers.\1.1.\2.ffn.layers.1."),
    (r"^encoder\.stages\.(\d)\.blocks\.(\d+)\.ffn\.fc2\.", r"backbone.layers.\1.1.\2.ffn.layers.4."),
    (r"^encoder\.stages\.(\d)\.blocks\.(\d+)\.", r"backbone.layers.\1.1.\2."),
    (r"^encoder\.stages\.(\d)\.norm\.", r"backbone.layers.\1.2."),
    (r"^decoder\.(convs\.\d|fusion_conv)\.0\.", r"decode_head.\1.conv."),
    (r"^decoder\.(convs\.\d|fusion_conv)\.1\.", r"decode_head.\1.bn."),
    (r"^decoder\.mid\.info_token$", "decode_head.class_token.prop_token"),
    (r"^decoder\.mid\.", "decode_head.class_token."),
    (r"^decoder\.internal\.(\w+)\.0\.", r"decode_head.trans.attn.\1_project.conv."),
    (r"^decoder\.internal\.(\w+)\.1\.", r"decode_head.trans.attn.\1_project.bn."),
    (r"^decoder\.external\.(\w+)\.0\.", r"decode_head.trans.cross_attn.\1_project.conv."),
    (r"^decoder\.external\.(\w+)\.1\.", r"decode_head.trans.cross_attn.\1_project.bn."),
    (r"^decoder\.conv_seg\.", "decode_head.conv_seg."),
]


def _to_mmseg(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        for pattern, repl in _TO_MMSEG:
            new, n = re.subn(pattern, repl, key)
            if n:
                out[new] = value
                break
        else:
            raise AssertionError(f"no mmseg name for {key}")
    return out


def test_segdeformer_ade20k_mirror_card_then_load_by_name(tmp_path: Path, monkeypatch, local_hub) -> None:
    """A user's mmseg checkpoint converted and pushed with a card (as `segcore hub mirror` does); the name loads it."""
    from segcore.weights.checkpoints import convert_registered

    monkeypatch.setenv("SEGCORE_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = segcore.build_model("mit-b1", "segdeformer", 150).eval()
    for m in model.decoder.modules():  # non-trivial BN statistics so a wrong mapping would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 1.5)
    official = tmp_path / "segformer_mit-b1_512x512_160k_ade20k_segdeformer3.pth"
    torch.save({"meta": {"mmseg_version": "0.29.1"}, "state_dict": _to_mmseg(model.state_dict())}, official)
    spec = components("checkpoints")["segdeformer-mit-b1-ade20k"]
    images = torch.randn(1, 3, 64, 64)
    convert_registered(segcore.SegModel, "segdeformer-mit-b1-ade20k", spec, official).push_to_hub(spec.repo_id)
    card = (local_hub.repo_dir(spec.repo_id) / "README.md").read_text()
    loaded = segcore.SegModel.from_pretrained("segdeformer-mit-b1-ade20k")
    for fact in ("44.12", "whole image", "segcore convert --format mmseg", "ade20k", "segdeformer"):
        assert fact in card, fact
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images), rtol=0, atol=0)


@pytest.mark.parametrize("v", VARIANTS, ids=[f"mit-{v}" for v in VARIANTS])
@pytest.mark.parametrize("naming", ["mmseg", "nvlabs"])
def test_every_mit_variant_converts_from_official_names(v: str, naming: str) -> None:
    """Every variant's full key set in mmseg and NVlabs names maps onto our encoder (shapes checked; meta tensors)."""
    with torch.device("meta"):
        encoder = segcore.build_encoder(f"mit-{v}")
    ours = {f"encoder.{k}": t for k, t in encoder.state_dict().items()}
    mm = {k[len("backbone.") :]: t for k, t in _to_mmseg(ours).items()}
    assert len(mm) == len(ours)
    official = mm if naming == "mmseg" else _mmseg_backbone_to_nvlabs(mm)
    converted = convert_component("mmseg", f"mit-{v}", official)
    own = encoder.state_dict()
    assert converted.keys() == own.keys()
    assert all(converted[k].shape == own[k].shape for k in own)

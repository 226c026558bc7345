"""MiT encoders: options, feature_info, parameter counts (spec §7), converters for the three naming schemes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import segcore
import torch
from segcore.errors import CheckpointError, OptionsError
from segcore.models.contracts import check_feature_info
from segcore_segdeformer.convert import convert_mit
from segcore_segdeformer.mit import mit_b0

SHARED = Path(__file__).resolve().parents[3].parent / "shared"
FIXTURE = SHARED / "fixtures" / "segdeformer" / "mit_b0_segdeformer"

# spec §7 "backbone params" column.
BACKBONE_PARAMS = {
    "mit-b0": 3_319_392,
    "mit-b1": 13_151_424,
    "mit-b2": 24_196_288,
    "mit-b3": 44_072_128,
    "mit-b4": 60_842_688,
    "mit-b5": 81_443_008,
}


@pytest.mark.parametrize("name", list(BACKBONE_PARAMS), ids=list(BACKBONE_PARAMS))
def test_mit_param_counts(name: str) -> None:
    with torch.device("meta"):
        encoder = segcore.build_encoder(name)
    assert sum(p.numel() for p in encoder.parameters()) == BACKBONE_PARAMS[name]
    assert [i.stride for i in encoder.feature_info] == [4, 8, 16, 32]


def test_mit_feature_info_matches_outputs() -> None:
    encoder = mit_b0(embed_dims=(8, 16, 40, 64), num_heads=(1, 2, 5, 8)).eval()
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        feats = encoder(images)
    check_feature_info(encoder, feats, (64, 96))
    assert [i.channels for i in encoder.feature_info] == [8, 16, 40, 64]


def test_mit_unknown_option_lists_valid_ones() -> None:
    with pytest.raises(OptionsError, match="drop_path_rate"):
        mit_b0(drop_path=0.2)


def _official_backbone() -> dict[str, torch.Tensor]:
    if not FIXTURE.is_dir():
        pytest.skip("shared/fixtures not found")
    from safetensors.torch import load_file

    sd = load_file(str(FIXTURE / "official.safetensors"))
    return {k[len("backbone.") :]: v for k, v in sd.items() if k.startswith("backbone.")}


def _mmseg_to_nvlabs(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of mit2mmseg.py, written independently of the converter under test."""
    out = {"head.weight": torch.zeros(1000, 256), "head.bias": torch.zeros(1000)}
    for k, v in sd.items():
        s, rest = re.match(r"layers\.(\d+)\.(.*)", k).groups()
        n = int(s) + 1
        if rest.startswith("0.projection."):
            out[f"patch_embed{n}.proj.{rest.split('.')[-1]}"] = v
        elif rest.startswith("0.norm."):
            out[f"patch_embed{n}.norm.{rest.split('.')[-1]}"] = v
        elif rest.startswith("2."):
            out[f"norm{n}.{rest[2:]}"] = v
        else:
            j, sub = re.match(r"1\.(\d+)\.(.*)", rest).groups()
            b = f"block{n}.{j}."
            if "in_proj_" in sub:
                p = sub.split("in_proj_")[1]
                d = v.shape[0] // 3
                out[b + f"attn.q.{p}"], out[b + f"attn.kv.{p}"] = v[:d], v[d:]
            elif "out_proj" in sub:
                out[b + f"attn.proj.{sub.split('.')[-1]}"] = v
            elif sub.startswith("ffn.layers.0.") or sub.startswith("ffn.layers.4."):
                fc = "fc1" if sub.startswith("ffn.layers.0.") else "fc2"
                out[b + f"mlp.{fc}.{sub.split('.')[-1]}"] = v.flatten(1) if v.ndim == 4 else v
            elif sub.startswith("ffn.layers.1."):
                out[b + f"mlp.dwconv.dwconv.{sub.split('.')[-1]}"] = v
            else:
                out[b + sub] = v
    return out


def _mmseg_to_hf(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' Segformer names (checkpoints.md §4 E), with a 1000-class classifier."""
    out = {"classifier.weight": torch.zeros(1000, 256), "classifier.bias": torch.zeros(1000)}
    pre = "segformer.encoder."
    for k, v in sd.items():
        s, rest = re.match(r"layers\.(\d+)\.(.*)", k).groups()
        p = rest.split(".")[-1]
        if rest.startswith("0.projection."):
            out[f"{pre}patch_embeddings.{s}.proj.{p}"] = v
        elif rest.startswith("0.norm."):
            out[f"{pre}patch_embeddings.{s}.layer_norm.{p}"] = v
        elif rest.startswith("2."):
            out[f"{pre}layer_norm.{s}.{p}"] = v
        else:
            j, sub = re.match(r"1\.(\d+)\.(.*)", rest).groups()
            b = f"{pre}block.{s}.{j}."
            names = {
                "norm1": "layer_norm_1",
                "norm2": "layer_norm_2",
                "attn.sr": "attention.self.sr",
                "attn.norm": "attention.self.layer_norm",
                "attn.attn.out_proj": "attention.output.dense",
                "ffn.layers.1": "mlp.dwconv.dwconv",
            }
            mod = sub.rsplit(".", 1)[0]
            if "in_proj_" in sub:
                q, kk, vv = v.chunk(3, dim=0)
                p = sub.split("in_proj_")[1]
                out[b + f"attention.self.query.{p}"] = q
                out[b + f"attention.self.key.{p}"] = kk
                out[b + f"attention.self.value.{p}"] = vv
            elif mod in ("ffn.layers.0", "ffn.layers.4"):
                out[b + f"mlp.dense{1 if mod.endswith('0') else 2}.{p}"] = v.flatten(1) if v.ndim == 4 else v
            else:
                out[b + f"{names[mod]}.{p}"] = v
    return out


@pytest.mark.parametrize("fmt", ["nvlabs", "transformers"], ids=["B-nv", "E"])
def test_mit_converter_other_namings_match_mmseg(fmt: str) -> None:
    mm = _official_backbone()
    reference = convert_mit(mm)
    other = _mmseg_to_nvlabs(mm) if fmt == "nvlabs" else _mmseg_to_hf(mm)
    converted = convert_mit(other)
    assert converted.keys() == reference.keys()
    for k in reference:
        assert torch.equal(converted[k], reference[k]), k
    encoder = mit_b0()
    encoder.load_state_dict(converted)  # strict
    assert convert_mit(converted) == converted  # already converted: passes unchanged


def test_mit_converter_rejects_unknown_keys() -> None:
    with pytest.raises(CheckpointError, match="not understood"):
        convert_mit({"layers.0.0.projection.weight": torch.zeros(1), "auxiliary_head.conv.weight": torch.zeros(1)})


def test_mit_pretrained_loads_registered_encoder_weights(tmp_path: Path, local_hub) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(3)
    source = mit_b0()
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "model.safetensors"))
    local_hub.add_repo("segcore/mit-b0-imagenet", tmp_path)
    loaded = segcore.build_encoder("mit-b0", pretrained=True)
    for k, v in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"depths": (1, 1, 1)}, "one entry per stage each, got lengths"),
        ({"num_heads": (1, 2, 5, 7)}, "must be multiples of num_heads"),
        ({"sr_ratios": (8, 4, 0, 1)}, "sr_ratios must be positive"),
        ({"drop_path_rate": 1.0}, r"drop_path_rate must lie in \[0, 1\)"),
    ],
)
def test_mit_options_are_checked_where_they_enter(options: dict, message: str) -> None:
    with pytest.raises(OptionsError, match=message):
        segcore.build_model("mit-b0", "mlp", 3, encoder_options=options)

"""Parity of mscan-t + ham with the official SegNeXt-T fixture (spec §7)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import segcore
import torch
from segcore.weights.state_dict import load_state_dict_file

SHARED = Path(__file__).resolve().parents[3].parent / "shared"
FIXTURE = SHARED / "fixtures" / "segnext" / "mscan_t_ham"
TOL = 1e-4


@pytest.fixture(scope="module")
def case() -> dict:
    if not (FIXTURE / "case.json").is_file():
        pytest.skip("shared/fixtures not found (segnext/mscan_t_ham)")
    from safetensors.torch import load_file

    return {"case": json.loads((FIXTURE / "case.json").read_text()), "io": load_file(str(FIXTURE / "io.safetensors"))}


def _check(model: segcore.SegModel, io: dict) -> dict[str, float]:
    model.eval()
    diffs = {}
    with torch.no_grad():
        feats = model.encoder(io["image"])
        for i, f in enumerate(feats):
            diffs[f"features.{i}"] = (f - io[f"features.{i}"]).abs().max().item()
        torch.manual_seed(123)  # the fixture's NMF seed, immediately before the forward (case.json)
        out = model.forward_output(io["image"])
    diffs["logits"] = (out.logits - io["logits"]).abs().max().item()
    assert out.logits.shape == io["logits"].shape
    for name, d in diffs.items():
        assert d <= TOL, f"{name}: max abs diff {d}"
    return diffs


@pytest.fixture(scope="module")
def converted(case: dict) -> segcore.SegModel:
    return segcore.convert_checkpoint(
        FIXTURE / "official.safetensors", format="mmseg", official_config=case["case"]["config"]
    )


def test_parity_through_official_config(case: dict, converted: segcore.SegModel) -> None:
    model = converted
    assert type(model.encoder).__name__ == "MSCAN" and model.adapter is None
    assert model.decoder.options.md_r == 16 and model.decoder.in_index == [1, 2, 3]
    diffs = _check(model, case["io"])
    print("segnext-t parity max abs diff:", diffs)


def test_parity_in_nchw_memory(case: dict) -> None:
    """The default runs channels-last; the NCHW path computes the same function."""
    fmt = {"memory_format": "contiguous"}
    model = segcore.convert_checkpoint(
        FIXTURE / "official.safetensors",
        format="mmseg",
        official_config=case["case"]["config"],
        encoder_options=fmt,
        decoder_options=fmt,
    )
    assert model.encoder.options.memory_format == model.decoder.options.memory_format == "contiguous"
    diffs = _check(model, case["io"])
    print("segnext-t parity (NCHW) max abs diff:", diffs)


def test_parity_through_explicit_names(case: dict, converted: segcore.SegModel) -> None:
    model = segcore.convert_checkpoint(
        FIXTURE / "official.safetensors",
        format="mmseg",
        encoder="mscan-t",
        decoder="ham",
        num_classes=150,
        decoder_options={"channels": 256, "ham_channels": 256, "md_r": 16},
    )
    # Same architecture and weights as the official-config model, whose outputs are checked above.
    assert model.encoder.options == converted.encoder.options
    assert model.decoder.in_index == converted.decoder.in_index == [1, 2, 3]  # (-3, -2, -1) vs (1, 2, 3)
    ours, theirs = asdict(model.decoder.options), asdict(converted.decoder.options)
    ours.pop("in_index"), theirs.pop("in_index")
    assert ours == theirs
    ref = converted.state_dict()
    assert (
        all(torch.equal(v, ref[k]) for k, v in model.state_dict().items()) and model.state_dict().keys() == ref.keys()
    )


def test_converted_keys_match_exactly(case: dict) -> None:
    from segcore_segnext.convert import convert

    official = load_state_dict_file(FIXTURE / "official.safetensors")
    assert len(official) == 550
    model = segcore.build_model("mscan-t", "ham", 150, decoder_options={"md_r": 16})
    ours = set(model.state_dict())
    enc = convert("mscan-t", {k[9:]: v for k, v in official.items() if k.startswith("backbone.")})
    dec = convert("ham", {k[12:]: v for k, v in official.items() if k.startswith("decode_head.")})
    converted = {f"encoder.{k}" for k in enc} | {f"decoder.{k}" for k in dec}
    assert converted - ours == set(), "unexpected keys"
    assert ours - converted == set(), "missing keys"
    assert sum(p.numel() for p in model.parameters()) == case["case"]["params"]["total"]


def test_nmf_bases_are_the_official_draw(case: dict) -> None:
    from segcore_segnext.ham import NMF2D

    nmf = NMF2D(1, 16, 6, 7, 1.0, seed=None)
    torch.manual_seed(123)
    bases = nmf._bases(1, 256, torch.device("cpu"))
    assert torch.equal(bases, case["io"]["decode.bases_init"])
    seeded = NMF2D(1, 16, 6, 7, 1.0, seed=123)._bases(1, 256, torch.device("cpu"))
    assert torch.equal(seeded, case["io"]["decode.bases_init"])


def test_nmf_seed_option_makes_eval_deterministic() -> None:
    model = segcore.build_model(
        "mscan-t",
        "ham",
        3,
        encoder_options={"embed_dims": (8, 16, 32, 32), "depths": (1, 1, 1, 1)},
        decoder_options={"channels": 32, "ham_channels": 32, "md_r": 4, "nmf_seed": 7},
    ).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.manual_seed(999)
        a = model.forward_output(x).logits
        state = torch.get_rng_state()
        b = model.forward_output(x).logits
        assert torch.equal(state, torch.get_rng_state()), "nmf_seed must not consume the global RNG"
        torch.manual_seed(1)
        c = model.forward_output(x).logits
    assert torch.equal(a, b) and torch.equal(a, c)
    unseeded = segcore.build_model(
        "mscan-t",
        "ham",
        3,
        encoder_options={"embed_dims": (8, 16, 32, 32), "depths": (1, 1, 1, 1)},
        decoder_options={"channels": 32, "ham_channels": 32, "md_r": 4},
    ).eval()
    unseeded.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.manual_seed(5)
        d = unseeded.forward_output(x).logits
        torch.manual_seed(6)
        e = unseeded.forward_output(x).logits
    assert not torch.equal(d, e)  # official behaviour: bases follow the global RNG

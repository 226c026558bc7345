"""Parity with the official SegViT modules on the shared fixtures (spec segvit.md §11)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import segcore
import torch
from segcore_segvit.loss import atm_loss

SHARED = Path(__file__).resolve().parents[3].parent / "shared"
FIXTURES = SHARED / "fixtures" / "segvit"
ATOL = 1e-4


def _load(case: str):
    folder = FIXTURES / case
    if not folder.exists():
        pytest.skip("shared/fixtures not found (segvit parity fixtures)")
    from safetensors.torch import load_file

    cfg = json.loads((folder / "case.json").read_text())
    io = load_file(str(folder / "io.safetensors"))
    model = segcore.convert_checkpoint(folder / "official.safetensors", format="mmseg", official_config=cfg["config"])
    return cfg, io, model.eval()


def _maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


@pytest.mark.parametrize("case", ["atm_tiny", "shrunk_tiny"], ids=["atm", "atm-shrunk"])
def test_outputs_match_official(case: str) -> None:
    cfg, io, model = _load(case)
    # Parameter count: official minus the dead cls_token and pos_embed class slot (2 x C).
    c = cfg["config"]["backbone"]["embed_dims"]
    assert sum(p.numel() for p in model.parameters()) == cfg["param_counts"]["total"] - 2 * c
    with torch.no_grad():
        feats = model.encoder(io["image"])
        for j, feat in enumerate(feats):
            ref = io[f"backbone_out_{j}"]
            got = feat if ref.ndim == 4 else feat.flatten(2).transpose(1, 2)  # vit_shrink returns tokens
            assert _maxdiff(got, ref) < ATOL
        out = model.decoder(feats, tuple(io["image"].shape[-2:]))
        assert _maxdiff(out.logits, io["semseg"]) < ATOL
        assert _maxdiff(out.aux["class_logits"][-1], io["pred_logits"]) < ATOL
        size = io["pred_masks"].shape[-2:]
        masks = torch.nn.functional.interpolate(out.aux["mask_logits"][-1], size=size, mode="bilinear")
        assert _maxdiff(masks, io["pred_masks"]) < 2 * ATOL
        for k in range(out.aux["class_logits"].shape[0] - 1):
            assert _maxdiff(out.aux["class_logits"][k], io[f"aux{k}_pred_logits"]) < ATOL
            assert _maxdiff(out.aux["mask_logits"][k], io[f"aux{k}_pred_masks"]) < ATOL
        # Through SegModel: logits at input size, argmax agrees with the official semantic map.
        full = model(io["image"])
        assert _maxdiff(full, io["semseg"]) < ATOL
    loss = atm_loss(cfg["config"]["decode_head"]["num_classes"])(out, io["loss_label"])
    for name, value in loss.items():
        ref = io["loss.total"] if name == "loss" else io[f"loss.{name}"]
        assert value.item() == pytest.approx(ref.item(), rel=1e-4)
    assert len(loss) == 10


def test_stage_intermediates_match_official() -> None:
    _, io, model = _load("atm_tiny")
    with torch.no_grad():
        out = model.decoder(model.encoder(io["image"]), (128, 128))
    # Stage masks are cumulative; their differences are the per-stage similarity maps.
    sims = torch.diff(out.aux["mask_logits"], dim=0, prepend=torch.zeros_like(out.aux["mask_logits"][:1]))
    for s in range(3):
        assert _maxdiff(sims[s], io[f"stage{s}_attn_logits"]) < ATOL


def test_resized_position_embedding_matches_official() -> None:
    """160x160 input: the 8x8 position grid is resized bicubically to 10x10 (spec §2.2 step 3)."""
    _, io, model = _load("atm_tiny")
    with torch.no_grad():
        feats = model.encoder(io["alt_image"])
        for j, feat in enumerate(feats):
            assert _maxdiff(feat, io[f"alt_backbone_out_{j}"]) < ATOL
        out = model.decoder(feats, (160, 160))
    # The head upsamples to its configured img_size (128), as upstream does.
    assert _maxdiff(out.logits, io["alt_semseg"]) < ATOL

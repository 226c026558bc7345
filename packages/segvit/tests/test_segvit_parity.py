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


# Official parameter totals (spec §10 and research/segvit_numbers.md) of each registered checkpoint's model.
CHECKPOINT_PARAMS = {
    "segvit-vit-b16-ade20k": 108_736_279,
    "segvit-vit-l16-ade20k": 344_305_303,
    "segvit-vit-l16-shrunk-ade20k": 344_598_679,
}


def test_registered_checkpoints_build_the_official_models() -> None:
    """Every registered name builds (on meta) the model its official file needs: names, classes, sizes, params."""
    from segcore.plugins.registry import components

    ckpts = {n: s for n, s in components("checkpoints").items() if n.startswith("segvit-")}
    expected = {"segvit-vit-b16-ade20k"} | {
        f"segvit-vit-l16{v}-{d}" for v in ("", "-shrunk") for d in ("ade20k", "coco-stuff10k", "pascal-context")
    }
    assert set(ckpts) == expected
    for name, spec in ckpts.items():
        assert spec.format == "mmseg" and spec.official_url.endswith("/" + spec.official_filename), name
        assert spec.official_url.startswith("https://huggingface.co/Akide/SegViTv1/resolve/"), name
        assert spec.encoder.endswith("-shrunk") == (spec.decoder == "atm-shrunk"), name
        img = spec.encoder_options["img_size"]
        assert (
            img
            == spec.decoder_options["img_size"]
            == {"ade20k": 640 if "l16" in name else 512}.get(
                spec.dataset, 512 if spec.dataset == "coco-stuff10k" else 480
            )
        )
        assert spec.num_classes == {"ade20k": 150, "coco-stuff10k": 171, "pascal-context-60": 60}[spec.dataset]
        assert spec.model_config.get("mean") == ((127.5,) * 3 if "l16" in name else None), name
        with torch.device("meta"):
            model = segcore.build_model(
                spec.encoder, spec.decoder, spec.num_classes, dict(spec.encoder_options), dict(spec.decoder_options)
            )
        assert model.encoder.pos_embed.shape[1] == (img // 16) ** 2, name
        if name in CHECKPOINT_PARAMS:
            total = sum(p.numel() for p in model.parameters())
            assert total == CHECKPOINT_PARAMS[name] - 2 * model.encoder.embed_dim, name


def _tiny_spec(name: str, case: str, **changes: object):
    """The registered spec of ``name`` with the fixture's small architecture (same converter path)."""
    import dataclasses

    from segcore.plugins.registry import components
    from segcore_segvit.convert import atm_from_official, tpn_atm_from_official, vit_shrink_from_official

    cfg = json.loads((FIXTURES / case / "case.json").read_text())["config"]
    spec = components("checkpoints")[name]
    if case == "shrunk_tiny":
        _, eo = vit_shrink_from_official(cfg["backbone"])
        _, do = tpn_atm_from_official(cfg["decode_head"])
    else:
        from segcore_segvit.convert import vit_from_official

        _, eo = vit_from_official(cfg["backbone"])
        _, do = atm_from_official(cfg["decode_head"])
    num_classes = cfg["decode_head"]["num_classes"]
    return dataclasses.replace(spec, encoder_options=eo, decoder_options=do, num_classes=num_classes, **changes)


@pytest.mark.parametrize(
    ("name", "case"),
    [("segvit-vit-l16-ade20k", "atm_tiny"), ("segvit-vit-l16-shrunk-ade20k", "shrunk_tiny")],
    ids=["atm", "atm-shrunk"],
)
def test_registered_checkpoint_through_local_hub(name: str, case: str, tmp_path, monkeypatch) -> None:
    """from_pretrained(registered name): from its Hub repo, else from the official file (converted, cached).

    The registered spec keeps its name, repo id, format and decoder; only the architecture is the fixture's
    small one so the official file (the fixture's official.safetensors) is converted for real.
    """
    from segcore.plugins.registry import components
    from segcore.testing import serve_hub

    _, io, reference = _load(case)
    monkeypatch.setenv("SEGCORE_CACHE", str(tmp_path / "cache"))
    table = components("checkpoints")
    # 1. The Hub repo exists: loaded as is.
    repo = tmp_path / "repo"
    reference.save_pretrained(repo)
    monkeypatch.setitem(table, name, _tiny_spec(name, case))
    with serve_hub({table[name].repo_id: repo}) as hub:
        loaded = segcore.SegModel.from_pretrained(name)
        assert any(p.endswith(f"{table[name].repo_id}/resolve/main/model.safetensors") for _, p in hub.requests)
    # 2. No Hub copy: the official file is downloaded, converted with the plugin's converter and cached.
    # An mmcv-style .pth as released (state_dict + meta + optimizer state), loaded with weights_only.
    from safetensors.torch import load_file

    official = tmp_path / table[name].official_filename
    state = load_file(str(FIXTURES / case / "official.safetensors"))
    torch.save(
        {"meta": {"iter": 160000}, "state_dict": state, "optimizer": {"state": {}, "param_groups": []}}, official
    )
    with serve_hub() as hub:
        url = hub.add_file(table[name].official_filename, official)
        monkeypatch.setitem(table, name, _tiny_spec(name, case, official_url=url))
        converted = segcore.SegModel.from_pretrained(name)
        assert any(p.startswith("/files/") for _, p in hub.requests)
    assert (tmp_path / "cache" / "converted" / name / "model.safetensors").is_file()
    with torch.no_grad():
        for model in (loaded, converted):
            assert _maxdiff(model.eval()(io["image"]), io["semseg"]) < ATOL

"""Shapes, options, converter, loss modes, parameter/MAC counts and recipes of segcore-segvit."""

from __future__ import annotations

import pytest
import segcore
import torch
from segcore.models.contracts import check_feature_info
from segcore.plugins.specs import FeatureInfo
from segcore.tools.benchmark import count_params_and_macs
from segcore_segvit.atm import ATMLayer, atm, atm_shrunk, select_qu_maps, semantic_map
from segcore_segvit.convert import convert_atm, convert_vit, vit_from_official
from segcore_segvit.loss import atm_loss

TINY = {"embed_dim": 64, "depth": 4, "num_heads": 2, "img_size": 64}


@pytest.mark.parametrize(
    ("name", "options", "strides"),
    [
        ("vit-b16", {"out_indices": (1, 3)}, [16, 16]),
        ("vit-b16-shrunk", {"out_indices": (1, 3), "shrink_idx": 2}, [16, 32]),
    ],
    ids=["vit-b16", "vit-b16-shrunk"],
)
def test_encoder_feature_info(name: str, options: dict, strides: list[int]) -> None:
    enc = segcore.build_encoder(name, **TINY, **options)
    assert [i.stride for i in enc.feature_info] == strides
    x = torch.randn(1, 3, 64, 96)
    check_feature_info(enc, enc(x), (64, 96))
    assert enc.size_divisor == 16  # the patch size only, also when shrunk (spec §2.2 corner padding, §4.1)


def test_encoder_has_no_class_token_and_mmseg_drop_path() -> None:
    enc = segcore.build_encoder("vit-b16", **TINY, out_indices=(3,), drop_path_rate=0.3)
    assert enc.cls_token is None and enc.pos_embed.shape == (1, 16, 64)
    assert all(isinstance(b.drop_path1, torch.nn.Identity) for b in enc.blocks)
    assert not isinstance(enc.blocks[-1].drop_path2, torch.nn.Identity)


def test_unknown_option_rejected() -> None:
    with pytest.raises(Exception, match="out_idx"):
        segcore.build_encoder("vit-b16", out_idx=(1,))


def test_model_non_square_and_loss_backward() -> None:
    model = segcore.build_model("vit-b16", "atm", 5, {**TINY, "out_indices": (1, 3)}, {"embed_dims": 32})
    images = torch.randn(2, 3, 64, 96)
    assert model(images).shape == (2, 5, 64, 96)
    labels = torch.randint(0, 5, (2, 64, 96))
    labels[:, :8] = 255
    losses = model.compute_loss(images, labels)
    assert {"loss", "loss_ce", "loss_mask", "loss_dice", "loss_ce_0", "loss_dice_0"} <= set(losses)
    losses["loss"].backward()
    assert model.encoder.patch_embed.proj.weight.grad is not None


def test_atm_on_hierarchical_features() -> None:
    """in_strides None: maps of several strides and widths; masks are summed at the finest grid."""
    infos = [FeatureInfo(16, 4), FeatureInfo(32, 8), FeatureInfo(64, 16)]
    dec = atm(infos, 7, embed_dims=32, num_layers=1)
    feats = [torch.randn(1, i.channels, 64 // i.stride, 48 // i.stride) for i in infos]
    out = dec(feats, (64, 48))
    assert out.logits.shape == (1, 7, 64, 48)
    assert out.aux["mask_logits"].shape == (3, 1, 7, 16, 12)
    assert out.aux["class_logits"].shape == (3, 1, 7, 8)


@pytest.mark.parametrize(
    ("strides", "expected"),
    [
        ([16, 32], (0, 1)),
        ([16, 16, 16], (0, 2)),
        ([4, 8, 16, 32], (2, 3)),
        ([2, 4, 8, 16, 32], (3, 4)),
        ([4, 8], (0, 1)),
        ([4, 8, 16], (1, 2)),
        ([16], (0, 0)),
    ],
    ids=["shrunk-vit", "plain-vit", "pyramid", "resnet", "two-shallow", "pyramid-to-16", "single"],
)
def test_select_qu_maps_rule(strides: list[int], expected: tuple[int, int]) -> None:
    assert select_qu_maps([FeatureInfo(8 * (i + 1), s) for i, s in enumerate(strides)]) == expected


def test_atm_shrunk_on_hierarchical_non_square_reads_the_chosen_maps() -> None:
    """Four maps (strides 4..32), 64x96 input with img_size 64: only the 1/16 and 1/32 maps get gradients."""
    torch.manual_seed(0)
    infos = [FeatureInfo(16, 4), FeatureInfo(24, 8), FeatureInfo(40, 16), FeatureInfo(64, 32)]
    dec = atm_shrunk(infos, 5, embed_dims=32, num_layers=1, img_size=64)
    assert [m.in_features for m in dec.input_proj] == [40, 64]
    feats = [torch.randn(1, i.channels, 64 // i.stride, 96 // i.stride, requires_grad=True) for i in infos]
    out = dec(feats, (64, 96))
    assert out.logits.shape == (1, 5, 64, 96)
    assert out.aux["mask_logits"].shape == (1, 1, 5, 4, 6)
    out.logits.sum().backward()
    assert feats[0].grad is None and feats[1].grad is None
    assert feats[2].grad.abs().sum() > 0 and feats[3].grad.abs().sum() > 0
    assert dec.pixel_queries.weight.grad.abs().sum() > 0


def test_atm_shrunk_pixel_queries_resized_only_off_img_size() -> None:
    infos = [FeatureInfo(32, 16), FeatureInfo(32, 32)]
    dec = atm_shrunk(infos, 3, embed_dims=32, num_layers=1, img_size=64).eval()
    same, grid = dec._pixel_queries((64, 64))
    assert grid == (4, 4) and same.data_ptr() == dec.pixel_queries.weight.data_ptr()
    resized, grid = dec._pixel_queries((64, 96))
    assert grid == (4, 6) and resized.shape == (1, 24, 32)
    expected = torch.nn.functional.interpolate(
        dec.pixel_queries.weight.reshape(1, 4, 4, 32).permute(0, 3, 1, 2), (4, 6), mode="bicubic"
    )
    assert torch.allclose(resized, expected.flatten(2).transpose(1, 2))
    with pytest.raises(segcore.OptionsError, match="multiple of 16"):
        atm_shrunk(infos, 3, img_size=70)


def test_fused_cross_attention_equals_logit_path() -> None:
    """need_mask=False (fused SDPA) gives the same update as the logits path that also yields the mask."""
    torch.manual_seed(0)
    layer = ATMLayer(32, 4, 0.1).eval()
    q, mem = torch.randn(2, 7, 32), torch.randn(2, 20, 32)
    with torch.no_grad():
        a, sim = layer(q, mem, need_mask=True)
        b, none = layer(q, mem, need_mask=False)
        ca = layer.cross_attn
        heads = lambda x: x.reshape(2, -1, 4, 8).transpose(1, 2)  # noqa: E731
        t = layer.norm1(q + layer.self_attn(q, q, q, need_weights=False)[0])
        ref = (heads(ca.q(t)) @ heads(ca.k(mem)).transpose(-2, -1)) / 8**0.5
    assert none is None and sim.shape == (2, 7, 20)
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(sim, ref.mean(1), atol=1e-5)


def test_semantic_map_matches_official_order() -> None:
    """Upsample logits -> sigmoid -> mix with class probabilities (spec quirk 17), channels-last or not."""
    torch.manual_seed(0)
    cls, masks = torch.randn(2, 6, 5), 3 * torch.randn(2, 6, 4, 5)
    ref = torch.einsum(
        "bqc,bqhw->bchw",
        cls.softmax(-1)[..., :-1],
        torch.nn.functional.interpolate(masks, (32, 40), mode="bilinear").sigmoid(),
    )
    got = semantic_map(cls, masks, (32, 40))
    assert got.shape == ref.shape and torch.allclose(got, ref, atol=1e-6)
    wrong = torch.nn.functional.interpolate(
        torch.einsum("bqc,bqhw->bchw", cls.softmax(-1)[..., :-1], masks.sigmoid()), (32, 40), mode="bilinear"
    )
    assert not torch.allclose(got, wrong, atol=1e-3)  # the cheaper order is not equivalent


@pytest.mark.parametrize(
    ("encoder", "decoder", "eo", "do"),
    [
        ("vit-b16", "atm", {"out_indices": (1, 3)}, {"embed_dims": 32}),
        ("vit-b16-shrunk", "atm-shrunk", {"out_indices": (1, 3), "shrink_idx": 2}, {"embed_dims": 32, "img_size": 64}),
    ],
    ids=["atm", "atm-shrunk"],
)
def test_bf16_autocast_and_channels_last_on_cpu(encoder: str, decoder: str, eo: dict, do: dict) -> None:
    """Channels-last inputs/weights give the fp32 result; bf16 autocast stays finite, close and trainable."""
    torch.manual_seed(0)
    model = segcore.build_model(encoder, decoder, 5, {**TINY, **eo}, do).eval()
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ref = model(images)
        cl = model.to(memory_format=torch.channels_last)(images.contiguous(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(images)
    assert torch.allclose(cl, ref, atol=1e-5)
    assert torch.isfinite(low).all() and (low.float() - ref).abs().max() < 0.1 * ref.abs().max()
    model.train()
    labels = torch.randint(0, 5, (1, 64, 96))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model.compute_loss(images, labels)
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_loss_ignore_modes_differ_only_with_ignored_pixels() -> None:
    torch.manual_seed(0)
    dec = atm([FeatureInfo(32, 16)], 4, embed_dims=32, num_layers=1)
    out = dec([torch.randn(1, 32, 4, 4)], (64, 64))
    labels = torch.randint(0, 4, (1, 64, 64))
    official, exclude = atm_loss(4), atm_loss(4, ignore_mode="exclude")
    assert official(out, labels)["loss"].item() == pytest.approx(exclude(out, labels)["loss"].item())
    labels[:, :32] = 255
    a, b = official(out, labels), exclude(out, labels)
    assert a["loss_ce"].item() == pytest.approx(b["loss_ce"].item())
    assert a["loss_mask"].item() != pytest.approx(b["loss_mask"].item())


def test_converter_is_idempotent_and_drops_dead_keys() -> None:
    enc = segcore.build_encoder("vit-b16", **TINY, out_indices=(3,))
    ours = enc.state_dict()
    pos = torch.cat([torch.zeros(1, 1, 64), ours["pos_embed"]], 1)
    official = {"cls_token": torch.zeros(1, 1, 64), "pos_embed": pos, "ln1.weight": torch.ones(64)}
    official["patch_embed.projection.weight"] = ours["patch_embed.proj.weight"]
    official["patch_embed.projection.bias"] = ours["patch_embed.proj.bias"]
    mapping = {
        "norm1": "ln1",
        "norm2": "ln2",
        "attn.qkv.weight": "attn.attn.in_proj_weight",
        "attn.qkv.bias": "attn.attn.in_proj_bias",
        "attn.proj": "attn.attn.out_proj",
        "mlp.fc1": "ffn.layers.0.0",
        "mlp.fc2": "ffn.layers.1",
    }
    for key, value in ours.items():
        if key.startswith("blocks."):
            i, rest = key.split(".", 2)[1:]
            for new, old in mapping.items():
                if rest.startswith(new):
                    rest = old + rest[len(new) :]
                    break
            official[f"layers.{i}.{rest}"] = value
    converted = convert_vit(official)
    assert set(converted) == set(ours)
    assert torch.equal(converted["pos_embed"], ours["pos_embed"])
    assert convert_vit(converted) == converted
    head = {"q.weight": torch.zeros(3, 8), "loss_decode.criterion.empty_weight": torch.ones(4)}
    assert set(convert_atm(head)) == {"class_queries.weight"}


# (encoder, decoder, crop, classes, encoder options, decoder options, paper GMACs, official params)
PAPER_ROWS = [
    ("vit-b16", "atm", 512, 150, {}, {}, 120.9, 108_736_279),
    ("vit-b16", "atm", 512, 150, {"out_indices": (11,)}, {}, 115.77, None),  # Table 8 single-stage ATM
    ("vit-l16", "atm", 640, 150, {}, {}, 637.9, 344_305_303),
    ("vit-l16-shrunk", "atm-shrunk", 640, 150, {}, {}, 373.5, 344_598_679),
    ("vit-l16", "atm", 512, 171, {"img_size": 512}, {}, 383.9, None),
    ("vit-l16-shrunk", "atm-shrunk", 512, 171, {"img_size": 512}, {"img_size": 512}, 224.8, None),
    ("vit-l16", "atm", 480, 60, {"img_size": 480}, {}, 321.6, None),
    ("vit-l16-shrunk", "atm-shrunk", 480, 60, {"img_size": 480}, {"img_size": 480}, 186.9, None),
    ("vit-b16-shrunk", "atm-shrunk", 512, 150, {}, {"img_size": 512}, 97.1, None),
]


@pytest.mark.parametrize(
    "row", PAPER_ROWS[:4], ids=["vit-b16+atm", "vit-b16+atm-single", "vit-l16+atm", "vit-l16-shrunk+atm-shrunk"]
)
def test_params_and_macs_match_paper(row: tuple) -> None:
    enc, dec, crop, classes, eo, do, gmacs, params = row
    with torch.device("meta"):  # no weights allocated: counts only
        model = segcore.build_model(enc, dec, classes, eo, do)
    got_params, macs = count_params_and_macs(model, (crop, crop))
    # Ours lacks the dead cls_token and pos_embed[:, 0] (2 x C parameters).
    if params is not None:
        assert got_params == params - 2 * model.encoder.embed_dim
    assert macs / 1e9 == pytest.approx(gmacs, rel=0.03)


@pytest.mark.slow
@pytest.mark.parametrize("row", PAPER_ROWS[4:], ids=["coco-l", "coco-l-shrunk", "pc-l", "pc-l-shrunk", "b-shrunk"])
def test_macs_other_paper_rows(row: tuple) -> None:
    enc, dec, crop, classes, eo, do, gmacs, _ = row
    with torch.device("meta"):
        model = segcore.build_model(enc, dec, classes, eo, do)
    assert count_params_and_macs(model, (crop, crop))[1] / 1e9 == pytest.approx(gmacs, rel=0.03)


def _mmcv_rule(name: str) -> tuple[float, float]:
    """mmcv 1.x custom_keys {'head': lr 10, 'norm': decay 0, 'ln': decay 0}: longest then alphabetical, first hit."""
    for key, mult in sorted(
        {"head": (10.0, 1.0), "norm": (1.0, 0.0), "ln": (1.0, 0.0)}.items(), key=lambda kv: (-len(kv[0]), kv[0])
    ):
        if key in name:
            return mult
    return (1.0, 1.0)


def test_recipe_param_groups_match_official_custom_keys() -> None:
    """Translate every official parameter name of the atm_tiny fixture and compare lr/decay multipliers."""
    from segcore.plugins.registry import components
    from segcore.train.optim import param_groups
    from segcore_segvit.convert import convert

    keys = ["backbone.patch_embed.projection.weight", "backbone.pos_embed"]
    for i in range(2):
        keys += [
            f"backbone.layers.{i}.{k}"
            for k in (
                "ln1.weight",
                "ln1.bias",
                "attn.attn.in_proj_weight",
                "attn.attn.out_proj.bias",
                "ln2.weight",
                "ffn.layers.0.0.bias",
                "ffn.layers.1.weight",
            )
        ]
    keys += [
        "decode_head.input_proj_1.weight",
        "decode_head.proj_norm_1.weight",
        "decode_head.q.weight",
        "decode_head.class_embed.bias",
    ]
    keys += [
        f"decode_head.decoder_1.layers.0.{k}"
        for k in ("norm1.weight", "self_attn.in_proj_weight", "multihead_attn.q.weight", "linear1.bias")
    ]
    recipe = components("recipes")["segvit-ade20k-160k"]
    model = segcore.build_model("vit-b16", "atm", 4, {**TINY, "out_indices": (1,)}, {"embed_dims": 32, "num_layers": 1})
    groups = param_groups(
        model, recipe.lr, recipe.weight_decay, recipe.param_rules, recipe.norm_decay_mult, recipe.bias_decay_mult
    )
    ours = {n: (g["lr_mult"], g["decay_mult"]) for g in groups for n in g["names"]}
    for key in keys:
        part, _, rest = key.partition(".")
        comp, prefix = ("vit-b16", "encoder.") if part == "backbone" else ("atm", "decoder.")
        value = torch.zeros(1, 5, 1) if rest == "pos_embed" else torch.zeros(1)
        (name,) = convert(comp, {rest: value})
        assert ours[prefix + name] == _mmcv_rule(key), key
    assert recipe.crop_size == (640, 640) and recipe.model.encoder == "vit-l16"


def test_pretrained_loads_timm_augreg_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    """pretrained=True goes through timm; stand in a randomly initialised model of the same tag (no network)."""
    import timm

    calls = []

    def fake_create_model(tag: str, pretrained: bool = False, **kwargs: object) -> torch.nn.Module:
        calls.append((tag, pretrained))
        return timm.models.vision_transformer.VisionTransformer(img_size=384, embed_dim=768, depth=12, num_heads=12)

    monkeypatch.setattr(timm, "create_model", fake_create_model)
    enc = segcore.build_encoder("vit-b16", pretrained=True)
    assert calls == [("vit_base_patch16_384.augreg_in21k_ft_in1k", True)]
    assert enc.pos_embed.shape == (1, 32 * 32, 768)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"out_indices": (5, 12)}, r"out_indices \(5, 12\) must lie in 0..11"),
        ({"out_indices": ()}, "out_indices"),
        ({"shrink_idx": 12}, r"shrink_idx must lie in 0..11"),
        ({"embed_dim": 100}, r"embed_dim \(100\) must be a positive multiple of num_heads \(12\)"),
    ],
)
def test_vit_options_are_checked_where_they_enter(options: dict, message: str) -> None:
    with pytest.raises(segcore.OptionsError, match=message):
        segcore.build_model("vit-b16", "atm", 3, encoder_options=options)


def test_official_config_outside_segvit_is_refused_with_the_setting() -> None:
    with pytest.raises(segcore.OptionsError, match="patch_size=8 is not supported"):
        vit_from_official({"with_cls_token": False, "final_norm": False, "patch_size": 8})

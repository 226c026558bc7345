"""MSCAN / ham components, converter, plugin registration and recipes of segcore-segnext."""

from __future__ import annotations

import pytest
import segcore
import torch
from segcore.errors import OptionsError
from segcore.models.contracts import check_feature_info

VARIANTS = ["mscan-t", "mscan-s", "mscan-b", "mscan-l"]
HEAD = {
    "mscan-t": {"channels": 256, "ham_channels": 256, "md_r": 16},
    "mscan-s": {"channels": 256, "ham_channels": 256, "md_r": 16},
    "mscan-b": {"channels": 512, "ham_channels": 512, "md_r": 64},
    "mscan-l": {"channels": 1024, "ham_channels": 1024, "md_r": 64},
}
# Exact parameter totals with 150 classes (spec §4.2 for T; paper Table 8: 4.3 / 13.9 / 27.6 / 48.9 M).
PARAMS = {"mscan-t": 4_263_414, "mscan-s": 13_932_886, "mscan-b": 27_636_310, "mscan-l": 48_926_550}
# Paper GMACs at 512x512 (Table 8, ADE20K).
PAPER_GMACS = {"mscan-t": 6.61, "mscan-s": 15.87, "mscan-b": 34.92, "mscan-l": 70.00}


def _tiny_encoder() -> segcore.Encoder:
    return segcore.build_encoder("mscan-t", embed_dims=(8, 16, 32, 32), depths=(1, 1, 1, 1))


@pytest.mark.parametrize("name", VARIANTS, ids=VARIANTS)
def test_feature_info_matches_outputs(name: str) -> None:
    # The variant's real widths; one block per stage keeps the test fast (depth does not change shapes).
    enc = segcore.build_encoder(name, depths=(1, 1, 1, 1)).eval()
    assert [i.stride for i in enc.feature_info] == [4, 8, 16, 32]
    with torch.no_grad():
        for size in ((64, 64), (96, 128)):
            check_feature_info(enc, enc(torch.randn(1, 3, *size)), size)


@pytest.mark.parametrize("name", VARIANTS, ids=VARIANTS)
def test_parameter_count_150_classes(name: str) -> None:
    with torch.device("meta"):  # shapes only; no memory or init time
        # Naming the paper's pair is enough: the segnext-* pairs give each MSCAN size its official head.
        model = segcore.build_model(name, "ham", 150)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]
    assert {k: model.config.decoder_options[k] for k in HEAD[name]} == HEAD[name]


@pytest.mark.parametrize(
    "name", [v if v == "mscan-t" else pytest.param(v, marks=pytest.mark.slow) for v in VARIANTS], ids=VARIANTS
)
def test_macs_512_within_3_percent_of_paper(name: str) -> None:
    from segcore.tools.benchmark import count_params_and_macs

    model = segcore.build_model(name, "ham", 150)  # the paper pair's head (segnext-* pairs)
    # The paper counted with torchprofile (spec §6): under that convention every variant is within 0.3 %.
    _, macs = count_params_and_macs(model, (512, 512), convention="torchprofile")
    assert abs(macs / 1e9 - PAPER_GMACS[name]) / PAPER_GMACS[name] < 0.03
    # Core's default convention (matrix products and convolutions only) is lower by the element-wise terms.
    _, core_macs = count_params_and_macs(model, (512, 512))
    assert 0 < macs - core_macs < 0.05 * macs


def test_model_output_at_unpadded_size() -> None:
    model = segcore.build_model(
        "mscan-t",
        "ham",
        5,
        encoder_options={"embed_dims": (8, 16, 32, 32), "depths": (1, 1, 1, 1)},
        decoder_options={"channels": 32, "ham_channels": 32, "md_r": 4},
    ).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 96, 80))
    assert out.shape == (2, 5, 96, 80) and torch.isfinite(out).all()


def test_train_mode_loss_backward_and_drop_path() -> None:
    model = segcore.build_model(
        "mscan-t",
        "ham",
        4,
        encoder_options={"embed_dims": (8, 16, 32, 32), "depths": (2, 1, 1, 2), "drop_path_rate": 0.5},
        decoder_options={"channels": 32, "ham_channels": 32, "md_r": 4},
    ).train()
    assert model.decoder.hamburger.ham.train_steps == 6 and model.decoder.hamburger.ham.eval_steps == 7
    labels = torch.randint(0, 4, (2, 64, 64))
    labels[:, :8] = 255
    losses = model.compute_loss(torch.randn(2, 3, 64, 64), labels)
    losses["loss"].backward()
    grad = model.encoder.block1[0].layer_scale_1.grad
    assert grad is not None and torch.isfinite(grad).all()
    # Gradients flow through the unrolled NMF into ham_in (no one-step trick).
    assert model.decoder.hamburger.ham_in.conv.weight.grad.abs().sum() > 0


def test_bf16_autocast_and_channels_last_close_to_fp32() -> None:
    torch.manual_seed(0)
    enc = _tiny_encoder().eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = enc(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = enc(x)
        cl = enc.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    for r, lo, c in zip(ref, low, cl):
        assert (r - c).abs().max() < 1e-4
        assert (r - lo.float()).abs().max() / r.abs().max() < 0.05


def _small_model(**fmt: str) -> segcore.SegModel:
    return segcore.build_model(
        "mscan-t",
        "ham",
        3,
        encoder_options={"embed_dims": (8, 16, 32, 32), "depths": (1, 1, 1, 1), **fmt},
        decoder_options={"channels": 32, "ham_channels": 32, "md_r": 4, "nmf_seed": 0, "md_s": 2, **fmt},
    ).eval()


def test_channels_last_default_matches_nchw() -> None:
    torch.manual_seed(0)
    nchw = _small_model(memory_format="contiguous")
    default = _small_model()
    default.load_state_dict(nchw.state_dict())
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        ref = nchw(x)
        feats = default.encoder(x)
        out = default(x)
        # The whole model also converted to channels-last (``segcore benchmark --channels-last``).
        default.to(memory_format=torch.channels_last)
        out_cl = default(x.contiguous(memory_format=torch.channels_last))
    assert all(f.is_contiguous(memory_format=torch.channels_last) for f in feats)
    assert all(f.is_contiguous() for f in nchw.encoder(x))
    for o in (out, out_cl):
        assert (ref - o).abs().max() < 1e-4 * ref.abs().max()


def test_bf16_autocast_full_model() -> None:
    model = segcore.build_model(
        "mscan-t",
        "ham",
        3,
        encoder_options={"embed_dims": (8, 16, 32, 32), "depths": (1, 1, 1, 1)},
        decoder_options={"channels": 32, "ham_channels": 32, "md_r": 4, "nmf_seed": 0},
    ).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model.forward_output(x).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model.forward_output(x).logits.float()
    assert torch.isfinite(low).all()
    assert (ref - low).abs().max() / ref.abs().max() < 0.1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"depths": (1, 1, 1)}, "4 entries"),
        ({"drop_path_rate": 1.5}, "drop_path_rate"),
        ({"embed_dim": 3}, "embed_dim"),
        ({"memory_format": "nhwc"}, "memory_format"),
    ],
    ids=["depths-len", "drop-path", "unknown", "memory-format"],
)
def test_mscan_option_validation(options: dict, message: str) -> None:
    with pytest.raises(OptionsError, match=message):
        segcore.build_encoder("mscan-t", **options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"channels": 100}, "num_groups"),
        ({"in_index": (0, 7)}, "in_index"),
        ({"md_r": 0}, "md_r"),
        ({"MD_R": 16}, "MD_R"),
    ],
    ids=["groups", "in-index", "rank", "unknown"],
)
def test_ham_option_validation(options: dict, message: str) -> None:
    enc = _tiny_encoder()
    with pytest.raises(OptionsError, match=message):
        segcore.build_decoder("ham", enc.feature_info, 3, **{"channels": 32, "ham_channels": 32, **options})


def test_ham_in_index_option() -> None:
    enc = _tiny_encoder().eval()
    dec = segcore.build_decoder(
        "ham", enc.feature_info, 3, channels=32, ham_channels=32, md_r=4, in_index=(0, 1, 2, 3), nmf_seed=0
    ).eval()
    assert dec.squeeze.conv.in_channels == 8 + 16 + 32 + 32
    with torch.no_grad():
        out = dec(enc(torch.randn(1, 3, 64, 64)), (64, 64))
    assert out.logits.shape == (1, 3, 16, 16)  # stride of the first selected level


def test_converter_mmseg1x_rename_and_imagenet_file() -> None:
    from segcore_segnext.convert import convert

    enc = _tiny_encoder()
    ours = {k: v.clone() for k, v in enc.state_dict().items()}
    # A': mmseg 1.x puts the depthwise conv directly under mlp.
    renamed = {k.replace("mlp.dwconv.dwconv.", "mlp.dwconv."): v for k, v in ours.items()}
    assert any(k.endswith("mlp.dwconv.weight") for k in renamed)
    assert convert("mscan-t", renamed).keys() == ours.keys()
    # Already converted: unchanged (same keys, same tensors).
    same = convert("mscan-t", ours)
    assert same.keys() == ours.keys() and all(same[k] is ours[k] for k in ours)
    # B-orig / B-mm ImageNet file: classifier dropped, module. prefix stripped.
    imagenet = {f"module.{k}": v for k, v in renamed.items()} | {
        "head.weight": torch.zeros(1000, 32),
        "head.bias": torch.zeros(1000),
    }
    out = convert("mscan-t", imagenet)
    assert out.keys() == ours.keys()
    enc.load_state_dict(out, strict=True)
    # Head keys are never renamed.
    head = {"squeeze.conv.weight": torch.zeros(1), "hamburger.ham_in.conv.bias": torch.zeros(1)}
    assert convert("ham", head).keys() == head.keys()


def test_official_type_mapping() -> None:
    from segcore_segnext.convert import ham_from_official, mscan_from_official

    assert (
        mscan_from_official(
            {"type": "MSCAN", "embed_dims": [64, 128, 320, 512], "depths": [3, 5, 27, 3], "drop_path_rate": 0.3}
        )[0]
        == "mscan-l"
    )
    assert mscan_from_official({"embed_dims": [64, 128, 320, 512], "depths": [2, 2, 4, 2]})[0] == "mscan-s"
    name, opts = ham_from_official(
        {
            "type": "LightHamHead",
            "in_index": [1, 2, 3],
            "channels": 512,
            "ham_channels": 512,
            "norm_cfg": {"type": "GN", "num_groups": 32},
        }
    )
    assert name == "ham" and opts["md_r"] == 64 and opts["in_index"] == (1, 2, 3)
    # Omitted keys take the official MSCAN class defaults, not a variant's.
    assert mscan_from_official({"type": "MSCAN"})[1] == {
        "embed_dims": (64, 128, 256, 512),
        "depths": (3, 4, 6, 3),
        "mlp_ratios": (4, 4, 4, 4),
        "drop_rate": 0.0,
        "drop_path_rate": 0.0,
        "in_chans": 3,
    }
    with pytest.raises(OptionsError, match="norm_cfg"):
        mscan_from_official({"type": "MSCAN", "norm_cfg": {"type": "GN"}})
    with pytest.raises(OptionsError, match="RAND_INIT"):
        ham_from_official({"type": "LightHamHead", "ham_kwargs": {"RAND_INIT": False}})


def test_plugin_registration() -> None:
    from segcore.plugins.registry import components

    assert {"mscan-t", "mscan-s", "mscan-b", "mscan-l"} <= components("encoders").keys()
    assert components("decoders")["ham"].in_strides == (4, 8, 16, 32)
    ckpts = components("checkpoints")
    for v in "tsbl":
        for suffix in ("ade20k", "cityscapes"):
            spec = ckpts[f"segnext-{v}-{suffix}"]
            assert spec.encoder == f"mscan-{v}" and spec.decoder == "ham" and spec.revision == "main"
            assert spec.official_url.startswith("https://cloud.tsinghua.edu.cn/f/")
        assert ckpts[f"mscan-{v}-imagenet"].kind == "encoder"
        assert ckpts[f"mscan-{v}-imagenet"].official_filename == f"mscan_{v}.pth"
    assert ckpts["segnext-t-ade20k"].metric.startswith("mIoU 41.1 / 42.2")
    assert ckpts["segnext-b-cityscapes"].num_classes == 19
    assert ckpts["segnext-l-coco-stuff164k"].num_classes == 171
    assert ckpts["segnext-t-ade20k-mmseg"].sha256 == "05bd8466"
    assert ckpts["segnext-t-ade20k-mmseg"].official_url.endswith(ckpts["segnext-t-ade20k-mmseg"].official_filename)
    conv = components("converters")["segnext-mmseg"]
    assert conv.format == "mmseg" and set(conv.official_types) == {"MSCAN", "LightHamHead"}


def test_recipes_match_spec() -> None:
    from segcore.plugins.registry import components

    recipes = components("recipes")
    for name, dataset, iters, batch, crop, scale in [
        ("segnext-ade20k-160k", "ade20k", 160_000, 16, 512, (2048, 512)),
        ("segnext-cityscapes-160k", "cityscapes", 160_000, 8, 1024, (2048, 1024)),
        ("segnext-coco-stuff164k-80k", "coco-stuff164k", 80_000, 16, 512, (2048, 512)),
    ]:
        r = recipes[name]
        assert (r.dataset, r.iters, r.batch_size, r.crop_size) == (dataset, iters, batch, (crop, crop))
        assert (r.lr, r.weight_decay, r.betas) == (6e-5, 0.01, (0.9, 0.999))
        assert (r.power, r.min_lr, r.warmup_iters, r.warmup_ratio) == (1.0, 0.0, 1500, 1e-6)
        assert (r.eval_every, r.checkpoint_every) == (8000, 8000)
        rules = {rule.key: (rule.lr_mult, rule.decay_mult) for rule in r.param_rules}
        assert rules == {"pos_block": (1.0, 0.0), "decoder.": (10.0, 1.0), "adapter.": (10.0, 1.0), "norm": (1.0, 0.0)}
        assert r.norm_decay_mult is None and r.bias_decay_mult is None  # stem BNs, biases keep decay 0.01
        tp = r.train_pipeline
        assert (tp.scale, tp.ratio_range, tp.cat_max_ratio, tp.flip_prob) == (scale, (0.5, 2.0), 0.75, 0.5)
        assert tp.photometric.brightness_delta == 32 and tp.photometric.hue_delta == 18
        assert tp.mean == (123.675, 116.28, 103.53) and tp.std == (58.395, 57.12, 57.375)  # spec §5.2 step 6
        assert r.eval.keep_ratio is True and r.eval.resize == scale and r.clip_grad is None
    city = recipes["segnext-cityscapes-160k"].eval
    assert (city.mode, city.crop_size, city.stride, city.resize_to_multiple) == (
        "slide",
        (1024, 1024),
        (768, 768),
        None,
    )
    ade = recipes["segnext-ade20k-160k"].eval
    assert (ade.mode, ade.resize_to_multiple) == ("whole", 32)  # ResizeToMultiple(32) is a resize, not a pad


@pytest.mark.parametrize(
    ("encoder", "decoder", "head"),
    [
        (None, None, (256, 256, 16)),  # the recipe's own model: mscan-t + ham
        ("mscan-s", None, (256, 256, 16)),
        ("mscan-b", None, (512, 512, 64)),
        ("mscan-l", "ham", (1024, 1024, 64)),
    ],
)
def test_recipe_gives_each_mscan_size_its_official_head(encoder, decoder, head) -> None:
    from segcore.train import TrainSettings, resolve_recipe

    base = TrainSettings(encoder=encoder, decoder=decoder, dataset="ade20k", recipe="segnext-ade20k-160k")
    _, s = resolve_recipe(base)
    assert (s.encoder, s.decoder) == (encoder or "mscan-t", "ham")
    assert (s.decoder_opt["channels"], s.decoder_opt["ham_channels"], s.decoder_opt["md_r"]) == head
    assert s.pretrained_encoder is True


def test_recipe_head_options_stay_with_their_decoder_and_flags_win() -> None:
    from segcore.train import TrainSettings, resolve_recipe

    foreign = TrainSettings(encoder="mscan-b", decoder="mlp", dataset="ade20k", recipe="segnext-ade20k-160k")
    assert resolve_recipe(foreign)[1].decoder_opt == {"channels": 256, "dropout": 0.1}  # mlp's own defaults
    flag = TrainSettings(encoder="mscan-b", dataset="ade20k", recipe="segnext-ade20k-160k", decoder_opt={"md_r": 8})
    opts = resolve_recipe(flag)[1].decoder_opt
    assert (opts["channels"], opts["ham_channels"], opts["md_r"]) == (512, 512, 8)


def test_recipe_rules_split_parameters_like_mmcv() -> None:
    """Spec §5.1 for T, through the trainer's own grouping: 378 tensors (3,895,200 values) at (6e-5, 0.01),
    66 norm tensors (8,384 values) at (6e-5, 0) and the 13 head tensors (359,830 values) at (6e-4, 0.01)."""
    from segcore.plugins.registry import components
    from segcore.train.optim import build_optimizer

    recipe = components("recipes")["segnext-ade20k-160k"]
    model = segcore.build_model("mscan-t", "ham", 150, decoder_options=HEAD["mscan-t"])
    optimizer = build_optimizer(model, recipe, recipe.lr, recipe.weight_decay)
    got = {
        (round(g["lr"], 12), g["weight_decay"]): (len(g["params"]), sum(p.numel() for p in g["params"]))
        for g in optimizer.param_groups
    }
    assert got == {(6e-5, 0.01): (378, 3_895_200), (6e-5, 0.0): (66, 8_384), (6e-4, 0.01): (13, 359_830)}
    names = {n for g in optimizer.param_groups if g["weight_decay"] == 0.0 for n in g["names"]}
    # Stem BNs and layer scales keep their decay (no "norm" in their names), as in mmcv.
    assert "encoder.patch_embed2.norm.weight" in names and "encoder.norm4.bias" in names
    assert not any("patch_embed1" in n or "layer_scale" in n for n in names)
    assert optimizer.defaults["betas"] == (0.9, 0.999)


def test_drop_path_schedule_and_per_sample_mask() -> None:
    from segcore_segnext.mscan import DropPath

    enc = segcore.build_encoder("mscan-l", embed_dims=(8, 16, 32, 32))
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for i in range(1, 5) for b in getattr(enc, f"block{i}")]
    assert len(rates) == 38 and rates[0] == 0.0 and abs(rates[-1] - 0.3) < 1e-7
    assert isinstance(enc.block1[0].drop_path, torch.nn.Identity)
    dp = DropPath(0.5).train()
    x = torch.ones(64, 2, 3, 3)
    y = dp(x)
    per_sample = y.flatten(1)
    assert set(per_sample.unique().tolist()) <= {0.0, 2.0}
    assert (per_sample == per_sample[:, :1]).all()  # one decision per sample
    assert torch.equal(dp.eval()(x), x)


def test_ham_default_loss_is_mmseg_ce() -> None:
    from segcore.plugins.registry import components

    spec = components("decoders")["ham"]
    assert spec.default_loss == "ce" and dict(spec.default_loss_options) == {"average": "all"}


def _nmf_reference(x: torch.Tensor, s: int, r: int, steps: int) -> torch.Tensor:
    """Spec §3.4 written literally on the official ``view(B * S, D, N)`` layout."""
    b, c, h, w = x.shape
    xm = x.reshape(b * s, c // s, h * w)
    bases = torch.nn.functional.normalize(torch.rand((b * s, c // s, r)), dim=1)
    coef = torch.softmax(torch.bmm(xm.transpose(1, 2), bases), dim=-1)
    for _ in range(steps):
        coef = coef * torch.bmm(xm.transpose(1, 2), bases) / (coef.bmm(bases.transpose(1, 2).bmm(bases)) + 1e-6)
        bases = bases * torch.bmm(xm, coef) / (bases.bmm(coef.transpose(1, 2).bmm(coef)) + 1e-6)
    coef = coef * torch.bmm(xm.transpose(1, 2), bases) / (coef.bmm(bases.transpose(1, 2).bmm(bases)) + 1e-6)
    return torch.bmm(bases, coef.transpose(1, 2)).reshape(b, c, h, w)


@pytest.mark.parametrize("md_s", [1, 2], ids=["s1", "s2"])
@pytest.mark.parametrize("fmt", ["channels_last", "contiguous"])
def test_nmf_matches_spec_formula(md_s: int, fmt: str) -> None:
    from segcore_segnext.ham import NMF2D

    x = torch.rand(2, 16, 6, 5).contiguous(memory_format=getattr(torch, fmt.replace("contiguous", "contiguous_format")))
    nmf = NMF2D(md_s, 4, 6, 7, 1.0, seed=None).eval()
    torch.manual_seed(3)
    ours = nmf(x)
    torch.manual_seed(3)
    ref = _nmf_reference(x, md_s, 4, 7)
    assert ours.shape == ref.shape and (ours - ref).abs().max() < 1e-5
    nmf.train()
    torch.manual_seed(3)
    assert (nmf(x) - ref).abs().max() > 1e-6  # 6 training steps, not 7

"""Every registered recipe and checkpoint, generated from the registry (like timm's tests/test_models.py).

Recipes: each typed setting of a recipe reaches the resolved run that ``segcore train --dry-run`` prints, and the
settings the specs list for each official recipe are the registered ones. Checkpoints: each model checkpoint's
eval protocol reaches ``segcore eval`` and decides the sizes the network sees. Unknown settings are errors.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import types

import numpy as np
import pytest
import segcore
import torch
from segcore.config.settings import EvalProtocol, TrainPipeline
from segcore.plugins import registry
from segcore.train import TrainSettings, plan
from segcore_cli.main import main

RECIPES = sorted(registry.components("recipes"))
MODEL_CHECKPOINTS = sorted(n for n, s in registry.components("checkpoints").items() if s.kind == "model")

# What the specs list for each official recipe (segnext.md §5, segvit.md §7, segdeformer.md §8, datasets.md §9):
# (iters, batch, crop, lr, weight decay, poly power, clip, train scale, normalisation mean, test protocol).
IMAGENET = (123.675, 116.28, 103.53)
_ADE_NEXT = {"mode": "whole", "resize": (2048, 512), "resize_to_multiple": 32}
SPEC = {
    "segnext-ade20k-160k": (160_000, 16, 512, 6e-5, 0.01, 1.0, None, (2048, 512), IMAGENET, _ADE_NEXT),
    "segnext-coco-stuff164k-80k": (80_000, 16, 512, 6e-5, 0.01, 1.0, None, (2048, 512), IMAGENET, _ADE_NEXT),
    "segnext-cityscapes-160k": (
        160_000,
        8,
        1024,
        6e-5,
        0.01,
        1.0,
        None,
        (2048, 1024),
        IMAGENET,
        {"mode": "slide", "crop_size": (1024, 1024), "stride": (768, 768), "resize": (2048, 1024)},
    ),
    # Appendix Table 1 (crop, batch, iterations); iSAID from the official Jittor configs.
    "segnext-voc2012-aug-80k": (80_000, 16, 512, 6e-5, 0.01, 1.0, None, (2048, 512), IMAGENET, _ADE_NEXT),
    "segnext-pascal-context-59-80k": (
        80_000,
        16,
        480,
        6e-5,
        0.01,
        1.0,
        None,
        (520, 520),
        IMAGENET,
        {"mode": "whole", "resize": (520, 520), "resize_to_multiple": 32},
    ),
    "segnext-isaid-160k": (
        160_000,
        16,
        896,
        6e-5,
        0.01,
        1.0,
        None,
        (896, 896),
        IMAGENET,
        {"mode": "whole", "resize": (896, 896), "resize_to_multiple": 32},
    ),
    "segvit-ade20k-160k": (
        160_000,
        16,
        640,
        2e-5,
        0.01,
        1.0,
        35.0,
        (2048, 640),
        (127.5,) * 3,
        {"mode": "slide", "crop_size": (640, 640), "stride": (608, 608), "resize": (2048, 640)},
    ),
    "segvit-coco-stuff10k-80k": (
        80_000,
        16,
        512,
        2e-5,
        0.02,
        2.0,
        35.0,
        (2048, 512),
        (127.5,) * 3,
        {"mode": "slide", "crop_size": (512, 512), "stride": (341, 341), "resize": (2048, 512), "min_size": 512},
    ),
    "segvit-pascal-context-80k": (
        80_000,
        16,
        480,
        2e-5,
        0.03,
        1.0,
        35.0,
        (520, 520),
        (127.5,) * 3,
        {"mode": "slide", "crop_size": (480, 480), "stride": (320, 320), "resize": (520, 520), "min_size": 480},
    ),
    "segvit-vit-b16-ade20k-160k": (
        160_000,
        16,
        512,
        2e-5,
        0.01,
        1.0,
        35.0,
        (2048, 512),
        IMAGENET,
        {"mode": "slide", "crop_size": (512, 512), "stride": (341, 341), "resize": (2048, 512)},
    ),
    "segdeformer-ade20k-160k": (
        160_000,
        16,
        512,
        6e-5,
        0.01,
        1.0,
        None,
        (2048, 512),
        IMAGENET,
        {"mode": "whole", "resize": (2048, 512)},
    ),
    "segdeformer-cityscapes-160k": (
        160_000,
        8,
        1024,
        6e-5,
        0.01,
        1.0,
        None,
        (2048, 1024),
        IMAGENET,
        {"mode": "slide", "crop_size": (1024, 1024), "stride": (768, 768), "resize": (2048, 1024)},
    ),
    "segdeformer-coco-stuff164k-160k": (
        160_000,
        16,
        512,
        6e-5,
        0.01,
        1.0,
        None,
        (2048, 512),
        IMAGENET,
        {"mode": "slide", "crop_size": (512, 512), "stride": (341, 341), "resize": (2048, 512)},
    ),
    "synthetic-shapes-cpu": (1200, 16, 64, 4e-3, 0.01, 1.0, 1.0, None, IMAGENET, {"mode": "whole"}),
}


def _plain(value):
    return json.loads(json.dumps(value))


@pytest.mark.parametrize("name", RECIPES, ids=RECIPES)
def test_every_recipe_setting_reaches_the_dry_run(name: str) -> None:
    recipe = registry.components("recipes")[name]
    run = plan(TrainSettings(recipe=name))
    assert run["recipe"]["source"] == recipe.source and recipe.source, "each recipe states its source"
    assert run["dataset"]["name"] == recipe.dataset
    assert (run["schedule"]["iters"], run["batch"]["total"]) == (recipe.iters, recipe.batch_size)
    assert tuple(run["train_pipeline"]["crop_size"]) == recipe.crop_size
    opt = run["optimizer"]
    assert (opt["lr"], opt["weight_decay"], tuple(opt["betas"])) == (recipe.lr, recipe.weight_decay, recipe.betas)
    assert (opt["norm_decay_mult"], opt["bias_decay_mult"]) == (recipe.norm_decay_mult, recipe.bias_decay_mult)
    rules = {(r["key"], r["lr_mult"], r["decay_mult"]) for r in opt["param_rules"]}
    assert rules == {(r.key, r.lr_mult, r.decay_mult) for r in recipe.param_rules}
    sched = run["schedule"]
    assert (sched["power"], sched["min_lr"], sched["warmup_iters"], sched["warmup_ratio"]) == (
        recipe.power,
        recipe.min_lr,
        recipe.warmup_iters,
        recipe.warmup_ratio,
    )
    assert run["clip_grad"] == recipe.clip_grad
    pipeline = {k: v for k, v in run["train_pipeline"].items() if k != "crop_size"}
    assert pipeline == _plain(recipe.train_pipeline.to_dict())
    assert (run["model"]["mean"], run["model"]["std"]) == (
        list(recipe.train_pipeline.mean),
        list(recipe.train_pipeline.std),
    )
    assert run["eval_protocol"] == _plain(recipe.eval.to_dict())
    assert (run["eval_every"], run["checkpoint_every"]) == (recipe.eval_every, recipe.checkpoint_every)
    model = run["model"]
    assert (model["encoder"], model["decoder"]) == (recipe.model.encoder, recipe.model.decoder)
    assert model["pretrained_encoder"] == recipe.model.pretrained_encoder
    for key, value in recipe.model.encoder_options.items():
        assert model["encoder_options"][key] == _plain(value), key
    for key, value in recipe.model.decoder_options.items():
        assert model["decoder_options"][key] == _plain(value), key
    # The classifier is sized from the dataset's classes even when the data is not on this machine.
    assert model["num_classes"] == len(registry.get_spec("datasets", recipe.dataset).load_classes())


@pytest.mark.parametrize(
    ("name", "encoder"),
    [(n, e) for n in RECIPES for e in sorted(registry.components("recipes")[n].model_variants)],
    ids=lambda v: v,
)
def test_recipe_variants_reach_the_dry_run(name: str, encoder: str) -> None:
    """Another model of the recipe (e.g. the Shrunk SegViT under the COCO-Stuff-10k recipe) gets its settings."""
    variant = registry.components("recipes")[name].model_variants[encoder]
    model = plan(TrainSettings(recipe=name, encoder=encoder))["model"]
    assert model["decoder"] == variant.decoder
    for key, value in {**variant.encoder_options, **variant.decoder_options}.items():
        options = model["encoder_options"] if key in variant.encoder_options else model["decoder_options"]
        assert options[key] == _plain(value), key


def test_every_recipe_has_its_spec_row() -> None:
    assert sorted(SPEC) == RECIPES


@pytest.mark.parametrize("name", RECIPES, ids=RECIPES)
def test_recipe_matches_the_spec(name: str) -> None:
    iters, batch, crop, lr, wd, power, clip, scale, mean, test = SPEC[name]
    r = registry.components("recipes")[name]
    assert (r.iters, r.batch_size, r.crop_size, r.lr, r.weight_decay, r.power) == (
        iters,
        batch,
        (crop, crop),
        lr,
        wd,
        power,
    )
    assert r.clip_grad == clip and r.train_pipeline.scale == scale and r.train_pipeline.mean == mean
    assert r.eval == EvalProtocol(**test)


def test_shrunk_segvit_follows_the_recipe_crop() -> None:
    """Issue: under COCO-Stuff-10k / Pascal Context the Shrunk SegViT kept img_size 640 instead of 512 / 480."""
    for name, crop in (("segvit-coco-stuff10k-80k", 512), ("segvit-pascal-context-80k", 480)):
        model = plan(TrainSettings(recipe=name, encoder="vit-l16-shrunk"))["model"]
        assert model["decoder"] == "atm-shrunk"
        assert model["encoder_options"]["img_size"] == crop and model["decoder_options"]["img_size"] == crop


def test_paper_pair_options_apply_under_flags() -> None:
    run = plan(TrainSettings(encoder="mscan-b", decoder="ham", iters=2))
    assert (run["model"]["decoder_options"]["channels"], run["model"]["decoder_options"]["md_r"]) == (512, 64)
    run = plan(TrainSettings(encoder="mscan-b", decoder="ham", iters=2, decoder_opt={"channels": 128}))
    assert run["model"]["decoder_options"]["channels"] == 128  # a flag still wins
    assert segcore.build_model("mscan-b", "ham", 3, pair_defaults=False).config.decoder_options == {}


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: TrainPipeline.from_dict({"grad_clip": 35.0}), r"unknown option 'grad_clip'.*Valid options: scale"),
        (lambda: EvalProtocol.from_dict({"test_scale": (2048, 512)}), r"unknown option 'test_scale'.*Valid options"),
        (lambda: EvalProtocol.from_dict({"size_divisor": 32}), r"unknown option 'size_divisor'.*resize_to_multiple"),
        (lambda: TrainPipeline(photometric={"hue": 18}), r"unknown option 'hue'.*hue_delta"),
        (
            lambda: dataclasses.replace(registry.components("recipes")["segnext-ade20k-160k"], eval={"mode": "tile"}),
            r"'whole', 'slide'",
        ),
        (lambda: segcore.CheckpointSpec("o/r", "main", "d", eval_protocol="slide 512/341"), "expected a mapping"),
        (lambda: segcore.CheckpointSpec("o/r", "main", "d", encoder="e", decoder="d"), "needs its eval_protocol"),
    ],
    ids=[
        "pipeline-key",
        "protocol-key",
        "protocol-legacy-key",
        "photometric-key",
        "protocol-value",
        "free-text",
        "no-protocol",
    ],
)
def test_unknown_or_missing_settings_are_errors(build, message: str) -> None:
    with pytest.raises(segcore.OptionsError, match=message):
        build()


# --------------------------------------------------------------------------------------------------- checkpoints
class _SizeProbe(torch.nn.Module):
    """Stand-in network that records the input sizes it is run at (the protocol decides them)."""

    def __init__(self, config: segcore.SegModelConfig) -> None:
        super().__init__()
        self.config = config
        self.sizes: list[tuple[int, int]] = []
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.sizes.append(tuple(images.shape[-2:]))
        b, _, h, w = images.shape
        return self.scale * torch.zeros(b, self.config.num_classes, h, w)


# One image of the official sizes each protocol meets, and the network input sizes the specs give for it.
_EXPECTED = {
    # SegNeXt ADE20K / COCO: keep-ratio into (2048, 512) -> 512 x 683, then up to multiples of 32 -> 512 x 704.
    "whole-(2048, 512)-32": ((512, 683), [(512, 704)]),
    # SegDeformer ADE20K: the keep-ratio resize only, no padding.
    "whole-(2048, 512)-None": ((512, 683), [(512, 683)]),
    # Cityscapes: 1024 x 2048 stays; 1 x 3 windows of 1024 at x = 0, 768, 1024.
    "slide-(2048, 1024)-None": ((1024, 2048), [(1024, 1024)] * 3),
    # SegViT ViT-L ADE20K: short side 640 -> 640 x 854, windows 640 x 640 (1 x 2).
    "slide-(2048, 640)-None": ((512, 683), [(640, 640)] * 2),
    # SegViT ViT-B ADE20K: 512 x 683, windows 512 / 341 (1 x 2).
    "slide-(2048, 512)-None": ((512, 683), [(512, 512)] * 2),
    # COCO-Stuff-10k: 480 x 640 -> min_size 512 -> 512 x 683, windows 512 / 341 (1 x 2).
    "slide-(2048, 512)-None-512": ((480, 640), [(512, 512)] * 2),
    # Pascal Context: 375 x 500 -> short side 520 -> 520 x 693: four full 480 x 480 windows.
    "slide-(520, 520)-None-480": ((375, 500), [(480, 480)] * 4),
}


def _key(p: EvalProtocol) -> str:
    return f"{p.mode}-{p.resize}-{p.resize_to_multiple}" + (f"-{p.min_size}" if p.min_size else "")


def _data_plugin(num_classes: int, size: tuple[int, int]) -> types.ModuleType:
    class Images:
        classes = tuple(f"c{i}" for i in range(num_classes))
        palette = tuple((i, i, i) for i in range(num_classes))
        ignore_index = 255
        eval_protocol = EvalProtocol()  # a protocol of its own that must NOT be used: the model's wins

        def __len__(self) -> int:
            return 1

        def __getitem__(self, i: int) -> dict:
            rng = np.random.default_rng(i)
            return {
                "image": torch.from_numpy(rng.integers(0, 256, (3, *size), dtype=np.uint8)),
                "label": torch.zeros(size, dtype=torch.int64),
                "path": f"img{i}",
            }

    plugin = types.ModuleType("official_size_data")
    plugin.segcore_datasets = segcore.hookimpl(
        lambda: {
            "official-size-data": segcore.ComponentSpec(factory=lambda root, split, **o: Images(), description="t")
        }
    )
    return plugin


@pytest.mark.parametrize("name", MODEL_CHECKPOINTS, ids=MODEL_CHECKPOINTS)
def test_checkpoint_protocol_reaches_segcore_eval(name, tmp_path, monkeypatch, capsys) -> None:
    """The converted model's config carries the paper's protocol; `segcore eval` runs it with no flags."""
    from segcore.weights.checkpoints import checkpoint_config

    spec = registry.components("checkpoints")[name]
    config = checkpoint_config(name, spec)
    assert config["eval"] == spec.eval_protocol.to_dict() and config["extra"]["eval_protocol"]
    probe = _SizeProbe(
        segcore.SegModelConfig("stand-in", "stand-in", spec.num_classes, eval=config["eval"], extra=config["extra"])
    )
    monkeypatch.setattr(segcore.SegModel, "from_pretrained", classmethod(lambda cls, *a, **k: probe))
    image_size, expected = _EXPECTED[_key(spec.eval_protocol)]
    registry.register_plugin(_data_plugin(spec.num_classes, image_size), "official-size-data")
    try:
        rc = main(["eval", "--model", name, "--dataset", "official-size-data", "--device", "cpu", "--json"])
    finally:
        registry.unregister_plugin("official-size-data")
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["protocol"] == _plain(spec.eval_protocol.to_dict())
    assert probe.sizes == expected


@pytest.mark.parametrize(
    ("recipe", "encoder", "groups"),
    [
        # segnext.md §5.1, SegNeXt-T: (lr, decay) -> (tensors, values), counted with genuine mmcv semantics.
        (
            "segnext-ade20k-160k",
            "mscan-t",
            {(6e-5, 0.01): (378, 3_895_200), (6e-5, 0.0): (66, 8_384), (6e-4, 0.01): (13, 359_830)},
        ),
        # segdeformer.md §8, MiT-B1 + SegDeformer: "verified by building the optimiser with genuine mmcv".
        (
            "segdeformer-ade20k-160k",
            "mit-b1",
            {(6e-5, 0.01): (None, 13_139_136), (6e-5, 0.0): (None, 12_288), (6e-4, 0.01): (None, 1_302_166)},
        ),
    ],
    ids=["segnext-t", "segdeformer-mit-b1"],
)
def test_dry_run_parameter_groups_match_the_spec(recipe: str, encoder: str, groups: dict) -> None:
    got = {
        (round(g["lr"], 12), g["weight_decay"]): (g["tensors"], g["values"])
        for g in plan(TrainSettings(recipe=recipe, encoder=encoder))["optimizer"]["param_groups"]
    }
    assert set(got) == set(groups)
    for key, (tensors, values) in groups.items():
        assert got[key][1] == values and (tensors is None or got[key][0] == tensors), key


def test_install_hints_name_the_distribution_that_registers_each_first_party_component() -> None:
    """``registry.FIRST_PARTY`` is kept in core (it must work when a plugin is absent): hold it to the registry.

    Both ways: every name a first-party distribution registers, of every kind, matches patterns of exactly that
    distribution (and core's names match none); every pattern matches something registered.
    """
    first_party = {"segcore-segnext", "segcore-segvit", "segcore-segdeformer", "segcore-datasets"}
    used = set()
    for kind in registry.KINDS:
        for name in registry.components(kind):
            dist = registry.owner(kind, name)[0]
            matching = {p: d for p, d in registry.FIRST_PARTY.items() if fnmatch.fnmatchcase(name, p)}
            used |= set(matching)
            if dist in first_party:
                assert set(matching.values()) == {dist}, (kind, name, matching)
                assert registry.first_party(name) == dist
            elif dist == "segcore":
                assert not matching, (kind, name, matching)
    assert used == set(registry.FIRST_PARTY), set(registry.FIRST_PARTY) - used

"""Fine-tuning with ``init_from``: exact weights, a new classifier on a class change, refused contradictions."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from segcore import hookimpl
from segcore.plugins.specs import ComponentSpec
from segcore.testing import TINY_MODEL, TinyShapes, registered_tiny_shapes
from segcore.train import TrainingError, TrainSettings, plan, resolve_run, train
from segcore.train.init_from import class_dependent_tensors
from segcore.train.resolve import resume_settings

PLUGIN = "segcore-init-from-test-data"


class Merged(TinyShapes):
    """tiny-shapes with green and blue merged into one class: 3 classes, the same images."""

    classes = ("background", "warm", "cool")
    palette = ((0, 0, 0), (220, 20, 60), (20, 120, 200))

    def __getitem__(self, i: int) -> dict:
        sample = TinyShapes(None, self.split, self.size, self.length)[i]  # drawn with the 4 colours
        sample["label"][sample["label"] == 3] = 2
        return sample


class Renamed(TinyShapes):
    """tiny-shapes with other names for the same 4 classes."""

    classes = ("bg", "crimson", "lime", "navy")


class _Data:
    @hookimpl
    def segcore_datasets(self):
        return {
            "tiny-merged": ComponentSpec(factory=f"{__name__}:Merged", description="3 classes"),
            "tiny-renamed": ComponentSpec(factory=f"{__name__}:Renamed", description="renamed"),
        }


@pytest.fixture(autouse=True)
def _plugins(tiny_plugin):
    import segcore.plugins.registry as registry

    registry.unregister_plugin(PLUGIN)
    registry.register_plugin(_Data(), PLUGIN)
    yield
    registry.unregister_plugin(PLUGIN)


def _settings(out: Path, **kw) -> TrainSettings:
    base = dict(
        dataset="tiny-shapes",
        iters=2,
        batch_size=2,
        crop_size=(32, 32),
        lr=1e-3,
        eval_every=0,
        checkpoint_every=0,
        output_dir=str(out),
        progress=False,
    )
    base.update(kw)
    return TrainSettings(**base)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished 4-class run of the tiny model (the M of every test)."""
    with registered_tiny_shapes():  # module scope: the tiny_plugin fixture is per test
        return train(_settings(tmp_path_factory.mktemp("m") / "run", **TINY_MODEL))


def _start_of_run(settings: TrainSettings) -> torch.nn.Module:
    """The model a run of ``settings`` starts training from (what the trainer builds before its first step)."""
    from accelerate import Accelerator
    from segcore.train.parts import build_parts

    return build_parts(resolve_run(settings), Accelerator(cpu=True)).raw


def test_init_from_loads_every_non_classifier_tensor_exactly(trained, tmp_path, caplog):
    saved = load_file(str(trained / "model.safetensors"))
    # Same classes: every tensor, buffers included, is M's bit for bit (a run at learning rate 0).
    same = _start_of_run(_settings(tmp_path / "same", init_from=str(trained))).state_dict()
    assert same.keys() == saved.keys()
    assert all(torch.equal(same[k], saved[k]) for k in saved)
    # 3 classes: the tensors whose shape follows the class count are new, every other one is M's.
    with caplog.at_level(logging.WARNING, logger="segcore.train"):
        merged = _start_of_run(_settings(tmp_path / "merged", dataset="tiny-merged", init_from=str(trained)))
    fresh = {k for k, v in merged.state_dict().items() if v.shape != saved[k].shape}
    assert fresh == {"decoder.conv_seg.weight", "decoder.conv_seg.bias"}
    assert all(torch.equal(v, saved[k]) for k, v in merged.state_dict().items() if k not in fresh)
    assert "re-initialised decoder.conv_seg.weight, decoder.conv_seg.bias" in caplog.text


def test_classifier_tensors_are_found_by_shape_for_any_decoder():
    from segcore.models.model import SegModelConfig

    for decoder, expected in (("mlp", {"decoder.conv_seg.weight", "decoder.conv_seg.bias"}), ("upernet", None)):
        names = class_dependent_tensors(SegModelConfig("timm:test_convnext", decoder, 5))
        assert names and all("conv_seg" in n for n in names)  # upernet: its auxiliary head too, when it has one
        if expected:
            assert set(names) == expected


def test_class_change_trains_and_the_run_has_the_datasets_classes(trained, tmp_path, capsys):
    out = train(_settings(tmp_path / "ft", dataset="tiny-merged", init_from=str(trained)))
    config = json.loads((out / "config.json").read_text())
    assert config["class_names"] == list(Merged.classes) and config["num_classes"] == 3
    assert config["encoder"] == "timm:test_convnext" and config["decoder_options"]["channels"] == 16
    assert config["extra"]["init_from"] == str(trained)
    assert json.loads((out / "settings.json").read_text())["init_from"] == str(trained)


def test_renamed_classes_at_the_same_count_are_a_warning(trained, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="segcore.train"):
        model = _start_of_run(_settings(tmp_path / "r", dataset="tiny-renamed", init_from=str(trained)))
    assert "other names (0 'background' vs 'bg'" in caplog.text
    assert model.config.class_names == list(Renamed.classes)


def test_encoder_or_decoder_that_contradicts_init_from_is_refused(trained, tmp_path):
    with pytest.raises(TrainingError, match="--encoder mit-b0 contradicts --init-from .* whose encoder is timm:test"):
        resolve_run(_settings(tmp_path / "a", encoder="mit-b0", init_from=str(trained)))
    with pytest.raises(TrainingError, match="--decoder linear contradicts"):
        resolve_run(_settings(tmp_path / "b", decoder="linear", init_from=str(trained)))
    with pytest.raises(TrainingError, match="--pretrained-encoder and --init-from"):
        _settings(tmp_path / "c", pretrained_encoder=True, init_from=str(trained))
    run = resolve_run(_settings(tmp_path / "d", encoder="timm:test_convnext", decoder="mlp", init_from=str(trained)))
    assert run.settings.decoder_opt["channels"] == 16 and run.settings.pretrained_encoder is False


def test_a_recipe_gives_the_schedule_and_m_the_model_normalisation_and_weights(trained, tmp_path):
    from segcore.models.model import SegModelConfig

    folder = tmp_path / "m"
    folder.mkdir()
    config = json.loads((trained / "config.json").read_text())
    slide = {"mode": "slide", "crop_size": [24, 24], "stride": [16, 16]}
    config.update(mean=[1.0, 2.0, 3.0], std=[4.0, 5.0, 6.0], eval=slide)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes((trained / "model.safetensors").read_bytes())
    SegModelConfig.from_dict(config)
    run = resolve_run(_settings(tmp_path / "x", init_from=str(folder), iters=None, lr=None, crop_size=None))
    assert run.recipe.train_pipeline.mean == (1.0, 2.0, 3.0) and run.recipe.train_pipeline.std == (4.0, 5.0, 6.0)
    assert run.eval_protocol.mode == "slide"  # no recipe named: M's protocol
    recipe = resolve_run(_settings(tmp_path / "y", recipe="synthetic-shapes-cpu", init_from=str(folder), iters=None))
    assert recipe.settings.iters == recipe.recipe.iters and recipe.settings.encoder == "timm:test_convnext"
    assert recipe.recipe.train_pipeline.mean == (1.0, 2.0, 3.0)


def test_dry_run_reads_only_the_config_and_never_fetches(trained, tmp_path, monkeypatch):
    import segcore.weights.checkpoints

    def no_download(*args, **kwargs):
        raise AssertionError("a dry run downloaded")

    monkeypatch.setattr(segcore.weights.checkpoints, "from_pretrained", no_download)
    resolved = plan(_settings(tmp_path / "p", dataset="tiny-merged", init_from=str(trained)))
    init = resolved["init_from"]
    assert init["encoder"] == "timm:test_convnext" and init["num_classes"] == 4
    assert init["reinitialised"] == ["decoder.conv_seg.weight", "decoder.conv_seg.bias"]
    assert resolved["model"]["decoder_options"]["channels"] == 16 and resolved["model"]["num_classes"] == 3
    hub = plan(_settings(tmp_path / "h", init_from="someone/some-model"))
    assert "fetched when training starts" in hub["init_from"]["config"]


def test_resume_keeps_init_from(trained, tmp_path):
    saved = resolve_run(_settings(tmp_path / "r", init_from=str(trained))).settings.to_dict()
    with pytest.raises(TrainingError, match="--init-from other/model"):
        resume_settings(TrainSettings(output_dir=str(tmp_path / "r"), resume=True, init_from="other/model"), saved)
    again = resume_settings(TrainSettings(output_dir=str(tmp_path / "r"), resume=True), saved)
    assert again.init_from == str(trained)


def _asked(hub, repo: str) -> dict[str, list[str]]:
    """``file -> request methods`` the fake Hub served for ``repo``'s files, in order."""
    out: dict[str, list[str]] = {}
    for method, path in hub.requests:
        if path.startswith(f"/{repo}/resolve/"):
            out.setdefault(path.rsplit("/", 1)[1], []).append(method)
    return out


def test_init_from_a_hub_repo_fetches_its_config_and_weights_once(trained, tmp_path, local_hub):
    """The run is resolved once: the repo is downloaded while resolving, and the weights load from that folder.

    It asks the Hub for each file exactly what one ``from_pretrained`` of a repo asks (before, the config was read
    through a whole ``from_pretrained`` and the weights loaded through a second one).
    """
    from segcore import SegModel

    local_hub.add_repo("someone/tiny", trained)
    local_hub.add_repo("someone/reference", trained)
    SegModel.from_pretrained("someone/reference")
    model = _start_of_run(_settings(tmp_path / "run", init_from="someone/tiny"))
    asked, once = _asked(local_hub, "someone/tiny"), _asked(local_hub, "someone/reference")
    assert asked == once and asked["config.json"].count("GET") == asked["model.safetensors"].count("GET") == 1
    saved = load_file(str(trained / "model.safetensors"))
    assert all(torch.equal(model.state_dict()[k], saved[k]) for k in saved)


def test_the_training_set_is_opened_once(trained, tmp_path, monkeypatch):
    """A dataset whose crop the resolution reads is not opened again to train (only the val split is new)."""
    import segcore.models.components as components

    opened = []
    real = components.build_dataset

    def counting(name, root=None, split="train", **options):
        opened.append(split)
        return real(name, root=root, split=split, **options)

    monkeypatch.setattr(components, "build_dataset", counting)
    monkeypatch.setattr("segcore.build_dataset", counting, raising=False)
    _start_of_run(_settings(tmp_path / "run", crop_size=None, **TINY_MODEL))
    assert opened.count("train") == 1, opened

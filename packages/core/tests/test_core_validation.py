"""Every config and settings value is checked on load (type and range), and a model too large is refused unbuilt."""

from __future__ import annotations

import dataclasses
import json
import re
import resource
import time
from pathlib import Path

import pytest
import segcore
from segcore.config.options import CLASSES_LIMIT, FRACTION, INT_LIMIT, SIZE, parse_options
from segcore.config.settings import EvalProtocol, TrainPipeline
from segcore.errors import CheckpointError, OptionsError, SegcoreError
from segcore.models.model import DEFAULT_MAX_PARAM_BYTES, MAX_PARAM_BYTES_ENV, SegModel, SegModelConfig, max_param_bytes
from segcore.testing import TINY_MODEL, register_tiny_shapes, unregister_tiny_shapes
from segcore.train import TrainingError, TrainSettings, plan, resolve_run
from segcore.train.init_from import class_dependent_tensors, init_config
from segcore.weights.checkpoints import source_kind


@dataclasses.dataclass(frozen=True)
class _Options:
    channels: int = 16
    dims: tuple[int, ...] = (8, 16)
    size: int | None = dataclasses.field(default=None, metadata=SIZE)
    dropout: float = dataclasses.field(default=0.1, metadata=FRACTION)
    scale: float = 1.0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"channels": 10**7}, r"toy.channels: 10000000 is out of range \[-65536, 65536\]"),
        ({"channels": -(10**7)}, r"toy.channels: -10000000 is out of range"),
        ({"dims": [8, 2**31]}, r"toy.dims: 2147483648 is out of range \[-65536, 65536\]"),
        ({"size": 16_385}, r"toy.size: 16385 is out of range \[1, 16384\]"),
        ({"size": 0}, r"toy.size: 0 is out of range \[1, 16384\]"),
        ({"dropout": 1.5}, r"toy.dropout: 1.5 is out of range \[0.0, 1.0\]"),
        ({"scale": float("nan")}, r"toy.scale: nan is not a finite number"),
        ({"scale": float("inf")}, r"toy.scale: inf is not a finite number"),
        ({"channels": "three"}, r"toy.channels: expected an integer, got 'three'"),
    ],
    ids=["int-huge", "int-negative", "tuple-item", "size-huge", "size-zero", "fraction", "nan", "inf", "str"],
)
def test_every_option_is_checked_against_a_bound_by_type_or_field(options, message):
    with pytest.raises(OptionsError, match=message):
        parse_options(_Options, options, component="toy")


def test_bounds_are_inclusive_and_the_defaults_stay_valid():
    opts = parse_options(_Options, {"channels": INT_LIMIT, "dims": [-INT_LIMIT], "size": 16_384, "dropout": 1.0})
    assert (opts.channels, opts.dims, opts.size, opts.dropout) == (INT_LIMIT, (-INT_LIMIT,), 16_384, 1.0)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: TrainPipeline(mean="abc"), r"train_pipeline.mean: expected a list, got 'abc'"),
        (lambda: TrainPipeline(mean=(1.0, 2.0, 300.0)), r"train_pipeline.mean: 300.0 is out of range \[0.0, 255.0\]"),
        (lambda: TrainPipeline(std=(1.0, 0.0, 1.0)), r"train_pipeline.std: 0.0 is out of range \(0.0, 255.0\]"),
        (lambda: TrainPipeline(scale=(10**6, 512)), r"train_pipeline.scale: 1000000 is out of range \[1, 16384\]"),
        (lambda: TrainPipeline.from_dict({"photometric": {"hue_delta": "x"}}), r"photometric.hue_delta: expected an"),
        (lambda: EvalProtocol(crop_size=(2**31, 8)), r"eval protocol.crop_size: 2147483648 is out of range"),
        (lambda: EvalProtocol.from_dict({"scales": [0.5, "big"]}, "recipe x eval"), r"recipe x eval.scales: expected"),
    ],
    ids=["mean-str", "mean-range", "std-zero", "scale", "photometric", "crop-size", "scales"],
)
def test_settings_are_checked_however_they_are_built(build, message):
    with pytest.raises(OptionsError, match=message):
        build()


# ------------------------------------------------------------------------------------------------ config.json
@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A saved tiny model (the folder every tampered copy starts from)."""
    model = segcore.build_model("timm:test_convnext", "mlp", 4, decoder_options={"channels": 16})
    return model.save_pretrained(tmp_path_factory.mktemp("m") / "model")


def _tampered(saved: Path, folder: Path, **changes) -> Path:
    folder.mkdir()
    config = json.loads((saved / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes((saved / "model.safetensors").read_bytes())
    return folder


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


TAMPERED = [
    ({"num_classes": 10**9}, r"num_classes: 1000000000 is out of range \[1, 65535\]"),
    ({"num_classes": "three"}, r"num_classes: expected an integer, got 'three'"),
    ({"mean": "abc"}, r"mean: expected a list, got 'abc'"),
    ({"mean": [1.0, 2.0]}, r"mean: expected 3 values, got 2"),
    ({"palette": [[0, 0, 256]] * 4}, r"palette: 256 is out of range \[0, 255\]"),
    ({"decoder_options": {"channels": 10**7}}, r"mlp.channels: 10000000 is out of range \[-65536, 65536\]"),
    ({"encoder_options": {"drop_path_rate": 5.0}}, r"drop_path_rate: 5.0 is out of range \[0.0, 1.0\]"),
    ({"decoder_options": {"channels": 65_536}}, r"would hold 64.0 GiB of parameters and buffers, above the limit"),
]
TAMPERED_IDS = ["classes-huge", "classes-str", "mean-str", "mean-short", "palette", "channels", "rate", "memory"]


@pytest.mark.parametrize(("changes", "message"), TAMPERED, ids=TAMPERED_IDS)
def test_a_tampered_config_is_refused_naming_the_file_and_field_before_allocating(saved, tmp_path, changes, message):
    folder = _tampered(saved, tmp_path / "m", **changes)
    before, start = _peak_rss(), time.perf_counter()
    with pytest.raises(SegcoreError) as err:
        SegModel.from_pretrained(folder)
    assert str(folder / "config.json") in str(err.value)
    assert re.search(message, str(err.value)), str(err.value)
    # Nothing was allocated: the peak memory of the process did not grow by the model's size (64 GiB for the
    # last case, 6.4 GB for channels when it was allocated), and the refusal came at once.
    assert _peak_rss() - before < 512 * 2**20
    assert time.perf_counter() - start < 30


@pytest.mark.parametrize(("changes", "message"), TAMPERED, ids=TAMPERED_IDS)
def test_init_from_refuses_a_tampered_config_in_the_dry_run_and_the_run(saved, tmp_path, changes, message):
    folder = _tampered(saved, tmp_path / "m", **changes)
    register_tiny_shapes()
    try:
        settings = TrainSettings(dataset="tiny-shapes", output_dir=str(tmp_path / "run"), init_from=str(folder))
        for resolve in (plan, resolve_run):  # the dry run and the real run read M's config alike
            with pytest.raises(TrainingError, match=message) as err:
                resolve(settings)
            assert str(folder / "config.json") in str(err.value)
    finally:
        unregister_tiny_shapes()


def test_a_tampered_config_on_the_hub_is_refused_before_its_weights_are_read(saved, tmp_path, monkeypatch):
    from segcore.testing import serve_hub

    folder = _tampered(saved, tmp_path / "m", decoder_options={"channels": 10**7})
    read = []
    monkeypatch.setattr("safetensors.torch.load_file", lambda *a, **k: read.append(a))
    with serve_hub({"someone/tampered": folder}):
        with pytest.raises(SegcoreError, match=r"config.json: mlp.channels: 10000000 is out of range"):
            SegModel.from_pretrained("someone/tampered")
        with pytest.raises(TrainingError, match=r"--init-from someone/tampered: .*config.json: mlp.channels"):
            resolve_run(TrainSettings(output_dir=str(tmp_path / "run"), init_from="someone/tampered"))
    assert read == []


def test_the_parameter_limit_is_an_environment_variable(saved, tmp_path, monkeypatch):
    assert max_param_bytes() == DEFAULT_MAX_PARAM_BYTES == 16 * 2**30
    model = SegModel.from_pretrained(saved)
    size = SegModel.check_config(model.config)
    assert size == sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    monkeypatch.setenv(MAX_PARAM_BYTES_ENV, str(size - 1))
    with pytest.raises(CheckpointError, match=rf"{saved / 'config.json'}: the model .* above the limit of"):
        SegModel.from_pretrained(saved)
    with pytest.raises(TrainingError, match=rf"{MAX_PARAM_BYTES_ENV} \(bytes\) higher"):
        resolve_run(TrainSettings(output_dir=str(tmp_path), init_from=str(saved)))
    with pytest.raises(CheckpointError, match="above the limit"):
        init_config(str(saved))
    monkeypatch.setenv(MAX_PARAM_BYTES_ENV, str(size))
    assert SegModel.from_pretrained(saved).config.num_classes == 4
    monkeypatch.setenv(MAX_PARAM_BYTES_ENV, "16GB")
    with pytest.raises(SegcoreError, match=rf"{MAX_PARAM_BYTES_ENV}='16GB' is not a positive whole number of bytes"):
        max_param_bytes()


def test_a_config_built_in_code_is_checked_too():
    with pytest.raises(OptionsError, match=r"num_classes: 65536 is out of range \[1, 65535\]"):
        SegModelConfig("timm:test_convnext", "mlp", CLASSES_LIMIT + 1)
    with pytest.raises(OptionsError, match="class_names: expected a string, got 3"):
        SegModelConfig("timm:test_convnext", "mlp", 2, class_names=["a", 3])
    with pytest.raises(OptionsError, match="lacks num_classes"):
        SegModelConfig.from_dict({"encoder": "timm:test_convnext", "decoder": "mlp"}, source="x/config.json")


def test_the_classifier_is_found_at_the_class_limit():
    config = SegModelConfig("timm:test_convnext", "mlp", CLASSES_LIMIT, decoder_options={"channels": 16})
    assert set(class_dependent_tensors(config)) == {"decoder.conv_seg.weight", "decoder.conv_seg.bias"}


# ------------------------------------------------------------------------------------- what a source names
def test_dry_run_and_real_run_decide_what_init_from_names_alike(saved, tmp_path, monkeypatch, tiny_plugin):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file.json").write_text("{}")
    assert source_kind(saved) == "folder" and source_kind("someone/model") == "hub"
    for source, why in (("./nonexistent", "no such folder"), ("file.json", "it is a file, not a folder")):
        with pytest.raises(CheckpointError, match=f"'{source}' is not a model folder.*: {why}"):
            source_kind(source)
        with pytest.raises(CheckpointError, match=why):
            SegModel.from_pretrained(source)  # what the run loads
        settings = TrainSettings(output_dir=str(tmp_path / "run"), init_from=source)
        for resolve in (plan, resolve_run):  # the dry run refuses exactly what the run refuses
            with pytest.raises(TrainingError, match=f"--init-from {source}: .*{why}"):
                resolve(settings)
    hub_model = TrainSettings(init_from="someone/model", dataset="tiny-shapes")  # core alone: no segcore-datasets
    assert "fetched when training starts" in plan(hub_model)["init_from"]["config"]


def test_a_registered_encoder_checkpoint_is_no_init_from(monkeypatch):
    from segcore.plugins.specs import CheckpointSpec

    encoder_only = CheckpointSpec(repo_id="x/y", revision="0" * 40, description="d", kind="encoder")
    monkeypatch.setattr("segcore.weights.checkpoints.components", lambda kind: {"enc-only": encoder_only})
    with pytest.raises(CheckpointError, match="'enc-only' holds encoder weights only"):
        source_kind("enc-only")


# --------------------------------------------------------------------------------------------- settings.json
@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("iters", "five", "iters: expected an integer, got 'five'"),
        ("crop_size", [2**20, 32], r"--crop-size must be an integer in \[1, 16384\], got \[1048576, 32\]"),
        ("lr", "NaN", "lr: expected a number, got 'NaN'"),
        ("encoder_opt", [1], "encoder_opt: expected a mapping"),
    ],
    ids=["iters", "crop-size", "lr", "options"],
)
def test_a_tampered_settings_json_is_refused_on_resume_naming_the_field(tmp_path, field, value, message):
    saved = TrainSettings(**TINY_MODEL, dataset="tiny-shapes", iters=5, output_dir=str(tmp_path)).to_dict()
    saved[field] = value
    (tmp_path / "settings.json").write_text(json.dumps(saved))
    with pytest.raises(TrainingError, match=rf"cannot resume {tmp_path}: its settings.json holds an invalid setting "):
        resolve_run(TrainSettings(output_dir=str(tmp_path), resume=True))
    with pytest.raises(TrainingError, match=message):
        resolve_run(TrainSettings(output_dir=str(tmp_path), resume=True))


def test_train_settings_are_typed_and_bounded_when_built_in_code():
    with pytest.raises(TrainingError, match=r"invalid setting iters: expected an integer, got '3'"):
        TrainSettings(iters="3")
    with pytest.raises(TrainingError, match=r"--lr must be a number > 0, got inf"):
        TrainSettings(lr=float("inf"))
    assert TrainSettings(crop_size=[32, 48], pretrained_encoder="org/encoder").crop_size == (32, 48)

"""Hub I/O with the real huggingface_hub client against a local server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import types

import pytest
import segcore
import torch
from safetensors.torch import save_file
from segcore import registry
from segcore.errors import CheckpointError
from segcore.testing import serve_hub


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = segcore.build_model(
        "timm:resnet18", "upernet", 4, decoder_options={"channels": 32}, class_names=["bg", "a", "b", "c"]
    ).eval()
    folder = tmp_path_factory.mktemp("model")
    model.save_pretrained(folder)
    return model, folder


def test_save_pretrained_writes_config_weights_and_card(saved):
    model, folder = saved
    assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors", "README.md"}
    card = (folder / "README.md").read_text()
    assert "library_name: segcore" in card and "timm:resnet18" in card and "0: bg" in card


def test_hub_round_trip_is_identical(saved):
    model, folder = saved
    images = torch.randn(2, 3, 72, 88)
    with serve_hub({"segcore-test/upernet": folder}) as hub:
        loaded = segcore.SegModel.from_pretrained("segcore-test/upernet")
        assert any("/segcore-test/upernet/resolve/main/model.safetensors" in p for _, p in hub.requests)
    with torch.no_grad():
        assert torch.equal(model(images), loaded(images))
    assert loaded.config == model.config


def test_push_to_hub_then_load(saved):
    model, _ = saved
    with serve_hub() as hub:
        model.push_to_hub("segcore-test/pushed")
        assert (hub.repo_dir("segcore-test/pushed") / "model.safetensors").is_file()
        loaded = segcore.SegModel.from_pretrained("segcore-test/pushed")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_missing_repo_and_missing_file_are_clear_errors(saved, tmp_path):
    _, folder = saved
    (tmp_path / "config.json").write_bytes((folder / "config.json").read_bytes())
    with serve_hub({"segcore-test/no-weights": tmp_path}):
        with pytest.raises(CheckpointError, match="Hub repo 'segcore-test/missing' not found"):
            segcore.SegModel.from_pretrained("segcore-test/missing")
        with pytest.raises(CheckpointError, match="has no model.safetensors"):
            segcore.SegModel.from_pretrained("segcore-test/no-weights")


def test_local_folder_errors(saved, tmp_path):
    _, folder = saved
    with pytest.raises(CheckpointError, match="config.json is missing"):
        segcore.SegModel.from_pretrained(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_bytes((folder / "config.json").read_bytes())
    (broken / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated"):
        segcore.SegModel.from_pretrained(broken)


def test_mismatched_weights_report_grouped_by_module(saved, tmp_path):
    model, _ = saved
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state.pop("decoder.conv_seg.bias")
    state["decoder.extra.weight"] = torch.zeros(1)
    state["decoder.conv_seg.weight"] = torch.zeros(7, 32, 1, 1)
    with pytest.raises(CheckpointError) as err:
        segcore.convert_checkpoint(
            state,
            format="segcore",
            encoder="timm:resnet18",
            decoder="upernet",
            num_classes=4,
            decoder_options={"channels": 32},
        )
    text = str(err.value)
    assert "1 missing keys" in text and "decoder.conv_seg: bias" in text
    assert "1 unexpected keys" in text and "decoder.extra: weight" in text
    assert "decoder.conv_seg.weight: [7, 32, 1, 1] vs [4, 32, 1, 1]" in text


def test_pickled_code_is_refused(tmp_path):
    import pickle

    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(types.SimpleNamespace(a=1)))
    with pytest.raises(CheckpointError, match="refused"):
        segcore.load_state_dict_file(path)


def _checkpoint_plugin(spec):
    plugin = types.ModuleType("ckpt_plugin")

    @segcore.hookimpl
    def segcore_checkpoints():
        return {"tiny-upernet-test": spec}

    plugin.segcore_checkpoints = segcore_checkpoints
    return plugin


def test_registered_name_loads_from_its_hub_repo(saved, monkeypatch, tmp_path):
    model, folder = saved
    monkeypatch.setenv("SEGCORE_CACHE", str(tmp_path))
    spec = segcore.CheckpointSpec(
        eval_protocol={"mode": "whole"},
        repo_id="segcore-test/tiny",
        revision="main",
        description="test",
        encoder="timm:resnet18",
        decoder="upernet",
        num_classes=4,
    )
    registry.register_plugin(_checkpoint_plugin(spec), "ckpt-plugin")
    try:
        with serve_hub({"segcore-test/tiny": folder}):
            loaded = segcore.SegModel.from_pretrained("tiny-upernet-test")
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            assert torch.equal(model(x), loaded(x))
    finally:
        registry.unregister_plugin("ckpt-plugin")


def test_registered_name_falls_back_to_official_file_verifies_and_caches(saved, monkeypatch, tmp_path):
    model, _ = saved
    monkeypatch.setenv("SEGCORE_CACHE", str(tmp_path / "cache"))
    official = tmp_path / "official.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(official))
    digest = hashlib.sha256(official.read_bytes()).hexdigest()
    with serve_hub() as hub:
        url = hub.add_file("official.safetensors", official)
        for sha, ok in (("deadbeef", False), (digest[:8], True)):
            spec = segcore.CheckpointSpec(
                eval_protocol={"mode": "whole"},
                repo_id="segcore-test/not-mirrored",
                revision="main",
                description="test",
                encoder="timm:resnet18",
                decoder="upernet",
                num_classes=4,
                decoder_options={"channels": 32},
                official_url=url,
                official_filename="official.safetensors",
                sha256=sha,
                format="segcore",
                model_config={"mean": (127.5, 127.5, 127.5), "std": (127.5, 127.5, 127.5)},
            )
            registry.register_plugin(_checkpoint_plugin(spec), "ckpt-plugin")
            try:
                if not ok:
                    with pytest.raises(CheckpointError, match="expected deadbeef"):
                        segcore.SegModel.from_pretrained("tiny-upernet-test")
                    continue
                loaded = segcore.SegModel.from_pretrained("tiny-upernet-test")
            finally:
                registry.unregister_plugin("ckpt-plugin")
    assert (tmp_path / "cache" / "converted" / "tiny-upernet-test" / "model.safetensors").is_file()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    # The official model's own normalisation travels with the conversion (and the cached folder).
    assert loaded.config.mean == (127.5, 127.5, 127.5) and loaded.config.extra["source"] == url
    assert segcore.SegModel.from_pretrained(tmp_path / "cache" / "converted" / "tiny-upernet-test").config.std == (
        127.5,
        127.5,
        127.5,
    )


def test_manual_step_is_reported():
    spec = segcore.CheckpointSpec(
        eval_protocol={"mode": "whole"},
        repo_id="segcore-test/absent",
        revision="main",
        description="t",
        encoder="timm:resnet18",
        decoder="upernet",
        num_classes=4,
        manual_step="Download it from the Google Drive folder, then run segcore convert.",
    )
    registry.register_plugin(_checkpoint_plugin(spec), "ckpt-plugin")
    try:
        with serve_hub(), pytest.raises(CheckpointError, match="Google Drive folder"):
            segcore.SegModel.from_pretrained("tiny-upernet-test")
    finally:
        registry.unregister_plugin("ckpt-plugin")

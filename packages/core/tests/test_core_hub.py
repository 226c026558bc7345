"""Hub I/O with the real huggingface_hub client against a local server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import stat
import time
import types

import pytest
import segcore
import torch
from safetensors.torch import save_file
from segcore.errors import CheckpointError
from segcore.plugins import registry


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


def test_hub_round_trip_is_identical(saved, local_hub):
    model, folder = saved
    images = torch.randn(2, 3, 72, 88)
    local_hub.add_repo("segcore-test/upernet", folder)
    loaded = segcore.SegModel.from_pretrained("segcore-test/upernet")
    assert any("/segcore-test/upernet/resolve/main/model.safetensors" in p for _, p in local_hub.requests)
    with torch.no_grad():
        assert torch.equal(model(images), loaded(images))
    assert loaded.config == model.config


def test_push_to_hub_then_load(saved, local_hub):
    model, _ = saved
    model.push_to_hub("segcore-test/pushed")
    assert (local_hub.repo_dir("segcore-test/pushed") / "model.safetensors").is_file()
    loaded = segcore.SegModel.from_pretrained("segcore-test/pushed")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_missing_repo_and_missing_file_are_clear_errors(saved, tmp_path, local_hub):
    _, folder = saved
    (tmp_path / "config.json").write_bytes((folder / "config.json").read_bytes())
    local_hub.add_repo("segcore-test/no-weights", tmp_path)
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


@contextlib.contextmanager
def _registered(**fields):
    """Register ``tiny-upernet-test``: the ``saved`` model's shape as a checkpoint spec, ``fields`` over it."""
    spec = segcore.CheckpointSpec(
        **{
            "eval_protocol": {"mode": "whole"},
            "repo_id": "segcore-test/not-mirrored",
            "revision": "main",
            "description": "test",
            "encoder": "timm:resnet18",
            "decoder": "upernet",
            "num_classes": 4,
            "decoder_options": {"channels": 32},
            **fields,
        }
    )
    plugin = types.ModuleType("ckpt_plugin")
    plugin.segcore_checkpoints = segcore.hookimpl(lambda: {"tiny-upernet-test": spec})
    registry.register_plugin(plugin, "ckpt-plugin")
    try:
        yield spec
    finally:
        registry.unregister_plugin("ckpt-plugin")


def _official_file(model, tmp_path):
    """The ``saved`` model as a stand-in official file (segcore keys, safetensors)."""
    path = tmp_path / "official.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_registered_name_loads_from_its_hub_repo(saved, monkeypatch, tmp_path, local_hub):
    model, folder = saved
    monkeypatch.setenv("SEGCORE_CACHE", str(tmp_path))
    local_hub.add_repo("segcore-test/tiny", folder)
    with _registered(repo_id="segcore-test/tiny"):
        loaded = segcore.SegModel.from_pretrained("tiny-upernet-test")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_registered_name_falls_back_to_official_file_verifies_and_caches(saved, monkeypatch, tmp_path, local_hub):
    model, _ = saved
    monkeypatch.setenv("SEGCORE_CACHE", str(tmp_path / "cache"))
    official = _official_file(model, tmp_path)
    digest = hashlib.sha256(official.read_bytes()).hexdigest()
    url = local_hub.add_file("official.safetensors", official)
    for sha, ok in (("deadbeef", False), (digest[:8], True)):
        fields = dict(official_url=url, official_filename="official.safetensors", sha256=sha, format="segcore")
        with _registered(**fields, model_config={"mean": (127.5,) * 3, "std": (127.5,) * 3}):
            if not ok:
                with pytest.raises(CheckpointError, match="expected deadbeef"):
                    segcore.SegModel.from_pretrained("tiny-upernet-test")
                continue
            loaded = segcore.SegModel.from_pretrained("tiny-upernet-test")
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


def test_manual_step_is_reported(local_hub):
    step = "Download it from the Google Drive folder, then run segcore convert."
    with _registered(repo_id="segcore-test/absent", manual_step=step):
        with pytest.raises(CheckpointError, match="Google Drive folder"):
            segcore.SegModel.from_pretrained("tiny-upernet-test")


# ------------------------------------------------------------------------------ huggingface_hub conventions
def test_revision_token_force_download_and_local_files_only(saved, local_hub):
    model, folder = saved
    local_hub.add_repo("segcore-test/kw", folder)
    loaded = segcore.SegModel.from_pretrained("segcore-test/kw", revision="v1", token="hf_secret")
    assert ("GET", "/segcore-test/kw/resolve/v1/model.safetensors") in local_hub.requests
    assert "Bearer hf_secret" in local_hub.authorizations
    local_hub.requests.clear()
    segcore.SegModel.from_pretrained("segcore-test/kw", revision="v1", local_files_only=True)
    assert local_hub.requests == []  # the cache only
    segcore.SegModel.from_pretrained("segcore-test/kw", revision="v1", force_download=True)
    assert ("GET", "/segcore-test/kw/resolve/v1/model.safetensors") in local_hub.requests
    assert loaded.config == model.config


def test_cache_dir_is_huggingface_home_or_segcore_cache(monkeypatch, tmp_path):
    from segcore.weights.hub import segcore_cache_dir

    monkeypatch.delenv("SEGCORE_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert segcore_cache_dir() == tmp_path / "hf" / "segcore"
    monkeypatch.delenv("HF_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert segcore_cache_dir() == tmp_path / "xdg" / "huggingface" / "segcore"
    monkeypatch.setenv("SEGCORE_CACHE", str(tmp_path / "mine"))
    assert segcore_cache_dir() == tmp_path / "mine"


def test_offline_uses_the_cache_and_says_how_to_get_what_is_missing(saved, monkeypatch, local_hub):
    model, folder = saved
    local_hub.add_repo("segcore-test/off", folder)
    segcore.SegModel.from_pretrained("segcore-test/off")  # cached now
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    local_hub.requests.clear()
    loaded = segcore.SegModel.from_pretrained("segcore-test/off")
    tic = time.perf_counter()
    with pytest.raises(segcore.NotCachedError) as err:
        segcore.SegModel.from_pretrained("segcore-test/never-downloaded")
    elapsed = time.perf_counter() - tic
    assert local_hub.requests == []
    text = str(err.value)
    print(f"offline, not cached: {elapsed * 1000:.0f} ms: {text}")
    assert "not cached" in text and "HF_HUB_OFFLINE=1" in text and "hf download segcore-test/never-downloaded" in text
    assert elapsed < 2
    assert loaded.config == model.config


def test_offline_registered_name_never_downloads_the_official_file(saved, monkeypatch, tmp_path, local_hub):
    model, _ = saved
    monkeypatch.setenv("SEGCORE_CACHE", str(tmp_path / "cache"))
    url = local_hub.add_file("official.safetensors", _official_file(model, tmp_path))
    with _registered(official_url=url, format="segcore"):
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        with pytest.raises(segcore.NotCachedError) as err:
            segcore.SegModel.from_pretrained("tiny-upernet-test")
        assert local_hub.requests == []
        text = str(err.value)
        assert "not cached" in text and url in text and "segcore convert --format segcore" in text
        monkeypatch.delenv("HF_HUB_OFFLINE")
        segcore.SegModel.from_pretrained("tiny-upernet-test")  # online: converted and cached
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        local_hub.requests.clear()
        segcore.SegModel.from_pretrained("tiny-upernet-test")
        assert local_hub.requests == []


@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_unreachable_endpoint_is_a_network_failure_within_seconds(kind, monkeypatch, local_hub):
    import socket

    from huggingface_hub import constants

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    if kind == "refused":
        listener.close()  # nothing listens: connection refused
    else:
        listener.listen(8)  # accepts connections and never answers
    monkeypatch.setenv("SEGCORE_HUB_TIMEOUT", "1")
    unreachable = _registered(repo_id="segcore-test/unreachable", official_url="http://127.0.0.1:9/never-tried.pth")
    try:
        with unreachable:
            endpoint = f"http://127.0.0.1:{port}"
            monkeypatch.setattr(constants, "ENDPOINT", endpoint)
            monkeypatch.setattr(
                constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}"
            )
            for name in ("segcore-test/any", "tiny-upernet-test"):
                tic = time.perf_counter()
                with pytest.raises(segcore.HubNetworkError, match="network failure") as err:
                    segcore.SegModel.from_pretrained(name)
                elapsed = time.perf_counter() - tic
                print(f"{kind} endpoint, {name}: {elapsed:.2f} s: {err.value}")
                assert elapsed < 3, elapsed
    finally:
        listener.close()


# ------------------------------------------------------------------------------------------------ model cards
def test_cards_are_huggingface_model_cards_with_licence_and_model_index(saved, tmp_path):
    from huggingface_hub import ModelCard
    from segcore.weights.cards import eval_result, is_segcore_card, with_eval_results
    from segcore.weights.pretrained import save_evaluated

    model, _ = saved
    model.config.extra.update({"dataset": "synthetic-shapes", "base_model": "segcore-test/base"})
    try:
        save_evaluated(
            model, tmp_path / "m", {"mIoU": 41.234, "mAcc": 50.0, "aAcc": 80.0, "iter": 20}, {"mode": "whole"}
        )
        ms = eval_result({"mIoU": 43.5}, {"scales": (0.5, 1.0, 1.5), "flip": True}, "synthetic-shapes")
        reloaded = segcore.SegModel.from_pretrained(tmp_path / "m")
        config = with_eval_results(reloaded.config, ms)
        config.extra.update(
            {"license": "other", "license_name": "adelaidet-non-commercial", "license_note": "Non-commercial use only."}
        )
        segcore.weights.pretrained.save_pretrained(reloaded, tmp_path / "m", config=config)
    finally:
        for key in ("dataset", "base_model"):
            model.config.extra.pop(key)
    text = (tmp_path / "m" / "README.md").read_text()
    assert is_segcore_card(text)
    card = ModelCard.load(tmp_path / "m" / "README.md")
    data = card.data
    assert (data.library_name, data.pipeline_tag) == ("segcore", "image-segmentation")
    assert (data.license, data.license_name) == ("other", "adelaidet-non-commercial")
    assert data.base_model == "segcore-test/base" and data.datasets == ["synthetic-shapes"]
    values = {r.metric_name: (r.metric_value, r.metric_config, r.dataset_type) for r in data.eval_results}
    assert values["mIoU (single scale)"][:1] == (41.23,) and "whole image" in values["mIoU (single scale)"][1]
    assert values["mIoU (multi-scale + flip)"][0] == 43.5 and "flip" in values["mIoU (multi-scale + flip)"][1]
    assert "Non-commercial use only" in card.text and "| synthetic-shapes | val | single scale | 41.23 |" in card.text


def test_registered_checkpoint_card_states_the_licence(saved, monkeypatch, tmp_path, local_hub):
    from huggingface_hub import ModelCard

    model, _ = saved
    monkeypatch.setenv("SEGCORE_CACHE", str(tmp_path / "cache"))
    licence = dict(
        license="other",
        license_name="nvidia-source-code-license",
        license_note="Non-commercial use only (NVIDIA Source Code License).",
    )
    url = local_hub.add_file("official.safetensors", _official_file(model, tmp_path))
    with _registered(official_url=url, format="segcore", metric="mIoU 41.1 (ss)", **licence):
        segcore.SegModel.from_pretrained("tiny-upernet-test")
    card = ModelCard.load(tmp_path / "cache" / "converted" / "tiny-upernet-test" / "README.md")
    assert card.data.license == "other" and card.data.license_name == "nvidia-source-code-license"
    assert "Non-commercial use only" in card.text and "mIoU 41.1 (ss)" in card.text


# ------------------------------------------------------------------------------- files that are not segcore's
def test_save_never_replaces_a_users_files_and_respects_the_umask(saved, tmp_path):
    model, _ = saved
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "README.md").write_text("# my notes\n")
    old = os.umask(0o022)
    try:
        model.save_pretrained(folder)
    finally:
        os.umask(old)
    assert (folder / "README.md").read_text() == "# my notes\n"
    for name in ("config.json", "model.safetensors"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o644, name
    model.save_pretrained(tmp_path / "ours")
    model.save_pretrained(tmp_path / "ours")  # segcore's own card and config are replaced
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"model_type": "segformer"}')
    with pytest.raises(CheckpointError, match=r"foreign/config.json exists and is not a segcore config"):
        model.save_pretrained(foreign)
    assert (foreign / "config.json").read_text() == '{"model_type": "segformer"}'
    assert not (foreign / "model.safetensors").exists()


# ------------------------------------------------------------------------------------------------------ push
def test_push_takes_branch_message_pr_and_leaves_the_model_unchanged(saved, local_hub):
    from huggingface_hub import ModelCard

    model, _ = saved
    before = copy.deepcopy(model.config)
    url = model.push_to_hub("segcore-test/pushed", revision="dev", commit_message="first", token="hf_tok")
    pr = model.push_to_hub("segcore-test/pushed", create_pr=True, commit_message="second")
    card = ModelCard.load(local_hub.repo_dir("segcore-test/pushed") / "README.md")
    assert model.config == before
    assert ("segcore-test/pushed", "dev") in local_hub.branches
    first, second = local_hub.commits
    assert (first["revision"], first["summary"], first["create_pr"]) == ("dev", "first", False)
    assert (second["summary"], second["create_pr"]) == ("second", True) and "/discussions/" in pr
    assert "/commit/" in url and "Bearer hf_tok" in local_hub.authorizations
    assert 'from_pretrained("segcore-test/pushed")' in card.text and card.data.library_name == "segcore"

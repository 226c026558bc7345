"""``segcore hub mirror``: convert a registered official checkpoint and push it (a fake plugin registers it)."""

from __future__ import annotations

import pytest
import segcore
import torch
from segcore import hookimpl
from segcore.plugins.registry import register_plugin, unregister_plugin
from segcore.plugins.specs import CheckpointSpec
from segcore.testing import TINY_MODEL
from segcore_cli.main import main

PLUGIN = "segcore-cli-test-checkpoints"
SPEC = {
    "revision": "0" * 40,
    "description": "t",
    "encoder": TINY_MODEL["encoder"],
    "official_url": "https://example.org/tiny.pth",
    "official_filename": "tiny.pth",
    "format": "segcore",  # core's own (identity) converter: no plugin needed
}


class _Checkpoints:
    @hookimpl
    def segcore_checkpoints(self):
        return {
            "tiny-mirror": CheckpointSpec(
                repo_id="segcore-test/tiny-mirror",
                decoder=TINY_MODEL["decoder"],
                decoder_options=TINY_MODEL["decoder_opt"],
                num_classes=3,
                dataset="tiny-shapes",
                metric="mIoU 12.3",
                eval_protocol={"resize": (64, 64)},
                **SPEC,
            ),
            "tiny-encoder": CheckpointSpec(repo_id="segcore-test/tiny-encoder", kind="encoder", **SPEC),
        }


@pytest.fixture(autouse=True)
def _plugin():
    register_plugin(_Checkpoints(), PLUGIN)
    try:
        yield
    finally:
        unregister_plugin(PLUGIN)


def test_hub_mirror_converts_pushes_with_a_card_and_the_name_then_loads(tmp_path, monkeypatch, capsys, local_hub):
    monkeypatch.setenv("SEGCORE_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = segcore.build_model(TINY_MODEL["encoder"], "mlp", 3, decoder_options=TINY_MODEL["decoder_opt"]).eval()
    official = tmp_path / "tiny.pth"
    torch.save({"state_dict": model.state_dict()}, official)
    argv = ["hub", "mirror", "tiny-mirror", "--repo", "segcore-test/tiny-mirror", "--file", str(official)]
    assert main([*argv, "--commit-message", "hello"]) == 0
    assert "/commit/" in capsys.readouterr().out and local_hub.commits[0]["summary"] == "hello"
    card = (local_hub.repo_dir("segcore-test/tiny-mirror") / "README.md").read_text()
    loaded = segcore.SegModel.from_pretrained("tiny-mirror").eval()
    assert "https://example.org/tiny.pth" in card and "segcore convert --format segcore" in card and "12.3" in card
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("name", "message"),
    [("nope", "no registered checkpoint 'nope'"), ("tiny-encoder", "mirror full models only")],
    ids=["unknown", "encoder"],
)
def test_hub_mirror_refuses_what_it_cannot_mirror(name, message, tmp_path, capsys):
    assert main(["hub", "mirror", name, "--repo", "me/x", "--file", str(tmp_path / "none.pth")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_hub_push_to_an_unreachable_hub_says_network_failure(tmp_path, monkeypatch, capsys):
    import socket

    from huggingface_hub import constants

    folder = tmp_path / "model"
    segcore.build_model(TINY_MODEL["encoder"], "mlp", 3, decoder_options=TINY_MODEL["decoder_opt"]).save_pretrained(
        folder
    )
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()  # nothing listens there
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    assert main(["hub", "push", str(folder), "--repo", "me/tiny", "--token", "segcore-test-token"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"segcore hub: error: network failure: cannot reach {endpoint} to push to 'me/tiny'")

"""``segcore predict --out`` replaces only files it wrote (its manifest), refuses before predicting, and writes each
PNG atomically: Ctrl-C never leaves a truncated overlay."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import segcore
from PIL import Image
from segcore_cli.main import main

MANIFEST = ".segcore-predict.json"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model") / "m"
    segcore.build_model("timm:test_convnext", "mlp", 3, decoder_options={"channels": 8}).save_pretrained(folder)
    return folder


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 255, (16, 20, 3), dtype=np.uint8)).save(folder / "b.jpg")
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _predict(model_dir: Path, out: Path, *images: Path) -> list[str]:
    return ["predict", "--model", str(model_dir), *map(str, images), "--out", str(out), "--device", "cpu"]


def test_predict_refuses_before_predicting_to_replace_a_users_label(model_dir, photos, capsys, monkeypatch):
    import segcore.evaluation.inference

    def forbidden(*args, **kwargs):
        raise AssertionError("predicted although the outputs were to be refused first")

    monkeypatch.setattr(segcore.evaluation.inference, "predict_label_map", forbidden)
    (photos / "a_label.png").write_bytes(b"the user's own label of a.png")
    before = _files(photos)
    assert main(_predict(model_dir, photos, photos / "a.png", photos / "b.jpg", "--no-progress")) == 2
    err = capsys.readouterr().err
    assert f"1 output file(s) would replace files that segcore predict did not write ({photos / 'a_label.png'})" in err
    assert "Give another --out, or remove (or move) those files first" in err
    assert _files(photos) == before  # byte for byte; nothing written, not even the manifest


def test_predict_replaces_its_own_earlier_outputs_and_nothing_else(model_dir, photos, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_predict(model_dir, out, photos / "a.png", "--no-progress")) == 0
    assert json.loads((out / MANIFEST).read_text())["files"] == ["a_label.png", "a_overlay.png"]
    (out / "notes.txt").write_text("mine")
    (out / "b_overlay.png").write_bytes(b"a user's file where b's overlay would go")
    assert main(_predict(model_dir, out, photos / "a.png", photos / "b.jpg", "--no-progress")) == 2
    assert f"({out / 'b_overlay.png'})" in capsys.readouterr().err
    (out / "b_overlay.png").unlink()
    assert main(_predict(model_dir, out, photos / "a.png", photos / "b.jpg", "--no-progress")) == 0  # marked: allowed
    assert sorted(json.loads((out / MANIFEST).read_text())["files"]) == [
        "a_label.png",
        "a_overlay.png",
        "b_label.png",
        "b_overlay.png",
    ]
    assert (out / "notes.txt").read_text() == "mine"
    capsys.readouterr()


def test_predict_into_a_file_is_refused(model_dir, photos, tmp_path, capsys):
    target = tmp_path / "out.png"
    target.write_bytes(b"not a folder")
    assert main(_predict(model_dir, target, photos / "a.png")) == 2
    assert f"--out {target} is a file, not a folder" in capsys.readouterr().err
    assert target.read_bytes() == b"not a folder"


def test_ctrl_c_while_writing_an_overlay_leaves_no_truncated_file(model_dir, photos, tmp_path, capsys, monkeypatch):
    real_save = Image.Image.save

    def interrupted(self, fp, format=None, **params):  # noqa: A002 - Pillow's name
        if "overlay" in str(getattr(fp, "name", fp)):  # half of the PNG reaches the disk, then Ctrl-C
            data = __import__("io").BytesIO()
            real_save(self, data, format="PNG")
            handle = fp if hasattr(fp, "write") else open(fp, "wb")  # noqa: SIM115
            handle.write(data.getvalue()[: len(data.getvalue()) // 2])
            handle.flush()
            raise KeyboardInterrupt
        return real_save(self, fp, format, **params)

    monkeypatch.setattr(Image.Image, "save", interrupted)
    out = tmp_path / "out"
    assert main(_predict(model_dir, out, photos / "a.png", "--no-progress")) == 130
    assert "interrupted" in capsys.readouterr().err
    names = sorted(p.name for p in out.iterdir())
    assert names == [MANIFEST, "a_label.png"]  # the finished label; no overlay, whole or partial, no temporary file
    assert json.loads((out / MANIFEST).read_text())["files"] == ["a_label.png"]
    monkeypatch.setattr(Image.Image, "save", real_save)
    assert main(_predict(model_dir, out, photos / "a.png", "--no-progress")) == 0  # the next run takes over
    assert Image.open(out / "a_overlay.png").size == (24, 20)
    capsys.readouterr()

"""``segcore train`` / ``eval`` / ``predict`` end to end with a tiny model on ``tiny-shapes`` (segcore.testing)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import segcore_cli.main as segcore_cli
from PIL import Image
from segcore.testing import TinyShapes

pytestmark = pytest.mark.usefixtures("tiny_plugin")


def test_parsers_do_not_import_torch():
    code = "import sys, segcore_cli.main as m; m.build_parser(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_train_eval_predict(tmp_path, capsys):
    out = tmp_path / "run"
    rc = segcore_cli.main(
        [
            "train",
            "--encoder",
            "timm:test_convnext",
            "--decoder",
            "mlp",
            "--decoder-opt",
            "channels=16",
            "--dataset",
            "tiny-shapes",
            "--iters",
            "6",
            "--batch-size",
            "2",
            "--crop-size",
            "32",
            "--eval-every",
            "3",
            "--checkpoint-every",
            "3",
            "--output-dir",
            str(out),
            "--no-progress",
            "--json",
        ]
    )
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["iter"] == 6 and 0 <= summary["mIoU"] <= 100
    assert json.loads((out / "config.json").read_text())["decoder_options"] == {"channels": 16, "dropout": 0.1}

    assert segcore_cli.main(["eval", "--model", str(out), "--json", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) >= {"mIoU", "mAcc", "aAcc", "per_class"}
    assert [c["name"] for c in result["per_class"]] == list(TinyShapes.classes)
    assert result["mIoU"] == pytest.approx(summary["mIoU"], abs=0.01)  # same protocol as in training
    assert result["precision"] == "fp32"

    assert segcore_cli.main(["eval", "--model", str(out), "--json", "--device", "cpu", "--precision", "bf16"]) == 0
    bf16 = json.loads(capsys.readouterr().out)
    assert bf16["precision"] == "bf16"
    assert bf16["aAcc"] == pytest.approx(result["aAcc"], abs=2.0)  # rounding moves few pixels

    assert (
        segcore_cli.main(
            [
                "eval",
                "--model",
                str(out),
                "--mode",
                "slide",
                "--crop-size",
                "16",
                "--stride",
                "8",
                "--flip",
                "--scales",
                "0.75,1.0",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "background" in table and "mIoU" in table

    image = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 52, 3), dtype=np.uint8)).save(image)
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((70, 90, 3), dtype=np.uint8)).save(big)
    assert (
        segcore_cli.main(
            [
                "predict",
                "--model",
                str(out),
                str(image),
                str(big),
                "--out",
                str(tmp_path / "pred"),
                "--max-side",
                "64",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    argv = ["predict", "--model", str(out), str(image), "--out", str(tmp_path / "bf16"), "--precision", "bf16"]
    assert segcore_cli.main([*argv, "--device", "cpu"]) == 0
    agree = np.asarray(Image.open(tmp_path / "bf16" / "a_label.png")) == np.asarray(
        Image.open(tmp_path / "pred" / "a_label.png")
    )
    assert agree.mean() > 0.9
    label = Image.open(tmp_path / "pred" / "a_label.png")
    assert label.mode == "P" and label.size == (52, 40)
    assert Image.open(tmp_path / "pred" / "big_overlay.png").size == (90, 70)
    assert np.asarray(label).max() < 4


def test_bad_option_is_a_user_error(tmp_path, capsys):
    rc = segcore_cli.main(
        [
            "train",
            "--encoder",
            "timm:test_convnext",
            "--decoder",
            "mlp",
            "--decoder-opt",
            "chanels=16",
            "--dataset",
            "tiny-shapes",
            "--output-dir",
            str(tmp_path / "x"),
        ]
    )
    assert rc == 2
    assert "chanels" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--tracker-project", "--run-name"])
def test_tracker_names_that_are_paths_are_refused_at_parsing(flag, tmp_path, capsys):
    """#29: --tracker-project ../../../X wrote TensorBoard logs outside the run folder."""
    out = tmp_path / "a" / "b" / "run"
    argv = ["train", "--dataset", "tiny-shapes", "--tensorboard", "--output-dir", str(out), f"{flag}=../../../X"]
    with pytest.raises(SystemExit) as info:
        segcore_cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1
    assert f"argument {flag}: must be a single name, not a path: got '../../../X'" in err[0]
    assert list(tmp_path.rglob("*")) == []


def test_single_name_refuses_what_train_settings_refuse():
    """The command line and Python callers (and a resumed run's settings.json) share one rule."""
    from segcore.train import TrainingError, TrainSettings
    from segcore_cli._common import SingleName

    for bad in SingleName.bad_examples:
        for field in ("tracker_project", "run_name"):
            with pytest.raises(TrainingError, match="must be a single name"):
                TrainSettings(**{field: bad})
    assert SingleName()("my-project_1.0") == "my-project_1.0"
    assert TrainSettings(tracker_project="my-project_1.0", run_name="first run").run_name == "first run"


def test_a_run_is_resolved_once_and_its_options_typed_by_it(tmp_path, capsys, monkeypatch):
    """The command resolves nothing itself: one resolution types --decoder-opt after the decoder it decides on."""
    import segcore.train.resolve as resolve

    calls = []
    real = resolve._resolve
    monkeypatch.setattr(resolve, "_resolve", lambda *a, **k: calls.append(k) or real(*a, **k))
    tiny = ["--encoder", "timm:test_convnext", "--decoder", "mlp", "--dataset", "tiny-shapes", "--crop-size", "32"]
    out = str(tmp_path / "run")
    args = [*tiny, "--decoder-opt", "channels=24", "--decoder-opt", "dropout=0.25", "--output-dir", out]
    assert segcore_cli.main(["train", *args, "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["model"]["decoder_options"] == {"channels": 24, "dropout": 0.25} and len(calls) == 1
    calls.clear()
    assert segcore_cli.main(["train", *args, "--iters", "1", "--batch-size", "2", "--no-progress"]) == 0
    assert len(calls) == 1
    saved = json.loads((tmp_path / "run" / "settings.json").read_text())["decoder_opt"]
    assert saved == {"channels": 24, "dropout": 0.25}
    # On --resume the text is typed after the run's own decoder, so the same value agrees with the run.
    capsys.readouterr()
    resume = ["--output-dir", out, "--resume", "--decoder-opt", "channels=24", "--dry-run"]
    assert segcore_cli.main(["train", *resume]) == 0
    assert segcore_cli.main(["train", *resume[:-2], "channels=32", "--dry-run"]) == 2
    assert "--decoder-opt channels=32 (the run has channels=24)" in capsys.readouterr().err

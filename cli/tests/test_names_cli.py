"""Names and rows on the command line: ``--dataset-opt classes=`` follows the class-name rules, and ``data check``
names every bad row of an ``hf:`` dataset (``skip_bad=true`` leaves them out)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from segcore_cli.main import main


def _png(arr: np.ndarray) -> dict:
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


@pytest.fixture
def saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A ``save_to_disk`` dataset of three rows; row 1's image is garbage."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    images = [
        _png(np.zeros((4, 6, 3), np.uint8)),
        {"bytes": b"garbage", "path": None},
        _png(np.ones((4, 6, 3), np.uint8)),
    ]
    masks = [_png(np.full((4, 6), i, np.uint8)) for i in range(3)]
    feats = datasets.Features({"image": datasets.Image(), "mask": datasets.Image()})
    datasets.Dataset.from_dict({"image": images, "mask": masks}, features=feats).save_to_disk(str(tmp_path / "saved"))
    return f"hf:{tmp_path / 'saved'}"


def test_data_check_names_the_bad_row_and_skip_bad_leaves_it_out(saved, capsys):
    argv = ["data", "check", "--dataset", saved, "--split", "train", "--dataset-opt", "classes=a,b,c"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert f"error: {saved} (train split) row 1, column 'image': cannot decode the image" in out
    with pytest.warns(UserWarning, match=r"skipped 1 of 3 row\(s\) that cannot be read \(skip_bad\), e.g. .* row 1"):
        assert main([*argv, "--dataset-opt", "skip_bad=true"]) == 0
    out = capsys.readouterr().out
    assert "2 samples" in out and "error" not in out


@pytest.mark.parametrize(
    ("classes", "message"),
    [("a,,c", "class 1 has an empty name"), ("a,b,A", "class 2 'A' repeats class 0 'a'")],
    ids=["empty", "duplicate"],
)
def test_classes_option_is_checked_on_the_command_line(saved, classes, message, capsys):
    assert main(["data", "check", "--dataset", saved, "--split", "train", "--dataset-opt", f"classes={classes}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"segcore data: error: --dataset-opt classes: {message}"), err


def test_skip_bad_is_a_flag_of_train_and_eval(saved, tmp_path, capsys):
    """--skip-bad is --dataset-opt skip_bad=true; a dataset with no rows to skip is refused, saying what it is for."""
    argv = ["train", "--dataset", saved, "--dataset-opt", "classes=a,b,c", "--encoder", "timm:test_convnext"]
    argv += ["--decoder", "mlp", "--output-dir", str(tmp_path / "run"), "--dry-run", "--json"]
    with pytest.warns(UserWarning, match=r"skipped 1 of 3 row\(s\)"):
        assert main([*argv, "--skip-bad"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["dataset"]["options"]["skip_bad"] is True and plan["dataset"]["train_samples"] == 2
    assert plan["settings"]["--skip-bad"] is True
    folder = ["--dataset", "folder", "--data-root", str(tmp_path), "--skip-bad"]
    assert main(["train", *folder, "--encoder", "timm:test_convnext", "--decoder", "mlp", "--dry-run"]) == 2
    assert "--skip-bad: dataset 'folder' has no rows to skip" in capsys.readouterr().err
    import segcore

    model = tmp_path / "model"
    segcore.build_model(encoder="timm:test_convnext", decoder="mlp", num_classes=3).save_pretrained(model)
    evaluate = ["eval", "--model", str(model), "--dataset", saved, "--split", "train", "--dataset-opt", "classes=a,b,c"]
    with pytest.warns(UserWarning, match=r"skipped 1 of 3 row\(s\)"):
        assert main([*evaluate, "--skip-bad", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    # Only the two good rows are scored: their masks hold 0 and 2, and class 1 (the skipped row's) has no pixels.
    assert [c["Acc"] is None for c in result["per_class"]] == [False, True, False]

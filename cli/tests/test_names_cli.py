"""Names and rows on the command line: ``--dataset-opt classes=`` follows the class-name rules, and ``data check``
names every bad row of an ``hf:`` dataset (``skip_bad=true`` leaves them out)."""

from __future__ import annotations

import io
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

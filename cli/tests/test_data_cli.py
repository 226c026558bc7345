"""``segcore data check`` and ``segcore data prepare`` on the registered datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from segcore.testing import write_image, write_label
from segcore_cli.main import main


def test_cli_data_check_and_prepare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "check", "--dataset", "synthetic-shapes", "--limit", "4", "--json"]) == 0
    assert '"count": 2000' in capsys.readouterr().out
    root = tmp_path / "ade"
    for split, stem in (("training", "ADE_train_00000001"), ("validation", "ADE_val_00000001")):
        write_image(root / "images" / split / f"{stem}.jpg", 2, 3)
        write_label(root / "annotations" / split / f"{stem}.png", np.array([[0, 1, 2], [3, 3, 3]]))
    assert main(["data", "check", "--dataset", "ade20k", "--data-root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "ade20k train: 1 samples (release has 20210)" in out and "wall" in out
    assert main(["data", "prepare", "ade20k", str(root), str(tmp_path / "x")]) == 2
    assert "no preparation" in capsys.readouterr().err

"""``make demo``'s script end to end on synthetic-shapes (a few iterations): train, eval, predict, summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
FEW_ITERATIONS = ["--iters", "2", "--batch-size", "2", "--max-eval-samples", "4", "--no-progress"]


def _demo(out: Path, samples: int) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "scripts" / "demo.py"), "--output-dir", str(out), "--samples", str(samples)]
    result = subprocess.run([*command, "--", *FEW_ITERATIONS], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_demo_script_trains_evaluates_and_draws(tmp_path):
    out = tmp_path / "demo"
    result = _demo(out, samples=2)
    assert "validation mIoU" in result.stdout and str(out / "curves.png") in result.stdout
    config = json.loads((out / "config.json").read_text())
    assert (config["encoder"], config["decoder"]) == ("mscan-t", "ham")
    assert config["class_names"][0] == "background"
    assert (out / "curves.png").stat().st_size > 0
    for i in range(2):
        overlay = Image.open(out / "predictions" / f"val_{i:03d}_overlay.png")
        assert overlay.size == Image.open(out / "samples" / f"val_{i:03d}.png").size
        label = Image.open(out / "predictions" / f"val_{i:03d}_label.png")
        assert label.mode == "P" and int(np.asarray(label).max()) < len(config["class_names"])
    # A second run reuses the finished run instead of refusing the existing folder.
    _demo(out, samples=1)

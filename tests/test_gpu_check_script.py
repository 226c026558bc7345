"""``scripts/gpu_check.py``, the device run's driver: its tiny CPU mode writes the JSON, and the goals read it."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.py"


def test_tiny_env_and_training_step_write_the_json(tmp_path):
    command = [sys.executable, str(SCRIPT), "--tiny", "--out", str(tmp_path), "--steps", "env", "train-mscan-t"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + (tmp_path / "gpu_check.log").read_text()[-3000:]

    data = json.loads((tmp_path / "gpu_check.json").read_text())
    assert data["tiny"] and data["plan"]["device"] == "cpu"
    assert list(data["steps"]) == ["env", "train-mscan-t"]
    env = data["steps"]["env"]
    assert env["status"] == "ok" and env["result"]["plugins_ok"] and not env["result"]["segcore_list_missing"]
    train = data["steps"]["train-mscan-t"]["result"]
    assert train["recipe"] == "segnext-ade20k-160k" and train["lr"] == 6e-5 and train["optimizer"].startswith("AdamW")
    assert train["median_step_ms"] > 0 and len(train["all_ms"]) == data["plan"]["iters"]
    assert [g["met"] for g in data["goals"]] == [None] * 5  # nothing a goal reads was measured


def test_goals_read_the_step_results():
    goals = runpy.run_path(str(SCRIPT))["goals"]
    summary = {"speedup": 2.5, "attention_speedup": 3.0, "memory_ratio": 0.2}
    steps = {
        "throughput": {"result": {"ratios_to_reference": {"bf16": {"SegNeXt-B": {"throughput_ratio": 1.4}}}}},
        "train-mscan-b": {"result": {"peak_memory_gb": 17.5}},
        "attention": {"result": {"summary": {"fp32": summary, "bf16": summary | {"memory_ratio": 0.3}}}},
        "pytest": {"result": {"passed": 14, "failures": 0, "errors": 0, "skipped": 0}},
    }
    assert [g["met"] for g in goals(steps)] == [False, True, True, False, True]

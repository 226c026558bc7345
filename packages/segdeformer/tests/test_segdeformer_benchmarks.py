"""The attention benchmark script end to end at a tiny size (it must keep running; figures are in the README)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "attention.py"


def test_attention_benchmark_compares_both_implementations_at_both_precisions():
    command = [sys.executable, str(SCRIPT), "--encoder", "mit-b0", "--size", "64", "--iters", "2", "--threads", "1"]
    result = subprocess.run([*command, "--precision", "fp32", "bf16"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [
        line.strip("|").split("|")
        for line in result.stdout.splitlines()
        if line.startswith("| sdpa") or line.startswith("| materialized")
    ]
    table = {(r[0].strip(), r[1].strip()): [c.strip() for c in r[2:]] for r in rows}
    assert set(table) == {(a, p) for a in ("sdpa", "materialized") for p in ("fp32", "bf16")}
    for (attention, _), cells in table.items():
        memory, latency, memory_ratio, speedup, attention_s, attention_speedup, diff = cells
        assert float(latency) >= 0 and float(attention_s) >= 0 and speedup.endswith("x")
        if attention == "materialized":  # ratios are against the materialised row of the same precision
            assert (memory_ratio, speedup, attention_speedup) == ("1.000", "1.00x", "1.00x")
    assert float(table["materialized", "fp32"][-1]) == 0.0  # the reference row
    assert float(table["sdpa", "fp32"][-1]) < 1e-5  # same maths in fp32
    assert 1e-5 < float(table["sdpa", "bf16"][-1]) < 0.5  # bf16 differs, but only by rounding
    assert result.stdout.count("rounds (s):") == 4

"""``scripts/benchmarks.py`` end to end in its quick mode: one row, parameters and multiply-adds only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_counts_only_writes_the_markdown_and_the_json_of_the_measured_row(tmp_path):
    out = tmp_path / "docs" / "benchmarks.md"
    command = [sys.executable, str(ROOT / "scripts" / "benchmarks.py"), "--counts-only", "--only", "^mscan-t\\+ham$"]
    result = subprocess.run([*command, "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    data = json.loads(out.with_suffix(".json").read_text())
    assert data["protocol"]["counts_only"] and data["protocol"]["torch"]
    assert data["peer"] is None
    [entry] = data["entries"]
    assert (entry["encoder"], entry["decoder"], entry["size"], entry["status"]) == ("mscan-t", "ham", 512, "counted")
    measured = entry["result"]
    assert measured["params"] == 4_263_414  # SegNeXt-T, 150 classes (the official count)
    assert 6.3 < measured["gmacs"] < 6.5
    assert measured["latency_ms"] is None

    markdown = out.read_text()
    row = next(line for line in markdown.splitlines() if "`mscan-t` + `ham`" in line)
    assert f"{measured['params']:,}" in row and f"{measured['gmacs']:.3f}" in row
    assert "not measured" in row  # latency, throughput and memory were not measured: never invented
    assert "mscan-s" not in markdown and "SegFormer-B2" not in markdown
    assert entry["command"] in markdown

    # The markdown is a function of the JSON alone: re-rendering it gives the same file.
    rerendered = subprocess.run(
        [*command[:2], "--render-only", "--out", str(out)], capture_output=True, text=True, timeout=120
    )
    assert rerendered.returncode == 0, rerendered.stderr[-3000:]
    assert out.read_text() == markdown


def test_cpu_bf16_adds_a_bf16_cpu_setting_per_row():
    import runpy

    script = runpy.run_path(str(ROOT / "scripts" / "benchmarks.py"))
    settings = [s for s, reason in script["settings_for"](script["parse_args"](["--cpu-bf16"])) if reason is None]
    assert [(s.device, s.precision) for s in settings] == [("cpu", "fp32"), ("cpu", "bf16")]
    plain = script["settings_for"](script["parse_args"]([]))
    assert [(s.device, s.precision) for s, _ in plain] == [("cpu", "fp32")]
    row = script["find_row"]("mit-b2+segdeformer")
    argv = script["benchmark_argv"](row, settings[1], script["parse_args"](["--cpu-bf16"]))
    assert argv[argv.index("--precision") + 1] == "bf16" and argv[argv.index("--device") + 1] == "cpu"

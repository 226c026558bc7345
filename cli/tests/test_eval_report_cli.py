"""``segcore eval --report`` writes its tables and page; ``accelerate launch`` shards eval with the same numbers."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import segcore
from segcore_cli.main import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    ds = segcore.build_dataset("synthetic-shapes", split="val")
    model = segcore.build_model(
        "timm:test_convnext", "mlp", len(ds.classes), decoder_options={"channels": 16}, class_names=list(ds.classes)
    )
    model.config.extra["dataset"] = "synthetic-shapes"
    folder = tmp_path_factory.mktemp("model") / "m"
    model.save_pretrained(folder)
    return folder


def _eval(model_dir: Path, *extra: str) -> list[str]:
    return ["eval", "--model", str(model_dir), "--max-samples", "5", "--device", "cpu", *extra]


def test_eval_report_writes_tables_and_a_page_with_pictures(model_dir, tmp_path, capsys):
    assert main([*_eval(model_dir, "--json", "--report", str(tmp_path / "report"))]) == 0
    printed = json.loads(capsys.readouterr().out)  # --json: still one document
    classes = list(segcore.build_dataset("synthetic-shapes", split="val").classes)
    report = tmp_path / "report"
    table = json.loads((report / "per_class.json").read_text())
    assert [c["name"] for c in table["per_class"]] == classes
    assert table["mIoU"] == pytest.approx(printed["mIoU"], abs=0.01)
    assert [r[0] for r in list(csv.reader((report / "per_class.csv").open()))[1:]] == classes
    assert next(csv.reader((report / "confusion.csv").open()))[1:] == classes
    assert (report / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    page = (report / "report.html").read_text()
    for text in ("whole image", "mIoU", "Per-class IoU", "Confusion matrix", "Worst images", *classes):
        assert text in page, text
    assert "Training curves" not in page  # a model folder, not a run
    assert page.count('src="data:image/png;base64,') == 1 + 1 + 5  # bars, confusion, the 5 images (worst first)


def test_eval_of_a_local_model_keeps_its_tables_in_the_folder(model_dir, capsys):
    """Every evaluation saves its per-class table and confusion matrix: without --report, in MODEL/eval/."""
    assert main([*_eval(model_dir)]) == 0
    out = capsys.readouterr().out
    tables = model_dir / "eval" / "synthetic-shapes-val"
    assert f"tables: {tables}" in out
    assert {p.name for p in tables.iterdir()} == {"per_class.json", "per_class.csv", "confusion.csv", "confusion.png"}
    assert json.loads((tables / "per_class.json").read_text())["per_class"][0]["name"] == "background"


def test_two_processes_give_the_single_process_numbers_and_print_once(model_dir, tmp_path, capsys):
    assert main([*_eval(model_dir, "--json")]) == 0
    single = json.loads(capsys.readouterr().out)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "segcore_cli.main"]
    result = subprocess.run(
        [*launch, *_eval(model_dir, "--json", "--report", str(tmp_path / "report"))],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = [line for line in result.stdout.splitlines() if line.strip()]  # printed once
    sharded = json.loads(line)
    assert sharded == single  # 5 images split 3 + 2: the reduced confusion matrix gives exactly the same numbers
    worst = (tmp_path / "report" / "report.html").read_text().count('src="data:image/png;base64,')
    assert worst == 1 + 1 + 5  # every image's score was gathered from both processes

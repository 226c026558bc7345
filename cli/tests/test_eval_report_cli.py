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
    for text in ("whole image", "mIoU", "Per-class IoU", "Confusion matrix", "Calibration", "Worst images", *classes):
        assert text in page, text
    assert "Training curves" not in page  # a model folder, not a run
    assert page.count('src="data:image/png;base64,') == 1 + 1 + 1 + 5  # bars, confusion, reliability, 5 images


def test_eval_of_a_local_model_keeps_its_tables_in_the_folder(model_dir, capsys):
    """Every evaluation saves its per-class table and confusion matrix: without --report, in MODEL/eval/."""
    assert main([*_eval(model_dir)]) == 0
    out = capsys.readouterr().out
    tables = model_dir / "eval" / "synthetic-shapes-val"
    assert f"tables: {tables}" in out
    assert {p.name for p in tables.iterdir()} == {
        "per_class.json",
        "per_class.csv",
        "confusion.csv",
        "confusion.png",
        ".segcore-report.json",  # marks them as segcore's: a later report there may replace them
    }
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
    assert worst == 1 + 1 + 1 + 5  # every image's score was gathered from both processes


# ------------------------------------------------------------------------ a report replaces only its own files
def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def no_evaluation(monkeypatch):
    """Fails the test if the evaluation starts: a refused --report must be refused before it."""
    import segcore.evaluation.evaluate

    def forbidden(*args, **kwargs):
        raise AssertionError("the evaluation ran although --report was to be refused first")

    monkeypatch.setattr(segcore.evaluation.evaluate, "evaluate", forbidden)


def test_eval_report_into_a_file_is_refused_before_the_evaluation(model_dir, tmp_path, capsys, no_evaluation):
    target = tmp_path / "notes.txt"
    target.write_text("my notes")
    assert main(_eval(model_dir, "--report", str(target))) == 2
    err = capsys.readouterr().err
    assert f"report folder {target} is a file, not a folder" in err and "FileExistsError" not in err
    assert target.read_text() == "my notes"


@pytest.mark.parametrize("names", [("report.html",), ("per_class.csv", "per_class.json"), ("confusion.png",)])
def test_eval_report_never_replaces_a_users_files(model_dir, tmp_path, capsys, no_evaluation, names):
    folder = tmp_path / "mine"
    folder.mkdir()
    for name in names:
        (folder / name).write_bytes(f"the user's own {name}\n".encode())
    before = _files(folder)
    assert main(_eval(model_dir, "--report", str(folder))) == 2
    err = capsys.readouterr().err
    assert f"report folder {folder} is not empty ({', '.join(sorted(names))})" in err and "new or empty" in err
    assert _files(folder) == before  # byte for byte, and nothing added


def test_eval_report_inside_the_dataset_or_the_model_is_refused(tmp_path, capsys, no_evaluation):
    from PIL import Image

    data = tmp_path / "data"
    for split in ("val",):
        (data / "images" / split).mkdir(parents=True)
        (data / "masks" / split).mkdir(parents=True)
        Image.new("RGB", (16, 16)).save(data / "images" / split / "0.png")
        Image.new("L", (16, 16)).save(data / "masks" / split / "0.png")
    (data / "classes.txt").write_text("background\nthing\n")
    model = segcore.build_model("timm:test_convnext", "mlp", 2, decoder_options={"channels": 8})
    model.save_pretrained(tmp_path / "m")
    before = _files(data)
    argv = ["eval", "--model", str(tmp_path / "m"), "--dataset", "folder", "--data-root", str(data), "--device", "cpu"]
    assert main([*argv, "--report", str(data / "masks" / "val")]) == 2
    assert f"report folder {data / 'masks' / 'val'} is inside the dataset's folder {data}" in capsys.readouterr().err
    (tmp_path / "link").symlink_to(data / "masks")
    assert main([*argv, "--report", str(tmp_path / "link" / "report")]) == 2  # a symlink into it too
    assert "is inside the dataset's folder" in capsys.readouterr().err
    assert main([*argv, "--report", str(tmp_path / "m" / "report")]) == 2
    assert f"is inside the model folder {tmp_path / 'm'}" in capsys.readouterr().err
    assert _files(data) == before and not (tmp_path / "m" / "report").exists()


def test_eval_report_again_into_its_own_folder_replaces_only_its_files(model_dir, tmp_path, capsys):
    report = tmp_path / "report"
    assert main(_eval(model_dir, "--report", str(report), "--max-samples", "1")) == 0
    marker = json.loads((report / ".segcore-report.json").read_text())
    assert sorted(marker["files"]) == sorted(p for p in _files(report) if not p.startswith("."))
    (report / "notes.txt").write_text("mine")
    first = (report / "report.html").read_text()
    assert main(_eval(model_dir, "--report", str(report), "--max-samples", "2")) == 0  # marked: allowed
    assert (report / "report.html").read_text() != first and (report / "notes.txt").read_text() == "mine"
    assert not [p for p in report.iterdir() if p.name.startswith(".tmp-")]
    capsys.readouterr()

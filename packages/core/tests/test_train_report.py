"""Trackers through Accelerate and the evaluation files of a run: tables per evaluation, the final report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from segcore.testing import TinyShapes, tiny_run
from segcore.train import TrainingError, TrainSettings, train

CLASSES = list(TinyShapes.classes)


pytestmark = pytest.mark.usefixtures("tiny_plugin")


def _settings(out: Path, **kw) -> TrainSettings:
    base = {"iters": 4, "eval_every": 2, "checkpoint_every": 0, "log_every": 2, "max_eval_samples": 4}
    return tiny_run(out, **{**base, **kw})


def test_each_evaluation_saves_its_tables_and_the_final_one_a_report(tmp_path):
    out = train(_settings(tmp_path / "run"))
    for iteration in (2, 4):
        folder = out / "eval" / f"iter_{iteration}"
        table = json.loads((folder / "per_class.json").read_text())
        assert [c["name"] for c in table["per_class"]] == CLASSES
        scores = ["IoU", "Acc", "Dice", "Fscore", "Precision", "Recall"]
        assert set(table["per_class"][0]) == {"name", *scores, "pixels"}
        assert {"mIoU", "mFscore", "mPrecision", "mRecall", "ECE"} <= set(table)
        rows = list(csv.reader((folder / "per_class.csv").open()))
        assert rows[0] == ["class", *scores, "pixels"] and [r[0] for r in rows[1:]] == CLASSES
        confusion = list(csv.reader((folder / "confusion.csv").open()))
        assert confusion[0][1:] == CLASSES and [r[0] for r in confusion[1:]] == CLASSES
        # The confusion matrix counts exactly the scored pixels of the per-class table.
        assert sum(int(v) for r in confusion[1:] for v in r[1:]) == sum(c["pixels"] for c in table["per_class"])
        assert (folder / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "eval" / "iter_2" / "report.html").exists()
    page = (out / "eval" / "iter_4" / "report.html").read_text()
    sections = ("Protocol", "Per-class IoU", "Confusion matrix", "Calibration", "Worst images", "Training curves")
    for text in (*sections, "mIoU", "mFscore", "ECE", *CLASSES):
        assert text in page, text
    # Pictures inlined: IoU bars, confusion matrix, reliability diagram, the worst images (4 evaluated: all of
    # them), the curves.
    assert page.count('src="data:image/png;base64,') == 1 + 1 + 1 + 4 + 1


def test_trackers_write_tensorboard_events_and_a_wandb_offline_run(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_CODE", "true")
    out = train(
        _settings(tmp_path / "run", log_with=["wandb"], tensorboard=True, tracker_project="proj", run_name="first")
    )
    (events,) = (out / "logs" / "proj").glob("events.out.tfevents.*")
    tb = EventAccumulator(str(events), size_guidance={"images": 0, "scalars": 0}).Reload()
    scalars = set(tb.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/images_per_s", "val/mIoU", "val/aAcc", "val/mFscore", "val/ECE"} <= scalars
    assert {f"val/{key}/{name}" for key in ("IoU", "Recall") for name in CLASSES[1:]} <= scalars  # per class
    # A class never predicted has no precision (nan, left out): some class has each of the others.
    assert all(any(f"val/{key}/{name}" in scalars for name in CLASSES) for key in ("Fscore", "Precision", "Dice"))
    assert [e.step for e in tb.Scalars("val/mIoU")] == [2, 4]
    assert {"val/confusion", "val/prediction_0"} <= set(tb.Tags()["images"])
    (run,) = (out / "logs" / "wandb").glob("offline-run-*")
    (record,) = run.glob("*.wandb")
    data = record.read_bytes()  # W&B's protobuf record of the run: strings are stored as they are
    assert b"tiny-shapes" in data and b"log_with" in data  # the resolved settings are the run config
    assert b"val/IoU/red" in data and b"train/images_per_s" in data
    assert list((run / "files" / "media" / "images").glob("val/confusion_*.png"))


def test_unknown_or_missing_tracker_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(TrainingError, match=r"--log-with nope: not a tracker Accelerate knows; use one of .*wandb"):
        train(_settings(tmp_path / "a", log_with=["nope"]))
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(TrainingError, match=r"--log-with mlflow needs the mlflow package: pip install mlflow"):
        train(_settings(tmp_path / "b", log_with=["mlflow"]))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # refused before writing

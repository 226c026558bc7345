"""Trainer: end to end on a tiny model, exact resume after SIGKILL, SIGTERM, atomic checkpoints, NaN stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from segcore.testing import TinyShapes, tiny_run
from segcore.train import TrainingError, TrainSettings, train
from segcore.train.checkpointing import list_checkpoints, save_atomic

pytestmark = pytest.mark.usefixtures("tiny_plugin")


def _settings(out: Path, **kw) -> TrainSettings:
    return tiny_run(kw.pop("output_dir", out), **{"iters": 8, "eval_every": 4, "checkpoint_every": 4, **kw})


def _script(out: Path, **kw) -> str:
    return textwrap.dedent(f"""
        from segcore.testing import register_tiny_shapes, tiny_run
        register_tiny_shapes()
        from segcore.train import train
        train(tiny_run({str(out)!r}, **{kw!r}))
    """)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def _assert_bitwise(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def test_train_writes_run_folder(tmp_path):
    out = train(_settings(tmp_path / "run"))
    for name in (
        "config.json",
        "model.safetensors",
        "settings.json",
        "metrics.jsonl",
        "curves.png",
        "best/config.json",
        "best/model.safetensors",
        "checkpoints/iter_4",
        "checkpoints/iter_8",
    ):
        assert (out / name).exists(), name
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in rows if "mIoU" in r] == [4, 8]
    config = json.loads((out / "config.json").read_text())
    assert config["class_names"] == list(TinyShapes.classes)
    assert config["eval"]["mode"] == "whole"
    settings = json.loads((out / "settings.json").read_text())
    assert settings["iters"] == 8 and settings["crop_size"] == [32, 32]
    import segcore

    model = segcore.SegModel.from_pretrained(out)
    assert model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8)).shape == (1, 4, 32, 32)


def test_refuses_to_overwrite_without_resume(tmp_path):
    train(_settings(tmp_path / "run", iters=4))
    with pytest.raises(TrainingError, match="--resume"):
        train(_settings(tmp_path / "run", iters=4))


def test_resume_after_sigkill_is_bitwise_equal(tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    kw = dict(iters=16, eval_every=8, checkpoint_every=4)
    subprocess.run([sys.executable, "-c", _script(full, **kw)], check=True, capture_output=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", _script(cut, **kw)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while not (cut / "checkpoints" / "iter_4").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (cut / "model.safetensors").exists(), "the run finished before it could be killed"
    assert list_checkpoints(cut / "checkpoints")
    subprocess.run([sys.executable, "-c", _script(cut, resume=True, **kw)], check=True, capture_output=True)
    _assert_bitwise(full, cut)


def test_sigterm_saves_says_where_and_resumes_exactly(tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    kw = dict(iters=40, eval_every=0, checkpoint_every=100, log_every=1)
    train(_settings(full, **kw))
    proc = subprocess.Popen(
        [sys.executable, "-c", _script(cut, **kw)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + 120
    while not (cut / "metrics.jsonl").exists() and time.time() < deadline:  # training has begun
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    saved = list_checkpoints(cut / "checkpoints")
    assert saved, "SIGTERM left no checkpoint"
    stopped = int(saved[0].name.split("_")[1])
    assert stopped < 40, "the run finished before SIGTERM came"
    # Not a success: the exception names the checkpoint, and no final model was written.
    assert proc.returncode != 0 and f"the full state is saved in {saved[0]}" in err.decode(), err.decode()[-2000:]
    assert not (cut / "model.safetensors").exists()
    train(_settings(cut, resume=True, **kw))
    _assert_bitwise(full, cut)


def test_interrupted_checkpoint_write_keeps_previous(tmp_path):
    out = tmp_path / "run"
    train(_settings(out, iters=4))

    def dies_midway(tmp: Path) -> None:
        (tmp / "model.safetensors").write_bytes(b"partial")
        raise KeyboardInterrupt  # what a kill during the write leaves behind

    with pytest.raises(KeyboardInterrupt):
        save_atomic(out / "checkpoints", 6, dies_midway, {"iter": 6})
    # A complete-looking folder without its state marker is not a checkpoint either.
    (out / "checkpoints" / "iter_7").mkdir()
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["iter_4"]
    train(_settings(out, iters=6, resume=True))
    assert [p.name for p in list_checkpoints(out / "checkpoints")][:2] == ["iter_6", "iter_4"]


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    from segcore.models.model import SegModel

    original = SegModel.compute_loss
    calls = {"n": 0}

    def poisoned(self, images, labels):
        calls["n"] += 1
        losses = original(self, images, labels)
        if calls["n"] > 5:
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    monkeypatch.setattr(SegModel, "compute_loss", poisoned)
    out = tmp_path / "run"
    with pytest.raises(TrainingError, match="loss is nan at iteration 5"):
        train(_settings(out, iters=8, checkpoint_every=2, eval_every=0))
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["iter_4", "iter_2"]
    monkeypatch.setattr(SegModel, "compute_loss", original)
    train(_settings(out, iters=8, checkpoint_every=2, eval_every=0, resume=True))
    assert (out / "model.safetensors").exists()


def test_grad_accum_and_ema_and_clip(tmp_path):
    out = train(
        _settings(tmp_path / "run", iters=4, batch_size=4, grad_accum=2, ema_decay=0.9, clip_grad=1.0, eval_every=0)
    )
    assert (out / "model.safetensors").exists()
    train(
        _settings(
            tmp_path / "run",
            iters=6,
            batch_size=4,
            grad_accum=2,
            ema_decay=0.9,
            clip_grad=1.0,
            eval_every=0,
            resume=True,
        )
    )


def test_dataloader_workers_do_not_change_the_result(tmp_path):
    kw = dict(iters=4, batch_size=4, grad_accum=2, eval_every=0, checkpoint_every=0)
    _assert_bitwise(
        train(_settings(tmp_path / "w0", workers=0, **kw)), train(_settings(tmp_path / "w2", workers=2, **kw))
    )


def test_bad_labels_stop_before_training(tmp_path, monkeypatch):
    original = TinyShapes.__getitem__

    def with_a_stray_value(self, i):
        sample = original(self, i)
        sample["label"][1, 1] = 7  # 4 classes, ignore 255: 7 is neither
        return sample

    monkeypatch.setattr(TinyShapes, "__getitem__", with_a_stray_value)
    with pytest.raises(TrainingError, match=r"train split failed the data check: tiny/train/\d+\.png.*\[7\]"):
        train(_settings(tmp_path / "run"))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_batch_size_must_split(tmp_path):
    with pytest.raises(TrainingError, match="multiple"):
        train(_settings(tmp_path / "run", batch_size=3, grad_accum=2))


@pytest.mark.slow
def test_two_process_cpu_training(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(_script(tmp_path / "ddp", iters=4, batch_size=4, eval_every=4, checkpoint_every=4))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            str(script),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "ddp" / "model.safetensors").exists()
    assert "2 processes" in result.stderr
    # The validation metrics reduced over the two processes equal one process scoring the same model.
    import segcore
    from segcore.train import evaluate

    logged = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    final = [row for row in logged if "mIoU" in row][-1]
    single = evaluate(
        segcore.SegModel.from_pretrained(tmp_path / "ddp"), segcore.build_dataset("tiny-shapes", split="val")
    )
    for key in ("mIoU", "mAcc", "aAcc"):
        assert final[key] == pytest.approx(single[key], abs=1e-6), key

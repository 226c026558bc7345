"""`segcore train` end to end, as a user runs it: a resume that mixes two runs, SIGTERM, unsafe folders (#18, #29)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("segcore_datasets")

SEGCORE = [sys.executable, "-m", "segcore_cli.main"]
# A small run on the synthetic data: a tiny timm model, 2 validation images.
TINY = (
    *("--encoder", "timm:test_convnext", "--decoder", "mlp", "--decoder-opt", "channels=16"),
    *("--dataset", "synthetic-shapes", "--batch-size", "2", "--crop-size", "32", "--max-eval-samples", "2"),
    "--no-progress",
)


def segcore(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*SEGCORE, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def _tree(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))}


def test_resume_with_another_model_is_refused_and_the_run_is_untouched(tmp_path):
    out = tmp_path / "run"
    first = segcore("train", *TINY, "--iters", "4", "--checkpoint-every", "2", "--output-dir", str(out))
    assert first.returncode == 0, first.stderr[-2000:]
    before = _tree(out)
    # The case: another model on --resume used to restart from iteration 0 in the same folder.
    again = segcore(
        "train", "--encoder", "mscan-t", "--decoder", "ham", "--resume", "--iters", "8", "--output-dir", str(out)
    )
    assert again.returncode == 2, again.stderr[-2000:]
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1 and "--encoder mscan-t (the run has timm:test_convnext)" in lines[0], again.stderr
    assert "--decoder ham (the run has mlp)" in lines[0]
    assert _tree(out) == before
    # Left out, the flags are the run's own: --resume with --iters alone extends it.
    extended = segcore("train", "--resume", "--iters", "6", "--output-dir", str(out), "--no-progress")
    assert extended.returncode == 0, extended.stderr[-2000:]
    assert "resuming from" in extended.stderr and "iter_4" in extended.stderr


def test_sigterm_saves_says_where_and_exits_143(tmp_path):
    out = tmp_path / "run"
    args = ("train", *TINY, "--iters", "100000", "--log-every", "1", "--eval-every", "0", "--output-dir", str(out))
    proc = subprocess.Popen([*SEGCORE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (out / "metrics.jsonl").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143, stderr[-2000:]
    assert "model:" not in stdout  # no final model was written, so none is announced
    assert not (out / "model.safetensors").exists()
    saved = sorted((out / "checkpoints").iterdir())
    assert len(saved) == 1 and f"the full state is saved in {saved[0]}" in stderr and "--resume" in stderr


def test_a_folder_segcore_did_not_make_is_refused(tmp_path):
    (tmp_path / "README.md").write_text("my project\n")
    result = segcore("train", *TINY, "--iters", "2", "--output-dir", ".", cwd=tmp_path)
    assert result.returncode == 2 and "not empty and was not made by segcore train" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md"]


def _make(folder: Path, files: dict[str, bytes]) -> dict[str, bytes | None]:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return _tree(folder)


def test_overwrite_never_removes_or_replaces_the_users_files(tmp_path):
    """#29: --overwrite replaced README.md with the model card and deleted logs/, or user-made eval/ and best/."""
    project = tmp_path / "project"
    mine = _make(project, {"README.md": b"# my project\n", "logs/app.log": b"started\n", "src/main.py": b"print(1)\n"})
    result = segcore("train", *TINY, "--iters", "2", "--overwrite", "--output-dir", str(project))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "nothing was removed; the run writes beside README.md, logs, src, which stay as they are" in result.stderr
    assert "is not a card segcore wrote" in result.stderr  # the model card is skipped, and that is said
    after = _tree(project)
    assert {k: after[k] for k in mine} == mine and (project / "model.safetensors").is_file()

    other = tmp_path / "other"
    made = {"eval/val.csv": b"a,b\n", "checkpoints/my.ckpt": b"\0" * 64, "best/notes": b"x", "config.json": b"{}\n"}
    before = _make(other, made)
    result = segcore("train", *TINY, "--iters", "2", "--overwrite", "--output-dir", str(other))
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "holds config.json, best, checkpoints, eval, which no segcore run recorded" in lines[0]
    assert _tree(other) == before

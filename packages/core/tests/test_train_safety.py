"""Runs you can trust (#18): resume, retention, run folders, locking, honest exits, storage failures, bad values.

Each data-loss case of the issue is reproduced here; every test fails on the trainer before #18 (which restarted
a resume it could not load from iteration 0, wrote into any folder, kept every checkpoint, exited 0 on SIGTERM
and reported storage failures as raw torch errors after training).
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from segcore.testing import TinyShapes, registered_tiny_shapes  # noqa: E402
from segcore.train import TrainingError, TrainSettings, train  # noqa: E402
from segcore.train.checkpointing import list_checkpoints  # noqa: E402
from test_train_loop import _script, _settings  # noqa: E402

pytestmark = pytest.mark.usefixtures("tiny_plugin")


def _tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (``None`` for folders): to prove nothing was touched."""
    return {str(p.relative_to(folder)): (None if p.is_dir() else p.read_bytes()) for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished 4-iteration run with checkpoints iter_2 and iter_4 (copied by each test that changes it)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    with registered_tiny_shapes():  # module scope: the tiny_plugin fixture is per test
        train(_settings(out, iters=4, checkpoint_every=2, eval_every=2))
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


# ----------------------------------------------------------------------------------------------------- resume
def test_resume_with_another_model_is_refused_and_changes_nothing(finished_run, tmp_path):
    out = _copy(finished_run, tmp_path)
    before = _tree(out)
    other = dict(encoder="timm:resnet18", decoder="linear", decoder_opt={}, iters=8)
    with pytest.raises(TrainingError) as info:
        train(_settings(out, resume=True, **other))
    message = str(info.value)
    assert "--encoder timm:resnet18 (the run has timm:test_convnext)" in message
    assert "--decoder linear (the run has mlp)" in message
    assert _tree(out) == before


def test_resume_with_other_options_dataset_or_batch_split_names_each_difference(finished_run, tmp_path):
    out = _copy(finished_run, tmp_path)
    before = _tree(out)
    with pytest.raises(TrainingError) as info:
        train(_settings(out, resume=True, decoder_opt={"channels": 32}, batch_size=4, grad_accum=2, seed=3))
    message = str(info.value)
    for expected in (
        "--decoder-opt channels=32 (the run has channels=16)",
        "--batch-size 4 (the run has 2)",
        "--grad-accum 2 (the run has 1)",
        "--seed 3 (the run has 0)",
    ):
        assert expected in message, expected
    with pytest.raises(TrainingError, match="--dataset synthetic-shapes"):
        train(_settings(out, resume=True, dataset="synthetic-shapes"))
    assert _tree(out) == before


def test_resume_with_every_checkpoint_truncated_is_refused_and_changes_nothing(finished_run, tmp_path):
    out = _copy(finished_run, tmp_path)
    for ckpt in list_checkpoints(out / "checkpoints"):
        for f in ckpt.iterdir():
            if f.name != "trainer_state.json":
                f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    before = _tree(out)
    with pytest.raises(TrainingError) as info:
        train(TrainSettings(output_dir=str(out), resume=True, iters=8, progress=False))
    message = str(info.value)
    assert "no checkpoint loads" in message and "iter_4: " in message and "iter_2: " in message
    assert _tree(out) == before


def test_resume_without_any_checkpoint_is_refused(finished_run, tmp_path):
    out = _copy(finished_run, tmp_path)
    shutil.rmtree(out / "checkpoints")
    (out / "checkpoints" / ".tmp-iter_6").mkdir(parents=True)  # what a kill during the first save leaves
    before = _tree(out)
    with pytest.raises(TrainingError, match=r"no complete checkpoint \(only the unfinished \.tmp-iter_6\)"):
        train(TrainSettings(output_dir=str(out), resume=True, iters=8, progress=False))
    assert _tree(out) == before
    with pytest.raises(TrainingError, match="holds no settings.json"):
        train(TrainSettings(output_dir=str(tmp_path), resume=True, progress=False))
    with pytest.raises(TrainingError, match="does not exist"):
        train(TrainSettings(output_dir=str(tmp_path / "nowhere"), resume=True, progress=False))


def test_resume_takes_the_runs_own_settings_and_may_extend_it(finished_run, tmp_path):
    out = _copy(finished_run, tmp_path)
    with open(out / "metrics.jsonl", "a") as handle:  # a step logged after the last checkpoint, then killed
        handle.write(json.dumps({"iter": 5, "loss": 1.0, "lr": 0.1, "time": 1.0}) + "\n")
        handle.write('{"iter": 6, "lo')  # cut by the kill
    # Only the folder and the new length: model, options, data and batch come from settings.json.
    train(TrainSettings(output_dir=str(out), resume=True, iters=6, progress=False))
    settings = json.loads((out / "settings.json").read_text())
    assert settings["iters"] == 6 and settings["encoder"] == "timm:test_convnext"
    assert settings["decoder_opt"]["channels"] == 16
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["iter_6", "iter_4", "iter_2"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in rows if "mIoU" in r] == [2, 4, 6]  # continued, not restarted
    assert [r["iter"] for r in rows if "loss" in r] == [4, 6]  # the stale step 5 row is gone (logged every 10)
    with pytest.raises(TrainingError, match="--iters 3 is below iteration 6"):
        train(TrainSettings(output_dir=str(out), resume=True, iters=3, progress=False))


def test_resume_refuses_a_dataset_whose_classes_changed(finished_run, tmp_path, monkeypatch):
    out = _copy(finished_run, tmp_path)
    before = _tree(out)
    monkeypatch.setattr(TinyShapes, "classes", ("background", "red", "green", "cyan"))
    with pytest.raises(TrainingError, match="the dataset now has 4 classes"):
        train(TrainSettings(output_dir=str(out), resume=True, iters=6, progress=False))
    assert _tree(out) == before


# -------------------------------------------------------------------------------------------------- retention
def test_retention_keeps_exactly_the_newest_n(tmp_path):
    out = train(_settings(tmp_path / "two", iters=10, checkpoint_every=2, eval_every=5, keep_checkpoints=2))
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["iter_10", "iter_8"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["iter_10", "iter_8"]  # nothing half-deleted
    assert (out / "best" / "model.safetensors").exists() and (out / "model.safetensors").exists()
    out = train(_settings(tmp_path / "default", iters=10, checkpoint_every=2, eval_every=0))
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["iter_10", "iter_8", "iter_6"]
    assert json.loads((out / "settings.json").read_text())["keep_checkpoints"] == 3
    out = train(_settings(tmp_path / "all", iters=6, checkpoint_every=2, eval_every=0, keep_checkpoints=0))
    assert len(list_checkpoints(out / "checkpoints")) == 3


def test_a_checkpoint_is_deleted_only_after_a_newer_one_is_complete(tmp_path, monkeypatch):
    from segcore.train import trainer

    original = trainer.save_state
    calls = {"n": 0}

    def fails_the_third(folder, *args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.EIO, "Input/output error")
        return original(folder, *args)

    monkeypatch.setattr(trainer, "save_state", fails_the_third)
    out = tmp_path / "run"
    with pytest.raises(TrainingError, match="iter_6"):
        train(_settings(out, iters=8, checkpoint_every=2, eval_every=0, keep_checkpoints=1))
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["iter_4"]


# ------------------------------------------------------------------------------------------------ run folders
def test_a_new_run_refuses_a_folder_it_did_not_create(tmp_path):
    out = tmp_path / "project"
    out.mkdir()
    (out / "README.md").write_text("my project\n")
    (out / "config.json").write_text("{}\n")
    before = _tree(out)
    with pytest.raises(TrainingError, match="not empty and was not made by segcore train.*--overwrite"):
        train(_settings(out, iters=2))
    assert _tree(out) == before
    # --overwrite does not replace what segcore did not write: the user's config.json stops it, and says so.
    with pytest.raises(TrainingError, match=r"holds config.json, which no segcore run recorded.*nothing was changed"):
        train(_settings(out, iters=2, overwrite=True))
    assert _tree(out) == before
    (out / "config.json").unlink()
    (out / "notes.txt").write_text("keep me\n")
    train(_settings(out, iters=2, overwrite=True))  # trains beside the user's files
    assert (out / "notes.txt").read_text() == "keep me\n" and (out / "model.safetensors").exists()
    assert (out / "README.md").read_text() == "my project\n"  # no model card over the user's README.md


def _user_files(folder: Path, files: dict[str, bytes]) -> dict[str, bytes | None]:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return _tree(folder)


def _recorded(out: Path) -> dict:
    return json.loads((out / ".segcore-run").read_text())


def test_overwrite_of_a_folder_segcore_did_not_make_keeps_every_file_byte_for_byte(tmp_path, caplog):
    """#29: README.md was replaced by the model card and logs/ deleted, after a refusal promising the opposite."""
    out = tmp_path / "project"
    users = {"README.md": b"# my project\n", "logs/app.log": b"started\n", "src/main.py": b"print(1)\n"}
    mine = _user_files(out, users)
    with pytest.raises(TrainingError, match="nothing that segcore did not write is removed or replaced"):
        train(_settings(out, iters=2))
    with caplog.at_level("WARNING", logger="segcore.train"):
        train(_settings(out, iters=2, overwrite=True))
    assert "nothing was removed; the run writes beside README.md, logs, src, which stay as they are" in caplog.text
    assert {k: v for k, v in _tree(out).items() if k in mine} == mine
    recorded = _recorded(out)
    assert "README.md" not in recorded["files"] and "logs" not in recorded["files"]
    # A second --overwrite removes the first run's files, all of them, and nothing of the user's.
    caplog.clear()
    with caplog.at_level("WARNING", logger="segcore.train"):
        train(_settings(out, iters=2, overwrite=True))
    assert "left what it did not write: README.md, logs, src" in caplog.text
    assert {k: v for k, v in _tree(out).items() if k in mine} == mine


@pytest.mark.parametrize(
    "made",
    [
        {"eval/scores.csv": b"a,b\n", "checkpoints/my.ckpt": b"\0" * 64, "best/model.pt": b"x", "config.json": b"{}"},
        {"metrics.jsonl": b'{"iter": 1}\n'},
        {"README.md": None},  # an unedited segcore card that segcore did not write here: it would be replaced
    ],
    ids=["eval-checkpoints-best-config", "metrics", "someone-elses-card"],
)
def test_overwrite_refuses_a_folder_where_a_name_the_run_writes_is_the_users(made, tmp_path):
    out = tmp_path / "project"
    if made == {"README.md": None}:
        import segcore
        from segcore.weights.pretrained import save_pretrained

        model = segcore.build_model("timm:test_convnext", "mlp", num_classes=4, decoder_options={"channels": 16})
        save_pretrained(model, tmp_path / "elsewhere")
        made = {"README.md": (tmp_path / "elsewhere" / "README.md").read_bytes()}
    before = _user_files(out, made)
    with pytest.raises(TrainingError) as info:
        train(_settings(out, iters=2, overwrite=True))
    message = str(info.value)
    assert "which no segcore run recorded and which this run would write: nothing was changed" in message
    for name in {n.split("/")[0] for n in made}:
        assert name in message, name
    assert _tree(out) == before


def test_overwrite_of_a_run_removes_what_its_manifest_lists_and_nothing_else(finished_run, tmp_path, caplog):
    out = _copy(finished_run, tmp_path)
    old = _tree(out)
    mine = {"notes.txt": b"mine\n", "checkpoints/keep.txt": b"mine too\n", "eval/iter_2_by_hand.csv": b"x\n"}
    with_mine = _user_files(out, mine)
    with caplog.at_level("WARNING", logger="segcore.train"):
        train(_settings(out, iters=2, overwrite=True))
    assert "left what it did not write: checkpoints/keep.txt, eval/iter_2_by_hand.csv, notes.txt" in caplog.text, (
        caplog.text
    )
    now = _tree(out)
    assert {k: now.get(k) for k in mine} == {k: with_mine[k] for k in mine}
    # Every file of the old run is gone or rewritten by the new one: nothing is left over from iteration 4.
    assert not [k for k in old if "iter_4" in k and k in now]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in rows if "mIoU" in r] == [2]


def test_the_manifest_lists_every_path_a_run_writes(tmp_path):
    pytest.importorskip("tensorboard")
    out = train(_settings(tmp_path / "run", iters=4, checkpoint_every=2, eval_every=2, tensorboard=True))
    recorded = _recorded(out)
    files, folders = set(recorded["files"]), set(recorded["folders"])
    assert folders == {"checkpoints", "eval"}
    for path in out.rglob("*"):
        name = path.relative_to(out).as_posix()
        owned = name in (".segcore-run", *folders) or any(name == f or name.startswith(f + "/") for f in files)
        assert owned, f"{name} was written but is not in the manifest"
    assert {"logs", "best", "metrics.jsonl", "curves.png", "README.md", "checkpoints/iter_4", "eval/iter_4"} <= files
    # --overwrite of this run leaves an empty folder (and the new run's files): none of the old run's.
    train(_settings(out, iters=2, overwrite=True))
    assert not (out / "logs").exists() and not (out / "eval" / "iter_4").exists()


def test_a_run_of_an_older_segcore_without_a_manifest_is_not_removed(finished_run, tmp_path):
    out = _copy(finished_run, tmp_path)
    marker = out / ".segcore-run"
    info = json.loads(marker.read_text())
    marker.write_text(json.dumps({k: v for k, v in info.items() if k not in ("files", "folders")}))
    before = _tree(out)
    with pytest.raises(TrainingError, match=r"older segcore.*removes none of them: delete settings.json, config"):
        train(_settings(out, iters=2, overwrite=True))
    assert _tree(out) == before
    # Resumed, it gets a manifest of what it holds: then --overwrite can start it over.
    train(TrainSettings(output_dir=str(out), resume=True, iters=6, progress=False))
    assert {"checkpoints/iter_2", "checkpoints/iter_4", "checkpoints/iter_6", "best"} <= set(_recorded(out)["files"])
    train(_settings(out, iters=2, overwrite=True))
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["iter_2"]


def test_a_planted_manifest_removes_nothing_outside_the_run_folder(finished_run, tmp_path):
    out = _copy(finished_run, tmp_path)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "iter_2").mkdir()
    (victim / "iter_2" / "data.bin").write_bytes(b"precious")
    marker = out / ".segcore-run"
    info = json.loads(marker.read_text())
    for planted in ("../victim", "/tmp", "checkpoints/../../victim"):
        marker.write_text(json.dumps({**info, "files": [*info["files"], planted]}))
        with pytest.raises(TrainingError, match=r'"files" lists .*not a relative path inside the run folder'):
            train(_settings(out, iters=2, overwrite=True))
    # A folder the run writes swapped for a link to elsewhere: never followed, never written through.
    marker.write_text(json.dumps(info))
    shutil.rmtree(out / "checkpoints")
    (out / "checkpoints").symlink_to(victim)
    with pytest.raises(TrainingError, match="holds checkpoints, which its run did not write"):
        train(_settings(out, iters=2, overwrite=True))
    assert (victim / "iter_2" / "data.bin").read_bytes() == b"precious"


def test_tracker_names_must_be_single_path_components(finished_run, tmp_path):
    """#29: --tracker-project ../../../X wrote TensorBoard logs outside the run folder."""
    for field, flag in (("tracker_project", "--tracker-project"), ("run_name", "--run-name")):
        for bad in ("../../../X", "a/b", "..", ".", "a\\b", "", "a\nb"):
            with pytest.raises(TrainingError, match=f"{flag} must be a single name"):
                _settings(tmp_path / "run", **{field: bad})
    assert not (tmp_path / "run").exists()
    # The same from a run's own settings.json on --resume.
    out = _copy(finished_run, tmp_path)
    saved = json.loads((out / "settings.json").read_text())
    (out / "settings.json").write_text(json.dumps({**saved, "tracker_project": "../../escaped"}))
    before = _tree(out)
    with pytest.raises(TrainingError, match="--tracker-project must be a single name"):
        train(TrainSettings(output_dir=str(out), resume=True, iters=6, progress=False))
    assert _tree(out) == before and not (tmp_path / "escaped").exists()


def test_an_unset_output_dir_is_refused_not_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "README.md").write_text("my project\n")
    with pytest.raises(TrainingError, match="--output-dir must not be empty"):
        train(_settings(tmp_path, iters=2, output_dir=""))
    with pytest.raises(TrainingError, match="not empty and was not made by segcore"):
        train(_settings(Path("."), iters=2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md"]


def test_a_finished_run_whose_checkpoints_were_deleted_is_not_overwritten(finished_run, tmp_path):
    out = _copy(finished_run, tmp_path)
    shutil.rmtree(out / "checkpoints")
    before = _tree(out)
    with pytest.raises(TrainingError, match="already holds a run.*--resume.*--overwrite"):
        train(_settings(out, iters=2))
    assert _tree(out) == before
    train(_settings(out, iters=2, overwrite=True))  # starting over removes the old run's files first
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in rows if "mIoU" in r] == [2]  # not appended to the old run's rows
    with pytest.raises(TrainingError, match="give one"):
        TrainSettings(output_dir=str(out), resume=True, overwrite=True)


def test_a_second_run_is_locked_out_and_told_the_pid(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-c", _script(out, iters=100000, eval_every=0, checkpoint_every=0)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 120
        while not (out / "settings.json").exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        before = {p.name for p in out.iterdir()}
        for kw in ({}, {"resume": True}, {"overwrite": True}):
            with pytest.raises(TrainingError, match=f"in use by another segcore run \\(PID {proc.pid},"):
                train(_settings(out, iters=2, **kw))
        assert {p.name for p in out.iterdir()} == before
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
    assert not (out / ".segcore-run.lock").exists()  # the run removed its lock on the way out
    assert proc.returncode != 0


# -------------------------------------------------------------------------------------- storage and precision
def _fail_on_save(monkeypatch, error: BaseException) -> None:
    """``save_state`` writes part of a checkpoint, then fails as a full disk or a permission problem does."""
    from segcore.train import trainer

    def partial(folder, *args):
        (Path(folder) / "model.safetensors").write_bytes(b"\0" * 4096)
        raise error

    monkeypatch.setattr(trainer, "save_state", partial)


def test_a_full_disk_names_the_path_and_leaves_no_partial_checkpoint(tmp_path, monkeypatch):
    _fail_on_save(
        monkeypatch,
        RuntimeError(
            "[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: file "
            "write failed"
        ),
    )
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=1 << 20))  # 1 MiB left
    out = tmp_path / "run"
    with pytest.raises(TrainingError) as info:
        train(_settings(out, iters=4, checkpoint_every=2, eval_every=0))
    message = str(info.value)
    assert f"cannot write checkpoint {out / 'checkpoints' / 'iter_2'}: the disk is full (1 MiB free" in message
    assert list((out / "checkpoints").iterdir()) == []  # the partial .tmp-iter_2 is gone


def test_a_permission_error_names_the_path_and_the_cause(tmp_path, monkeypatch):
    _fail_on_save(monkeypatch, PermissionError(errno.EACCES, "Permission denied"))
    out = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"cannot write checkpoint .*iter_2: permission denied"):
        train(_settings(out, iters=4, checkpoint_every=2, eval_every=0))
    assert list((out / "checkpoints").iterdir()) == []


def test_a_read_only_checkpoints_folder_is_found_before_the_first_step(tmp_path, monkeypatch):
    from segcore.models.model import SegModel

    steps = {"n": 0}
    original = SegModel.compute_loss

    def counted(self, images, labels):
        steps["n"] += 1
        return original(self, images, labels)

    monkeypatch.setattr(SegModel, "compute_loss", counted)
    out = tmp_path / "run"
    # Tests run as root here, where chmod does not stop writes: refuse every folder made under checkpoints/
    # as a read-only one would (the checkpoint saves and the new write check both make folders there).
    real_mkdir = os.mkdir

    def read_only(path, *args, **kw):
        if Path(path).is_relative_to(out / "checkpoints"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_mkdir(path, *args, **kw)

    monkeypatch.setattr(os, "mkdir", read_only)
    with pytest.raises(TrainingError, match=r"cannot write into .*checkpoints: permission denied"):
        train(_settings(out, iters=8, checkpoint_every=0, eval_every=0))
    assert steps["n"] == 0


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="chmod does not stop root")
def test_a_chmod_read_only_checkpoints_folder_is_found_before_the_first_step(finished_run, tmp_path):
    out = _copy(finished_run, tmp_path)
    (out / "checkpoints").chmod(0o555)
    try:
        with pytest.raises(TrainingError, match="permission denied"):
            train(TrainSettings(output_dir=str(out), resume=True, iters=100, progress=False))
        assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["iter_4", "iter_2"]
    finally:
        (out / "checkpoints").chmod(0o755)


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 runs on a GPU")
def test_fp16_on_cpu_is_refused_not_run_as_fp32(tmp_path):
    with pytest.raises(TrainingError, match="fp16 needs a GPU.*bf16"):
        train(_settings(tmp_path / "run", iters=2, mixed_precision="fp16"))
    assert not (tmp_path / "run").exists()


def test_one_class_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(TinyShapes, "classes", ("background",))
    original = TinyShapes.__getitem__

    def one_class(self, i):
        sample = original(self, i)
        sample["label"][sample["label"] != 255] = 0
        return sample

    monkeypatch.setattr(TinyShapes, "__getitem__", one_class)
    with pytest.raises(Exception, match="binary segmentation needs 2 classes: background and foreground"):
        train(_settings(tmp_path / "run", iters=2))
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------------------------- evaluation
def test_evaluation_refuses_nan_metrics_and_uncovered_windows():
    import segcore
    from segcore.errors import EvaluationError, SegcoreError
    from segcore.evaluation.inference import slide_logits
    from segcore.train import evaluate

    model = segcore.build_model("timm:test_convnext", "mlp", num_classes=4, decoder_options={"channels": 16})
    dataset = segcore.build_dataset("tiny-shapes", split="val", length=2)
    with pytest.raises(EvaluationError, match="nothing to evaluate"):
        evaluate(model, segcore.build_dataset("tiny-shapes", split="val", length=0))

    class AllIgnored:
        classes, ignore_index = dataset.classes, 255

        def __len__(self):
            return 2

        def __getitem__(self, i):
            sample = dataset[i]
            sample["label"][:] = 255
            return sample

    with pytest.raises(EvaluationError, match="every label pixel is the ignore index"):
        evaluate(model, AllIgnored())
    result = evaluate(model, dataset)
    assert not math.isnan(result["mIoU"])
    with pytest.raises(SegcoreError, match="must be between 1 and the crop size"):
        slide_logits(model.eval(), torch.zeros(1, 3, 64, 64), (16, 16), (40, 40), 4)

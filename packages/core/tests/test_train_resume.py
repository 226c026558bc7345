"""Resume never runs code and is exact or refused (#29).

Before #29 a run with an EMA saved it as Accelerate's ``custom_checkpoint_0.pkl``, which ``--resume`` unpickled
with ``weights_only=False``: a payload planted there ran. A ``random_states_0.pkl`` that did not load was
skipped in silence, and the run went on with other random numbers (another mIoU). A ``trainer_state.json`` with
``"iter": -5`` was believed: the resume rewrote ``settings.json`` and emptied ``metrics.jsonl`` before failing.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from segcore.testing import register_tiny_shapes, tiny_run, unregister_tiny_shapes
from segcore.train import TrainingError, train
from segcore.train import resume as resume_module
from segcore.train.checkpointing import list_checkpoints

EMA = 0.9


@pytest.fixture(autouse=True)
def _fakes():
    register_tiny_shapes()
    yield
    unregister_tiny_shapes()


def _tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (``None`` for folders): to prove nothing was touched."""
    return {str(p.relative_to(folder)): (None if p.is_dir() else p.read_bytes()) for p in sorted(folder.rglob("*"))}


def _finished(root: Path) -> Path:
    """A finished 4-iteration run with an EMA and checkpoints iter_2 and iter_4."""
    out = root / "run"
    train(tiny_run(out, iters=4, checkpoint_every=2, eval_every=2, ema_decay=EMA))
    return out


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    register_tiny_shapes()
    try:
        return _finished(tmp_path_factory.mktemp("finished"))
    finally:
        unregister_tiny_shapes()


def _accelerate_save_state(folder, accelerator, model, optimizer, ema):
    """How checkpoints were written before #29: Accelerate's save_state, the EMA registered with it."""
    if ema is not None and not accelerator._custom_objects:
        accelerator.register_for_checkpointing(ema)
    accelerator.save_state(str(folder))


@pytest.fixture(scope="module")
def accelerate_run(tmp_path_factory) -> Path:
    """The run of :func:`finished_run`, its checkpoints in the format of earlier versions (real Accelerate files)."""
    from segcore.train import trainer

    register_tiny_shapes()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer, "save_state", _accelerate_save_state)
        patch.setattr(trainer, "STATE_FORMAT", None)
        try:
            out = _finished(tmp_path_factory.mktemp("accelerate"))
        finally:
            unregister_tiny_shapes()
    assert {"custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin"} <= {
        p.name for p in (out / "checkpoints" / "iter_4").iterdir()
    }
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


def _resume(out: Path, **kw) -> Path:
    return train(tiny_run(out, iters=4, resume=True, ema_decay=EMA, **kw))


def _assert_same_model(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


class _Payload:
    """A pickle that writes ``marker`` when it is loaded (``__reduce__`` calls ``exec``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def _plant(path: Path, marker: Path) -> None:
    torch.save(_Payload(marker), path)


def test_the_payload_runs_when_unpickled(tmp_path):
    """The payload the tests plant is real: unpickled without weights_only, it writes its marker."""
    marker = tmp_path / "MARKER"
    _plant(tmp_path / "payload.pkl", marker)
    torch.load(tmp_path / "payload.pkl", weights_only=False)
    assert marker.read_text() == "ran"


# ----------------------------------------------------------------------------------------- the files on disk
def test_a_checkpoint_holds_safetensors_and_json_only(finished_run):
    ckpt = finished_run / "checkpoints" / "iter_4"
    names = sorted(p.name for p in ckpt.iterdir())
    assert names == [
        "ema.safetensors",
        "model.safetensors",
        "optimizer.safetensors",
        "rng_0.safetensors",
        "trainer_state.json",
    ]
    for name in names[:-1]:
        with safe_open(str(ckpt / name), "pt") as handle:  # a safetensors file, not a pickle
            assert list(handle.keys())
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["iter"] == 4 and state["format"] == resume_module.STATE_FORMAT


# --------------------------------------------------------------------------------------- no code ever runs
@pytest.mark.parametrize(
    "name",
    ["model.safetensors", "optimizer.safetensors", "ema.safetensors", "rng_0.safetensors", "trainer_state.json"],
)
def test_a_payload_in_any_checkpoint_file_never_runs_and_is_named(finished_run, tmp_path, name):
    out, marker = _copy(finished_run, tmp_path), tmp_path / "MARKER"
    for ckpt in list_checkpoints(out / "checkpoints"):
        _plant(ckpt / name, marker)
    before = _tree(out)
    with pytest.raises(TrainingError) as info:
        _resume(out)
    message = str(info.value)
    assert "no checkpoint loads exactly" in message and "nothing was changed" in message
    assert f"iter_4: {name}" in message and f"iter_2: {name}" in message
    assert not marker.exists()
    assert _tree(out) == before


def test_a_payload_in_every_file_of_every_checkpoint_never_runs(finished_run, tmp_path):
    out, marker = _copy(finished_run, tmp_path), tmp_path / "MARKER"
    for ckpt in list_checkpoints(out / "checkpoints"):
        for path in ckpt.iterdir():
            if path.name != "trainer_state.json":
                _plant(path, marker)
        for planted in ("custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin", "scaler.pt"):
            _plant(ckpt / planted, marker)  # files of the old format, beside the new ones
    before = _tree(out)
    with pytest.raises(TrainingError, match="no checkpoint loads exactly"):
        _resume(out)
    assert not marker.exists()
    assert _tree(out) == before


@pytest.mark.parametrize("name", ["custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin"])
def test_a_payload_in_an_accelerate_format_pickle_is_refused_and_the_older_checkpoint_resumes_exactly(
    accelerate_run, tmp_path, name, caplog
):
    out, marker = _copy(accelerate_run, tmp_path), tmp_path / "MARKER"
    _plant(out / "checkpoints" / "iter_4" / name, marker)
    with caplog.at_level(logging.WARNING, logger="segcore.train"):
        _resume(out)
    assert not marker.exists()
    warning = next(r.getMessage() for r in caplog.records if "resuming from" in r.getMessage())
    assert "iter_2 (iteration 2); not from the newer iter_4: " in warning
    assert f"{name}: refused: torch.load(weights_only=True) does not load it (Unsupported global" in warning
    _assert_same_model(accelerate_run, out)  # iterations 3 and 4 again, from iter_2: the same model


def test_an_accelerate_format_checkpoint_resumes_exactly(accelerate_run, tmp_path):
    out = _copy(accelerate_run, tmp_path)
    shutil.rmtree(out / "checkpoints" / "iter_4")
    _resume(out)
    _assert_same_model(accelerate_run, out)
    assert (out / "checkpoints" / "iter_4" / "ema.safetensors").is_file()  # saved in the new format from here on


# --------------------------------------------------------------------------------------- exact or refused
def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _rewrite_tree(path: Path, change) -> None:
    tree = resume_module._load_tree(path)
    change(tree)
    resume_module._save_tree(path, tree)


def _other_weight_decay(tree) -> None:
    tree["param_groups"][0]["weight_decay"] += 0.01


def _other_ema_decay(tree) -> None:
    tree["decay"] = 0.5


def _no_cuda_state_matches(tree) -> None:
    tree["cuda"] = [torch.zeros(16, dtype=torch.uint8)] * (torch.cuda.device_count() + 1)


def _half_precision_weight(path: Path) -> None:
    weights = load_file(str(path))
    key = next(iter(weights))
    weights[key] = weights[key].half()
    save_file(weights, str(path))


TAMPERED = {
    "rng truncated": ("rng_0.safetensors", _truncate, "rng_0.safetensors: "),
    "rng of other devices": (
        "rng_0.safetensors",
        lambda p: _rewrite_tree(p, _no_cuda_state_matches),
        "CUDA devices and this machine has",
    ),
    "optimizer settings": (
        "optimizer.safetensors",
        lambda p: _rewrite_tree(p, _other_weight_decay),
        "optimizer.safetensors: parameter group 0 has weight_decay",
    ),
    "ema decay": ("ema.safetensors", lambda p: _rewrite_tree(p, _other_ema_decay), "EMA decay 0.5, the run's is 0.9"),
    "model dtype": ("model.safetensors", _half_precision_weight, "is torch.float16"),
    "rng missing": ("rng_0.safetensors", lambda p: p.unlink(), "the random state of 0 processes"),
}


@pytest.mark.parametrize("case", list(TAMPERED), ids=list(TAMPERED))
def test_a_state_file_that_does_not_load_exactly_makes_the_resume_fall_back_exactly(
    finished_run, tmp_path, case, caplog
):
    name, tamper, expected = TAMPERED[case]
    out = _copy(finished_run, tmp_path)
    tamper(out / "checkpoints" / "iter_4" / name)
    with caplog.at_level(logging.WARNING, logger="segcore.train"):
        _resume(out)
    warning = next(r.getMessage() for r in caplog.records if "resuming from" in r.getMessage())
    assert "iter_2 (iteration 2); not from the newer iter_4: " in warning and expected in warning, warning
    _assert_same_model(finished_run, out)  # the uninterrupted run's model, not an approximation of it


def test_a_state_file_that_does_not_load_exactly_in_every_checkpoint_is_refused(finished_run, tmp_path):
    out = _copy(finished_run, tmp_path)
    for ckpt in list_checkpoints(out / "checkpoints"):
        _truncate(ckpt / "rng_0.safetensors")
    before = _tree(out)
    with pytest.raises(TrainingError) as info:
        _resume(out)
    message = str(info.value)
    assert "no checkpoint loads exactly" in message
    assert "iter_4: rng_0.safetensors: " in message and "iter_2: rng_0.safetensors: " in message
    assert _tree(out) == before


# ----------------------------------------------------------------------------------- trainer_state.json
INVALID_STATES = {
    "iter -5": ({"iter": -5}, '"iter" is -5, not {n}, the iteration of its folder iter_{n}'),
    "iter a string": ({"iter": "{n}"}, '"iter" is "{n}", not {n}'),
    "iter a float": ({"iter": 2.0}, '"iter" is 2.0, not {n}'),
    "iter true": ({"iter": True}, '"iter" is true, not {n}'),
    "iter beyond the folder": ({"iter": 10**9}, '"iter" is 1000000000, not {n}'),
    "iter missing": ({"iter": None}, '"iter" is null, not {n}'),
    "best a string": ({"best_mIoU": "high"}, '"best_mIoU" is "high", not a score in [0, 100]'),
    "best beyond 100": ({"best_mIoU": 1e9}, '"best_mIoU" is 1000000000.0, not a score'),
    "other seed": ({"seed": 7}, "trainer_state.json: seed 7, the run's is 0"),
    "newer format": ({"format": 99}, "trainer_state.json: format 99 is not one this segcore reads"),
}


@pytest.mark.parametrize("case", list(INVALID_STATES), ids=list(INVALID_STATES))
def test_an_invalid_trainer_state_is_refused_before_anything_in_the_folder_changes(finished_run, tmp_path, case):
    change, expected = INVALID_STATES[case]
    out = _copy(finished_run, tmp_path)
    for ckpt in list_checkpoints(out / "checkpoints"):
        n = int(ckpt.name.split("_")[1])
        path = ckpt / "trainer_state.json"
        state = json.loads(path.read_text())
        state.update({k: v.format(n=n) if isinstance(v, str) and k == "iter" else v for k, v in change.items()})
        path.write_text(json.dumps(state))
    before = _tree(out)
    with pytest.raises(TrainingError) as info:
        _resume(out)
    message = str(info.value)
    assert "no checkpoint loads exactly" in message and "nothing was changed" in message
    for n in (4, 2):
        assert f"iter_{n}: trainer_state.json: " in message
        assert expected.format(n=n) in message, message
    assert _tree(out) == before  # settings.json, metrics.jsonl and the rest byte for byte


def test_a_trainer_state_that_is_not_json_makes_the_resume_fall_back_exactly(finished_run, tmp_path, caplog):
    out = _copy(finished_run, tmp_path)
    (out / "checkpoints" / "iter_4" / "trainer_state.json").write_text('{"iter": 4, "best')
    with caplog.at_level(logging.WARNING, logger="segcore.train"):
        _resume(out)
    warning = next(r.getMessage() for r in caplog.records if "resuming from" in r.getMessage())
    assert "not from the newer iter_4: trainer_state.json is not readable JSON" in warning
    _assert_same_model(finished_run, out)


@pytest.mark.slow
def test_two_processes_agree_on_the_checkpoint_and_resume_exactly(tmp_path):
    """Process 1's random state does not load: both processes fall back to iter_2, not only process 1."""
    script = tmp_path / "run.py"
    script.write_text(
        textwrap.dedent("""
            import sys
            from segcore.testing import register_tiny_shapes, tiny_run
            register_tiny_shapes()
            from segcore.train import train
            kw = dict(iters=4, batch_size=4, eval_every=2, checkpoint_every=2, ema_decay=0.9)
            train(tiny_run(sys.argv[1], resume=sys.argv[2] == "resume", **kw))
        """)
    )
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full, out = tmp_path / "full", tmp_path / "run"
    done = subprocess.run([*launch, str(full), "new"], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    shutil.copytree(full, out)
    _truncate(out / "checkpoints" / "iter_4" / "rng_1.safetensors")
    done = subprocess.run([*launch, str(out), "resume"], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "iter_2 (iteration 2); not from the newer iter_4: process 1: rng_1.safetensors: " in done.stderr
    _assert_same_model(full, out)

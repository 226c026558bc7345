"""Atomic full-state checkpoints ``checkpoints/iter_<N>/``, retention, and storage errors in words.

A checkpoint is written into ``.tmp-iter_<N>``, every file is fsynced, and the folder is renamed: a kill while
writing leaves only a temporary folder, which is ignored (and removed by the next save), so the previous
checkpoint stays loadable. ``trainer_state.json`` is written last inside the folder and marks it complete. A
write that fails (disk full, permission) removes its temporary folder and raises a :class:`TrainingError` that
names the path and the cause. Retention (:func:`prune`) deletes the oldest checkpoints only after a newer one is
complete, by renaming each out of the ``iter_<N>`` namespace first, so that a kill midway never leaves a
half-deleted folder that looks like a checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from segcore.data.storage import storage_error as _storage_error
from segcore.data.storage import write_errors
from segcore.errors import TrainingError

__all__ = ["save_atomic", "list_checkpoints", "read_state", "prune", "replace_folder", "storage_error", "STATE_FILE"]

STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^iter_(\d+)$")


def storage_error(err: BaseException, path: Path, what: str = "") -> TrainingError:
    """:func:`segcore.data.storage.storage_error` as a :class:`TrainingError`: names ``path`` and why writing it failed.

    Call it before removing a partial write, so that a full disk still reads as full.
    """
    return _storage_error(err, path, what, error=TrainingError)  # type: ignore[return-value]


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_atomic(
    root: Path,
    iteration: int,
    write: Callable[[Path], None],
    state: dict[str, Any],
    is_main: bool = True,
    barrier: Callable[[], None] = lambda: None,
    keep: int = 0,
) -> Path:
    """Write a checkpoint with ``write(tmp_folder)`` (all processes), then mark and rename it (main process).

    Args:
        root: the ``checkpoints`` folder.
        iteration: names the checkpoint ``iter_<iteration>``.
        write: fills the temporary folder (e.g. :func:`segcore.train.resume.save_state`).
        state: written as :data:`STATE_FILE`, last.
        is_main: this process marks, renames and prunes.
        barrier: waits for every process.
        keep: then keep only the newest ``keep`` checkpoints (0: all).

    Raises:
        TrainingError: when the checkpoint cannot be written (the temporary folder is removed).
    """
    tmp = root / f".tmp-iter_{iteration}"
    final = root / f"iter_{iteration}"
    try:
        if is_main:
            root.mkdir(parents=True, exist_ok=True)
            for stale in root.glob(".tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            tmp.mkdir()
        barrier()
        write(tmp)
        barrier()
        if is_main:
            (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))
            _fsync_tree(tmp)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            _fsync_dir(root)
    except BaseException as err:
        error = storage_error(err, final, "checkpoint") if isinstance(err, (*write_errors(), RuntimeError)) else None
        if is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        if error is not None:
            raise error from err
        raise
    barrier()
    if is_main and keep:
        prune(root, keep)
    return final


def prune(root: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` complete checkpoints under ``root``; returns the deleted ones."""
    doomed = list_checkpoints(root)[keep:]
    for path in doomed:
        # Out of the iter_<N> namespace first (atomic), then delete: a kill midway leaves only a .tmp- folder.
        trash = root / f".tmp-old-{path.name}"
        os.replace(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
    return doomed


def replace_folder(dest: Path, write: Callable[[Path], None]) -> Path:
    """Fill a new folder with ``write(tmp)`` and put it in place of ``dest``; the old one stays until then.

    Raises:
        TrainingError: when it cannot be written (the temporary folder is removed, ``dest`` is unchanged).
    """
    tmp, old = dest.with_name(f".tmp-{dest.name}"), dest.with_name(f".tmp-old-{dest.name}")
    try:
        for stale in (tmp, old):
            shutil.rmtree(stale, ignore_errors=True)
        write(tmp)
        _fsync_tree(tmp)
        if dest.exists():
            os.replace(dest, old)
        os.replace(tmp, dest)
    except BaseException as err:
        error = storage_error(err, dest) if isinstance(err, (*write_errors(), RuntimeError)) else None
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not dest.exists():
            os.replace(old, dest)
        if error is not None:
            raise error from err
        raise
    shutil.rmtree(old, ignore_errors=True)
    return dest


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, newest first."""
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _NAME.match(path.name)
        if match and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return [p for _, p in sorted(found, reverse=True)]


def read_state(ckpt: Path) -> dict[str, Any]:
    """``ckpt``'s :data:`STATE_FILE`, checked: ``iter`` is the iteration its folder names, ``best_mIoU`` a score.

    Raises:
        ValueError: naming the file and the field that is wrong. A resume skips such a checkpoint.
    """
    try:
        state = json.loads((ckpt / STATE_FILE).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{STATE_FILE} is not readable JSON ({(str(err).splitlines() or [''])[0]})") from err
    if not isinstance(state, dict):
        raise ValueError(f"{STATE_FILE} is not a JSON object")
    match = _NAME.match(ckpt.name)
    expected = int(match.group(1)) if match else None
    iteration = state.get("iter")
    if type(iteration) is not int or iteration < 1 or iteration != expected:
        raise ValueError(
            f'{STATE_FILE}: "iter" is {json.dumps(iteration)}, not {expected}, the iteration of its folder {ckpt.name}'
        )
    best = state.get("best_mIoU", -math.inf)
    if type(best) not in (int, float) or not (best == -math.inf or 0 <= best <= 100):
        raise ValueError(
            f'{STATE_FILE}: "best_mIoU" is {json.dumps(best)}, not a score in [0, 100] (-Infinity before the first '
            "validation)"
        )
    return state

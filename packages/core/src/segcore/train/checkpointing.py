"""Atomic full-state checkpoints ``checkpoints/iter_<N>/`` and finding the newest good one.

A checkpoint is written into ``.tmp-iter_<N>``, every file is fsynced, and the folder is renamed: a kill while
writing leaves only a temporary folder, which is ignored (and removed by the next save), so the previous
checkpoint stays loadable. ``trainer_state.json`` is written last inside the folder and marks it complete.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["save_atomic", "list_checkpoints", "STATE_FILE"]

STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^iter_(\d+)$")


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
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
) -> Path:
    """Write a checkpoint with ``write(tmp_folder)`` (all processes), then mark and rename it (main process)."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-iter_{iteration}"
    final = root / f"iter_{iteration}"
    if is_main:
        for stale in root.glob(".tmp-iter_*"):
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
        fd = os.open(root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    barrier()
    return final


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

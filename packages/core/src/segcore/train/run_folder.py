"""The run folder of ``segcore train``: made and marked by segcore, locked while a run writes, checked first.

Nothing is written into ``--output-dir`` before the run is known to be allowed there:

* a new run needs a missing or empty folder, or one segcore made that holds no results yet (an earlier start
  that stopped before its first checkpoint); ``--overwrite`` also accepts another run's folder, or a folder
  segcore did not make, and first removes what the earlier run's :class:`~segcore.train.manifest.Manifest` lists,
  never anything else;
* no run writes over a name it does not own: a folder where one of :data:`RUN_NAMES` is taken by something no
  manifest lists is refused, even with ``--overwrite`` (a user's ``README.md`` is kept, the model card skipped);
* ``--resume`` needs a run folder with its ``settings.json`` and a checkpoint that loads (checked by the trainer
  before :func:`claim`);
* :class:`RunLock` keeps a second run out while the first one is alive: an advisory ``flock`` on
  :data:`LOCK`, which holds the owner's PID so that the refusal can name it. The kernel drops the lock when
  its process dies, so a killed run leaves no stale lock behind.

A run folder is marked by :data:`MARKER` (JSON: segcore version, creation time, the dataset's classes, and the
run's manifest: every file and folder it writes, recorded before it is written); the manifest and the folder's
names live in :mod:`segcore.train.manifest`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from segcore.errors import TrainingError
from segcore.train.checkpointing import list_checkpoints, storage_error
from segcore.train.manifest import CARD, LOCK, MARKER, RUN_NAMES, SETTINGS, Manifest, adopted_entries, read_manifest

try:  # POSIX; elsewhere runs are not locked (a warning says so)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "MARKER",
    "LOCK",
    "SETTINGS",
    "RUN_NAMES",
    "RunLock",
    "read_run_settings",
    "check_new_run",
    "check_classes",
    "lock_holder",
    "in_use_error",
    "snapshot",
    "claim",
    "check_writable",
    "trim_metrics",
]

logger = logging.getLogger("segcore.train")

# What makes a folder hold results: a new run there would destroy them.
_RESULTS = ("model.safetensors", "metrics.jsonl", "best", "checkpoints")


def _entries(folder: Path) -> list[str]:
    """Names in ``folder`` (the lock file does not count: it exists only while a run is starting or running)."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name != LOCK)


def _listing(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def read_run_settings(output_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``settings.json`` of the run in ``output_dir`` (what ``--resume`` continues with).

    Raises:
        TrainingError: when the folder is missing or holds no readable ``settings.json``.
    """
    folder = Path(output_dir)
    if not folder.is_dir():
        raise TrainingError(f"cannot resume {folder}: the folder does not exist (check --output-dir)")
    path = folder / SETTINGS
    if not path.is_file():
        raise TrainingError(
            f"cannot resume {folder}: it holds no {SETTINGS}, so it is not a segcore run folder "
            f"(it holds {_listing(_entries(folder)) or 'nothing'})"
        )
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise TrainingError(f"cannot resume {folder}: {path} is not readable JSON ({err})") from err
    if not isinstance(saved, dict):
        raise TrainingError(f"cannot resume {folder}: {path} does not hold a JSON object")
    return saved


def check_new_run(folder: Path, overwrite: bool, also: Sequence[str] = ()) -> None:
    """Refuse to start a new run in ``folder`` when that could destroy anything (read-only).

    Args:
        folder: the run folder.
        overwrite: ``--overwrite``: an earlier run's folder, or one segcore did not make, is accepted.
        also: names the run writes besides :data:`RUN_NAMES` (``logs`` with trackers).

    Raises:
        TrainingError: for a folder that holds another run's results (without ``overwrite``), files segcore did
            not write (without ``overwrite``), a name the run would write taken by something its manifest does not
            list, or a manifest that names a path outside the folder.
    """
    if folder.exists() and not folder.is_dir():
        raise TrainingError(f"--output-dir {folder} is a file, not a folder")
    names = _entries(folder)
    if not names:
        return
    manifest = read_manifest(folder)
    results = [n for n in _RESULTS if n in names]
    is_run = MARKER in names or (SETTINGS in names and bool(results))  # a run, or one from before the marker
    if not overwrite and is_run and results:
        held = results + [f"checkpoints/{p.name}" for p in list_checkpoints(folder / "checkpoints")]
        raise TrainingError(
            f"{folder} already holds a run ({_listing(held)}): continue it with --resume, start it over with "
            f"--overwrite (it removes what that run wrote, listed in its {MARKER}, and nothing else), or choose "
            "another --output-dir"
        )
    if not overwrite and not is_run:
        raise TrainingError(
            f"{folder} is not empty and was not made by segcore train (it holds {_listing(names)}): choose another "
            "--output-dir, or pass --overwrite to train beside these files (nothing that segcore did not write is "
            "removed or replaced)"
        )
    taken = _taken(folder, manifest, also)
    if not taken:
        return
    if manifest is None and is_run:
        raise TrainingError(
            f"{folder} holds a run of an older segcore, which did not record the files it wrote ({MARKER} lists "
            f"none), so --overwrite removes none of them: delete {_listing(taken)} yourself, or choose another "
            "--output-dir"
        )
    whose = "no segcore run recorded" if manifest is None else f"its run did not write (not in its {MARKER})"
    raise TrainingError(
        f"{folder} holds {_listing(taken)}, which {whose} and which this run would write: nothing was changed. "
        "Move them away, or choose another --output-dir"
    )


def _taken(folder: Path, manifest: Manifest | None, also: Sequence[str]) -> list[str]:
    """The names this run would write in ``folder`` that exist and are not the manifest's.

    A ``README.md`` segcore did not write is kept (``save_pretrained`` skips the card) unless it is an unedited
    segcore card, which would be replaced. A symbolic link is taken even when listed: segcore writes none.
    """
    from segcore.weights.cards import is_segcore_card

    taken = []
    for name in (*RUN_NAMES, *also):
        path = folder / name
        if path.is_symlink():  # never written through: it would write (and prune) wherever it points
            taken.append(name)
            continue
        if not path.exists() or (manifest is not None and manifest.owns(name)):
            continue
        if name == CARD and path.is_file() and not is_segcore_card(path.read_text(errors="replace")):
            continue
        taken.append(name)
    return taken


def check_classes(folder: Path, classes: Sequence[str]) -> None:
    """On resume: the dataset must still have the classes the run was started with (read from :data:`MARKER`)."""
    try:
        marked = json.loads((folder / MARKER).read_text()).get("classes")
    except (OSError, ValueError):
        return  # a run from before the marker existed: the checkpoint's classifier shape still has to fit
    if marked is not None and list(marked) != list(classes):
        raise TrainingError(
            f"cannot resume {folder}: the dataset now has {len(classes)} classes ({_listing(list(classes))}), the "
            f"run was started with {len(marked)} ({_listing(list(marked))})"
        )


def lock_holder(folder: Path) -> int | None:
    """PID of a live run that holds the lock of ``folder``, else ``None`` (read-only: creates nothing)."""
    path = folder / LOCK
    if fcntl is None or not path.is_file():
        return None
    with open(path, "rb") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _pid_in(handle.fileno())
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return None


def _pid_in(fd: int) -> int:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 64).decode(errors="replace").strip()
    return int(text) if text.isdigit() else -1


def in_use_error(folder: Path, pid: int) -> TrainingError:
    """The refusal to use ``folder`` while the run with ``pid`` holds it."""
    who = f"PID {pid}" if pid >= 0 else "a process that has not written its PID yet"
    return TrainingError(
        f"{folder} is in use by another segcore run ({who}, lock file {folder / LOCK}): wait for it to end, stop "
        "it, or choose another --output-dir"
    )


class RunLock:
    """An exclusive lock on a run folder for as long as a run writes to it, with the owner's PID in the file."""

    def __init__(self, folder: Path) -> None:
        """Lock ``folder`` (it must exist) on :meth:`acquire`."""
        self.folder = folder
        self.path = folder / LOCK
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock and write this process's PID into it.

        Raises:
            TrainingError: naming the PID of the live run that holds it.
        """
        if fcntl is None:  # pragma: no cover - Windows
            logger.warning("this system has no flock: %s is not locked against a second run", self.folder)
            return
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                pid = _pid_in(fd)
                os.close(fd)
                raise in_use_error(self.folder, pid) from None
            # The previous owner removes the file when it is done: if it did so between our open and our lock,
            # we hold a lock on a deleted file, and a third run could lock a new one. Lock the file that is there.
            try:
                current = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        """Remove the lock file and drop the lock (in that order, so that nobody locks a file being removed)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None


def snapshot(folder: Path) -> tuple[Any, ...]:
    """What a second run would change: the folder's names, its checkpoints and its settings (read-only)."""
    settings = folder / SETTINGS
    return (
        _entries(folder),
        [p.name for p in list_checkpoints(folder / "checkpoints")],
        settings.read_bytes() if settings.is_file() else None,
    )


def trim_metrics(folder: Path, iteration: int) -> None:
    """On resume from ``iteration``: drop the ``metrics.jsonl`` rows logged after it, which the run logs again.

    A run killed between two checkpoints logged steps that the resumed run repeats; keeping them would give
    every such step twice. The file is rewritten aside and swapped in.
    """
    path = folder / "metrics.jsonl"
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    kept = [line for line in lines if _logged_by(line, iteration)]
    if len(kept) == len(lines):
        return
    tmp = path.with_name(f".tmp-{path.name}")
    try:
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, path)
    except OSError as err:
        raise storage_error(err, path) from err


def _logged_by(line: str, iteration: int) -> bool:
    """Whether a ``metrics.jsonl`` line is a whole row of an iteration up to ``iteration`` (a kill can cut one)."""
    try:
        row = json.loads(line)
    except ValueError:
        return False
    return isinstance(row, dict) and row.get("iter", 0) <= iteration


def check_writable(folder: Path) -> None:
    """Create (if needed) and write to ``folder``, ``checkpoints/`` and ``best/`` now, not after hours of training.

    Raises:
        TrainingError: naming the folder and the cause (permission, read-only file system, disk full).
    """
    for sub in (folder, folder / "checkpoints", folder / "best"):
        probe = sub / f".tmp-write-check-{os.getpid()}"
        try:
            if sub.name != "best":  # best/ is made by its first save; only an existing one can be read-only
                sub.mkdir(parents=True, exist_ok=True)
            elif not sub.is_dir():
                continue
            probe.mkdir()
            probe.rmdir()
        except OSError as err:
            raise storage_error(err, sub, "into") from err


@contextlib.contextmanager
def claim(
    folder: Path,
    settings: dict[str, Any],
    classes: Sequence[str],
    overwrite: bool,
    seen: tuple[Any, ...],
    resume: bool = False,
) -> Iterator[Manifest]:
    """Lock ``folder`` for this run and write its marker and settings; unlock when the run ends.

    Args:
        folder: the run folder (made when missing).
        settings: written as ``settings.json``.
        classes: the dataset's classes, recorded in the marker for the resume check.
        overwrite: first remove what the earlier run's manifest lists (:meth:`Manifest.remove`), nothing else.
        seen: :func:`snapshot` of the folder when it was checked; a folder changed since (by another run) is
            refused, because the checks no longer hold.
        resume: the run continues the one in ``folder`` (its marker's classes and creation time are kept).

    Yields:
        The run's :class:`Manifest`: record each path in it before writing it.

    Raises:
        TrainingError: when another run holds the folder or changed it, or it cannot be written.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise storage_error(err, folder, "the run folder") from err
    lock = RunLock(folder)
    lock.acquire()
    try:
        if snapshot(folder) != seen:
            raise TrainingError(f"{folder} changed while this run was starting (another run?): start it again")
        manifest = _start_manifest(folder, classes, overwrite, resume)
        manifest.add(SETTINGS)
        manifest.add("checkpoints", folder=True)
        check_writable(folder)
        tmp = folder / f".{SETTINGS}.tmp"
        try:
            tmp.write_text(json.dumps(settings, indent=2) + "\n")
            os.replace(tmp, folder / SETTINGS)
        except OSError as err:
            raise storage_error(err, folder / SETTINGS) from err
        yield manifest
    finally:
        lock.release()


def _start_manifest(folder: Path, classes: Sequence[str], overwrite: bool, resume: bool) -> Manifest:
    """The run's manifest, saved: on ``overwrite`` after removing what the earlier one lists (saying what stays)."""
    from segcore import __version__

    earlier = read_manifest(folder)
    if overwrite:
        removed = earlier.remove() if earlier is not None else 0
        left = (earlier or Manifest(folder, {})).unlisted()
        if earlier is not None:
            logger.warning(
                "--overwrite: removed the %d files and folders the earlier run in %s wrote%s",
                removed,
                folder,
                f"; left what it did not write: {_listing(left, 10)}" if left else "",
            )
        elif left:
            logger.warning(
                "--overwrite: %s holds no files of a segcore run, so nothing was removed; the run writes beside %s, "
                "which stay as they are",
                folder,
                _listing(left, 10),
            )
        earlier = None
    info: dict[str, Any] = {}
    if resume:
        with contextlib.suppress(OSError, ValueError):
            marked = json.loads((folder / MARKER).read_text())
            info = marked if isinstance(marked, dict) else {}
    if not info:  # a new run (or one from before the marker): its own version, time and classes
        info = {"segcore": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "classes": list(classes)}
    if earlier is not None:  # an earlier start that wrote no results, or the run resumed: its entries stay listed
        info = {**info, "files": earlier.files, "folders": earlier.folders}
    elif resume:  # the resumed run is from before manifests: what it wrote is where a run writes it
        info = {**info, **adopted_entries(folder)}
    manifest = Manifest(folder, info)
    manifest.save()
    return manifest

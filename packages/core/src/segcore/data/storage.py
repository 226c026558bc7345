"""Writing output files: atomically (a temporary name in the same folder, then a rename), and storage errors in words.

Every file segcore writes (report pages and tables, predicted labels and overlays, model folders, ONNX exports) goes
through :func:`atomic_path` or :func:`atomic_open`: the data is written to ``.tmp-<name>`` beside the target, flushed
to disk and renamed onto it with :func:`os.replace`. A failure, Ctrl-C or a full disk therefore leaves either the old
file or the complete new one, never a truncated file at the final name; the temporary file is removed (only a
``kill -9`` can leave one behind, under its hidden ``.tmp-`` name). A failed write raises :class:`StorageError`,
which names the file and the cause (disk full, file-size limit, permission, read-only file system).

Example:
    >>> with atomic_open(Path("out/report.html"), "w") as handle:  # doctest: +SKIP
    ...     handle.write(page)
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from segcore.errors import SegcoreError, StorageError

__all__ = [
    "atomic_open",
    "atomic_path",
    "write_atomic",
    "replace_file",
    "storage_error",
    "write_errors",
    "read_manifest",
    "write_manifest",
    "StorageError",
]

# Below this much free space a failed write is reported as a full disk: torch's writer reports ENOSPC only as
# "PytorchStreamWriter failed writing file", without the errno.
_LOW_SPACE = 64 * 2**20
# Writers that raise no OSError give the errno in their message: safetensors' Rust I/O errors end "(os error 27)".
_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def _free_bytes(path: Path) -> int | None:
    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def storage_error(
    err: BaseException, path: Path, what: str = "", error: type[SegcoreError] = StorageError
) -> SegcoreError:
    """An ``error`` (default :class:`StorageError`) naming ``path`` and why writing it failed (disk full, ...).

    Call it before removing a partial write, so that a full disk still reads as full.

    Args:
        err: what the writer raised (an ``OSError``, or a library's error such as ``SafetensorError``).
        path: the file or folder that could not be written.
        what: a word before the path (``"checkpoint"``).
        error: the exception class to return.
    """
    first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
    code = getattr(err, "errno", None)
    if code is None and (found := _OS_ERROR.search(first_line)):
        code = int(found.group(1))
    free = _free_bytes(path)
    if code == errno.EFBIG:
        cause = f"file too large: over the file-size limit (ulimit -f) or the file system's ({first_line})"
    elif code in (errno.ENOSPC, errno.EDQUOT) or (code is None and free is not None and free < _LOW_SPACE):
        cause = f"the disk is full ({free / 2**20:.0f} MiB free; {first_line})" if free is not None else "disk full"
    elif code in (errno.EACCES, errno.EPERM):
        cause = "permission denied (make the folder writable or write somewhere else)"
    elif code == errno.EROFS:
        cause = "read-only file system (write somewhere else)"
    else:
        cause = f"{type(err).__name__}: {first_line}"
    return error(f"cannot write {what + ' ' if what else ''}{path}: {cause}")


def write_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that writers raise for a failed write: ``OSError`` and safetensors' ``SafetensorError``."""
    from safetensors import SafetensorError

    return (OSError, SafetensorError)


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask would, briefly, for every thread)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def replace_file(tmp: Path, target: Path) -> None:
    """Move ``tmp`` onto ``target`` atomically, with the permissions a plain ``open()`` gives (the umask's).

    Temporary files may be created 0600 (safetensors does); the result gets the mode a plain ``open()`` would.
    """
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, target)


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


@contextmanager
def atomic_path(target: str | Path, what: str = "") -> Iterator[Path]:
    """A temporary path beside ``target`` to write to; renamed onto ``target`` when the block succeeds.

    The temporary name keeps the target's suffix (``.tmp-report.html``), for writers that choose a format by it.
    When the block raises (Ctrl-C included) the temporary file is removed and ``target`` is left as it was.

    Args:
        target: the final file (its folder must exist).
        what: a word for the error message (``"weights"``).

    Raises:
        StorageError: the file could not be written (disk full, file-size limit, permission...): what the writer
            raised (:func:`write_errors`), with ``target`` and the cause named.
    """
    target = Path(target)
    tmp = target.with_name(f".tmp-{target.name}")
    try:
        yield tmp
        _fsync(tmp)
        replace_file(tmp, target)
    except BaseException as err:
        error = None
        if isinstance(err, write_errors()) and not isinstance(err, SegcoreError):
            error = storage_error(err, target, what)
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if error is not None:
            raise error from err
        raise


@contextmanager
def atomic_open(target: str | Path, mode: str = "w", what: str = "", **kwargs: Any) -> Iterator[IO[Any]]:
    """:func:`open` ``target`` for writing, atomically (see :func:`atomic_path`): a partial file never shows.

    Args:
        target: the final file.
        mode: ``"w"`` or ``"wb"``.
        what: a word for the error message.
        **kwargs: passed to :func:`open` (``newline=""`` for CSV, ``encoding``).

    Raises:
        StorageError: the file could not be written.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', got {mode!r}")
    if mode == "w":
        kwargs.setdefault("encoding", "utf-8")
    with atomic_path(target, what) as tmp, open(tmp, mode, **kwargs) as handle:
        yield handle


def write_atomic(target: str | Path, data: bytes | str, what: str = "") -> Path:
    """Write ``data`` (text as UTF-8) to ``target`` atomically; return ``target`` as a path.

    Raises:
        StorageError: the file could not be written.
    """
    with atomic_open(target, "wb", what) as handle:
        handle.write(data.encode() if isinstance(data, str) else data)
    return Path(target)


def read_manifest(path: str | Path) -> list[str] | None:
    """The files listed in a manifest :func:`write_manifest` wrote; ``None`` when ``path`` is not one."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    files = data.get("files") if isinstance(data, dict) else None
    return [f for f in files if isinstance(f, str)] if isinstance(files, list) else None


def write_manifest(path: str | Path, files: Iterable[str], written_by: str) -> Path:
    """Write (atomically) the manifest ``path``: the files, relative to its folder, that ``written_by`` wrote there.

    A folder's manifest is how a later run knows which files it may replace; anything not listed is a user's.

    Raises:
        StorageError: the manifest could not be written.
    """
    text = json.dumps({"written_by": written_by, "files": sorted(set(files))}, indent=2) + "\n"
    return write_atomic(path, text, "manifest")

"""The manifest of a run folder: every file and folder a run writes, recorded before it is written.

The manifest is the ``files`` and ``folders`` lists of the folder's :data:`MARKER` (JSON, beside the segcore
version, the creation time and the dataset's classes). ``--overwrite`` removes what an earlier run's manifest
lists (:meth:`Manifest.remove`), never anything else; a new run refuses a folder where one of :data:`RUN_NAMES`
is taken by something no manifest lists (:mod:`segcore.train.run_folder`). A marker that was edited to name a path
outside the folder is refused by :func:`read_manifest`, so that nothing it names is removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from segcore.errors import TrainingError
from segcore.train.checkpointing import storage_error

__all__ = ["MARKER", "LOCK", "SETTINGS", "CARD", "RUN_NAMES", "Manifest", "read_manifest", "adopted_entries"]

# The names of a run folder: the marker (which holds the manifest), the lock, and what a run writes.
MARKER = ".segcore-run"
LOCK = ".segcore-run.lock"
SETTINGS = "settings.json"
CARD = "README.md"
# The names a run writes (or replaces) at the top of its folder, besides MARKER and, with trackers, logs/. One of
# them taken by something the folder's manifest does not list stops a new run: it would be replaced.
RUN_NAMES = (
    SETTINGS,
    "config.json",
    "model.safetensors",
    CARD,
    "metrics.jsonl",
    "curves.png",
    "best",
    ".tmp-best",  # best/'s temporary and previous copies (checkpointing.replace_folder)
    ".tmp-old-best",
    "checkpoints",
    "eval",
)


class Manifest:
    """Every file and folder a run wrote into its folder: the ``files`` and ``folders`` lists of its :data:`MARKER`.

    ``files`` are files, and folders written whole (a checkpoint, an evaluation, ``best/``, ``logs/``); ``folders``
    hold several of those (``checkpoints/``, ``eval/``) and are removed only once empty, so that anything else put
    into them stays. A name is recorded before it is written, and the marker is rewritten aside and renamed into
    place: a kill at any moment leaves a complete list. ``--overwrite`` removes what it lists, and nothing else.
    """

    def __init__(self, folder: Path, info: dict[str, Any]) -> None:
        """The manifest of ``folder`` with the marker's other fields ``info`` (version, creation, classes)."""
        self.folder = folder
        self.info = {k: v for k, v in info.items() if k not in ("files", "folders")}
        self.files: list[str] = list(info.get("files", []))
        self.folders: list[str] = list(info.get("folders", []))

    def owns(self, name: str) -> bool:
        """Whether the run wrote ``name`` (a path relative to the folder), or made it to hold what it wrote."""
        return name in self.files or name in self.folders

    def add(self, *names: str, folder: bool = False) -> None:
        """Record ``names`` (relative paths) before writing them; ``folder``: they hold several recorded entries.

        Raises:
            TrainingError: when the marker cannot be written (naming it and the cause).
        """
        entries = self.folders if folder else self.files
        new = [n for n in names if n not in entries]
        if new:
            entries.extend(new)
            self.save()

    def add_model(self) -> None:
        """Record the final model's files before saving it: its ``README.md`` only where segcore writes one.

        A ``README.md`` the run did not write is kept by ``save_pretrained`` (the card is skipped), so it is not
        recorded: a later ``--overwrite`` leaves it.
        """
        card = self.folder / CARD
        self.add("config.json", "model.safetensors", *([CARD] if self.owns(CARD) or not card.exists() else []))

    def save(self) -> None:
        """Write the marker with the manifest, atomically (a temporary file renamed into place).

        Raises:
            TrainingError: naming the marker and the cause.
        """
        path, tmp = self.folder / MARKER, self.folder / f"{MARKER}.tmp"
        data = {**self.info, "files": self.files, "folders": self.folders}
        try:
            tmp.write_text(json.dumps(data, indent=2) + "\n")
            os.replace(tmp, path)
        except OSError as err:
            raise storage_error(err, path) from err

    def remove(self) -> int:
        """Remove every listed path, then the marker; folders in ``folders`` only when empty. Returns the count.

        A path reached through a symbolic link to elsewhere is not followed (its link, if listed, is removed).
        """
        removed = 0
        by_depth = sorted(self.files, key=lambda n: n.count("/"), reverse=True)
        for name in by_depth:
            path = self.folder / name
            if not _directly_inside(self.folder, name):
                continue
            if path.is_symlink() or path.is_file():
                path.unlink()
            elif path.is_dir():
                shutil.rmtree(path)
            else:
                continue
            removed += 1
        for name in sorted(self.folders, key=lambda n: n.count("/"), reverse=True):
            path = self.folder / name
            if _directly_inside(self.folder, name) and path.is_dir() and not path.is_symlink():
                with contextlib.suppress(OSError):  # not empty: it holds something the run did not write
                    path.rmdir()
                    removed += 1
        (self.folder / MARKER).unlink(missing_ok=True)
        return removed

    def unlisted(self) -> list[str]:
        """What the folder holds that the manifest does not list (paths inside listed ``folders`` included)."""
        found: list[str] = []
        stack = [""]
        while stack:
            prefix = stack.pop()
            for path in sorted((self.folder / prefix).iterdir()) if (self.folder / prefix).is_dir() else []:
                name = f"{prefix}{path.name}"
                if name in (MARKER, LOCK, f"{MARKER}.tmp") or name in self.files:
                    continue
                if name in self.folders and path.is_dir() and not path.is_symlink():
                    stack.append(name + "/")
                else:
                    found.append(name)
        return sorted(found)


def adopted_entries(folder: Path) -> dict[str, list[str]]:
    """The manifest entries of a run from before manifests, on resume: the names a run writes, and its checkpoints.

    Returns:
        ``{"files": [...], "folders": [...]}`` for the paths of ``folder`` that a run writes and that exist (a
        ``README.md`` only when it is an unedited segcore card).
    """
    from segcore.weights.cards import is_segcore_card

    files = [n for n in (*RUN_NAMES, "logs") if (folder / n).exists() and n not in ("checkpoints", "eval")]
    if CARD in files and not is_segcore_card((folder / CARD).read_text(errors="replace")):
        files.remove(CARD)
    for sub in ("checkpoints", "eval"):
        files += [f"{sub}/{p.name}" for p in sorted((folder / sub).glob("iter_*"))]
    return {"files": files, "folders": [n for n in ("checkpoints", "eval") if (folder / n).is_dir()]}


def _directly_inside(folder: Path, name: str) -> bool:
    """Whether ``folder / name`` is reached without leaving ``folder`` through a symbolic link on the way."""
    parts = name.split("/")
    return os.path.realpath(folder.joinpath(*parts[:-1])) == os.path.realpath(folder) + "".join(
        os.sep + p for p in parts[:-1]
    )


def _bad_entry(name: Any) -> bool:
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name or name.startswith("/"):
        return True
    return any(part in ("", ".", "..") for part in name.split("/"))


def read_manifest(folder: Path) -> Manifest | None:
    """The manifest in ``folder``'s :data:`MARKER`; ``None`` without a marker, or one from before manifests.

    Raises:
        TrainingError: for a marker that is not a JSON object, or a manifest that is not a list of paths inside
            the folder (an edited or planted marker: ``--overwrite`` must not remove anything it names).
    """
    path = folder / MARKER
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise TrainingError(f"{path} is not readable JSON ({err}): delete it, or the folder, to start over") from err
    if not isinstance(info, dict):
        raise TrainingError(f"{path} does not hold a JSON object: delete it, or the folder, to start over")
    if "files" not in info:
        return None
    for key in ("files", "folders"):
        entries = info.get(key, [])
        bad = [e for e in entries if _bad_entry(e)] if isinstance(entries, list) else [entries]
        if bad:
            raise TrainingError(
                f'{path}: "{key}" lists {bad[0]!r}, which is not a relative path inside the run folder (the marker '
                "was edited): fix or delete that entry"
            )
    return Manifest(folder, info)

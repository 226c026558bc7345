"""Output files are written atomically (a temporary name, then a rename) and storage errors name the file and cause.

A failure or Ctrl-C while writing leaves the old file (or none) at the final name and no temporary file; a file-size
limit (RLIMIT_FSIZE) is reported with the path, for report pages, safetensors weights and checkpoints alike. A report
folder takes only missing, empty or earlier-report folders, never one inside the dataset or the model.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import segcore
from segcore.data import storage
from segcore.data.storage import atomic_open, read_manifest, storage_error, write_atomic, write_manifest
from segcore.errors import OutputFolderError, StorageError, TrainingError
from segcore.evaluation.report import REPORT_MARKER, check_report_folder, save_tables, write_report

CLASSES = ("background", "cat", "dog")


def _result() -> dict:
    per_class = [
        {"name": name, "IoU": 50.0 + i, "Acc": 60.0 + i, "Dice": 70.0 + i, "pixels": 100 * (i + 1)}
        for i, name in enumerate(CLASSES)
    ]
    scores = {"mIoU": 51.0, "mAcc": 61.0, "aAcc": 80.0, "mDice": 71.0, "fwIoU": 52.0}
    return {**scores, "per_class": per_class, "confusion": [[90, 5, 5], [10, 80, 10], [0, 20, 80]]}


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def interrupted_rename(monkeypatch):
    """Ctrl-C arrives after a writer has filled its temporary file, just before the rename."""

    def boom(tmp, target):
        assert Path(tmp).stat().st_size > 0 and Path(tmp).parent == Path(target).parent
        raise KeyboardInterrupt

    monkeypatch.setattr(storage, "replace_file", boom)


# ------------------------------------------------------------------------------------------------- atomic writes
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_one(tmp_path):
    target = tmp_path / "page.html"
    target.write_bytes(b"the old page")
    with pytest.raises(KeyboardInterrupt), atomic_open(target, "w") as handle:
        handle.write("half of a new pa")
        raise KeyboardInterrupt
    assert _files(tmp_path) == {"page.html": b"the old page"}
    assert write_atomic(target, "new") == target and target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["page.html"]


def test_atomic_files_get_the_mode_a_plain_open_gives(tmp_path):
    write_atomic(tmp_path / "a.txt", b"x")
    (tmp_path / "b.txt").write_bytes(b"x")
    assert (tmp_path / "a.txt").stat().st_mode == (tmp_path / "b.txt").stat().st_mode


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(lambda out: save_tables(_result(), out), id="tables"),
        pytest.param(lambda out: write_report(out, _result(), None, None), id="report"),
        pytest.param(lambda out: _curves(out), id="curves"),
        pytest.param(lambda out: _tiny_model().save_pretrained(out), id="save_pretrained"),
    ],
)
def test_ctrl_c_while_writing_leaves_no_file_at_the_final_name(tmp_path, interrupted_rename, write):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(KeyboardInterrupt):
        write(out)
    assert [p.name for p in out.iterdir() if p.name != REPORT_MARKER] == []  # no partial file, no temporary one


def _curves(out: Path) -> None:
    from segcore.evaluation.plots import plot_curves

    rows = [{"iter": 1, "loss": 1.0, "lr": 0.1}, {"iter": 2, "loss": 0.5, "lr": 0.1, "mIoU": 40.0}]
    (out.parent / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    plot_curves(out.parent / "metrics.jsonl", out / "curves.png")


def _tiny_model() -> segcore.SegModel:
    return segcore.build_model("timm:test_convnext", "mlp", 3, decoder_options={"channels": 8})


def test_an_interrupted_onnx_export_leaves_the_previous_file(tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    import torch
    from segcore.tools.export import export_onnx

    target = tmp_path / "model.onnx"
    target.write_bytes(b"the previous export")

    def partial(model, args, f, **kw):
        Path(f).write_bytes(b"half a graph")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch.onnx, "export", partial)
    with pytest.raises(KeyboardInterrupt):
        export_onnx(_tiny_model(), target, example_size=64, verify=False)
    assert _files(tmp_path) == {"model.onnx": b"the previous export"}


# -------------------------------------------------------------------------------------------- storage errors
@pytest.mark.parametrize(
    ("err", "cause"),
    [
        (OSError(errno.EFBIG, "File too large"), "file too large: over the file-size limit (ulimit -f)"),
        (OSError(errno.ENOSPC, "No space left on device"), "the disk is full"),
        (PermissionError(errno.EACCES, "Permission denied"), "permission denied"),
        (RuntimeError("Error while serializing: I/O error: File too large (os error 27)"), "file too large"),
        (RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"), "disk is full"),
    ],
    ids=["efbig", "enospc", "eacces", "rust-efbig", "rust-enospc"],
)
def test_storage_errors_name_the_path_and_the_cause(tmp_path, err, cause):
    error = storage_error(err, tmp_path / "x.bin", "weights")
    assert isinstance(error, StorageError) and isinstance(error, OSError)
    assert str(error).startswith(f"cannot write weights {tmp_path / 'x.bin'}: ") and cause in str(error)


def test_the_training_helper_still_raises_a_training_error(tmp_path):
    from segcore.train.checkpointing import storage_error as training_storage_error

    error = training_storage_error(OSError(errno.EFBIG, "File too large"), tmp_path / "iter_2", "checkpoint")
    assert isinstance(error, TrainingError) and f"cannot write checkpoint {tmp_path / 'iter_2'}: file too" in str(error)


_FSIZE_SCRIPT = """
import json, resource, signal, sys
from pathlib import Path
import torch
from segcore.errors import SegcoreError
from segcore.weights.pretrained import save_weights
from segcore.evaluation.report import write_report
from segcore.train.checkpointing import save_atomic
from safetensors.torch import save_file

result = json.loads(sys.argv[2])
root = Path(sys.argv[1])
free = write_report(root / "unlimited", result, None, None)
sizes = {p.name: p.stat().st_size for p in free.parent.iterdir()}
limit = max(v for k, v in sizes.items() if k != "report.html") + 1024
assert limit < sizes["report.html"], sizes
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # as a shell that ignores it: writes fail with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
big = {"w": torch.zeros(limit // 4 + 1024)}
fill = lambda folder: save_file(big, str(folder / "model.safetensors"))  # what accelerate's save_state writes
out = {}
for name, write in (
    ("report", lambda: write_report(root / "limited", result, None, None)),
    ("weights", lambda: save_weights(big, root / "model.safetensors")),
    ("checkpoint", lambda: save_atomic(root / "checkpoints", 2, fill, {})),
):
    try:
        write()
        out[name] = "written"
    except SegcoreError as err:
        out[name] = f"{type(err).__name__}: {err}"
print(json.dumps(out))
"""


def test_a_file_size_limit_names_the_file_and_leaves_nothing_partial(tmp_path):
    script = tmp_path / "fsize.py"
    script.write_text(textwrap.dedent(_FSIZE_SCRIPT))
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg"}
    run = subprocess.run(
        [sys.executable, str(script), str(tmp_path), json.dumps(_result())],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    limited = tmp_path / "limited"
    assert got["report"].startswith(f"StorageError: cannot write {limited / 'report.html'}: file too large"), got
    assert got["weights"].startswith(f"StorageError: cannot write weights {tmp_path / 'model.safetensors'}: file too")
    assert got["checkpoint"].startswith(
        f"TrainingError: cannot write checkpoint {tmp_path / 'checkpoints' / 'iter_2'}: file too large"
    ), got
    # Nothing partial at a final name, and no temporary file left behind.
    assert not (limited / "report.html").exists() and not (tmp_path / "model.safetensors").exists()
    assert [p.name for p in limited.iterdir() if p.name.startswith(".tmp-")] == []
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []
    assert list((tmp_path / "checkpoints").iterdir()) == []


# ----------------------------------------------------------------------------------------------- report folders
def test_a_report_goes_only_into_a_new_empty_or_earlier_report_folder(tmp_path):
    report = tmp_path / "report"
    write_report(report, _result(), None, None)
    assert set(read_manifest(report / REPORT_MARKER)) == {
        "per_class.json",
        "per_class.csv",
        "confusion.csv",
        "confusion.png",
        "report.html",
    }
    (report / "notes.txt").write_text("mine")
    write_report(report, _result(), None, None)  # an earlier report's folder: its files are replaced
    assert (report / "notes.txt").read_text() == "mine"  # and nothing else is touched

    empty = tmp_path / "empty"
    empty.mkdir()
    assert check_report_folder(empty) == empty


def test_tables_mark_their_folder_so_that_a_later_report_may_replace_them(tmp_path):
    """A run's eval/iter_<N>/ holds the tables of a validation; a final report there (after a resume) is allowed."""
    folder = tmp_path / "eval" / "iter_4"
    save_tables(_result(), folder)
    assert sorted(read_manifest(folder / REPORT_MARKER)) == sorted(
        ["per_class.json", "per_class.csv", "confusion.csv", "confusion.png"]
    )
    assert write_report(folder, _result(), None, None) == folder / "report.html"


@pytest.mark.parametrize("name", ["report.html", "per_class.csv", "confusion.png", "notes.txt"])
def test_a_folder_with_user_files_is_refused_and_left_byte_for_byte(tmp_path, name):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / name).write_bytes(b"the user's own " + name.encode())
    before = _files(folder)
    with pytest.raises(OutputFolderError, match=f"report folder {folder} is not empty \\({name}\\)"):
        write_report(folder, _result(), None, None)
    assert _files(folder) == before


def test_a_marked_folder_still_keeps_user_files_of_report_names(tmp_path):
    folder = tmp_path / "report"
    folder.mkdir()
    write_manifest(folder / REPORT_MARKER, ["per_class.json"], "segcore report")
    (folder / "report.html").write_text("the user's page")
    with pytest.raises(OutputFolderError, match="holds report.html, which the earlier report there did not write"):
        write_report(folder, _result(), None, None)
    assert (folder / "report.html").read_text() == "the user's page"


def test_a_report_folder_inside_the_dataset_or_the_model_is_refused(tmp_path):
    data = tmp_path / "data"
    (data / "masks" / "val").mkdir(parents=True)
    model = tmp_path / "model"
    model.mkdir()
    dataset = type("Dataset", (), {"root": str(data)})()
    with pytest.raises(OutputFolderError, match=f"report folder {data / 'masks' / 'val'} is inside the dataset's"):
        check_report_folder(data / "masks" / "val", dataset)
    with pytest.raises(OutputFolderError, match="is inside the model folder"):
        check_report_folder(model / "report", model_folder=model)
    link = tmp_path / "link"
    link.symlink_to(data / "masks")
    with pytest.raises(OutputFolderError, match="is inside the dataset's"):  # symlinks are followed
        check_report_folder(link / "new", dataset)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in data.rglob("*")) == ["data/masks", "data/masks/val"]
    with pytest.raises(OutputFolderError, match="is a file, not a folder"):
        check_report_folder(Path(__file__))

"""Evaluation reports: per-class tables, confusion matrices, prediction panels and one HTML page.

:func:`save_tables` is what every evaluation leaves behind (``per_class.json``/``.csv``, ``confusion.csv``,
``confusion.png``); :func:`write_report` adds ``report.html``, one self-contained page (its pictures are inlined)
with the protocol and headline scores, a sorted per-class IoU bar chart, the confusion matrix, the worst images as
image | ground truth | prediction, and for a training run its curves. Drawing uses matplotlib's Agg backend, so no
display is needed. Every file is written atomically (:mod:`segcore.data.storage`), and a report replaces only files an
earlier report wrote: it goes into a missing or empty folder or one marked by ``.segcore-report.json`` (which
:func:`save_tables` writes too), and :func:`check_report_folder` also refuses one inside the dataset or the model.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segcore.data.storage import atomic_open, read_manifest, write_atomic, write_manifest
from segcore.errors import OutputFolderError

__all__ = [
    "save_tables",
    "write_report",
    "check_report_folder",
    "REPORT_FILES",
    "REPORT_MARKER",
    "confusion_figure",
    "iou_figure",
    "panel",
    "figure_array",
    "SCORES",
    "CLASS_SCORES",
]

# The headline scores, in the order the page and the tables show them (metrics.SUMMARY, then the calibration error).
SCORES = ("mIoU", "mAcc", "aAcc", "mDice", "fwIoU", "mFscore", "mPrecision", "mRecall", "ECE")
# The per-class scores of the tables and the page (metrics.PER_CLASS).
CLASS_SCORES = ("IoU", "Acc", "Dice", "Fscore", "Precision", "Recall")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _names(result: Mapping[str, Any]) -> list[str]:
    return [c["name"] for c in result["per_class"]]


def confusion_figure(confusion: Sequence[Sequence[int]], names: Sequence[str]) -> Any:
    """Heat-map of the confusion matrix normalised per ground-truth row (recall), class names on both axes."""
    plt = _plt()
    cm = np.asarray(confusion, dtype=np.float64)
    rows = cm.sum(1, keepdims=True)
    # A class with no ground-truth pixel has an empty row: shown as zeros rather than 0/0.
    normalised = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    k = len(names)
    side = min(3 + 0.35 * k, 40)  # readable labels up to ~100 classes, bounded for ADE20K's 150
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), labels=names, rotation=90, fontsize=8)
    ax.set_yticks(range(k), labels=names, fontsize=8)
    ax.set(xlabel="prediction", ylabel="ground truth", title="confusion matrix (rows normalised)")
    if k <= 20:  # the fractions fit in the cells
        for r in range(k):
            for c in range(k):
                value = normalised[r, c]
                ax.text(
                    c, r, f"{value:.2f}", ha="center", va="center", fontsize=7, color="white" if value > 0.5 else "k"
                )
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


def iou_figure(per_class: Sequence[Mapping[str, Any]]) -> Any:
    """Horizontal bars of per-class IoU, best at the top; classes never seen or predicted (nan) are left out."""
    plt = _plt()
    rows = sorted((c for c in per_class if not math.isnan(c["IoU"])), key=lambda c: c["IoU"])
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.25 * len(rows) + 1)))
    ax.barh([c["name"] for c in rows], [c["IoU"] for c in rows], color="tab:blue")
    ax.set(xlim=(0, 100), xlabel="IoU (%)", title="per-class IoU")
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    _plt().close(fig)
    return buffer.getvalue()


def figure_array(fig: Any) -> np.ndarray:
    """The figure as an ``[H, W, 3]`` uint8 array (what trackers take as an image); closes the figure."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(_png(fig))).convert("RGB"))


def _colour(labels: np.ndarray, palette: Sequence[Sequence[int]], ignore_index: int) -> np.ndarray:
    table = np.zeros((256, 3), dtype=np.uint8)
    for i, colour in enumerate(palette[:255]):
        table[i] = colour
    table[ignore_index % 256] = (0, 0, 0)  # ignored pixels are black
    return table[np.clip(labels, 0, 255).astype(np.int64)]


@torch.no_grad()
def panel(model: torch.nn.Module, sample: Mapping[str, Any], protocol: Any = None, device: Any = "cpu") -> np.ndarray:
    """``image | ground truth | prediction`` side by side, ``[H, 3W, 3]`` uint8, in the model's palette."""
    from segcore.evaluation.inference import infer_logits

    cfg = model.config  # type: ignore[union-attr]
    image = np.asarray(sample["image"])
    was_training = model.training
    model.eval()
    logits = infer_logits(model, torch.as_tensor(image)[None].to(device), protocol, cfg.num_classes)
    model.train(was_training)
    pred = logits.argmax(1)[0].cpu().numpy()
    palette = cfg.palette or [[(37 * i) % 256, (17 * i + 80) % 256, (91 * i + 160) % 256] for i in range(256)]
    ignore = int(cfg.ignore_index)
    gt = _colour(np.asarray(sample["label"]), palette, ignore)
    return np.concatenate([image.transpose(1, 2, 0), gt, _colour(pred, palette, ignore)], axis=1).astype(np.uint8)


# A spreadsheet reads a cell that starts with one of these as a formula (CSV injection, OWASP): = + - @, and the
# tab and carriage return that some of them skip before looking.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_text(value: Any) -> str:
    """A text cell (a class name) for a CSV file: one that a spreadsheet would run as a formula gets a leading ``'``.

    Only text cells go through this; the numeric columns stay numbers (``-0.5`` is not escaped).
    """
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _fmt(value: float) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.2f}"


def save_tables(result: Mapping[str, Any], folder: str | Path) -> list[Path]:
    """Write ``per_class.json``, ``per_class.csv``, ``confusion.csv`` and ``confusion.png`` into ``folder``.

    Args:
        result: what :func:`segcore.evaluation.evaluate.evaluate` returns (``per_class`` and ``confusion`` are used).
        folder: created if missing, and marked as segcore's (:data:`REPORT_MARKER` lists the files).

    Returns:
        The four paths.
    """
    folder = Path(folder)
    _mark(folder, REPORT_FILES[:4])
    names = _names(result)
    summary = {k: _plain(result[k]) for k in SCORES if k in result}
    table = [{k: _plain(v) for k, v in c.items()} for c in result["per_class"]]
    write_atomic(folder / "per_class.json", json.dumps({**summary, "per_class": table}, indent=2) + "\n")
    with atomic_open(folder / "per_class.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["class", *CLASS_SCORES, "pixels"])
        for c in result["per_class"]:
            row = [_csv_text(c["name"]), *(_fmt(c.get(k, math.nan)) for k in CLASS_SCORES), c.get("pixels", "")]
            writer.writerow(row)
    with atomic_open(folder / "confusion.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ground truth \\ prediction", *map(_csv_text, names)])
        for name, row in zip(names, result["confusion"]):
            writer.writerow([_csv_text(name), *row])
    write_atomic(folder / "confusion.png", _png(confusion_figure(result["confusion"], names)))
    return [folder / n for n in ("per_class.json", "per_class.csv", "confusion.csv", "confusion.png")]


def _plain(value: Any) -> Any:
    """JSON has no nan: a class never seen is ``null``."""
    return None if isinstance(value, float) and math.isnan(value) else value


# What ``write_report`` writes, and the file that marks a folder as one of its reports (it lists the files written).
REPORT_FILES = ("per_class.json", "per_class.csv", "confusion.csv", "confusion.png", "curves.png", "report.html")
REPORT_MARKER = ".segcore-report.json"


def _local_roots(dataset: Any, model_folder: str | Path | None) -> list[tuple[str, Path]]:
    roots = []
    root = getattr(dataset, "root", None)
    if isinstance(root, (str, Path)) and Path(root).expanduser().is_dir():
        roots.append((f"the dataset's folder {root}", Path(root).expanduser()))
    if model_folder is not None and Path(model_folder).expanduser().is_dir():
        roots.append((f"the model folder {model_folder}", Path(model_folder).expanduser()))
    return roots


def check_report_folder(folder: str | Path, dataset: Any = None, model_folder: str | Path | None = None) -> Path:
    """Refuse a report folder where :func:`write_report` would replace or mix with files it did not write.

    A report goes into a missing or empty folder, or one an earlier report made (marked by :data:`REPORT_MARKER`,
    which lists the files it wrote; only those are replaced). It never goes inside the evaluated dataset's folder
    (its pictures would be read as masks) or the model folder. Paths are compared resolved (symlinks followed).

    Args:
        folder: the report folder.
        dataset: the evaluated dataset (its ``root``, when a local folder, is protected).
        model_folder: the evaluated model's local folder, if any.

    Returns:
        ``folder`` as a path.

    Raises:
        OutputFolderError: the folder is a file, lies inside the dataset or the model folder, or holds files that
            segcore did not write; the message names them and what to do.
    """
    folder = Path(folder).expanduser()
    fix = "Choose a new or empty folder for the report"
    if folder.exists() and not folder.is_dir():
        raise OutputFolderError(f"report folder {folder} is a file, not a folder. {fix} (it is created if missing).")
    resolved = folder.resolve()
    for what, root in _local_roots(dataset, model_folder):
        if resolved.is_relative_to(root.resolve()):
            raise OutputFolderError(
                f"report folder {folder} is inside {what}: its files would mix with the ones there (a later "
                f"evaluation would read confusion.png as a mask). {fix} outside it."
            )
    if not folder.is_dir():
        return folder
    present = sorted(p.name for p in folder.iterdir())
    marked = read_manifest(folder / REPORT_MARKER)
    if marked is None and present:
        shown = ", ".join(present[:5]) + (f" and {len(present) - 5} more" if len(present) > 5 else "")
        raise OutputFolderError(
            f"report folder {folder} is not empty ({shown}) and no earlier segcore report made it (it has no "
            f"{REPORT_MARKER}): nothing in it is replaced. {fix}, or remove those files first."
        )
    foreign = [name for name in REPORT_FILES if name in present and name not in (marked or [])]
    if foreign:
        raise OutputFolderError(
            f"report folder {folder} holds {', '.join(foreign)}, which the earlier report there did not write: "
            f"they are not replaced. {fix}, or remove those files first."
        )
    return folder


def _mark(folder: Path, files: Sequence[str]) -> None:
    """Mark ``folder`` as a report's before writing into it, listing ``files`` with what earlier reports wrote."""
    folder.mkdir(parents=True, exist_ok=True)
    write_manifest(folder / REPORT_MARKER, [*(read_manifest(folder / REPORT_MARKER) or []), *files], "segcore report")


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _array_png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def write_report(
    folder: str | Path,
    result: Mapping[str, Any],
    model: torch.nn.Module,
    dataset: Any,
    protocol: Any = None,
    title: str = "segcore evaluation",
    facts: Mapping[str, Any] | None = None,
    worst: int = 6,
    metrics_file: str | Path | None = None,
    device: Any = "cpu",
) -> Path:
    """Write the tables (:func:`save_tables`) and ``report.html`` into ``folder``; return the page's path.

    ``folder`` must be missing, empty or an earlier report's (:func:`check_report_folder`; ``segcore eval --report``
    also refuses one inside the dataset or the model before it evaluates); each file is written atomically.

    Args:
        folder: created if missing.
        result: what :func:`segcore.evaluation.evaluate.evaluate` returns.
        model: the evaluated model (the worst images are predicted again, on this process only).
        dataset: the evaluated dataset.
        protocol: the evaluation protocol (described on the page).
        title: the page's heading.
        facts: more lines for the protocol table (model, dataset, split, precision...).
        worst: how many of the lowest-scoring images to show.
        metrics_file: a run's ``metrics.jsonl``: its training curves are drawn on the page.
        device: where the model runs.

    Raises:
        OutputFolderError: ``folder`` is a file or holds files segcore did not write.
        StorageError: a file could not be written (the message names it and the cause).

    Example:
        >>> write_report("report", evaluate(model, ds), model, ds)  # doctest: +SKIP
    """
    folder = check_report_folder(folder)
    curves = metrics_file is not None and Path(metrics_file).is_file()
    _mark(folder, [name for name in REPORT_FILES if curves or name != "curves.png"])
    save_tables(result, folder)
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in _facts(protocol, facts)
    )
    shown = [k for k in SCORES if k in result]
    scores = (
        "".join(f"<th>{k}</th>" for k in shown) + "</tr><tr>" + "".join(f"<td>{_fmt(result[k])}</td>" for k in shown)
    )
    table = "".join(
        f"<tr><td>{html.escape(c['name'])}</td>"
        + "".join(f"<td>{_fmt(c.get(k, math.nan))}</td>" for k in CLASS_SCORES)
        + f"<td>{c.get('pixels', '')}</td></tr>"
        for c in result["per_class"]
    )
    header = "".join(f"<th>{k}</th>" for k in CLASS_SCORES)
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f"<h2>Protocol</h2><table>{rows}</table>",
        f"<h2>Scores (%)</h2><table><tr>{scores}</tr></table>",
        "<h2>Per-class IoU</h2>",
        _img(_png(iou_figure(result["per_class"])), "per-class IoU, sorted"),
        "<h2>Confusion matrix</h2>",
        _img((folder / "confusion.png").read_bytes(), "confusion matrix"),
        f"<details><summary>per-class table</summary><table><tr><th>class</th>{header}"
        f"<th>pixels</th></tr>{table}</table></details>",
        *_calibration_section(result),
    ]
    parts += _worst_images(result, model, dataset, protocol, worst, device)
    if curves:
        from segcore.evaluation.plots import plot_curves

        drawn = plot_curves(metrics_file, folder / "curves.png")
        parts += ["<h2>Training curves</h2>", _img(drawn.read_bytes(), "training curves")]
    page = folder / "report.html"
    write_atomic(page, _PAGE.format(title=html.escape(title), body="\n".join(parts)))
    return page


def _calibration_section(result: Mapping[str, Any]) -> list[str]:
    """The page's calibration section: the ECE and the reliability diagram (none without a calibration histogram)."""
    calibration = result.get("calibration")
    if not calibration:
        return []
    from segcore.evaluation.plots import reliability_figure

    ece = result.get("ECE", math.nan)
    return [
        "<h2>Calibration</h2>",
        f"<p>Expected calibration error over pixels: {_fmt(ece) or 'n/a'}% ({calibration['bins']} equal-width bins "
        "of the max softmax, ignored pixels excluded). Bars below the diagonal: over-confident.</p>",
        _img(_png(reliability_figure(calibration, ece)), "reliability diagram"),
    ]


def _worst_images(
    result: Mapping[str, Any], model: torch.nn.Module, dataset: Any, protocol: Any, worst: int, device: Any
) -> list[str]:
    """The page's section of the ``worst`` lowest-scoring images as image | ground truth | prediction panels."""
    scored = [(s, i) for i, s in result.get("images", []) if not math.isnan(s)]
    if not scored or worst <= 0:
        return []
    parts = ["<h2>Worst images</h2><p>image | ground truth | prediction</p>"]
    for score, index in sorted(scored)[:worst]:
        sample = dataset[index]
        label = f"#{index} {Path(str(sample.get('path', ''))).name} mIoU {score:.2f}"
        parts.append(f"<figure>{_img(_array_png(panel(model, sample, protocol, device)), label)}")
        parts.append(f"<figcaption>{html.escape(label)}</figcaption></figure>")
    return parts


def _facts(protocol: Any, facts: Mapping[str, Any] | None) -> list[tuple[str, Any]]:
    out = list((facts or {}).items())
    if protocol is not None:
        from segcore.config.settings import EvalProtocol

        out.append(
            (
                "protocol",
                EvalProtocol.from_dict(protocol).describe() if isinstance(protocol, Mapping) else protocol.describe(),
            )
        )
    return out


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left}}img{{max-width:100%}}figure{{margin:1em 0}}</style>
</head><body>
{body}
</body></html>
"""

"""Plots: a run's curves (``curves.png``) and an evaluation's reliability diagram.

:func:`plot_curves` draws training loss, learning rate and validation mIoU read from ``metrics.jsonl``;
:func:`reliability_figure` the accuracy per confidence bin of :mod:`segcore.evaluation.confidence`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from segcore.data.storage import atomic_path

__all__ = ["plot_curves", "reliability_figure"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def reliability_figure(calibration: Mapping[str, Any], ece: float | None = None) -> Any:
    """The reliability diagram: per confidence bin the accuracy against the mean confidence, pixels per bin below.

    Args:
        calibration: :func:`segcore.evaluation.confidence.reliability`'s dict (``edges``, ``count``,
            ``confidence``, ``accuracy``); empty bins are left out.
        ece: the expected calibration error (percent), shown in the title.

    Returns:
        The matplotlib figure (Agg backend), for the caller to save and close.
    """
    plt = _pyplot()
    edges = list(calibration["edges"])
    width = edges[1] - edges[0]
    full = [i for i, n in enumerate(calibration["count"]) if n > 0]
    lefts = [edges[i] for i in full]
    accuracy = [calibration["accuracy"][i] for i in full]
    confidence = [calibration["confidence"][i] for i in full]
    total = max(1, sum(calibration["count"]))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.bar(lefts, accuracy, width=width, align="edge", color="tab:blue", edgecolor="k", label="accuracy")
    top.bar(
        lefts,
        [c - a for c, a in zip(confidence, accuracy)],
        bottom=accuracy,
        width=width,
        align="edge",
        fill=False,
        edgecolor="tab:red",
        hatch="//",
        label="gap to mean confidence",
    )
    top.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfectly calibrated")
    title = "reliability diagram" + (f" (ECE {ece:.2f}%)" if ece is not None and ece == ece else "")
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy", title=title)
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(lefts, [calibration["count"][i] / total for i in full], width=width, align="edge", color="tab:gray")
    bottom.set(xlabel="confidence (max softmax)", ylabel="pixels (share)")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_curves(metrics_file: str | Path, out_file: str | Path) -> Path:
    """Draw the curves of a run (matplotlib's Agg backend: no display needed); ``out_file`` is written atomically."""
    plt = _pyplot()

    steps, losses, lrs, eval_steps, mious = [], [], [], [], []
    for line in Path(metrics_file).read_text().splitlines():
        row = json.loads(line)
        if "loss" in row:
            steps.append(row["iter"])
            losses.append(row["loss"])
            lrs.append(row["lr"])
        if "mIoU" in row:
            eval_steps.append(row["iter"])
            mious.append(row["mIoU"])
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(steps, losses)
    axes[0].set(title="training loss", xlabel="iteration")
    axes[1].plot(steps, lrs)
    axes[1].set(title="learning rate (base group)", xlabel="iteration")
    axes[2].plot(eval_steps, mious, marker="o")
    axes[2].set(title="validation mIoU (%)", xlabel="iteration")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out_file = Path(out_file)
    try:
        with atomic_path(out_file, "curves") as tmp:  # the temporary name keeps the suffix: savefig's format
            fig.savefig(tmp, dpi=90)
    finally:
        plt.close(fig)
    return out_file

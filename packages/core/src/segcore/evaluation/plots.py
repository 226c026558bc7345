"""``curves.png``: training loss, learning rate and validation mIoU read from ``metrics.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path

from segcore.data.storage import atomic_path

__all__ = ["plot_curves"]


def plot_curves(metrics_file: str | Path, out_file: str | Path) -> Path:
    """Draw the curves of a run (matplotlib's Agg backend: no display needed); ``out_file`` is written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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

"""Trackers through Accelerate (``--log-with tensorboard,wandb,mlflow,...``).

Scalars and the run config go through Accelerate's tracker API (``Accelerator(log_with=...)``,
``init_trackers``, ``accelerator.log``). Images have no generic call there: each tracker that has ``log_images``
(TensorBoard, W&B, Aim, ClearML, SwanLab) gets them through it, with the arguments that tracker needs.
"""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from segcore.errors import TrainingError
from segcore.train.schema import TrainSettings

__all__ = ["tracker_names", "init_kwargs", "run_config", "validation_scalars", "log_images", "LOGS"]

# Where trackers that write local files put them, inside the run folder.
LOGS = "logs"
# The import name and the pip name of each tracker's package, where either differs from the tracker's name.
_PACKAGES = {"tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"), "comet_ml": (("comet_ml",), "comet-ml")}


def tracker_names(s: TrainSettings) -> list[str]:
    """The trackers of a run (``--log-with`` plus ``--tensorboard``), checked: known to Accelerate and installed.

    Raises:
        TrainingError: an unknown tracker (listing the known ones), or one whose package is missing (naming it).
    """
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    names = list(dict.fromkeys([*(n.strip() for n in s.log_with or []), *(["tensorboard"] if s.tensorboard else [])]))
    for name in names:
        if name not in LOGGER_TYPE_TO_CLASS:
            known = ", ".join(sorted(LOGGER_TYPE_TO_CLASS))
            raise TrainingError(f"--log-with {name}: not a tracker Accelerate knows; use one of {known}")
        modules, pip = _PACKAGES.get(name, ((name,), name))
        if not any(importlib.util.find_spec(m) for m in modules):
            raise TrainingError(f"--log-with {name} needs the {pip} package: pip install {pip}")
    return names


def init_kwargs(s: TrainSettings, out: Path) -> dict[str, dict[str, Any]]:
    """Per-tracker ``init_trackers`` arguments: the run's name, and local files under ``out/logs``."""
    name = s.run_name or out.resolve().name
    return {
        "wandb": {"name": name, "dir": str(out / LOGS)},
        "mlflow": {"run_name": name},
    }


def run_config(s: TrainSettings) -> dict[str, Any]:
    """The resolved settings as a flat config every tracker takes (TensorBoard's hparams need plain scalars)."""
    return {k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v) for k, v in s.to_dict().items()}


def validation_scalars(result: Mapping[str, Any]) -> dict[str, float]:
    """The validation scores to log: ``val/mIoU`` ... ``val/mFscore``, ``val/ECE``, ``val/<score>/<class>``.

    The headline scores are :data:`segcore.evaluation.metrics.SUMMARY` and ``ECE``, the per-class ones
    :data:`segcore.evaluation.metrics.PER_CLASS` (IoU, Acc, Dice, Fscore, Precision, Recall). A nan (a class neither
    seen nor predicted) is left out: trackers draw it as a gap at best.
    """
    from segcore.evaluation.metrics import PER_CLASS, SUMMARY

    values = {f"val/{k}": float(result[k]) for k in (*SUMMARY, "ECE") if k in result}
    for c in result["per_class"]:
        for key in PER_CLASS:
            values[f"val/{key}/{c['name']}"] = float(c[key])
    return {k: v for k, v in values.items() if not math.isnan(v)}


def takes_images(accelerator: Any) -> bool:
    """Does any of the run's trackers take images?"""
    return any(hasattr(t, "log_images") for t in accelerator.trackers)


def log_images(accelerator: Any, images: Mapping[str, np.ndarray], step: int) -> None:
    """Log ``[H, W, 3]`` uint8 ``images`` to every tracker that takes images (main process only)."""
    for tracker in accelerator.trackers:
        if not hasattr(tracker, "log_images"):
            continue
        # TensorBoard's add_images reads NCHW unless told; the others take HWC arrays as they are.
        extra = {"dataformats": "NHWC"} if tracker.name == "tensorboard" else {}
        tracker.log_images(
            {k: v[None] if tracker.name == "tensorboard" else [v] for k, v in images.items()}, step, **extra
        )

"""Training: ``segcore.train.train(TrainSettings(...))`` and its building blocks (see DESIGN.md "Training")."""

from __future__ import annotations

from typing import Any

__all__ = [
    "TrainSettings",
    "TrainingError",
    "TrainingInterrupted",
    "train",
    "evaluate",
    "resolve_recipe",
    "resolve_run",
    "plan",
    "core_recipes",
]

from segcore.plugins.recipes import core_recipes

# Where the lazily loaded names live (the trainer imports torch and accelerate: each loads on first use).
_HOMES = {"TrainSettings": "schema", "resolve_recipe": "resolve", "resolve_run": "resolve", "plan": "dry_run"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(f"segcore.train.{_HOMES[name]}"), name)
    if name in ("TrainingError", "TrainingInterrupted"):  # defined with segcore's other errors
        from segcore import errors

        return getattr(errors, name)
    if name == "evaluate":  # its home is segcore.evaluation.evaluate (the trainer and `segcore eval` share it)
        from segcore.evaluation.evaluate import evaluate

        return evaluate
    if name == "train":
        from segcore.train import trainer

        return getattr(trainer, name)
    raise AttributeError(name)

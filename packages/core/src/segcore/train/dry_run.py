"""The dry-run view of a run (``segcore train --dry-run``): every resolved setting, without data or weights.

:func:`plan` resolves the run as training would (:mod:`segcore.train.resolve`) and describes it: model, parameter
groups, schedule, pipelines, eval protocol, batch split, and under ``settings`` every declared field of
:class:`~segcore.train.schema.TrainSettings` with its flag, so a new flag appears here with no edit.
"""

from __future__ import annotations

import os
from typing import Any

from segcore.config.fields import declared
from segcore.config.settings import EvalProtocol
from segcore.plugins.specs import RecipeSpec
from segcore.train.resolve import ResolvedRun, batch_split, plain, resolve_for_plan
from segcore.train.schema import TrainSettings

__all__ = ["plan"]


def plan(settings: TrainSettings) -> dict[str, Any]:
    """The fully resolved run as a JSON-ready dict: model, parameter groups, schedule, pipelines, batch split.

    Nothing is downloaded, no weights are created and nothing is written: the model is built on the meta device
    to count the parameters each rule applies to (when the dataset's classes are known). With ``init_from`` only a
    local config is read (a folder's ``config.json``, a registered checkpoint's spec); a Hub model is said to be
    fetched when training starts.

    Example:
        >>> run = plan(TrainSettings(recipe="segnext-ade20k-160k", encoder="mscan-b"))  # doctest: +SKIP
        >>> run["model"]["decoder_options"]["channels"]  # doctest: +SKIP
        512
    """
    run = resolve_for_plan(settings)
    s, recipe = run.settings, run.recipe
    assert s.batch_size is not None and s.crop_size is not None and s.lr is not None and s.weight_decay is not None
    dataset = _dataset_summary(s)
    protocol = run.eval_protocol
    return {
        "recipe": {"name": s.recipe, "description": recipe.description, "source": recipe.source},
        "dataset": dataset,
        "model": _model_section(s, recipe, dataset),
        "init_from": _init_summary(s, run.init, dataset.get("num_classes")),
        "optimizer": _optimizer_section(s, recipe, dataset.get("num_classes")),
        "schedule": _schedule_section(s, recipe),
        "clip_grad": s.clip_grad,
        "train_pipeline": {"crop_size": list(s.crop_size), **recipe.train_pipeline.to_dict()},
        "eval_protocol": protocol.to_dict() if protocol is not None else dataset.get("eval_protocol"),
        "eval_protocol_source": _protocol_source(run, protocol),
        "batch": _batch_section(s),
        "eval_every": s.eval_every,
        "checkpoint_every": s.checkpoint_every,
        "keep_checkpoints": s.keep_checkpoints,
        "mixed_precision": s.mixed_precision,
        "seed": s.seed,
        "ema_decay": s.ema_decay,
        "output_dir": s.output_dir,
        "settings": {d.flag: plain(d.shown(getattr(s, d.name))) for d in declared(type(s))},
    }


def _model_section(s: TrainSettings, recipe: RecipeSpec, dataset: dict[str, Any]) -> dict[str, Any]:
    """The model the run trains: components, their options, classes and input normalisation."""
    pipe = recipe.train_pipeline
    return {
        "encoder": s.encoder,
        "decoder": s.decoder,
        "encoder_options": s.encoder_opt,
        "decoder_options": s.decoder_opt,
        "pretrained_encoder": s.pretrained_encoder,
        "num_classes": dataset.get("num_classes"),
        "mean": list(pipe.mean),
        "std": list(pipe.std),
        "ignore_index": dataset.get("ignore_index", 255),
    }


def _optimizer_section(s: TrainSettings, recipe: RecipeSpec, num_classes: int | None) -> dict[str, Any]:
    """AdamW with the recipe's rules (longest key first, as they match) and the groups they make."""
    assert s.lr is not None and s.weight_decay is not None
    return {
        "type": "AdamW",
        "lr": s.lr,
        "weight_decay": s.weight_decay,
        "betas": list(recipe.betas),
        "param_rules": [
            {
                "key": r.key,
                "lr_mult": r.lr_mult,
                "decay_mult": r.decay_mult,
                "lr": s.lr * r.lr_mult,
                "weight_decay": s.weight_decay * r.decay_mult,
            }
            for r in sorted(recipe.param_rules, key=lambda r: len(r.key), reverse=True)
        ],
        "norm_decay_mult": recipe.norm_decay_mult,
        "bias_decay_mult": recipe.bias_decay_mult,
        "param_groups": _param_groups(s, recipe, num_classes),
    }


def _schedule_section(s: TrainSettings, recipe: RecipeSpec) -> dict[str, Any]:
    """The poly schedule with its linear warm-up."""
    return {
        "iters": s.iters,
        "policy": "poly",
        "power": recipe.power,
        "min_lr": recipe.min_lr,
        "warmup": "linear",
        "warmup_iters": recipe.warmup_iters,
        "warmup_ratio": recipe.warmup_ratio,
    }


def _batch_section(s: TrainSettings) -> dict[str, Any]:
    """The total batch and its split over ``$WORLD_SIZE`` processes and gradient accumulation."""
    assert s.batch_size is not None
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    return {
        "total": s.batch_size,
        "processes": processes,
        "grad_accum": s.grad_accum,
        "per_device": batch_split(s.batch_size, processes, s.grad_accum),
    }


def _protocol_source(run: ResolvedRun, protocol: EvalProtocol | None) -> str:
    if protocol is None:
        return "dataset"
    if run.init is not None and not run.settings.recipe and protocol.to_dict() == _plain_protocol(run.init.eval):
        return "init-from"
    return "recipe"


def _plain_protocol(data: dict[str, Any]) -> dict[str, Any] | None:
    return EvalProtocol.from_dict(data).to_dict() if data else None


def _init_summary(s: TrainSettings, init: Any, num_classes: int | None) -> dict[str, Any] | None:
    """What ``init_from`` sets in the run, from its config (not fetched in a dry run when it is on the Hub)."""
    if s.init_from is None:
        return None
    if init is None:
        return {"source": s.init_from, "config": "on the Hub: fetched when training starts (not in a dry run)"}
    summary: dict[str, Any] = {
        "source": s.init_from,
        "config": "read (no weights loaded)",
        "encoder": init.encoder,
        "decoder": init.decoder,
        "encoder_options": dict(init.encoder_options),
        "decoder_options": dict(init.decoder_options),
        "mean": list(init.mean),
        "std": list(init.std),
        "eval_protocol": _plain_protocol(init.eval),
        "num_classes": init.num_classes,
        "class_names": list(init.class_names),
    }
    if num_classes is not None and num_classes != init.num_classes:
        from segcore.train.init_from import class_dependent_tensors

        summary["reinitialised"] = class_dependent_tensors(init)
    return summary


def _dataset_summary(s: TrainSettings) -> dict[str, Any]:
    """Classes and protocol of the training set, read from the dataset when it can be opened."""
    from segcore.models.components import build_dataset
    from segcore.plugins.registry import get_spec

    out: dict[str, Any] = {"name": s.dataset, "root": s.data_root, "options": s.dataset_opt}
    try:
        ds = build_dataset(s.dataset, root=s.data_root, split="train", **s.dataset_opt)
    except Exception as err:  # noqa: BLE001 - a dry run reports a missing dataset instead of failing
        out["error"] = f"not opened: {err}"
        classes = get_spec("datasets", s.dataset).load_classes()
        if classes:  # the spec knows its classes: the classifier can still be sized
            out["num_classes"] = len(classes)
        return out
    protocol = getattr(ds, "eval_protocol", None)
    out.update(
        {
            "num_classes": len(ds.classes),
            "ignore_index": int(getattr(ds, "ignore_index", 255)),
            "train_samples": len(ds),
            "eval_protocol": EvalProtocol.from_dict(protocol).to_dict(),
        }
    )
    return out


def _param_groups(s: TrainSettings, recipe: RecipeSpec, num_classes: int | None) -> list[dict[str, Any]] | None:
    """Tensors and values per ``(lr, weight decay)`` group of the model built on the meta device."""
    if num_classes is None or s.encoder is None:
        return None
    import torch

    from segcore.models.model import SegModel, SegModelConfig
    from segcore.train.optim import param_groups

    config = SegModelConfig(s.encoder, s.decoder, num_classes, dict(s.encoder_opt), dict(s.decoder_opt))  # type: ignore[arg-type]
    with torch.device("meta"):
        model = SegModel(config, check=False)
    groups = param_groups(
        model,
        s.lr,
        s.weight_decay,
        recipe.param_rules,
        recipe.norm_decay_mult,
        recipe.bias_decay_mult,  # type: ignore[arg-type]
    )
    return [
        {
            "lr": g["lr"],
            "weight_decay": g["weight_decay"],
            "tensors": len(g["params"]),
            "values": sum(p.numel() for p in g["params"]),
        }
        for g in groups
    ]

"""The settings of a training run: one field per ``segcore train`` flag, resolved against a recipe.

:func:`resolve_run` fills every unset field from the recipe (named, or the CPU preset for ``synthetic-shapes``)
and the paper pair's options; :func:`plan` describes the resolved run without touching data or weights, which
``segcore train --dry-run`` prints so that a recipe can be checked against its paper.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from segcore.components import resolved_options, with_pair_defaults
from segcore.errors import SegcoreError
from segcore.settings import EvalProtocol, ModelSettings, TrainPipeline
from segcore.specs import RecipeSpec

__all__ = ["TrainSettings", "TrainingError", "ResolvedRun", "resolve_recipe", "resolve_run", "find_recipe", "plan"]

logger = logging.getLogger("segcore.train")


class TrainingError(SegcoreError):
    """Training stopped (non-finite loss, bad settings, no usable checkpoint)."""


@dataclass
class TrainSettings:
    """One field per ``segcore train`` flag; ``None`` means "take it from the recipe".

    Attributes:
        encoder: encoder name (``--encoder``).
        decoder: decoder name (``--decoder``).
        dataset: dataset name (``--dataset``); ``None``: the recipe's, or ``synthetic-shapes`` without a recipe.
        data_root: dataset folder (``--data-root``).
        recipe: preset name (``--recipe``); with none and ``synthetic-shapes`` the CPU preset.
        iters: training iterations (``--iters``).
        batch_size: total batch = per device x processes x accumulation (``--batch-size``).
        crop_size: training crop ``(H, W)`` (``--crop-size``).
        lr: base learning rate (``--lr``).
        weight_decay: base weight decay (``--weight-decay``).
        pretrained_encoder: load the encoder's pretrained weights (``--pretrained-encoder``).
        encoder_opt: encoder options (``--encoder-opt k=v``), over the recipe's and the paper pair's.
        decoder_opt: decoder options (``--decoder-opt k=v``), over the recipe's and the paper pair's.
        dataset_opt: dataset options (``--dataset-opt k=v``).
        mixed_precision: ``no``, ``bf16`` or ``fp16`` (``--mixed-precision``).
        output_dir: run folder (``--output-dir``).
        resume: continue from the newest good checkpoint (``--resume``).
        eval_every: validation period in iterations (``--eval-every``; 0 only at the end).
        checkpoint_every: checkpoint period in iterations (``--checkpoint-every``; 0 only at the end).
        seed: seed of model init, data order and augmentation (``--seed``).
        grad_accum: gradient accumulation steps (``--grad-accum``).
        clip_grad: max gradient norm (``--clip-grad``); ``None`` takes the recipe's.
        ema_decay: keep an EMA of the weights with this decay; used for eval and the saved model (``--ema``).
        tensorboard: log to TensorBoard under ``output_dir/tb`` (``--tensorboard``).
        log_every: write a ``metrics.jsonl`` row every this many iterations (``--log-every``).
        eval_mode: ``whole`` or ``slide`` (``--eval-mode``); ``None`` takes the recipe's protocol.
        max_eval_samples: evaluate on the first N validation images only (``--max-eval-samples``).
        workers: DataLoader worker processes for training samples (``--workers``); ``None``: none on CPU
            (they would compete with the model for the cores), up to 8 on a GPU.
        progress: show the tqdm progress bar.
    """

    encoder: str | None = None
    decoder: str | None = None
    dataset: str | None = None
    data_root: str | None = None
    recipe: str | None = None
    iters: int | None = None
    batch_size: int | None = None
    crop_size: tuple[int, int] | None = None
    lr: float | None = None
    weight_decay: float | None = None
    pretrained_encoder: bool | None = None
    encoder_opt: dict[str, Any] = field(default_factory=dict)
    decoder_opt: dict[str, Any] = field(default_factory=dict)
    dataset_opt: dict[str, Any] = field(default_factory=dict)
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    output_dir: str = "runs/segcore"
    resume: bool = False
    eval_every: int | None = None
    checkpoint_every: int | None = None
    seed: int = 0
    grad_accum: int = 1
    clip_grad: float | None = None
    ema_decay: float | None = None
    tensorboard: bool = False
    log_every: int = 10
    eval_mode: Literal["whole", "slide"] | None = None
    max_eval_samples: int | None = None
    workers: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        """Reject values that make no sense, naming the flag and the valid range."""
        ranges = {
            "--iters": (self.iters, lambda v: v >= 1, ">= 1"),
            "--batch-size": (self.batch_size, lambda v: v >= 1, ">= 1"),
            "--lr": (self.lr, lambda v: v > 0, "> 0"),
            "--weight-decay": (self.weight_decay, lambda v: v >= 0, ">= 0"),
            "--eval-every": (self.eval_every, lambda v: v >= 0, ">= 0"),
            "--checkpoint-every": (self.checkpoint_every, lambda v: v >= 0, ">= 0"),
            "--grad-accum": (self.grad_accum, lambda v: v >= 1, ">= 1"),
            "--clip-grad": (self.clip_grad, lambda v: v > 0, "> 0"),
            "--ema": (self.ema_decay, lambda v: 0 < v < 1, "in (0, 1)"),
            "--log-every": (self.log_every, lambda v: v >= 1, ">= 1"),
            "--max-eval-samples": (self.max_eval_samples, lambda v: v >= 1, ">= 1"),
            "--workers": (self.workers, lambda v: v >= 0, ">= 0"),
        }
        for flag, (value, ok, text) in ranges.items():
            if value is not None and not ok(value):
                raise TrainingError(f"{flag} must be {text}, got {value}")
        if self.crop_size is not None and (len(self.crop_size) != 2 or min(self.crop_size) < 1):
            raise TrainingError(f"--crop-size must be one or two positive integers, got {self.crop_size}")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise TrainingError(f"--mixed-precision must be no, bf16 or fp16, not {self.mixed_precision!r}")
        if self.eval_mode not in (None, "whole", "slide"):
            raise TrainingError(f"--eval-mode must be whole or slide, not {self.eval_mode!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (saved as ``settings.json``)."""
        out = dataclasses.asdict(self)
        if out["crop_size"] is not None:
            out["crop_size"] = list(out["crop_size"])
        return out


@dataclass(frozen=True)
class ResolvedRun:
    """A run with every setting decided: the flags over the recipe over the paper pair's options.

    Attributes:
        recipe: the recipe the run follows (its schedule, rules, pipeline and protocol).
        settings: the flags with every ``None`` filled in (encoder and decoder options in full).
        eval_protocol: the recipe's protocol with ``--eval-mode`` applied; ``None``: the dataset's own.
    """

    recipe: RecipeSpec
    settings: TrainSettings
    eval_protocol: EvalProtocol | None


def _recipes() -> dict[str, RecipeSpec]:
    from segcore import registry
    from segcore.train.recipes import core_recipes

    recipes = dict(core_recipes())
    recipes.update(registry.components("recipes"))
    return recipes


def find_recipe(settings: TrainSettings) -> RecipeSpec:
    """The named recipe, the CPU preset for ``synthetic-shapes``, or a plain AdamW/poly schedule from the flags."""
    recipes = _recipes()
    if settings.recipe:
        if settings.recipe not in recipes:
            raise TrainingError(f"unknown recipe {settings.recipe!r}; available: {', '.join(sorted(recipes))}")
        return recipes[settings.recipe]
    if settings.dataset in (None, "synthetic-shapes"):
        return recipes["synthetic-shapes-cpu"]
    return RecipeSpec(
        description="flags only (no recipe): AdamW, poly schedule, the dataset's own image size and eval protocol",
        dataset=settings.dataset,  # type: ignore[arg-type]
        iters=settings.iters or 1000,
        batch_size=settings.batch_size or 8,
        crop_size=settings.crop_size or (512, 512),
        lr=settings.lr or 6e-5,
        weight_decay=0.01,
        train_pipeline=TrainPipeline(scale=None),
        eval=None,
        eval_every=1000,
        checkpoint_every=1000,
        source="segcore defaults",
    )


def _recipe_model(recipe: RecipeSpec, encoder: str | None) -> ModelSettings:
    """The recipe's model for ``encoder``: its variant for that encoder, else the recipe's own model."""
    if encoder and encoder in recipe.model_variants:
        return recipe.model_variants[encoder]
    return recipe.model


def resolve_run(settings: TrainSettings) -> ResolvedRun:
    """Fill every unset field: flags win over the recipe, the recipe over the paper pair's options.

    Raises:
        TrainingError: when no encoder or decoder is named by the flags or the recipe.
        OptionsError: for an option the component does not have.
    """
    recipe = find_recipe(settings)
    model = _recipe_model(recipe, settings.encoder)
    s = dataclasses.replace(settings)
    s.dataset = s.dataset or recipe.dataset
    s.encoder = s.encoder or model.encoder
    s.decoder = s.decoder or model.decoder
    if not s.encoder or not s.decoder:
        raise TrainingError("give --encoder and --decoder (the recipe does not name a model)")
    encoder_opt = {**(model.encoder_options if s.encoder == model.encoder else {}), **s.encoder_opt}
    decoder_opt = {**(model.decoder_options if s.decoder == model.decoder else {}), **s.decoder_opt}
    encoder_opt, decoder_opt = with_pair_defaults(s.encoder, s.decoder, encoder_opt, decoder_opt)
    s.encoder_opt = resolved_options("encoders", s.encoder, encoder_opt)
    s.decoder_opt = resolved_options("decoders", s.decoder, decoder_opt)
    if s.pretrained_encoder is None:  # the recipe trains from a pretrained encoder, whichever one the run uses
        s.pretrained_encoder = model.pretrained_encoder
    s.iters = s.iters if s.iters is not None else recipe.iters
    s.batch_size = s.batch_size if s.batch_size is not None else recipe.batch_size
    s.crop_size = tuple(s.crop_size) if s.crop_size is not None else tuple(recipe.crop_size)  # type: ignore[assignment]
    s.lr = s.lr if s.lr is not None else recipe.lr
    s.weight_decay = s.weight_decay if s.weight_decay is not None else recipe.weight_decay
    s.clip_grad = s.clip_grad if s.clip_grad is not None else recipe.clip_grad
    s.eval_every = s.eval_every if s.eval_every is not None else min(recipe.eval_every, s.iters)
    s.checkpoint_every = s.checkpoint_every if s.checkpoint_every is not None else min(recipe.checkpoint_every, s.iters)
    protocol = recipe.eval
    if s.eval_mode and protocol is not None and s.eval_mode != protocol.mode:
        protocol = _with_mode(protocol, s.eval_mode, s.crop_size)  # type: ignore[arg-type]
    return ResolvedRun(recipe, s, protocol)


def _with_mode(protocol: EvalProtocol, mode: str, crop_size: tuple[int, int]) -> EvalProtocol:
    if mode == "slide" and protocol.crop_size is None:
        stride = tuple(max(1, c * 2 // 3) for c in crop_size)
        return protocol.replace(mode="slide", crop_size=tuple(crop_size), stride=stride)
    return protocol.replace(mode=mode)


def resolve_recipe(settings: TrainSettings) -> tuple[RecipeSpec, TrainSettings]:
    """``(recipe, settings with every None filled)``: :func:`resolve_run` without the protocol."""
    run = resolve_run(settings)
    return run.recipe, run.settings


def batch_split(batch_size: int, processes: int, grad_accum: int) -> int:
    """Images per device and micro-batch; raise unless ``batch_size`` splits evenly."""
    per_device, rest = divmod(batch_size, processes * grad_accum)
    if rest or per_device == 0:
        raise TrainingError(
            f"--batch-size {batch_size} is not a multiple of processes ({processes}) x --grad-accum ({grad_accum})"
        )
    return per_device


def plan(settings: TrainSettings) -> dict[str, Any]:
    """The fully resolved run as a JSON-ready dict: model, parameter groups, schedule, pipelines, batch split.

    Nothing is downloaded, no weights are created and nothing is written: the model is built on the meta device
    to count the parameters each rule applies to (when the dataset's classes are known).

    Example:
        >>> run = plan(TrainSettings(recipe="segnext-ade20k-160k", encoder="mscan-b"))  # doctest: +SKIP
        >>> run["model"]["decoder_options"]["channels"]  # doctest: +SKIP
        512
    """
    run = resolve_run(settings)
    s, recipe = run.settings, run.recipe
    assert s.batch_size is not None and s.crop_size is not None and s.lr is not None and s.weight_decay is not None
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    dataset = _dataset_summary(s)
    pipe = recipe.train_pipeline
    model = {
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
    protocol = run.eval_protocol
    return {
        "recipe": {"name": s.recipe, "description": recipe.description, "source": recipe.source},
        "dataset": dataset,
        "model": model,
        "optimizer": {
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
            "param_groups": _param_groups(s, recipe, dataset.get("num_classes")),
        },
        "schedule": {
            "iters": s.iters,
            "policy": "poly",
            "power": recipe.power,
            "min_lr": recipe.min_lr,
            "warmup": "linear",
            "warmup_iters": recipe.warmup_iters,
            "warmup_ratio": recipe.warmup_ratio,
        },
        "clip_grad": s.clip_grad,
        "train_pipeline": {"crop_size": list(s.crop_size), **pipe.to_dict()},
        "eval_protocol": protocol.to_dict() if protocol is not None else dataset.get("eval_protocol"),
        "eval_protocol_source": "recipe" if protocol is not None else "dataset",
        "batch": {
            "total": s.batch_size,
            "processes": processes,
            "grad_accum": s.grad_accum,
            "per_device": batch_split(s.batch_size, processes, s.grad_accum),
        },
        "eval_every": s.eval_every,
        "checkpoint_every": s.checkpoint_every,
        "mixed_precision": s.mixed_precision,
        "seed": s.seed,
        "ema_decay": s.ema_decay,
        "output_dir": s.output_dir,
    }


def _dataset_summary(s: TrainSettings) -> dict[str, Any]:
    """Classes and protocol of the training set, read from the dataset when it can be opened."""
    from segcore.components import build_dataset
    from segcore.registry import get_spec

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
    if num_classes is None:
        return None
    import torch

    from segcore.model import SegModel, SegModelConfig
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

"""The settings of a training run: one field per ``segcore train`` flag, resolved against a recipe.

:func:`resolve_run` fills every unset field from the recipe (named, or the CPU preset for ``synthetic-shapes``)
and the paper pair's options; with ``resume`` the run's own ``settings.json`` fills them instead, and a flag
that contradicts it is an error (:func:`resume_settings`). :func:`plan` describes the resolved run without
touching data or weights, which ``segcore train --dry-run`` prints so that a recipe can be checked against its
paper.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from segcore.config.options import COUNT, SIZE, bounds, check_fields
from segcore.config.settings import EvalProtocol, ModelSettings, TrainPipeline
from segcore.errors import OptionsError, SegcoreError, TrainingError
from segcore.models.components import resolved_options, with_pair_defaults
from segcore.plugins.specs import RecipeSpec
from segcore.train.run_folder import read_run_settings

__all__ = [
    "TrainSettings",
    "ResolvedRun",
    "resolve_recipe",
    "resolve_run",
    "resume_settings",
    "find_recipe",
    "component_names",
    "plan",
    "RESUME_MAY_CHANGE",
    "DEFAULT_KEEP_CHECKPOINTS",
]

logger = logging.getLogger("segcore.train")

# The newest checkpoints a run keeps (--keep-checkpoints); best/ and the final model are always kept. Three leave
# two older ones to fall back on when the newest is damaged, and bound the disk a long run takes (a 160k-iteration
# ADE20K run saves 10 by default).
DEFAULT_KEEP_CHECKPOINTS = 3

# Flags that may differ from the run's settings.json on --resume: they change how the rest of the run is
# scheduled, logged, evaluated or read, not what is being trained. --iters extends (or shortens) the run, and the
# poly schedule follows the new length from the checkpoint on. Every other flag must agree with the run or be
# left out.
RESUME_MAY_CHANGE = (
    "iters",
    "eval_every",
    "checkpoint_every",
    "keep_checkpoints",
    "log_every",
    "eval_mode",
    "max_eval_samples",
    "workers",
    "data_root",
    "tensorboard",
    "log_with",
    "tracker_project",
    "run_name",
)
# Flags about this invocation, not the run: never compared, never taken from settings.json.
_PER_INVOCATION = ("output_dir", "resume", "overwrite", "progress")
# Fields whose flag is not --<field with dashes>.
_FLAGS = {"ema_decay": "--ema"}


@dataclass
class TrainSettings:
    """One field per ``segcore train`` flag; ``None`` means "not given".

    A field not given takes the recipe's value (or the default named below), and on ``resume`` the run's own.

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
        pretrained_encoder: load the encoder's pretrained weights (``--pretrained-encoder``): ``True`` for its
            registered ImageNet weights, or where from (a registered encoder checkpoint, a Hub repo id, a folder).
        encoder_opt: encoder options (``--encoder-opt k=v``), over the recipe's and the paper pair's.
        decoder_opt: decoder options (``--decoder-opt k=v``), over the recipe's and the paper pair's.
        dataset_opt: dataset options (``--dataset-opt k=v``).
        mixed_precision: ``no``, ``bf16`` or ``fp16`` (``--mixed-precision``; fp16 needs a GPU); ``None``: ``no``.
        output_dir: run folder (``--output-dir``): created and marked by segcore; a folder that holds anything
            else is refused unless ``overwrite``.
        resume: continue the run in ``output_dir`` from its newest loadable checkpoint, with its own saved
            settings (``--resume``); flags that contradict them are an error, except :data:`RESUME_MAY_CHANGE`.
        overwrite: start a new run in a folder that is not empty (``--overwrite``): what an earlier run there wrote
            (listed in its manifest) is removed first; nothing else is removed or replaced, and a folder where a
            name the run writes is taken by anything else is refused.
        eval_every: validation period in iterations (``--eval-every``; 0 only at the end).
        checkpoint_every: checkpoint period in iterations (``--checkpoint-every``; 0 only at the end).
        keep_checkpoints: keep only the newest N checkpoints, 0 keeps all (``--keep-checkpoints``); ``None``:
            :data:`DEFAULT_KEEP_CHECKPOINTS`. An older checkpoint is deleted only once a newer one is complete.
        seed: seed of model init, data order and augmentation (``--seed``); ``None``: 0.
        grad_accum: gradient accumulation steps (``--grad-accum``); ``None``: 1.
        clip_grad: max gradient norm (``--clip-grad``); ``None`` takes the recipe's.
        ema_decay: keep an EMA of the weights with this decay; used for eval and the saved model (``--ema``).
        tensorboard: log to TensorBoard (``--tensorboard``): the same as ``tensorboard`` in ``log_with``.
        log_with: Accelerate trackers to log to (``--log-with tensorboard,wandb,...``): the resolved settings as the
            run config, loss, lr, throughput, every validation score (per class too) and, where the tracker takes
            images, the confusion matrix and prediction panels. Local files go under ``output_dir/logs``.
        tracker_project: the trackers' project name (``--tracker-project``; a TensorBoard sub-folder of ``logs``, so
            one path component); ``None``: ``segcore``.
        run_name: the run's name in the trackers that name runs (``--run-name``; one path component); ``None``: the
            folder's name.
        log_every: write a ``metrics.jsonl`` row every this many iterations (``--log-every``); ``None``: 10.
        eval_mode: ``whole`` or ``slide`` (``--eval-mode``); ``None`` takes the recipe's protocol.
        max_eval_samples: evaluate on the first N validation images only (``--max-eval-samples``).
        workers: DataLoader worker processes for training samples (``--workers``); ``None``: none on CPU
            (they would compete with the model for the cores), up to 8 on a GPU.
        progress: show the tqdm progress bar.
        init_from: fine-tune the model this names (``--init-from``): a folder or finished training run, a Hub
            repo id or a registered checkpoint name. Its encoder, decoder, options, normalisation, eval protocol
            and weights are the run's; the classifier is re-initialised when the dataset's class count differs.
    """

    encoder: str | None = None
    decoder: str | None = None
    dataset: str | None = None
    data_root: str | None = None
    recipe: str | None = None
    iters: int | None = field(default=None, metadata=COUNT)
    batch_size: int | None = field(default=None, metadata=COUNT)
    crop_size: tuple[int, int] | None = field(default=None, metadata=SIZE)
    lr: float | None = None
    weight_decay: float | None = None
    pretrained_encoder: bool | str | None = None
    encoder_opt: dict[str, Any] = field(default_factory=dict)
    decoder_opt: dict[str, Any] = field(default_factory=dict)
    dataset_opt: dict[str, Any] = field(default_factory=dict)
    mixed_precision: Literal["no", "bf16", "fp16"] | None = None
    output_dir: str = "runs/segcore"
    resume: bool = False
    overwrite: bool = False
    eval_every: int | None = field(default=None, metadata=COUNT)
    checkpoint_every: int | None = field(default=None, metadata=COUNT)
    keep_checkpoints: int | None = field(default=None, metadata=COUNT)
    seed: int | None = field(default=None, metadata=bounds(0, 2**32 - 1))
    grad_accum: int | None = field(default=None, metadata=COUNT)
    clip_grad: float | None = None
    ema_decay: float | None = None
    tensorboard: bool = False
    log_with: list[str] | None = None
    tracker_project: str | None = None
    run_name: str | None = None
    log_every: int | None = field(default=None, metadata=COUNT)
    eval_mode: Literal["whole", "slide"] | None = None
    max_eval_samples: int | None = field(default=None, metadata=COUNT)
    workers: int | None = field(default=None, metadata=COUNT)
    progress: bool = True
    init_from: str | None = None

    def __post_init__(self) -> None:
        """Reject values of the wrong type or that make no sense, naming the flag and the valid range."""
        try:
            check_fields(self)  # types and bounds: a settings.json read on --resume may have been edited
        except OptionsError as err:
            raise TrainingError(f"invalid setting {err}") from err
        ranges = {
            "--iters": (self.iters, lambda v: v >= 1, ">= 1"),
            "--batch-size": (self.batch_size, lambda v: v >= 1, ">= 1"),
            "--lr": (self.lr, lambda v: v > 0, "> 0"),
            "--weight-decay": (self.weight_decay, lambda v: v >= 0, ">= 0"),
            "--eval-every": (self.eval_every, lambda v: v >= 0, ">= 0"),
            "--checkpoint-every": (self.checkpoint_every, lambda v: v >= 0, ">= 0"),
            "--keep-checkpoints": (self.keep_checkpoints, lambda v: v >= 0, ">= 0"),
            "--seed": (self.seed, lambda v: 0 <= v < 2**32, "in [0, 4294967295]"),
            "--grad-accum": (self.grad_accum, lambda v: v >= 1, ">= 1"),
            "--clip-grad": (self.clip_grad, lambda v: v > 0, "> 0"),
            "--ema": (self.ema_decay, lambda v: 0 < v < 1, "in (0, 1)"),
            "--log-every": (self.log_every, lambda v: v >= 1, ">= 1"),
            "--max-eval-samples": (self.max_eval_samples, lambda v: v >= 1, ">= 1"),
            "--workers": (self.workers, lambda v: v >= 0, ">= 0"),
        }
        for flag, (value, ok, text) in ranges.items():
            if value is not None and (not ok(value) or (isinstance(value, float) and not math.isfinite(value))):
                raise TrainingError(f"{flag} must be {text}, got {value}")
        if not str(self.output_dir).strip():
            raise TrainingError("--output-dir must not be empty (an unset shell variable?)")
        if self.resume and self.overwrite:
            raise TrainingError("--resume continues the run in --output-dir and --overwrite replaces it: give one")
        if self.crop_size is not None and (len(self.crop_size) != 2 or min(self.crop_size) < 1):
            raise TrainingError(f"--crop-size must be one or two positive integers, got {self.crop_size}")
        if self.mixed_precision not in (None, "no", "bf16", "fp16"):
            raise TrainingError(f"--mixed-precision must be no, bf16 or fp16, not {self.mixed_precision!r}")
        if self.log_with is not None and (not self.log_with or not all(str(n).strip() for n in self.log_with)):
            raise TrainingError(f"--log-with must name one or more trackers, got {self.log_with}")
        if self.eval_mode not in (None, "whole", "slide"):
            raise TrainingError(f"--eval-mode must be whole or slide, not {self.eval_mode!r}")
        for flag, name in (("--tracker-project", self.tracker_project), ("--run-name", self.run_name)):
            problem = None if name is None else _path_component_problem(name)
            if problem:
                raise TrainingError(f"{flag} must be a single name (trackers name folders after it), {problem}")
        if self.init_from is not None and not str(self.init_from).strip():
            raise TrainingError("--init-from must name a model folder, a Hub repo id or a registered checkpoint")
        if isinstance(self.pretrained_encoder, str) and not self.pretrained_encoder.strip():
            raise TrainingError("--pretrained-encoder SOURCE must name a checkpoint, a Hub repo id or a folder")
        if self.init_from is not None and self.pretrained_encoder:
            raise TrainingError(
                "--pretrained-encoder and --init-from both say where the encoder's weights come from: give one"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (saved as ``settings.json``)."""
        out = dataclasses.asdict(self)
        if out["crop_size"] is not None:
            out["crop_size"] = list(out["crop_size"])
        return out


def _path_component_problem(name: Any) -> str | None:
    """What keeps ``name`` from being a single path component (``--tracker-project``, ``--run-name``), or ``None``."""
    if not isinstance(name, str) or not name.strip():
        return f"not empty: got {name!r}"
    if "/" in name or "\\" in name or name in (".", ".."):
        return f"not a path: got {name!r} (no /, \\, . or ..)"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return f"without control characters: got {name!r}"
    return None


@dataclass(frozen=True)
class ResolvedRun:
    """A run with every setting decided: the flags over the recipe over the paper pair's options.

    Attributes:
        recipe: the recipe the run follows (its schedule, rules, pipeline and protocol).
        settings: the flags with every ``None`` filled in (encoder and decoder options in full).
        eval_protocol: the recipe's protocol (or ``init_from``'s) with ``--eval-mode`` applied; ``None``: the
            dataset's own.
        init: the config of the ``init_from`` model; ``None`` without one, or in a dry run for a Hub repo id (not
            fetched).
    """

    recipe: RecipeSpec
    settings: TrainSettings
    eval_protocol: EvalProtocol | None
    init: Any = None


def _recipes() -> dict[str, RecipeSpec]:
    from segcore.plugins import registry
    from segcore.plugins.recipes import core_recipes

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

    With ``settings.resume`` the run's own ``settings.json`` takes the place of the recipe (:func:`resume_settings`).

    Raises:
        TrainingError: when no encoder or decoder is named by the flags or the recipe, or on ``resume`` when the
            folder holds no run or a flag contradicts it.
        OptionsError: for an option the component does not have.
    """
    return _resolve(settings, fetch=True, data=True)


def component_names(settings: TrainSettings) -> tuple[str | None, str | None]:
    """The encoder and decoder a run of ``settings`` uses (what ``--encoder-opt`` is typed after), read cheaply.

    No data is opened and nothing is downloaded: with ``init_from`` a Hub repo id gives ``(None, None)`` unless
    the flags name the model.
    """
    run = _resolve(settings, fetch=False, data=False)
    return run.settings.encoder, run.settings.decoder


def _resolve(settings: TrainSettings, fetch: bool, data: bool) -> ResolvedRun:
    """:func:`resolve_run`; ``fetch``: download a Hub ``init_from`` for its config; ``data``: open the dataset."""
    if settings.resume:
        settings = resume_settings(settings, read_run_settings(settings.output_dir))
    recipe = find_recipe(settings)
    init = _init_config(settings, fetch)
    model = _init_model(settings, init) if init is not None else _recipe_model(recipe, settings.encoder)
    s = dataclasses.replace(settings)
    s.dataset = s.dataset or recipe.dataset
    s.encoder = s.encoder or model.encoder
    s.decoder = s.decoder or model.decoder
    if s.init_from is not None and init is None:  # a dry run with a Hub model: its config is not fetched
        s.encoder, s.decoder = settings.encoder, settings.decoder
        s.pretrained_encoder = False
    elif not s.encoder or not s.decoder:
        raise TrainingError("give --encoder and --decoder (the recipe does not name a model)")
    else:
        encoder_opt = {**(model.encoder_options if s.encoder == model.encoder else {}), **s.encoder_opt}
        decoder_opt = {**(model.decoder_options if s.decoder == model.decoder else {}), **s.decoder_opt}
        if init is None:  # the paper pair's options; a model to fine-tune already records all of its own
            encoder_opt, decoder_opt = with_pair_defaults(s.encoder, s.decoder, encoder_opt, decoder_opt)
        s.encoder_opt = resolved_options("encoders", s.encoder, encoder_opt)
        s.decoder_opt = resolved_options("decoders", s.decoder, decoder_opt)
    if s.pretrained_encoder is None:  # the recipe trains from a pretrained encoder, whichever one the run uses
        s.pretrained_encoder = model.pretrained_encoder
    s.iters = s.iters if s.iters is not None else recipe.iters
    s.batch_size = s.batch_size if s.batch_size is not None else recipe.batch_size
    if s.crop_size is None and data:
        s.crop_size = _data_crop_size(s)
    s.crop_size = tuple(s.crop_size) if s.crop_size is not None else tuple(recipe.crop_size)  # type: ignore[assignment]
    s.lr = s.lr if s.lr is not None else recipe.lr
    s.weight_decay = s.weight_decay if s.weight_decay is not None else recipe.weight_decay
    s.clip_grad = s.clip_grad if s.clip_grad is not None else recipe.clip_grad
    s.eval_every = s.eval_every if s.eval_every is not None else min(recipe.eval_every, s.iters)
    s.mixed_precision = s.mixed_precision or "no"
    s.seed = s.seed if s.seed is not None else 0
    s.grad_accum = s.grad_accum if s.grad_accum is not None else 1
    s.log_every = s.log_every if s.log_every is not None else 10
    s.keep_checkpoints = s.keep_checkpoints if s.keep_checkpoints is not None else DEFAULT_KEEP_CHECKPOINTS
    s.checkpoint_every = s.checkpoint_every if s.checkpoint_every is not None else min(recipe.checkpoint_every, s.iters)
    protocol = recipe.eval
    if init is not None:
        # The weights were trained on inputs normalised this way: a recipe's schedule applies, not its mean/std.
        pipe = recipe.train_pipeline.replace(mean=tuple(init.mean), std=tuple(init.std))
        recipe = dataclasses.replace(recipe, train_pipeline=pipe)
        data_protocol = any(key.startswith("eval") for key in s.dataset_opt)  # --dataset-opt eval_mode=... etc.
        if not s.recipe and init.eval and not data_protocol:
            protocol = EvalProtocol.from_dict(init.eval)
    if s.eval_mode and protocol is not None and s.eval_mode != protocol.mode:
        protocol = _with_mode(protocol, s.eval_mode, s.crop_size)  # type: ignore[arg-type]
    return ResolvedRun(recipe, s, protocol, init)


def _init_config(settings: TrainSettings, fetch: bool) -> Any:
    """The config of ``settings.init_from`` (``None`` without one, or when it is on the Hub and not ``fetch``)."""
    if settings.init_from is None:
        return None
    from segcore.train.init_from import init_config

    try:
        return init_config(settings.init_from, fetch=fetch)
    except TrainingError:
        raise
    except SegcoreError as err:
        raise TrainingError(f"--init-from {settings.init_from}: {err}") from err


def _init_model(settings: TrainSettings, init: Any) -> ModelSettings:
    """The run's model is the ``init_from`` model's: an ``--encoder``/``--decoder`` that names another is refused."""
    for flag, given, theirs in (
        ("--encoder", settings.encoder, init.encoder),
        ("--decoder", settings.decoder, init.decoder),
    ):
        if given and given != theirs:
            raise TrainingError(
                f"{flag} {given} contradicts --init-from {settings.init_from}, whose {flag[2:]} is {theirs}: the "
                f"model and its options come from --init-from, so leave {flag} out (or give {theirs})"
            )
    return ModelSettings(
        encoder=init.encoder,
        decoder=init.decoder,
        encoder_options=dict(init.encoder_options),
        decoder_options=dict(init.decoder_options),
        pretrained_encoder=False,  # every weight comes from the model
    )


def _data_crop_size(s: TrainSettings) -> tuple[int, int] | None:
    """The training crop the dataset proposes when no recipe gives one, or ``None``.

    Without a recipe the preset crop is 512 for any data; a dataset that knows its own (``folder`` and ``hf:``
    from their first image or ``--dataset-opt crop_size=``, the paper datasets from their configs) says so in
    ``crop_size``. A recipe keeps its paper's crop, and ``synthetic-shapes`` its CPU preset's.
    """
    if s.recipe or not s.dataset or s.dataset == "synthetic-shapes":
        return None
    from segcore.models.components import build_dataset

    try:
        dataset = build_dataset(s.dataset, root=s.data_root, split="train", **s.dataset_opt)
    except Exception:  # noqa: BLE001 - the trainer (or --dry-run) reports data it cannot open, in its own words
        return None
    crop = getattr(dataset, "crop_size", None)
    return (int(crop[0]), int(crop[1])) if crop else None


def _flag(name: str) -> str:
    return _FLAGS.get(name, "--" + name.replace("_", "-"))


def _plain(value: Any) -> Any:
    """``value`` as JSON has it (tuples become lists), so that flags compare equal to ``settings.json``."""
    return json.loads(json.dumps(value))


def resume_settings(given: TrainSettings, saved: dict[str, Any]) -> TrainSettings:
    """The settings of a resumed run: the run's ``saved`` settings, with the flags in :data:`RESUME_MAY_CHANGE`.

    A flag left out (``None``, no options) takes the run's value. Any other flag must agree with the run: an
    encoder option given is compared with the run's value of that option alone.

    Raises:
        TrainingError: naming every flag that contradicts the run, with the run's value.
    """
    names = {f.name for f in dataclasses.fields(TrainSettings)}
    unknown = sorted(set(saved) - names)
    if unknown:
        raise TrainingError(
            f"cannot resume {given.output_dir}: its settings.json has fields this segcore does not know ({unknown}); "
            "it was written by another version"
        )
    merged: dict[str, Any] = {}
    differences = []
    for name in sorted(names):
        value, run_value = getattr(given, name), saved.get(name)
        if name in _PER_INVOCATION:
            merged[name] = value
        elif value is None or value == {} or (value is False and name == "tensorboard"):
            merged[name] = run_value  # left out: the run's own
        elif name in RESUME_MAY_CHANGE:
            merged[name] = value
        elif isinstance(value, dict):
            run_options = run_value or {}
            for key, option in value.items():
                if key not in run_options or _plain(option) != _plain(run_options[key]):
                    had = f"{key}={_plain(run_options[key])}" if key in run_options else f"no {key}"
                    differences.append(f"{_flag(name)} {key}={_plain(option)} (the run has {had})")
            merged[name] = run_value
        else:
            if _plain(value) != _plain(run_value):
                differences.append(f"{_flag(name)} {_plain(value)} (the run has {_plain(run_value)})")
            merged[name] = run_value
    if differences:
        may = ", ".join(_flag(n) for n in RESUME_MAY_CHANGE)
        raise TrainingError(
            f"cannot resume {given.output_dir}: {'; '.join(differences)}. A resumed run keeps its own settings: "
            f"leave these flags out (only {may} may change), or train a new run in another --output-dir"
        )
    try:
        return TrainSettings(**merged)
    except TrainingError as err:
        raise TrainingError(
            f"cannot resume {given.output_dir}: its settings.json holds an {err} (it was edited; restore it)"
        ) from err


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
    to count the parameters each rule applies to (when the dataset's classes are known). With ``init_from`` only a
    local config is read (a folder's ``config.json``, a registered checkpoint's spec); a Hub model is said to be
    fetched when training starts.

    Example:
        >>> run = plan(TrainSettings(recipe="segnext-ade20k-160k", encoder="mscan-b"))  # doctest: +SKIP
        >>> run["model"]["decoder_options"]["channels"]  # doctest: +SKIP
        512
    """
    run = _resolve(settings, fetch=False, data=True)
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
        "init_from": _init_summary(s, run.init, dataset.get("num_classes")),
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
        "eval_protocol_source": _protocol_source(run, protocol),
        "batch": {
            "total": s.batch_size,
            "processes": processes,
            "grad_accum": s.grad_accum,
            "per_device": batch_split(s.batch_size, processes, s.grad_accum),
        },
        "eval_every": s.eval_every,
        "checkpoint_every": s.checkpoint_every,
        "keep_checkpoints": s.keep_checkpoints,
        "mixed_precision": s.mixed_precision,
        "seed": s.seed,
        "ema_decay": s.ema_decay,
        "output_dir": s.output_dir,
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

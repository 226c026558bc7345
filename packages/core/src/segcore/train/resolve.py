"""Resolving a run: the flags over the recipe over the paper pair's options, in one pass.

:func:`resolve_run` fills every field of :class:`~segcore.train.schema.TrainSettings` left unset, in this order:
the run's own ``settings.json`` on ``resume`` (:func:`resume_settings`), else the recipe (named, or the CPU preset
for ``synthetic-shapes``) < the dataset (its crop) < ``init_from`` (its model, normalisation and protocol) < the
flags; what is still unset takes its declared fallback.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segcore.config.fields import declared, fallbacks, resume_rule
from segcore.config.settings import EvalProtocol, ModelSettings, TrainPipeline
from segcore.errors import SegcoreError, TrainingError
from segcore.models.components import resolved_options, with_pair_defaults, with_skip_bad
from segcore.plugins.specs import RecipeSpec
from segcore.train.run_folder import read_run_settings
from segcore.train.schema import TrainSettings

__all__ = [
    "ResolvedRun",
    "resolve_recipe",
    "resolve_run",
    "resume_settings",
    "find_recipe",
    "typed_options",
    "batch_split",
    "flag_of",
    "resolve_for_plan",
    "plain",
]


def flag_of(name: str, cls: type = TrainSettings) -> str:
    """The command-line flag of settings field ``name`` (``ema_decay`` -> ``--ema``)."""
    return next(d.flag for d in declared(cls) if d.name == name)


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
        init_folder: where the ``init_from`` model's files are (a folder, or the Hub repo downloaded once during
            resolution), so the trainer loads its weights from there without fetching again; ``None`` for a
            registered checkpoint or without ``init_from``.
        train_dataset: the training set, when resolution opened it (to read its crop), so it is opened once.
    """

    recipe: RecipeSpec
    settings: TrainSettings
    eval_protocol: EvalProtocol | None
    init: Any = None
    init_folder: Path | None = None
    train_dataset: Any = None


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


def resolve_for_plan(settings: TrainSettings) -> ResolvedRun:
    """:func:`resolve_run` for a dry run: the dataset is read for its crop, but a Hub ``init_from`` is not fetched."""
    return _resolve(settings, fetch=False, data=True)


def typed_options(kind: str, name: str | None, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with every text value (``--encoder-opt k=v``) typed after component ``name``'s options class.

    Values that are not text (the Python API's, a saved run's) are left as they are; without a component (a dry run
    of a Hub ``init_from``) the text stays.

    Raises:
        OptionsError: an option the component does not have, naming the valid ones, or text that is no value of it.
    """
    if not name or not any(isinstance(v, str) for v in options.values()):
        return options
    from segcore.config.options import coerce_option
    from segcore.plugins.registry import get_spec

    options_cls = get_spec(kind, name).load_options()
    return {
        k: coerce_option(options_cls, k, v, component=name) if isinstance(v, str) else v for k, v in options.items()
    }


def _resolve(settings: TrainSettings, fetch: bool, data: bool) -> ResolvedRun:
    """:func:`resolve_run`; ``fetch``: download a Hub ``init_from`` for its config; ``data``: open the dataset."""
    if settings.resume:
        settings = resume_settings(settings, read_run_settings(settings.output_dir))
    recipe = find_recipe(settings)
    found = _init_model_found(settings, fetch)
    init = found.config if found is not None else None
    model = _init_model(settings, init) if init is not None else _recipe_model(recipe, settings.encoder)
    s = dataclasses.replace(settings)
    s.dataset = s.dataset or recipe.dataset
    if s.skip_bad:
        s.dataset_opt = with_skip_bad(s.dataset, s.dataset_opt)
    s.encoder = s.encoder or model.encoder
    s.decoder = s.decoder or model.decoder
    if s.init_from is not None and init is None:  # a dry run with a Hub model: its config is not fetched
        s.encoder, s.decoder = settings.encoder, settings.decoder
        s.pretrained_encoder = False
    elif not s.encoder or not s.decoder:
        raise TrainingError("give --encoder and --decoder (the recipe does not name a model)")
    else:
        s.encoder_opt = typed_options("encoders", s.encoder, s.encoder_opt)
        s.decoder_opt = typed_options("decoders", s.decoder, s.decoder_opt)
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
    opened = None
    if s.crop_size is None and data:
        s.crop_size, opened = _data_crop_size(s)
    s.crop_size = tuple(s.crop_size) if s.crop_size is not None else tuple(recipe.crop_size)  # type: ignore[assignment]
    s.lr = s.lr if s.lr is not None else recipe.lr
    s.weight_decay = s.weight_decay if s.weight_decay is not None else recipe.weight_decay
    s.clip_grad = s.clip_grad if s.clip_grad is not None else recipe.clip_grad
    s.eval_every = s.eval_every if s.eval_every is not None else min(recipe.eval_every, s.iters)
    s.checkpoint_every = s.checkpoint_every if s.checkpoint_every is not None else min(recipe.checkpoint_every, s.iters)
    for name, value in fallbacks(type(s)).items():  # what neither the flags nor the recipe set
        if getattr(s, name) is None:
            setattr(s, name, value)
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
    return ResolvedRun(recipe, s, protocol, init, found.folder if found is not None else None, opened)


def _init_model_found(settings: TrainSettings, fetch: bool) -> Any:
    """The ``init_from`` model's config and folder (``None`` without one, or on the Hub and not ``fetch``)."""
    if settings.init_from is None:
        return None
    from segcore.train.init_from import find_init_model

    try:
        return find_init_model(settings.init_from, fetch=fetch)
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


def _data_crop_size(s: TrainSettings) -> tuple[tuple[int, int] | None, Any]:
    """``(the training crop the dataset proposes, the opened dataset)`` when no recipe gives one, else ``(None, None)``.

    Without a recipe the preset crop is 512 for any data; a dataset that knows its own (``folder`` and ``hf:``
    from their first image or ``--dataset-opt crop_size=``, the paper datasets from their configs) says so in
    ``crop_size``. A recipe keeps its paper's crop, and ``synthetic-shapes`` its CPU preset's. The dataset is
    returned so that the trainer does not open it again.
    """
    if s.recipe or not s.dataset or s.dataset == "synthetic-shapes":
        return None, None
    from segcore.models.components import build_dataset

    try:
        dataset = build_dataset(s.dataset, root=s.data_root, split="train", **s.dataset_opt)
    except Exception:  # noqa: BLE001 - the trainer (or --dry-run) reports data it cannot open, in its own words
        return None, None
    crop = getattr(dataset, "crop_size", None)
    return ((int(crop[0]), int(crop[1])) if crop else None), dataset


def plain(value: Any) -> Any:
    """``value`` as JSON has it (tuples become lists), so that flags compare equal to ``settings.json``."""
    return json.loads(json.dumps(value))


def resume_settings(given: TrainSettings, saved: dict[str, Any]) -> TrainSettings:
    """The settings of a resumed run: the run's ``saved`` settings, with the flags declared ``may-change``.

    A flag left out (``None``, no options) takes the run's value. Any other flag must agree with the run: an
    encoder option given is compared with the run's value of that option alone.

    Raises:
        TrainingError: naming every flag that contradicts the run, with the run's value.
    """
    cls = type(given)
    given = dataclasses.replace(
        given,
        encoder_opt=typed_options("encoders", given.encoder or saved.get("encoder"), given.encoder_opt),
        decoder_opt=typed_options("decoders", given.decoder or saved.get("decoder"), given.decoder_opt),
    )
    names = {f.name for f in dataclasses.fields(cls)}
    may_change, per_invocation = resume_rule(cls, "may-change"), resume_rule(cls, "invocation")
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
        if name in per_invocation:
            merged[name] = value
        elif value is None or value == {} or (value is False and name == "tensorboard"):
            merged[name] = run_value  # left out: the run's own
        elif name in may_change:
            merged[name] = value
        elif isinstance(value, dict):
            run_options = run_value or {}
            for key, option in value.items():
                if key not in run_options or plain(option) != plain(run_options[key]):
                    had = f"{key}={plain(run_options[key])}" if key in run_options else f"no {key}"
                    differences.append(f"{flag_of(name, cls)} {key}={plain(option)} (the run has {had})")
            merged[name] = run_value
        else:
            if plain(value) != plain(run_value):
                differences.append(f"{flag_of(name, cls)} {plain(value)} (the run has {plain(run_value)})")
            merged[name] = run_value
    if differences:
        may = ", ".join(flag_of(n, cls) for n in may_change)
        raise TrainingError(
            f"cannot resume {given.output_dir}: {'; '.join(differences)}. A resumed run keeps its own settings: "
            f"leave these flags out (only {may} may change), or train a new run in another --output-dir"
        )
    try:
        return cls(**merged)
    except TrainingError as err:
        raise TrainingError(
            f"cannot resume {given.output_dir}: its settings.json holds an invalid setting "
            f"{str(err).removeprefix('invalid setting ')} (it was edited; restore it)"
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

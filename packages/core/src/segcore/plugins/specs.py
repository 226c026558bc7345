"""Specs that plugins register, and :class:`FeatureInfo`. Torch-free, so listing components stays fast.

A spec may name its factory and options class as ``"module:attribute"`` strings: they are imported on
first use, so ``segcore list`` does not import torch or model code.
"""

from __future__ import annotations

import dataclasses
import importlib
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from segcore.config.settings import EvalProtocol, ModelSettings, TrainPipeline
from segcore.errors import OptionsError, SegcoreError

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "FeatureInfo",
    "ComponentSpec",
    "CheckpointSpec",
    "ConverterSpec",
    "RecipeSpec",
    "PairSpec",
    "ParamGroupRule",
    "DecoderInput",
    "PYRAMID_STRIDES",
    "check_strides",
    "resolve",
]

# Deprecated: what ``ComponentSpec.input_kind`` took before decoders declared ``in_strides``.
DecoderInput = Literal["any", "pyramid"]

# The strides of a hierarchical encoder's four stages: what the pyramid decoders (UPerNet, SegFormer's MLP,
# LightHam, SegDeformer) index into, and what the deprecated ``input_kind="pyramid"`` stands for.
PYRAMID_STRIDES: tuple[int, ...] = (4, 8, 16, 32)


def check_strides(strides: Sequence[int] | None, what: str) -> tuple[int, ...] | None:
    """Return a decoder's declared input strides as a tuple, or ``None`` (any list of maps).

    Args:
        strides: the declaration: positive integers in strictly increasing order, finest first.
        what: who declares it, for the error message (``"decoder 'ham'"``, ``"LightHamHead.in_strides"``).

    Raises:
        SegcoreError: the declaration is empty, holds something other than positive integers or is not
            strictly increasing.
    """
    if strides is None:
        return None
    if isinstance(strides, (str, bytes)) or not isinstance(strides, Sequence):
        raise SegcoreError(f"{what}: in_strides must be a tuple of strides such as (4, 8, 16, 32), got {strides!r}")
    values = tuple(strides)
    # bool is an int subclass: (True, 2) is a typo, not stride 1.
    if not values or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in values):
        raise SegcoreError(
            f"{what}: in_strides must be positive integers such as (4, 8, 16, 32) (or None for any list of maps), "
            f"got {strides!r}"
        )
    if any(a >= b for a, b in zip(values, values[1:])):
        raise SegcoreError(
            f"{what}: in_strides must be strictly increasing, one entry per map the decoder reads, finest first "
            f"(e.g. (4, 8, 16, 32)), got {strides!r}"
        )
    return values


def resolve(ref: Any) -> Any:
    """Import ``"package.module:attribute"`` references; anything else is returned unchanged."""
    if isinstance(ref, str) and ":" in ref:
        module, _, attr = ref.partition(":")
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = obj[part] if isinstance(obj, Mapping) else getattr(obj, part)
        return obj
    return ref


@dataclass(frozen=True)
class FeatureInfo:
    """One feature map an encoder returns: its channel count and its stride relative to the input."""

    channels: int
    stride: int


@dataclass(frozen=True)
class ComponentSpec:
    """A registered component: how to build it and what it is.

    Attributes:
        factory: the callable (or ``"module:function"``): encoder ``factory(pretrained=False, **options)``;
            decoder ``factory(in_features, num_classes, **options)``; loss ``factory(num_classes,
            ignore_index=255, **options)``; dataset ``factory(root, split, **options)``. For a namespace (a
            name ending in ``:``, like ``timm:``) the factory takes the part after the colon as its first argument.
        description: one line shown by ``segcore list``.
        source: the paper or URL it comes from.
        options: the frozen dataclass of its options (or ``"module:Class"``); when given, unknown keys are
            rejected with the list of valid ones before the factory is called.
        defaults: the option values of this variant where they differ from the dataclass defaults (a mapping or
            dataclass instance, or ``"module:attr"``, e.g. an entry of the family's variant table), so that
            ``segcore train --dry-run`` shows the options the factory really uses.
        classes: datasets only: the class names (or ``"module:attr"``), known without opening the data, so that
            ``segcore train --dry-run`` can size the classifier of a dataset that is not on this machine.
        input_kind: deprecated, kept so that plugins written before ``in_strides`` still load: ``"pyramid"``
            means ``in_strides=PYRAMID_STRIDES``, ``"any"`` means ``in_strides=None``; it warns
            (``DeprecationWarning``) and cannot be combined with ``in_strides``.
        default_loss: decoders only: the loss name and options that train it.
        in_strides: decoders only: the strides of the maps the decoder reads, finest first, one map per entry
            (``(4, 8, 16, 32)`` for the pyramid heads), or ``None`` when it accepts whatever list of maps the
            encoder returns. :class:`~segcore.SegModel` gives the decoder exactly these levels (see
            :mod:`segcore.models.adapters`). Positive and strictly increasing, else :class:`~segcore.SegcoreError`.
    """

    factory: Callable[..., Any] | str
    description: str
    source: str = ""
    options: type | str | None = None
    defaults: Mapping[str, Any] | Any | str = field(default_factory=dict)
    classes: tuple[str, ...] | str = ()
    input_kind: DecoderInput | None = None
    default_loss: str = "ce"
    default_loss_options: Mapping[str, Any] = field(default_factory=dict)
    # Last, so that the fields before it keep their positions.
    in_strides: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        strides = self.in_strides
        if self.input_kind is not None:
            if self.input_kind not in ("any", "pyramid"):
                raise SegcoreError(f"input_kind must be 'any' or 'pyramid', got {self.input_kind!r}; use in_strides")
            if strides is not None:
                raise SegcoreError("give in_strides only: input_kind is its deprecated predecessor")
            # stacklevel 3: the plugin line that builds the spec (through the dataclass __init__).
            warnings.warn(
                f"ComponentSpec(input_kind={self.input_kind!r}) is deprecated; declare "
                + ("in_strides=(4, 8, 16, 32)" if self.input_kind == "pyramid" else "nothing (in_strides=None)"),
                DeprecationWarning,
                stacklevel=3,
            )
            strides = PYRAMID_STRIDES if self.input_kind == "pyramid" else None
        object.__setattr__(self, "in_strides", check_strides(strides, "ComponentSpec"))

    def load_factory(self) -> Callable[..., Any]:
        """Return the factory, importing it if it was given as ``"module:attr"``."""
        return resolve(self.factory)

    def load_options(self) -> type | None:
        """Return the options dataclass, importing it if it was given as ``"module:attr"``."""
        return resolve(self.options)

    def load_classes(self) -> tuple[str, ...]:
        """Return the class names of a dataset spec (empty when the spec does not give them)."""
        return tuple(resolve(self.classes))

    def load_defaults(self) -> dict[str, Any]:
        """Return this variant's option values as a dict (see ``defaults``)."""
        value = resolve(self.defaults)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return dict(value)


@dataclass(frozen=True)
class CheckpointSpec:
    """A named pretrained checkpoint, hosted on the Hugging Face Hub and traceable to its official source.

    Attributes:
        repo_id: Hub repository holding a ``from_pretrained`` folder (``config.json`` + ``model.safetensors``).
        revision: pinned commit hash (or branch) of ``repo_id``.
        description: one line: what the model is and what it scores.
        kind: ``"model"`` (a full SegModel) or ``"encoder"`` (ImageNet weights for an encoder).
        encoder: encoder name the weights belong to.
        decoder: decoder name (``kind="model"`` only).
        num_classes: classes of the head (``kind="model"`` only).
        dataset: the dataset it was trained on.
        metric: the expected result, e.g. ``"mIoU 41.1 (ss) / 42.2 (ms+flip)"``.
        eval_protocol: the paper's single-scale test pipeline (``kind="model"``): the converted model stores it
            as ``config.eval``, so ``segcore eval`` runs it by default. A mapping is parsed strictly.
        official_url: where the official file lives.
        official_filename: its file name.
        sha256: its SHA-256 (or the 8-digit prefix OpenMMLab puts in the name), when known.
        format: converter format of the official file (``"mmseg"``, ``"mscan-imagenet"``, ...).
        manual_step: for sources that need a browser: the exact step a user must take.
        encoder_options: encoder options the official model uses.
        decoder_options: decoder options the official model uses.
        model_config: further :class:`~segcore.SegModelConfig` fields of the official model (``mean`` and
            ``std`` when it was not trained with ImageNet statistics, ``class_names``, ``palette``, ``eval``).
        license: the weights' licence as a Hub licence id (``"apache-2.0"``, or ``"other"`` with
            ``license_name``); empty when the source states none. The model card carries it.
        license_name: the licence's name when ``license`` is ``"other"`` (``"adelaidet-non-commercial"``).
        license_note: one sentence for the card on what the licence allows (``"non-commercial use only"``).
    """

    repo_id: str
    revision: str
    description: str
    kind: Literal["model", "encoder"] = "model"
    encoder: str = ""
    decoder: str = ""
    num_classes: int = 0
    dataset: str = ""
    metric: str = ""
    eval_protocol: EvalProtocol | None = None
    official_url: str = ""
    official_filename: str = ""
    sha256: str = ""
    format: str = "mmseg"
    manual_step: str = ""
    encoder_options: Mapping[str, Any] = field(default_factory=dict)
    decoder_options: Mapping[str, Any] = field(default_factory=dict)
    model_config: Mapping[str, Any] = field(default_factory=dict)
    license: str = ""
    license_name: str = ""
    license_note: str = ""

    def __post_init__(self) -> None:
        """Parse the eval protocol strictly; a model checkpoint must carry one."""
        if self.eval_protocol is not None:
            protocol = EvalProtocol.from_dict(self.eval_protocol, f"checkpoint {self.repo_id} eval_protocol")
            object.__setattr__(self, "eval_protocol", protocol)
        if self.kind not in ("model", "encoder"):
            raise OptionsError(f"checkpoint {self.repo_id}: kind must be 'model' or 'encoder', not {self.kind!r}")
        if self.kind == "model" and self.eval_protocol is None:
            raise OptionsError(f"checkpoint {self.repo_id}: a model checkpoint needs its eval_protocol")
        if "eval" in self.model_config:
            raise OptionsError(f"checkpoint {self.repo_id}: give the protocol as eval_protocol, not model_config.eval")


@dataclass(frozen=True)
class ConverterSpec:
    """Converts official checkpoints of some components into segcore state dicts.

    Attributes:
        format: the official format it reads, e.g. ``"mmseg"`` (a checkpoint whose ``state_dict`` has
            ``backbone.`` and ``decode_head.`` keys).
        components: names (``fnmatch`` patterns) of the encoders and decoders it converts.
        convert: ``convert(name, state_dict) -> state_dict``: takes the part of an official state dict that
            belongs to component ``name`` (prefix such as ``backbone.`` already stripped) and returns it
            under the component's own keys. Pure, and leaves an already converted dict unchanged.
        official_types: official config ``type`` (``"MSCAN"``, ``"LightHamHead"``) -> function mapping that
            official config dict to ``(component name, options)``.
        description: one line shown by ``segcore list``.
    """

    format: str
    components: tuple[str, ...]
    convert: Callable[[str, Mapping[str, Tensor]], dict[str, Tensor]] | str
    official_types: Mapping[str, Callable[[dict[str, Any]], tuple[str, dict[str, Any]]] | str] = field(
        default_factory=dict
    )
    description: str = ""

    def load_convert(self) -> Callable[[str, Mapping[str, Tensor]], dict[str, Tensor]]:
        """Return the conversion function, importing it if given as ``"module:attr"``."""
        return resolve(self.convert)


@dataclass(frozen=True)
class ParamGroupRule:
    """A parameter-group rule of a training recipe, with mmcv ``paramwise_cfg.custom_keys`` semantics.

    Attributes:
        key: substring of the segcore parameter name (``encoder.*``, ``adapter.*``, ``decoder.*``).
        lr_mult: multiplier of the base learning rate.
        decay_mult: multiplier of the base weight decay.
    """

    key: str
    lr_mult: float = 1.0
    decay_mult: float = 1.0


@dataclass(frozen=True)
class RecipeSpec:
    """A named training preset taken from a paper's official config (registered by ``segcore_recipes``).

    Every field is typed and reaches the run (``segcore train --dry-run`` prints them resolved). The nested
    settings may be given as mappings: they are parsed strictly, so an unknown key is an error naming the valid
    ones.

    Attributes:
        description: one line: paper, dataset and schedule.
        dataset: registered dataset name.
        iters: training iterations.
        batch_size: total batch over all devices and accumulation steps.
        crop_size: training crop ``(H, W)``.
        lr: base learning rate of AdamW.
        weight_decay: base weight decay.
        betas: AdamW betas.
        param_rules: custom-key rules; the longest matching key wins (mmcv 1.x semantics).
        norm_decay_mult: decay multiplier of normalisation weights and biases not matched by a rule
            (mmcv ``norm_decay_mult``); ``None`` leaves them alone.
        bias_decay_mult: decay multiplier of biases not matched by a rule; ``None`` leaves them alone.
        power: exponent of the poly decay.
        min_lr: learning rate reached at the last iteration.
        warmup_iters: length of the linear warm-up.
        warmup_ratio: learning rate at iteration 0 as a fraction of the scheduled one.
        clip_grad: max gradient L2 norm (mmcv ``optimizer_config.grad_clip``), ``None`` for no clipping.
        train_pipeline: augmentation and normalisation (:class:`~segcore.config.settings.TrainPipeline`).
        eval: evaluation protocol (:class:`~segcore.config.settings.EvalProtocol`); ``None`` evaluates with the
            dataset's own protocol.
        eval_every: evaluate every this many iterations.
        checkpoint_every: save a full training state every this many iterations.
        model: the model of the official config (:class:`~segcore.config.settings.ModelSettings`).
        model_variants: the model per encoder name when the run uses another encoder than ``model``'s (one
            schedule, several official configs, e.g. the Shrunk SegViT at this recipe's crop).
        source: the official config (or paper table) it comes from.
    """

    description: str
    dataset: str
    iters: int
    batch_size: int
    crop_size: tuple[int, int]
    lr: float
    weight_decay: float
    betas: tuple[float, float] = (0.9, 0.999)
    param_rules: tuple[ParamGroupRule, ...] = ()
    norm_decay_mult: float | None = None
    bias_decay_mult: float | None = None
    power: float = 1.0
    min_lr: float = 0.0
    warmup_iters: int = 0
    warmup_ratio: float = 1e-6
    clip_grad: float | None = None
    train_pipeline: TrainPipeline = field(default_factory=TrainPipeline)
    eval: EvalProtocol | None = field(default_factory=EvalProtocol)
    eval_every: int = 16000
    checkpoint_every: int = 16000
    model: ModelSettings = field(default_factory=ModelSettings)
    model_variants: Mapping[str, ModelSettings] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        """Parse nested settings given as mappings and reject values that make no sense."""
        where = f"recipe ({self.description})"
        set_ = object.__setattr__
        set_(self, "crop_size", tuple(self.crop_size))
        set_(self, "betas", tuple(self.betas))
        set_(self, "param_rules", tuple(self.param_rules))
        set_(self, "train_pipeline", TrainPipeline.from_dict(self.train_pipeline, f"{where} train_pipeline"))
        if self.eval is not None:
            set_(self, "eval", EvalProtocol.from_dict(self.eval, f"{where} eval"))
        set_(self, "model", ModelSettings.from_dict(self.model, f"{where} model"))
        variants = {
            k: ModelSettings.from_dict(v, f"{where} model_variants[{k!r}]") for k, v in self.model_variants.items()
        }
        set_(self, "model_variants", variants)
        checks = {
            "iters": self.iters > 0,
            "batch_size": self.batch_size > 0,
            "crop_size": len(self.crop_size) == 2 and min(self.crop_size) > 0,
            "lr": self.lr > 0,
            "weight_decay": self.weight_decay >= 0,
            "warmup_iters": self.warmup_iters >= 0,
            "clip_grad": self.clip_grad is None or self.clip_grad > 0,
            "eval_every": self.eval_every >= 0,
            "checkpoint_every": self.checkpoint_every >= 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise OptionsError(f"{where}: invalid {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}")
        for rule in self.param_rules:
            if not isinstance(rule, ParamGroupRule):
                raise OptionsError(f"{where}: param_rules must be ParamGroupRule, got {rule!r}")


@dataclass(frozen=True)
class PairSpec:
    """A paper model: an encoder and a decoder whose options are the paper's for that pair.

    ``build_model(encoder, decoder)`` (and ``segcore train``) applies the options of the registered pair under
    whatever the user sets, so naming the paper's pair builds the paper's model (e.g. ``mscan-b`` + ``ham`` is
    SegNeXt-B with its 512-channel head).

    Attributes:
        encoder: encoder name.
        decoder: decoder name.
        description: one line: which paper model this is.
        encoder_options: the paper's encoder options for this pair.
        decoder_options: the paper's decoder options for this pair.
        source: the paper or official config.
    """

    encoder: str
    decoder: str
    description: str
    encoder_options: Mapping[str, Any] = field(default_factory=dict)
    decoder_options: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""

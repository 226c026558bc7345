"""The settings of a training run: one declared field per ``segcore train`` flag (:mod:`segcore.config.fields`).

Each field's declaration is the only place its flag, help, range, fallback and resume rule are written: the
``segcore train`` parser, the range checks, ``RESUME_HELP``, the dry run's ``settings`` and ``settings.json`` are
derived from it. :mod:`segcore.train.resolve` fills the fields left unset; :mod:`segcore.train.dry_run` shows the
result.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from segcore.config.fields import Range, check_ranges, not_a_single_name, resume_rule, setting
from segcore.config.options import SIZE_LIMIT, check_fields
from segcore.errors import OptionsError, TrainingError

__all__ = ["TrainSettings", "RESUME_MAY_CHANGE", "PER_INVOCATION", "DEFAULT_KEEP_CHECKPOINTS", "SKIP_BAD_HELP"]

# The newest checkpoints a run keeps (--keep-checkpoints); best/ and the final model are always kept. Three leave
# two older ones to fall back on when the newest is damaged, and bound the disk a long run takes (a 160k-iteration
# ADE20K run saves 10 by default).
DEFAULT_KEEP_CHECKPOINTS = 3

# --skip-bad, for segcore train and segcore eval.
SKIP_BAD_HELP = (
    "leave out (and count) the rows of an hf: dataset that cannot be decoded, instead of stopping at the first; "
    "the same as --dataset-opt skip_bad=true"
)
_POSITIVE = Range(int, low=1, high=2**31 - 1)
_COUNT = Range(int, low=0, high=2**31 - 1)
# Trackers make folders of these names: ``../../x`` would write outside the run folder.
_SINGLE_NAME = ((lambda v: not_a_single_name(v) is None, "must be a single name (trackers name folders after it)"),)
_NOT_BLANK = ((lambda v: bool(str(v).strip()), "must not be empty (an unset shell variable?)"),)


def _names_ok(names: list[str]) -> bool:
    return bool(names) and all(str(n).strip() for n in names)


def _size_ok(size: tuple[int, ...]) -> bool:
    return len(size) == 2 and min(size) >= 1


@dataclass
class TrainSettings:
    """One field per ``segcore train`` flag; ``None`` means "not given" (each field's help is its declaration).

    A field not given takes the recipe's value (or its declared fallback), and on ``resume`` the run's own
    (``segcore train --help`` lists them all).
    """

    encoder: str | None = setting(help="encoder name (see segcore list --kind encoders)")
    decoder: str | None = setting(help="decoder name")
    dataset: str | None = setting(help="dataset name (default: the recipe's; synthetic-shapes without a recipe)")
    data_root: str | None = setting(help="dataset folder", on_resume="may-change")
    recipe: str | None = setting(help="training preset (see segcore list --kind recipes)")
    iters: int | None = setting(help="training iterations", range=_POSITIVE, on_resume="may-change")
    batch_size: int | None = setting(help="total batch = per device x processes x accumulation", range=_POSITIVE)
    crop_size: tuple[int, int] | None = setting(
        help="training crop S or H,W",
        range=Range(int, low=1, high=SIZE_LIMIT),
        checks=((_size_ok, "must be one or two positive integers"),),
    )
    lr: float | None = setting(help="base learning rate", range=Range(float, low=0, low_open=True))
    weight_decay: float | None = setting(help="base weight decay", range=Range(float, low=0))
    pretrained_encoder: bool | str | None = setting(
        help="start from the encoder's pretrained weights: its registered ImageNet weights, or SOURCE (a registered "
        "encoder checkpoint name, a Hub repo id such as nvidia/mit-b2, or a folder)",
        metavar="SOURCE",
        parse="optional-value",
        checks=((lambda v: not isinstance(v, str) or bool(v.strip()), "SOURCE must name a checkpoint or folder"),),
    )
    init_from: str | None = setting(
        help="fine-tune M (a model folder or finished run, a Hub repo id, a registered checkpoint): its encoder, "
        "decoder, options, normalisation, eval protocol and weights; a new classifier when the classes differ",
        metavar="M",
        parse="path",
        checks=_NOT_BLANK,
    )
    encoder_opt: dict[str, Any] = setting({}, help="encoder option (repeat)", metavar="K=V", parse="pairs")
    decoder_opt: dict[str, Any] = setting({}, help="decoder option (repeat)", metavar="K=V", parse="pairs")
    dataset_opt: dict[str, Any] = setting({}, help="dataset option (repeat)", metavar="K=V", parse="pairs")
    skip_bad: bool = setting(False, help=SKIP_BAD_HELP)
    mixed_precision: Literal["no", "bf16", "fp16"] | None = setting(
        help="autocast precision (fp16 needs a CUDA GPU, bf16 also runs on CPUs)", fallback="no"
    )
    output_dir: str = setting(
        "runs/segcore",
        help="run folder: missing, empty or made by segcore",
        on_resume="invocation",
        parse="path",
        checks=_NOT_BLANK,
    )
    resume: bool = setting(
        False, help="continue the run in --output-dir with its own settings (see below)", on_resume="invocation"
    )
    overwrite: bool = setting(
        False, help="start a new run in a folder that is not empty (see below)", on_resume="invocation"
    )
    eval_every: int | None = setting(
        help="validate every N iterations (0: at the end only)", range=_COUNT, on_resume="may-change"
    )
    checkpoint_every: int | None = setting(
        help="save the full state every N iterations (0: at the end)", range=_COUNT, on_resume="may-change"
    )
    keep_checkpoints: int | None = setting(
        help="keep the newest N checkpoints, 0 keeps all; best/ and the final model always stay",
        range=_COUNT,
        on_resume="may-change",
        fallback=DEFAULT_KEEP_CHECKPOINTS,
    )
    seed: int | None = setting(
        help="seed of init, data order and augmentation",
        range=Range(int, low=0, high=2**32 - 1),
        fallback=0,
    )
    grad_accum: int | None = setting(help="gradient accumulation steps", range=_POSITIVE, fallback=1)
    clip_grad: float | None = setting(
        help="clip the gradient norm to this value", range=Range(float, low=0, low_open=True)
    )
    ema_decay: float | None = setting(
        help="keep an EMA of the weights with this decay",
        flag="--ema",
        range=Range(float, low=0, high=1, low_open=True, high_open=True),
    )
    log_with: list[str] | None = setting(
        help="Accelerate trackers, comma-separated: tensorboard, wandb, mlflow, comet_ml, aim, clearml, dvclive, ... "
        "(the settings, loss, lr, throughput, every validation score per class, confusion matrix and prediction "
        "images; local files under OUTPUT_DIR/logs)",
        on_resume="may-change",
        checks=((_names_ok, "must name one or more trackers"),),
    )
    tensorboard: bool = setting(False, help="the same as --log-with tensorboard", on_resume="may-change")
    tracker_project: str | None = setting(
        help="the trackers' project name, one path component (default segcore)",
        on_resume="may-change",
        parse="name",
        checks=_SINGLE_NAME,
    )
    run_name: str | None = setting(
        help="the run's name in the trackers, one path component (default: the output folder's name)",
        on_resume="may-change",
        parse="name",
        checks=_SINGLE_NAME,
    )
    log_every: int | None = setting(
        help="metrics.jsonl row every N iterations", range=_POSITIVE, on_resume="may-change", fallback=10
    )
    eval_mode: Literal["whole", "slide"] | None = setting(
        help="override the recipe's eval mode", on_resume="may-change"
    )
    max_eval_samples: int | None = setting(
        help="validate on the first N images only", range=_POSITIVE, on_resume="may-change"
    )
    workers: int | None = setting(
        help="data loading processes (default: 0 on CPU, up to 8 on a GPU)", range=_COUNT, on_resume="may-change"
    )
    progress: bool = setting(True, help="no progress bar", parse="negate", on_resume="invocation")

    def __post_init__(self) -> None:
        """Reject values of the wrong type or that make no sense, naming the flag and the valid values."""
        check_ranges(self, TrainingError)
        try:
            check_fields(self)  # types (and the same ranges): a settings.json read on --resume may have been edited
        except OptionsError as err:
            raise TrainingError(f"invalid setting {err}") from err
        if self.resume and self.overwrite:
            raise TrainingError("--resume continues the run in --output-dir and --overwrite replaces it: give one")
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


# Flags that may differ from the run's settings.json on --resume: they change how the rest of the run is
# scheduled, logged, evaluated or read, not what is being trained (--iters extends or shortens the run, and the
# poly schedule follows the new length from the checkpoint on). Every other flag must agree with the run.
RESUME_MAY_CHANGE = resume_rule(TrainSettings, "may-change")
# Flags about this invocation, not the run: never compared, never taken from settings.json.
PER_INVOCATION = resume_rule(TrainSettings, "invocation")

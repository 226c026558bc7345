"""What a run trains: the datasets (checked), the model (from ``--init-from`` where given), optimiser and EMA.

:func:`build_parts` builds them from a resolved run and hands them to Accelerate's ``prepare``, before anything
is written into the run folder; :class:`Parts` is what the trainer's loop then works on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from segcore.config.settings import EvalProtocol
from segcore.errors import TrainingError
from segcore.train.data import check_splits
from segcore.train.optim import build_optimizer
from segcore.train.resolve import ResolvedRun, batch_split

__all__ = ["Parts", "build_parts"]

logger = logging.getLogger("segcore.train")


class _WithLoss(torch.nn.Module):
    """``forward(images, labels) -> loss dict`` around a :class:`~segcore.SegModel` (what Accelerate wraps)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model.compute_loss(images, labels)


@dataclass
class Parts:
    """What the loop trains and evaluates, built by :func:`build_parts` before anything is written."""

    train_ds: Any
    val_ds: Any
    classes: list[str]
    protocol: EvalProtocol
    model: torch.nn.Module  # the prepared ``_WithLoss`` (DDP-wrapped under several processes)
    raw: torch.nn.Module  # the SegModel inside it
    optimizer: torch.optim.Optimizer
    ema: Any
    per_device: int


def build_parts(run: ResolvedRun, accelerator: Any) -> Parts:
    """Datasets (checked), model, optimiser and EMA, prepared by Accelerate; nothing is written.

    Args:
        run: the resolved run (settings, recipe, evaluation protocol, ``--init-from`` model config).
        accelerator: the run's Accelerator; the model and optimiser come back prepared by it.

    Raises:
        TrainingError: for splits that do not fit the classes, or ``--init-from`` weights that do not load.
    """
    from accelerate.utils import set_seed

    import segcore
    from segcore.train.ema import ModelEMA

    s, recipe = run.settings, run.recipe
    assert s.batch_size is not None and s.grad_accum is not None and s.seed is not None
    world, main = accelerator.num_processes, accelerator.is_main_process
    per_device = batch_split(s.batch_size, world, s.grad_accum)
    if main:
        logger.warning(
            "batch size %d = %d per device x %d processes x %d accumulation steps",
            s.batch_size,
            per_device,
            world,
            s.grad_accum,
        )
    train_ds = run.train_dataset  # opened by the resolution when it read the dataset's crop; else opened here
    if train_ds is None:
        train_ds = segcore.build_dataset(s.dataset, root=s.data_root, split="train", **s.dataset_opt)
    val_ds = segcore.build_dataset(s.dataset, root=s.data_root, split="val", **s.dataset_opt)
    ignore_index = int(getattr(train_ds, "ignore_index", 255))
    classes = list(train_ds.classes)
    check_splits(train_ds, val_ds, len(classes))
    protocol = run.eval_protocol or EvalProtocol.from_dict(getattr(val_ds, "eval_protocol", None))
    pipe = recipe.train_pipeline  # with init_from: its mean/std (resolve_run)
    init = run.init
    set_seed(s.seed)
    model = segcore.build_model(
        s.encoder,
        s.decoder,
        num_classes=len(classes),
        encoder_options=s.encoder_opt,
        decoder_options=s.decoder_opt,
        pretrained_encoder=s.pretrained_encoder or False,
        class_names=classes,
        palette=[list(map(int, c)) for c in train_ds.palette],
        ignore_index=ignore_index,
        mean=pipe.mean,
        std=pipe.std,
        eval=protocol.to_dict(),
        loss=init.loss if init is not None else "",
        loss_options=dict(init.loss_options) if init is not None else {},
        extra={
            "dataset": s.dataset,
            "recipe": s.recipe or recipe.description,
            **({"init_from": s.init_from} if s.init_from else {}),
        },
    )
    if s.init_from and not s.resume:  # on resume the checkpoint holds the weights
        _init_weights(model, s.init_from, run.init_folder, classes, main)
    if world > 1 and accelerator.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif world > 1 and main:  # torch's SyncBatchNorm runs on CUDA only
        logger.warning("%d CPU processes: BatchNorm statistics stay per process (SyncBatchNorm needs CUDA)", world)
    optimizer = build_optimizer(model, recipe, s.lr, s.weight_decay)  # type: ignore[arg-type]
    # DDP must wrap the module whose forward computes the loss, so that the gradient hooks fire.
    wrapped, optimizer = accelerator.prepare(_WithLoss(model), optimizer)
    raw = accelerator.unwrap_model(wrapped).model
    ema = ModelEMA(raw, s.ema_decay) if s.ema_decay else None
    return Parts(train_ds, val_ds, classes, protocol, wrapped, raw, optimizer, ema, per_device)


def _init_weights(model: torch.nn.Module, source: str, folder: Any, classes: list[str], main: bool) -> None:
    """Load ``source``'s weights (from ``folder``, where resolution found them) and say what was re-initialised."""
    from segcore.data import compare_classes
    from segcore.errors import SegcoreError
    from segcore.train.init_from import load_init_weights

    try:
        fresh, config = load_init_weights(model, source, folder)  # type: ignore[arg-type]
    except SegcoreError as err:
        raise TrainingError(f"--init-from {source}: {err}") from err
    if not main:
        return
    comparison = compare_classes(config.class_names or config.num_classes, classes)
    if not comparison.same_count:
        logger.warning(
            "--init-from %s predicts %d classes, the dataset has %d: re-initialised %s; every other tensor is %s's",
            source,
            comparison.model_count,
            comparison.dataset_count,
            ", ".join(fresh),
            source,
        )
    elif comparison.renamed:
        logger.warning(
            "--init-from %s has the dataset's %d classes under other names (%s): its classifier is kept and the "
            "run's config takes the dataset's names",
            source,
            comparison.model_count,
            comparison.describe_renamed(),
        )

"""Iteration-based trainer on Accelerate: AdamW + recipe param groups, poly/warm-up, eval, exact resume.

The loop follows accelerate's ``cv_example`` (one ``prepare``, ``accelerator.backward``, gradient accumulation
through ``accelerator.accumulate``). What it adds (DESIGN.md "Training"):

* data order and augmentation are a pure function of ``(seed, global sample number)``: sample ``j`` is
  ``permutation(seed, epoch)[j % N]`` augmented with ``numpy.random.default_rng([seed, j])``; so resuming at
  iteration ``n`` needs no sampler state and is bitwise exact on CPU;
* the learning rate is set from the iteration number every step (no scheduler state to drift);
* full-state checkpoints (model, optimiser, scaler, EMA, every RNG, iteration) written atomically;
* SIGTERM saves and exits cleanly; a non-finite loss stops with a message, the last good checkpoint kept;
* ``metrics.jsonl``, ``curves.png``, ``best/`` (best validation mIoU) and the final ``from_pretrained`` folder.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segcore.hub import save_evaluated
from segcore.settings import EvalProtocol
from segcore.train.data import Batches, Sampler, Samples, check_splits, loader, train_transform
from segcore.train.settings import TrainingError, TrainSettings, batch_split, resolve_recipe, resolve_run

__all__ = ["TrainSettings", "TrainingError", "train", "resolve_recipe", "evaluate"]

logger = logging.getLogger("segcore.train")


# ------------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    dataset: Any,
    protocol: EvalProtocol | Mapping[str, Any] | None = None,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world: int = 1,
    max_samples: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """mIoU/mAcc/aAcc/per class (percent) of ``model`` on ``dataset``, one image at a time at its own size.

    Images are split over processes (``rank::world``) and the confusion matrices are summed across them.
    """
    from segcore.inference import infer_logits
    from segcore.metrics import SegMetric

    was_training = model.training
    model.eval()
    cfg = model.config  # type: ignore[union-attr]
    metric = SegMetric(
        cfg.num_classes,
        getattr(dataset, "ignore_index", cfg.ignore_index),
        list(getattr(dataset, "classes", cfg.class_names) or []) or None,
        device=device,
    )
    total = len(dataset) if max_samples is None else min(len(dataset), max_samples)
    indices = range(rank, total, world)
    if progress:
        from tqdm.auto import tqdm

        indices = tqdm(indices, desc="eval", leave=False)
    for i in indices:
        sample = dataset[i]
        image = torch.as_tensor(np.asarray(sample["image"]))[None].to(device)
        label = torch.as_tensor(np.asarray(sample["label"])).long().to(device)
        pred = infer_logits(model, image, protocol, cfg.num_classes).argmax(1)[0]
        metric.update(pred, label)
    model.train(was_training)
    return metric.compute()


# ------------------------------------------------------------------------------------------------------ train
class _WithLoss(torch.nn.Module):
    """``forward(images, labels) -> loss dict`` around a :class:`~segcore.SegModel` (what Accelerate wraps)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model.compute_loss(images, labels)


def _set_lr(optimizer: torch.optim.Optimizer, factor: float) -> float:
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * factor
    return optimizer.param_groups[0]["initial_lr"] * factor


def train(settings: TrainSettings) -> Path:
    """Train a model as ``settings`` say and return the output folder (a ``from_pretrained`` folder).

    SIGTERM (e.g. from a job scheduler) finishes the current iteration, saves a checkpoint and returns.

    Example:
        >>> out = train(TrainSettings(dataset="synthetic-shapes", iters=20, output_dir="runs/x"))  # doctest: +SKIP
    """
    stop = {"signal": False}

    def on_sigterm(signum: int, frame: Any) -> None:
        stop["signal"] = True

    try:
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread: no signal handling
        previous = None
    try:
        return _train(settings, stop)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _train(settings: TrainSettings, stop: dict[str, bool]) -> Path:
    """The body of :func:`train`; ``stop["signal"]`` is set by the SIGTERM handler."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    import segcore
    from segcore.inference import EvalProtocol
    from segcore.train.checkpointing import STATE_FILE, list_checkpoints, save_atomic
    from segcore.train.ema import ModelEMA
    from segcore.train.optim import build_optimizer, poly_lr_factor
    from segcore.train.plots import plot_curves

    run = resolve_run(settings)
    recipe, s = run.recipe, run.settings
    assert s.iters is not None and s.batch_size is not None and s.crop_size is not None
    if s.tensorboard and not any(importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX")):
        raise TrainingError("--tensorboard needs the tensorboard package: pip install tensorboard")
    out = Path(s.output_dir)
    ckpt_root = out / "checkpoints"
    # Launched as several processes on a machine without CUDA (accelerate launch / torchrun): Accelerate only
    # sets up a gloo process group when told to use the CPU, otherwise every process would train alone.
    multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(
        cpu=multi_cpu,
        mixed_precision=s.mixed_precision,
        gradient_accumulation_steps=s.grad_accum,
        log_with="tensorboard" if s.tensorboard else None,
        project_dir=str(out),
    )
    world, rank, main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    per_device = batch_split(s.batch_size, world, s.grad_accum)
    if main:
        logger.warning(
            "batch size %d = %d per device x %d processes x %d accumulation steps",
            s.batch_size,
            per_device,
            world,
            s.grad_accum,
        )
        if out.exists() and not s.resume and list_checkpoints(ckpt_root):
            raise TrainingError(f"{out} already holds checkpoints; pass --resume or another --output-dir")
        out.mkdir(parents=True, exist_ok=True)
        (out / "settings.json").write_text(json.dumps(s.to_dict(), indent=2))
    accelerator.wait_for_everyone()

    train_ds = segcore.build_dataset(s.dataset, root=s.data_root, split="train", **s.dataset_opt)
    val_ds = segcore.build_dataset(s.dataset, root=s.data_root, split="val", **s.dataset_opt)
    ignore_index = int(getattr(train_ds, "ignore_index", 255))
    classes = list(train_ds.classes)
    check_splits(train_ds, val_ds, len(classes))
    protocol = run.eval_protocol or EvalProtocol.from_dict(getattr(val_ds, "eval_protocol", None))
    pipe = recipe.train_pipeline

    set_seed(s.seed)
    model = segcore.build_model(
        s.encoder,
        s.decoder,
        num_classes=len(classes),
        encoder_options=s.encoder_opt,
        decoder_options=s.decoder_opt,
        pretrained_encoder=bool(s.pretrained_encoder),
        class_names=classes,
        palette=[list(map(int, c)) for c in train_ds.palette],
        ignore_index=ignore_index,
        mean=pipe.mean,
        std=pipe.std,
        eval=protocol.to_dict(),
        extra={"dataset": s.dataset, "recipe": s.recipe or recipe.description},
    )
    if world > 1 and accelerator.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif world > 1 and main:  # torch's SyncBatchNorm runs on CUDA only
        logger.warning("%d CPU processes: BatchNorm statistics stay per process (SyncBatchNorm needs CUDA)", world)
    optimizer = build_optimizer(model, recipe, s.lr, s.weight_decay)  # type: ignore[arg-type]
    # DDP must wrap the module whose forward computes the loss, so that the gradient hooks fire.
    model, optimizer = accelerator.prepare(_WithLoss(model), optimizer)
    raw = accelerator.unwrap_model(model).model
    ema = ModelEMA(raw, s.ema_decay) if s.ema_decay else None
    if ema is not None:
        accelerator.register_for_checkpointing(ema)

    start, best = 0, -math.inf
    if s.resume:
        for ckpt in list_checkpoints(ckpt_root):
            try:
                accelerator.load_state(str(ckpt))
                state = json.loads((ckpt / STATE_FILE).read_text())
            except Exception as err:  # noqa: BLE001 - fall back to the previous checkpoint
                logger.warning("checkpoint %s is not loadable (%s); trying an older one", ckpt, err)
                continue
            start, best = int(state["iter"]), float(state.get("best_mIoU", -math.inf))
            if main:
                logger.warning("resuming from %s (iteration %d)", ckpt, start)
            break
    if s.tensorboard:
        accelerator.init_trackers("tb", config={k: str(v) for k, v in s.to_dict().items()})

    sampler = Sampler(len(train_ds), s.seed)
    transform = train_transform(recipe, tuple(s.crop_size), ignore_index, train_ds, pipe.mean, pipe.std)  # type: ignore[arg-type]
    workers = (
        s.workers
        if s.workers is not None
        else (0 if accelerator.device.type == "cpu" else min(8, max(1, (os.cpu_count() or 1) // world - 1)))
    )
    batches = iter(
        loader(
            Samples(train_ds, sampler, transform),
            Batches(start, s.iters, s.grad_accum, world, rank, per_device),
            workers,
            pin_memory=accelerator.device.type == "cuda",
        )
    )
    metrics_file = out / "metrics.jsonl"

    def log(row: dict[str, Any]) -> None:
        if main:
            with open(metrics_file, "a") as handle:
                handle.write(json.dumps(row) + "\n")

    def checkpoint(iteration: int) -> None:
        state = {"iter": iteration, "best_mIoU": best, "seed": s.seed}
        save_atomic(
            ckpt_root,
            iteration,
            lambda tmp: accelerator.save_state(str(tmp)),
            state,
            is_main=main,
            barrier=accelerator.wait_for_everyone,
        )

    def eval_model() -> torch.nn.Module:
        if ema is None:
            return raw
        import copy

        averaged = copy.deepcopy(raw)
        ema.copy_to(averaged)
        return averaged

    bar = tqdm(total=s.iters, initial=start, disable=not (main and s.progress), desc="train", dynamic_ncols=True)
    model.train()
    iteration = start
    tic = time.time()
    try:
        while iteration < s.iters:
            lr = _set_lr(
                optimizer,
                poly_lr_factor(
                    iteration,
                    s.iters,
                    recipe.power,
                    recipe.min_lr / s.lr if s.lr else 0.0,
                    recipe.warmup_iters,
                    recipe.warmup_ratio,
                ),
            )
            loss_sum = 0.0
            for _ in range(s.grad_accum):
                images, labels = next(batches)
                images = images.to(accelerator.device, non_blocking=True)
                labels = labels.to(accelerator.device, non_blocking=True)
                with accelerator.accumulate(model):
                    with accelerator.autocast():
                        losses = model(images, labels)
                    loss = losses["loss"]
                    finite = torch.isfinite(loss.detach()).float()
                    if world > 1:
                        finite = accelerator.reduce(finite, "min")
                    if finite.item() < 1:
                        raise TrainingError(
                            f"loss is {loss.item()} at iteration {iteration}: stopped; the last good checkpoint "
                            f"is kept under {ckpt_root} (lower --lr, use --clip-grad or --mixed-precision no)"
                        )
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and s.clip_grad:
                        accelerator.clip_grad_norm_(model.parameters(), s.clip_grad)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                loss_sum += float(loss.detach())
            if ema is not None:
                ema.update(raw)
            iteration += 1
            loss_value = loss_sum / s.grad_accum
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}")
            if iteration % s.log_every == 0 or iteration == s.iters:
                row = {"iter": iteration, "loss": loss_value, "lr": lr, "time": round(time.time() - tic, 3)}
                for key, value in losses.items():
                    if key != "loss":
                        row[key] = float(value.detach())
                log(row)
                if s.tensorboard:
                    accelerator.log({"loss": loss_value, "lr": lr}, step=iteration)
            if (s.eval_every and iteration % s.eval_every == 0) or iteration == s.iters:
                if world > 1:  # BatchNorm statistics may differ per process: score rank 0's model everywhere
                    for buffer in raw.buffers():
                        torch.distributed.broadcast(buffer, src=0)
                result = evaluate(eval_model(), val_ds, protocol, accelerator.device, rank, world, s.max_eval_samples)
                summary = {k: result[k] for k in ("mIoU", "mAcc", "aAcc", "mDice", "fwIoU")}
                log({"iter": iteration, **summary, "per_class": result["per_class"]})
                if s.tensorboard:
                    accelerator.log(summary, step=iteration)
                if main:
                    bar.write(
                        f"iter {iteration}: mIoU {summary['mIoU']:.2f}  mAcc {summary['mAcc']:.2f}  "
                        f"aAcc {summary['aAcc']:.2f}"
                    )
                if summary["mIoU"] > best:
                    best = summary["mIoU"]
                    if main:
                        save_evaluated(eval_model(), out / "best", {**summary, "iter": iteration}, protocol)
                if main:
                    plot_curves(metrics_file, out / "curves.png")
            if (s.checkpoint_every and iteration % s.checkpoint_every == 0) or iteration == s.iters:
                checkpoint(iteration)
            if stop["signal"]:
                if not list_checkpoints(ckpt_root) or list_checkpoints(ckpt_root)[0].name != f"iter_{iteration}":
                    checkpoint(iteration)
                bar.write(f"SIGTERM: saved iteration {iteration} under {ckpt_root}; continue with --resume")
                return out
    finally:
        bar.close()
        if s.tensorboard:
            accelerator.end_training()
    accelerator.wait_for_everyone()
    if main:
        save_evaluated(eval_model(), out, metrics_file, protocol)
        if metrics_file.exists():
            plot_curves(metrics_file, out / "curves.png")
    accelerator.wait_for_everyone()
    return out

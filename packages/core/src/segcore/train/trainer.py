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

import dataclasses
import importlib.util
import json
import logging
import math
import os
import signal
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segcore.errors import SegcoreError
from segcore.specs import RecipeSpec

__all__ = ["TrainSettings", "TrainingError", "train", "resolve_recipe", "evaluate"]

logger = logging.getLogger("segcore.train")


class TrainingError(SegcoreError):
    """Training stopped (non-finite loss, bad settings, no usable checkpoint)."""


@dataclass
class TrainSettings:
    """One field per ``segcore train`` flag; ``None`` means "take it from the recipe".

    Attributes:
        encoder: encoder name (``--encoder``).
        decoder: decoder name (``--decoder``).
        dataset: dataset name (``--dataset``).
        data_root: dataset folder (``--data-root``).
        recipe: preset name (``--recipe``); with none and ``synthetic-shapes`` the CPU preset.
        iters: training iterations (``--iters``).
        batch_size: total batch = per device x processes x accumulation (``--batch-size``).
        crop_size: training crop ``(H, W)`` (``--crop-size``).
        lr: base learning rate (``--lr``).
        weight_decay: base weight decay (``--weight-decay``).
        pretrained_encoder: load the encoder's pretrained weights (``--pretrained-encoder``).
        encoder_opt: encoder options (``--encoder-opt k=v``).
        decoder_opt: decoder options (``--decoder-opt k=v``).
        dataset_opt: dataset options (``--dataset-opt k=v``).
        mixed_precision: ``no``, ``bf16`` or ``fp16`` (``--mixed-precision``).
        output_dir: run folder (``--output-dir``).
        resume: continue from the newest good checkpoint (``--resume``).
        eval_every: validation period in iterations (``--eval-every``; 0 only at the end).
        checkpoint_every: checkpoint period in iterations (``--checkpoint-every``; 0 only at the end).
        seed: seed of model init, data order and augmentation (``--seed``).
        grad_accum: gradient accumulation steps (``--grad-accum``).
        clip_grad: max gradient norm, ``None`` for no clipping (``--clip-grad``).
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
    dataset: str = "synthetic-shapes"
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
    mixed_precision: str = "no"
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
    eval_mode: str | None = None
    max_eval_samples: int | None = None
    workers: int | None = None
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (saved as ``settings.json``)."""
        out = dataclasses.asdict(self)
        if out["crop_size"] is not None:
            out["crop_size"] = list(out["crop_size"])
        return out


def resolve_recipe(settings: TrainSettings) -> tuple[RecipeSpec, TrainSettings]:
    """Find the recipe (named, or the CPU preset for ``synthetic-shapes``) and fill every ``None`` field from it."""
    from segcore import registry
    from segcore.train.recipes import core_recipes

    recipes = dict(core_recipes())
    try:
        recipes.update(registry.components("recipes"))
    except Exception:  # noqa: BLE001 - a broken plugin must not hide the core preset
        logger.warning("could not load plugin recipes", exc_info=True)
    if settings.recipe:
        if settings.recipe not in recipes:
            raise TrainingError(f"unknown recipe {settings.recipe!r}; available: {sorted(recipes)}")
        recipe = recipes[settings.recipe]
    elif settings.dataset == "synthetic-shapes":
        recipe = recipes["synthetic-shapes-cpu"]
    else:
        # No preset: a plain AdamW/poly schedule; every needed field must then come from the flags.
        recipe = RecipeSpec(
            description="flags only",
            dataset=settings.dataset,
            iters=settings.iters or 1000,
            batch_size=settings.batch_size or 8,
            crop_size=settings.crop_size or (512, 512),
            lr=settings.lr or 6e-5,
            weight_decay=0.01,
            warmup_iters=0,
            eval_every=1000,
            checkpoint_every=1000,
        )
    s = dataclasses.replace(settings)
    model = dict(recipe.model)
    s.encoder = s.encoder or model.get("encoder")
    if s.encoder in recipe.model_variants:  # the official config of this model size
        model = {**model, **recipe.model_variants[s.encoder], "encoder": s.encoder}
    s.decoder = s.decoder or model.get("decoder")
    if not s.encoder or not s.decoder:
        raise TrainingError("give --encoder and --decoder (the recipe does not name a model)")
    if s.encoder == model.get("encoder"):
        s.encoder_opt = {**model.get("encoder_options", {}), **s.encoder_opt}
    if s.decoder == model.get("decoder"):
        s.decoder_opt = {**model.get("decoder_options", {}), **s.decoder_opt}
    if s.pretrained_encoder is None:
        s.pretrained_encoder = bool(model.get("pretrained_encoder", False))
    s.iters = s.iters if s.iters is not None else recipe.iters
    s.batch_size = s.batch_size if s.batch_size is not None else recipe.batch_size
    s.crop_size = tuple(s.crop_size) if s.crop_size is not None else tuple(recipe.crop_size)  # type: ignore[assignment]
    s.lr = s.lr if s.lr is not None else recipe.lr
    s.weight_decay = s.weight_decay if s.weight_decay is not None else recipe.weight_decay
    s.clip_grad = s.clip_grad if s.clip_grad is not None else recipe.clip_grad
    s.eval_every = s.eval_every if s.eval_every is not None else min(recipe.eval_every, s.iters)
    s.checkpoint_every = s.checkpoint_every if s.checkpoint_every is not None else min(recipe.checkpoint_every, s.iters)
    return recipe, s


# ------------------------------------------------------------------------------------------------------- data
class _Sampler:
    """Sample ``j`` -> (dataset index, augmentation rng), a pure function of ``(seed, j)``."""

    def __init__(self, length: int, seed: int) -> None:
        self.length = length
        self.seed = seed
        self._perm: tuple[int, np.ndarray] | None = None

    def __call__(self, j: int) -> tuple[int, np.random.Generator]:
        epoch = j // self.length
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, 0, epoch]).permutation(self.length))
        return int(self._perm[1][j % self.length]), np.random.default_rng([self.seed, 1, j])


def _fallback_transform(crop_size: tuple[int, int], ignore_index: int, flip_prob: float) -> Any:
    """Random crop + flip + pad, used only when ``segcore_datasets`` is not installed."""

    def transform(sample: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        image = torch.as_tensor(np.asarray(sample["image"]))
        label = torch.as_tensor(np.asarray(sample["label"])).long()
        ch, cw = crop_size
        h, w = label.shape
        y = int(rng.integers(0, max(h - ch, 0) + 1))
        x = int(rng.integers(0, max(w - cw, 0) + 1))
        image, label = image[:, y : y + ch, x : x + cw], label[y : y + ch, x : x + cw]
        if rng.random() < flip_prob:
            image, label = image.flip(-1), label.flip(-1)
        out_img = torch.zeros((3, ch, cw), dtype=torch.uint8)
        out_lbl = torch.full((ch, cw), ignore_index, dtype=torch.long)
        out_img[:, : image.shape[1], : image.shape[2]] = image
        out_lbl[: label.shape[0], : label.shape[1]] = label
        return {"image": out_img, "label": out_lbl}

    return transform


def _train_transform(recipe: RecipeSpec, crop_size: tuple[int, int], ignore_index: int, dataset: Any) -> Any:
    pipe = dict(recipe.train_pipeline)
    if pipe.get("scale") is None:
        # No img_scale in the recipe: rescale relative to the dataset's own image size (first sample).
        h, w = np.asarray(dataset[0]["label"]).shape
        pipe["scale"] = (max(h, w), min(h, w))
    try:
        from segcore_datasets.transforms import TrainTransform
    except ImportError:
        warnings.warn("segcore_datasets is not installed: training with crop + flip only", stacklevel=2)
        return _fallback_transform(crop_size, ignore_index, float(pipe.get("flip_prob", 0.5)))
    return TrainTransform(
        crop_size=crop_size,
        scale=tuple(pipe["scale"]),
        ratio_range=tuple(pipe["ratio_range"]) if pipe.get("ratio_range") else None,
        cat_max_ratio=float(pipe.get("cat_max_ratio", 1.0)),
        flip_prob=float(pipe.get("flip_prob", 0.5)),
        photometric=bool(pipe.get("photometric")),
        ignore_index=ignore_index,
    )


class _Samples(torch.utils.data.Dataset):
    """Training sample number ``j`` -> augmented ``(image, label)``, a pure function of ``(seed, j)``.

    Because no state is carried from one sample to the next, DataLoader workers can produce samples in any
    order and a resumed run sees exactly the samples an uninterrupted one would.
    """

    def __init__(self, dataset: Any, sampler: _Sampler, transform: Any) -> None:
        self.dataset, self.sampler, self.transform = dataset, sampler, transform

    def __len__(self) -> int:
        return 2**62  # indexed by global sample number, never iterated by itself

    def __getitem__(self, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        index, rng = self.sampler(j)
        out = self.transform(self.dataset[index], rng)
        return torch.as_tensor(np.asarray(out["image"])), torch.as_tensor(np.asarray(out["label"])).long()


class _Batches(torch.utils.data.Sampler):
    """Sample numbers of this process's micro-batches from iteration ``start`` to ``iters``.

    Micro-batch ``m`` of iteration ``i`` on process ``rank`` holds samples
    ``((i * accum + m) * world + rank) * per_device + [0, per_device)``: the split of a total batch over
    processes and accumulation steps never changes which samples an iteration sees.
    """

    def __init__(self, start: int, iters: int, accum: int, world: int, rank: int, per_device: int) -> None:
        self.start, self.iters, self.accum = start, iters, accum
        self.world, self.rank, self.per_device = world, rank, per_device

    def __len__(self) -> int:
        return (self.iters - self.start) * self.accum

    def __iter__(self) -> Any:
        for step in range(self.start * self.accum, self.iters * self.accum):
            first = (step * self.world + self.rank) * self.per_device
            yield list(range(first, first + self.per_device))


def _loader(samples: _Samples, batches: _Batches, workers: int, pin_memory: bool) -> torch.utils.data.DataLoader:
    # A private generator: creating the loader's iterator must not draw from the global RNG, whose state is
    # part of the checkpoint (resume would otherwise shift every later random draw).
    return torch.utils.data.DataLoader(
        samples,
        batch_sampler=batches,
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers else None,
        generator=torch.Generator(),
    )


def _preflight(train_ds: Any, val_ds: Any, num_classes: int) -> None:
    """Check a sample of both splits (sizes, label values) before any training, when segcore-datasets is there."""
    try:
        from segcore_datasets.check import preflight
    except ImportError:
        return
    for split, ds in (("train", train_ds), ("val", val_ds)):
        try:
            preflight(ds, num_classes=num_classes)
        except ValueError as err:
            raise TrainingError(f"{split} split failed the data check: {err} (segcore data check shows more)") from err


# ------------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    dataset: Any,
    protocol: Mapping[str, Any] | None = None,
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

    recipe, s = resolve_recipe(settings)
    assert s.iters is not None and s.batch_size is not None and s.crop_size is not None
    if s.mixed_precision not in ("no", "bf16", "fp16"):
        raise TrainingError(f"--mixed-precision must be no, bf16 or fp16, not {s.mixed_precision!r}")
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
    per_device, rest = divmod(s.batch_size, world * s.grad_accum)
    if rest or per_device == 0:
        raise TrainingError(
            f"--batch-size {s.batch_size} is not a multiple of processes ({world}) x accumulation ({s.grad_accum})"
        )
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
    _preflight(train_ds, val_ds, len(classes))
    protocol = EvalProtocol.from_dict(recipe.eval)
    if s.eval_mode:
        protocol.mode = s.eval_mode
        if s.eval_mode == "slide" and protocol.crop_size is None:
            protocol.crop_size = tuple(s.crop_size)  # type: ignore[assignment]
            protocol.stride = tuple(max(1, c * 2 // 3) for c in s.crop_size)  # type: ignore[assignment]

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

    sampler = _Sampler(len(train_ds), s.seed)
    transform = _train_transform(recipe, tuple(s.crop_size), ignore_index, train_ds)  # type: ignore[arg-type]
    workers = (
        s.workers
        if s.workers is not None
        else (0 if accelerator.device.type == "cpu" else min(8, max(1, (os.cpu_count() or 1) // world - 1)))
    )
    batches = iter(
        _loader(
            _Samples(train_ds, sampler, transform),
            _Batches(start, s.iters, s.grad_accum, world, rank, per_device),
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
                result = evaluate(
                    eval_model(), val_ds, protocol.to_dict(), accelerator.device, rank, world, s.max_eval_samples
                )
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
                        eval_model().save_pretrained(out / "best")
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
        eval_model().save_pretrained(out)
        if metrics_file.exists():
            plot_curves(metrics_file, out / "curves.png")
    accelerator.wait_for_everyone()
    return out

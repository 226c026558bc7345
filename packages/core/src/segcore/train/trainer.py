"""Iteration-based trainer on Accelerate: AdamW + recipe param groups, poly/warm-up, eval, exact resume.

The loop follows accelerate's ``cv_example`` (one ``prepare``, ``accelerator.backward``, gradient accumulation
through ``accelerator.accumulate``). What it adds (DESIGN.md "Training"):

* data order and augmentation are a pure function of ``(seed, global sample number)``: sample ``j`` is
  ``permutation(seed, epoch)[j % N]`` augmented with ``numpy.random.default_rng([seed, j])``; so resuming at
  iteration ``n`` needs no sampler state and is bitwise exact on CPU;
* the learning rate is set from the iteration number every step (no scheduler state to drift);
* full-state checkpoints (model, optimiser, scaler, EMA, every RNG, iteration) written atomically as safetensors
  and JSON, and a resume that is exact or refuses (:mod:`segcore.train.resume`);
* SIGTERM saves and exits cleanly; a non-finite loss stops with a message, the last good checkpoint kept;
* ``metrics.jsonl``, ``curves.png``, ``best/`` (best validation mIoU) and the final ``from_pretrained`` folder.

What it trains (datasets, model, optimiser, EMA) is built by :mod:`segcore.train.parts`; the folder is checked and
claimed by :mod:`segcore.train.run_folder`, and every path is recorded in the run's manifest
(:mod:`segcore.train.manifest`) before it is written.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import torch

from segcore.errors import TrainingError, TrainingInterrupted
from segcore.evaluation.evaluate import evaluate
from segcore.evaluation.metrics import SUMMARY
from segcore.evaluation.plots import plot_curves
from segcore.train.checkpointing import list_checkpoints, replace_folder, save_atomic, storage_error
from segcore.train.data import Batches, Sampler, Samples, loader, train_transform
from segcore.train.manifest import Manifest
from segcore.train.optim import poly_lr_factor
from segcore.train.parts import Parts, build_parts
from segcore.train.resolve import ResolvedRun, resolve_recipe, resolve_run
from segcore.train.resume import STATE_FORMAT, resume, save_state
from segcore.train.run_folder import (
    check_classes,
    check_new_run,
    claim,
    in_use_error,
    lock_holder,
    snapshot,
    trim_metrics,
)
from segcore.train.schema import TrainSettings
from segcore.train.tracking import (
    LOGS,
    init_kwargs,
    log_images,
    run_config,
    takes_images,
    tracker_names,
    validation_scalars,
)
from segcore.weights.pretrained import save_evaluated

__all__ = ["TrainSettings", "TrainingError", "TrainingInterrupted", "train", "resolve_recipe", "evaluate"]


# ------------------------------------------------------------------------------------------------------ train


def _append_line(path: Path, line: str) -> None:
    with open(path, "a") as handle:
        handle.write(line + "\n")


def _set_lr(optimizer: torch.optim.Optimizer, factor: float) -> float:
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * factor
    return optimizer.param_groups[0]["initial_lr"] * factor


def train(settings: TrainSettings) -> Path:
    """Train a model as ``settings`` say and return the output folder (a ``from_pretrained`` folder).

    Everything that can be checked is checked before anything is written into ``settings.output_dir``: the
    settings (on resume against the run's own ``settings.json``), the folder (see :mod:`segcore.train.run_folder`),
    the data, the model and, on resume, that a checkpoint loads. SIGTERM (e.g. from a job scheduler) finishes the
    current iteration, saves a checkpoint and raises :class:`TrainingInterrupted` naming it.

    Raises:
        TrainingError: bad settings, a folder the run may not use, no loadable checkpoint on resume, a storage
            failure (naming the path and the cause), a non-finite loss.
        TrainingInterrupted: SIGTERM stopped the run; its state is saved (the CLI exits 143).

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
    run = resolve_run(settings)  # on resume: the run's settings.json, contradicting flags refused
    s, out = run.settings, Path(run.settings.output_dir)
    accelerator = _accelerator(s, out, tracker_names(s))  # a tracker that is not installed stops here
    seen = _on_main(accelerator, lambda: _check_folder(out, s))  # read-only
    parts = build_parts(run, accelerator)  # data, model, optimiser: nothing is written
    start, best = (0, -math.inf)
    if s.resume:
        assert s.iters is not None and s.seed is not None
        check_classes(out, parts.classes)
        start, best = resume(out, s.seed, s.iters, accelerator, parts.raw, parts.optimizer, parts.ema)
    with contextlib.ExitStack() as held:
        # Only now, with the run known to be possible, is the folder locked and written to.
        manifest = _on_main(
            accelerator,
            lambda: held.enter_context(claim(out, s.to_dict(), parts.classes, s.overwrite, seen, resume=s.resume)),
        )
        if s.resume:
            _on_main(accelerator, lambda: trim_metrics(out, start))
        accelerator.wait_for_everyone()
        return _Loop(run, accelerator, parts, stop, manifest).run(start, best)


T = TypeVar("T")


def _on_main(accelerator: Any, work: Callable[[], T]) -> T | None:
    """Run ``work`` on the main process only; its error is raised on every process, so that none waits forever."""
    result, error = None, None
    if accelerator.is_main_process:
        try:
            result = work()
        except Exception as err:  # noqa: BLE001 - re-raised below, on every process
            error = err
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        message = broadcast_object_list([None if error is None else str(error)])[0]
        if message is not None and error is None:
            raise TrainingError(message)
    if error is not None:
        raise error
    return result


def _accelerator(s: TrainSettings, out: Path, trackers: list[str]) -> Any:
    """The Accelerator of the run (writes nothing); fp16 where it would silently be fp32 is refused."""
    from accelerate import Accelerator, PartialState
    from accelerate.utils import ProjectConfiguration

    # Launched as several processes on a machine without CUDA (accelerate launch / torchrun): Accelerate only
    # sets up a gloo process group when told to use the CPU, otherwise every process would train alone.
    multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    # Asked before the Accelerator exists: its precision cannot change once set, and on a CPU Accelerate takes
    # fp16 and runs fp32 without saying so.
    if s.mixed_precision == "fp16" and PartialState(cpu=multi_cpu).device.type == "cpu":
        raise TrainingError(
            "--mixed-precision fp16 needs a GPU: on the CPU it would run in fp32 without saying so; "
            "use --mixed-precision bf16 (bfloat16 runs on CPUs) or no"
        )
    return Accelerator(
        cpu=multi_cpu,
        mixed_precision=s.mixed_precision,
        gradient_accumulation_steps=s.grad_accum,
        log_with=trackers or None,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / LOGS)),
    )


def _check_folder(out: Path, s: TrainSettings) -> tuple[Any, ...]:
    """May this run use ``out``? Read-only; returns the folder's :func:`snapshot` for :func:`claim` to compare."""
    pid = lock_holder(out)
    if pid is not None:
        raise in_use_error(out, pid)
    if not s.resume:
        check_new_run(out, s.overwrite, (LOGS,) if s.tensorboard or s.log_with else ())
    return snapshot(out)


class _Loop:
    """The training loop and its periodic work (log, validate, checkpoint) on a run set up by :func:`_train`."""

    def __init__(
        self, run: ResolvedRun, accelerator: Any, parts: Parts, stop: dict[str, bool], manifest: Manifest | None
    ) -> None:
        self.s, self.recipe = run.settings, run.recipe
        self.accelerator, self.parts, self.stop = accelerator, parts, stop
        self.manifest = manifest  # the main process's: every path is recorded in it before it is written
        self.out = Path(self.s.output_dir)
        self.ckpt_root = self.out / "checkpoints"
        self.metrics_file = self.out / "metrics.jsonl"
        self.main = accelerator.is_main_process
        self.best = -math.inf
        self.last_log = (0, time.time())  # (iteration, time) of the previous log row: the throughput since then

    def run(self, start: int, best: float) -> Path:
        """Train from iteration ``start`` to the end and write the final model."""
        from tqdm.auto import tqdm

        s, accelerator = self.s, self.accelerator
        assert s.iters is not None
        self.best = best
        if accelerator.log_with:
            self._own(LOGS)
            project = s.tracker_project or "segcore"
            accelerator.init_trackers(project, config=run_config(s), init_kwargs=init_kwargs(s, self.out))
        batches = self._batches(start)
        self.last_log = (start, time.time())
        bar = tqdm(
            total=s.iters, initial=start, disable=not (self.main and s.progress), desc="train", dynamic_ncols=True
        )
        self.parts.model.train()
        tic = time.time()
        try:
            for iteration in range(start + 1, s.iters + 1):
                loss_value, losses, lr = self._step(iteration - 1, batches)
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}")
                self._periodic(iteration, loss_value, losses, lr, time.time() - tic, bar)
                if self.stop["signal"] and iteration < s.iters:
                    self._interrupted(iteration)
        finally:
            bar.close()
            if accelerator.log_with:
                accelerator.end_training()
        accelerator.wait_for_everyone()
        if self.main:
            final = self._eval_model()  # its card and config carry the last validation scores
            if self.manifest is not None:
                self.manifest.add_model()
            self._own("curves.png")
            self._write(self.out, lambda: save_evaluated(final, self.out, self.metrics_file, self.parts.protocol))
            if self.metrics_file.exists():
                plot_curves(self.metrics_file, self.out / "curves.png")
        accelerator.wait_for_everyone()
        return self.out

    def _batches(self, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This process's training batches from iteration ``start`` on."""
        s, parts, device, world = self.s, self.parts, self.accelerator.device, self.accelerator.num_processes
        assert s.seed is not None and s.crop_size is not None and s.iters is not None and s.grad_accum is not None
        pipe = self.recipe.train_pipeline
        ignore_index = parts.raw.config.ignore_index
        transform = train_transform(self.recipe, tuple(s.crop_size), ignore_index, parts.train_ds, pipe.mean, pipe.std)
        samples = Samples(parts.train_ds, Sampler(len(parts.train_ds), s.seed), transform)
        order = Batches(start, s.iters, s.grad_accum, world, self.accelerator.process_index, parts.per_device)
        # No worker processes on CPU: they would compete with the model for the cores.
        workers = (
            s.workers
            if s.workers is not None
            else 0
            if device.type == "cpu"
            else min(8, max(1, (os.cpu_count() or 1) // world - 1))
        )
        return iter(loader(samples, order, workers, pin_memory=device.type == "cuda"))

    def _step(self, iteration: int, batches: Iterator[Any]) -> tuple[float, dict[str, torch.Tensor], float]:
        """One optimiser step (``grad_accum`` micro-batches) at 0-based ``iteration``: ``(loss, losses, lr)``."""
        s, recipe, accelerator = self.s, self.recipe, self.accelerator
        model, optimizer = self.parts.model, self.parts.optimizer
        assert s.iters is not None and s.lr is not None and s.grad_accum is not None
        factor = poly_lr_factor(
            iteration,
            s.iters,
            recipe.power,
            recipe.min_lr / s.lr if s.lr else 0.0,
            recipe.warmup_iters,
            recipe.warmup_ratio,
        )
        lr = _set_lr(optimizer, factor)
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
                if accelerator.num_processes > 1:
                    finite = accelerator.reduce(finite, "min")
                if finite.item() < 1:
                    raise TrainingError(
                        f"loss is {loss.item()} at iteration {iteration}: stopped; the last good checkpoint "
                        f"is kept under {self.ckpt_root} (lower --lr, use --clip-grad or --mixed-precision no)"
                    )
                accelerator.backward(loss)
                if accelerator.sync_gradients and s.clip_grad:
                    accelerator.clip_grad_norm_(model.parameters(), s.clip_grad)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            loss_sum += float(loss.detach())
        if self.parts.ema is not None:
            self.parts.ema.update(self.parts.raw)
        return loss_sum / s.grad_accum, losses, lr

    def _periodic(
        self, iteration: int, loss: float, losses: dict[str, torch.Tensor], lr: float, elapsed: float, bar: Any
    ) -> None:
        """After step ``iteration`` (1-based): log, validate and checkpoint when their period comes, and at the end."""
        s, last = self.s, iteration == self.s.iters
        if iteration % s.log_every == 0 or last:  # type: ignore[operator]
            row = {"iter": iteration, "loss": loss, "lr": lr, "time": round(elapsed, 3)}
            row.update({k: float(v.detach()) for k, v in losses.items() if k != "loss"})
            self._log(row)
            # Images per second over the iterations since the previous row, all processes together.
            since, then = self.last_log
            now = time.time()
            self.last_log = (iteration, now)
            speed = (iteration - since) * s.batch_size / max(now - then, 1e-9)  # type: ignore[operator]
            scalars = {"train/loss": loss, "train/lr": lr, "train/images_per_s": speed}
            scalars.update({f"train/{k}": v for k, v in row.items() if k not in ("iter", "loss", "lr", "time")})
            self.accelerator.log(scalars, step=iteration)
        if (s.eval_every and iteration % s.eval_every == 0) or last:
            self._validate(iteration, bar)
        if (s.checkpoint_every and iteration % s.checkpoint_every == 0) or last:
            self._checkpoint(iteration)

    def _log(self, row: dict[str, Any]) -> None:
        if self.main:
            self._own(self.metrics_file.name)
            self._write(self.metrics_file, lambda: _append_line(self.metrics_file, json.dumps(row)))

    def _validate(self, iteration: int, bar: Any) -> None:
        parts, accelerator = self.parts, self.accelerator
        if accelerator.num_processes > 1:  # BatchNorm statistics may differ per process: score rank 0's model
            for buffer in parts.raw.buffers():
                torch.distributed.broadcast(buffer, src=0)
        model = self._eval_model()
        result = evaluate(
            model,
            parts.val_ds,
            parts.protocol,
            accelerator.device,
            accelerator.process_index,
            accelerator.num_processes,
            self.s.max_eval_samples,
        )
        summary = {k: result[k] for k in (*SUMMARY, "ECE")}
        self._log({"iter": iteration, **summary, "per_class": result["per_class"]})
        accelerator.log(validation_scalars(result), step=iteration)
        if self.main:
            self._record(iteration, model, result)
        if self.main:
            bar.write(
                f"iter {iteration}: mIoU {summary['mIoU']:.2f}  mAcc {summary['mAcc']:.2f}  aAcc {summary['aAcc']:.2f}"
            )
        if summary["mIoU"] > self.best:
            self.best = summary["mIoU"]
            if self.main:  # written aside and swapped in: a failed write keeps the previous best/
                self._own("best")
                scores = {**summary, "iter": iteration}
                replace_folder(self.out / "best", lambda folder: save_evaluated(model, folder, scores, parts.protocol))
        if self.main:
            self._own("curves.png")
            plot_curves(self.metrics_file, self.out / "curves.png")

    def _record(self, iteration: int, model: torch.nn.Module, result: dict[str, Any]) -> None:
        """Save this evaluation under ``eval/iter_<N>/`` (the final one with ``report.html``); images to trackers."""
        from segcore.evaluation import report

        s, parts, device = self.s, self.parts, self.accelerator.device
        folder = self.out / "eval" / f"iter_{iteration}"
        self._own("eval", folder=True)
        self._own(f"eval/{folder.name}")
        if iteration == s.iters:  # the final evaluation: the page, with the curves up to here
            facts = {"model": f"{s.encoder} + {s.decoder}", "dataset": f"{s.dataset} (val)", "run": str(self.out)}
            title = f"segcore run {self.out.name}: evaluation at iteration {iteration}"
            self._write(
                folder,
                lambda: report.write_report(
                    folder, result, model, parts.val_ds, parts.protocol, title, facts, 6, self.metrics_file, device
                ),
            )
        else:
            self._write(folder, lambda: report.save_tables(result, folder))
        if takes_images(self.accelerator):
            images = {"val/confusion": report.figure_array(report.confusion_figure(result["confusion"], parts.classes))}
            # The same first few validation images every time, so that a tracker shows them improving.
            for i in range(min(3, len(parts.val_ds))):
                images[f"val/prediction_{i}"] = report.panel(model, parts.val_ds[i], parts.protocol, device)
            log_images(self.accelerator, images, iteration)

    def _checkpoint(self, iteration: int) -> None:
        state = {"iter": iteration, "best_mIoU": self.best, "seed": self.s.seed, "format": STATE_FORMAT}
        self._own(f"checkpoints/iter_{iteration}")
        parts = self.parts
        save_atomic(
            self.ckpt_root,
            iteration,
            lambda tmp: save_state(tmp, self.accelerator, parts.raw, parts.optimizer, parts.ema),
            state,
            is_main=self.main,
            barrier=self.accelerator.wait_for_everyone,
            keep=self.s.keep_checkpoints or 0,
        )

    def _interrupted(self, iteration: int) -> None:
        """SIGTERM: save this iteration (unless just saved) and stop with an error that says where."""
        newest = list_checkpoints(self.ckpt_root)
        if not newest or newest[0].name != f"iter_{iteration}":
            self._checkpoint(iteration)
        raise TrainingInterrupted(
            f"SIGTERM: stopped at iteration {iteration} of {self.s.iters}; the full state is saved in "
            f"{self.ckpt_root / f'iter_{iteration}'} (no final model yet); continue with segcore train "
            f"--output-dir {self.out} --resume"
        )

    def _eval_model(self) -> torch.nn.Module:
        """The model to evaluate and save: the EMA weights when the run keeps an EMA."""
        if self.parts.ema is None:
            return self.parts.raw
        averaged = copy.deepcopy(self.parts.raw)
        self.parts.ema.copy_to(averaged)
        return averaged

    def _own(self, *names: str, folder: bool = False) -> None:
        """Record ``names`` (relative to the run folder) in the run's manifest before writing them (main process)."""
        if self.manifest is not None:
            self.manifest.add(*names, folder=folder)

    @staticmethod
    def _write(path: Path, write: Callable[[], Any]) -> None:
        """Run ``write``; a storage failure becomes an error naming ``path`` and the cause."""
        try:
            write()
        except (OSError, RuntimeError) as err:
            raise storage_error(err, path) from err

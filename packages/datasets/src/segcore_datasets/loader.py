"""DataLoader-ready training data through the trainer's own deterministic sampler (:mod:`segcore.train.data`).

Training sample ``j`` is dataset index ``permutation(seed, epoch)[j % N]``, augmented with
``numpy.random.default_rng([seed, 1, j])``, a pure function of ``(seed, j)``. The batches are therefore the same with
0 or N workers, in any worker order, and from a loader started at any iteration, and they are the batches that
``segcore train`` draws on one process with the same seed and batch size.
"""

from __future__ import annotations

from typing import Any

__all__ = ["train_loader"]


def train_loader(
    dataset: Any,
    transform: Any,
    batch_size: int,
    num_workers: int = 0,
    seed: int = 0,
    pin_memory: bool | None = None,
    start: int = 0,
    iters: int | None = None,
) -> Any:
    """A ``torch.utils.data.DataLoader`` of ``(images, labels)`` batches drawn by :class:`segcore.train.data.Sampler`.

    Batch ``i`` holds training samples ``i * batch_size + [0, batch_size)``; the sample stream runs on across epochs
    (each epoch is a new permutation of the dataset), so a run of many iterations needs one loader.

    Args:
        dataset: a segcore dataset (``ds[i]`` gives ``{"image", "label", ...}``).
        transform: called as ``transform(sample, rng)``, e.g. :class:`~segcore.data.TrainTransform`.
        batch_size: samples per batch.
        num_workers: worker processes (0: in this process).
        seed: seeds the order and the augmentations.
        pin_memory: pin batches (default: when CUDA is available).
        start: the first batch (iteration) to draw: a resumed run continues where it stopped.
        iters: the batch to stop before (default: one epoch of whole batches, ``len(dataset) // batch_size``).

    Raises:
        ValueError: ``batch_size`` is not positive, or ``start`` is negative or after ``iters``.

    Example:
        >>> loader = train_loader(ds, TrainTransform.for_dataset(ds), batch_size=8, num_workers=4)  # doctest: +SKIP
        >>> images, labels = next(iter(loader))  # doctest: +SKIP
    """
    import torch
    from segcore.train.data import Batches, Sampler, Samples, loader

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    iters = len(dataset) // batch_size if iters is None else iters
    if not 0 <= start <= iters:
        raise ValueError(f"need 0 <= start <= iters, got start={start}, iters={iters}")
    samples = Samples(dataset, Sampler(len(dataset), int(seed)), transform)
    batches = Batches(start, iters, accum=1, world=1, rank=0, per_device=batch_size)
    return loader(samples, batches, num_workers, torch.cuda.is_available() if pin_memory is None else pin_memory)

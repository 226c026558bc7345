"""Training data: deterministic sample order and augmentation, the batch split over processes, the transforms.

Data order and augmentation are a pure function of ``(seed, global sample number)``: sample ``j`` is
``permutation(seed, epoch)[j % N]`` augmented with ``numpy.random.default_rng([seed, 1, j])``; so resuming at
iteration ``n`` needs no sampler state and is bitwise exact on CPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from segcore.data import TrainTransform, preflight
from segcore.errors import TrainingError
from segcore.plugins.specs import RecipeSpec

__all__ = ["Sampler", "Samples", "Batches", "loader", "train_transform", "check_splits"]


class Sampler:
    """Sample ``j`` -> (dataset index, augmentation rng), a pure function of ``(seed, j)``."""

    def __init__(self, length: int, seed: int) -> None:
        self.length = length
        self.seed = seed
        self._perm: tuple[int, np.ndarray] | None = None

    def __call__(self, j: int) -> tuple[int, np.random.Generator]:
        """Dataset index and augmentation generator of global sample ``j``."""
        epoch = j // self.length
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, 0, epoch]).permutation(self.length))
        return int(self._perm[1][j % self.length]), np.random.default_rng([self.seed, 1, j])


class Samples(torch.utils.data.Dataset):
    """Training sample number ``j`` -> augmented ``(image, label)``, a pure function of ``(seed, j)``.

    Because no state is carried from one sample to the next, DataLoader workers can produce samples in any
    order and a resumed run sees exactly the samples an uninterrupted one would.
    """

    def __init__(self, dataset: Any, sampler: Sampler, transform: Any) -> None:
        self.dataset, self.sampler, self.transform = dataset, sampler, transform

    def __len__(self) -> int:
        return 2**62  # indexed by global sample number, never iterated by itself

    def __getitem__(self, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        index, rng = self.sampler(j)
        out = self.transform(self.dataset[index], rng)
        return torch.as_tensor(np.asarray(out["image"])), torch.as_tensor(np.asarray(out["label"])).long()


class Batches(torch.utils.data.Sampler):
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


def loader(samples: Samples, batches: Batches, workers: int, pin_memory: bool) -> torch.utils.data.DataLoader:
    """A DataLoader over ``samples`` in the order ``batches`` gives."""
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


def train_transform(
    recipe: RecipeSpec,
    crop_size: tuple[int, int],
    ignore_index: int,
    dataset: Any,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> TrainTransform:
    """The recipe's train pipeline, normalising with the model's ``mean``/``std`` before padding (as mmseg).

    A pipeline without ``scale`` rescales relative to the dataset's own image size (its first sample).
    """
    pipe = recipe.train_pipeline.replace(mean=tuple(mean), std=tuple(std))
    scale = None
    if pipe.scale is None:
        h, w = np.asarray(dataset[0]["label"]).shape
        scale = (max(h, w), min(h, w))
    return TrainTransform.from_pipeline(pipe, crop_size, ignore_index, scale=scale)


def check_splits(train_ds: Any, val_ds: Any, num_classes: int) -> None:
    """Check a sample of both splits (sizes, dtypes, label values) before any training."""
    for split, ds in (("train", train_ds), ("val", val_ds)):
        try:
            preflight(ds, num_classes=num_classes)
        except ValueError as err:
            raise TrainingError(f"{split} split failed the data check: {err} (segcore data check shows more)") from err

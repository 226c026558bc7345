"""DataLoader-ready training data: a transformed view of a dataset whose randomness depends on (seed, index) only.

Because every sample draws from its own generator, the batches are the same with 0 or N workers, in any worker
order, and after a restart at any position, which is what an exact resume needs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["TransformedDataset", "train_loader"]


class TransformedDataset:
    """``dataset`` with ``transform(sample, rng)`` applied, ``rng = default_rng([seed, epoch, index])``.

    Args:
        dataset: a segcore dataset (``ds[i]`` gives ``{"image", "label", "path"}``).
        transform: e.g. :class:`~segcore_datasets.transforms.TrainTransform`.
        seed: global seed.

    Call :meth:`set_epoch` between epochs to draw new augmentations for the same index.
    """

    def __init__(self, dataset: Any, transform: Any, seed: int = 0) -> None:
        self.dataset, self.transform, self.seed, self.epoch = dataset, transform, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        """Use the augmentations of ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        out = self.transform(self.dataset[index], rng)
        return {"image": out["image"], "label": out["label"]}


def train_loader(
    dataset: Any,
    transform: Any,
    batch_size: int,
    num_workers: int = 0,
    seed: int = 0,
    shuffle: bool = True,
    pin_memory: bool | None = None,
    drop_last: bool = True,
) -> Any:
    """A ``torch.utils.data.DataLoader`` over :class:`TransformedDataset` with workers, pinned memory and persistence.

    Args:
        dataset: the dataset to read.
        transform: called as ``transform(sample, rng)``.
        batch_size: samples per batch.
        num_workers: worker processes (0: in this process); workers are persistent when > 0.
        seed: seeds the augmentations and the shuffling order.
        shuffle: shuffle with a generator seeded by ``seed``.
        pin_memory: pin batches (default: when CUDA is available).
        drop_last: drop the last incomplete batch (training).

    Example:
        >>> loader = train_loader(ds, TrainTransform.for_dataset(ds), batch_size=8, num_workers=4)  # doctest: +SKIP
    """
    import torch

    generator = torch.Generator().manual_seed(int(seed))
    return torch.utils.data.DataLoader(
        TransformedDataset(dataset, transform, seed),
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        drop_last=drop_last,
        prefetch_factor=2 if num_workers > 0 else None,
    )

"""``train_loader``: the trainer's sampler over a dataset (same batches with 0 or N workers, resume anywhere)."""

from __future__ import annotations

import pytest
import segcore
import torch
from segcore.data import TrainTransform
from segcore.train.data import Sampler, Samples
from segcore_datasets.loader import train_loader


@pytest.fixture(scope="module")
def shapes():
    ds = segcore.build_dataset("synthetic-shapes", split="train", size=32, length=6)
    return ds, TrainTransform.for_dataset(ds)


def _same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for p, q in zip(a, b) for x, y in zip(p, q))


def test_train_loader_same_batches_with_and_without_workers(shapes) -> None:
    ds, tf = shapes
    one = list(train_loader(ds, tf, batch_size=4, num_workers=0, seed=5, iters=3))
    two = list(train_loader(ds, tf, batch_size=4, num_workers=2, seed=5, pin_memory=False, iters=3))
    assert len(one) == 3 and one[0][0].shape == (4, 3, 32, 32) and one[0][1].shape == (4, 32, 32)
    assert _same(one, two)
    other = list(train_loader(ds, tf, batch_size=4, num_workers=0, seed=6, iters=1))
    assert not torch.equal(one[0][0], other[0][0])


def test_train_loader_resumes_at_any_batch_and_draws_the_trainers_samples(shapes) -> None:
    ds, tf = shapes
    full = list(train_loader(ds, tf, batch_size=4, seed=5, iters=3))  # 12 samples: two epochs of 6
    for start in (1, 2):
        assert _same(list(train_loader(ds, tf, batch_size=4, seed=5, start=start, iters=3)), full[start:])
    samples = Samples(ds, Sampler(len(ds), 5), tf)
    for j in (0, 5, 6, 11):
        image, label = samples[j]
        assert torch.equal(full[j // 4][0][j % 4], image) and torch.equal(full[j // 4][1][j % 4], label)


def test_train_loader_default_length_and_bad_arguments(shapes) -> None:
    ds, tf = shapes
    assert len(train_loader(ds, tf, batch_size=4)) == 1  # one epoch of whole batches
    with pytest.raises(ValueError, match="batch_size"):
        train_loader(ds, tf, batch_size=0)
    with pytest.raises(ValueError, match="start"):
        train_loader(ds, tf, batch_size=4, start=2, iters=1)

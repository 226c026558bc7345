"""Training data: one deterministic sampler (same batches with any number of workers, resume at any position), and
the recipe's pipeline, which normalises before it pads, as the official pipelines do."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segcore.config.settings import IMAGENET_MEAN, IMAGENET_STD, TrainPipeline
from segcore.data import TrainTransform
from segcore.plugins.specs import RecipeSpec
from segcore.testing import TinyShapes
from segcore.train.data import Batches, Sampler, Samples, loader, train_transform


class _Small:
    """One 40 x 50 image, smaller than the 64 x 64 crop: a third of every crop is padding."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng(0)
        return {
            "image": torch.from_numpy(rng.integers(0, 256, (3, 40, 50), dtype=np.uint8)),
            "label": torch.ones(40, 50, dtype=torch.int64),
        }


def _recipe(**pipeline) -> RecipeSpec:
    return RecipeSpec(
        description="t",
        dataset="t",
        iters=1,
        batch_size=1,
        crop_size=(64, 64),
        lr=1e-3,
        weight_decay=0.0,
        train_pipeline=TrainPipeline(scale=(50, 40), ratio_range=None, photometric=None, flip_prob=0.0, **pipeline),
    )


@pytest.mark.parametrize(("mean", "std"), [(IMAGENET_MEAN, IMAGENET_STD), ((127.5,) * 3, (127.5,) * 3)])
def test_padding_is_zero_in_normalised_space(mean, std) -> None:
    """Spec step 7 (segnext.md §5.2): Normalize, then Pad with 0, so the pad is 0 after normalisation (the mean
    colour), not uint8 0 (which would reach the network as about -2.1 with ImageNet statistics)."""
    data = _Small()
    transform = train_transform(_recipe(mean=mean, std=std), (64, 64), 255, data, mean, std)
    image, label = Samples(data, Sampler(1, 0), transform)[0]
    assert image.dtype == torch.float32 and image.shape == (3, 64, 64)
    assert torch.equal(image[:, 40:], torch.zeros(3, 24, 64)) and torch.equal(image[:, :, 50:], torch.zeros(3, 64, 14))
    assert (label[40:] == 255).all() and (label[:40, :50] == 1).all()
    raw = data[0]["image"].float()
    expected = (raw - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    assert torch.allclose(image[:, :40, :50], expected, atol=1e-5)


def test_pipeline_photometric_values_are_used() -> None:
    """An edited photometric setting changes the output (it used to reduce to a boolean)."""
    from segcore.config.settings import Photometric

    img = np.full((8, 8, 3), 100, np.uint8)

    class Always:  # every step on, mode 0, brightness draw at the top of its range
        def integers(self, *args):
            return 1 if args == (2,) else args[0]

        def uniform(self, lo, hi):
            return hi

    strong = TrainTransform._photometric(img, Always(), Photometric(brightness_delta=50, hue_delta=0))
    weak = TrainTransform._photometric(img, Always(), Photometric(brightness_delta=10, hue_delta=0))
    assert strong.mean() > weak.mean()


# ------------------------------------------------------------------------------------------ the sampler


def test_sampler_is_a_pure_function_of_seed_and_sample_number() -> None:
    n = 7
    sampler = Sampler(n, seed=3)
    epochs = [[sampler(e * n + k)[0] for k in range(n)] for e in range(3)]
    assert all(sorted(order) == list(range(n)) for order in epochs)  # each epoch visits every index once
    assert epochs[0] != epochs[1] or epochs[1] != epochs[2]  # and in a new order
    for j in (20, 2, 15, 0):  # any order of calls, a fresh sampler: the same index and augmentation draws
        index, rng = sampler(j)
        again, rng2 = Sampler(n, seed=3)(j)
        assert index == again == epochs[j // n][j % n] and rng.random() == rng2.random()
    assert [Sampler(n, seed=4)(k)[0] for k in range(n)] != epochs[0]


def _batches(workers: int, start: int = 0, iters: int = 6) -> list[list[torch.Tensor]]:
    data = TinyShapes(size=16, length=5)  # batches of 2 over 5 samples cross epoch boundaries
    transform = TrainTransform((16, 16), scale=(32, 16), cat_max_ratio=0.75)
    samples = Samples(data, Sampler(len(data), seed=1), transform)
    return list(loader(samples, Batches(start, iters, accum=1, world=1, rank=0, per_device=2), workers, False))


def _same(a: list[list[torch.Tensor]], b: list[list[torch.Tensor]]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for p, q in zip(a, b) for x, y in zip(p, q))


def test_same_batches_with_and_without_workers() -> None:
    one = _batches(workers=0)
    assert len(one) == 6 and one[0][0].shape == (2, 3, 16, 16) and one[0][1].shape == (2, 16, 16)
    assert _same(one, _batches(workers=2))
    assert not torch.equal(one[0][0], one[1][0])


def test_a_loader_started_at_any_iteration_continues_the_stream() -> None:
    full = _batches(workers=0)
    for start in range(1, 6):
        assert _same(_batches(workers=0, start=start), full[start:]), start


def test_the_split_over_processes_and_accumulation_keeps_each_iterations_samples() -> None:
    whole = list(Batches(2, 4, accum=1, world=1, rank=0, per_device=8))
    split = [list(Batches(2, 4, accum=2, world=2, rank=r, per_device=2)) for r in range(2)]
    for i in range(2):  # iteration 2 + i: micro-batches i * 2 and i * 2 + 1 of each process
        got = sorted(j for r in range(2) for m in (2 * i, 2 * i + 1) for j in split[r][m])
        assert got == whole[i]

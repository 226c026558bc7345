"""Training data: the recipe's pipeline normalises before it pads, as the official pipelines do."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segcore.settings import IMAGENET_MEAN, IMAGENET_STD, TrainPipeline
from segcore.specs import RecipeSpec
from segcore.train.data import Sampler, Samples, train_transform


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
    from segcore.data import TrainTransform
    from segcore.settings import Photometric

    img = np.full((8, 8, 3), 100, np.uint8)

    class Always:  # every step on, mode 0, brightness draw at the top of its range
        def integers(self, *args):
            return 1 if args == (2,) else args[0]

        def uniform(self, lo, hi):
            return hi

    strong = TrainTransform._photometric(img, Always(), Photometric(brightness_delta=50, hue_delta=0))
    weak = TrainTransform._photometric(img, Always(), Photometric(brightness_delta=10, hue_delta=0))
    assert strong.mean() > weak.mean()

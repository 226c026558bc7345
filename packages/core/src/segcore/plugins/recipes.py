"""Core training presets (torch-free, so ``segcore list`` stays instant).

Paper recipes come from the paper plugins through the ``segcore_recipes`` hook; this module only holds the
CPU-friendly ``synthetic-shapes-cpu`` preset used by the demo and the tests.
"""

from __future__ import annotations

from segcore.config.settings import EvalProtocol, ModelSettings, TrainPipeline
from segcore.plugins.specs import RecipeSpec

__all__ = ["core_recipes", "SYNTHETIC_SHAPES_CPU"]

SYNTHETIC_SHAPES_CPU = RecipeSpec(
    description="CPU demo on synthetic-shapes: whole 64 px images, batch 16, about 7 minutes on 2 cores",
    dataset="synthetic-shapes",
    # Measured with mscan-t + ham on 2 cores (README): 1000 iterations of batch 16 reach mIoU 70.5 in 6.3 min
    # (batch 8 at lr 2e-3 / 4e-3 / 6e-3: 58.2 / 63.4 / 60.7); 1200 leave a margin above 70.
    iters=1200,
    batch_size=16,
    crop_size=(64, 64),
    lr=4e-3,
    weight_decay=0.01,
    # Trained from scratch (no Hub access in the demo): one learning rate for encoder and decoder.
    norm_decay_mult=0.0,
    power=1.0,
    warmup_iters=50,
    clip_grad=1.0,
    # Whole images (the crop is the image size): every shape is seen with its outline.
    train_pipeline=TrainPipeline(scale=None, ratio_range=None, cat_max_ratio=1.0, flip_prob=0.5, photometric=None),
    eval=EvalProtocol(mode="whole"),
    eval_every=300,
    checkpoint_every=300,
    model=ModelSettings(encoder="timm:resnet18", decoder="mlp", decoder_options={"channels": 128}),
    source="segcore (first party)",
)


def core_recipes() -> dict[str, RecipeSpec]:
    """Recipes registered by the core plugin."""
    return {"synthetic-shapes-cpu": SYNTHETIC_SHAPES_CPU}

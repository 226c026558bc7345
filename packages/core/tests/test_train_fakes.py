"""A tiny in-test dataset plugin (``tiny-shapes``) so the trainer tests do not depend on segcore-datasets."""

from __future__ import annotations

import numpy as np
from segcore import hookimpl
from segcore.specs import ComponentSpec

PLUGIN_NAME = "segcore-train-test-fakes"


class TinyShapes:
    """Coloured rectangles on a dark background, 4 classes, deterministic by index; a few ignore pixels."""

    classes = ("background", "red", "green", "blue")
    palette = ((0, 0, 0), (220, 20, 60), (20, 200, 20), (30, 60, 230))
    ignore_index = 255

    def __init__(self, root: str | None = None, split: str = "train", size: int = 32, length: int = 16) -> None:
        self.split, self.size, self.length = split, size, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng([0 if self.split == "train" else 1, i])
        h = w = self.size + (4 * (i % 3) if self.split == "val" else 0)
        image = rng.integers(0, 40, size=(3, h, w), dtype=np.uint8)
        label = np.zeros((h, w), dtype=np.int64)
        for cls in (1, 2, 3):
            y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
            hh, ww = rng.integers(6, h // 2), rng.integers(6, w // 2)
            label[y : y + hh, x : x + ww] = cls
            image[:, y : y + hh, x : x + ww] = np.array(self.palette[cls], dtype=np.uint8)[:, None, None]
        label[0, :3] = 255
        return {"image": image, "label": label, "path": f"tiny/{self.split}/{i}.png"}


def tiny_shapes(root: str | None = None, split: str = "train", **options) -> TinyShapes:
    return TinyShapes(root, split, **options)


class FakesPlugin:
    @hookimpl
    def segcore_datasets(self):
        return {"tiny-shapes": ComponentSpec(factory=f"{__name__}:tiny_shapes", description="test rectangles")}


def register() -> None:
    import segcore.registry as registry

    registry.unregister_plugin(PLUGIN_NAME)
    registry.register_plugin(FakesPlugin(), PLUGIN_NAME)


def unregister() -> None:
    import segcore.registry as registry

    registry.unregister_plugin(PLUGIN_NAME)


TINY_MODEL = {"encoder": "timm:test_convnext", "decoder": "mlp", "decoder_opt": {"channels": 16}}

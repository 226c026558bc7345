"""Tiny data, a tiny model and tiny runs: training, evaluation and CLI tests on CPU in seconds, with no dataset plugin.

``tiny-shapes`` (:class:`TinyShapes`) is a 4-class dataset of coloured rectangles that :func:`register_tiny_shapes`
registers as a plugin (the ``tiny_plugin`` fixture of :mod:`segcore.testing.fixtures` does it for one test);
:data:`TINY_MODEL` is a model small enough to train on CPU, and :func:`tiny_run` the settings of a short run of it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segcore.plugins.hookspecs import hookimpl
from segcore.plugins.specs import ComponentSpec

if TYPE_CHECKING:
    from segcore.train import TrainSettings

__all__ = [
    "TINY_MODEL",
    "TINY_SHAPES",
    "TINY_SHAPES_PLUGIN",
    "TinyShapes",
    "register_tiny_shapes",
    "registered_tiny_shapes",
    "tiny_run",
    "tiny_shapes",
    "unregister_tiny_shapes",
]

#: The dataset name :func:`register_tiny_shapes` registers, and the plugin name it registers it under.
TINY_SHAPES = "tiny-shapes"
TINY_SHAPES_PLUGIN = "segcore-testing-tiny-shapes"
#: A model small enough for a training test on CPU (a timm test network and a 16-channel MLP head).
TINY_MODEL = {"encoder": "timm:test_convnext", "decoder": "mlp", "decoder_opt": {"channels": 16}}


class TinyShapes:
    """Coloured rectangles on a dark background, 4 classes, deterministic by index; a few ignore pixels.

    Validation images are 0, 4 or 8 pixels larger than ``size`` (by index), so evaluation sees several sizes.
    """

    classes = ("background", "red", "green", "blue")
    palette = ((0, 0, 0), (220, 20, 60), (20, 200, 20), (30, 60, 230))
    ignore_index = 255

    def __init__(self, root: str | None = None, split: str = "train", size: int = 32, length: int = 16) -> None:
        """``length`` samples of ``size`` x ``size`` pixels; ``root`` is ignored."""
        self.split, self.size, self.length = split, size, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        import numpy as np

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


def tiny_shapes(root: str | None = None, split: str = "train", **options: int) -> TinyShapes:
    """The ``tiny-shapes`` factory (options: ``size``, ``length``)."""
    return TinyShapes(root, split, **options)


def tiny_run(output_dir: str | Path, **overrides: Any) -> TrainSettings:
    """Settings of a short CPU run of :data:`TINY_MODEL` on ``tiny-shapes`` (register it first), ``overrides`` over.

    Batch 2 of 32x32 crops, lr 1e-3, no progress bar; the test gives ``iters``, ``eval_every`` and the rest.
    """
    from segcore.train import TrainSettings

    base = dict(dataset=TINY_SHAPES, batch_size=2, crop_size=(32, 32), lr=1e-3, progress=False, **TINY_MODEL)
    return TrainSettings(**{**base, "output_dir": str(output_dir), **overrides})


class _TinyShapesPlugin:
    @hookimpl
    def segcore_datasets(self) -> dict[str, ComponentSpec]:
        return {TINY_SHAPES: ComponentSpec(factory=f"{__name__}:tiny_shapes", description="test rectangles")}


def register_tiny_shapes() -> None:
    """Register the ``tiny-shapes`` dataset (again, if it is registered); undo with :func:`unregister_tiny_shapes`.

    In a test, prefer the ``tiny_plugin`` fixture, or :func:`registered_tiny_shapes` around a block; a script
    run in a child process calls this itself.

    Example:
        >>> register_tiny_shapes()  # doctest: +SKIP
        >>> train(TrainSettings(dataset="tiny-shapes", output_dir="run", **TINY_MODEL))  # doctest: +SKIP
        >>> unregister_tiny_shapes()  # doctest: +SKIP
    """
    from segcore.plugins import registry

    registry.unregister_plugin(TINY_SHAPES_PLUGIN)
    registry.register_plugin(_TinyShapesPlugin(), TINY_SHAPES_PLUGIN)


def unregister_tiny_shapes() -> None:
    """Remove the ``tiny-shapes`` dataset registered by :func:`register_tiny_shapes`."""
    from segcore.plugins import registry

    registry.unregister_plugin(TINY_SHAPES_PLUGIN)


@contextlib.contextmanager
def registered_tiny_shapes() -> Iterator[str]:
    """``tiny-shapes`` registered for the block and removed after it, also when the block raises; yields its name.

    Example:
        >>> with registered_tiny_shapes():  # doctest: +SKIP
        ...     train(tiny_run("run", iters=2))
    """
    register_tiny_shapes()
    try:
        yield TINY_SHAPES
    finally:
        unregister_tiny_shapes()

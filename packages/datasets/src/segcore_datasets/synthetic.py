"""``synthetic-shapes``: a procedurally generated segmentation task for demos and tests (no files, no downloads).

Every sample is a function of ``(seed, split, index)`` only, so the dataset is reproducible across processes and
machines. The class of a region is its **shape** (disc, square, triangle, star, ring); colours, sizes, rotations,
the textured background and the overlap order are random, so colour alone cannot solve the task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from segcore.config.options import COUNT, SEED, SIZE
from segcore.config.settings import EvalProtocol

__all__ = [
    "SHAPES_CLASSES",
    "SHAPES_PALETTE",
    "SyntheticShapesOptions",
    "SyntheticShapes",
    "synthetic_shapes",
    "render_shapes",
]

SHAPES_CLASSES: tuple[str, ...] = ("background", "disc", "square", "triangle", "star", "ring")
SHAPES_PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
)
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}
_DEFAULT_LENGTH = {"train": 2000, "val": 200, "test": 200}


@dataclass(frozen=True)
class SyntheticShapesOptions:
    """Options of ``synthetic-shapes``.

    Attributes:
        size: side of the square images (pixels).
        length: samples per split (default 2000 train, 200 val/test).
        seed: global seed; sample ``i`` of a split depends only on ``(seed, split, i)``.
        min_shapes: fewest shapes per image.
        max_shapes: most shapes per image.
        min_radius: smallest outer radius of a shape, as a fraction of ``size``.
        max_radius: largest outer radius of a shape, as a fraction of ``size``.

    The defaults (1-3 shapes of radius 0.2-0.4 of the side) keep outlines large enough for a stride-8
    decoder to tell the shapes apart at 64 px; two thirds of the images show two or more shapes and in 55 %
    two of them overlap or touch (measured on 400 training images; shapes cover 31 % of the pixels).
    Smaller or more numerous shapes make a harder task (measured with mscan-t + ham, 1000 iterations of
    batch 8: mIoU 63 with these defaults, 59 with 2-4 shapes of radius 0.14-0.3).
    """

    size: int = field(default=64, metadata=SIZE)
    length: int | None = field(default=None, metadata=COUNT)
    seed: int = field(default=0, metadata=SEED)
    min_shapes: int = 1
    max_shapes: int = 3
    min_radius: float = 0.2
    max_radius: float = 0.4


def _shape_mask(kind: int, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float, theta: float) -> np.ndarray:
    """Boolean mask of one shape (``kind`` = class id 1..5) centred at (cy, cx) with outer radius ``r``."""
    dy, dx = yy - cy, xx - cx
    if kind == 1:  # disc
        return dx * dx + dy * dy < r * r
    if kind == 5:  # ring: annulus, inner radius 55 % of the outer one
        d2 = dx * dx + dy * dy
        return (d2 < r * r) & (d2 > (0.55 * r) ** 2)
    c, s = np.cos(theta), np.sin(theta)
    u, v = c * dx + s * dy, -s * dx + c * dy
    if kind == 2:  # square with half side 0.8 r
        return np.maximum(np.abs(u), np.abs(v)) < 0.8 * r
    if kind == 3:  # equilateral triangle, circumradius r (inradius r / 2): three half-planes
        inside = np.ones_like(u, dtype=bool)
        for k in range(3):
            a = 2 * np.pi * k / 3 + np.pi / 2
            inside &= u * np.cos(a) + v * np.sin(a) < 0.5 * r
        return inside
    # star: five points, radius modulated between 0.4 r and r
    phi = np.arctan2(v, u)
    d = np.sqrt(u * u + v * v)
    return d < r * (0.7 + 0.3 * np.cos(5 * phi))


def _distinct_colour(rng: np.random.Generator, other: np.ndarray, min_distance: float) -> np.ndarray:
    """A random RGB colour at least ``min_distance`` (L1) from ``other`` (up to 20 draws, then the last one)."""
    colour = rng.uniform(0, 255, 3)
    for _ in range(20):
        if np.abs(colour - other).sum() >= min_distance:
            break
        colour = rng.uniform(0, 255, 3)
    return colour


def render_shapes(
    rng: np.random.Generator,
    size: int,
    min_shapes: int = 1,
    max_shapes: int = 3,
    min_radius: float = 0.2,
    max_radius: float = 0.4,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one sample with ``rng``.

    The background is a random colour crossed by fine stripes (period 3-6 px, random angle, phase and
    second colour): always textured, so that "inside a shape" is visible in a small window. Shapes are flat
    random colours with a gentle shading gradient, kept visibly apart from the background colour; their class
    is only their outline. Radii are fractions of ``size``; later shapes cover earlier ones.

    Returns:
        ``(image, label)``: uint8 [size, size, 3] and uint8 [size, size] with values 0..5.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c0 = rng.uniform(0, 255, 3)
    c1 = _distinct_colour(rng, c0, 200.0)
    ang, freq, phase = rng.uniform(0, np.pi), rng.uniform(1.0, 2.0), rng.uniform(0, 2 * np.pi)
    wave = 0.5 + 0.5 * np.sin(freq * (xx * np.cos(ang) + yy * np.sin(ang)) + phase)
    amp = rng.uniform(0.5, 1.0)
    image = c0 + (amp * wave)[..., None] * (c1 - c0)
    label = np.zeros((size, size), np.uint8)
    n = int(rng.integers(min_shapes, max_shapes + 1))
    kinds = rng.permutation(np.arange(1, 6))
    for j in range(n):
        kind = int(kinds[j % 5]) if j < 5 else int(rng.integers(1, 6))
        r = rng.uniform(min_radius, max_radius) * size
        cy, cx = rng.uniform(0.1, 0.9, 2) * size
        mask = _shape_mask(kind, yy, xx, cy, cx, r, rng.uniform(0, 2 * np.pi))
        colour = _distinct_colour(rng, c0, 100.0)
        shade = 1.0 + rng.uniform(-0.25, 0.25) * (yy - cy) / max(r, 1.0)  # a gradient so regions are not flat
        image[mask] = np.clip(colour[None, :] * shade[mask][:, None], 0, 255)
        label[mask] = kind
    image += rng.normal(0, 8, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), label


class SyntheticShapes:
    """The ``synthetic-shapes`` dataset: 6 classes (background + 5 shapes), images drawn on the fly.

    ``ds[i]`` is ``{"image": uint8 [3, size, size], "label": int64 [size, size],
    "path": "synthetic-shapes/<split>/<i>"}``.
    """

    name = "synthetic-shapes"
    classes = SHAPES_CLASSES
    palette = SHAPES_PALETTE
    ignore_index = 255
    reduce_zero_label = False
    test_resize = None  # evaluated at its native size
    eval_protocol = EvalProtocol()  # whole image at its native size

    def __init__(self, split: str = "train", options: SyntheticShapesOptions | None = None) -> None:
        opts = options or SyntheticShapesOptions()
        if split not in _SPLIT_CODE:
            raise ValueError(f"synthetic-shapes: unknown split {split!r}; valid: {', '.join(_SPLIT_CODE)}")
        if (
            opts.size < 16
            or opts.min_shapes < 1
            or opts.max_shapes < opts.min_shapes
            or not 0 < opts.min_radius <= opts.max_radius <= 0.5
        ):
            raise ValueError(f"synthetic-shapes: invalid options {opts}")
        self.split = split
        self.options = opts
        self.root = None
        self.length = opts.length if opts.length is not None else _DEFAULT_LENGTH[split]
        self.crop_size = (opts.size, opts.size)
        self.train_scale = (4 * opts.size, opts.size)  # short side = size before the random ratio

    @property
    def num_classes(self) -> int:
        """Number of classes (6)."""
        return len(self.classes)

    def __len__(self) -> int:
        return self.length

    def load_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``index`` as numpy arrays (uint8 HWC image, uint8 HW label)."""
        if not 0 <= index < self.length:
            raise IndexError(f"synthetic-shapes: index {index} out of range for {self.length} samples")
        rng = np.random.default_rng([self.options.seed, _SPLIT_CODE[self.split], index])
        o = self.options
        return render_shapes(rng, o.size, o.min_shapes, o.max_shapes, o.min_radius, o.max_radius)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        image, label = self.load_arrays(int(index))
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "label": torch.from_numpy(label.astype(np.int64)),
            "path": f"synthetic-shapes/{self.split}/{index}",
        }


def synthetic_shapes(root: str | None = None, split: str = "train", **options: Any) -> SyntheticShapes:
    """Factory of ``synthetic-shapes`` (``root`` is ignored: nothing is read from disk)."""
    from segcore.config.options import parse_options

    return SyntheticShapes(split, parse_options(SyntheticShapesOptions, options, component="synthetic-shapes"))

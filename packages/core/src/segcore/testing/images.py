"""Small image, label and own-data folder files for dataset tests (the formats follow the suffix, via Pillow).

:func:`write_image` and :func:`write_label` write one file of a dataset layout; :func:`write_image_folder` writes a
whole own-data folder (``images/`` + ``masks/`` + ``classes.txt``, the layout of ``segcore-datasets``' ``folder``
dataset), what the ``image_folder`` fixture of :mod:`segcore.testing.fixtures` gives a test.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["FOLDER_CLASSES", "write_image", "write_image_folder", "write_label"]

#: The classes of :func:`write_image_folder` unless told: a background and two coloured kinds of rectangle.
FOLDER_CLASSES = ("background", "red", "green")
# Colour of the pixels of class i (then a grey ramp for more classes); backgrounds are dark, not black.
_COLOURS = ((10, 10, 10), (220, 30, 30), (30, 200, 30), (30, 60, 230), (230, 200, 20))


def write_image(path: str | Path, h: int = 8, w: int = 12, mode: str = "RGB", seed: int = 0) -> np.ndarray:
    """Write a random ``h`` x ``w`` RGB image, converted to ``mode``, to ``path`` (the format follows the suffix).

    Returns:
        The RGB pixels before the conversion, ``(h, w, 3)`` uint8.
    """
    import numpy as np
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng([seed, h, w]).integers(0, 255, (h, w, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    (image if mode == "RGB" else image.convert(mode)).save(path)
    return pixels


def write_label(path: str | Path, label: np.ndarray, mode: str = "L") -> None:
    """Write ``label`` (values 0-255) as an 8-bit image, a palette image with the same indices for ``mode="P"``."""
    import numpy as np
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.asarray(label).astype(np.uint8))  # 2-D uint8: mode L
    (image.convert("P") if mode == "P" else image).save(path)


def _scene(num_classes: int, size: int, seed: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """One ``size`` x ``size`` picture: an 8-pixel square of each class but 0, and its label map."""
    import numpy as np

    rng = np.random.default_rng(seed)
    label = np.zeros((size, size), np.uint8)
    for cls in range(1, num_classes):
        y, x = rng.integers(0, size - 8, 2)
        label[y : y + 8, x : x + 8] = cls
    colours = [_COLOURS[i] if i < len(_COLOURS) else (40 + 9 * i,) * 3 for i in range(num_classes)]
    return np.array(colours, np.uint8)[label], label


def write_image_folder(
    root: str | Path,
    classes: Sequence[str] = FOLDER_CLASSES,
    counts: Mapping[str, int] | None = None,
    size: int = 24,
    seed: int = 0,
) -> Path:
    """Write an own-data folder at ``root``: ``classes.txt``, ``images/<split>/<i>.png``, ``masks/<split>/<i>.png``.

    Each image shows an 8-pixel square of every class but the first (class ``i`` in its own colour) on a dark
    background; its mask holds the class indices. Deterministic for a ``seed``.

    Args:
        root: the folder to write (created; files already there stay).
        classes: one name per label value, written one per line to ``classes.txt`` (at most 255 classes).
        counts: images per split; default ``{"train": 4, "val": 2}``.
        size: the side of every image, at least 9 pixels.
        seed: the first picture's seed; picture ``i`` of split ``s`` uses ``(seed, s, i)``.

    Returns:
        ``root``, as a ``Path``.
    """
    from PIL import Image

    if not 1 <= len(classes) <= 255 or size < 9:
        raise ValueError(
            f"write_image_folder: need 1 to 255 classes and a size of at least 9, got {len(classes)} "
            f"classes and size {size}"
        )
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    for s, (split, count) in enumerate((counts or {"train": 4, "val": 2}).items()):
        for kind in ("images", "masks"):
            (root / kind / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            rgb, label = _scene(len(classes), size, seed=[seed, s, i])
            Image.fromarray(rgb).save(root / "images" / split / f"{i}.png")
            Image.fromarray(label).save(root / "masks" / split / f"{i}.png")
    return root

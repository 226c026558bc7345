"""The one image reader of segcore: datasets, ``segcore predict`` and scripts decode pictures the same way.

Every image becomes uint8 RGB ``[H, W, 3]``:

* 8-bit modes (RGB, RGBA, grey, palette, CMYK, ...) are converted to RGB; an alpha channel is dropped (not
  composited), as mmseg's OpenCV colour decode does.
* 16- and 32-bit integer images (``I;16*``, ``I``) are rescaled by ``255 / max`` of the image and truncated, so a
  16-bit PNG keeps its contrast instead of saturating to white; negative values become 0.
* Float images (``F``, float arrays) in ``[0, 1]`` are multiplied by 255; others are rescaled by ``255 / max``
  like integer images; both are rounded, NaN becomes 0.

EXIF orientation is applied only when asked (``exif=True``, what ``segcore predict`` does so that its label
matches the image as a viewer displays it). Datasets read without it: label PNGs carry no orientation, so a
rotated photo would no longer line up with its mask (datasets.md §1.2, §12).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, ImageOps

from segcore.errors import ImageReadError

__all__ = ["IMAGE_EXTENSIONS", "ImageReadError", "read_image", "image_to_rgb", "array_to_rgb", "open_image"]

# File types a folder scan (``segcore predict DIR``, the ``folder`` dataset) takes as images, lower case.
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

_INT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def open_image(source: str | Path | IO[bytes] | bytes | Image.Image, name: str | None = None) -> Image.Image:
    """Open and fully decode ``source`` (a path, a binary file, encoded bytes or a PIL image) with Pillow.

    Raises:
        ImageReadError: naming the file when it is missing, unreadable or truncated.
    """
    label = name or (str(source) if isinstance(source, str | Path) else "image")
    try:
        if isinstance(source, Image.Image):
            img = source
        elif isinstance(source, bytes | bytearray):
            img = Image.open(io.BytesIO(source))
        else:
            img = Image.open(source)
        img.load()  # decode now: a truncated file fails here, naming itself, not later inside a transform
    except FileNotFoundError:
        raise ImageReadError(f"{label}: image file not found") from None
    except Exception as err:  # noqa: BLE001 - Pillow raises many types for truncated or foreign files
        raise ImageReadError(f"{label}: unreadable or truncated image ({type(err).__name__}: {err})") from None
    return img


def read_image(
    source: str | Path | IO[bytes] | bytes | Image.Image, exif: bool = False, name: str | None = None
) -> np.ndarray:
    """Decode an image to uint8 RGB ``[H, W, 3]`` (see the module docstring for modes and bit depths).

    Args:
        source: a path, a binary file object, encoded bytes or an open PIL image.
        exif: rotate/flip as the EXIF orientation tag says (how viewers display photos).
        name: the name used in error messages (default: the path).

    Raises:
        ImageReadError: naming the file when it is missing, unreadable or truncated.

    Example:
        >>> rgb = read_image("photo.jpg", exif=True)  # doctest: +SKIP
        >>> rgb.shape, rgb.dtype  # doctest: +SKIP
        ((3024, 4032, 3), dtype('uint8'))
    """
    img = open_image(source, name)
    if exif:
        img = ImageOps.exif_transpose(img) or img
    return image_to_rgb(img)


def image_to_rgb(img: Image.Image) -> np.ndarray:
    """A decoded PIL image as uint8 RGB ``[H, W, 3]`` (16-bit and float images rescaled, alpha dropped)."""
    if img.mode in _INT_MODES or img.mode == "F":
        return array_to_rgb(np.asarray(img))
    if img.mode != "RGB":
        img = img.convert("RGB")  # RGBA drops alpha, L/P/CMYK/1 become 3 channels
    return np.asarray(img)


def array_to_rgb(arr: Any) -> np.ndarray:
    """An image array as uint8 RGB ``[H, W, 3]``.

    Accepts ``[H, W]``, ``[H, W, C]`` and ``[C, H, W]`` (C = 1, 3 or 4; a 4th channel is dropped) of any integer or
    float dtype: uint8 is kept, wider integers are rescaled by ``255 / max`` (truncated), floats in ``[0, 1]`` are
    multiplied by 255 and others rescaled by ``255 / max`` (rounded).
    """
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = a.transpose(1, 2, 0)  # channels first (e.g. a pixel_values column)
    if a.ndim == 3 and a.shape[-1] == 4:
        a = a[..., :3]
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] != 3):
        raise ImageReadError(f"cannot read an array of shape {tuple(a.shape)} as an image; expected HxW or HxWx3")
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating):
            f = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0).clip(min=0.0)
            top = float(f.max()) if f.size else 0.0
            f = f * 255.0 if top <= 1.0 else f * (255.0 / top)
            a = np.rint(f).clip(0, 255).astype(np.uint8)
        else:
            f = a.astype(np.float64).clip(min=0.0)
            # The datasets' rule for 16-bit images since the first release: 255 / max of the image, truncated.
            a = (f * (255.0 / max(float(f.max()) if f.size else 0.0, 1.0))).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return a

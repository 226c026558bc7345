"""Tensor operations that stay correct when a model is traced for export with dynamic height and width.

A tracing exporter (``torch.onnx.export(..., dynamo=False)``, see :mod:`segcore.tools.export`) records the ops
one forward pass runs and evaluates every Python branch once, at the example size. Model code therefore
keeps shape-dependent decisions out of Python ``if`` statements (or makes them from strides known at
build time); the operations here cover what the exporter cannot express for a size it does not know.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

__all__ = ["adaptive_avg_pool2d", "is_tracing"]


def is_tracing() -> bool:
    """True while ``torch.jit.trace`` (and so the TorchScript ONNX exporter) records the forward pass."""
    return torch.jit.is_tracing()


def _bin_matrix(length: Tensor | int, bins: int, like: Tensor) -> Tensor:
    # Row i averages positions floor(i * n / s) .. ceil((i + 1) * n / s) - 1, PyTorch's adaptive pooling bins.
    i = torch.arange(bins, device=like.device)
    start = torch.div(i * length, bins, rounding_mode="floor")
    end = torch.div((i + 1) * length + bins - 1, bins, rounding_mode="floor")
    pos = torch.arange(length, device=like.device)
    inside = (pos[None, :] >= start[:, None]) & (pos[None, :] < end[:, None])
    return inside.to(like.dtype) / (end - start)[:, None].to(like.dtype)


def adaptive_avg_pool2d(x: Tensor, output_size: int) -> Tensor:
    """``F.adaptive_avg_pool2d`` to ``output_size x output_size`` bins, exportable at any input size.

    Eager mode (and ``torch.compile``) call ``F.adaptive_avg_pool2d`` itself. While traced, any output size
    other than 1 (which exports as ``GlobalAveragePool``) is written as two averaging matrices built from
    the input's shape, ``P_h @ x @ P_w^T``: the same bins, equal up to float rounding (about 1e-7 relative),
    whereas the exporter can only turn adaptive pooling into a fixed-kernel pooling for the example size.

    Shape:
        x: ``[B, C, H, W]`` -> ``[B, C, output_size, output_size]``.
    """
    if output_size == 1 or not is_tracing():
        return F.adaptive_avg_pool2d(x, output_size)
    rows = _bin_matrix(x.shape[-2], output_size, x)
    cols = _bin_matrix(x.shape[-1], output_size, x)
    return rows @ x @ cols.transpose(0, 1)

"""Checks of models for each package's tests: compiled against eager, and norms moved off their identity.

:func:`compare_compiled` runs a model compiled and eagerly on the same inputs, for each package's compile tests.
:func:`perturb_norms` moves every norm, layer scale and classifier away from its initial value, so that
logits-match tests notice a norm that a converter skips or misplaces. torch is imported on the first call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

__all__ = ["compare_compiled", "perturb_norms"]


def compare_compiled(
    model: nn.Module,
    sizes: Sequence[tuple[int, int, int]],
    *,
    backend: str = "inductor",
    dynamic: bool | None = None,
    seed: int = 0,
) -> list[tuple[float, float]]:
    """Run ``torch.compile(model)`` and ``model`` (eval mode, no grad) on one random input per ``(B, H, W)``.

    Dynamo's caches are reset first, so every call compiles afresh. With ``dynamic=None`` (torch's default) a
    second size recompiles with dynamic shapes, as it would for a user.

    Returns:
        ``(max abs difference, max abs eager logit)`` per size.

    Example:
        >>> compare_compiled(model, [(1, 64, 64), (2, 96, 80)])  # doctest: +SKIP
        [(1.2e-07, 0.11), (1.5e-07, 0.12)]
    """
    import torch

    torch.compiler.reset()
    model.eval()
    compiled = torch.compile(model, backend=backend, dynamic=dynamic)
    results = []
    with torch.no_grad():
        for i, (b, h, w) in enumerate(sizes):
            x = torch.randn((b, 3, h, w), generator=torch.Generator().manual_seed(seed + i))
            ref, got = model(x), compiled(x)
            if got.shape != ref.shape:
                raise AssertionError(f"compiled output {tuple(got.shape)} != eager {tuple(ref.shape)} at {(b, h, w)}")
            results.append((float((got - ref).abs().max()), float(ref.abs().max())))
    torch.compiler.reset()
    return results


def perturb_norms(model: nn.Module, seed: int = 0, scale: float = 0.3) -> nn.Module:
    """Randomise norms, layer scales and classifiers in place, so that logits-match tests can see them.

    Changes every normalisation layer (affine weights, biases, BatchNorm running statistics), layer-scale parameter
    (``gamma``, ``layer_scale_parameter``) and classifier (``classifier``, ``conv_seg``).
    Freshly initialised norms are identities and classifiers near zero: a converter that drops or swaps them would
    still match. Returns the model.
    """
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(seed)

    def rand(t: torch.Tensor) -> torch.Tensor:
        return torch.randn(t.shape, generator=g, dtype=torch.float32).to(t.dtype)

    with torch.no_grad():
        for name, module in model.named_modules():
            weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
            is_norm = isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase)) or (
                "norm" in type(module).__name__.lower() and isinstance(weight, torch.Tensor) and weight.ndim == 1
            )
            if is_norm and isinstance(weight, torch.Tensor):
                weight.copy_(1 + scale * rand(weight))
                if isinstance(bias, torch.Tensor):
                    bias.copy_(scale * rand(bias))
            if isinstance(module, nn.modules.batchnorm._NormBase) and module.running_mean is not None:
                module.running_mean.copy_(scale * rand(module.running_mean))
                module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=g))
            if name.split(".")[-1] in ("classifier", "conv_seg") and isinstance(weight, torch.Tensor):
                weight.copy_(rand(weight) / weight[0].numel() ** 0.5)
        for name, param in model.named_parameters():
            if name.split(".")[-1] in ("gamma", "layer_scale_parameter"):
                param.copy_(scale * rand(param))
    return model

"""Exponential moving average of model weights (kept in float32 next to the model)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["ModelEMA"]


class ModelEMA:
    """``shadow = decay * shadow + (1 - decay) * weights`` after every optimiser step; buffers are copied.

    A checkpoint stores :meth:`state_dict` as ``ema.safetensors`` (:mod:`segcore.train.resume`).
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        self.decay = decay
        self.shadow = {
            k: v.detach().clone().float() if v.is_floating_point() else v.detach().clone()
            for k, v in model.state_dict().items()
        }

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average toward the current weights of ``model``."""
        for key, value in model.state_dict().items():
            shadow = self.shadow[key]
            if value.is_floating_point():
                shadow.mul_(self.decay).add_(value.detach().float(), alpha=1.0 - self.decay)
            else:
                shadow.copy_(value)

    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into ``model``."""
        state = model.state_dict()
        model.load_state_dict({k: v.to(state[k].dtype) for k, v in self.shadow.items()})

    def state_dict(self) -> dict[str, Any]:
        """The decay and the averaged tensors."""
        return {"decay": self.decay, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output, each tensor on the device of the one it replaces."""
        self.decay = state["decay"]
        self.shadow = {k: v.to(self.shadow[k].device, copy=True) for k, v in state["shadow"].items()}

"""segcore-segnext: SegNeXt (MSCAN encoder + LightHamHead decoder) for segcore."""

from __future__ import annotations

__version__ = "0.1.0"

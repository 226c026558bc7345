"""The MSCAN sizes of SegNeXt: the one table that registration, factories and the converter read. Torch-free.

A new size is one entry: its encoder options (over :class:`~segcore_segnext.mscan.MSCANOptions`' defaults, the
T setting), its LightHam head widths (``pair``: the options of the ``segnext-<key>`` pair) and the folder of its
official configs (``facts["config"]``). Official checkpoints are release data and stay in ``plugin.py``.
"""

from __future__ import annotations

from segcore.models.variants import Variant, VariantTable

__all__ = ["MSCAN"]

_PAPER = "Guo et al., SegNeXt, NeurIPS 2022, arXiv:2209.08575"
_DIMS = (64, 128, 320, 512)
# Head settings of the official configs (spec §3.1).
_HEAD_256 = {"channels": 256, "ham_channels": 256, "md_r": 16}

MSCAN = VariantTable(
    family="mscan",
    module="segcore_segnext.mscan",
    options="MSCANOptions",
    description="MSCAN-{KEY} (SegNeXt encoder, multi-scale conv attention, strides 4-32)",
    source=_PAPER,
    variants={
        "t": Variant(
            {"embed_dims": (32, 64, 160, 256), "depths": (3, 3, 5, 2), "drop_path_rate": 0.1},
            pair=_HEAD_256,
            facts={"config": "tiny"},
        ),
        "s": Variant(
            {"embed_dims": _DIMS, "depths": (2, 2, 4, 2), "drop_path_rate": 0.1},
            pair=_HEAD_256,
            facts={"config": "small"},
        ),
        "b": Variant(
            {"embed_dims": _DIMS, "depths": (3, 3, 12, 3), "drop_path_rate": 0.1},
            pair={"channels": 512, "ham_channels": 512, "md_r": 64},
            facts={"config": "base"},
        ),
        "l": Variant(
            {"embed_dims": _DIMS, "depths": (3, 5, 27, 3), "drop_path_rate": 0.3},
            pair={"channels": 1024, "ham_channels": 1024, "md_r": 64},
            facts={"config": "large"},
        ),
    },
)

"""The MiT sizes of SegFormer: the one table that registration, factories and the converters read. Torch-free.

A new size is one entry: its encoder options (over :class:`~segcore_segdeformer.mit.MiTOptions`' defaults) and
its parameter count for the description. It gets the ``mit-<key>`` encoder, the ``segdeformer-mit-<key>`` and
``segformer-<key>`` pairs and a converter name; official checkpoints are release data and stay in ``plugin.py``.
"""

from __future__ import annotations

from segcore.models.variants import Variant, VariantTable

__all__ = ["MIT"]

_DIMS = (64, 128, 320, 512)

MIT = VariantTable(
    family="mit",
    module="segcore_segdeformer.mit",
    options="MiTOptions",
    description="Mix Transformer {KEY} (SegFormer encoder, {params}), strides 4/8/16/32",
    source="Xie et al., SegFormer, arXiv:2105.15203; github.com/NVlabs/SegFormer; mmseg mit.py",
    variants={
        "b0": Variant({"embed_dims": (32, 64, 160, 256), "depths": (2, 2, 2, 2)}, facts={"params": "3.3M"}),
        "b1": Variant({"embed_dims": _DIMS, "depths": (2, 2, 2, 2)}, facts={"params": "13.2M"}),
        "b2": Variant({"embed_dims": _DIMS, "depths": (3, 4, 6, 3)}, facts={"params": "24.2M"}),
        "b3": Variant({"embed_dims": _DIMS, "depths": (3, 4, 18, 3)}, facts={"params": "44.1M"}),
        "b4": Variant({"embed_dims": _DIMS, "depths": (3, 8, 27, 3)}, facts={"params": "60.8M"}),
        "b5": Variant({"embed_dims": _DIMS, "depths": (3, 6, 40, 3)}, facts={"params": "81.4M"}),
    },
)

"""The ViT encoders of SegViT: the one table that registration, factories and the converter read. Torch-free.

A new encoder is one entry: its options (over :class:`~segcore_segvit.vit.ViTOptions`' defaults), its description
and its paper pair (``pair``: the decoder and the model's title; the pair trains at the entry's ``img_size`` and
``drop_path_rate``). Official checkpoints are release data and stay in ``plugin.py``.
"""

from __future__ import annotations

from segcore.models.variants import Variant, VariantTable

__all__ = ["VIT"]

_PAPER = "Zhang et al., SegViT, NeurIPS 2022, arXiv:2210.05844 (https://github.com/zbwxp/SegVit)"
# The paper's crops: ViT-B at 512, ViT-L at 640 (spec §2.1, §3.1).
_B16 = dict(img_size=512, embed_dim=768, depth=12, num_heads=12, out_indices=(5, 7, 11), drop_path_rate=0.1)
_L16 = dict(img_size=640, embed_dim=1024, depth=24, num_heads=16, out_indices=(7, 15, 23), drop_path_rate=0.3)
_SHRUNK = "2x2 query down-sampling at layer index {}; outputs at strides 16 and 32"

VIT = VariantTable(
    family="vit",
    module="segcore_segvit.vit",
    options="ViTOptions",
    source=_PAPER,
    variants={
        "b16": Variant(
            _B16,
            "ViT-B/16 (no cls token), layers 6/8/12 at stride 16, bicubic pos-embed resize",
            pair={"decoder": "atm", "title": "ViT-B/16 + ATM"},
        ),
        "l16": Variant(
            _L16,
            "ViT-L/16 (no cls token), layers 8/16/24 at stride 16, grid for 640",
            pair={"decoder": "atm", "title": "ViT-L/16 + ATM"},
        ),
        "b16-shrunk": Variant(
            {**_B16, "shrink_idx": 6, "out_indices": (5, 11)},
            "Shrunk ViT-B/16: " + _SHRUNK.format(6),
            pair={"decoder": "atm-shrunk", "title": "Shrunk ViT-B/16 + QU/ATM"},
        ),
        "l16-shrunk": Variant(
            {**_L16, "shrink_idx": 8, "out_indices": (7, 23)},
            "Shrunk ViT-L/16: " + _SHRUNK.format(8),
            pair={"decoder": "atm-shrunk", "title": "Shrunk ViT-L/16 + QU/ATM"},
        ),
    },
)

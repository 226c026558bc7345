"""LightHamHead, the SegNeXt decoder: multi-level concat -> Hamburger (NMF matrix decomposition) -> classifier.

Paper: Guo et al., SegNeXt, arXiv 2209.08575 (head from Geng et al., "Is Attention Better Than Matrix
Decomposition?", arXiv 2109.04553). Upstream: https://github.com/Visual-Attention-Network/SegNeXt
(commit c87bcae, Apache-2.0), ``mmseg/models/decode_heads/ham_head.py``. Written from
``shared/specs/segnext.md`` §3; parameter names equal the official ones (minus ``decode_head.``).
Changes: the NMF bases can come from a private generator (``nmf_seed``) instead of the global RNG (drawn
once and kept: the same numbers as a fresh seeded draw per forward, and a constant when the model is traced
for ONNX export), and the bases are drawn on CPU without the hard-coded ``.cuda()`` (same numbers, spec
§3.4); the head runs in channels-last memory by default and the NMF products read ``X^T``
(``[B*S, H*W, C/S]``), a free view of that memory (same products, ``memory_format="contiguous"`` restores
NCHW).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from segcore.config.options import FRACTION, SEED, parse_options
from segcore.errors import OptionsError
from segcore.models.contracts import Decoder, DecoderOutput
from segcore.models.layers import MEMORY_FORMATS, MemoryFormat, init_classifier, init_weights
from segcore.models.ops import is_tracing
from segcore.plugins.specs import PYRAMID_STRIDES, FeatureInfo
from torch import Tensor, nn

__all__ = ["LightHamHeadOptions", "NMF2D", "LightHamHead", "ham", "EXPORT_MAX_IMAGES"]

# Seeded NMF bases a traced (exported) graph stores, in images: the largest batch such a graph accepts.
EXPORT_MAX_IMAGES = 32


@dataclass(frozen=True)
class LightHamHeadOptions:
    """Options of ``ham`` (defaults: SegNeXt-T/S head).

    Attributes:
        in_index: encoder levels read (default the last three: strides 8/16/32).
        channels: channels before the classifier (``align`` output).
        ham_channels: channels inside the Hamburger.
        dropout_ratio: Dropout2d before the classifier.
        num_groups: GroupNorm groups.
        md_s: NMF ``MD_S`` (number of groups the channels are split into).
        md_r: NMF ``MD_R`` (rank): 16 for T/S, 64 for B/L.
        train_steps: NMF iterations in training.
        eval_steps: NMF iterations in eval.
        inv_t: softmax temperature of the initial coefficients (the official NMF2D forces 1).
        nmf_seed: ``None`` (official): bases come from the global CPU RNG on every forward, so inference
            is stochastic (and cannot be exported: ONNX random ops draw other numbers). An integer gives the
            bases of a private generator seeded with it on every forward, making eval and export
            deterministic without touching the global RNG; an exported graph stores the bases of
            ``EXPORT_MAX_IMAGES`` images and accepts batches up to that size.
        memory_format: ``"channels_last"`` (default) runs the head in NHWC memory (faster convolutions and
            NMF products on CPU); ``"contiguous"`` keeps NCHW. Same function either way.
    """

    in_index: tuple[int, ...] = (-3, -2, -1)
    channels: int = 256
    ham_channels: int = 256
    dropout_ratio: float = field(default=0.1, metadata=FRACTION)
    num_groups: int = 32
    md_s: int = 1
    md_r: int = 16
    train_steps: int = 6
    eval_steps: int = 7
    inv_t: float = 1.0
    nmf_seed: int | None = field(default=None, metadata=SEED)
    memory_format: MemoryFormat = "channels_last"

    def __post_init__(self) -> None:
        object.__setattr__(self, "in_index", tuple(self.in_index))
        if not self.in_index:  # checked here; range is checked against the encoder in LightHamHead
            raise OptionsError("ham: in_index needs at least one level")
        for name in ("channels", "ham_channels"):
            if getattr(self, name) % self.num_groups:
                raise OptionsError(
                    f"ham: {name}={getattr(self, name)} is not a multiple of num_groups={self.num_groups}"
                )
        if self.ham_channels % self.md_s:
            raise OptionsError("ham: ham_channels must be a multiple of md_s")
        if min(self.md_r, self.md_s, self.train_steps, self.eval_steps) < 1:
            raise OptionsError("ham: md_r, md_s, train_steps and eval_steps must be >= 1")
        if not 0.0 <= self.dropout_ratio < 1.0:
            raise OptionsError("ham: dropout_ratio must lie in [0, 1)")


class ConvModule(nn.Sequential):
    """mmcv ConvModule naming: ``conv`` (bias only without norm), ``gn``, then optional ReLU."""

    def __init__(self, cin: int, cout: int, groups: int | None, act: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=groups is None)
        if groups is not None:
            self.gn = nn.GroupNorm(groups, cout)
        if act:
            self.activate = nn.ReLU(inplace=True)


class NMF2D(nn.Module):
    """Non-negative matrix factorisation by multiplicative updates (spec §3.4); no parameters.

    With a ``seed``, the bases are the first ``B * S`` rows of one seeded draw, drawn at construction for
    :data:`EXPORT_MAX_IMAGES` images when ``channels`` is given (the traced graph stores them) and grown in
    eager mode for larger batches.

    Shape:
        x: ``[B, C, H, W]`` non-negative -> ``[B, C, H, W]`` rank-``R`` reconstruction.
    """

    def __init__(
        self,
        md_s: int,
        md_r: int,
        train_steps: int,
        eval_steps: int,
        inv_t: float,
        seed: int | None,
        channels: int | None = None,
    ) -> None:
        super().__init__()
        self.S, self.R = md_s, md_r
        self.train_steps, self.eval_steps, self.inv_t, self.seed = train_steps, eval_steps, inv_t, seed
        # The seeded draw, kept (not state: it follows from the seed). Knowing the channels, it is drawn now for
        # EXPORT_MAX_IMAGES images, so that a traced forward finds it ready and stores it as a constant.
        self._seeded: Tensor | None = None
        if seed is not None and channels is not None:
            self._seeded_draw(EXPORT_MAX_IMAGES * md_s, channels // md_s)

    def _seeded_draw(self, n: int, d: int) -> Tensor:
        # The CPU generator fills a tensor serially, so the first n rows of a larger seeded draw are the seeded
        # draw of n rows: one draw, grown when a larger batch comes, serves every forward with the same numbers.
        table = self._seeded
        if table is None or table.shape[1] != d or table.shape[0] < n:
            if is_tracing():  # a draw inside the trace would be recorded as a random op
                raise RuntimeError(
                    f"ham: an exported graph holds the seeded NMF bases of at most {EXPORT_MAX_IMAGES} images; "
                    f"trace with a smaller batch (got {int(n) // self.S})"
                )
            gen = torch.Generator().manual_seed(self.seed)
            table = self._seeded = torch.rand((n, d, self.R), generator=gen, device="cpu")
        return table[:n]

    def _bases(self, n: int, d: int, device: torch.device) -> Tensor:
        # One float32 draw of shape (B*S, D, R) on the CPU generator, like the official code.
        if self.seed is None:
            bases = torch.rand((n, d, self.R)).to(device)
        else:
            bases = self._seeded_draw(n, d).to(device)
        return F.normalize(bases, dim=1)

    @staticmethod
    def _update_coef(xt: Tensor, bases: Tensor, coef: Tensor) -> Tensor:
        # coef <- coef * (X^T B) / (coef (B^T B) + eps); the R x R Gram matrix first (spec §3.4).
        num = torch.bmm(xt, bases)
        den = coef.bmm(bases.transpose(1, 2).bmm(bases))
        return coef * num / (den + 1e-6)

    def forward(self, x: Tensor) -> Tensor:
        """Factorise ``x`` (as ``[B*S, C/S, H*W]``) and return the low-rank reconstruction.

        The products use ``X^T`` (``[B*S, H*W, C/S]``), which is a free view of channels-last memory; the
        output has channels-last strides.
        """
        b, c, h, w = x.shape
        s, d, n = self.S, c // self.S, h * w
        # X^T with channel index c = s * D + d, as the official view(B * S, D, N) splits the channels.
        xt = x.permute(0, 2, 3, 1).reshape(b, n, s, d).transpose(1, 2).reshape(b * s, n, d)
        bases = self._bases(b * s, d, x.device).to(x.dtype)
        coef = torch.softmax(self.inv_t * torch.bmm(xt, bases), dim=-1)
        x_mat = xt.transpose(1, 2)
        # Unrolled multiplicative updates; gradients flow through all steps (official SegNeXt, no one-step trick).
        for _ in range(self.train_steps if self.training else self.eval_steps):
            coef = self._update_coef(xt, bases, coef)
            num = torch.bmm(x_mat, coef)
            den = bases.bmm(coef.transpose(1, 2).bmm(coef))
            bases = bases * num / (den + 1e-6)
        coef = self._update_coef(xt, bases, coef)
        # (B C^T)^T = C B^T: the reconstruction directly in [B*S, N, D] (NHWC) order.
        recon = torch.bmm(coef, bases.transpose(1, 2)).reshape(b, s, h, w, d)
        return recon.permute(0, 2, 3, 1, 4).reshape(b, h, w, c).permute(0, 3, 1, 2)


class Hamburger(nn.Module):
    """``ReLU(x + ham_out(NMF(ReLU(ham_in(x)))))``."""

    def __init__(self, ch: int, groups: int, nmf: NMF2D) -> None:
        super().__init__()
        self.ham_in = ConvModule(ch, ch, None, act=False)
        self.ham = nmf
        self.ham_out = ConvModule(ch, ch, groups, act=False)

    def forward(self, x: Tensor) -> Tensor:
        e = F.relu(self.ham_in(x), inplace=True)
        e = self.ham_out(self.ham(e))
        return F.relu(x + e, inplace=True)


class LightHamHead(Decoder):
    """SegNeXt decoder producing logits at the stride of its first selected level (8 by default).

    Shape:
        features: encoder maps; ``in_index`` selects the levels -> logits ``[B, K, H/s, W/s]``.
    """

    in_strides: ClassVar = PYRAMID_STRIDES
    default_loss: ClassVar[str] = "ce"
    default_loss_options: ClassVar = {"average": "all"}

    def __init__(self, in_features: Sequence[FeatureInfo], num_classes: int, options: LightHamHeadOptions) -> None:
        """Build the head for ``in_features`` (the :func:`ham` factory parses the options)."""
        super().__init__()
        opts = options
        n = len(in_features)
        for i in opts.in_index:
            if not -n <= i < n:
                raise OptionsError(f"ham: in_index {i} out of range for {n} encoder levels")
        self.options = opts
        self.in_index = [i % n for i in opts.in_index]
        in_ch = sum(in_features[i].channels for i in self.in_index)
        self.squeeze = ConvModule(in_ch, opts.ham_channels, opts.num_groups, act=True)
        nmf = NMF2D(
            opts.md_s, opts.md_r, opts.train_steps, opts.eval_steps, opts.inv_t, opts.nmf_seed, opts.ham_channels
        )
        self.hamburger = Hamburger(opts.ham_channels, opts.num_groups, nmf)
        self.align = ConvModule(opts.ham_channels, opts.channels, opts.num_groups, act=True)
        self.dropout = nn.Dropout2d(opts.dropout_ratio)
        self.conv_seg = nn.Conv2d(opts.channels, num_classes, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        # mmseg head init (spec §5.1): kaiming fan_out for ConvModules, N(0, 0.01) classifier.
        init_weights(self, conv="kaiming")
        init_classifier(self.conv_seg)

    def forward(self, features: Sequence[Tensor], image_size: tuple[int, int]) -> DecoderOutput:
        """Decode the selected levels; logits stay at the first selected level's resolution."""
        inputs = [features[i] for i in self.in_index]
        size = inputs[0].shape[2:]
        x = torch.cat([F.interpolate(t, size=size, mode="bilinear", align_corners=False) for t in inputs], dim=1)
        x = self.hamburger(self.squeeze(x.contiguous(memory_format=MEMORY_FORMATS[self.options.memory_format])))
        return DecoderOutput(self.conv_seg(self.dropout(self.align(x))))


def ham(in_features: Sequence[FeatureInfo], num_classes: int, **options: Any) -> LightHamHead:
    """Build the LightHamHead decoder; see :class:`LightHamHeadOptions`."""
    return LightHamHead(in_features, num_classes, parse_options(LightHamHeadOptions, options, component="ham"))

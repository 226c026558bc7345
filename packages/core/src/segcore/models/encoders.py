"""``timm:<name>``: any timm model that can return feature maps, as a segcore encoder.

Hierarchical models go through ``features_only=True``; plain ViTs (all tokens at one stride) go through
timm's ``forward_intermediates`` wrapper and are built with ``dynamic_img_size=True`` so that any input
size works (position embeddings are interpolated).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from segcore.config.options import FRACTION, SIZE, parse_options
from segcore.errors import OptionsError, SegcoreError
from segcore.models.contracts import Encoder
from segcore.plugins.specs import FeatureInfo

__all__ = ["TimmEncoderOptions", "TimmEncoder", "ChannelLayerNorm", "timm_encoder"]


@dataclass(frozen=True)
class TimmEncoderOptions:
    """Options of ``timm:<name>`` encoders.

    Attributes:
        out_indices: which feature levels (or, for plain ViTs, which blocks) to return; ``None`` keeps timm's
            default levels at strides 4 and above (the stride-2 stem level of CNNs is dropped).
        drop_path_rate: stochastic depth rate passed to timm.
        img_size: nominal input size for models that need one at construction (ViTs); any size works at
            run time.
        in_chans: number of input channels.
        size_divisor: the multiple inputs are padded to; ``None``: the largest stride. ``1`` runs a CNN at the
            input size as mmseg and transformers do (strided convs floor, the decoder resizes the maps).
        out_norm: ``"none"``, or ``"layernorm"``: a LayerNorm over channels on every returned map, as the
            mmseg / transformers ConvNeXt and Swin backbones add (their ``norm{i}`` / ``hidden_states_norms``).
        out_norm_eps: epsilon of those norms (ConvNeXt 1e-6, Swin 1e-5).
    """

    out_indices: tuple[int, ...] | None = None
    drop_path_rate: float = field(default=0.0, metadata=FRACTION)
    img_size: int | None = field(default=None, metadata=SIZE)
    in_chans: int = 3
    size_divisor: int | None = None
    out_norm: str = "none"
    out_norm_eps: float = 1e-6


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map (timm's ``LayerNorm2d``)."""

    def forward(self, x: Tensor) -> Tensor:
        """Shape: ``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps).permute(
            0, 3, 1, 2
        )


class TimmEncoder(Encoder):
    """Wrap ``timm.create_model(name, features_only=True)`` as an :class:`Encoder`.

    Shape:
        images: ``[B, 3, H, W]``, multiples of :attr:`size_divisor`.
        output: one ``[B, C_i, H / s_i, W / s_i]`` map per ``feature_info`` entry (rounded by the model's own
        convolutions at sizes that are not multiples of ``s_i``).
    """

    def __init__(self, model_name: str, pretrained: bool = False, options: TimmEncoderOptions | None = None) -> None:
        """Create the timm model; ``pretrained`` downloads timm's weights through timm."""
        super().__init__()
        import timm

        opts = options or TimmEncoderOptions()
        if isinstance(pretrained, str):
            raise OptionsError(
                f"timm:{model_name}: pretrained=True loads timm's own weights; another source ({pretrained!r}) is "
                "not supported for timm encoders"
            )
        if not timm.list_models(model_name) and model_name not in timm.list_pretrained(model_name + "*"):
            close = timm.list_models(f"*{model_name.split('.')[0][:6]}*")[:8]
            raise SegcoreError(
                f"timm has no model {model_name!r}" + (f"; similar: {', '.join(close)}" if close else "")
            )
        kwargs: dict = {"features_only": True, "pretrained": pretrained, "in_chans": opts.in_chans}
        if opts.out_indices is not None:
            kwargs["out_indices"] = tuple(opts.out_indices)
        if opts.drop_path_rate:
            kwargs["drop_path_rate"] = opts.drop_path_rate
        if opts.img_size is not None:
            kwargs["img_size"] = opts.img_size
        try:
            self.model = timm.create_model(model_name, dynamic_img_size=True, **kwargs)
        except TypeError:  # models without position embeddings take no dynamic_img_size
            try:
                self.model = timm.create_model(model_name, **kwargs)
            except RuntimeError as err:
                raise SegcoreError(f"timm cannot return features for {model_name!r}: {err}") from err
        except RuntimeError as err:
            raise SegcoreError(f"timm cannot return features for {model_name!r}: {err}") from err
        info = self.model.feature_info
        if opts.out_indices is None and min(info.reduction()) < 4 and max(info.reduction()) >= 4:
            # Segmentation decoders expect strides 4..32: drop the stride-2 stem level CNNs return by default.
            keep = tuple(i for i, r in zip(info.out_indices, info.reduction()) if r >= 4)
            self.model = timm.create_model(model_name, **{**kwargs, "out_indices": keep})
            info = self.model.feature_info
        resolved = list(info.out_indices)  # negative block indices of ViTs resolved by timm
        if any(a >= b for a, b in zip(resolved, resolved[1:])):
            # timm returns the maps in network order whatever order out_indices lists, while its feature_info
            # follows the list: the two would disagree.
            raise OptionsError(
                f"timm:{model_name}: out_indices {tuple(opts.out_indices or ())} must be in increasing network order "
                f"(timm returns the maps in that order), e.g. {tuple(sorted(set(resolved)))}"
            )
        self.feature_info = [FeatureInfo(int(c), int(r)) for c, r in zip(info.channels(), info.reduction())]
        self.model_name = model_name
        if opts.out_norm not in ("none", "layernorm"):
            raise OptionsError(f"timm:{model_name}: out_norm must be 'none' or 'layernorm', got {opts.out_norm!r}")
        self.out_norms = None
        if opts.out_norm == "layernorm":
            self.out_norms = nn.ModuleList(
                ChannelLayerNorm(i.channels, eps=opts.out_norm_eps) for i in self.feature_info
            )
        self.fixed_size: tuple[int, int] | None = None
        if opts.size_divisor is not None:  # given: e.g. a converted transformers ConvNeXt runs unpadded
            if opts.size_divisor < 1:
                raise OptionsError(f"timm:{model_name}: size_divisor must be >= 1, got {opts.size_divisor}")
            self._divisor = opts.size_divisor
        else:  # found out with forward passes, so after every submodule exists
            self._divisor, self.fixed_size = self._find_input_rule(opts.in_chans, opts.img_size)

    @property
    def size_divisor(self) -> int:
        """The padding this model needs: 1 (runs at any size), the patch size (plain ViT) or the largest stride."""
        return self._divisor

    def _runs_at(self, size: tuple[int, int], in_chans: int) -> list[Tensor] | None:
        """The maps at input ``size`` (zeros), or ``None`` when the model fails there."""
        like = next(self.model.parameters())
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                return self._maps(torch.zeros(1, in_chans, *size, device=like.device, dtype=like.dtype))
        except Exception:  # noqa: BLE001 - any failure at this size rules the size out
            return None
        finally:
            self.model.train(was_training)

    def _find_input_rule(self, in_chans: int, img_size: int | None) -> tuple[int, tuple[int, int] | None]:
        """Find out, once at build time, which inputs this timm model takes: ``(size_divisor, fixed_size)``.

        DESIGN.md "Input sizes". Tried in this order, each with a forward pass of zeros:

        * A plain ViT (every map at one stride, the patch size): that stride. timm's patch embedding refuses
          other sizes; mmseg's ViT pads bottom/right to the patch, which is what ``SegModel`` does.
        * 1 when the model runs at a size off every stride's grid and returns ``ceil(H / s) x ceil(W / s)``
          maps: its strided convolutions have "same" padding and see every input pixel, like the official MiT
          and MSCAN (ResNet, EfficientNet, RegNet, MobileNetV3, PVTv2, ...), so they need no padding.
        * The largest stride when the model runs at multiples of it: models whose unpadded patchify
          convolutions or poolings drop the last rows (ConvNeXt, DenseNet, VGG, anti-aliased variants), HRNet's
          and DLA's branches that must line up.
        * Its nominal input size ``N`` (``img_size``, else timm's ``input_size``) when it runs at ``N x 2N``:
          window and grid attention whose windows must tile every stage (MaxViT: a 7-token window at stride 32
          needs multiples of 224).
        * A fixed size ``N x N`` when it runs only there (LeViT's and EfficientFormer's attention biases, Swin
          without dynamic sizes): inputs are padded bottom/right to ``N x N`` and the maps cropped back, and a
          larger input is refused in words.

        Raises:
            SegcoreError: the model runs at none of these sizes.
        """
        strides = [info.stride for info in self.feature_info]
        largest = max(strides)
        if len(set(strides)) == 1:
            return largest, None
        h, w = 2 * largest + 1, 3 * largest + 5  # a multiple of no stride (all powers of two here)
        feats = self._runs_at((h, w), in_chans)
        if feats is not None and all(
            tuple(f.shape[-2:]) == (-(-h // s), -(-w // s)) for f, s in zip(feats, strides, strict=True)
        ):
            return 1, None
        if self._runs_at((2 * largest, 3 * largest), in_chans) is not None:
            return largest, None
        nominal = img_size or int(self.model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
        if nominal % largest == 0 and self._runs_at((nominal, 2 * nominal), in_chans) is not None:
            return nominal, None
        if self._runs_at((nominal, nominal), in_chans) is not None:
            return 1, (nominal, nominal)
        raise SegcoreError(
            f"timm:{self.model_name} runs at none of the input sizes segcore pads to ({h}x{w}, multiples of its "
            f"largest stride {largest}, multiples of its nominal size {nominal}, or {nominal}x{nominal} alone)"
        )

    def _maps(self, images: Tensor) -> list[Tensor]:
        """The model's maps, NCHW (channels-last models are permuted), before any padding of :meth:`forward`."""
        out = []
        for feat, info in zip(self.model(images), self.feature_info):
            if feat.ndim == 4 and feat.shape[1] != info.channels and feat.shape[-1] == info.channels:
                feat = feat.permute(0, 3, 1, 2)  # NHWC output of some timm models
            out.append(feat.contiguous() if not feat.is_contiguous() else feat)
        return out

    def _fixed(self, images: Tensor) -> list[Tensor]:
        """Pad ``images`` to :attr:`fixed_size`, run, and crop each map to ``ceil(H / s) x ceil(W / s)``."""
        (fh, fw), (h, w) = self.fixed_size, images.shape[-2:]  # type: ignore[misc]
        if h > fh or w > fw:
            raise SegcoreError(
                f"timm:{self.model_name} runs at {fh}x{fw} at most (its attention is built for that resolution), "
                f"got a {h}x{w} input: build it larger (--encoder-opt img_size=N) or evaluate in sliding windows "
                f"of at most {fh}x{fw} (--mode slide --crop-size {fh},{fw})"
            )
        maps = self._maps(F.pad(images, (0, fw - w, 0, fh - h)))
        return [m[..., : -(-h // i.stride), : -(-w // i.stride)].contiguous() for m, i in zip(maps, self.feature_info)]

    def forward(self, images: Tensor) -> list[Tensor]:
        """Return the feature maps (NCHW; channels-last models are permuted; fixed-size models padded and cropped)."""
        if torch.is_grad_enabled() and not self.training:
            # LeViT caches its attention biases in eval mode, with the graph of the first pass: a second backward
            # through them would fail. Gradients in eval mode (frozen statistics) recompute them.
            for module in self.model.modules():
                if isinstance(getattr(module, "attention_bias_cache", None), dict):
                    module.attention_bias_cache.clear()
        out = self._fixed(images) if self.fixed_size is not None else self._maps(images)
        if self.out_norms is not None:
            out = [norm(feat) for norm, feat in zip(self.out_norms, out)]
        return out


def timm_encoder(model_name: str, pretrained: bool = False, **options: object) -> nn.Module:
    """Build the encoder ``timm:<model_name>``.

    Example:
        >>> enc = timm_encoder("resnet18")  # doctest: +SKIP
        >>> [f.stride for f in enc.feature_info]  # doctest: +SKIP
        [2, 4, 8, 16, 32]
    """
    opts = parse_options(TimmEncoderOptions, options, component=f"timm:{model_name}")
    return TimmEncoder(model_name, pretrained=pretrained, options=opts)

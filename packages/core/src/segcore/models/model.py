"""Model assembly: any registered encoder + any registered decoder = a :class:`SegModel`.

The model sits on top of the weight I/O (:mod:`segcore.weights.state_dict` < :mod:`segcore.weights.convert` <
:mod:`segcore.weights.transformers_format` < :mod:`segcore.weights.pretrained` < :mod:`segcore.weights.hub` <
:mod:`segcore.weights.checkpoints`), which never imports it:
:meth:`SegModel.from_pretrained` passes its class down, as huggingface_hub's ``ModelHubMixin`` does.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from segcore.config.settings import IMAGENET_MEAN, IMAGENET_STD
from segcore.errors import CheckpointError, SegcoreError, WiringError
from segcore.models.adapters import build_adapter
from segcore.models.components import build_decoder, build_encoder, build_loss, validate_options
from segcore.models.contracts import Decoder, DecoderOutput, Encoder, Loss
from segcore.models.model_config import SegModelConfig
from segcore.models.ops import is_tracing
from segcore.plugins.registry import components, get_spec
from segcore.plugins.specs import ComponentSpec, FeatureInfo
from segcore.weights import checkpoints, convert, hub, pretrained
from segcore.weights.state_dict import load_state_dict_file

__all__ = [
    "SegModelConfig",
    "SegModel",
    "build_model",
    "convert_checkpoint",
    "max_param_bytes",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MAX_PARAM_BYTES_ENV",
    "DEFAULT_MAX_PARAM_BYTES",
]

# A config read from a file (config.json, local or from the Hub) is refused before anything is allocated when its
# model would hold more than this many bytes of parameters and buffers: 16 GiB is 4G fp32 values, 13x ViT-L.
MAX_PARAM_BYTES_ENV = "SEGCORE_MAX_PARAM_BYTES"
DEFAULT_MAX_PARAM_BYTES = 16 * 2**30


def max_param_bytes() -> int:
    """The most bytes of parameters and buffers a loaded config may ask for: ``SEGCORE_MAX_PARAM_BYTES`` or 16 GiB.

    Raises:
        SegcoreError: ``SEGCORE_MAX_PARAM_BYTES`` is set but is not a positive whole number of bytes.
    """
    text = os.environ.get(MAX_PARAM_BYTES_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PARAM_BYTES
    if not text.isdigit() or int(text) <= 0:
        raise SegcoreError(
            f"{MAX_PARAM_BYTES_ENV}={text!r} is not a positive whole number of bytes; give e.g. "
            f"{MAX_PARAM_BYTES_ENV}={2 * DEFAULT_MAX_PARAM_BYTES} (32 GiB), or unset it for 16 GiB"
        )
    return int(text)


class SegModel(nn.Module):
    """An encoder, an optional adapter and a decoder, described by a :class:`SegModelConfig`.

    ``model(images)`` accepts any input size and runs the network as the official one does (DESIGN.md "Input
    sizes"): the input is zero-padded at the bottom/right only to the encoder's :attr:`size_divisor` (none for
    MiT, MSCAN or CNNs; 16 for a ViT/16, mmseg's "corner" padding), the decoder resizes its maps as the
    official heads do, and the logits are resized (bilinear, ``align_corners=False``) to the unpadded input
    size, as mmseg's ``EncoderDecoder.encode_decode`` resizes the head's output to the image it was given.
    ``uint8`` images (0-255) are normalised with ``config.mean``/``config.std``; floating point images are
    taken as already normalised.

    Example:
        >>> model = segcore.build_model(encoder="timm:resnet18", decoder="mlp", num_classes=3)  # doctest: +SKIP
        >>> model(torch.rand(1, 3, 80, 96)).shape  # doctest: +SKIP
        torch.Size([1, 3, 80, 96])
    """

    def __init__(self, config: SegModelConfig, pretrained_encoder: bool | str = False, check: bool = True) -> None:
        """Build the components named by ``config`` through the registry and check their wiring.

        Args:
            config: what to build.
            pretrained_encoder: load the encoder's registered pretrained weights; a string names where from (a
                registered checkpoint, a Hub repo such as ``nvidia/mit-b0`` or a folder) for encoders that take one.
            check: run a tiny forward pass at build time so that a mismatch is reported in words.
        """
        super().__init__()
        self.config = config
        if config.num_classes < 2:  # one class: zero loss, zero gradient, every pixel the same label
            raise SegcoreError(
                f"num_classes must be >= 2, got {config.num_classes} (binary segmentation needs 2 classes: "
                "background and foreground)"
            )
        # Validate every option before building anything heavy.
        validate_options("encoders", config.encoder, config.encoder_options)
        decoder_spec: ComponentSpec = get_spec("decoders", config.decoder)
        validate_options("decoders", config.decoder, config.decoder_options)
        self.encoder: Encoder = build_encoder(config.encoder, pretrained=pretrained_encoder, **config.encoder_options)
        in_features = list(self.encoder.feature_info)
        # The decoder gets exactly the levels it declares: the encoder's own maps, a selection of them, or
        # maps an adapter builds (segcore.models.adapters).
        self.adapter: nn.Module | None = _adapter_for(config, decoder_spec, in_features)
        if self.adapter is not None:
            in_features = list(self.adapter.feature_info)
        self.decoder_in_features = in_features
        self.decoder: Decoder = build_decoder(config.decoder, in_features, config.num_classes, **config.decoder_options)
        self.config = config.with_derived(getattr(self.decoder, "derived_options", {}))
        self.register_buffer("mean", torch.tensor(config.mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self._loss: Loss | None = None
        if check:
            self._check_wiring()

    @classmethod
    def check_config(cls, config: SegModelConfig, source: str = "") -> int:
        """Check ``config`` before a model is allocated; return the bytes of its parameters and buffers.

        The model is built on the meta device (no memory, no initialisation), which checks every component option
        (types and ranges, :mod:`segcore.config.options`), and its size is compared with :func:`max_param_bytes`: a
        tampered ``config.json`` (``num_classes: 1000000000``, ``channels: 10000000``) is refused in words.

        Args:
            config: the config to check.
            source: the file it was read from, named in errors.

        Raises:
            SegcoreError: an invalid option (its own type), a model that cannot be built, or one above the limit
                (:class:`CheckpointError`), naming ``source``.
        """
        prefix = f"{source}: " if source else ""
        try:
            with torch.device("meta"):
                model = cls(config, check=False)
        except SegcoreError as err:
            raise type(err)(f"{prefix}{err}") from err
        except Exception as err:  # noqa: BLE001 - a plugin's own check, e.g. dims that heads do not divide
            raise CheckpointError(
                f"{prefix}the model of this config cannot be built: {type(err).__name__}: {err}"
            ) from err
        size = sum(t.numel() * t.element_size() for t in itertools.chain(model.parameters(), model.buffers()))
        limit = max_param_bytes()
        if size > limit:
            raise CheckpointError(
                f"{prefix}the model ({config.encoder} + {config.decoder}, {config.num_classes} classes) would hold "
                f"{_bytes(size)} of parameters and buffers, above the limit of {_bytes(limit)}: "
                f"check num_classes and the channel and dim options there, or set {MAX_PARAM_BYTES_ENV} (bytes) "
                "higher if the model really is this large"
            )
        return size

    # ----------------------------------------------------------------------------------------------------- wiring
    @property
    def size_divisor(self) -> int:
        """The multiple of the input size the encoder needs (:attr:`Encoder.size_divisor`); inputs are padded to it.

        Only the encoder's own need counts: decoders run on maps of any size (they resize to the map they work
        at), so their input strides force no padding.
        """
        return int(getattr(self.encoder, "size_divisor", 1))

    def _check_wiring(self) -> None:
        # A size at which every map is exactly H / stride, so that the strides can be read off the outputs.
        strides = [info.stride for info in (*self.encoder.feature_info, *self.decoder_in_features)]
        size = 2 * math.lcm(self.size_divisor, *strides)
        was_training = self.training
        self.eval()
        try:
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                feats = self.encoder(torch.zeros(1, 3, size, size))
                described = [(i.channels, i.stride) for i in self.encoder.feature_info]
                got = [(f.shape[1], size // f.shape[-1] if f.shape[-1] else 0) for f in feats]
                if described != got:
                    raise WiringError(
                        f"encoder {self.config.encoder!r} describes its outputs as (channels, stride) {described} "
                        f"but returns {got}; its feature_info is wrong."
                    )
                if self.adapter is not None:
                    feats = self.adapter(feats)
                out = self.decoder(feats, (size, size))
        except WiringError:
            raise
        except Exception as err:  # report a shape error at build time, in words
            raise WiringError(
                f"decoder {self.config.decoder!r} cannot run on the outputs of encoder {self.config.encoder!r} "
                f"(channels/strides {[(i.channels, i.stride) for i in self.decoder_in_features]}): "
                f"{type(err).__name__}: {err}"
            ) from err
        finally:
            self.train(was_training)
        if not isinstance(out, DecoderOutput) or out.logits.shape[1] != self.config.num_classes:
            raise WiringError(
                f"decoder {self.config.decoder!r} must return DecoderOutput with {self.config.num_classes} classes"
            )

    # ---------------------------------------------------------------------------------------------------- forward
    def normalize(self, images: Tensor) -> Tensor:
        """Normalise ``uint8`` images with the config's mean/std; float images pass through unchanged."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise SegcoreError(f"expected images of shape [B, 3, H, W], got {tuple(images.shape)}")
        if images.dtype == torch.uint8:
            return (images.float() - self.mean) / self.std
        if not images.is_floating_point():
            raise SegcoreError(f"images must be uint8 (0-255) or floating point (normalised), got {images.dtype}")
        return images

    def _padding(self, height: int, width: int) -> tuple[int, int]:
        """Rows and columns to add at the bottom/right so that both sides are multiples of :attr:`size_divisor`."""
        return _pad_to(height, self.size_divisor), _pad_to(width, self.size_divisor)

    def forward_output(self, images: Tensor) -> DecoderOutput:
        """Run encoder, adapter and decoder on images whose size is already a multiple of ``size_divisor``.

        The decoder is told the size of ``images`` as its ``image_size``; its output is at its own resolution
        (e.g. the first map's), which :meth:`forward` resizes to the input size.
        """
        features = self.encoder(images)
        if self.adapter is not None:
            features = self.adapter(features)
        return self.decoder(features, (images.shape[-2], images.shape[-1]))

    def forward(self, images: Tensor) -> Tensor:
        """Return class logits ``[B, K, H, W]`` at the input size, for any input size.

        The input is padded at the bottom/right to :attr:`size_divisor` only (zeros in normalised space, as
        mmseg's "corner" padding inside the ViT's patch embedding); the decoder's logits are then resized to
        ``(H, W)``, not cropped: the official segmentor resizes the head output to the unpadded image it was
        given, the padding being internal to the backbone (mmseg 0.x ``EncoderDecoder.encode_decode``;
        specs/segvit.md §1, §6).

        Shape:
            images: ``[B, 3, H, W]``, uint8 (0-255) or normalised float.
            output: ``[B, K, H, W]``.
        """
        images = self.normalize(images)
        height, width = images.shape[-2:]
        pad_h, pad_w = self._padding(height, width)
        # While traced for export, pad even by zero (an exact copy): the branch would be frozen at the example size.
        if pad_h or pad_w or is_tracing():
            images = F.pad(images, (0, pad_w, 0, pad_h))
        logits = self.forward_output(images).logits
        return F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)

    @torch.no_grad()
    def predict(self, images: Tensor) -> Tensor:
        """Return the label map ``[B, H, W]`` (long) of ``images`` in eval mode."""
        was_training = self.training
        self.eval()
        try:
            return self(images).argmax(dim=1)
        finally:
            self.train(was_training)

    # ------------------------------------------------------------------------------------------------------- loss
    @property
    def loss_fn(self) -> Loss:
        """The loss of ``config.loss``, or the decoder's default loss."""
        if self._loss is None:
            cfg = self.config
            if cfg.loss:
                name, options = cfg.loss, dict(cfg.loss_options)
            else:
                spec: ComponentSpec = get_spec("decoders", cfg.decoder)
                name = getattr(self.decoder, "default_loss", None) or spec.default_loss
                defaults = getattr(self.decoder, "default_loss_options", None) or spec.default_loss_options
                options = {**defaults, **cfg.loss_options}
            loss = build_loss(name, cfg.num_classes, ignore_index=cfg.ignore_index, **options)
            object.__setattr__(self, "_loss", loss)  # not a submodule: keep it out of state_dict
        return self._loss  # type: ignore[return-value]

    def check_labels(self, labels: Tensor) -> None:
        """Raise if ``labels`` holds a value that is neither a class id nor ``ignore_index``."""
        if labels.dtype not in (torch.int64, torch.int32, torch.uint8, torch.int16):
            raise SegcoreError(f"labels must be an integer tensor, got {labels.dtype}")
        bad = (labels >= self.config.num_classes) & (labels != self.config.ignore_index) | (labels < 0)
        if bool(bad.any()):
            values = sorted({int(v) for v in labels[bad].unique()[:10]})
            raise SegcoreError(
                f"labels contain values {values} outside 0..{self.config.num_classes - 1} that are not the ignore "
                f"index {self.config.ignore_index}; map them to class ids or to {self.config.ignore_index}"
            )

    def compute_loss(self, images: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """Forward ``images`` and return the loss terms against ``labels`` (``"loss"`` is the total).

        Shape:
            images: ``[B, 3, H, W]``.
            labels: ``[B, H, W]`` long, class ids or ``ignore_index``.
        """
        images = self.normalize(images)
        if labels.shape != (images.shape[0], *images.shape[-2:]):
            raise SegcoreError(f"labels of shape {tuple(labels.shape)} do not match images {tuple(images.shape)}")
        self.check_labels(labels)
        labels = labels.long()
        # Labels stay at the input size; the loss resizes the logits to them (official training). Only the
        # encoder's own padding is added, to images and labels (ignore_index) alike, as mmseg's train-time Pad.
        pad_h, pad_w = self._padding(*images.shape[-2:])
        if pad_h or pad_w:
            images = F.pad(images, (0, pad_w, 0, pad_h))
            labels = F.pad(labels, (0, pad_w, 0, pad_h), value=self.config.ignore_index)
        output = self.forward_output(images)
        return self.loss_fn(output, labels)

    # ----------------------------------------------------------------------------------------------------- saving
    def save_pretrained(self, save_directory: str | Path, model_card: str | None = None) -> Path:
        """Write ``config.json``, ``model.safetensors`` and a model card ``README.md`` to ``save_directory``.

        Files segcore did not write are never replaced (see :func:`segcore.weights.pretrained.save_pretrained`).
        """
        return pretrained.save_pretrained(self, save_directory, model_card=model_card)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        map_location: str | torch.device = "cpu",
        *,
        token: str | bool | None = None,
        local_files_only: bool = False,
        force_download: bool = False,
    ) -> SegModel:
        """Load a model from a local folder, a Hub repo id or a registered checkpoint name.

        segcore folders and repos load strictly (missing, unexpected or mis-shaped tensors raise a report grouped
        by module); transformers SegFormer and UperNet + ConvNeXt repos are converted on the fly. The keywords
        behave as in huggingface_hub, and ``HF_HUB_OFFLINE=1`` is honoured (see
        :func:`segcore.weights.checkpoints.from_pretrained`).

        Example:
            >>> model = segcore.SegModel.from_pretrained("segnext-b-ade20k")  # doctest: +SKIP
            >>> model = segcore.SegModel.from_pretrained("nvidia/segformer-b0-finetuned-ade-512-512")  # doctest: +SKIP
        """
        return checkpoints.from_pretrained(
            cls,
            name_or_path,
            revision=revision,
            cache_dir=cache_dir,
            map_location=map_location,
            token=token,
            local_files_only=local_files_only,
            force_download=force_download,
        )

    def push_to_hub(
        self,
        repo_id: str,
        private: bool = False,
        commit_message: str = "Upload segcore model",
        token: str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        commit_description: str | None = None,
    ) -> str:
        """Upload this model as a ``from_pretrained`` folder with its card to ``repo_id``; the model is not changed.

        Returns the commit URL (the pull request's with ``create_pr``); see :func:`segcore.weights.hub.push_to_hub`.
        """
        return hub.push_to_hub(
            self,
            repo_id,
            private=private,
            commit_message=commit_message,
            token=token,
            revision=revision,
            create_pr=create_pr,
            commit_description=commit_description,
        )


def _adapter_for(
    config: SegModelConfig, decoder_spec: ComponentSpec, in_features: list[FeatureInfo]
) -> nn.Module | None:
    """The adapter between the encoder's maps and the strides the decoder declares; errors name both sides."""
    strides = decoder_spec.in_strides
    try:
        return build_adapter(in_features, strides)
    except WiringError as err:
        flexible = sorted(name for name, spec in components("decoders").items() if spec.in_strides is None)
        raise WiringError(
            f"decoder {config.decoder!r} reads maps at strides {list(strides or [])} but encoder {config.encoder!r} "
            f"returns {describe(in_features)}: {err}. Choose encoder outputs at power-of-two multiples of those "
            f"strides (e.g. encoder option out_indices) or a decoder that reads any maps ({', '.join(flexible)})."
        ) from err


def _bytes(n: int) -> str:
    """``n`` bytes in words: ``64.0 GiB``, ``2.1 MiB``, ``512 bytes``."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def _pad_to(n: int, divisor: int) -> int:
    # (-n) % divisor as a floor division of non-negative numbers: torch.compile with dynamic shapes fails on a
    # symbolic modulo here (torch 2.14: no python_mod in TensorReferenceAnalysis), and the ONNX exporter
    # rounds the traced floor division of a negative number towards zero.
    return (n + divisor - 1) // divisor * divisor - n


def build_model(
    encoder: str,
    decoder: str,
    num_classes: int,
    encoder_options: Mapping[str, Any] | None = None,
    decoder_options: Mapping[str, Any] | None = None,
    pretrained_encoder: bool | str = False,
    pair_defaults: bool = True,
    **config: Any,
) -> SegModel:
    """Build a :class:`SegModel` from registered component names.

    Naming a registered paper pair builds the paper's model: the pair's options (``segcore list --kind pairs``)
    apply under the ones given here, so ``build_model("mscan-b", "ham", 150)`` is SegNeXt-B with its 512-channel
    head. The config stores the options as applied.

    Args:
        encoder: encoder name (``"mscan-b"``, ``"timm:convnext_tiny"``, ...).
        decoder: decoder name (``"ham"``, ``"mlp"``, ...).
        num_classes: number of classes.
        encoder_options: encoder options (validated).
        decoder_options: decoder options (validated).
        pretrained_encoder: load the encoder's pretrained weights; a string names where from (a registered
            checkpoint, a Hub repo such as ``nvidia/mit-b2`` or a folder; MiT encoders).
        pair_defaults: apply the options of the registered paper pair of ``encoder`` + ``decoder``, if any.
        **config: other :class:`SegModelConfig` fields (``class_names``, ``mean``, ``loss``, ...).

    Example:
        >>> model = segcore.build_model(encoder="mscan-b", decoder="segdeformer", num_classes=150)  # doctest: +SKIP
    """
    cfg = SegModelConfig.from_names(
        encoder, decoder, num_classes, encoder_options, decoder_options, pair_defaults, **config
    )
    return SegModel(cfg, pretrained_encoder=pretrained_encoder)


def convert_checkpoint(
    checkpoint: str | Path | Mapping[str, Tensor],
    format: str = "mmseg",  # noqa: A002 - the public name of DESIGN.md
    encoder: str | None = None,
    decoder: str | None = None,
    num_classes: int | None = None,
    official_config: Mapping[str, Any] | None = None,
    encoder_options: Mapping[str, Any] | None = None,
    decoder_options: Mapping[str, Any] | None = None,
    **config: Any,
) -> SegModel:
    """Build a :class:`SegModel` and load an official full-model checkpoint into it.

    The checkpoint is converted by the plugins' converters (:func:`segcore.weights.convert.load_official`) and loaded
    strictly; any mismatch is reported grouped by module.

    Args:
        checkpoint: a file path or an already loaded state dict.
        format: the official format (``"mmseg"``: ``backbone.`` / ``decode_head.`` keys).
        encoder: encoder name, unless ``official_config`` gives it.
        decoder: decoder name, unless ``official_config`` gives it.
        num_classes: classes of the head, unless ``official_config`` gives it.
        official_config: the ``model`` part of an official config (its ``backbone`` and ``decode_head``
            dicts); builds the matching model.
        encoder_options: options overriding those derived from ``official_config``.
        decoder_options: options overriding those derived from ``official_config``.
        **config: further :class:`SegModelConfig` fields (``class_names``, ``palette``, ...).

    Raises:
        CheckpointError: missing, unexpected or mis-shaped keys, listed by module.

    Example:
        >>> model = segcore.convert_checkpoint("segnext_tiny_512x512_ade_160k.pth", format="mmseg",
        ...                                    encoder="mscan-t", decoder="ham", num_classes=150)  # doctest: +SKIP
    """
    built = convert.official_model_fields(official_config) if official_config is not None else {}
    encoder = encoder or built.get("encoder")
    decoder = decoder or built.get("decoder")
    num_classes = num_classes or built.get("num_classes")
    if not (encoder and decoder and num_classes):
        raise SegcoreError("give encoder, decoder and num_classes, or official_config")
    enc_opts = {**built.get("encoder_options", {}), **(encoder_options or {})}
    dec_opts = {**built.get("decoder_options", {}), **(decoder_options or {})}
    path = checkpoint if isinstance(checkpoint, (str, Path)) else None
    state = load_state_dict_file(path) if path is not None else dict(checkpoint)  # type: ignore[arg-type]
    model = build_model(encoder, decoder, int(num_classes), enc_opts, dec_opts, **config)
    return convert.load_official(model, state, format, path)


def describe(infos: Sequence[FeatureInfo]) -> str:
    """Describe feature maps as ``C@sS`` pairs, e.g. ``64@s4, 128@s8``."""
    return ", ".join(f"{i.channels}@s{i.stride}" for i in infos)

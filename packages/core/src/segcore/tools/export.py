"""Export a :class:`~segcore.SegModel` to ONNX with dynamic batch, height and width, checked against PyTorch.

The graph is ``SegModel.forward`` on normalised float images: ``images`` ``[batch, 3, height, width]`` (what
``(uint8 - config.mean) / config.std`` gives) to ``logits`` ``[batch, K, height, width]``, including the
padding to the encoder's size divisor and the resize back to the input size, so any input size works. The
config (mean, std, class names) is stored in the file's metadata (``segcore.config``).

Exporter: torch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``). It needs nothing
beyond ``onnx`` (the ``dynamo=True`` exporter also needs ``onnxscript``, and its ``torch.export`` front end
refuses Python decisions on symbolic sizes instead of recording them), and it records what one forward pass at
the example size runs. Model code therefore keeps size-dependent Python branches out of the forward pass or
decides them from build-time strides (see :mod:`segcore.models.ops`), and every export is checked here with
onnxruntime at a second size that is a multiple neither of the size divisor nor of the largest map stride (so
maps have rounded sizes), and a second batch size, so that a decision frozen at the example size is caught
rather than shipped.

Example:
    >>> report = segcore.tools.export.export_onnx(model, "model.onnx")  # doctest: +SKIP
    >>> [(c.shape, c.max_abs_diff) for c in report.checks]  # doctest: +SKIP
    [((1, 3, 64, 64), 2.1e-07), ((2, 3, 81, 113), 2.4e-07)]
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from segcore.data.storage import atomic_path
from segcore.errors import SegcoreError

if TYPE_CHECKING:
    from segcore.models.model import SegModel

__all__ = ["ExportError", "ExportCheck", "ExportReport", "export_onnx", "verify_onnx", "default_sizes"]

INPUT_NAME = "images"
OUTPUT_NAME = "logits"
DEFAULT_OPSET = 17
_INSTALL = "pip install 'segcore[onnx]'"


class ExportError(SegcoreError):
    """A model that cannot be exported faithfully: random at inference, or onnxruntime disagrees with PyTorch."""


@dataclass(frozen=True)
class ExportCheck:
    """onnxruntime against PyTorch on one random input.

    Attributes:
        shape: input shape ``(B, 3, H, W)``.
        max_abs_diff: largest absolute difference of the logits.
        max_abs_ref: largest absolute PyTorch logit (the scale ``rtol`` applies to).
        tolerance: ``atol + rtol * max_abs_ref``.
    """

    shape: tuple[int, int, int, int]
    max_abs_diff: float
    max_abs_ref: float
    tolerance: float

    @property
    def passed(self) -> bool:
        """True when the difference is within the tolerance."""
        return self.max_abs_diff <= self.tolerance

    def describe(self) -> str:
        """One line: ``2x3x81x113 max abs diff 2.4e-07 (tolerance 1.0e-04)``."""
        shape = "x".join(str(s) for s in self.shape)
        return f"{shape} max abs diff {self.max_abs_diff:.1e} (tolerance {self.tolerance:.1e})"


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote and verified.

    Attributes:
        path: the ``.onnx`` file.
        opset: ONNX opset.
        dynamic: batch, height and width are dynamic axes.
        example_shape: input shape the graph was traced at.
        size_mb: file size in MB.
        checks: onnxruntime-vs-PyTorch comparisons (empty when not verified).
        onnxruntime: onnxruntime version used for the checks.
    """

    path: str
    opset: int
    dynamic: bool
    example_shape: tuple[int, int, int, int]
    size_mb: float
    checks: list[ExportCheck] = field(default_factory=list)
    onnxruntime: str | None = None
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME

    @property
    def verified(self) -> bool:
        """True when at least one check ran and every check passed."""
        return bool(self.checks) and all(c.passed for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (checks as dicts with ``passed``)."""
        data = asdict(self)
        data["checks"] = [asdict(c) | {"passed": c.passed} for c in self.checks]
        data["verified"] = self.verified
        return data


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    values = tuple(int(s) for s in size)
    if len(values) not in (1, 2) or min(values) < 1:
        raise SegcoreError(f"a size is S or (H, W) with positive sides, got {size!r}")
    return values[0], values[-1]


def _off_grid(n: int, divisor: int) -> int:
    # A side that is not a multiple of the divisor (so SegModel pads, or maps are rounded), other than n.
    m = n + divisor // 2 + 1
    return m + 1 if divisor > 1 and m % divisor == 0 else m


def _grid(model: SegModel) -> int:
    # The size divisor and every map stride: off this grid SegModel pads or the encoder rounds its map sizes.
    strides = [info.stride for info in (*model.encoder.feature_info, *model.decoder_in_features)]
    return math.lcm(model.size_divisor, *strides)


def default_sizes(model: SegModel, example_size: int | Sequence[int] | None = None) -> list[tuple[int, int, int]]:
    """The ``(B, H, W)`` sizes :func:`export_onnx` verifies by default.

    The example size (default: ``max(64, 2 x size_divisor)`` per side, rounded up to the divisor) at batch 1,
    then batch 2 at sides that are multiples neither of the size divisor nor of any map stride (height and width
    differ), e.g. 81x113 for a size divisor 1 and strides 4 to 32.
    """
    d = model.size_divisor
    if example_size is None:
        side = -(-max(64, 2 * d) // d) * d
        h, w = side, side
    else:
        h, w = _pair(example_size)
    g = _grid(model)
    return [(1, h, w), (2, _off_grid(h, g), _off_grid(w + g, g))]


def onnx_available() -> bool:
    """Whether ``onnx`` and ``onnxruntime`` (the ``segcore[onnx]`` extra) can be imported."""
    import importlib

    try:
        for module in ("onnx", "onnxruntime"):
            importlib.import_module(module)
    except ImportError:
        return False
    return True


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise SegcoreError(f"ONNX export needs {module}: {_INSTALL}") from err


def _inputs(shape: Sequence[int], seed: int, like: torch.Tensor) -> torch.Tensor:
    # Standard-normal images: what normalised 0-255 images look like to the network.
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(tuple(shape), generator=gen).to(device=like.device, dtype=like.dtype)


def _check_deterministic(model: SegModel, x: torch.Tensor, tolerance: float) -> None:
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        a = model(x)
        torch.manual_seed(1)
        b = model(x)
    diff = float((a - b).abs().max())
    if diff > tolerance:
        raise ExportError(
            f"{model.config.encoder} + {model.config.decoder} is random at inference (two forward passes on one "
            f"input differ by {diff:.2e}); an exported graph could not be compared with it. Make it deterministic "
            "(the ham decoder: set its nmf_seed option, e.g. --decoder-opt nmf_seed=0)"
        )


def _trace(model: SegModel, example: torch.Tensor, path: Path, opset: int, dynamic: bool) -> None:
    """Trace ``model`` on ``example`` into the ONNX file ``path`` (inputs, outputs and dynamic axes named)."""
    axes = {0: "batch", 2: "height", 3: "width"}
    # Traced with an input that requires grad: otherwise some torch modules (nn.MultiheadAttention,
    # nn.TransformerEncoderLayer) run fused inference kernels that have no ONNX form.
    traced_input = example.detach().requires_grad_(True)
    with warnings.catch_warnings(), torch.enable_grad():
        # Tracer warnings flag Python values read from tensors; the checks below test what they warn about.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # The choice of exporter is deliberate (module docstring); its deprecation notice is not for users.
        warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based", DeprecationWarning)
        warnings.filterwarnings("ignore", "The feature will be removed", DeprecationWarning)  # torch-internal
        warnings.filterwarnings("ignore", "Constant folding - Only steps=1", UserWarning)  # strided slices stay
        torch.onnx.export(
            model,
            (traced_input,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes} if dynamic else None,
            do_constant_folding=True,
        )


def _write_metadata(path: Path, model: SegModel) -> None:
    onnx = _require("onnx")
    import segcore

    proto = onnx.load(str(path))
    meta = {
        "segcore.version": segcore.__version__,
        "segcore.config": json.dumps(model.config.to_dict()),
        "segcore.input": f"{INPUT_NAME}: float32 [batch, 3, height, width], (0-255 RGB - config.mean) / config.std",
        "segcore.output": f"{OUTPUT_NAME}: float32 [batch, {model.config.num_classes}, height, width], class logits",
    }
    del proto.metadata_props[:]
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))
    onnx.checker.check_model(str(path))


def verify_onnx(
    model: SegModel,
    path: str | Path,
    sizes: Sequence[tuple[int, int, int]],
    *,
    atol: float = 1e-4,
    rtol: float = 1e-4,
    seed: int = 0,
) -> list[ExportCheck]:
    """Run the ONNX file with onnxruntime (CPU) at each ``(B, H, W)`` and compare with ``model`` in eval mode.

    Raises:
        ExportError: the outputs differ by more than ``atol + rtol * max|logits|`` or have another shape.
    """
    ort = _require("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # share the cores as torch does
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    like = next(model.parameters())
    was_training = model.training
    model.eval()
    checks: list[ExportCheck] = []
    try:
        for i, (b, h, w) in enumerate(sizes):
            x = _inputs((b, 3, h, w), seed + i, like)
            with torch.no_grad():
                ref = model(x).float().cpu()
            out = torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.float().cpu().numpy()})[0])
            if tuple(out.shape) != tuple(ref.shape):
                raise ExportError(
                    f"{path}: onnxruntime returns logits of shape {tuple(out.shape)} for input {(b, 3, h, w)}, "
                    f"PyTorch {tuple(ref.shape)}"
                )
            ref_max = float(ref.abs().max())
            checks.append(ExportCheck((b, 3, h, w), float((out - ref).abs().max()), ref_max, atol + rtol * ref_max))
    finally:
        model.train(was_training)
    failed = [c for c in checks if not c.passed]
    if failed:
        raise ExportError(
            f"{path}: onnxruntime disagrees with PyTorch: "
            + "; ".join(c.describe() for c in checks)
            + " (a size-dependent decision frozen at the example size, or an op onnxruntime computes differently)"
        )
    return checks


def export_onnx(
    model: SegModel,
    path: str | Path,
    *,
    example_size: int | Sequence[int] | None = None,
    batch_size: int = 1,
    opset: int = DEFAULT_OPSET,
    dynamic: bool = True,
    verify: bool = True,
    verify_sizes: Sequence[tuple[int, int, int]] | None = None,
    atol: float = 1e-4,
    rtol: float = 1e-4,
    seed: int = 0,
) -> ExportReport:
    """Export ``model.forward`` (eval mode) to ONNX at ``path`` and verify it with onnxruntime.

    Args:
        model: the model; exported in eval mode, its mode is restored afterwards.
        path: the ``.onnx`` file to write (parent folders are created).
        example_size: ``S`` or ``(H, W)`` of the traced example (default: ``max(64, 2 x size_divisor)``).
        batch_size: batch of the traced example.
        opset: ONNX opset.
        dynamic: batch, height and width as dynamic axes (else the graph only accepts the example shape).
        verify: compare onnxruntime with PyTorch (needs ``onnxruntime``).
        verify_sizes: ``(B, H, W)`` to verify at (default: :func:`default_sizes`; only the example when not
            ``dynamic``).
        atol: absolute tolerance of the comparison.
        rtol: tolerance relative to the largest absolute PyTorch logit.
        seed: seed of the random inputs.

    Raises:
        ExportError: the model is random at inference (nothing to compare with), or onnxruntime disagrees.
        SegcoreError: ``onnx``/``onnxruntime`` are missing (``pip install 'segcore[onnx]'``) or a size is invalid.
    """
    _require("onnx")
    if verify:
        _require("onnxruntime")
    if batch_size < 1:
        raise SegcoreError(f"batch_size must be >= 1, got {batch_size}")
    h, w = default_sizes(model, example_size)[0][1:]
    sizes = list(verify_sizes) if verify_sizes is not None else default_sizes(model, (h, w))
    sizes = [(batch_size, h, w)] + [s for s in sizes if tuple(s) != (batch_size, h, w)]
    if not dynamic:
        if verify_sizes is not None and any(tuple(s) != (batch_size, h, w) for s in verify_sizes):
            raise SegcoreError("a static export (dynamic=False) only accepts its example shape; verify at that one")
        sizes = sizes[:1]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    like = next(model.parameters())
    example = _inputs((batch_size, 3, h, w), seed, like)
    was_training = model.training
    model.eval()
    try:
        # Also runs the model once eagerly before tracing (modules may prepare constants on a first call).
        _check_deterministic(model, example, atol)
        with atomic_path(path, "ONNX file") as tmp:  # a failed or interrupted export leaves no partial file
            _trace(model, example, tmp, opset, dynamic)
            _write_metadata(tmp, model)
    finally:
        model.train(was_training)
    report = ExportReport(
        path=str(path),
        opset=opset,
        dynamic=dynamic,
        example_shape=(batch_size, 3, h, w),
        size_mb=path.stat().st_size / 1e6,
    )
    if verify:
        report.checks = verify_onnx(model, path, sizes, atol=atol, rtol=rtol, seed=seed)
        report.onnxruntime = _require("onnxruntime").__version__
    return report

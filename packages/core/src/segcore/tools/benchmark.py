"""Measure models: parameters, multiply-adds, latency, throughput and peak memory.

Multiply-adds are counted the way the papers count them: convolutions, linear layers, matrix products
(``mm``/``bmm``/``einsum``, which lower to them) and scaled-dot-product attention; one multiply-add
counts 1 (torch's ``FlopCounterMode`` counts 2 per multiply-add). Normalisation, activations and
interpolation are not counted, as in most papers' tables (convention ``"segcore"``, the default).

Convention ``"torchprofile"`` adds what torchprofile's ``profile_macs`` (the counter of the SegNeXt paper)
also counts: one per output value of element-wise products, of affine batch/group/layer/instance norms,
of average pooling and means and of leaky ReLU, and four per output value of bilinear upsampling.
"""

from __future__ import annotations

import contextlib
import platform
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils import flop_counter
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from segcore.evaluation.inference import precision as autocast

MacsConvention = Literal["segcore", "torchprofile"]
MACS_CONVENTIONS: tuple[str, ...] = ("segcore", "torchprofile")

__all__ = [
    "NUM_CLASSES",
    "BenchmarkRow",
    "benchmark_rows",
    "find_row",
    "time_interleaved",
    "PEER_REFERENCE",
    "SEGFORMER_B2",
    "build_segformer_b2",
    "MACS_CONVENTIONS",
    "count_params_and_macs",
    "BenchmarkResult",
    "benchmark_model",
    "protocol",
    "cpu_description",
]


def _sdpa_flops(query_shape: torch.Size, key_shape: torch.Size, value_shape: torch.Size, *_: Any, **__: Any) -> int:
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


# Attention kernels the counter has no formula for (it knows the CUDA ones): the CPU flash kernel that
# F.scaled_dot_product_attention dispatches to on CPU would otherwise count 0.
_EXTRA_FORMULAS = {
    getattr(torch.ops.aten, name): _sdpa_flops
    for name in ("_scaled_dot_product_flash_attention_for_cpu",)
    if hasattr(torch.ops.aten, name)
}


_aten = torch.ops.aten
# torchprofile's extra counts, by the ATen op that reaches the dispatcher: MACs per output value.
_TORCHPROFILE_PER_OUTPUT = {
    _aten.mul.Tensor: 1,
    _aten.mul.Scalar: 1,
    _aten.mul_.Tensor: 1,
    _aten.mul_.Scalar: 1,
    _aten.mean.dim: 1,
    _aten.mean.default: 1,
    _aten.avg_pool2d.default: 1,
    _aten._adaptive_avg_pool2d.default: 1,
    _aten.leaky_relu.default: 1,
    _aten.leaky_relu_.default: 1,
    _aten.upsample_bilinear2d.default: 4,
    _aten.upsample_bilinear2d.vec: 4,
}
# Normalisations count one per output value when they carry an affine weight: op -> position of the weight.
_TORCHPROFILE_NORMS = {
    _aten.native_batch_norm.default: 1,
    _aten._native_batch_norm_legit_no_training.default: 1,
    _aten._native_batch_norm_legit.default: 1,
    _aten.native_group_norm.default: 1,
    _aten.native_layer_norm.default: 2,
}


class _TorchprofileExtras(TorchDispatchMode):
    """Tally the element-wise multiply-adds torchprofile counts on top of the matrix products and convolutions."""

    def __init__(self) -> None:
        super().__init__()
        self.macs = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        first = out[0] if isinstance(out, (tuple, list)) else out
        if isinstance(first, torch.Tensor):
            if func in _TORCHPROFILE_PER_OUTPUT:
                self.macs += _TORCHPROFILE_PER_OUTPUT[func] * first.numel()
            elif func in _TORCHPROFILE_NORMS:
                weight_at = _TORCHPROFILE_NORMS[func]
                if len(args) > weight_at and args[weight_at] is not None:
                    self.macs += first.numel()
        return out


def count_params_and_macs(
    model: nn.Module, size: tuple[int, int], batch_size: int = 1, convention: MacsConvention = "segcore"
) -> tuple[int, int]:
    """Return ``(parameters, multiply-adds)`` of one eval-mode forward pass at ``size``.

    The pass runs on CPU under the ``meta``-free FLOP counter with a fixed RNG, so models that draw random
    numbers (NMF bases) are counted without disturbing the caller's RNG. ``convention`` picks what counts
    (module docstring): ``"segcore"`` (matrix products, convolutions, attention) or ``"torchprofile"``
    (those plus torchprofile's element-wise counts, the convention of the SegNeXt paper's table).

    Example:
        >>> params, macs = count_params_and_macs(model, (512, 512))  # doctest: +SKIP
    """
    if convention not in MACS_CONVENTIONS:
        raise ValueError(f"unknown multiply-add convention {convention!r}; choose one of {', '.join(MACS_CONVENTIONS)}")
    params = sum(p.numel() for p in model.parameters())
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    images = torch.zeros(batch_size, 3, *size, device=device)
    # The papers count the network; torchprofile's users counted mmseg's forward_dummy, which ends with the
    # resize of the logits to the input size: the full forward.
    forward = (getattr(model, "forward_output", None) if convention == "segcore" else None) or model
    # nn.MultiheadAttention's eval fast path is one fused kernel the counter cannot see into: count the
    # ordinary path (same projections and attention, same result).
    mha_fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with (
            torch.random.fork_rng(devices=[]),
            torch.no_grad(),
            FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS) as counter,
            _TorchprofileExtras() if convention == "torchprofile" else contextlib.nullcontext() as extras,
        ):
            torch.manual_seed(0)
            forward(images)
    finally:
        torch.backends.mha.set_fastpath_enabled(mha_fastpath)
        model.train(was_training)
    return params, counter.get_total_flops() // 2 + (extras.macs if extras is not None else 0)


@dataclass
class BenchmarkResult:
    """What ``segcore benchmark --json`` prints."""

    params: int
    gmacs: float
    latency_ms: float | None = None
    throughput: float | None = None
    peak_memory_mb: float | None = None
    device: str = "cpu"
    precision: str = "fp32"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Flatten ``extra`` into the top level."""
        data = asdict(self)
        data.update(data.pop("extra"))
        return data


def cpu_description() -> tuple[str, list[str]]:
    """The CPU's model name and its vector extensions that matter for speed (from ``/proc/cpuinfo`` on Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), []
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    flags = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
    present = set(flags.group(1).split()) if flags else set()
    notable = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in present]
    return (model.group(1).strip() if model else platform.machine()), notable


def protocol(device: torch.device) -> dict[str, Any]:
    """Describe the machine and software a measurement was taken on."""
    cpu, cpu_flags = cpu_description()
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_flags": cpu_flags,
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def benchmark_model(
    model: nn.Module,
    size: tuple[int, int],
    batch_size: int = 1,
    iters: int = 10,
    warmup: int = 3,
    device: str = "cpu",
    precision: Literal["fp32", "bf16"] = "fp32",
    channels_last: bool = False,
    compile: bool = False,  # noqa: A002 - mirrors the CLI flag
    train: bool = False,
    macs_convention: MacsConvention = "segcore",
) -> BenchmarkResult:
    """Count parameters and multiply-adds, then time ``iters`` passes after ``warmup`` (``iters=0``: count only).

    With ``train=True`` a pass is a full training step: forward, loss against random labels, backward and
    an AdamW step. Latency is the median per pass; throughput is images per second at the median.
    ``macs_convention`` is the counting convention of ``gmacs`` (see ``count_params_and_macs``).
    """
    params, macs = count_params_and_macs(model, size, convention=macs_convention)
    result = BenchmarkResult(params=params, gmacs=round(macs / 1e9, 6), device=device, precision=precision)
    dev = torch.device(device)
    result.extra = {
        "size": list(size),
        "batch_size": batch_size,
        "iters": iters,
        "warmup": warmup,
        "channels_last": channels_last,
        "compile": compile,
        "train": train,
        "macs_convention": macs_convention,
        **protocol(dev),
    }
    if iters <= 0:
        return result
    model = model.to(dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    images = torch.randn(batch_size, 3, *size, device=dev)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    step = _train_step(model, images) if train else _infer_step(model, images)
    if compile:
        step = torch.compile(step)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    rss_before = _rss_mb()
    for _ in range(warmup):
        with autocast(dev, precision):
            step()
    _sync(dev)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        with autocast(dev, precision):
            step()
        _sync(dev)
        times.append(time.perf_counter() - start)
    times.sort()
    median = times[len(times) // 2]
    result.latency_ms = round(median * 1e3, 3)
    result.throughput = round(batch_size / median, 3)
    if dev.type == "cuda":
        result.peak_memory_mb = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
    else:
        result.peak_memory_mb = round(_rss_mb(), 1)
        result.extra["rss_growth_mb"] = round(_rss_mb() - rss_before, 1)
    return result


def _infer_step(model: nn.Module, images: torch.Tensor) -> Any:
    model.eval()
    forward = getattr(model, "forward_output", None) or model

    def step() -> Any:
        # Returned, not dropped: under torch.compile a forward whose result is unused is dead code, and the
        # compiled step then skips it (measured: 3 ms instead of 19 ms for mscan-t + ham, 2x64x64, on CPU).
        with torch.no_grad():
            return forward(images)

    return step


def _train_step(model: nn.Module, images: torch.Tensor) -> Any:
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    num_classes = getattr(getattr(model, "config", None), "num_classes", 2)
    labels = torch.randint(0, num_classes, (images.shape[0], *images.shape[-2:]), device=images.device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        losses = (
            model.compute_loss(images, labels) if hasattr(model, "compute_loss") else {"loss": model(images).mean()}
        )
        losses["loss"].backward()
        optimizer.step()

    return step


# ------------------------------------------------------------------------------------------- benchmark rows
NUM_CLASSES = 150  # ADE20K, the dataset every paper reports its cost on


@dataclass(frozen=True)
class BenchmarkRow:
    """One model of the benchmark table: a registered paper pair at its paper's ADE20K crop."""

    label: str
    encoder: str
    decoder: str
    size: int
    encoder_options: dict[str, Any] = field(default_factory=dict)
    decoder_options: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """``ENCODER+DECODER``, what ``scripts/benchmarks.py --only`` searches."""
        return f"{self.encoder}+{self.decoder}"


def benchmark_rows() -> tuple[BenchmarkRow, ...]:
    """Every registered paper pair (``segcore list --kind pairs``), at its ``img_size`` or 512: the table's rows.

    A new variant registered with its pair gets a row without any edit here.
    """
    from segcore.plugins.registry import components

    rows = []
    for name, pair in sorted(components("pairs").items()):
        size = int(pair.encoder_options.get("img_size") or pair.decoder_options.get("img_size") or 512)
        rows.append(
            BenchmarkRow(name, pair.encoder, pair.decoder, size, dict(pair.encoder_options), dict(pair.decoder_options))
        )
    return tuple(rows)


def find_row(key: str) -> BenchmarkRow:
    """The row whose ``ENCODER+DECODER`` is ``key``."""
    found = [row for row in benchmark_rows() if row.key == key]
    if not found:
        from segcore.errors import SegcoreError

        raise SegcoreError(f"no benchmark row {key!r}; rows: {', '.join(r.key for r in benchmark_rows())}")
    return found[0]


def time_interleaved(runs: Mapping[str, Callable[[], object]], reps: int, warmup: int) -> dict[str, list[float]]:
    """Call every run ``warmup`` times, then ``reps`` rounds of one call each (run order kept); seconds per call.

    Interleaving makes every model see the same machine state, so slow drifts of the load affect all alike. The
    caller synchronises inside a run when it times a GPU.
    """
    for _ in range(warmup):
        for run in runs.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(reps):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


# ------------------------------------------------------------------------------------------ peer reference
# SegFormer-B2 (Xie et al. 2021, arXiv:2105.15203, MiT-B2 + all-MLP head of width 768) as transformers spells it.
SEGFORMER_B2 = {
    "depths": [3, 4, 6, 3],
    "hidden_sizes": [64, 128, 320, 512],
    "num_attention_heads": [1, 2, 5, 8],
    "sr_ratios": [8, 4, 2, 1],
    "patch_sizes": [7, 3, 3, 3],
    "strides": [4, 2, 2, 2],
    "mlp_ratios": [4, 4, 4, 4],
    "decoder_hidden_size": 768,
}
PEER_REFERENCE = "SegFormer-B2 (transformers)"


def build_segformer_b2(num_classes: int = NUM_CLASSES) -> Any:
    """Transformers' ``SegformerForSemanticSegmentation`` with the B2 config, random weights, eval mode.

    Raises:
        SegcoreError: when ``transformers`` (not a dependency of segcore) is not installed.
    """
    try:
        from transformers import SegformerConfig, SegformerForSemanticSegmentation
    except ImportError as err:
        from segcore.errors import SegcoreError

        raise SegcoreError(
            "the SegFormer-B2 comparison needs Hugging Face transformers (`pip install transformers`); "
            "it is not a dependency of any segcore package"
        ) from err
    return SegformerForSemanticSegmentation(SegformerConfig(num_labels=num_classes, **SEGFORMER_B2)).eval()

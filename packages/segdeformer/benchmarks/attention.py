"""SDPA vs materialised N x N attention in the SegDeformer head (MiT-B2, 512 x 512, eval, batch 1).

All implementations share the same weights (same seed; only the ``attention`` option differs).

* Memory: each implementation runs one forward in its own subprocess, so its peak resident memory
  (``ru_maxrss``) is its own; the figure is that peak minus the RSS measured just before the forward
  (model and input already built), i.e. the activation memory of one forward.
* Latency: all implementations are built in this process and timed in interleaved rounds (sdpa,
  materialised, sdpa, ...; shared with ``end_to_end.py``), so load drifts of a shared machine hit them
  alike; the figure is the median of ``--iters`` rounds after one warm-up. "Attention time" is the part
  spent inside the two ``SingleHeadAttention`` modules (projections and the N x N attention), timed by
  forward hooks.
* ``--device cuda``: memory is the peak of PyTorch's CUDA allocator during the forward minus what was
  allocated before it, and every timing synchronises the device. (Not run yet: no GPU was available.)
* ``--precision bf16`` runs the forwards under ``torch.autocast(dtype=torch.bfloat16)`` (on CPUs with AMX,
  oneDNN's bf16 matrix products run about 3x as fast as fp32 ones). Ratios always compare the two
  implementations at the same precision; the last column is every row's largest logits / mid-logits
  difference from the first precision's materialised row.
* ``--json FILE`` also writes every figure, unrounded (seconds, MiB), to ``FILE`` (``scripts/gpu_check.py`` reads it).

Usage (repository root; the lock keeps other benchmarks from running at the same time)::

    .venv/bin/python packages/segdeformer/benchmarks/attention.py --iters 5 --threads 2 --precision fp32 bf16
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from segcore.evaluation.inference import PRECISIONS
from segcore.evaluation.inference import precision as _precision
from segcore.tools.benchmark import time_interleaved

IMPLEMENTATIONS = ("sdpa", "materialized")


def _rss_mib() -> float:
    """Current resident set size in MiB."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _build(args: argparse.Namespace, attention: str) -> torch.nn.Module:
    import segcore

    torch.manual_seed(0)
    model = segcore.build_model(args.encoder, "segdeformer", 150, decoder_options={"attention": attention})
    return model.eval().to(args.device)


def _images(args: argparse.Namespace) -> torch.Tensor:
    images = torch.randn(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
    return images.to(args.device)


def _memory_child(args: argparse.Namespace) -> None:
    """One forward of one implementation: print its activation memory, save its outputs."""
    model, images = _build(args, args.attention), _images(args)
    cuda = args.device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated() / 2**20 if cuda else _rss_mib()
    with torch.no_grad(), _precision(args.device, args.precision):
        out = model.forward_output(images)
        _sync(args.device)
    # CPU: peak resident memory (ru_maxrss, KiB on Linux); CUDA: peak of PyTorch's allocator.
    peak = (
        torch.cuda.max_memory_allocated() / 2**20 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    outputs = {"logits": out.logits, "mid_logits": out.aux["mid_logits"]}
    torch.save({k: v.float().cpu() for k, v in outputs.items()}, args.out)
    print(json.dumps({"peak_delta_mib": peak - before}))


def _timed(model: torch.nn.Module, images: torch.Tensor, inside: list[float], device: str) -> Callable[[], None]:
    """A forward of ``model`` that appends its time inside the attention modules to ``inside``."""
    from segcore_segdeformer.head import SingleHeadAttention

    entered: list[float] = []
    spent = [0.0]

    def _enter(*_: object) -> None:
        _sync(device)
        entered.append(time.perf_counter())

    def _leave(*_: object) -> None:
        _sync(device)
        spent[0] += time.perf_counter() - entered.pop()

    for module in model.modules():
        if isinstance(module, SingleHeadAttention):
            module.register_forward_pre_hook(_enter)
            module.register_forward_hook(_leave)

    def run() -> None:
        spent[0] = 0.0
        model.forward_output(images)
        _sync(device)
        inside.append(spent[0])

    return run


def _memory(args: argparse.Namespace, tmp: str) -> dict[tuple[str, str], dict]:
    """Activation memory and outputs of every (implementation, precision), each in its own process."""
    results = {}
    common = ["--encoder", args.encoder, "--size", str(args.size), "--threads", str(args.threads)]
    common += ["--device", args.device]
    for precision in args.precision:
        for attention in IMPLEMENTATIONS:
            out = str(Path(tmp) / f"{attention}-{precision}.pt")
            cmd = [sys.executable, __file__, *common, "--precision", precision, "--attention", attention]
            proc = subprocess.run([*cmd, "--out", out], check=True, capture_output=True, text=True)
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            result["outputs"] = torch.load(out)
            results[attention, precision] = result
    return results


def _device_name(args: argparse.Namespace) -> str:
    if args.device == "cuda":
        return torch.cuda.get_device_name()
    return f"CPU, {args.threads} threads"


def main() -> None:
    """Measure memory (subprocesses) and interleaved latency (here), print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="mit-b2")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--iters", type=int, default=5, help="timed rounds (one forward of each implementation)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", nargs="+", choices=PRECISIONS, default=["fp32"], help="one table row pair each")
    parser.add_argument("--json", default=None, help="also write every figure, unrounded, to this JSON file")
    parser.add_argument("--attention", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.attention:
        args.precision = args.precision[0]
        _memory_child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        results = _memory(args, tmp)
    ref = results["materialized", args.precision[0]]["outputs"]
    for r in results.values():
        r["diff"] = max((r["outputs"][k] - ref[k]).abs().max().item() for k in ref)
    models = {name: _build(args, name) for name in IMPLEMENTATIONS}
    images = _images(args)
    for precision in args.precision:
        inside: dict[str, list[float]] = {name: [] for name in models}
        runs = {name: _timed(model, images, inside[name], args.device) for name, model in models.items()}
        with torch.no_grad(), _precision(args.device, precision):
            times = time_interleaved(runs, args.iters, 1)
        for name in models:
            r = results[name, precision]
            r["median_s"] = statistics.median(times[name])
            r["times_s"] = times[name]
            r["attention_s"] = statistics.median(inside[name][-args.iters :])
    print(
        f"{args.encoder} + segdeformer, {args.size}x{args.size}, batch 1, {_device_name(args)}, "
        f"median of {args.iters} interleaved rounds, torch {torch.__version__}"
    )
    print(
        "| attention | precision | peak activation memory (MiB) | median latency (s) | memory ratio | speed-up "
        f"| attention time (s) | attention speed-up | max diff vs materialized {args.precision[0]} |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for (name, precision), r in results.items():
        m = results["materialized", precision]
        print(
            f"| {name} | {precision} | {r['peak_delta_mib']:.0f} | {r['median_s']:.2f} | "
            f"{r['peak_delta_mib'] / m['peak_delta_mib']:.3f} | {m['median_s'] / r['median_s']:.2f}x | "
            f"{r['attention_s']:.2f} | {m['attention_s'] / r['attention_s']:.2f}x | {r['diff']:.1e} |"
        )
    for (name, precision), r in results.items():
        print(f"{name} {precision} rounds (s): {', '.join(f'{t:.2f}' for t in r['times_s'])}")
    if args.json:
        rows = [
            {"attention": name, "precision": precision, **{k: v for k, v in r.items() if k != "outputs"}}
            for (name, precision), r in results.items()
        ]
        meta = {"encoder": args.encoder, "size": args.size, "batch": 1, "device": _device_name(args)}
        Path(args.json).write_text(json.dumps({**meta, "iters": args.iters, "torch": torch.__version__, "rows": rows}))


if __name__ == "__main__":
    main()

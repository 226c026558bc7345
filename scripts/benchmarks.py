"""Measure every first-party encoder with its paper decoder and write ``docs/benchmarks.md``.

Each row is one ``segcore benchmark ... --json`` run in its own process (so peak memory is that model's and
no state leaks between rows). The raw results go to ``docs/benchmarks.json``; the markdown is rendered from
that JSON alone, wholesale, and shows only what was measured: a field that was not measured reads
"not measured", a row that was not run is listed as such with the reason.

``--peer`` adds a comparison with Hugging Face transformers' SegFormer-B2 (random weights from its config,
no download): ``mscan-b + ham`` and ``mit-b2 + segdeformer`` against it in one process, same threads, same
1x3x512x512 fp32 input, repetitions interleaved, median latency. ``transformers`` is needed for that part
only; it is not a dependency of any segcore package. The package scripts
``packages/segnext/benchmarks/bench_vs_segformer.py`` and ``packages/segdeformer/benchmarks/end_to_end.py``
take SegFormer-B2 and the interleaved timing from here.

Usage (repository root; the full table wants an otherwise idle machine)::

    .venv/bin/python scripts/benchmarks.py --peer                  # CPU table + peer comparison
    .venv/bin/python scripts/benchmarks.py --device cpu cuda       # + CUDA rows: fp32; bf16, channels-last, compile
    .venv/bin/python scripts/benchmarks.py --peer --cpu-bf16       # + CPU rows under bf16 autocast
    .venv/bin/python scripts/benchmarks.py --counts-only           # parameters and multiply-adds only (quick)
    .venv/bin/python scripts/benchmarks.py --only 'mscan-t' --iters 3 --out /tmp/b.md
    .venv/bin/python scripts/benchmarks.py --render-only           # re-render the markdown from the JSON
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from segcore.tools.benchmark import (
    NUM_CLASSES,
    PEER_REFERENCE,
    BenchmarkRow,
    benchmark_rows,
    build_segformer_b2,
    find_row,
    time_interleaved,
)

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = 1


@dataclass(frozen=True)
class Setting:
    """Device, precision and flags of one measurement."""

    device: str = "cpu"
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False

    def flags(self) -> str:
        """The optional flags, as the table shows them."""
        return ", ".join(f for f, on in (("channels-last", self.channels_last), ("compile", self.compile)) if on)


CPU_SETTINGS = (Setting("cpu"),)
CUDA_SETTINGS = (Setting("cuda"), Setting("cuda", "bf16", channels_last=True, compile=True))


# --------------------------------------------------------------------------------------------- the table


def benchmark_argv(row: BenchmarkRow, setting: Setting, args: argparse.Namespace) -> list[str]:
    """The ``segcore benchmark`` arguments that measure ``row`` under ``setting``."""
    argv = ["benchmark", "--encoder", row.encoder, "--decoder", row.decoder, "--num-classes", str(NUM_CLASSES)]
    argv += ["--size", str(row.size)]
    for flag, options in (("--encoder-opt", row.encoder_options), ("--decoder-opt", row.decoder_options)):
        for key, value in options.items():
            argv += [flag, f"{key}={value}"]
    argv += ["--batch-size", str(args.batch_size), "--device", setting.device, "--precision", setting.precision]
    argv += ["--channels-last"] * setting.channels_last + ["--compile"] * setting.compile
    argv += ["--iters", str(0 if args.counts_only else args.iters), "--warmup", str(args.warmup)]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    return [*argv, "--json"]


def _entry(
    row: BenchmarkRow, setting: Setting, args: argparse.Namespace, status: str, reason: str | None = None
) -> dict:
    """The JSON entry of a row: what was asked for, the command, and whether it was measured."""
    command = "segcore " + " ".join(benchmark_argv(row, setting, args))
    entry = {**asdict(row), **asdict(setting), "command": command, "status": status}
    return entry if reason is None else entry | {"reason": reason}


def measure(row: BenchmarkRow, setting: Setting, args: argparse.Namespace) -> dict[str, Any]:
    """Run one ``segcore benchmark --json`` in a fresh process; return the entry for the JSON file."""
    argv = benchmark_argv(row, setting, args)
    entry = _entry(row, setting, args, "running")
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "segcore_cli.main", *argv], capture_output=True, text=True, timeout=args.timeout
        )
    except subprocess.TimeoutExpired:
        return entry | {"status": "failed", "reason": f"timed out after {args.timeout} s"}
    entry["wall_s"] = round(time.perf_counter() - start, 1)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        return entry | {"status": "failed", "reason": tail[:300]}
    result = json.loads(proc.stdout)
    return entry | {"status": "counted" if result["latency_ms"] is None else "measured", "result": result}


def settings_for(args: argparse.Namespace) -> list[tuple[Setting, str | None]]:
    """The settings to run, each with the reason it cannot be run (``None``: it can)."""
    if args.counts_only:  # counts do not depend on the device: one CPU pass per model
        return [(CPU_SETTINGS[0], None)]
    out: list[tuple[Setting, str | None]] = []
    if "cpu" in args.device:
        out += [(s, None) for s in CPU_SETTINGS]
        if args.cpu_bf16:
            out.append((Setting("cpu", "bf16"), None))
    if "cuda" in args.device:
        import torch

        reason = None if torch.cuda.is_available() else "no CUDA device on this machine"
        out += [(s, reason) for s in CUDA_SETTINGS]
    return out


def selected_rows(patterns: Sequence[str] | None) -> list[BenchmarkRow]:
    """BenchmarkRows whose ``ENCODER+DECODER`` matches any of the regular expressions (all rows without patterns)."""
    if not patterns:
        return list(benchmark_rows())
    return [row for row in benchmark_rows() if any(re.search(p, row.key) for p in patterns)]


# --------------------------------------------------------------------------------------------- protocol


def _git(*args: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def machine_protocol(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    """Describe the run: when, where, with what software, and how it measures."""
    import torch
    from segcore.tools.benchmark import cpu_description

    cpu_model, cpu_flags = cpu_description()
    commit = _git("rev-parse", "--short", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python scripts/benchmarks.py " + " ".join(argv),
        "git_commit": None if commit is None else commit + ("-dirty" if status else ""),
        "cpu_model": cpu_model,
        "cpu_flags": cpu_flags,
        "logical_cpus": os.cpu_count(),
        "threads": args.threads or torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "counts_only": args.counts_only,
        "iters": 0 if args.counts_only else args.iters,
        "warmup": args.warmup,
        "batch_size": args.batch_size,
        "num_classes": NUM_CLASSES,
    }


# --------------------------------------------------------------------------------------------- peer comparison

PEER_GOALS = {"mscan-b+ham": 0.5, "mit-b2+segdeformer": 2.5}  # issue 8: latency / SegFormer-B2's


def run_peer(args: argparse.Namespace) -> dict[str, Any]:
    """Time ``mscan-b + ham`` and ``mit-b2 + segdeformer`` against SegFormer-B2 in this process."""
    import segcore
    import torch
    import torch.nn.functional as F  # noqa: N812
    import transformers

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    theirs = build_segformer_b2()
    ours = {
        key: segcore.build_model(
            row.encoder,
            row.decoder,
            NUM_CLASSES,
            encoder_options=row.encoder_options,
            decoder_options=row.decoder_options,
        ).eval()
        for key in PEER_GOALS
        for row in [find_row(key)]
    }
    images = torch.randn(1, 3, 512, 512, generator=torch.Generator().manual_seed(1))

    def segformer() -> torch.Tensor:  # stride-4 logits resized to the input, as SegModel.forward does for ours
        return F.interpolate(theirs(pixel_values=images).logits, size=(512, 512), mode="bilinear", align_corners=False)

    runs: dict[str, Callable[[], torch.Tensor]] = {key: (lambda m=model: m(images)) for key, model in ours.items()}
    runs[PEER_REFERENCE] = segformer
    with torch.no_grad():
        for run in runs.values():
            assert run().shape == (1, NUM_CLASSES, 512, 512)
        times = time_interleaved(runs, args.iters, args.warmup)
    params = {key: sum(p.numel() for p in m.parameters()) for key, m in [*ours.items(), (PEER_REFERENCE, theirs)]}
    models = {
        name: {
            "params": params[name],
            "median_ms": round(statistics.median(t) * 1e3, 1),
            "min_ms": round(min(t) * 1e3, 1),
            "all_ms": [round(x * 1e3, 1) for x in t],
        }
        for name, t in times.items()
    }
    ratios = []
    for key, goal in PEER_GOALS.items():
        ratio = statistics.median(times[key]) / statistics.median(times[PEER_REFERENCE])
        paired = statistics.median(a / b for a, b in zip(times[key], times[PEER_REFERENCE]))
        ratios.append({"model": key, "ratio": round(ratio, 3), "paired_ratio": round(paired, 3), "goal": goal})
        ratios[-1]["met"] = ratio <= goal
    return {
        "input": [1, 3, 512, 512],
        "precision": "fp32",
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "reps": args.iters,
        "warmup": args.warmup,
        "reference": PEER_REFERENCE,
        "models": models,
        "ratios": ratios,
    }


# --------------------------------------------------------------------------------------------- markdown


def _cell(value: object, fmt: str = "{}") -> str:
    return "not measured" if value is None else fmt.format(value)


def _table(entries: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| model | encoder + decoder | size | params | GMACs | device | dtype | batch | flags | threads "
        "| latency (ms) | throughput (img/s) | peak memory (MB) | torch |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        r = e["result"]
        dtype = "bf16 autocast" if r["precision"] == "bf16" else r["precision"]
        lines.append(
            f"| {e['label']} | `{e['encoder']}` + `{e['decoder']}` | {r['size'][0]}x{r['size'][1]} | {r['params']:,} "
            f"| {r['gmacs']:.3f} | {r.get('device_name') or r['device']} | {dtype} | {r['batch_size']} "
            f"| {e.get('flags') or '-'} | {r['threads']} | {_cell(r['latency_ms'], '{:,.1f}')} "
            f"| {_cell(r['throughput'], '{:.2f}')} | {_cell(r['peak_memory_mb'], '{:,.0f}')} | {r['torch']} |"
        )
    return lines


def _protocol_lines(p: dict[str, Any]) -> list[str]:
    timing = (
        "not timed (`--counts-only`: `segcore benchmark --iters 0`, parameters and multiply-adds only)"
        if p["counts_only"]
        else f"{p['warmup']} untimed warm-up passes, then the median of {p['iters']} timed passes"
    )
    cpu_flags = f" ({', '.join(p['cpu_flags'])})" if p["cpu_flags"] else ""
    return [
        f"- date: {p['date']}; commit: `{p['git_commit']}`; command: `{p['command']}`",
        f"- CPU: {p['cpu_model']}{cpu_flags}, {p['logical_cpus']} logical CPUs; torch threads: {p['threads']} "
        f"(OMP_NUM_THREADS={p['omp_num_threads'] or 'unset'}); load average at the start: "
        f"{', '.join(map(str, p['load_average_start']))}, at the end: "
        f"{', '.join(map(str, p.get('load_average_end') or ['not recorded']))}",
        f"- GPU: {p['cuda_device'] or 'none'}; torch {p['torch']}, Python {p['python']}, {p['platform']}",
        f"- timing: {timing}; batch {p['batch_size']}, {p['num_classes']} classes, random weights, eval mode",
    ]


def _peer_lines(peer: dict[str, Any]) -> list[str]:
    ref = peer["reference"]
    lines = [
        "## Peer comparison: SegFormer-B2 (Hugging Face transformers)",
        "",
        f"All three models in one process on {peer['device']}, torch threads: {peer['threads']}, input "
        f"{'x'.join(map(str, peer['input']))} {peer['precision']}, random weights (transformers "
        f"{peer['transformers']}: `SegformerForSemanticSegmentation` from a `SegformerConfig` for B2, {NUM_CLASSES} "
        f"labels, no download). Warm-up: {peer['warmup']} round(s); then {peer['reps']} timed rounds, each running "
        "every model once in the order below (interleaved); latency is the median per model. Every model returns "
        "logits at the input size (SegFormer's stride-4 logits resized bilinearly, as `SegModel.forward` does for "
        "ours), under `torch.no_grad`.",
        "",
        "| model | params | median latency (ms) | min (ms) | passes (ms) |",
        "|---|---|---|---|---|",
    ]
    for name, m in peer["models"].items():
        shown = name if name == ref else f"`{name.replace('+', ' + ')}`"
        passes = ", ".join(f"{x:,.1f}" for x in m["all_ms"])
        lines.append(f"| {shown} | {m['params']:,} | {m['median_ms']:,.1f} | {m['min_ms']:,.1f} | {passes} |")
    lines += ["", "| ratio | value (medians) | median of paired ratios | goal | met |", "|---|---|---|---|---|"]
    for r in peer["ratios"]:
        lines.append(
            f"| `{r['model'].replace('+', ' + ')}` / {ref} | **{r['ratio']:.3f}** | {r['paired_ratio']:.3f} "
            f"| <= {r['goal']} | {'yes' if r['met'] else 'no'} |"
        )
    return lines


def _setting(entry: dict[str, Any]) -> Setting:
    return Setting(entry["device"], entry["precision"], entry["channels_last"], entry["compile"])


def _models_lines(entries: list[dict[str, Any]]) -> list[str]:
    done = [e | {"flags": _setting(e).flags()} for e in entries if "result" in e]
    lines = [
        "## First-party models (paper decoder, paper ADE20K crop)",
        "",
        "- params: all parameters of the model. GMACs: multiply-adds of one forward pass (conv, linear, matrix "
        'products and attention; one multiply-add = 1, the papers\' "GFLOPs"), counted by '
        "`segcore.tools.benchmark.count_params_and_macs` (its default convention; the SegNeXt paper counted with "
        "torchprofile, `--macs torchprofile`, compared in packages/segnext/README.md)",
        "- latency: one pass of `forward_output` (encoder + decoder, logits at the decoder's stride, no final "
        "resize); throughput = batch / median latency",
        "- peak memory: CPU rows, the peak resident set size of the row's own process (interpreter, weights, "
        "counting pass and timed passes); CUDA rows, `torch.cuda.max_memory_allocated`",
        "- each row is its own `segcore benchmark ... --json` process (the commands are listed at the end)",
        "",
    ]
    lines += _table(done) if done else ["No row was measured."]
    missing = [e for e in entries if "result" not in e]
    if missing:
        lines += ["", "Not measured:", ""]
        for e in missing:
            how = " ".join(x for x in (e["device"], e["precision"], _setting(e).flags()) if x)
            lines.append(f"- {e['label']} ({how}), {e['status']}: {e['reason']}")
    return lines


def render_markdown(data: dict[str, Any]) -> str:
    """The whole of ``docs/benchmarks.md``, from the JSON document alone."""
    entries = data["entries"]
    lines = [
        "# Benchmarks",
        "",
        "Generated by `scripts/benchmarks.py` from `benchmarks.json` next to this file: do not edit by hand, re-run "
        "the script. Every number here was measured by the run described under Protocol; a field the run did not "
        'measure reads "not measured".',
        "",
        "## Protocol",
        "",
        *_protocol_lines(data["protocol"]),
    ]
    if entries:
        lines += ["", *_models_lines(entries)]
    if data.get("peer"):
        lines += ["", *_peer_lines(data["peer"])]
    commands = [e["command"] for e in entries if e["status"] != "skipped"]
    if commands:
        lines += ["", "## Commands", "", "One process per row:", "", "```", *commands, "```"]
    return "\n".join([*lines, ""])


# --------------------------------------------------------------------------------------------- driver


def _write(data: dict[str, Any], json_path: Path, md_path: Path) -> None:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(data, indent=1) + "\n")
    md_path.write_text(render_markdown(data))


def _summary(entry: dict[str, Any]) -> str:
    if "result" not in entry:
        return f"not measured: {entry['reason']}"
    r = entry["result"]
    text = f"{r['params']:,} params, {r['gmacs']:.2f} GMACs"
    if r["latency_ms"] is not None:
        text += f", {r['latency_ms']:,.1f} ms, {r['throughput']:.2f} img/s, {r['peak_memory_mb']:,.0f} MB"
    return text + f" ({entry['wall_s']} s)"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md", help="markdown to write")
    parser.add_argument("--json-out", type=Path, help="raw results (default: --out with .json)")
    parser.add_argument("--only", nargs="+", metavar="PATTERN", help="regular expressions searched in ENCODER+DECODER")
    parser.add_argument("--device", nargs="+", choices=("cpu", "cuda"), default=["cpu"], help="devices to measure on")
    parser.add_argument(
        "--cpu-bf16", action="store_true", help="also measure every CPU row under bf16 autocast (fast with AMX)"
    )
    parser.add_argument("--iters", type=int, default=10, help="timed passes per row (and peer repetitions)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed passes first")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's, e.g. OMP_NUM_THREADS)")
    parser.add_argument("--counts-only", action="store_true", help="parameters and multiply-adds only (--iters 0)")
    parser.add_argument("--peer", action="store_true", help="also compare with transformers' SegFormer-B2")
    parser.add_argument("--peer-only", action="store_true", help="only the SegFormer-B2 comparison, no table")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed per row")
    parser.add_argument("--render-only", action="store_true", help="re-render --out from the JSON, measure nothing")
    args = parser.parse_args(argv)
    args.json_out = args.json_out or args.out.with_suffix(".json")
    args.peer = args.peer or args.peer_only
    if args.iters < 1 and not args.counts_only:
        parser.error("--iters must be >= 1 (use --counts-only for parameters and multiply-adds alone)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, write the JSON and the markdown; returns the exit code (1 when a row failed)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.render_only:
        args.out.write_text(render_markdown(json.loads(args.json_out.read_text())))
        print(f"wrote {args.out} from {args.json_out}")
        return 0
    rows = [] if args.peer_only else selected_rows(args.only)
    if not rows and not args.peer:
        print(f"no row matches {args.only}; rows: {', '.join(r.key for r in benchmark_rows())}", file=sys.stderr)
        return 2
    data: dict[str, Any] = {"schema": SCHEMA, "protocol": machine_protocol(args, argv), "entries": [], "peer": None}
    jobs = [(row, setting, reason) for setting, reason in settings_for(args) for row in rows]
    for i, (row, setting, reason) in enumerate(jobs, 1):
        print(
            f"[{i}/{len(jobs)}] {row.key} {row.size} {setting.device} {setting.precision} {setting.flags()}",
            file=sys.stderr,
            flush=True,
        )
        entry = measure(row, setting, args) if reason is None else _entry(row, setting, args, "skipped", reason)
        data["entries"].append(entry)
        print(f"    {_summary(entry)}", file=sys.stderr, flush=True)
        _write(data, args.json_out, args.out)
    if args.peer and args.counts_only:
        print("the peer comparison times latency: skipped with --counts-only", file=sys.stderr)
    elif args.peer:
        print(f"peer comparison: {', '.join(PEER_GOALS)} vs {PEER_REFERENCE}", file=sys.stderr, flush=True)
        data["peer"] = run_peer(args)
        for r in data["peer"]["ratios"]:
            verdict = "met" if r["met"] else "NOT met"
            print(f"    {r['model']} / {PEER_REFERENCE}: {r['ratio']:.3f} (goal <= {r['goal']}: {verdict})")
    data["protocol"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    _write(data, args.json_out, args.out)
    print(f"wrote {args.out} and {args.json_out}")
    return 1 if any(e["status"] == "failed" for e in data["entries"]) else 0


if __name__ == "__main__":
    sys.exit(main())

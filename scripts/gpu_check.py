"""Every GPU check of one device run: CUDA tests, throughput, training steps, attention, torch.compile.

Written for the device machine (one H200, no package registry); ``scripts/gpu_check.sh`` installs the carried
wheels and calls this driver (see there for the exact device call). Each step runs in its own process under a
time cap, inside one overall deadline; a step that fails or runs out of time is recorded as such and the next
one starts. ``OUT/gpu_check.json`` is rewritten after every step, so a run cut short still returns what it
measured. ``--tiny`` makes every step tiny and runs it on CPU: the rehearsal of the same code paths.

Steps, in order (``--steps`` runs some of them, e.g. to re-run one that failed):

* ``env``: machine, versions, where each segcore distribution was installed, the plugins ``segcore list`` shows.
* ``throughput``: eval-mode images/s of every first-party model of ``scripts/benchmarks.py`` and transformers'
  SegFormer-B2, 512x512, batch 16, bf16 autocast then fp32, all in this process, repetitions interleaved
  (``time_interleaved`` of ``scripts/benchmarks.py``).
* ``train-mscan-t``, ``train-mscan-b``: step time and peak ``torch.cuda.max_memory_allocated`` of SegNeXt
  training as the ``segnext-ade20k-160k`` recipe sets it up (``resolve_recipe``, ``build_optimizer``): batch 16,
  512x512 crop, bf16 autocast, random ``uint8`` images and labels.
* ``attention``: ``packages/segdeformer/benchmarks/attention.py --device cuda`` (MiT-B2, 512x512, fp32 and bf16);
  its table goes to ``attention.md``.
* ``pytest``: ``pytest -m gpu``; its log goes to ``pytest.log``.
* ``compile``: ``segcore.tools.benchmark.benchmark_model`` of SegNeXt-T (batch 16, bf16), eager then ``torch.compile``.

Usage (repository root)::

    OUT=/tmp/gpu bash scripts/gpu_check.sh                # on the device machine (installs .whl/ first)
    OUT=/tmp/gpu bash scripts/gpu_check.sh --tiny         # rehearsal on CPU, every step tiny
    python scripts/gpu_check.py --out /tmp/gpu --steps attention compile
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET  # noqa: N817
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RECIPE = "segnext-ade20k-160k"
REFERENCE = "SegFormer-B2 (transformers)"
DISTRIBUTIONS = (
    "segcore",
    "segcore-cli",
    "segcore-datasets",
    "segcore-segnext",
    "segcore-segvit",
    "segcore-segdeformer",
)
# What `segcore list` must show when every plugin registered through its wheel's entry points.
EXPECTED_NAMES = ("mscan-t", "mscan-b", "ham", "mit-b2", "segdeformer", "vit-b16", "atm", "synthetic-shapes", RECIPE)
THIRD_PARTY = ("torch", "torchvision", "timm", "transformers", "accelerate", "datasets", "numpy", "pytest")
SCHEMA = 1


@dataclass(frozen=True)
class Plan:
    """Sizes of every step: the device run, or its tiny CPU rehearsal."""

    device: str = "cuda"
    size: int = 512
    batch: int = 16
    warmup: int = 3
    iters: int = 10
    attention_encoder: str = "mit-b2"
    attention_size: int = 512
    attention_iters: int = 10
    compile_row: str = "mscan-t+ham"
    compile_backend: str = "inductor"
    threads: int = 8
    deadline_s: float = 450.0  # the whole driver; the device call's timeout adds the wheel install and a margin


FULL = Plan()
# TINY compiles with aot_eager (dynamo and AOTAutograd, no code generation): inductor's C++ builds of the tiny
# model took over 100 s on 2 shared cores, and on the device inductor generates Triton, not C++, anyway.
TINY = Plan("cpu", 64, 2, 1, 2, "mit-b0", 64, 2, "mscan-t+ham", "aot_eager", 1, 280.0)
_PARTIAL: list[Path] = []  # a child's --result file: steps save what they measured so far there


# --------------------------------------------------------------------------------------------- helpers


def _benchmarks() -> dict[str, Any]:
    """The shared benchmark API (``segcore.tools.benchmark``) as a name -> object mapping."""
    import segcore.tools.benchmark as api

    return {
        "NUM_CLASSES": api.NUM_CLASSES,
        "ROWS": api.benchmark_rows(),
        "find_row": api.find_row,
        "build_segformer_b2": api.build_segformer_b2,
        "time_interleaved": api.time_interleaved,
    }


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _peak_memory(device: str) -> dict[str, float]:
    """Peak of PyTorch's CUDA allocator (GB and GiB), or the process's peak resident memory on CPU."""
    import torch

    if device == "cuda":
        peak = torch.cuda.max_memory_allocated()
        return {"peak_memory_gb": round(peak / 1e9, 3), "peak_memory_gib": round(peak / 2**30, 3)}
    return {"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def _save_partial(result: dict[str, Any]) -> None:
    """Write what a step measured so far, so that a step killed at its time cap still reports it."""
    if _PARTIAL:
        _write_json(_PARTIAL[0], {**result, "status": "partial"})


def _row_options(row: Any, size: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The row's encoder and decoder options, with SegViT's ``img_size`` set to the measured size."""
    encoder = {k: (size if k == "img_size" else v) for k, v in row.encoder_options.items()}
    decoder = {k: (size if k == "img_size" else v) for k, v in row.decoder_options.items()}
    return encoder, decoder


# --------------------------------------------------------------------------------------------- steps


def step_env(plan: Plan, out: Path) -> dict[str, Any]:
    """Machine, versions, install locations of the segcore wheels, and the plugins ``segcore list`` shows."""
    import importlib.metadata as md

    import torch
    from segcore.tools.benchmark import protocol

    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        **protocol(torch.device("cpu")),
    }
    info["cuda_available"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info |= {
            "device_name": props.name,
            "capability": list(torch.cuda.get_device_capability(0)),
            "device_memory_gib": round(props.total_memory / 2**30, 1),
            "multiprocessors": props.multi_processor_count,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        }
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm", "--format=csv,noheader"],
            capture_output=True,
            text=True,
        )
        info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    versions = {}
    for name in THIRD_PARTY:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    info["versions"] = versions
    info["distributions"] = {}
    for name in DISTRIBUTIONS:
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            info["distributions"][name] = None
            continue
        info["distributions"][name] = {"version": dist.version, "installed_in": str(dist.locate_file(""))}
    site = os.environ.get("GPU_CHECK_SITE")  # set by gpu_check.sh when it installed the carried wheels
    if site:
        found = {n: d and d["installed_in"] for n, d in info["distributions"].items()}
        info["not_from_wheels"] = {n: where for n, where in found.items() if where != str(Path(site))}
    info["entry_points"] = sorted(f"{ep.name} = {ep.value}" for ep in md.entry_points(group="segcore"))
    listing = subprocess.run([sys.executable, "-m", "segcore_cli.main", "list"], capture_output=True, text=True)
    print(listing.stdout, listing.stderr, sep="\n", flush=True)
    names = {line.split()[0] for line in listing.stdout.splitlines() if line.startswith("  ")}
    info["segcore_list_missing"] = [n for n in EXPECTED_NAMES if n not in names]
    info["plugins_ok"] = (
        listing.returncode == 0 and not info["segcore_list_missing"] and not info.get("not_from_wheels")
    )
    try:
        import datasets

        info["datasets_import"] = datasets.__version__
    except Exception as err:  # noqa: BLE001 - recorded, not fatal: only the Hub datasets need it
        info["datasets_import"] = f"failed: {err!r}"
    if not info["plugins_ok"]:
        missing, elsewhere = info["segcore_list_missing"], info.get("not_from_wheels")
        raise RuntimeError(
            f"segcore list misses {missing} (exit {listing.returncode}); not from the wheels: {elsewhere}"
        )
    return info


def step_throughput(plan: Plan, out: Path) -> dict[str, Any]:
    """Images/s of every first-party model and SegFormer-B2, interleaved in one process, bf16 then fp32."""
    import segcore
    import torch
    import torch.nn.functional as F  # noqa: N812
    from segcore.evaluation.inference import precision as autocast

    bench = _benchmarks()
    torch.backends.cudnn.benchmark = True
    device, size = plan.device, plan.size
    if device == "cpu":
        torch.set_num_threads(plan.threads)
    images = torch.randn(plan.batch, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    runs: dict[str, Callable[[], object]] = {}
    models: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}

    def add(name: str, key: str, build: Callable[[], torch.nn.Module], forward: Callable[..., torch.Tensor]) -> None:
        try:
            torch.manual_seed(0)
            model = build().eval().to(device)

            def run(m: torch.nn.Module = model) -> torch.Tensor:
                logits = forward(m)
                _sync(device)
                return logits

            with torch.no_grad():
                shape = tuple(run().shape)
            if shape != (plan.batch, bench["NUM_CLASSES"], size, size):
                raise RuntimeError(f"logits of shape {shape}")
        except Exception as err:  # noqa: BLE001 - one model's failure must not stop the others
            errors[name] = f"{type(err).__name__}: {err}"[:500]
            traceback.print_exc()
            return
        runs[name] = run
        models[name] = {"key": key, "params": sum(p.numel() for p in model.parameters())}

    for row in bench["ROWS"]:
        enc, dec = _row_options(row, size)
        build = lambda r=row, e=enc, d=dec: segcore.build_model(  # noqa: E731
            r.encoder, r.decoder, bench["NUM_CLASSES"], encoder_options=e, decoder_options=d
        )
        add(row.label, row.key, build, lambda m: m(images))

    def segformer(m: torch.nn.Module) -> torch.Tensor:  # stride-4 logits resized, as SegModel.forward does for ours
        return F.interpolate(m(pixel_values=images).logits, size=(size, size), mode="bilinear", align_corners=False)

    add(REFERENCE, "transformers:segformer-b2", bench["build_segformer_b2"], segformer)
    for precision in ("bf16", "fp32"):
        print(f"throughput {precision}: {len(runs)} models interleaved", flush=True)
        with torch.no_grad(), autocast(device, precision):
            times = bench["time_interleaved"](runs, plan.iters, plan.warmup)
        for name, t in times.items():
            median = statistics.median(t)
            models[name][precision] = {
                "median_ms": round(median * 1e3, 3),
                "throughput": round(plan.batch / median, 2),
                "all_ms": [round(x * 1e3, 3) for x in t],
            }
            print(f"  {name:40s} {median * 1e3:9.2f} ms {plan.batch / median:9.1f} img/s", flush=True)
        _save_partial({"models": models, "errors": errors})
    ratios = {}  # throughput / SegFormer-B2's; paired: median over rounds of SegFormer-B2's time / the model's
    for precision in ("bf16", "fp32") if REFERENCE in runs else ():
        ref = models[REFERENCE][precision]
        ratios[precision] = {
            name: {
                "throughput_ratio": round(m[precision]["throughput"] / ref["throughput"], 3),
                "paired_ratio": round(
                    statistics.median(b / a for a, b in zip(m[precision]["all_ms"], ref["all_ms"])), 3
                ),
            }
            for name, m in models.items()
            if name != REFERENCE
        }
    result = {
        "size": [size, size],
        "batch": plan.batch,
        "warmup_rounds": plan.warmup,
        "timed_rounds": plan.iters,
        "cudnn_benchmark": True,
        "num_classes": bench["NUM_CLASSES"],
        "models": models,
        "ratios_to_reference": ratios,
        "errors": errors,
    }
    if errors:
        result["status"] = "partial"
    return result


def _train(plan: Plan, encoder: str) -> dict[str, Any]:
    """Step time and peak memory of training ``encoder`` + ham as the SegNeXt ADE20K recipe sets it up."""
    import segcore
    import torch
    from segcore.evaluation.inference import precision as autocast
    from segcore.train.optim import build_optimizer
    from segcore.train.trainer import TrainSettings, resolve_recipe

    recipe, s = resolve_recipe(TrainSettings(encoder=encoder, recipe=RECIPE, dataset="ade20k"))
    batch, crop = (s.batch_size, tuple(s.crop_size)) if plan.device == "cuda" else (plan.batch, (plan.size,) * 2)
    device = plan.device
    if device == "cpu":
        torch.set_num_threads(plan.threads)
    torch.manual_seed(0)
    model = segcore.build_model(s.encoder, s.decoder, 150, encoder_options=s.encoder_opt, decoder_options=s.decoder_opt)
    model = model.to(device).train()
    optimizer = build_optimizer(model, recipe, s.lr, s.weight_decay)
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (batch, 3, *crop), dtype=torch.uint8, generator=generator).to(device)
    labels = torch.randint(0, 150, (batch, *crop), generator=generator).to(device)

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, "bf16"):
            loss = model.compute_loss(images, labels)["loss"]
        loss.backward()
        if s.clip_grad:
            torch.nn.utils.clip_grad_norm_(model.parameters(), s.clip_grad)
        optimizer.step()
        return loss

    for _ in range(plan.warmup):
        step()
    _sync(device)
    times = []
    for _ in range(plan.iters):
        start = time.perf_counter()
        loss = step()
        _sync(device)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {
        "model": f"{s.encoder} + {s.decoder}",
        "decoder_options": s.decoder_opt,
        "recipe": RECIPE,
        "optimizer": f"AdamW (fused={optimizer.defaults.get('fused')}), {len(optimizer.param_groups)} groups",
        "lr": s.lr,
        "weight_decay": s.weight_decay,
        "clip_grad": s.clip_grad,
        "batch": batch,
        "crop": list(crop),
        "precision": "bf16 autocast",
        "params": sum(p.numel() for p in model.parameters()),
        "warmup_steps": plan.warmup,
        "timed_steps": plan.iters,
        "median_step_ms": round(median * 1e3, 2),
        "images_per_s": round(batch / median, 2),
        "all_ms": [round(t * 1e3, 2) for t in times],
        "last_loss": round(loss.detach().float().item(), 4),
        **_peak_memory(device),
    }


def step_train_mscan_t(plan: Plan, out: Path) -> dict[str, Any]:
    """SegNeXt-T training step."""
    return _train(plan, "mscan-t")


def step_train_mscan_b(plan: Plan, out: Path) -> dict[str, Any]:
    """SegNeXt-B training step."""
    return _train(plan, "mscan-b")


def step_attention(plan: Plan, out: Path) -> dict[str, Any]:
    """SegDeformer's SDPA vs materialised attention: ``attention.py`` in fp32 and bf16, its table kept."""
    script = ROOT / "packages" / "segdeformer" / "benchmarks" / "attention.py"
    with tempfile.TemporaryDirectory() as tmp:
        json_path = Path(tmp) / "attention.json"
        command = [sys.executable, str(script), "--device", plan.device, "--encoder", plan.attention_encoder]
        command += ["--size", str(plan.attention_size), "--iters", str(plan.attention_iters)]
        command += ["--threads", str(plan.threads), "--precision", "fp32", "bf16", "--json", str(json_path)]
        print(" ".join(command), flush=True)
        proc = subprocess.run(command, stdout=subprocess.PIPE, text=True)
        (out / "attention.md").write_text(f"$ {' '.join(command)}\n\n{proc.stdout}")
        print(proc.stdout, flush=True)
        if proc.returncode != 0:
            raise RuntimeError(f"attention.py exited with status {proc.returncode}")
        data = json.loads(json_path.read_text())
    rows = {(r["attention"], r["precision"]): r for r in data["rows"]}
    summary = {}
    for precision in ("fp32", "bf16"):
        sdpa, mat = rows["sdpa", precision], rows["materialized", precision]
        summary[precision] = {
            "speedup": round(mat["median_s"] / sdpa["median_s"], 3),
            "attention_speedup": round(mat["attention_s"] / sdpa["attention_s"], 3),
            "memory_ratio": round(sdpa["peak_delta_mib"] / mat["peak_delta_mib"], 4),
            "sdpa_ms": round(sdpa["median_s"] * 1e3, 3),
            "materialized_ms": round(mat["median_s"] * 1e3, 3),
            "sdpa_peak_mib": round(sdpa["peak_delta_mib"], 1),
            "materialized_peak_mib": round(mat["peak_delta_mib"], 1),
            "max_diff": sdpa["diff"],
        }
    return {"command": " ".join(command[1:]), "summary": summary, **data}


def step_pytest(plan: Plan, out: Path) -> dict[str, Any]:
    """``pytest -m gpu`` with its log in ``pytest.log``; counts and failed tests from its JUnit report."""
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        command = [sys.executable, "-m", "pytest", "-m", "gpu", "-p", "no:cacheprovider", "-rfEs", "-v"]
        with (out / "pytest.log").open("w") as log:
            proc = subprocess.run([*command, f"--junitxml={junit}"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    failed = [
        f"{case.get('classname')}::{case.get('name')}"
        for case in suite.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    result = {"command": "pytest -m gpu", "exit_status": proc.returncode, **counts, "failed": failed}
    result["time_s"] = round(float(suite.get("time", 0)), 1)
    if proc.returncode not in (0, 5) or failed:
        result["status"] = "failed"
    return result


def step_compile(plan: Plan, out: Path) -> dict[str, Any]:
    """``benchmark_model`` of one model, eager then ``torch.compile`` (bf16, eval): speed-up and compile cost."""
    import segcore
    import torch
    from segcore.tools.benchmark import benchmark_model

    bench = _benchmarks()
    row = bench["find_row"](plan.compile_row)
    enc, dec = _row_options(row, plan.size)
    if plan.device == "cpu":
        torch.set_num_threads(plan.threads)
    torch.manual_seed(0)
    model = segcore.build_model(
        row.encoder, row.decoder, bench["NUM_CLASSES"], encoder_options=enc, decoder_options=dec
    )
    if plan.compile_backend != "inductor":  # benchmark_model calls torch.compile(step): give it the plan's backend
        torch.compile = functools.partial(torch.compile, backend=plan.compile_backend)
    results: dict[str, Any] = {}
    for name, compiled in (("eager", False), ("compiled", True)):
        start = time.perf_counter()
        r = benchmark_model(
            model, (plan.size, plan.size), plan.batch, plan.iters, plan.warmup, plan.device, "bf16", compile=compiled
        )
        results[name] = {"wall_s": round(time.perf_counter() - start, 1), **r.to_dict()}
        print(f"{name}: {r.latency_ms} ms, {r.throughput} img/s", flush=True)
        _save_partial(results)
    eager, compiled = results["eager"], results["compiled"]
    return {
        "model": row.label,
        "key": row.key,
        "precision": "bf16 autocast",
        "backend": plan.compile_backend,
        "speedup": round(eager["latency_ms"] / compiled["latency_ms"], 3),
        "compile_overhead_s": round(compiled["wall_s"] - eager["wall_s"], 1),
        **results,
    }


STEPS: dict[str, tuple[float, Callable[[Plan, Path], dict[str, Any]]]] = {
    "env": (60, step_env),
    "throughput": (180, step_throughput),
    "train-mscan-t": (75, step_train_mscan_t),
    "train-mscan-b": (75, step_train_mscan_b),
    "attention": (120, step_attention),
    "pytest": (180, step_pytest),
    "compile": (150, step_compile),
}


# --------------------------------------------------------------------------------------------- goals


def goals(steps: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's goals, each with the measured value and whether it was met (``None``: not measured)."""

    def result(name: str) -> dict[str, Any] | None:
        step = steps.get(name) or {}
        return step.get("result")

    out = []
    thr = result("throughput")
    value = None
    try:
        value = thr["ratios_to_reference"]["bf16"]["SegNeXt-B"]["throughput_ratio"]  # type: ignore[index]
    except (TypeError, KeyError):
        pass
    out.append({"goal": "SegNeXt-B >= 1.5x SegFormer-B2 throughput, bf16", "value": value, "target": ">= 1.5"})
    out[-1]["met"] = None if value is None else value >= 1.5
    train = result("train-mscan-b")
    value = None if train is None else train.get("peak_memory_gb")
    out.append({"goal": "training SegNeXt-B, batch 16: peak memory <= 18 GB", "value": value, "target": "<= 18 GB"})
    out[-1]["met"] = None if value is None else value <= 18
    att = result("attention")
    for precision in ("fp32", "bf16"):
        s = None if att is None else att["summary"][precision]
        value = None if s is None else {k: s[k] for k in ("speedup", "attention_speedup", "memory_ratio")}
        out.append(
            {
                "goal": f"SegDeformer SDPA >= 2x faster than materialised, <= 1/4 memory ({precision}, whole forward)",
                "value": value,
                "target": "speedup >= 2, memory_ratio <= 0.25",
            }
        )
        out[-1]["met"] = None if s is None else s["speedup"] >= 2 and s["memory_ratio"] <= 0.25
    tests = result("pytest")
    value = None if tests is None else {k: tests[k] for k in ("passed", "failures", "errors", "skipped")}
    out.append({"goal": "no CUDA test fails", "value": value, "target": "0 failures, 0 errors, 0 skipped"})
    out[-1]["met"] = None if value is None else not (value["failures"] or value["errors"] or value["skipped"])
    return out


# --------------------------------------------------------------------------------------------- driver


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    tmp.replace(path)


def run_step(name: str, timeout: float, args: argparse.Namespace, log: Any) -> dict[str, Any]:
    """Run one step in its own process group, killed after ``timeout`` seconds; its record for the JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        result_path = Path(tmp) / "result.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--out", str(args.out)]
        command += ["--result", str(result_path)] + ["--tiny"] * args.tiny
        log.write(f"\n===== {name} (cap {timeout:.0f} s) {datetime.datetime.now().isoformat(timespec='seconds')}\n")
        log.flush()
        start = time.perf_counter()
        proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, process_group=0)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
        record: dict[str, Any] = {"cap_s": round(timeout), "wall_s": round(time.perf_counter() - start, 1)}
        if result_path.exists():
            record["result"] = json.loads(result_path.read_text())
        if code is None:
            record |= {"status": "timeout", "error": f"killed after {timeout:.0f} s"}
        elif code != 0 or "result" not in record:
            record |= {"status": "failed", "error": f"exit status {code}; see gpu_check.log, step {name}"}
        else:
            record["status"] = record["result"].pop("status", "ok")
    return record


def child(args: argparse.Namespace) -> int:
    """Run one step in this process and write its result (or its error) to ``--result``."""
    plan = TINY if args.tiny else FULL
    _PARTIAL.append(args.result)
    try:
        result = STEPS[args.child][1](plan, args.out)
    except Exception as err:
        traceback.print_exc()
        partial = json.loads(args.result.read_text()) if args.result.exists() else {}
        _write_json(args.result, {**partial, "status": "failed", "error": f"{type(err).__name__}: {err}"[:1000]})
        return 1
    _write_json(args.result, result)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the steps; returns 0 when every step ran and the CUDA tests passed, else 1."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "gpu_check_out"))
    parser.add_argument("--tiny", action="store_true", default=os.environ.get("GPU_CHECK_TINY") == "1")
    parser.add_argument("--steps", nargs="+", choices=list(STEPS), default=list(STEPS), help="steps to run")
    parser.add_argument("--deadline", type=float, help="seconds for all steps (default: the plan's)")
    parser.add_argument("--child", choices=list(STEPS), help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.child:
        return child(args)
    plan = TINY if args.tiny else FULL
    start = time.perf_counter()
    deadline = start + (args.deadline or plan.deadline_s)
    data: dict[str, Any] = {
        "schema": SCHEMA,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python scripts/gpu_check.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "tiny": args.tiny,
        "plan": asdict(plan),
        "host": platform.node(),
        "pythonpath": os.environ.get("PYTHONPATH", ""),
        "wheels": os.environ.get("GPU_CHECK_WHEELS"),
        "steps": {},
    }
    json_path = args.out / "gpu_check.json"
    with (args.out / "gpu_check.log").open("a") as log:
        for name in args.steps:
            left = deadline - time.perf_counter()
            if left < 15:
                data["steps"][name] = {"status": "skipped", "error": "the overall deadline left no time"}
                print(f"[{name}] skipped: no time left", flush=True)
                continue
            print(f"[{name}] running (cap {min(STEPS[name][0], left):.0f} s)", flush=True)
            record = run_step(name, min(STEPS[name][0], left), args, log)
            data["steps"][name] = record
            print(f"[{name}] {record['status']} in {record['wall_s']} s {record.get('error', '')}", flush=True)
            data["goals"] = goals(data["steps"])
            _write_json(json_path, data)
    data["goals"] = goals(data["steps"])
    data["wall_s"] = round(time.perf_counter() - start, 1)
    _write_json(json_path, data)
    for goal in data["goals"]:
        verdict = {True: "met", False: "NOT met", None: "not measured"}[goal["met"]]
        print(f"goal: {goal['goal']}: {json.dumps(goal['value'])} -> {verdict}")
    print(f"wrote {json_path} ({data['wall_s']} s)")
    return 0 if all(s["status"] == "ok" for s in data["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())

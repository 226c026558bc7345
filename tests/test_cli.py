"""The `segcore` command end to end, through subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import segcore
import torch

SEGCORE = [sys.executable, "-m", "segcore_cli.main"]


def run(*args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([*SEGCORE, *args], capture_output=True, text=True, env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"segcore {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def test_help_and_version():
    out = run("--help").stdout
    for command in ("list", "convert", "benchmark", "hub"):
        assert command in out
    assert run("--version").stdout.strip() == f"segcore {segcore.__version__}"


def test_help_does_not_import_torch():
    code = (
        "import sys; from segcore_cli.main import build_parser; build_parser(); "
        "print(sorted(m for m in ('torch', 'timm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_positionals_may_come_between_options():
    from segcore_cli.main import build_parser

    parser = build_parser()
    args = parser.parse_args(["export", "runs/demo", "--opset", "17", "out.onnx", "--no-verify"])
    assert (args.model, str(args.out), args.opset, args.no_verify) == ("runs/demo", "out.onnx", 17, True)
    args = parser.parse_args(["predict", "a.jpg", "--model", "m", "b.jpg", "--out", "o"])
    assert (args.images, args.model, args.out) == (["a.jpg", "b.jpg"], "m", "o")
    args = parser.parse_args(["--debug", "data", "prepare", "ade20k", "src", "dst"])
    assert (args.debug, args.dataset, args.src, args.dst) == (True, "ade20k", "src", "dst")
    with pytest.raises(SystemExit):  # still one OUT.onnx
        parser.parse_args(["export", "a", "--opset", "17", "b.onnx", "c.onnx"])


def test_list_json_lists_every_kind_with_plugin_and_version():
    data = json.loads(run("list", "--json").stdout)
    assert {"encoders", "decoders", "losses", "datasets", "checkpoints", "converters", "recipes"} <= set(data)
    decoders = {row["name"]: row for row in data["decoders"]}
    assert decoders["upernet"]["plugin"] == "segcore" and decoders["upernet"]["version"] == segcore.__version__
    only = json.loads(run("list", "--kind", "losses", "--json").stdout)
    assert set(only) == {"losses"} and {"ce", "dice", "focal"} <= {r["name"] for r in only["losses"]}


def test_user_errors_exit_2_with_one_line_and_no_traceback():
    result = run("benchmark", "--encoder", "timm:resnet18", "--decoder", "no-such-decoder", "--iters", "0", check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown decoder 'no-such-decoder'" in lines[0]
    assert "Traceback" not in result.stderr
    debug = run(
        "--debug",
        "benchmark",
        "--encoder",
        "timm:resnet18",
        "--decoder",
        "no-such-decoder",
        "--iters",
        "0",
        check=False,
    )
    assert "Traceback" in debug.stderr
    bad_opt = run(
        "benchmark",
        "--encoder",
        "timm:resnet18",
        "--decoder",
        "mlp",
        "--decoder-opt",
        "chanels=3",
        "--iters",
        "0",
        check=False,
    )
    assert bad_opt.returncode == 2 and "did you mean 'channels'" in bad_opt.stderr


def test_benchmark_counts_json():
    data = json.loads(
        run(
            "benchmark",
            "--encoder",
            "timm:resnet18",
            "--decoder",
            "linear",
            "--size",
            "64",
            "--num-classes",
            "3",
            "--iters",
            "1",
            "--warmup",
            "0",
            "--json",
        ).stdout
    )
    model = segcore.build_model("timm:resnet18", "linear", 3)
    assert data["params"] == sum(p.numel() for p in model.parameters())
    assert data["gmacs"] > 0 and data["latency_ms"] > 0 and data["device"] == "cpu"
    assert data["torch"] == torch.__version__ and data["macs_convention"] == "segcore"
    counts = [
        json.loads(
            run(
                "benchmark",
                *("--encoder", "timm:resnet18", "--decoder", "linear", "--size", "64", "--num-classes", "3"),
                *("--iters", "0", "--macs", convention, "--json"),
            ).stdout
        )
        for convention in ("segcore", "torchprofile")
    ]
    # torchprofile adds the affine BNs, the final bilinear resize and the products: strictly more.
    from segcore.tools.benchmark import MACS_CONVENTIONS
    from segcore_cli.commands.benchmark import MACS_CONVENTIONS as CLI_CHOICES

    assert CLI_CHOICES == MACS_CONVENTIONS
    assert counts[1]["macs_convention"] == "torchprofile" and counts[1]["gmacs"] > counts[0]["gmacs"] > 0


def test_convert_writes_a_loadable_folder(tmp_path: Path):
    model = segcore.build_model("timm:resnet18", "linear", 3).eval()
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "ours.safetensors"))
    run(
        "convert",
        "--format",
        "segcore",
        "--encoder",
        "timm:resnet18",
        "--decoder",
        "linear",
        "--num-classes",
        "3",
        str(tmp_path / "ours.safetensors"),
        "--out",
        str(tmp_path / "out"),
    )
    loaded = segcore.SegModel.from_pretrained(tmp_path / "out")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    missing = run(
        "convert",
        "--format",
        "segcore",
        "--encoder",
        "timm:resnet18",
        "--decoder",
        "linear",
        "--num-classes",
        "3",
        str(tmp_path / "nope.pth"),
        "--out",
        str(tmp_path / "o2"),
        check=False,
    )
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_train_dry_run_prints_the_resolved_run_and_writes_nothing(tmp_path: Path):
    out_dir = tmp_path / "run"
    args = (
        "train",
        "--recipe",
        "segvit-coco-stuff10k-80k",
        "--encoder",
        "vit-l16-shrunk",
        "--output-dir",
        str(out_dir),
    )
    text = run(*args, "--dry-run").stdout
    for expected in (
        "vit-l16-shrunk + atm-shrunk, 171 classes",  # the dataset's classes, without the data on this machine
        "img_size=512",  # the Shrunk head at this recipe's crop
        "mean (127.5, 127.5, 127.5)",
        "clip grad       max L2 norm 35",
        "poly power 2",
        "min_size=512",
        "16 = 16 per device x 1 process(es)",
        "group         lr 2e-05, decay 0:",
    ):
        assert expected in text, expected
    plan = json.loads(run(*args, "--dry-run", "--json").stdout)
    assert plan["eval_protocol"]["min_size"] == 512 and plan["clip_grad"] == 35.0
    assert not out_dir.exists()  # nothing written, no weights, no data read
    bad = run(
        "train", "--encoder", "mscan-t", "--decoder", "ham", "--decoder-opt", "chanels=8", "--dry-run", check=False
    )
    assert bad.returncode == 2 and "did you mean 'channels'" in bad.stderr


def test_eval_write_card_records_the_score_in_the_folder(tmp_path: Path):
    from huggingface_hub import ModelCard

    ds = segcore.build_dataset("synthetic-shapes", split="val")
    model = segcore.build_model(
        "timm:resnet18", "linear", len(ds.classes), decoder_options={"channels": 8}, class_names=list(ds.classes)
    )
    model.config.extra["dataset"] = "synthetic-shapes"
    model.save_pretrained(tmp_path / "m")
    out = run("eval", "--model", str(tmp_path / "m"), "--max-samples", "2", "--device", "cpu", "--json", "--write-card")
    miou = json.loads(out.stdout)["mIoU"]
    card = ModelCard.load(tmp_path / "m" / "README.md")
    (result,) = card.data.eval_results
    assert (result.metric_name, result.dataset_type) == ("mIoU (single scale)", "synthetic-shapes")
    assert result.metric_value == pytest.approx(miou, abs=0.01)
    assert (
        json.loads((tmp_path / "m" / "config.json").read_text())["extra"]["eval_results"][0]["source"] == "segcore eval"
    )


def test_hub_push_takes_branch_message_and_pr(tmp_path: Path, local_hub):
    model = segcore.build_model("timm:resnet18", "linear", 3, decoder_options={"channels": 8})
    model.save_pretrained(tmp_path / "m")
    out = run("hub", "push", str(tmp_path / "m"), "--repo", "me/m", "--branch", "dev", "--commit-message", "hello")
    pr = run("hub", "push", str(tmp_path / "m"), "--repo", "me/m", "--create-pr", "--token", "hf_x")
    assert "/commit/" in out.stdout and "/discussions/" in pr.stdout
    assert local_hub.branches == [("me/m", "dev")] and local_hub.commits[0]["summary"] == "hello"
    assert local_hub.commits[1]["create_pr"] and "Bearer hf_x" in local_hub.authorizations


def test_pretrained_encoder_takes_a_source():
    """`--pretrained-encoder` alone: the registered ImageNet weights; with a value: that checkpoint, repo or folder."""
    base = ("train", "--encoder", "mit-b0", "--decoder", "mlp", "--iters", "2", "--dry-run", "--json")
    assert json.loads(run(*base, "--pretrained-encoder").stdout)["model"]["pretrained_encoder"] is True
    plan = json.loads(run(*base, "--pretrained-encoder", "nvidia/mit-b0").stdout)
    assert plan["model"]["pretrained_encoder"] == "nvidia/mit-b0"
    assert json.loads(run(*base).stdout)["model"]["pretrained_encoder"] is False


def test_a_reader_that_leaves_early_is_no_error():
    """`segcore ... | head`: the closed pipe ends the command quietly (exit 141, as SIGPIPE would), no traceback."""
    proc = subprocess.Popen(
        [*SEGCORE, "train", "--recipe", "segnext-ade20k-160k", "--dry-run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
    )
    proc.stdout.close()  # the only reader is gone before the command writes: its first write meets a closed pipe
    assert proc.wait(timeout=120) == 141
    assert b"Error" not in proc.stderr.read()

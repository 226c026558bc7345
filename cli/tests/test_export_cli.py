"""`segcore export`: a fresh or saved model -> a verified ONNX file; user errors are one line with exit code 2."""

from __future__ import annotations

import json

import pytest
import segcore
import torch
from segcore_cli.main import main

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_export_fresh_model_json(tmp_path, capsys):
    out_file = tmp_path / "m.onnx"
    code, out, err = _run(
        capsys,
        "export",
        "--format",
        "onnx",
        "--encoder",
        "timm:resnet18",
        "--decoder",
        "linear",
        "--num-classes",
        "2",
        "--decoder-opt",
        "channels=8",
        str(out_file),
        "--size",
        "64",
        "--json",
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["verified"] and data["decoder"] == "linear" and data["num_classes"] == 2
    shapes = [tuple(c["shape"]) for c in data["checks"]]
    assert shapes[0] == (1, 3, 64, 64) and shapes[1][0] == 2 and shapes[1][2] % 32 and shapes[1][3] % 32
    assert all(c["max_abs_diff"] <= c["tolerance"] for c in data["checks"])
    assert out_file.stat().st_size > 0


def test_export_saved_model_with_an_option_override(tmp_path, capsys):
    torch.manual_seed(0)
    segcore.build_model("timm:resnet18", "linear", 2, decoder_options={"channels": 8}).save_pretrained(tmp_path / "m")
    code, out, err = _run(
        capsys,
        "export",
        str(tmp_path / "m"),
        str(tmp_path / "m.onnx"),
        "--size",
        "64",
        "96",
        "--decoder-opt",
        "dropout=0.2",
    )
    assert code == 0, err
    assert "timm:resnet18 + linear (2 classes)" in out and "verified with onnxruntime" in out
    assert "1x3x64x96 max abs diff" in out and "2x3x" in out
    code, out, err = _run(capsys, "export", str(tmp_path / "m"), str(tmp_path / "n.onnx"), "--no-verify")
    assert code == 0 and "not verified" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["out.onnx"], "give MODEL"),
        (["--encoder", "timm:resnet18", "out.onnx"], "give MODEL"),
        (["{m}", "out.txt"], "must end in .onnx"),
        (["{m}", "out.onnx", "--size", "1", "2", "3"], "--size takes S or H W"),
        (["{m}", "out.onnx", "--decoder-opt", "channels=4"], "change the model's parameters"),
        (["{m}", "out.onnx", "--decoder-opt", "chanels=4"], "did you mean 'channels'"),
        (["{m}", "out.onnx", "--encoder", "timm:resnet18", "--decoder", "linear"], "not both"),
    ],
    ids=["nothing", "encoder-only", "suffix", "size", "param-changing-option", "typo", "both"],
)
def test_user_errors_are_one_line_exit_2(tmp_path, capsys, argv, message):
    folder = tmp_path / "m"
    if any("{m}" in a for a in argv):
        segcore.build_model("timm:resnet18", "linear", 2, decoder_options={"channels": 8}).save_pretrained(folder)
    argv = [a.replace("{m}", str(folder)).replace("out.", str(tmp_path / "out.")) for a in argv]
    code, out, err = _run(capsys, "export", *argv)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("segcore export: error:")

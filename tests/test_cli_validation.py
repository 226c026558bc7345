"""`segcore train --init-from` on bad input, end to end: a tampered config.json and a missing folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import segcore

SEGCORE = [sys.executable, "-m", "segcore_cli.main"]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*SEGCORE, *args], capture_output=True, text=True, cwd=cwd, env=dict(os.environ))


@pytest.fixture(scope="module")
def tampered(tmp_path_factory) -> Path:
    """A saved MiT-B0 model whose config.json asks for 2**31 channels in its last stage."""
    folder = segcore.build_model("mit-b0", "segformer", 3).save_pretrained(tmp_path_factory.mktemp("m") / "model")
    config = json.loads((folder / "config.json").read_text())
    config["encoder_options"]["embed_dims"] = [32, 64, 160, 2**31]
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_init_from_a_missing_folder_is_refused_by_the_dry_run(tmp_path):
    # The real run refuses the same path with the same message (test_core_validation: plan and resolve_run).
    result = run("train", "--init-from", "./nonexistent", "--dry-run", "--output-dir", "run", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--init-from ./nonexistent: './nonexistent' is not a model folder" in result.stderr
    assert "no such folder" in result.stderr and "fetched when training starts" not in result.stdout
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()


def test_init_from_a_tampered_config_names_the_file_and_the_field(tmp_path, tampered):
    result = run("train", "--init-from", str(tampered), "--dry-run", "--output-dir", "run", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{tampered / 'config.json'}: mit-b0.embed_dims: 2147483648 is out of range" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()

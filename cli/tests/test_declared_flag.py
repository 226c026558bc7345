"""A train flag is one declaration: a field added with ``setting(...)`` reaches every place a flag has to be.

The test subclasses ``TrainSettings`` with one new field and nothing else, puts it where the command and the
trainer look the settings class up, and finds the flag in ``--help``, the range check (parser and dataclass), the
dry run (JSON and text), the run's ``settings.json`` and the resume rule.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import segcore_cli.main as segcore_cli
from segcore.config.fields import Range, setting
from segcore.errors import TrainingError
from segcore.train import schema
from segcore.train.schema import TrainSettings


@dataclasses.dataclass
class WithWarmup(TrainSettings):
    """``TrainSettings`` plus one flag, declared the one way a flag is declared."""

    warmup_iters: int | None = setting(help="linear warm-up iterations (a new flag)", range=Range(int, low=0))


@dataclasses.dataclass
class MayChange(TrainSettings):
    """The same flag declared as one that ``--resume`` may change."""

    warmup_iters: int | None = setting(
        help="linear warm-up iterations", range=Range(int, low=0), on_resume="may-change"
    )


def use(monkeypatch, cls):
    """Make ``cls`` the settings class that ``segcore train`` builds (the trainer keeps the object's own class)."""
    monkeypatch.setattr(schema, "TrainSettings", cls)


@pytest.fixture
def warmup_flag(monkeypatch, tiny_plugin):
    use(monkeypatch, WithWarmup)


TINY = ["--encoder", "timm:test_convnext", "--decoder", "mlp", "--decoder-opt", "channels=16"]
TINY += ["--dataset", "tiny-shapes", "--iters", "2", "--batch-size", "2", "--crop-size", "32", "--no-progress"]


def test_help_lists_the_new_flag(warmup_flag, capsys):
    with pytest.raises(SystemExit):
        segcore_cli.main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--warmup-iters WARMUP_ITERS linear warm-up iterations (a new flag)" in help_text


def test_the_range_is_checked_at_parsing_and_in_the_dataclass(warmup_flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        segcore_cli.main(["train", *TINY, "--warmup-iters", "-1"])
    assert exit_info.value.code == 2
    assert "argument --warmup-iters: must be an integer >= 0, got -1" in capsys.readouterr().err
    with pytest.raises(TrainingError, match=r"--warmup-iters must be an integer >= 0, got -3"):
        WithWarmup(warmup_iters=-3)


def test_the_dry_run_shows_it(warmup_flag, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert segcore_cli.main(["train", *TINY, "--output-dir", out, "--warmup-iters", "5", "--dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["settings"]["--warmup-iters"] == 5
    assert segcore_cli.main(["train", *TINY, "--output-dir", out, "--warmup-iters", "5", "--dry-run"]) == 0
    assert "--warmup-iters 5" in capsys.readouterr().out


def test_settings_json_records_it_and_resume_holds_the_run_to_it(warmup_flag, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert segcore_cli.main(["train", *TINY, "--output-dir", str(out), "--warmup-iters", "5"]) == 0
    assert json.loads((out / "settings.json").read_text())["warmup_iters"] == 5
    # Declared "agree" (the default): a resumed run keeps 5, and another value is refused, naming the flag.
    capsys.readouterr()
    assert segcore_cli.main(["train", "--output-dir", str(out), "--resume", "--warmup-iters", "6", "--dry-run"]) == 2
    assert "--warmup-iters 6 (the run has 5)" in capsys.readouterr().err
    # Declared "may-change": the same flag on --resume is taken.
    use(monkeypatch, MayChange)
    assert segcore_cli.main(["train", "--output-dir", str(out), "--resume", "--warmup-iters", "6", "--dry-run"]) == 0
    assert "--warmup-iters 6" in capsys.readouterr().out

"""The README's plugin example works as written, and its quickstarts name real commands and calls."""

from __future__ import annotations

import importlib
import json
import re
import shlex
import sys
from pathlib import Path

import pytest
import segcore
import tomllib
import torch
from segcore.plugins import registry
from segcore_cli.main import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


def _block_starting(lang: str, first_line: str) -> str:
    (block,) = [b for b in _blocks(lang) if b.startswith(first_line)]
    return block


@pytest.fixture
def readme_plugin(tmp_path, monkeypatch):
    """Install the README's plugin module and entry point as a distribution on sys.path."""
    module_source = _block_starting("python", "# tiny_plugin.py")
    project = tomllib.loads(_block_starting("toml", "# pyproject.toml of the plugin"))["project"]
    (tmp_path / "tiny_plugin.py").write_text(module_source)
    info = tmp_path / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    entry_points = "".join(f"{k} = {v}\n" for k, v in project["entry-points"]["segcore"].items())
    (info / "entry_points.txt").write_text("[segcore]\n" + entry_points)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    registry.reset()
    try:
        yield project
    finally:
        registry.reset()
        sys.modules.pop("tiny_plugin", None)


def test_readme_plugin_is_listed_and_works_with_every_core_decoder(readme_plugin):
    rows = {r.name: r for r in segcore.list_components("encoders")["encoders"]}
    assert rows["tiny-net"].plugin == readme_plugin["name"]
    assert rows["tiny-net"].version == readme_plugin["version"]
    for decoder in ("linear", "mlp", "upernet"):
        model = segcore.build_model(encoder="tiny-net", decoder=decoder, num_classes=5, encoder_options={"width": 8})
        losses = model.compute_loss(
            torch.randint(0, 256, (2, 3, 48, 40), dtype=torch.uint8), torch.randint(0, 5, (2, 48, 40))
        )
        losses["loss"].backward()
        assert model.eval()(torch.rand(1, 3, 45, 70)).shape == (1, 5, 45, 70)
    with pytest.raises(segcore.OptionsError, match="width"):
        segcore.build_model(encoder="tiny-net", decoder="linear", num_classes=5, encoder_options={"widht": 8})


def test_readme_python_quickstart_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = _block_starting("python", "import torch\nimport segcore")
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README is ours
    assert namespace["logits"].shape == (2, 21, 83, 117)
    assert torch.equal(namespace["same"].eval()(namespace["images"]), namespace["model"].eval()(namespace["images"]))


def test_readme_own_data_commands_parse():
    # cli/tests/test_own_data_cli.py runs the same commands on a folder and a parquet repo written by the test.
    parser = build_parser()
    block = _block_starting("bash", "# your own data")
    commands = [line.split("  #", 1)[0].strip() for line in block.splitlines()[1:] if line.strip()]
    assert len(commands) == 6
    for command in commands:
        args = parser.parse_args(shlex.split(command)[1:])
        assert args.command in ("data", "train", "eval", "predict")


def test_readme_cli_quickstart_parses():
    parser = build_parser()
    block = _block_starting("bash", "segcore list")
    for line in block.splitlines():
        command = line.split("#", 1)[0].strip()
        if command:
            args = parser.parse_args(shlex.split(command)[1:])
            assert args.command


def test_readme_hub_commands_parse():
    parser = build_parser()
    block = _block_starting("bash", "segcore convert --format transformers")
    for line in block.strip().splitlines():
        command = line.split("  #")[0].strip()
        args = parser.parse_args(shlex.split(command)[1:])
        assert callable(args.run), command


def _tiny_data(root: Path, classes: tuple[str, ...]) -> None:
    """``pets`` (a folder) and ``pets-parquet`` (parquet shards for ``hf:``) with the same small images."""
    import datasets
    import numpy as np
    from PIL import Image

    (root / "pets").mkdir()
    (root / "pets" / "classes.txt").write_text("\n".join(classes) + "\n")
    features = datasets.Features({"image": datasets.Image(), "annotation": datasets.Image()})
    for split, hf_split in (("train", "train"), ("val", "validation")):
        rows: dict[str, list] = {"image": [], "annotation": []}
        for i in range(3):
            rng = np.random.default_rng([len(split), i])
            label = rng.integers(0, len(classes), (4, 4), dtype=np.uint8).repeat(6, 0).repeat(6, 1)
            image = (label[..., None] * np.array([70, 20, 120], np.uint8)).astype(np.uint8)
            for kind, array in (("images", image), ("masks", label)):
                (root / "pets" / kind / split).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(root / "pets" / kind / split / f"{i}.png")
            rows["image"].append(Image.fromarray(image))
            rows["annotation"].append(Image.fromarray(label))
        (root / "pets-parquet" / "data").mkdir(parents=True, exist_ok=True)
        table = datasets.Dataset.from_dict(rows, features=features)
        table.to_parquet(str(root / "pets-parquet" / "data" / f"{hf_split}-0.parquet"))
    (root / "pets-parquet" / "id2label.json").write_text(json.dumps(dict(enumerate(classes))))


def test_readme_finetune_commands_run(tmp_path, monkeypatch, capsys, caplog):
    # The README's fine-tuning commands as written, on a tiny M (4 classes) and tiny 3-class data in both layouts;
    # only the training length is cut (--iters 2, batch 2). The Hub model is only planned (--dry-run fetches nothing).
    import datasets
    from segcore_cli.main import main

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    classes = ("background", "cat", "dog")
    _tiny_data(tmp_path, classes)
    tiny = segcore.build_model("timm:test_convnext", "mlp", 4, decoder_options={"channels": 8})
    tiny.save_pretrained(tmp_path / "runs" / "shapes")
    block = _block_starting("bash", "# fine-tune on your data")
    commands = [shlex.split(line.split("  #", 1)[0]) for line in block.splitlines()[1:] if line.strip()]
    assert len(commands) == 5 and sum("--init-from" in c for c in commands) == 3
    for command in commands:
        argv = command[1:]
        if "--iters" in argv:
            argv[argv.index("--iters") + 1] = "2"
            argv += ["--batch-size", "2", "--eval-every", "2", "--checkpoint-every", "2", "--no-progress"]
        assert main(argv) == 0, command
    out = capsys.readouterr()
    assert caplog.text.count("re-initialised decoder.conv_seg.weight, decoder.conv_seg.bias") == 2
    assert "fetched when training starts" in out.out
    for run in ("pets-ft", "pets-hf"):
        config = json.loads((tmp_path / "runs" / run / "config.json").read_text())
        assert config["class_names"] == list(classes) and config["decoder_options"]["channels"] == 8

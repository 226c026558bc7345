"""A user's own data end to end: ``folder`` and ``hf:`` datasets train and evaluate, eval checks the classes, and
``segcore predict`` handles folders, EXIF, equal names, bad files, wide class values and large images."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import segcore
import torch
from PIL import Image
from segcore_cli.main import main

CLASSES = ("background", "red", "green")
COLOURS = np.array([(10, 10, 10), (220, 30, 30), (30, 200, 30)], np.uint8)
TINY = ["--encoder", "timm:test_convnext", "--decoder", "mlp", "--decoder-opt", "channels=8"]


def _scene(seed: int, size: int = 24) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    label = np.zeros((size, size), np.uint8)
    for cls in (1, 2):
        y, x = rng.integers(0, size - 8, 2)
        label[y : y + 8, x : x + 8] = cls
    return COLOURS[label], label


def _folder(root: Path, classes: tuple[str, ...] = CLASSES) -> Path:
    root.mkdir(parents=True)
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    for split, seeds in (("train", range(4)), ("val", range(10, 12))):
        for i in seeds:
            rgb, label = _scene(i)
            (root / "images" / split).mkdir(parents=True, exist_ok=True)
            (root / "masks" / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb).save(root / "images" / split / f"{i}.png")
            Image.fromarray(label).save(root / "masks" / split / f"{i}.png")
    return root


def _parquet_repo(root: Path) -> Path:
    import datasets

    feats = datasets.Features({"image": datasets.Image(), "annotation": datasets.Image()})
    for split, seeds in (("train", range(4)), ("validation", range(10, 12))):
        scenes = [_scene(i) for i in seeds]
        rows = {"image": [Image.fromarray(s[0]) for s in scenes], "annotation": [Image.fromarray(s[1]) for s in scenes]}
        (root / "data").mkdir(parents=True, exist_ok=True)
        table = datasets.Dataset.from_dict(rows, features=feats)
        table.to_parquet(str(root / "data" / f"{split}-00000-of-00001.parquet"))
    (root / "id2label.json").write_text(json.dumps({str(i): name for i, name in enumerate(CLASSES)}))
    return root


def _model(path: Path, num_classes: int, names: list[str] | None = None, decoder: str = "mlp") -> Path:
    model = segcore.build_model(
        encoder="timm:test_convnext",
        decoder=decoder,
        num_classes=num_classes,
        decoder_options={"channels": 8},
        class_names=names or [f"c{i}" for i in range(num_classes)],
    )
    model.save_pretrained(path)
    return path


@pytest.fixture(autouse=True)
def _hf_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def _train(out: Path, *data: str) -> None:
    argv = ["train", *TINY, *data, "--iters", "2", "--batch-size", "2"]  # the crop comes from the data
    argv += ["--eval-every", "2", "--checkpoint-every", "2", "--output-dir", str(out), "--no-progress", "--json"]
    assert main(argv) == 0


# ---------------------------------------------------------------------------------------------- train and eval
def test_folder_and_hub_data_train_evaluate_and_keep_class_names(tmp_path, capsys):
    folder = _folder(tmp_path / "shapes")
    _train(tmp_path / "run-folder", "--dataset", "folder", "--data-root", str(folder))
    capsys.readouterr()
    config = json.loads((tmp_path / "run-folder" / "config.json").read_text())
    assert config["class_names"] == list(CLASSES) and config["num_classes"] == 3
    assert json.loads((tmp_path / "run-folder" / "settings.json").read_text())["crop_size"] == [24, 24]
    argv = ["eval", "--model", str(tmp_path / "run-folder"), "--dataset", "folder", "--data-root", str(folder)]
    assert main([*argv, "--json", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in result["per_class"]] == list(CLASSES) and result["warnings"] == []
    assert result["protocol"]["mode"] == "whole" and result["protocol"]["resize"] is None

    repo = _parquet_repo(tmp_path / "repo")
    _train(tmp_path / "run-hub", "--dataset", f"hf:{repo}", "--dataset-opt", "crop_size=16")
    capsys.readouterr()
    assert json.loads((tmp_path / "run-hub" / "settings.json").read_text())["crop_size"] == [16, 16]
    assert json.loads((tmp_path / "run-hub" / "config.json").read_text())["class_names"] == list(CLASSES)
    # The model records its dataset: eval needs no --dataset, and reads the Hub's "validation" split as val.
    assert main(["eval", "--model", str(tmp_path / "run-hub"), "--json", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in result["per_class"]] == list(CLASSES) and result["dataset"] == f"hf:{repo}"

    assert main(["data", "check", "--dataset", f"hf:{repo}", "--json"]) == 0
    reports = json.loads(capsys.readouterr().out)
    assert [(r["split"], r["count"], r["errors"]) for r in reports] == [("train", 4, []), ("val", 2, [])]


def test_eval_refuses_another_class_count_and_warns_on_renamed_classes(tmp_path, capsys):
    folder = _folder(tmp_path / "shapes")
    four = _model(tmp_path / "four", 4)
    code = main(["eval", "--model", str(four), "--dataset", "folder", "--data-root", str(folder), "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert f"model {four} predicts 4 classes but dataset folder (val) has 3" in err[0]
    assert "--init-from" in err[0]

    renamed = _model(tmp_path / "renamed", 3, ["background", "crimson", "green"])
    argv = ["eval", "--model", str(renamed), "--dataset", "folder", "--data-root", str(folder), "--device", "cpu"]
    assert main([*argv, "--json"]) == 0
    captured = capsys.readouterr()
    assert "1 of 3 class names differ" in captured.err and "1 'crimson' vs 'red'" in captured.err
    assert json.loads(captured.out)["warnings"][0].startswith("1 of 3 class names differ")


def test_data_check_names_files_without_partner(tmp_path, capsys):
    folder = _folder(tmp_path / "shapes")
    (folder / "masks" / "train" / "0.png").unlink()
    Image.fromarray(np.full((24, 24), 9, np.uint8)).save(folder / "masks" / "train" / "1.png")
    argv = ["data", "check", "--dataset", "folder", "--data-root", str(folder), "--split", "train"]
    with pytest.warns(UserWarning, match="without a partner"):
        assert main(argv) == 1
    out = capsys.readouterr().out
    assert f"error: {folder / 'images' / 'train' / '0.png'}: no mask" in out
    assert f"error: {folder / 'masks' / 'train' / '1.png'}: label value(s) [9]" in out
    with pytest.warns(UserWarning):
        argv = ["train", *TINY, "--dataset", "folder", "--data-root", str(folder), "--iters", "1"]
        assert main([*argv, "--output-dir", str(tmp_path / "run")]) == 2
    assert "no mask" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------ predict
def _exif_jpeg(path: Path) -> None:
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :10] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # viewers rotate it 90 degrees clockwise: shown 20 wide, 40 high
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(stored).save(path, exif=exif.tobytes())


def test_predict_folder_keeps_layout_orientation_and_names_and_reports_bad_files(tmp_path, capsys):
    model = _model(tmp_path / "m", 3)
    photos = tmp_path / "photos"
    _exif_jpeg(photos / "b" / "x.jpg")
    (photos / "a").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 12, 3), np.uint8)).save(photos / "a" / "x.png")
    Image.fromarray(np.zeros((9, 13, 3), np.uint8)).save(photos / "b" / "x.png")  # same folder, same name
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff not a picture")
    (photos / "notes.txt").write_text("not an image type: skipped by the folder scan")
    out = tmp_path / "out"
    code = main(["predict", "--model", str(model), str(photos), "--out", str(out), "--device", "cpu", "--json"])
    captured = capsys.readouterr()
    assert code == 1
    rows = json.loads(captured.out)
    assert {r["error"].split(":")[0] for r in rows if "error" in r} == {str(photos / "broken.jpg")}
    assert "1 input(s) failed" in captured.err and "broken.jpg: unreadable" in captured.err
    assert Image.open(out / "a" / "x_label.png").size == (12, 8)
    assert Image.open(out / "b" / "x_png_label.png").size == (13, 9)
    rotated = Image.open(out / "b" / "x_jpg_label.png")
    assert rotated.size == (20, 40) and Image.open(out / "b" / "x_jpg_overlay.png").size == (20, 40)
    overlay = np.asarray(Image.open(out / "b" / "x_jpg_overlay.png")).astype(int)
    assert overlay[:10].mean() > overlay[-10:].mean() + 60  # the white band is on top, as a viewer shows it

    # Two files with one name in two folders, and a glob: outputs keep their folders under --out.
    code = main(
        [
            "predict",
            "--model",
            str(model),
            str(photos / "a" / "x.png"),
            str(photos / "b" / "x.jpg"),
            "--out",
            str(tmp_path / "two"),
        ]
    )
    assert (
        code == 0
        and (tmp_path / "two" / "a" / "x_label.png").exists()
        and (tmp_path / "two" / "b" / "x_label.png").exists()
    )
    assert main(["predict", "--model", str(model), str(photos / "*" / "*.png"), "--out", str(tmp_path / "glob")]) == 0
    assert sorted(p.relative_to(tmp_path / "glob").as_posix() for p in (tmp_path / "glob").rglob("*_label.png")) == [
        "a/x_label.png",
        "b/x_label.png",
    ]
    capsys.readouterr()


def test_predict_label_values_above_255_and_16bit_images(tmp_path, capsys):
    model = segcore.build_model(
        encoder="timm:test_convnext", decoder="linear", num_classes=300, decoder_options={"channels": 8}
    )
    with torch.no_grad():  # every pixel is class 299: a palette PNG would store 299 % 256 = 43
        model.decoder.conv_seg.weight.zero_()
        model.decoder.conv_seg.bias.zero_()
        model.decoder.conv_seg.bias[299] = 10.0
    model.save_pretrained(tmp_path / "wide")
    ramp = (np.arange(16 * 20, dtype=np.uint16).reshape(16, 20) * 200).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    out = tmp_path / "out"
    argv = ["predict", "--model", str(tmp_path / "wide"), str(tmp_path / "deep.png"), "--out", str(out)]
    assert main([*argv, "--alpha", "0", "--device", "cpu"]) == 0
    label = Image.open(out / "deep_label.png")
    assert label.mode.startswith("I") and np.unique(np.asarray(label)).tolist() == [299]
    from segcore_datasets.dataset import read_image as dataset_reader

    # alpha 0: the overlay is the image as read, the same as a dataset reads it (rescaled, not clipped to white)
    overlay = np.asarray(Image.open(out / "deep_overlay.png"))
    assert np.array_equal(overlay, dataset_reader(tmp_path / "deep.png")) and overlay.min() < 10 < 245 < overlay.max()
    capsys.readouterr()


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--alpha", "1.5", "--alpha: must be a number in [0, 1]"),
        ("--alpha", "half", "--alpha: must be a number in [0, 1]"),
        ("--max-side", "0", "--max-side: must be an integer >= 32"),
        ("--max-side", "1e3", "--max-side: must be an integer >= 32"),
    ],
)
def test_predict_bad_flags_exit_2_with_one_line(tmp_path, capsys, flag, value, message):
    with pytest.raises(SystemExit) as info:  # argparse refuses it while parsing, before anything is loaded
        main(["predict", "--model", "m", "x.jpg", "--out", str(tmp_path), flag, value])
    lines = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(lines) == 1 and message in lines[0] and value in lines[0], lines


@pytest.mark.slow
def test_predict_8000_square_image_shows_progress_in_bounded_memory(tmp_path):
    model = _model(tmp_path / "m", 40)
    big = np.zeros((8000, 8000, 3), np.uint8)
    big[::7] = 200
    Image.fromarray(big).save(tmp_path / "big.png", compress_level=1)
    del big
    # Scores of the whole image would take 40 x 8000 x 8000 x 4 bytes = 10 GB; the windows keep them to one crop.
    code = (
        "import resource, sys; from segcore_cli.main import main; rc = main(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024); sys.exit(rc)"
    )
    argv = [sys.executable, "-c", code, "predict", "--model", str(model), str(tmp_path / "big.png")]
    result = subprocess.run([*argv, "--out", str(tmp_path / "out"), "--device", "cpu"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    peak_mb = int(result.stdout.strip().splitlines()[-1])
    assert peak_mb < 3000, peak_mb
    assert "big.png" in result.stderr and "/144" in result.stderr  # the windows' progress bar (12 x 12 windows)
    assert Image.open(tmp_path / "out" / "big_label.png").size == (8000, 8000)

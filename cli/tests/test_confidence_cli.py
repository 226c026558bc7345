"""``segcore predict --confidence / --save-probs / --overlay confidence`` on a tiny trained run, against the model's
own softmax."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import segcore
import torch
import torch.nn.functional as F
from PIL import Image
from segcore.evaluation.inference import EvalProtocol
from segcore_cli.main import main

pytestmark = pytest.mark.usefixtures("tiny_plugin")


@pytest.fixture
def run(tiny_run) -> Path:
    from segcore.train import train

    return train(tiny_run(iters=2, eval_every=0, checkpoint_every=0))


@pytest.fixture
def photo(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (37, 45, 3), dtype=np.uint8)).save(folder / "a.png")
    return folder / "a.png"


def _own_softmax(run: Path, photo: Path) -> torch.Tensor:
    """The softmax of the model's own output for the photo, at the photo's size ([K, H, W])."""
    model = segcore.SegModel.from_pretrained(run).eval()
    assert EvalProtocol.from_dict(model.config.eval).describe() == EvalProtocol().describe()  # whole, one scale
    image = torch.from_numpy(np.asarray(Image.open(photo).convert("RGB")).copy()).permute(2, 0, 1)[None]
    with torch.no_grad():
        logits = model(image).float()
    logits = F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)
    return logits.softmax(1)[0]


def test_confidence_is_255_times_the_model_s_max_softmax(run, photo, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["predict", "--model", str(run), str(photo), "--out", str(out), "--device", "cpu"]
    assert main([*args, "--confidence", "--save-probs", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["confidence"] == str(out / "a_confidence.png") and rows[0]["probs"] == str(out / "a_probs.npz")
    probs = _own_softmax(run, photo)
    grey = Image.open(out / "a_confidence.png")
    assert grey.mode == "L" and grey.size == (45, 37)
    assert np.abs(np.asarray(grey, dtype=np.int64) - (255 * probs.amax(0)).numpy()).max() <= 1
    with np.load(out / "a_probs.npz") as saved:
        stored = saved["probs"]
    assert stored.dtype == np.float16 and stored.shape == (probs.shape[0], 37, 45)
    np.testing.assert_allclose(stored.astype(np.float32).sum(0), 1.0, atol=3e-3)
    np.testing.assert_allclose(stored.astype(np.float32), probs.numpy(), atol=1e-3)
    labels = np.asarray(Image.open(out / "a_label.png"))
    assert np.array_equal(labels, probs.argmax(0).numpy())
    assert {"a_confidence.png", "a_probs.npz"} <= set(json.loads((out / ".segcore-predict.json").read_text())["files"])


def test_overlay_confidence_dims_each_pixel_by_its_confidence(run, photo, tmp_path, capsys):
    plain, dimmed = tmp_path / "plain", tmp_path / "dimmed"
    args = ["predict", "--model", str(run), str(photo), "--device", "cpu"]
    assert main([*args, "--out", str(plain)]) == 0
    assert main([*args, "--out", str(dimmed), "--overlay", "confidence"]) == 0
    assert not (dimmed / "a_confidence.png").exists()  # the map is used, not written, without --confidence
    confidence = (255 * _own_softmax(run, photo).amax(0)).numpy()
    colours = np.asarray(Image.open(plain / "a_overlay.png"), dtype=np.float64)
    expected = colours * confidence[..., None] / 255
    assert np.abs(np.asarray(Image.open(dimmed / "a_overlay.png"), dtype=np.float64) - expected).max() <= 1.5


def test_a_users_file_where_a_confidence_map_would_go_is_refused(run, photo, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a_confidence.png").write_bytes(b"mine")
    args = ["predict", "--model", str(run), str(photo), "--out", str(out), "--device", "cpu", "--confidence"]
    assert main(args) == 2
    assert "a_confidence.png" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["a_confidence.png"]
    assert (out / "a_confidence.png").read_bytes() == b"mine"


def _ece(conf: np.ndarray, right: np.ndarray, bins: int = 15) -> float:
    """ECE (percent) over pixels, written out: equal-width bins [b/15, (b+1)/15), the last one closed."""
    index = np.minimum((conf * bins).astype(np.int64), bins - 1)
    gaps = [(index == b).sum() * abs(right[index == b].mean() - conf[index == b].mean()) for b in np.unique(index)]
    return 100 * float(np.sum(gaps)) / conf.size


def test_eval_json_has_ece_and_mmseg_s_fscore_of_the_model_s_own_outputs(run, capsys):
    args = ["eval", "--model", str(run), "--dataset", "tiny-shapes", "--max-samples", "4", "--device", "cpu"]
    assert main([*args, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["protocol"]["mode"] == "whole" and printed["protocol"]["scales"] == [1.0]
    assert not printed["protocol"]["flip"] and not printed["protocol"].get("resize")
    model = segcore.SegModel.from_pretrained(run).eval()
    dataset = segcore.build_dataset("tiny-shapes", split="val")
    k = model.config.num_classes
    confs, rights, cm = [], [], np.zeros((k, k), np.int64)
    for i in range(4):
        sample = dataset[i]
        image = torch.as_tensor(np.asarray(sample["image"]))[None]
        label = np.asarray(sample["label"]).reshape(-1)
        with torch.no_grad():
            logits = F.interpolate(model(image).float(), size=image.shape[-2:], mode="bilinear", align_corners=False)
        probs = logits.softmax(1)[0].reshape(k, -1).numpy().astype(np.float64)
        keep = label < k
        pred = probs.argmax(0)[keep]
        confs.append(probs.max(0)[keep])
        rights.append(pred == label[keep])
        np.add.at(cm, (label[keep], pred), 1)
    expected = _ece(np.concatenate(confs), np.concatenate(rights).astype(np.float64))
    assert printed["ECE"] == pytest.approx(expected, abs=0.006)
    assert sum(printed["calibration"]["count"]) == cm.sum()
    # mmseg's formulas from the confusion matrix: precision over predicted pixels, recall over labelled ones.
    tp = np.diag(cm).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision, recall = tp / cm.sum(0), tp / cm.sum(1)
        fscore = 2 * precision * recall / (precision + recall)
    for key, values in (("Fscore", fscore), ("Precision", precision), ("Recall", recall)):
        ours = [np.nan if c[key] is None else c[key] for c in printed["per_class"]]
        np.testing.assert_allclose(ours, np.round(100 * values, 2), atol=0.006, equal_nan=True)
        assert printed[f"m{key}"] == pytest.approx(100 * np.nanmean(values), abs=0.006)
    assert main(args) == 0  # the table names the new scores too
    table = capsys.readouterr().out
    assert "Fscore" in table and "Precision" in table and "mFscore" in table and "ECE" in table

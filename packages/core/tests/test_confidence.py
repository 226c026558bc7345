"""Confidence maps, calibration (ECE) and mmseg's F-score / precision / recall, each against a direct reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from segcore.evaluation.confidence import (
    BINS,
    calibration_histogram,
    expected_calibration_error,
    max_probability,
    reliability,
)
from segcore.evaluation.inference import EvalProtocol, infer_logits, predict_maps, returns_probabilities
from segcore.evaluation.metrics import SegMetric, confusion_matrix, metrics_from_confusion


def _ece_reference(conf: np.ndarray, right: np.ndarray, bins: int = 15) -> float:
    """ECE in percent, written out: bins [b/15, (b+1)/15), the last one closed."""
    index = np.minimum((conf * bins).astype(np.int64), bins - 1)
    total = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            total += members.sum() / conf.size * abs(right[members].mean() - conf[members].mean())
    return 100 * total


def test_ece_matches_a_direct_computation_and_skips_ignored_pixels():
    rng = np.random.default_rng(0)
    k, n = 5, 4000
    logits = torch.from_numpy(rng.normal(size=(k, n)) * 2).float()
    label = torch.from_numpy(rng.integers(0, k, n))
    label[:300] = 255  # ignored
    label[300:320] = 7  # outside the classes: skipped like the confusion matrix skips them
    pred = logits.argmax(0)
    conf = max_probability(logits, normalised=False, dim=0)
    assert torch.allclose(conf, logits.softmax(0).amax(0), atol=1e-6)
    histogram = calibration_histogram(conf, pred, label, k)
    keep = (label < k).numpy()
    right = (pred == label).numpy()[keep].astype(np.float64)
    expected = _ece_reference(conf.numpy()[keep].astype(np.float64), right)
    assert expected_calibration_error(histogram) == pytest.approx(expected, abs=1e-6)
    assert int(histogram[0].sum()) == keep.sum() and int(histogram[2].sum()) == right.sum()
    diagram = reliability(histogram)
    assert diagram["bins"] == BINS and len(diagram["edges"]) == BINS + 1 and sum(diagram["count"]) == keep.sum()


def test_a_perfectly_calibrated_model_has_ece_near_zero():
    # Each pixel's confidence c is drawn, then it is right with probability c: calibrated by construction.
    rng = np.random.default_rng(1)
    n = 400_000
    conf = rng.uniform(0.3, 1.0, n)
    right = rng.uniform(size=n) < conf
    label = torch.zeros(n, dtype=torch.long)
    pred = torch.from_numpy(np.where(right, 0, 1))
    ece = expected_calibration_error(calibration_histogram(torch.from_numpy(conf), pred, label, 2))
    # Sampling error: each bin's accuracy has a standard error under sqrt(0.25 / n_b), with n_b about n / 10.
    assert ece < 0.5, ece
    overconfident = calibration_histogram(torch.from_numpy(np.minimum(conf + 0.2, 1.0)), pred, label, 2)
    assert expected_calibration_error(overconfident) > 15


def test_the_histogram_summed_over_parts_is_the_whole():
    rng = np.random.default_rng(2)
    conf = torch.from_numpy(rng.uniform(0, 1, 1000)).float()
    pred = torch.from_numpy(rng.integers(0, 3, 1000))
    label = torch.from_numpy(rng.integers(0, 3, 1000))
    metric = SegMetric(3)
    for part in range(4):
        chunk = slice(250 * part, 250 * (part + 1))
        metric.update(pred[chunk], label[chunk], confidence=conf[chunk])
    assert torch.equal(metric.calibration, calibration_histogram(conf, pred, label, 3))  # integer counts: exact
    assert metric.compute()["ECE"] == expected_calibration_error(calibration_histogram(conf, pred, label, 3))
    assert math.isnan(expected_calibration_error(torch.zeros(3, BINS, dtype=torch.long)))


def _mmseg_reference(cm: np.ndarray) -> dict[str, np.ndarray]:
    """mmseg's total_area_to_metrics (beta 1), restated with numpy's 0/0 = nan."""
    intersect = np.diag(cm).astype(np.float64)
    pred_area, label_area = cm.sum(0).astype(np.float64), cm.sum(1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = intersect / pred_area
        recall = intersect / label_area
        fscore = 2 * precision * recall / (precision + recall)
    return {"Fscore": fscore, "Precision": precision, "Recall": recall}


@pytest.mark.parametrize("seed", range(6))
def test_fscore_precision_recall_follow_mmseg_on_random_cases(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(3, 9))
    label = rng.integers(0, k, (3, 20, 20))
    pred = rng.integers(0, k, (3, 20, 20))
    absent = rng.choice(k, size=2, replace=False)
    label[np.isin(label, absent)] = 255  # classes absent from the labels
    pred[pred == absent[0]] = (absent[0] + 1) % k  # and one of them never predicted either
    if seed % 2:
        never_right = int(rng.integers(0, k))  # predicted and present but never right: F is 0 / 0
        pred[(label == never_right) & (pred == never_right)] = (never_right + 1) % k
    cm = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(label), k)
    m = metrics_from_confusion(cm)
    ref = _mmseg_reference(cm.numpy())
    for key, values in ref.items():
        ours = np.array([c[key] for c in m["per_class"]]) / 100
        np.testing.assert_allclose(ours, values, rtol=0, atol=1e-13, equal_nan=True)
        mean = np.nanmean(values) if not np.isnan(values).all() else math.nan
        assert m[f"m{key}"] / 100 == pytest.approx(mean, abs=1e-13, nan_ok=True), key
    assert np.isnan(ref["Recall"][absent]).all() and np.isnan(ref["Precision"][absent[0]])


class _Context(torch.nn.Module):
    """Logits that depend on the neighbourhood (stride-4 convolution, upsampled to the input size)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, k, 3, stride=4, padding=1)

    def forward(self, x):
        y = 3 * self.conv(x.float() / 255)
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


class _Pointwise(torch.nn.Module):
    def __init__(self, k: int) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = torch.nn.Conv2d(3, k, 1)

    def forward(self, x):
        return 4 * self.conv(x.float() / 255)


def _reference_probs(model, image, scales, flip):
    """The averaged softmax of every scale and flip at the image size (mmseg's aug_test), written out."""
    h, w = image.shape[-2:]
    total = []
    for s in scales:
        x = F.interpolate(image.float(), scale_factor=s, mode="bilinear", align_corners=False).round()
        for f in (False, True) if flip else (False,):
            out = model(x.flip(-1) if f else x)
            out = out.flip(-1) if f else out
            total.append(F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False).softmax(1))
    return torch.stack(total).mean(0)[0]


@pytest.mark.parametrize("flip", [False, True], ids=["single", "flip"])
def test_confidence_and_probabilities_are_the_model_s_own_softmax(flip):
    k = 5
    image = torch.randint(0, 255, (1, 3, 61, 83), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    model = _Context(k).eval()
    maps = predict_maps(model, image, EvalProtocol(flip=flip), k, confidence=True, probs=True)
    with torch.no_grad():
        ref = _reference_probs(model, image, (1.0,), flip)
    assert maps.confidence.dtype == np.uint8 and maps.confidence.shape == (61, 83)
    assert np.abs(maps.confidence.astype(int) - (255 * ref.amax(0)).numpy()).max() <= 1
    assert maps.probs.dtype == np.float16 and maps.probs.shape == (k, 61, 83)
    np.testing.assert_allclose(maps.probs.astype(np.float32), ref.numpy(), atol=2e-3)
    assert np.array_equal(maps.labels, ref.argmax(0).numpy())


@pytest.mark.parametrize(
    "protocol",
    [
        EvalProtocol(resize=(64, 32)),
        EvalProtocol(resize=(64, 32), scales=(0.5, 1.0), flip=True),
        EvalProtocol(mode="slide", crop_size=(40, 40), stride=(30, 30), resize=(100, 60)),
    ],
    ids=["resize", "multi-scale-flip", "slide"],
)
def test_the_bounded_ways_give_the_eval_path_s_probabilities(protocol):
    # A budget too small for the scores at the image size, enough at the network's: banded (or windowed) output.
    k = 5
    image = torch.randint(0, 255, (1, 3, 97, 130), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    model = _Context(k).eval()
    maps = predict_maps(model, image, protocol, k, memory_budget=4 * k * 64 * 40 * 3, confidence=True, probs=True)
    scores = infer_logits(model, image, protocol, k)[0]
    ref = scores if returns_probabilities(protocol) else scores.softmax(0)
    assert np.abs(maps.confidence.astype(int) - (255 * ref.amax(0)).numpy()).max() <= 1
    np.testing.assert_allclose(maps.probs.astype(np.float32), ref.numpy(), atol=2e-3)
    assert np.array_equal(maps.labels, scores.argmax(0).numpy())


def test_native_windows_give_confidence_at_the_image_size():
    image = torch.randint(0, 255, (1, 3, 70, 90), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    slide = EvalProtocol(mode="slide", crop_size=(32, 32), stride=(24, 24))
    for k in (3, 300):  # confidence maps stay 8-bit for any number of classes
        pointwise = _Pointwise(k).eval()  # sees single pixels: windows change nothing
        maps = predict_maps(pointwise, image, slide, k, memory_budget=1000, confidence=True, probs=k < 10)
        with torch.no_grad():
            ref = pointwise(image)[0].softmax(0)
        assert maps.confidence.dtype == np.uint8 and maps.confidence.shape == (70, 90)
        assert np.abs(maps.confidence.astype(int) - (255 * ref.amax(0)).numpy()).max() <= 1
        if k < 10:
            np.testing.assert_allclose(maps.probs.astype(np.float32).sum(0), 1, atol=3e-3)

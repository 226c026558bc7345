"""Core's image reader, the class check, the preflight's report and label maps of images of any size."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from segcore.data import check_classes, compare_classes, preflight, read_image
from segcore.errors import ClassMismatchError, ImageReadError
from segcore.evaluation.inference import EvalProtocol, predict_label_map, predict_labels


# ------------------------------------------------------------------------------------------------------ reader
def test_16bit_and_float_images_are_rescaled_not_clipped(tmp_path):
    ramp = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    rgb = read_image(tmp_path / "deep.png")
    assert rgb.dtype == np.uint8 and rgb.shape == (3, 4, 3)
    assert rgb[..., 0].tolist() == (ramp * (255.0 / 11000)).astype(np.uint8).tolist()  # not all 255
    unit = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    Image.fromarray(unit, mode="F").save(tmp_path / "unit.tif")
    assert read_image(tmp_path / "unit.tif")[..., 1].tolist() == np.rint(unit * 255).astype(np.uint8).tolist()
    big = unit * 4000
    Image.fromarray(big, mode="F").save(tmp_path / "big.tif")
    assert read_image(tmp_path / "big.tif").max() == 255
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0] = 200
    assert read_image(Image.fromarray(rgba)).tolist() == [[[200, 0, 0]] * 2] * 2  # alpha dropped


def test_exif_orientation_only_when_asked(tmp_path):
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, :10] = 255  # a white band on the left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    Image.fromarray(wide).save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    assert read_image(tmp_path / "phone.jpg").shape == (20, 40, 3)  # datasets: stored pixels (labels have no EXIF)
    shown = read_image(tmp_path / "phone.jpg", exif=True)
    assert shown.shape == (40, 20, 3) and shown[:10].mean() > 200 and shown[-10:].mean() < 50


def test_unreadable_images_name_the_file(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    with pytest.raises(ImageReadError, match="broken.jpg: unreadable or truncated image"):
        read_image(tmp_path / "broken.jpg")
    with pytest.raises(ImageReadError, match="gone.png: image file not found"):
        read_image(tmp_path / "gone.png")
    buf = io.BytesIO()
    Image.fromarray(np.full((2, 2), 7, np.uint8)).save(buf, format="PNG")
    assert read_image(buf.getvalue()).tolist() == [[[7, 7, 7]] * 2] * 2


# ------------------------------------------------------------------------------------------------- class check
def test_class_check_refuses_other_counts_and_reports_renamed_classes():
    same = compare_classes(["Background", "cat "], ["background", "cat"])
    assert same.identical  # case and stray spaces are not differences
    renamed = check_classes(["bg", "cat", "dog"], ["bg", "kitten", "puppy"])
    assert renamed.same_count and renamed.renamed == ((1, "cat", "kitten"), (2, "dog", "puppy"))
    assert renamed.describe_renamed(limit=1) == "1 'cat' vs 'kitten' and 1 more"
    with pytest.raises(ClassMismatchError, match="model m predicts 3 classes but dataset d has 2: fine-tune"):
        check_classes(["a", "b", "c"], ["a", "b"], model="model m", dataset="dataset d", fix="fine-tune")
    assert check_classes(2, ["a", "b"]).renamed == ()  # a model without names: only the count is compared


def test_preflight_lists_every_problem_it_finds():
    class Data:
        name, classes, ignore_index = "toy", ("a", "b"), 255
        layout_problems = ["images/x.jpg: no mask masks/x.png"]

        def __len__(self):
            return 3

        def load_arrays(self, i):
            label = np.full((2, 2), [0, 5, 1][i], np.uint8)
            return np.zeros((2, 2, 3), np.uint8), label, f"masks/{i}.png"

    with pytest.raises(ValueError) as info:
        preflight(Data())
    lines = str(info.value).splitlines()
    assert lines[-1] == "2 problems in toy"
    assert lines[:-1] == [
        "images/x.jpg: no mask masks/x.png",
        "masks/1.png: label value(s) [5] outside 0..1 and not ignore 255",
    ]


# --------------------------------------------------------------------------------------------- any image size
class _Pointwise(torch.nn.Module):
    """Logits from each pixel alone (a 1x1 convolution): windows of any size agree with the whole image."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, k, 1)

    def forward(self, x):
        return self.conv(x.float() / 255)


class _Context(torch.nn.Module):
    """Logits that depend on the neighbourhood (stride-4 convolution, upsampled to the input size)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, k, 3, stride=4, padding=1)

    def forward(self, x):
        y = self.conv(x.float() / 255)
        return torch.nn.functional.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


@pytest.mark.parametrize("k", [5, 300], ids=["5-classes", "300-classes"])
def test_label_maps_within_a_memory_budget_match_the_eval_path(k):
    torch.manual_seed(0)
    image = torch.randint(0, 255, (1, 3, 97, 130), dtype=torch.uint8)
    model = _Context(k).eval()
    budget = 4 * k * 64 * 40 * 3  # too small for the original size, enough for the network's
    for protocol in (
        EvalProtocol(resize=(64, 32)),
        EvalProtocol(resize=(64, 32), scales=(0.5, 1.0), flip=True),
        EvalProtocol(mode="slide", crop_size=(40, 40), stride=(30, 30), resize=(100, 60)),
    ):
        steps = []
        labels = predict_label_map(
            model, image, protocol, k, memory_budget=budget, progress=lambda d, t, steps=steps: steps.append(d)
        )
        assert labels.dtype == (np.uint8 if k <= 256 else np.uint16)
        assert np.array_equal(labels, predict_labels(model, image, protocol, k)[0].numpy()), protocol.describe()
        assert steps == list(range(1, len(steps) + 1)) and len(steps) > 2  # progress along passes and bands
    # Native-size sliding windows over an image whose scores do not fit: each window writes the middle of its
    # overlaps; with a model that sees single pixels the result is the eval path's exactly.
    pointwise = _Pointwise(k).eval()
    slide = EvalProtocol(mode="slide", crop_size=(40, 40), stride=(27, 27))
    steps = []
    labels = predict_label_map(pointwise, image, slide, k, memory_budget=1000, progress=lambda d, t: steps.append(t))
    assert np.array_equal(labels, predict_labels(pointwise, image, slide, k)[0].numpy())
    assert len(steps) == 4 * 5 and set(steps) == {20}
    if k > 256:
        assert labels.max() > 255  # class values above 255 survive
    # A whole-image protocol cannot be split: it runs as segcore eval runs it, whatever the budget.
    whole = predict_label_map(model, image, EvalProtocol(), k, memory_budget=1000)
    assert np.array_equal(whole, predict_labels(model, image, EvalProtocol(), k)[0].numpy())

"""CLI commands on the paper plugins' components, in-process: what the plugin packages' own tests do through the
library, run here through ``segcore`` (CLI behaviour is tested in cli/ and tests/, never in a plugin's tests)."""

from __future__ import annotations

import json

import pytest
import segcore
import torch
import torch.nn.functional as F
from segcore.testing import perturb_norms
from segcore_cli.main import main


def test_export_needs_and_takes_nmf_seed(tmp_path, capsys):
    """SegNeXt's HAM head exports only with seeded NMF bases; the one-line error names the flag that fixes it."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    torch.manual_seed(0)
    encoder = {"embed_dims": (8, 16, 32, 32), "depths": (1, 1, 1, 1)}
    head = {"channels": 32, "ham_channels": 32, "md_r": 4, "md_s": 2}
    segcore.build_model("mscan-t", "ham", 3, encoder_options=encoder, decoder_options=head).save_pretrained(
        tmp_path / "m"
    )
    assert main(["export", str(tmp_path / "m"), str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--decoder-opt nmf_seed=0" in err[0]
    assert main(["export", str(tmp_path / "m"), str(tmp_path / "m.onnx"), "--decoder-opt", "nmf_seed=0"]) == 0
    assert "verified with onnxruntime" in capsys.readouterr().out


def test_convert_transformers_segformer_writes_a_segcore_folder(tmp_path, capsys):
    """`segcore convert --format transformers` on a transformers SegFormer folder (SegDeformer's MiT + segformer)."""
    transformers = pytest.importorskip("transformers")
    classes = ["sky", "road", "car", "tree"]
    torch.manual_seed(0)
    config = transformers.SegformerConfig(
        hidden_sizes=[32, 64, 160, 256],
        depths=[1, 1, 1, 1],
        decoder_hidden_size=64,
        num_labels=len(classes),
        id2label=dict(enumerate(classes)),
        label2id={n: i for i, n in enumerate(classes)},
    )
    reference = perturb_norms(transformers.SegformerForSemanticSegmentation(config)).eval()
    reference.save_pretrained(tmp_path / "hf")
    argv = ["convert", "--format", "transformers", str(tmp_path / "hf"), "--out", str(tmp_path / "out"), "--json"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["decoder"] == "segformer"
    assert json.loads((tmp_path / "out" / "config.json").read_text())["class_names"] == classes
    model = segcore.SegModel.from_pretrained(tmp_path / "out")
    x = torch.randn(1, 3, 77, 101)
    with torch.no_grad():
        ref = F.interpolate(reference(pixel_values=x).logits, size=(77, 101), mode="bilinear", align_corners=False)
        assert float((model(x) - ref).abs().max()) < 1e-4

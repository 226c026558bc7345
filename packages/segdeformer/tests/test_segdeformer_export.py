"""ONNX export and torch.compile of mit + segdeformer (small MiT-B0 through encoder options)."""

from __future__ import annotations

import pytest
import segcore
import torch
from segcore.testing import compare_compiled
from segcore.tools.export import export_onnx, onnx_available

needs_onnx = pytest.mark.skipif(not onnx_available(), reason="needs segcore[onnx] (onnx, onnxruntime)")

SMALL_MIT = {"embed_dims": (16, 32, 32, 64), "depths": (1, 1, 1, 1), "num_heads": (1, 2, 2, 4)}
HEADS = {
    "released": {"channels": 32},
    "upernet-fusion": {"channels": 32, "fusion": "upernet"},
    "kv-reduction-materialized": {"channels": 32, "kv_reduction": 2, "attention": "materialized"},
}
SIZES = [(1, 64, 64), (2, 96, 80), (1, 81, 113)]


def _model(head: str, encoder_options: dict | None = None) -> segcore.SegModel:
    torch.manual_seed(0)
    opts = SMALL_MIT if encoder_options is None else encoder_options
    return segcore.build_model("mit-b0", "segdeformer", 3, encoder_options=opts, decoder_options=HEADS[head])


@needs_onnx
@pytest.mark.parametrize("head", list(HEADS), ids=list(HEADS))
def test_mit_segdeformer_exports_with_dynamic_batch_height_width(head, tmp_path):
    report = export_onnx(_model(head), tmp_path / "model.onnx", example_size=64, verify_sizes=SIZES)
    print({c.shape: c.max_abs_diff for c in report.checks})
    assert report.verified and len(report.checks) == 3
    assert all(c.max_abs_diff < 1e-4 * max(1.0, c.max_abs_ref) for c in report.checks)


@needs_onnx
@pytest.mark.slow
def test_full_size_mit_b0_segdeformer_exports(tmp_path):
    report = export_onnx(_model("released", {}), tmp_path / "model.onnx", example_size=64, verify_sizes=SIZES)
    print({c.shape: c.max_abs_diff for c in report.checks})
    assert report.verified


@pytest.mark.slow
def test_mit_segdeformer_compiles_with_inductor():
    results = compare_compiled(_model("released"), [(1, 72, 56)], dynamic=False)
    print(results)
    assert all(diff <= 1e-4 * max(scale, 1.0) for diff, scale in results)

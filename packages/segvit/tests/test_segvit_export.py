"""ONNX export and torch.compile of vit + atm and vit-shrunk + atm-shrunk (small ViTs through encoder options)."""

from __future__ import annotations

import pytest
import segcore
import torch
from segcore.plugins.specs import FeatureInfo
from segcore.testing import compare_compiled
from segcore.tools.export import export_onnx, onnx_available
from segcore_segvit.atm import _decode_traced, atm_shrunk

needs_onnx = pytest.mark.skipif(not onnx_available(), reason="needs segcore[onnx] (onnx, onnxruntime)")

TINY = {"embed_dim": 64, "depth": 4, "num_heads": 2, "img_size": 64}
PAIRS = {
    "vit-b16+atm": ("vit-b16", {"out_indices": (1, 3)}, "atm", {"num_layers": 2}),
    "vit-b16-shrunk+atm-shrunk": (
        "vit-b16-shrunk",
        {"out_indices": (1, 3), "shrink_idx": 2},
        "atm-shrunk",
        {"num_layers": 2, "img_size": 64, "num_heads": 2},
    ),
}
# 64: the stored 1/16 grid; 96x80 (batch 2) and 81x113 (padded) resize position embeddings and pixel queries.
SIZES = [(1, 64, 64), (2, 96, 80), (1, 81, 113)]


def _model(pair: str) -> segcore.SegModel:
    encoder, enc_opts, decoder, dec_opts = PAIRS[pair]
    torch.manual_seed(0)
    return segcore.build_model(encoder, decoder, 3, encoder_options=TINY | enc_opts, decoder_options=dec_opts)


@needs_onnx
@pytest.mark.parametrize("pair", list(PAIRS), ids=list(PAIRS))
def test_segvit_pair_exports_with_dynamic_batch_height_width(pair, tmp_path):
    report = export_onnx(_model(pair), tmp_path / "model.onnx", example_size=64, verify_sizes=SIZES)
    print({c.shape: c.max_abs_diff for c in report.checks})
    assert report.verified and len(report.checks) == 3
    assert all(c.max_abs_diff < 1e-5 for c in report.checks)


def test_traced_qu_decoder_equals_torch_transformer_decoder():
    dec = atm_shrunk([FeatureInfo(32, 16), FeatureInfo(32, 32)], 3, embed_dims=32, num_heads=4, img_size=64).eval()
    p, mem = torch.randn(2, 30, 32), torch.randn(2, 12, 32)
    with torch.no_grad():
        ref = dec.qu[0](p, mem)
        assert (_decode_traced(dec.qu[0], p, mem) - ref).abs().max() < 1e-5


def test_shrunk_output_size_rule_is_unchanged():
    dec = atm_shrunk([FeatureInfo(32, 16), FeatureInfo(32, 32)], 3, embed_dims=32, img_size=64).eval()
    assert dec._output_size((64, 64), (4, 4)) == (64, 64)
    assert dec._output_size((60, 50), (4, 4)) == (64, 64)  # the stored grid: official img_size output
    assert dec._output_size((96, 80), (6, 5)) == (96, 80)
    assert dec._output_size((90, 70), (6, 5)) == (90, 70)


@needs_onnx
@pytest.mark.slow
def test_full_size_vit_b16_atm_exports(tmp_path):
    torch.manual_seed(0)
    model = segcore.build_model("vit-b16", "atm", 150)
    report = export_onnx(model, tmp_path / "model.onnx", example_size=64, verify_sizes=SIZES[:2])
    print({c.shape: c.max_abs_diff for c in report.checks})
    assert report.verified


@pytest.mark.slow
@pytest.mark.parametrize("pair", list(PAIRS), ids=list(PAIRS))
def test_segvit_pair_compiles_with_inductor(pair):
    results = compare_compiled(_model(pair), [(1, 72, 56)], dynamic=False)
    print(pair, results)
    assert all(diff <= 1e-4 * max(scale, 1.0) for diff, scale in results)

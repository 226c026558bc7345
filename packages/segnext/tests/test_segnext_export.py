"""ONNX export and torch.compile of mscan + ham; the seeded NMF bases that make the head exportable."""

from __future__ import annotations

import warnings

import pytest
import segcore
import torch
import torch.nn.functional as F
from segcore.testing import compare_compiled
from segcore.tools.export import ExportError, export_onnx, onnx_available
from segcore_segnext.ham import EXPORT_MAX_IMAGES, NMF2D

needs_onnx = pytest.mark.skipif(not onnx_available(), reason="needs segcore[onnx] (onnx, onnxruntime)")

SMALL_ENCODER = {"embed_dims": (8, 16, 32, 32), "depths": (1, 1, 1, 1)}
SMALL_HEAD = {"channels": 32, "ham_channels": 32, "md_r": 4, "md_s": 2}
SIZES = [(1, 64, 64), (2, 96, 80)]


def _small(**head: object) -> segcore.SegModel:
    torch.manual_seed(0)
    return segcore.build_model("mscan-t", "ham", 3, encoder_options=SMALL_ENCODER, decoder_options=SMALL_HEAD | head)


@needs_onnx
@pytest.mark.parametrize("memory_format", ["channels_last", "contiguous"])
def test_mscan_ham_exports_with_seeded_bases(tmp_path, memory_format):
    model = _small(nmf_seed=0, memory_format=memory_format)
    report = export_onnx(model, tmp_path / "model.onnx", example_size=64, verify_sizes=SIZES)
    print({c.shape: c.max_abs_diff for c in report.checks})
    assert report.verified and [c.shape[0] for c in report.checks] == [1, 2]
    assert all(c.max_abs_diff < 1e-5 for c in report.checks)


@needs_onnx
def test_unseeded_ham_is_refused_naming_nmf_seed(tmp_path):
    with pytest.raises(ExportError, match="nmf_seed"):
        export_onnx(_small(), tmp_path / "model.onnx")


@pytest.mark.parametrize("channels", [32, None], ids=["drawn-at-build", "drawn-on-first-call"])
def test_seeded_bases_equal_a_fresh_seeded_draw_per_forward(channels):
    nmf = NMF2D(2, 4, 6, 7, 1.0, seed=3, channels=channels)
    for n in (2, 6, 2 * EXPORT_MAX_IMAGES + 6, 4):  # the third grows the kept draw
        expected = torch.rand((n, 16, 4), generator=torch.Generator().manual_seed(3))
        assert torch.equal(nmf._bases(n, 16, torch.device("cpu")), F.normalize(expected, dim=1))


def test_traced_batch_beyond_the_stored_bases_is_an_error():
    nmf = NMF2D(1, 4, 1, 1, 1.0, seed=0, channels=8).eval()
    with warnings.catch_warnings(), pytest.raises(RuntimeError, match=f"at most {EXPORT_MAX_IMAGES} images"):
        warnings.simplefilter("ignore")
        torch.jit.trace(nmf, torch.rand(EXPORT_MAX_IMAGES + 1, 8, 2, 2))


@needs_onnx
@pytest.mark.slow
def test_full_size_mscan_t_ham_exports(tmp_path):
    torch.manual_seed(0)
    head = {"channels": 256, "ham_channels": 256, "md_r": 16, "nmf_seed": 0}
    model = segcore.build_model("mscan-t", "ham", 150, decoder_options=head)
    report = export_onnx(model, tmp_path / "model.onnx", example_size=64, verify_sizes=SIZES)
    print({c.shape: c.max_abs_diff for c in report.checks})
    assert report.verified


@pytest.mark.slow
def test_mscan_ham_compiles_with_inductor():
    results = compare_compiled(_small(nmf_seed=0), [(1, 72, 56)], dynamic=False)
    print(results)
    assert all(diff <= 1e-4 * max(scale, 1.0) for diff, scale in results)

"""ONNX export and torch.compile of the core pairs (timm:resnet18 + linear / mlp / upernet), and the generic parts.

Sizes: 64x64 and batch 2 at 96x80 / 81x113. ResNet needs no padding (size divisor 1); sides that are not multiples
of 32 give maps of rounded sizes, which the decoders resize.
"""

from __future__ import annotations

import json
import sys
import warnings

import pytest
import segcore
import torch
import torch.nn.functional as F
from segcore.errors import SegcoreError
from segcore.models.ops import adaptive_avg_pool2d
from segcore.testing import compare_compiled

onnxruntime = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from segcore.tools.export import ExportError, default_sizes, export_onnx, onnx_available  # noqa: E402

CORE_DECODERS = ["linear", "mlp", "upernet"]
SIZES = [(1, 64, 64), (2, 96, 80)]


def _model(decoder: str) -> segcore.SegModel:
    torch.manual_seed(0)
    return segcore.build_model("timm:resnet18", decoder, 3, decoder_options={"channels": 32})


@pytest.mark.parametrize("decoder", CORE_DECODERS, ids=CORE_DECODERS)
def test_core_pair_exports_with_dynamic_batch_height_width(decoder, tmp_path):
    model = _model(decoder)
    report = export_onnx(model, tmp_path / "model.onnx", example_size=64, verify_sizes=[*SIZES, (1, 81, 113)])
    print({c.shape: c.max_abs_diff for c in report.checks})
    assert report.verified and [c.shape for c in report.checks] == [(1, 3, 64, 64), (2, 3, 96, 80), (1, 3, 81, 113)]
    assert all(c.max_abs_diff < 1e-5 for c in report.checks)
    assert model.training, "export restores the training mode"
    proto = onnx.load(str(tmp_path / "model.onnx"))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["segcore.config"])["decoder"] == decoder
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]


def test_default_sizes_include_one_off_the_size_divisor():
    model = _model("linear")
    assert model.size_divisor == 1
    (b1, h1, w1), (b2, h2, w2) = default_sizes(model)
    assert (b1, h1, w1) == (1, 64, 64) and b2 == 2 and h2 != w2
    assert h2 % 32 and w2 % 32  # off the largest stride: maps of rounded sizes
    assert default_sizes(model, (96, 80))[0] == (1, 96, 80)


def test_random_model_is_refused_with_the_fix(tmp_path, monkeypatch):
    model = _model("linear")
    forward = model.forward_output

    def noisy(images):
        out = forward(images)
        return type(out)(out.logits + torch.rand_like(out.logits), out.aux)

    monkeypatch.setattr(model, "forward_output", noisy)
    with pytest.raises(ExportError, match="random at inference.*nmf_seed"):
        export_onnx(model, tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()


def test_static_export_and_bad_sizes(tmp_path):
    model = _model("linear")
    report = export_onnx(model, tmp_path / "static.onnx", example_size=(64, 96), dynamic=False)
    assert [c.shape for c in report.checks] == [(1, 3, 64, 96)] and not report.dynamic
    with pytest.raises(SegcoreError, match="static export"):
        export_onnx(model, tmp_path / "x.onnx", dynamic=False, verify_sizes=[(2, 64, 64)])
    with pytest.raises(SegcoreError, match="positive"):
        export_onnx(model, tmp_path / "x.onnx", example_size=(0, 64))


def test_missing_onnx_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(SegcoreError, match=r"segcore\[onnx\]"):
        export_onnx(_model("linear"), tmp_path / "model.onnx")


def test_padding_equals_the_modulo():
    from segcore.models.model import _pad_to

    for d in (1, 16, 32):
        for n in range(1, 100):
            assert _pad_to(n, d) == (-n) % d
    model = _model("linear")
    assert model._padding(81, 113) == (0, 0)  # ResNet runs at any size


def test_adaptive_avg_pool2d_traces_at_any_size():
    def pool(x):
        return torch.cat([adaptive_avg_pool2d(x, s).flatten(2) for s in (1, 2, 3, 6)], dim=2)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", "`torch.jit.trace` is deprecated", FutureWarning)
        traced = torch.jit.trace(pool, torch.randn(1, 4, 6, 6))
    for h, w in ((6, 6), (7, 13), (3, 2), (12, 9)):
        x = torch.randn(2, 4, h, w)
        ref = torch.cat([F.adaptive_avg_pool2d(x, s).flatten(2) for s in (1, 2, 3, 6)], dim=2)
        assert torch.equal(pool(x), ref), "eager mode is F.adaptive_avg_pool2d itself"
        assert (traced(x) - ref).abs().max() < 1e-6


def test_compile_matches_eager_cheap():
    # Dynamo capture and AOT graphs without code generation: seconds, unlike inductor (see the slow tests).
    ((diff, scale),) = compare_compiled(_model("upernet"), [(1, 72, 56)], backend="aot_eager", dynamic=False)
    assert diff <= 1e-5 * max(scale, 1.0)


@pytest.mark.slow
@pytest.mark.parametrize("decoder", CORE_DECODERS, ids=CORE_DECODERS)
def test_core_pair_compiles_with_inductor(decoder):
    results = compare_compiled(_model(decoder), [(1, 72, 56)], dynamic=False)
    print(decoder, results)
    assert all(diff <= 1e-4 * max(scale, 1.0) for diff, scale in results)


@pytest.mark.slow
def test_compile_recompiles_for_a_new_size():
    # torch.compile's default: the second size recompiles with dynamic shapes (the padding is symbolic then).
    results = compare_compiled(_model("mlp"), SIZES)
    print(results)
    assert all(diff <= 1e-4 * max(scale, 1.0) for diff, scale in results)


def test_onnx_available_reports_a_missing_extra(monkeypatch):
    assert onnx_available()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # a None entry makes the import fail
    assert not onnx_available()

"""Decoders declare the strides they read (in_strides); SegModel selects or builds exactly those levels."""

from __future__ import annotations

import types
import warnings

import pytest
import segcore
import torch
from segcore.errors import OptionsError, SegcoreError, WiringError
from segcore.models.adapters import SelectLevels, SimpleFeaturePyramid, build_adapter, match_levels
from segcore.models.contracts import Decoder, DecoderOutput, Encoder
from segcore.plugins import registry
from segcore.plugins.specs import PYRAMID_STRIDES, ComponentSpec, FeatureInfo, check_strides
from torch import nn

PLAIN3 = [FeatureInfo(96, 16)] * 3
PLAIN4 = [FeatureInfo(96, 16)] * 4
SHRUNK = [FeatureInfo(96, 16), FeatureInfo(96, 32)]
PYRAMID = [FeatureInfo(16, 4), FeatureInfo(32, 8), FeatureInfo(64, 16), FeatureInfo(128, 32)]
CNN5 = [FeatureInfo(8, 2), *PYRAMID]


@pytest.mark.parametrize(
    ("infos", "sources"),
    [
        (PLAIN3, [2, 2, 2, 2]),  # ViTDet: every level from the last layer
        (PLAIN4, [0, 1, 2, 3]),  # as many layers as levels: shallow layers feed fine levels
        (SHRUNK, [0, 0, 0, 1]),  # closest stride: 4, 8 and 16 from the 1/16 map, 32 as is
        (PYRAMID, [0, 1, 2, 3]),
        (CNN5, [1, 2, 3, 4]),  # the stride-2 stem level is left out
        ([FeatureInfo(64, 16), FeatureInfo(16, 4)], [1, 1, 0, 0]),  # by stride, whatever the order
        ([FeatureInfo(16, 4), FeatureInfo(64, 16)], [0, 0, 1, 1]),  # 8 is as far from 4 as from 16: the finer
        ([FeatureInfo(32, 8)], [0, 0, 0, 0]),
    ],
    ids=["plain-3", "plain-4", "shrunk", "pyramid", "cnn-5", "unordered", "tie", "single"],
)
def test_each_stride_comes_from_the_closest_encoder_level(infos, sources):
    assert match_levels(infos, PYRAMID_STRIDES) == sources


def test_adapter_choice_exact_select_or_build():
    assert build_adapter(PYRAMID, PYRAMID_STRIDES) is None
    assert build_adapter(PLAIN3, None) is None
    select = build_adapter(CNN5, PYRAMID_STRIDES)
    assert isinstance(select, SelectLevels) and select.indices == (1, 2, 3, 4)
    assert not list(select.parameters()) and select.feature_info == PYRAMID
    assert "stride 4 <- map 1 (16@s4)" in select.describe()
    assert isinstance(build_adapter(PYRAMID, (8, 16, 32)), SelectLevels)
    sfp = build_adapter(SHRUNK, PYRAMID_STRIDES)
    assert isinstance(sfp, SimpleFeaturePyramid)
    assert [(i.channels, i.stride) for i in sfp.feature_info] == [(24, 4), (48, 8), (96, 16), (96, 32)]
    assert "stride 4 <- map 0 (96@s16) up x4 -> 24 channels" in sfp.describe()
    assert "stride 32 <- map 1 (96@s32) as is" in sfp.describe()


def test_plain_vit_pyramid_keeps_its_parameter_names():
    # Saved models with an adapter (plain ViT + pyramid decoder) must keep loading: same names and shapes.
    shapes = {k: tuple(v.shape) for k, v in SimpleFeaturePyramid(PLAIN3).state_dict().items()}
    assert shapes == {
        "branches.0.0.weight": (96, 48, 2, 2),
        "branches.0.0.bias": (48,),
        "branches.0.1.weight": (48,),
        "branches.0.1.bias": (48,),
        "branches.0.3.weight": (48, 24, 2, 2),
        "branches.0.3.bias": (24,),
        "branches.1.0.weight": (96, 48, 2, 2),
        "branches.1.0.bias": (48,),
    }


def test_pyramid_shapes_and_odd_grids():
    sfp = SimpleFeaturePyramid(SHRUNK)
    out = sfp([torch.randn(2, 96, 4, 6), torch.randn(2, 96, 2, 3)])
    assert [tuple(o.shape) for o in out] == [(2, 24, 16, 24), (2, 48, 8, 12), (2, 96, 4, 6), (2, 96, 2, 3)]
    # pooling keeps the last row/column of an odd grid: ceil(n / 2), as strided convolutions with padding give
    (down,) = SimpleFeaturePyramid([FeatureInfo(8, 16)], strides=(32,))([torch.randn(1, 8, 3, 5)])
    assert down.shape[-2:] == (2, 3)


def test_rescaling_by_a_factor_other_than_a_power_of_two_is_a_wiring_error():
    with pytest.raises(WiringError, match=r"stride 4 would be built from map 2 \(384@s14\), a factor of 3\.5"):
        build_adapter([FeatureInfo(384, 14)] * 3, PYRAMID_STRIDES)


@pytest.mark.parametrize(
    ("strides", "message"),
    [
        ((8, 4), "strictly increasing"),
        ((4, 4, 8), "strictly increasing"),
        ((0, 8), "positive integers"),
        ((), "positive integers"),
        ((4.0, 8), "positive integers"),
        ((True, 8), "positive integers"),
        ("4,8", "a tuple of strides"),
    ],
)
def test_invalid_declarations_are_refused(strides, message):
    with pytest.raises(SegcoreError, match=message):
        check_strides(strides, "decoder 'x'")
    with pytest.raises(SegcoreError, match=f"ComponentSpec: in_strides must be .*{message}"):
        ComponentSpec(factory="m:f", description="d", in_strides=strides)


def test_valid_declarations_are_tuples():
    assert ComponentSpec(factory="m:f", description="d", in_strides=[8, 16, 32]).in_strides == (8, 16, 32)
    assert ComponentSpec(factory="m:f", description="d").in_strides is None


def test_a_decoder_class_with_invalid_strides_fails_when_defined():
    with pytest.raises(SegcoreError, match=r"_Bad.in_strides: in_strides must be strictly increasing.*\(32, 16\)"):

        class _Bad(Decoder):
            in_strides = (32, 16)


def test_a_plugin_declaring_invalid_strides_is_named():
    plugin = types.ModuleType("bad_strides_plugin")

    @segcore.hookimpl
    def segcore_decoders():
        return {"bad": ComponentSpec(factory="m:f", description="d", in_strides=(16, 8))}

    plugin.segcore_decoders = segcore_decoders
    registry.register_plugin(plugin, "bad-strides-plugin")
    try:
        with pytest.raises(SegcoreError) as err:
            registry.components("decoders")
        assert "plugin bad-strides-plugin: segcore_decoders(): ComponentSpec: in_strides must be" in str(err.value)
        assert "strictly increasing" in str(err.value) and "(16, 8)" in str(err.value)
    finally:
        registry.unregister_plugin("bad-strides-plugin")


def test_deprecated_input_kind_still_loads():
    with pytest.warns(DeprecationWarning, match=r"in_strides=\(4, 8, 16, 32\)"):
        spec = ComponentSpec(factory="m:f", description="d", input_kind="pyramid")
    assert spec.in_strides == PYRAMID_STRIDES
    with pytest.warns(DeprecationWarning):
        assert ComponentSpec(factory="m:f", description="d", input_kind="any").in_strides is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new field alone does not warn
        ComponentSpec(factory="m:f", description="d", in_strides=(8, 16))
    with pytest.raises(SegcoreError, match="in_strides only"):
        ComponentSpec(factory="m:f", description="d", in_strides=(8,), input_kind="pyramid")


class _Patch14(Encoder):
    """A plain encoder at stride 14 (DINOv2-like): no power-of-two path to 4/8/16/32."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(3, 8, 14, stride=14)
        self.feature_info = [FeatureInfo(8, 14)]

    def forward(self, images):
        return [self.proj(images)]


class _Reads16(Decoder):
    """A decoder declaring one level at stride 16: the README's kind of third-party head."""

    in_strides = (16,)

    def __init__(self, in_features, num_classes):
        super().__init__()
        self.seen = [i.stride for i in in_features]
        self.cls = nn.Conv2d(in_features[0].channels, num_classes, 1)

    def forward(self, features, image_size):
        return DecoderOutput(self.cls(features[0]))


@pytest.fixture
def fake_components():
    plugin = types.ModuleType("pairs_plugin")

    @segcore.hookimpl
    def segcore_encoders():
        return {"patch14": ComponentSpec(factory=lambda pretrained=False: _Patch14(), description="stride 14")}

    @segcore.hookimpl
    def segcore_decoders():
        return {"reads16": ComponentSpec(factory=_Reads16, description="stride 16 only", in_strides=(16,))}

    plugin.segcore_encoders, plugin.segcore_decoders = segcore_encoders, segcore_decoders
    registry.register_plugin(plugin, "pairs-plugin")
    try:
        yield
    finally:
        registry.unregister_plugin("pairs-plugin")


def test_impossible_wiring_is_reported_in_words(fake_components):
    with pytest.raises(WiringError) as err:
        segcore.build_model("patch14", "upernet", 3)
    message = str(err.value)
    assert "decoder 'upernet' reads maps at strides [4, 8, 16, 32] but encoder 'patch14' returns 8@s14" in message
    assert "a factor of 3.5; the adapter rescales by powers of two only" in message
    assert "a decoder that reads any maps (" in message and "linear" in message
    assert segcore.build_model("patch14", "linear", 3).adapter is None  # a decoder that reads any maps


def test_a_third_party_declaration_is_honoured(fake_components):
    hier = segcore.build_model("timm:resnet18", "reads16", 3)
    assert isinstance(hier.adapter, SelectLevels) and hier.decoder.seen == [16]
    plain = segcore.build_model("timm:vit_tiny_patch16_224", "reads16", 3)
    assert isinstance(plain.adapter, SelectLevels) and plain.adapter.indices == (2,)  # the deepest layer


def test_timm_levels_beyond_the_declared_ones_are_selected_without_parameters():
    five = segcore.build_model("timm:resnet18", "upernet", 3, encoder_options={"out_indices": (0, 1, 2, 3, 4)})
    four = segcore.build_model("timm:resnet18", "upernet", 3)
    assert [i.stride for i in five.encoder.feature_info] == [2, 4, 8, 16, 32]
    assert isinstance(five.adapter, SelectLevels) and five.adapter.indices == (1, 2, 3, 4)
    assert four.adapter is None
    assert five.state_dict().keys() == four.state_dict().keys()  # no adapter parameters
    five.load_state_dict(four.state_dict())
    images = torch.randn(1, 3, 64, 96)
    torch.testing.assert_close(five.eval()(images), four.eval()(images))
    losses = five.train().compute_loss(
        torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8), torch.zeros(2, 64, 64, dtype=torch.long)
    )
    losses["loss"].backward()
    assert torch.isfinite(losses["loss"]) and five.decoder.conv_seg.weight.grad.abs().sum() > 0


def test_timm_out_indices_out_of_network_order_are_refused():
    with pytest.raises(OptionsError, match=r"out_indices \(3, 1\) must be in increasing network order.*\(1, 3\)"):
        segcore.build_encoder("timm:resnet18", out_indices=(3, 1))

"""Cross-package test configuration: the encoder x decoder matrix is parametrised from the registry."""

from __future__ import annotations

import fnmatch
import functools

import pytest

# Stand-ins for the timm: namespace: a CNN, a hierarchical transformer, a plain ViT and three families with
# their own input rules.
TIMM_SAMPLES = (
    "timm:resnet18",
    "timm:pvt_v2_b0",
    "timm:vit_tiny_patch16_224",
    # Families with their own input rules (segcore.models.encoders.TimmEncoder._find_input_rule): attention
    # biases fixed to one resolution (padded to it), windows that must tile every stage (padded to a multiple
    # of 256), and widths 32 does not divide (ATM picks a head count that divides them).
    "timm:levit_128s",
    "timm:maxvit_rmlp_pico_rw_256",
    "timm:regnety_002",
)
# Encoders above this many parameters run the default-suite matrix at a tiny size (TINY_ENCODER_OPTIONS);
# `-m slow` runs them at their registered size.
HEAVY_PARAMS = 30_000_000
# Option overrides that make a heavy encoder tiny, by family (fnmatch pattern on the name, first match wins).
# They keep what the adapters and decoders depend on: the number of maps and their strides (a plain ViT's
# three stride-16 layers, the Shrunk ViT's 16 and 32, four stages at 4-32). A heavy encoder of no listed
# family runs at its registered size and only with -m slow.
TINY_ENCODER_OPTIONS = {
    "vit-*-shrunk": {"embed_dim": 64, "num_heads": 2, "depth": 3, "out_indices": (0, 2), "shrink_idx": 1},
    "vit-*": {"embed_dim": 64, "num_heads": 2, "depth": 3, "out_indices": (0, 1, 2)},
    "mit-*": {"depths": (1, 1, 1, 1)},
    "mscan-*": {"depths": (1, 1, 1, 1)},
}

# Decoder option overrides of the default-suite matrix, by decoder name: widths only (UPerNet's 512-wide 3x3
# convolutions at stride 4 took most of the matrix's time). test_decoder_round_trip runs them at their defaults.
TINY_DECODER_OPTIONS = {"upernet": {"channels": 64}}


def registered(kind: str) -> list[str]:
    from segcore.plugins.registry import components

    names = []
    for name in sorted(components(kind)):
        names.extend(TIMM_SAMPLES if name == "timm:" else [name])
    return names


@functools.cache
def encoder_params(name: str) -> int:
    """Parameter count of an encoder, built on the meta device (no memory, no init cost)."""
    import segcore
    import torch

    try:
        with torch.device("meta"):
            encoder = segcore.build_encoder(name)
    except Exception:  # noqa: BLE001 - a model that cannot be built on meta is treated as light
        return 0
    return sum(p.numel() for p in encoder.parameters())


def tiny_family(name: str) -> str | None:
    """The TINY_ENCODER_OPTIONS pattern that covers encoder ``name``, if any."""
    return next((pattern for pattern in TINY_ENCODER_OPTIONS if fnmatch.fnmatchcase(name, pattern)), None)


def matrix_encoder_options(name: str) -> dict:
    """Options the default-suite matrix builds encoder ``name`` with: tiny overrides for heavy encoders."""
    family = tiny_family(name)
    if family is None or encoder_params(name) <= HEAVY_PARAMS:
        return {}
    return dict(TINY_ENCODER_OPTIONS[family])


def encoder_params_marks(name: str) -> list:
    # Heavy and no way to shrink it: only with -m slow, as before the tiny overrides.
    return [pytest.mark.slow] if encoder_params(name) > HEAVY_PARAMS and tiny_family(name) is None else []


def pytest_generate_tests(metafunc):
    if "encoder_name" in metafunc.fixturenames:
        names = registered("encoders")
        metafunc.parametrize("encoder_name", [pytest.param(n, id=n, marks=encoder_params_marks(n)) for n in names])
    if "decoder_name" in metafunc.fixturenames:
        names = registered("decoders")
        metafunc.parametrize("decoder_name", [pytest.param(n, id=n) for n in names])


@pytest.fixture
def encoder_options(encoder_name):
    """The encoder options of the default-suite matrix (empty unless the encoder is heavy)."""
    return matrix_encoder_options(encoder_name)


@pytest.fixture
def decoder_options(decoder_name):
    """The decoder options of the default-suite matrix (empty unless listed in TINY_DECODER_OPTIONS)."""
    return dict(TINY_DECODER_OPTIONS.get(decoder_name, {}))

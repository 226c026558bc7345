"""Cross-package test configuration: the encoder x decoder matrix is parametrised from the registry."""

from __future__ import annotations

import functools

import pytest

# Stand-ins for the timm: namespace: a CNN, a hierarchical transformer and a plain ViT.
TIMM_SAMPLES = ("timm:resnet18", "timm:pvt_v2_b0", "timm:vit_tiny_patch16_224")
# Encoders above this many parameters run their matrix rows only with -m slow.
HEAVY_PARAMS = 60_000_000


def registered(kind: str) -> list[str]:
    from segcore.registry import components

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


def encoder_params_marks(name: str) -> list:
    return [pytest.mark.slow] if encoder_params(name) > HEAVY_PARAMS else []


def pytest_generate_tests(metafunc):
    if "encoder_name" in metafunc.fixturenames:
        names = registered("encoders")
        metafunc.parametrize("encoder_name", [pytest.param(n, id=n, marks=encoder_params_marks(n)) for n in names])
    if "decoder_name" in metafunc.fixturenames:
        names = registered("decoders")
        metafunc.parametrize("decoder_name", [pytest.param(n, id=n) for n in names])

"""Plugin discovery, clashes, unknown names and option validation."""

from __future__ import annotations

import importlib
import sys
import textwrap
import types
from dataclasses import dataclass

import pytest
import segcore
import torch
from segcore.errors import ComponentClashError, OptionsError, UnknownComponentError
from segcore.plugins import registry


@pytest.fixture
def fresh_registry():
    registry.reset()
    try:
        yield
    finally:
        registry.reset()


def _write_plugin_dist(root, dist_name: str, module: str, body: str) -> None:
    (root / f"{module}.py").write_text(textwrap.dedent(body))
    info = root / f"{dist_name.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[segcore]\n{module} = {module}\n")


PLUGIN = """
from dataclasses import dataclass
import torch
from torch import nn
import segcore
from segcore.models.contracts import Encoder
from segcore.config.options import parse_options


@dataclass(frozen=True)
class TinyOptions:
    width: int = 8


class Tiny(Encoder):
    def __init__(self, opts):
        super().__init__()
        self.stem = nn.Conv2d(3, opts.width, 3, stride=4, padding=1)
        self.down = nn.Conv2d(opts.width, 2 * opts.width, 3, stride=2, padding=1)
        self.feature_info = [segcore.FeatureInfo(opts.width, 4), segcore.FeatureInfo(2 * opts.width, 8)]

    def forward(self, x):
        a = self.stem(x)
        return [a, self.down(a)]


def tiny_enc(pretrained=False, **options):
    return Tiny(parse_options(TinyOptions, options, "tiny-enc"))


@segcore.hookimpl
def segcore_encoders():
    return {"tiny-enc": segcore.ComponentSpec(factory=tiny_enc, description="a tiny test encoder",
                                              options=TinyOptions)}
"""


def test_entry_point_plugin_is_discovered_and_works_with_core_decoders(tmp_path, monkeypatch, fresh_registry):
    _write_plugin_dist(tmp_path, "tiny-plugin", "tiny_plugin_mod", PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    try:
        rows = {r.name: r for r in segcore.list_components("encoders")["encoders"]}
        assert rows["tiny-enc"].plugin == "tiny-plugin"
        assert rows["tiny-enc"].version == "1.2.3"
        for decoder in ("linear", "mlp", "upernet"):
            model = segcore.build_model("tiny-enc", decoder, num_classes=3, encoder_options={"width": 4}).eval()
            out = model(torch.rand(1, 3, 40, 56))
            assert out.shape == (1, 3, 40, 56)
    finally:
        sys.modules.pop("tiny_plugin_mod", None)


def test_load_plugins_switch_excludes_entry_points(tmp_path, monkeypatch, fresh_registry):
    _write_plugin_dist(tmp_path, "tiny-plugin", "tiny_plugin_mod2", PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SEGCORE_LOAD_PLUGINS", "")
    importlib.invalidate_caches()
    try:
        names = {r.name for r in segcore.list_components("encoders")["encoders"]}
        assert "tiny-enc" not in names and "timm:" in names
    finally:
        sys.modules.pop("tiny_plugin_mod2", None)


def _plugin(name: str, **hooks):
    module = types.ModuleType(name)
    for hook, value in hooks.items():
        impl = segcore.hookimpl(lambda value=value: value)
        impl.__name__ = hook
        setattr(module, hook, impl)
    return module


def test_clash_names_both_plugins():
    spec = segcore.ComponentSpec(factory=lambda *a, **k: None, description="x")
    registry.register_plugin(_plugin("plug_a", segcore_losses={"twin": spec}), "plug-a")
    registry.register_plugin(_plugin("plug_b", segcore_losses={"twin": spec}), "plug-b")
    try:
        with pytest.raises(ComponentClashError) as err:
            registry.components("losses")
        assert "plug-a" in str(err.value) and "plug-b" in str(err.value) and "'twin'" in str(err.value)
    finally:
        registry.unregister_plugin("plug-a")
        registry.unregister_plugin("plug-b")


def test_unknown_first_party_name_says_what_to_install(monkeypatch, fresh_registry):
    monkeypatch.setenv("SEGCORE_LOAD_PLUGINS", "")  # as if no plugin were installed
    with pytest.raises(UnknownComponentError) as err:
        segcore.build_model("mscan-b", "mlp", 3)
    message = str(err.value)
    assert "pip install segcore-segnext" in message
    assert "timm:" in message  # lists what is installed


def test_first_party_hint_only_when_the_distribution_is_absent(monkeypatch, fresh_registry):
    """A family pattern covers names its installed plugin lacks (a typo): those get suggestions, not 'pip install'."""
    monkeypatch.setenv("SEGCORE_LOAD_PLUGINS", "")
    spec = segcore.ComponentSpec(factory=lambda *a, **k: None, description="x")
    registry.register_plugin(_plugin("fake_segnext", segcore_encoders={"mscan-t": spec}), "segcore-segnext")
    try:
        with pytest.raises(UnknownComponentError) as err:
            registry.get_spec("encoders", "mscan-q")
        assert "pip install" not in str(err.value) and "Did you mean 'mscan-t'" in str(err.value)
        with pytest.raises(UnknownComponentError, match="'mit-b9' is provided by segcore-segdeformer"):
            registry.get_spec("encoders", "mit-b9")
    finally:
        registry.unregister_plugin("segcore-segnext")


def test_unknown_name_suggests_close_ones():
    with pytest.raises(UnknownComponentError, match="Did you mean 'upernet'"):
        segcore.build_decoder("upernett", [segcore.FeatureInfo(8, 4)], 2)


def test_unknown_option_lists_valid_ones():
    with pytest.raises(OptionsError) as err:
        segcore.build_model("timm:resnet18", "mlp", 3, decoder_options={"chanels": 64})
    assert "'chanels'" in str(err.value) and "did you mean 'channels'" in str(err.value)
    assert "dropout" in str(err.value)
    with pytest.raises(OptionsError, match="out_indices"):
        segcore.build_encoder("timm:resnet18", depth=3)


def test_unknown_timm_model_is_a_clear_error():
    with pytest.raises(segcore.SegcoreError, match="timm has no model 'resnet1888'"):
        segcore.build_encoder("timm:resnet1888")


def test_plugin_module_is_not_imported_at_segcore_import():
    code = "import sys, segcore; segcore.list_components(); print('torch' in sys.modules)"
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", "listing components must not import torch"


def test_option_coercion_from_strings():
    from segcore.config.options import coerce_option

    @dataclass(frozen=True)
    class Opts:
        size: int = 1
        rate: float = 0.0
        dims: tuple[int, ...] = (1,)
        flag: bool = False
        name: str | None = None

    assert coerce_option(Opts, "size", "7") == 7
    assert coerce_option(Opts, "rate", "0.5") == 0.5
    assert coerce_option(Opts, "dims", "32,64") == (32, 64)
    assert coerce_option(Opts, "flag", "true") is True
    assert coerce_option(Opts, "name", "none") is None
    with pytest.raises(OptionsError):
        coerce_option(Opts, "sise", "7")


def test_every_installed_component_has_frozen_typed_options():
    import dataclasses

    for kind in ("encoders", "decoders", "losses", "datasets"):
        for name, spec in registry.components(kind).items():
            options = spec.load_options()
            if options is None:
                continue
            assert dataclasses.is_dataclass(options), f"{kind} {name}: {options} is not a dataclass"
            assert options.__dataclass_params__.frozen, f"{kind} {name}: {options.__name__} is not frozen"
            with pytest.raises(dataclasses.FrozenInstanceError):
                setattr(options(), dataclasses.fields(options)[0].name, None)

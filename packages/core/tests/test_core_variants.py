"""segcore.models.variants: one table per encoder family, from which specs, factories and converter names derive."""

from __future__ import annotations

import pickle
import sys
import types
from dataclasses import dataclass

import pytest
from segcore.errors import SegcoreError
from segcore.models.variants import Variant, VariantTable
from segcore.plugins.specs import resolve


@dataclass(frozen=True)
class ToyOptions:
    width: int = 8
    depth: int = 2
    norm: str = "bn"


def _table() -> VariantTable:
    return VariantTable(
        family="toy",
        module="toy_family",
        options="ToyOptions",
        description="Toy-{KEY} ({params}; {description})",
        source="a paper",
        variants={
            "s": Variant({"width": 4}, "small", facts={"params": "1k"}),
            "m-wide": Variant({"width": 16, "depth": 3}, "wide", pair={"head": 32}, facts={"params": "9k"}),
        },
    )


@pytest.fixture
def toy(monkeypatch):
    """The table, and its family module with one factory line per entry, each returning (name, pretrained, options)."""
    table = _table()
    module = types.ModuleType("toy_family")
    module.ToyOptions = ToyOptions
    module.VARIANTS = table
    module.build_variant = _echo
    module.toy_s = table.factory("s", module.build_variant)
    module.toy_m_wide = table.factory("m-wide", module.build_variant)
    monkeypatch.setitem(sys.modules, "toy_family", module)
    return table, module


def _echo(name, pretrained, options):
    return name, pretrained, options


def test_encoder_specs_are_derived_from_the_entries(toy):
    table, _ = toy
    specs = table.encoders()
    assert list(specs) == ["toy-s", "toy-m-wide"]
    spec = specs["toy-m-wide"]
    assert spec.factory == "toy_family:toy_m_wide" and spec.options == "toy_family:ToyOptions"
    assert spec.load_defaults() == {"width": 16, "depth": 3}
    assert spec.description == "Toy-M-WIDE (9k; wide)" and spec.source == "a paper"
    assert table.factory_names() == ["toy_s", "toy_m_wide"]


def test_factories_merge_the_entry_under_the_given_options(toy):
    table, module = toy
    assert module.toy_m_wide(depth=5) == ("toy-m-wide", False, {"width": 16, "depth": 5})
    assert resolve("toy_family:toy_s")(True) == ("toy-s", True, {"width": 4})
    # The entry is read at call time, so a factory follows its entry.
    table.variants["s"] = Variant({"width": 2}, "smaller", facts={"params": "0.5k"})
    assert module.toy_s() == ("toy-s", False, {"width": 2})


def test_a_factory_carries_its_mechanical_name_module_and_description(toy):
    _, module = toy
    factory = module.toy_m_wide
    assert factory.__name__ == factory.__qualname__ == "toy_m_wide" and factory.__module__ == "toy_family"
    assert factory.__doc__.startswith("Toy-M-WIDE (9k; wide).") and "``toy-m-wide``" in factory.__doc__


def test_a_factory_line_for_a_missing_entry_is_named(toy):
    table, _ = toy
    with pytest.raises(SegcoreError, match="'toy' has no entry 'l' .*entries: s, m-wide.*toy_l from toy_family"):
        table.factory("l", _echo)


def test_a_fact_missing_from_an_entry_is_named(toy):
    table, _ = toy
    table.variants["l"] = Variant({"width": 32})
    with pytest.raises(SegcoreError, match="toy-l.*'params'"):
        table.encoders()


def test_factories_pickle_by_name(toy):
    _, module = toy
    assert pickle.loads(pickle.dumps(module.toy_s)) is module.toy_s


def test_find_names_an_official_config_by_its_options(toy):
    table, _ = toy
    assert table.resolved("s") == {"width": 4, "depth": 2, "norm": "bn"}
    assert table.find(width=16, depth=3) == "toy-m-wide"
    assert table.find(depth=2) == "toy-s"  # a dataclass default counts
    assert table.find(lambda o: o["width"] > 8) == "toy-m-wide"
    assert table.find(width=5) is None

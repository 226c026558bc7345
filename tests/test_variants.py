"""A new variant is one entry of its family's variant table (segcore.models.variants).

Parametrised over the families found in the registry (each registered encoder whose module exposes a
``VARIANTS`` table): add one entry to the table and its factory line to the family module, reload the registry,
and everything a variant needs follows — the encoder, its paper pair(s), the install hint, the benchmark rows and
the converters' name. The factories are real module-level names (grep and an IDE find them): a test holds the
table, the factory lines in the module's source and its ``__all__`` to each other.
"""

from __future__ import annotations

import ast
import dataclasses
import fnmatch
import importlib
import inspect

import pytest
import segcore
import torch
from segcore.models.variants import VariantTable
from segcore.plugins import registry
from segcore.plugins.specs import resolve
from segcore.tools.benchmark import benchmark_rows

# Option overrides that make a family's first entry tiny (widths and depths), so the new entry builds fast.
TINY = {
    "mscan": {"embed_dims": (8, 16, 24, 32), "depths": (1, 1, 1, 1)},
    "mit": {"embed_dims": (8, 16, 40, 64), "depths": (1, 1, 1, 1)},
    "vit": {"embed_dim": 32, "num_heads": 2, "depth": 3, "out_indices": (0, 1, 2)},
}

# How an official config of each family spells an entry's options: (official type, config), one per converter
# format that names the family's encoders. A new family adds its line here; a new variant needs nothing.
OFFICIAL_CONFIGS = {
    "mscan": lambda o: [("MSCAN", {"embed_dims": o["embed_dims"], "depths": o["depths"]})],
    "mit": lambda o: [
        (
            "MixVisionTransformer",
            {"embed_dims": o["embed_dims"][0], "num_heads": o["num_heads"], "num_layers": o["depths"]},
        ),
        ("segformer", {"hidden_sizes": o["embed_dims"], "depths": o["depths"], "num_attention_heads": o["num_heads"]}),
    ],
    "vit": lambda o: [
        ("VisionTransformer", {"with_cls_token": False, "embed_dims": o["embed_dim"], "num_layers": o["depth"]}),
    ],
}


def _families() -> dict[str, tuple[VariantTable, str]]:
    """family -> (its table, the distribution that registers it), from the registered encoders."""
    found = {}
    for name, spec in registry.components("encoders").items():
        if not isinstance(spec.factory, str):
            continue
        table = getattr(importlib.import_module(spec.factory.partition(":")[0]), "VARIANTS", None)
        if isinstance(table, VariantTable) and name in map(table.name, table.variants):
            found[table.family] = (table, registry.owner("encoders", name)[0])
    return found


FAMILIES = _families()


def test_every_first_party_encoder_comes_from_a_variant_table():
    names = {n for table, _ in FAMILIES.values() for n in map(table.name, table.variants)}
    for name in registry.components("encoders"):
        if registry.owner("encoders", name)[0].startswith("segcore-"):
            assert name in names, f"{name} is registered by hand, not from its family's variant table"
    assert {"mscan", "mit", "vit"} <= set(FAMILIES)


def _module_level_names(source: str) -> dict[str, ast.stmt]:
    """Names bound at the top level of a module's source text (defs, classes, assignments) -> their statement."""
    names = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(target, ast.Name):
                    names[target.id] = node
    return names


@pytest.mark.parametrize("family", sorted(FAMILIES), ids=sorted(FAMILIES))
def test_the_family_module_defines_one_factory_per_table_entry(family):
    table, _ = FAMILIES[family]
    module = importlib.import_module(table.module)
    defined = _module_level_names(inspect.getsource(module))
    wanted = table.factory_names()
    # Table -> module: each entry's factory is written out in the module's source text, under its mechanical name.
    for key, attr in zip(table.variants, wanted, strict=True):
        assert attr in defined, f"{table.module} defines no {attr} for {table.name(key)}: add its factory line"
        factory = getattr(module, attr)
        assert (factory.__name__, factory.__module__) == (attr, table.module), f"{attr} builds another entry"
    # Module -> table: every factory-like name the module defines has its entry.
    factories = {n for n in defined if n.startswith(f"{family}_") and callable(getattr(module, n))}
    assert factories == set(wanted), f"{table.module}: factories without a table entry: {factories - set(wanted)}"
    assert "__getattr__" not in defined
    # __all__ is a literal list (grep finds it) naming exactly these factories, and nothing the module lacks.
    assert isinstance(defined["__all__"].value, ast.List), f"{table.module}: write __all__ out name by name"
    assert [n for n in module.__all__ if n.startswith(f"{family}_")] == wanted
    assert all(n in defined for n in module.__all__)
    # The one builder name every plugin's factories call.
    assert "build_variant" in module.__all__ and callable(module.build_variant)


@pytest.fixture
def new_variant(request):
    """Add a tiny copy of the family's first entry to its table under a new key, and its factory line to the
    family module (``<family>_<key>x = VARIANTS.factory("<key>x", build_variant)``); reload the registry."""
    table, dist = FAMILIES[request.param]
    first_key, first = next(iter(table.variants.items()))
    key = f"{first_key}x"
    variant = dataclasses.replace(first, options={**first.options, **TINY.get(table.family, {})})
    module = importlib.import_module(table.module)
    patch = pytest.MonkeyPatch()
    patch.setitem(table.variants, key, variant)
    patch.setattr(module, table.factory_name(key), table.factory(key, module.build_variant), raising=False)
    registry.reset()
    try:
        yield table, key, dist
    finally:
        patch.undo()
        registry.reset()


@pytest.mark.parametrize("new_variant", sorted(FAMILIES), ids=sorted(FAMILIES), indirect=True)
def test_a_new_variant_is_one_table_entry(new_variant):
    table, key, dist = new_variant
    name = table.name(key)

    # Registered as an encoder, by the family's plugin, with the entry's options and a description.
    spec = registry.get_spec("encoders", name)
    assert registry.owner("encoders", name)[0] == dist
    assert dict(spec.load_defaults()) == dict(table.variants[key].options) and spec.description
    # First-party for its distribution (install hints), through the family's pattern.
    assert registry.first_party(name) == dist
    # The spec names the factory line under the mechanical name.
    assert spec.factory == f"{table.module}:{table.factory_name(key)}"
    assert resolve(spec.factory).__name__ == table.factory_name(key)

    # Its pairs (where the family registers pairs) build and run forward at an odd size; each is a benchmark row.
    pairs = [p for p in registry.components("pairs").values() if p.encoder == name]
    family_has_pairs = any(
        fnmatch.fnmatchcase(p.encoder, f"{table.family}-*") and p.encoder != name
        for p in registry.components("pairs").values()
    )
    assert bool(pairs) == family_has_pairs
    rows = {(r.encoder, r.decoder) for r in benchmark_rows()}
    for pair in pairs:
        assert (name, pair.decoder) in rows
    torch.manual_seed(0)
    images = torch.randn(1, 3, 45, 70)
    if pairs:
        model = segcore.build_model(name, pairs[0].decoder, 3).eval()
        with torch.no_grad():
            assert model(images).shape == (1, 3, 45, 70)
    else:
        encoder = segcore.build_encoder(name).eval()
        with torch.no_grad():
            assert len(encoder(images)) == len(encoder.feature_info)

    # The converters name an official config of these options after the new entry.
    if table.family not in OFFICIAL_CONFIGS:
        pytest.fail(f"add how an official config of family {table.family!r} looks to OFFICIAL_CONFIGS")
    official_types = {}
    for conv in registry.components("converters").values():
        if any(fnmatch.fnmatchcase(name, c) for c in conv.components):
            official_types.update(conv.official_types)
    for official_type, cfg in OFFICIAL_CONFIGS[table.family](table.resolved(key)):
        assert resolve(official_types[official_type])(cfg)[0] == name, official_type

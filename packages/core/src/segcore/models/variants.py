"""One variant table per encoder family: the single place a model size is declared. Torch-free.

A family (SegNeXt's MSCAN, SegFormer's MiT, SegViT's ViT) lists its sizes once, in a torch-free module of its
plugin, each entry holding everything that differs between sizes:

    MIT = VariantTable(
        family="mit",
        module="segcore_segdeformer.mit",
        options="MiTOptions",
        description="Mix Transformer {KEY} (SegFormer encoder, {params}), strides 4/8/16/32",
        variants={
            "b0": Variant({"embed_dims": (32, 64, 160, 256), "depths": (2, 2, 2, 2)}, facts={"params": "3.3M"}),
            ...
        },
    )

Everything else is derived from it: the plugin registers one encoder per entry (:meth:`VariantTable.encoders`)
and builds its pairs from the entries; the converters find the registered name of an official config
(:meth:`VariantTable.find`); core's install hints cover the family by its pattern ``mit-*``
(:data:`segcore.plugins.registry.FIRST_PARTY`), and the benchmark rows come from the pairs. The family module re-exports
the table as ``VARIANTS`` and defines one factory per entry at its bottom, a real module-level name that grep and
an IDE find, made from the entry by :meth:`VariantTable.factory` and the family builder ``build_variant``:

    mit_b0 = VARIANTS.factory("b0", build_variant)

A new variant is one entry plus its factory line (a test holds the table, the factory lines and ``__all__`` to
each other).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from segcore.errors import SegcoreError
from segcore.plugins.specs import ComponentSpec, resolve

__all__ = ["Variant", "VariantTable"]

T = TypeVar("T")


@dataclass(frozen=True)
class Variant:
    """One size of an encoder family.

    Attributes:
        options: the encoder's option values for this size where they differ from its options dataclass'
            defaults (what the factory builds and ``segcore train --dry-run`` shows).
        description: the variant's own words, available to the table's ``description`` template as
            ``{description}`` (for families whose sizes are not described alike).
        pair: what the family's paper pair needs for this size, read by the plugin's ``segcore_pairs`` (SegNeXt:
            its head widths; SegViT: the decoder).
        facts: display facts the descriptions use (``{"params": "3.3M"}``), available to the template by key.
    """

    options: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    pair: Mapping[str, Any] = field(default_factory=dict)
    facts: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class VariantTable:
    """The variants of one encoder family, keyed by the part of the name after ``family-``.

    Names and factories are mechanical: entry ``"b0"`` of family ``"mit"`` registers ``mit-b0``, built by
    ``segcore_segdeformer.mit:mit_b0`` (``-`` -> ``_``).

    Attributes:
        family: the name prefix (``"mscan"``); registered names are ``f"{family}-{key}"``.
        module: the torch module holding the options dataclass and the factories.
        options: the options dataclass' name in ``module``.
        description: the encoder description, a ``str.format`` template over ``{name}``, ``{key}``, ``{KEY}``
            (upper case), ``{description}`` and the entry's ``facts``.
        source: the paper or upstream the encoders come from.
        variants: key -> :class:`Variant`, in registration order.
    """

    family: str
    module: str
    options: str
    description: str = "{description}"
    source: str = ""
    variants: dict[str, Variant] = field(default_factory=dict)

    def name(self, key: str) -> str:
        """The registered name of entry ``key`` (``"mit-b0"``)."""
        return f"{self.family}-{key}"

    def factory_name(self, key: str) -> str:
        """The name of entry ``key``'s factory in :attr:`module` (``"mit_b0"``)."""
        return self.name(key).replace("-", "_")

    def factory_names(self) -> list[str]:
        """Every entry's factory name: what the family module defines and lists in its ``__all__``."""
        return [self.factory_name(key) for key in self.variants]

    def describe(self, key: str) -> str:
        """Entry ``key``'s encoder description (the ``description`` template filled in)."""
        variant = self.variants[key]
        fields = {"name": self.name(key), "key": key, "KEY": key.upper(), "description": variant.description}
        try:
            return self.description.format(**fields, **variant.facts)
        except KeyError as err:
            raise SegcoreError(
                f"variant {self.name(key)}: the description {self.description!r} needs {err.args[0]!r}; add it to the "
                "entry's facts"
            ) from None

    def encoders(self) -> dict[str, ComponentSpec]:
        """One encoder spec per entry: what the plugin's ``segcore_encoders`` returns (imports no torch)."""
        return {
            self.name(key): ComponentSpec(
                factory=f"{self.module}:{self.factory_name(key)}",
                options=f"{self.module}:{self.options}",
                defaults=dict(variant.options),
                description=self.describe(key),
                source=self.source,
            )
            for key, variant in self.variants.items()
        }

    def resolved(self, key: str) -> dict[str, Any]:
        """Every option value of entry ``key``: the dataclass defaults under its ``options`` (imports the module)."""
        cls = resolve(f"{self.module}:{self.options}")
        defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
        return {**defaults, **self.variants[key].options}

    def find(self, where: Callable[[dict[str, Any]], bool] | None = None, /, **equal: Any) -> str | None:
        """The first registered name whose options fit, else ``None``: how converters name an official config.

        Args:
            where: a test on an entry's full options (see :meth:`resolved`).
            equal: option values the entry must have (compared as tuples where the value is a list or tuple).

        Example:
            >>> MIT.find(lambda o: o["embed_dims"][0] == 64, depths=(3, 4, 6, 3))  # doctest: +SKIP
            'mit-b2'
        """

        def norm(value: Any) -> Any:
            return tuple(value) if isinstance(value, (list, tuple)) else value

        for key in self.variants:
            options = self.resolved(key)
            if all(norm(options.get(k)) == norm(v) for k, v in equal.items()) and (where is None or where(options)):
                return self.name(key)
        return None

    def factory(self, key: str, build: Callable[[str, Any, dict[str, Any]], T]) -> Callable[..., T]:
        """The factory of entry ``key``: the family module's line ``mit_b0 = VARIANTS.factory("b0", build_variant)``.

        ``factory(pretrained=False, **options)`` calls ``build(name, pretrained, {**entry options, **options})``,
        reading the entry at call time. It carries the mechanical name (``__name__``, ``__qualname__``), the
        table's module (so it pickles by name) and the entry's description as its docstring.

        Raises:
            SegcoreError: the table has no entry ``key``.
        """
        if key not in self.variants:
            raise SegcoreError(
                f"variant table {self.family!r} has no entry {key!r} (entries: {', '.join(self.variants)}); add the "
                f"entry to the table or remove the factory line {self.factory_name(key)} from {self.module}"
            )
        name, attr = self.name(key), self.factory_name(key)

        def create(pretrained: Any = False, **options: Any) -> T:
            return build(name, pretrained, {**self.variants[key].options, **options})

        create.__name__ = create.__qualname__ = attr
        create.__module__ = self.module
        create.__doc__ = (
            f"{self.describe(key)}.\n\nBuilds ``{name}`` (entry ``{key!r}`` of the family's variant table): "
            "``pretrained`` and ``options`` (over the entry's options) go to the family builder."
        )
        return create

"""Hook specifications: the only way components enter segcore.

A plugin is one module with functions decorated by :data:`segcore.hookimpl` whose names are those
below, exposed through an entry point of group ``segcore``::

    [project.entry-points.segcore]
    myplugin = "myplugin.plugin"

Each hook returns a mapping from a kebab-case name to a spec. Names are unique across plugins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from segcore.plugins.specs import CheckpointSpec, ComponentSpec, ConverterSpec, PairSpec, RecipeSpec

__all__ = ["hookspec", "hookimpl", "PROJECT"]

PROJECT = "segcore"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def segcore_encoders() -> dict[str, ComponentSpec]:
    """Return encoders: name -> spec whose factory is ``factory(pretrained=False, **options) -> Encoder``."""


@hookspec
def segcore_decoders() -> dict[str, ComponentSpec]:
    """Return decoders: name -> spec whose factory is ``factory(in_features, num_classes, **options) -> Decoder``.

    The spec's ``in_strides`` declares the strides of the maps the decoder reads (``None``: any maps).
    """


@hookspec
def segcore_losses() -> dict[str, ComponentSpec]:
    """Return losses: name -> spec whose factory is ``factory(num_classes, ignore_index=255, **options) -> Loss``."""


@hookspec
def segcore_datasets() -> dict[str, ComponentSpec]:
    """Return datasets: name -> spec whose factory is ``factory(root, split, **options) -> Dataset``."""


@hookspec
def segcore_checkpoints() -> dict[str, CheckpointSpec]:
    """Return named pretrained checkpoints: name -> Hub repo, revision and official source."""


@hookspec
def segcore_converters() -> dict[str, ConverterSpec]:
    """Return converters of official checkpoint formats into segcore state dicts."""


@hookspec
def segcore_recipes() -> dict[str, RecipeSpec]:
    """Return training recipes: name -> preset taken from a paper's official config."""


@hookspec
def segcore_pairs() -> dict[str, PairSpec]:
    """Return paper models: name -> an encoder, a decoder and the paper's options for that pair."""

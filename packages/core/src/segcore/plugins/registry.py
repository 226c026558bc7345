"""The plugin registry: one ``name -> spec`` dict per kind, filled by pluggy hooks.

Plugins are distributions exposing an entry point of group ``segcore``; they are loaded lazily on the
first lookup, never at import. Core registers its own components through the same hooks
(:data:`DEFAULT_PLUGINS`). Environment switches:

* ``SEGCORE_LOAD_PLUGINS=segcore-segnext,...`` loads only the named distributions (empty: none);
* ``SEGCORE_TRACE_PLUGINS=1`` logs every hook call.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import importlib.metadata
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import pluggy

from segcore.errors import ComponentClashError, SegcoreError, UnknownComponentError
from segcore.plugins import hookspecs
from segcore.plugins.specs import CheckpointSpec, ComponentSpec, ConverterSpec, PairSpec, RecipeSpec

__all__ = [
    "Kind",
    "KINDS",
    "DEFAULT_PLUGINS",
    "FIRST_PARTY",
    "first_party",
    "ComponentInfo",
    "get_plugin_manager",
    "components",
    "get_spec",
    "list_components",
    "reset",
]

logger = logging.getLogger(__name__)

Kind = Literal["encoders", "decoders", "losses", "datasets", "checkpoints", "converters", "recipes", "pairs"]
KINDS: tuple[Kind, ...] = (
    "encoders",
    "decoders",
    "losses",
    "datasets",
    "checkpoints",
    "converters",
    "recipes",
    "pairs",
)
_SPEC_TYPES: dict[str, type] = {
    "checkpoints": CheckpointSpec,
    "converters": ConverterSpec,
    "recipes": RecipeSpec,
    "pairs": PairSpec,
}
ENTRY_POINT_GROUP = "segcore"
DEFAULT_PLUGINS: tuple[str, ...] = ("segcore.plugins.builtin",)

# First-party names -> the distribution that provides them, for "pip install ..." hints when it is not installed
# (core cannot ask an absent plugin). Keys are fnmatch patterns: a model family is one pattern, so a new variant
# needs no edit here. A test holds this to the registry both ways: every first-party name of every kind matches
# patterns of exactly its distribution, and every pattern matches a registered name.
FIRST_PARTY: dict[str, str] = {
    "mscan-*": "segcore-segnext",
    "ham": "segcore-segnext",
    "segnext-*": "segcore-segnext",  # pairs, checkpoints, recipes, the converter
    "vit-*": "segcore-segvit",
    "atm": "segcore-segvit",
    "atm-shrunk": "segcore-segvit",
    "segvit-*": "segcore-segvit",
    "mit-*": "segcore-segdeformer",
    "segdeformer*": "segcore-segdeformer",  # the decoder and loss, pairs, checkpoints, recipes
    "segformer*": "segcore-segdeformer",  # the decoder, the SegFormer pairs and converters
    **{
        n: "segcore-datasets"
        for n in (
            "ade20k",
            "cityscapes",
            "coco-stuff164k",
            "coco-stuff10k",
            "voc2012-aug",
            "pascal-context-59",
            "pascal-context-60",
            "isaid",
            "synthetic-shapes",
            "folder",
        )
    },
    "hf:*": "segcore-datasets",  # any Hugging Face dataset, hf:<repo id or folder>
}


def first_party(name: str) -> str | None:
    """The first-party distribution that provides ``name`` (see :data:`FIRST_PARTY`), or ``None``."""
    return next((dist for pattern, dist in FIRST_PARTY.items() if fnmatch.fnmatchcase(name, pattern)), None)


@dataclass(frozen=True)
class ComponentInfo:
    """A row of :func:`list_components`: a registered name and where it comes from."""

    name: str
    kind: str
    plugin: str
    version: str
    description: str


class _Registry:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.pm: pluggy.PluginManager | None = None
        self.tables: dict[str, dict[str, Any]] = {}
        self.owners: dict[str, dict[str, str]] = {}
        self.dists: dict[str, tuple[str, str]] = {}  # plugin name -> (distribution, version)


_REG = _Registry()


def _dist_of(module_name: str) -> tuple[str, str]:
    top = module_name.split(".")[0]
    candidates = [top.replace("_", "-"), *importlib.metadata.packages_distributions().get(top, [])]
    for dist in candidates:
        try:
            return dist, importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return top, "unknown"


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    only = os.environ.get("SEGCORE_LOAD_PLUGINS")
    wanted = None if only is None else {n.strip() for n in only.split(",") if n.strip()}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else ep.module.split(".")[0]
        if wanted is not None and dist not in wanted:
            continue
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        module = ep.load()
        pm.register(module, name=ep.name)
        version = ep.dist.version if ep.dist is not None else "unknown"
        _REG.dists[ep.name] = (dist, version)


def get_plugin_manager() -> pluggy.PluginManager:
    """Return the plugin manager, loading core's plugins and every ``segcore`` entry point on first use."""
    with _REG.lock:
        if _REG.pm is not None:
            return _REG.pm
        pm = pluggy.PluginManager(hookspecs.PROJECT)
        pm.add_hookspecs(hookspecs)
        for module_name in DEFAULT_PLUGINS:
            pm.register(importlib.import_module(module_name), name=module_name)
            _REG.dists[module_name] = _dist_of(module_name)
        _load_entry_points(pm)
        pm.check_pending()
        if os.environ.get("SEGCORE_TRACE_PLUGINS"):
            pm.trace.root.setwriter(lambda msg: logger.warning("segcore plugins: %s", msg.rstrip()))
            pm.enable_tracing()
        _REG.pm = pm
        return pm


def reset() -> None:
    """Forget loaded plugins and tables; the next lookup loads them again (used by tests)."""
    with _REG.lock:
        _REG.pm = None
        _REG.tables.clear()
        _REG.owners.clear()
        _REG.dists.clear()


def register_plugin(module: object, name: str) -> None:
    """Register a plugin object by hand (for tests and interactive use) and refresh the tables."""
    pm = get_plugin_manager()
    with _REG.lock:
        pm.register(module, name=name)
        _REG.dists[name] = (name, "local")
        _REG.tables.clear()
        _REG.owners.clear()


def unregister_plugin(name: str) -> None:
    """Remove a plugin registered with :func:`register_plugin` and refresh the tables."""
    pm = get_plugin_manager()
    with _REG.lock:
        plugin = pm.get_plugin(name)
        if plugin is not None:
            pm.unregister(plugin)
        _REG.dists.pop(name, None)
        _REG.tables.clear()
        _REG.owners.clear()


def _plugin_label(name: str) -> str:
    dist, version = _REG.dists.get(name, (name, "unknown"))
    return f"{dist} ({name})" if dist != name else name


def _build_table(kind: Kind) -> None:
    pm = get_plugin_manager()
    hook = getattr(pm.hook, f"segcore_{kind}")
    table: dict[str, Any] = {}
    owners: dict[str, str] = {}
    # Call implementations one by one so that a clash can name both plugins.
    for impl in reversed(hook.get_hookimpls()):
        try:
            result = impl.function()
        except SegcoreError as err:
            # A spec that refuses its own declaration (e.g. invalid in_strides) raises inside the plugin: say which.
            raise type(err)(f"plugin {_plugin_label(impl.plugin_name)}: segcore_{kind}(): {err}") from err
        if not result:
            continue
        if not isinstance(result, Mapping):
            raise TypeError(f"plugin {_plugin_label(impl.plugin_name)}: segcore_{kind}() must return a dict")
        for name, spec in result.items():
            if name in table:
                raise ComponentClashError(
                    f"{kind[:-1]} {name!r} is registered by two plugins: {_plugin_label(owners[name])} and "
                    f"{_plugin_label(impl.plugin_name)}. Uninstall one of them or block one with "
                    f"SEGCORE_LOAD_PLUGINS."
                )
            expected = _SPEC_TYPES.get(kind, ComponentSpec)
            if not isinstance(spec, expected):
                raise TypeError(
                    f"plugin {_plugin_label(impl.plugin_name)}: segcore_{kind}()[{name!r}] is a "
                    f"{type(spec).__name__}, expected {expected.__name__}"
                )
            table[name] = spec
            owners[name] = impl.plugin_name
    _REG.tables[kind] = table
    _REG.owners[kind] = owners


def components(kind: Kind) -> dict[str, Any]:
    """Return the ``name -> spec`` table of ``kind`` (loading plugins on first use)."""
    if kind not in KINDS:
        raise UnknownComponentError(f"unknown kind {kind!r}; kinds are {', '.join(KINDS)}")
    with _REG.lock:
        if kind not in _REG.tables:
            _build_table(kind)
        return _REG.tables[kind]


def owner(kind: Kind, name: str) -> tuple[str, str]:
    """Return ``(distribution, version)`` of the plugin that registered ``name``."""
    components(kind)
    plugin = _REG.owners[kind][name]
    return _REG.dists.get(plugin, (plugin, "unknown"))


def _namespace(name: str) -> tuple[str, str] | None:
    if ":" in name:
        prefix, rest = name.split(":", 1)
        return prefix + ":", rest
    return None


def _install_hint(name: str) -> str:
    dist = first_party(name)
    # An installed family does not have every name its pattern matches (a typo such as mit-b9): no hint then.
    if dist is None or dist in {d for d, _ in _REG.dists.values()}:
        return ""
    return f" {name!r} is provided by {dist}: pip install {dist}"


def get_spec(kind: Kind, name: str) -> Any:
    """Return the spec registered under ``name``; namespaced names (``timm:resnet18``) resolve to their prefix.

    Raises:
        UnknownComponentError: listing what is installed and, for first-party names, what to install.
    """
    table = components(kind)
    if name in table:
        return table[name]
    ns = _namespace(name)
    if ns is not None and ns[0] in table:
        return table[ns[0]]
    installed = sorted(table)
    close = difflib.get_close_matches(name, installed, n=3)
    message = f"unknown {kind[:-1]} {name!r}."
    hint = _install_hint(name)
    if hint:
        message += hint + "."
    elif close:
        message += f" Did you mean {', '.join(repr(c) for c in close)}?"
    message += f" Installed {kind}: {', '.join(installed) or '(none)'}."
    raise UnknownComponentError(message)


def list_components(kind: Kind | None = None) -> dict[str, list[ComponentInfo]]:
    """Return every installed component grouped by kind: ``kind -> [ComponentInfo, ...]`` sorted by name.

    Example:
        >>> import segcore
        >>> [c.name for c in segcore.list_components()["decoders"]][:3]  # doctest: +SKIP
        ['linear', 'mlp', 'upernet']
    """
    kinds = KINDS if kind is None else (kind,)
    out: dict[str, list[ComponentInfo]] = {}
    for k in kinds:
        rows = []
        for name, spec in sorted(components(k).items()):
            dist, version = owner(k, name)
            rows.append(ComponentInfo(name, k, dist, version, spec.description))
        out[k] = rows
    return out

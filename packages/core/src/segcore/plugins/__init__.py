"""The plugin system.

The hook specifications, the specs plugins return, the registry that collects them through entry points, and core's
own plugin (:mod:`~segcore.plugins.builtin`) with its CPU recipe (:mod:`~segcore.plugins.recipes`). Torch-free.
"""

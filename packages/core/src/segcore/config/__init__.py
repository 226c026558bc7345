"""Typed configuration.

Component options parsed strictly from JSON (:mod:`~segcore.config.options`) and the settings recipes, pairs,
checkpoints and models declare (:mod:`~segcore.config.settings`: train pipeline, eval protocol, model settings).
Torch-free.
"""

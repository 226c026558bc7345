"""Weights in and out.

In layers, state-dict files and key maps (:mod:`~segcore.weights.state_dict`) < official formats through the
plugins' converters (:mod:`~segcore.weights.convert`) < transformers folders
(:mod:`~segcore.weights.transformers_format`) < folders and the Hugging Face Hub (:mod:`~segcore.weights.hub`) and
model cards (:mod:`~segcore.weights.cards`) < registered named checkpoints (:mod:`~segcore.weights.checkpoints`).
"""

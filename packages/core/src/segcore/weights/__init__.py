"""Weights in and out.

In layers, state-dict files and key maps (:mod:`~segcore.weights.state_dict`) < official formats through the
plugins' converters (:mod:`~segcore.weights.convert`) < transformers folders
(:mod:`~segcore.weights.transformers_format`) and model cards (:mod:`~segcore.weights.cards`) < model folders on disk
(:mod:`~segcore.weights.pretrained`) < the Hugging Face Hub (:mod:`~segcore.weights.hub`) < registered named
checkpoints (:mod:`~segcore.weights.checkpoints`).
"""

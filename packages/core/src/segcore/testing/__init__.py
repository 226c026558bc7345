"""Test helpers, for segcore's own tests and for plugin authors': a Hub on 127.0.0.1, tiny data and runs, files.

:mod:`~segcore.testing.fake_hub` serves folders as Hugging Face Hub repos to the real ``huggingface_hub`` client
(:func:`serve_hub`); :mod:`~segcore.testing.tiny` registers ``tiny-shapes``, a 4-class dataset of rectangles, and
makes the settings of short CPU runs (:func:`tiny_run`); :mod:`~segcore.testing.images` writes images, labels and
own-data folders; :mod:`~segcore.testing.model_checks` compares compiled with eager models and perturbs norms for
logits-match tests. :mod:`~segcore.testing.fixtures` is the pytest plugin (the ``segcore`` ``pytest11`` entry
point) that gives tests ``local_hub``, ``tiny_plugin``, ``tiny_run`` and ``image_folder``. Importing this package
imports neither torch nor pytest.
"""

from __future__ import annotations

from segcore.testing.fake_hub import LocalHub, serve_hub
from segcore.testing.images import write_image, write_image_folder, write_label
from segcore.testing.model_checks import compare_compiled, perturb_norms
from segcore.testing.tiny import (
    TINY_MODEL,
    TINY_SHAPES,
    TinyShapes,
    register_tiny_shapes,
    registered_tiny_shapes,
    tiny_run,
    tiny_shapes,
    unregister_tiny_shapes,
)

__all__ = [
    "serve_hub",
    "LocalHub",
    "compare_compiled",
    "perturb_norms",
    "TinyShapes",
    "TINY_MODEL",
    "TINY_SHAPES",
    "register_tiny_shapes",
    "registered_tiny_shapes",
    "unregister_tiny_shapes",
    "tiny_run",
    "tiny_shapes",
    "write_image",
    "write_image_folder",
    "write_label",
]

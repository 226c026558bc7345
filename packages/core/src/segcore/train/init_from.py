"""Fine-tuning (``--init-from M``): the model, options, normalisation and weights of a trained model.

``M`` is anything :meth:`segcore.SegModel.from_pretrained` takes. Its config decides the run's encoder, decoder and
options, the normalisation and (unless the recipe or the data says otherwise) the eval protocol; all its weights
load, except the tensors whose shape depends on the number of classes when the dataset's count differs. Which
tensors those are is found by building the model on the meta device with two class counts, not by decoder name,
so any decoder (and any plugin's) is handled.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch

from segcore.config.options import CLASSES_LIMIT
from segcore.errors import CheckpointError, OptionsError
from segcore.models.model import SegModel, SegModelConfig
from segcore.plugins.registry import components
from segcore.weights.checkpoints import checkpoint_config, source_kind
from segcore.weights.hub import Fetch, download_repo
from segcore.weights.pretrained import CONFIG_NAME, read_json
from segcore.weights.state_dict import load_strict
from segcore.weights.transformers_format import (
    PREPROCESSOR_NAME,
    is_transformers_config,
    model_config_from_transformers,
)

__all__ = ["InitModel", "init_config", "find_init_model", "class_dependent_tensors", "load_init_weights"]

logger = logging.getLogger("segcore.train")


@dataclasses.dataclass(frozen=True)
class InitModel:
    """The model ``--init-from`` names, found once: its checked config and, where it has one, its local folder.

    Attributes:
        config: the model's config (read without loading weights).
        folder: the local folder holding its files (a folder source, or a Hub repo downloaded once); ``None`` for a
            registered checkpoint, which :meth:`SegModel.from_pretrained` reads from its converted cache.
    """

    config: SegModelConfig
    folder: Path | None


def find_init_model(source: str, fetch: bool = True) -> InitModel | None:
    """The model ``source`` names, reading as little as possible: its checked config and its local folder.

    A local folder (a saved model or a finished training run, segcore or transformers format) and a registered
    checkpoint name are read without loading weights; a folder's config is checked as loading it would check it
    (every value, and the model's size: :meth:`SegModel.check_config`). A Hub repo id is downloaded once, only when
    ``fetch`` (a dry run passes ``False`` and gets ``None``), and its files are then read locally. What ``source``
    is, is decided as the real load decides it (:func:`segcore.weights.checkpoints.source_kind`), so a dry run
    refuses what the run would refuse.

    Raises:
        CheckpointError: ``source`` is no model folder, registered checkpoint or Hub repo id, or its config is
            invalid (naming the file and the field).
    """
    kind = source_kind(source)
    if kind == "registered":
        spec = components("checkpoints")[source]
        fields = checkpoint_config(source, spec)
        return InitModel(SegModelConfig(spec.encoder, spec.decoder, spec.num_classes, **fields), None)  # type: ignore[arg-type]
    if kind == "hub" and not fetch:
        return None
    folder = Path(source).expanduser() if kind == "folder" else download_repo(source, Fetch())
    return InitModel(_folder_config(folder), folder)


def init_config(source: str, fetch: bool = True) -> SegModelConfig | None:
    """The config of :func:`find_init_model` (``None`` for a Hub repo id when not ``fetch``)."""
    found = find_init_model(source, fetch)
    return found.config if found is not None else None


def _folder_config(folder: Path) -> SegModelConfig:
    """The checked config of a local model folder (segcore or transformers format), without its weights."""
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(
            f"{folder} has no config.json (a training run has one once it has finished; use its best/ folder or a "
            "finished run)"
        )
    data = read_json(path)
    try:
        if is_transformers_config(data):
            pre = folder / PREPROCESSOR_NAME
            fields = model_config_from_transformers(data, read_json(pre) if pre.is_file() else None)
            config = SegModelConfig(**fields)
        else:
            config = SegModelConfig.from_dict(data, source=str(path))
    except OptionsError as err:
        raise CheckpointError(str(err) if str(path) in str(err) else f"{path}: {err}") from err
    SegModel.check_config(config, source=str(path))
    return config


def class_dependent_tensors(config: SegModelConfig) -> list[str]:
    """Names of the tensors whose shape depends on the number of classes (the classifier), in state-dict order.

    The model is built on the meta device (no memory, no init) with ``K`` and ``K + 1`` classes (``K - 1`` at the
    limit) and the shapes are compared, so this holds for any decoder.
    """
    shapes = []
    other = config.num_classes + 1 if config.num_classes < CLASSES_LIMIT else config.num_classes - 1
    for k in (config.num_classes, other):
        with torch.device("meta"):
            model = SegModel(dataclasses.replace(config, num_classes=k), check=False)
        shapes.append({name: tuple(t.shape) for name, t in model.state_dict().items()})
    return [name for name, shape in shapes[0].items() if shapes[1].get(name) != shape]


def load_init_weights(model: SegModel, source: str, folder: Path | None = None) -> tuple[list[str], Any]:
    """Load every weight of ``source`` into ``model``; ``(re-initialised tensor names, source's config)``.

    ``folder`` is where :func:`find_init_model` found ``source``'s files: read from there, nothing is fetched again.

    When the class counts differ, the tensors of :func:`class_dependent_tensors` keep ``model``'s fresh
    initialisation and are listed; every other tensor must match by name and shape.

    Raises:
        CheckpointError: naming the tensors that do not match (e.g. options changed by ``--encoder-opt``).
    """
    init = SegModel.from_pretrained(folder if folder is not None else source)
    state = init.state_dict()
    fresh: list[str] = []
    if init.config.num_classes != model.config.num_classes:
        fresh = class_dependent_tensors(init.config)
        own = model.state_dict()
        state = {k: (own[k] if k in fresh else v) for k, v in state.items()}
    load_strict(model, state, source=f"--init-from {source}")
    return fresh, init.config

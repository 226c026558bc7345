"""Model folders on disk: ``config.json`` + ``model.safetensors`` + a model card, written and read back.

:func:`save_pretrained` writes a folder atomically and never replaces files segcore did not write;
:func:`load_folder` reads one back. No pickle is ever loaded and no remote code runs: a model is rebuilt from
``config.json`` through the registry, then filled strictly from safetensors. A transformers segmentation folder
(SegFormer, UperNet + ConvNeXt) is converted on the fly by :mod:`segcore.weights.transformers_format`, without
transformers. Downloading such a folder from the Hub is :mod:`segcore.weights.hub`'s business; this module knows
folders only, and builds models through the class it is given (:meth:`SegModel.from_pretrained
<segcore.models.model.SegModel>` passes itself, as huggingface_hub's ``ModelHubMixin`` does), so it never imports the
model.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from segcore.data.storage import atomic_path, write_atomic
from segcore.errors import CheckpointError, OptionsError
from segcore.models.model_config import SegModelConfig
from segcore.weights import cards
from segcore.weights.cards import CARD_NAME, eval_result, is_segcore_card, scores_from_metrics, with_eval_results
from segcore.weights.state_dict import load_strict
from segcore.weights.transformers_format import (
    PREPROCESSOR_NAME,
    build_from_transformers,
    is_transformers_config,
    model_config_from_transformers,
    read_weights,
)

if TYPE_CHECKING:
    from segcore.config.settings import EvalProtocol
    from segcore.models.model import SegModel

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "save_pretrained",
    "save_weights",
    "save_evaluated",
    "load_folder",
    "read_json",
]

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_SEGCORE_KEYS = ("encoder", "decoder", "num_classes")


# ------------------------------------------------------------------------------------------------------------ save
def save_weights(tensors: Mapping[str, Tensor], target: Path) -> None:
    """Write ``tensors`` as safetensors with segcore's metadata, atomically (:func:`~segcore.data.storage.atomic_path`).

    Raises:
        StorageError: the file could not be written (the message names it and the cause: disk full, size limit...).
    """
    from safetensors.torch import save_file

    with atomic_path(target, "weights") as tmp:
        save_file(dict(tensors), str(tmp), metadata={"format": "pt", "library": "segcore"})


def _is_segcore_config(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and all(k in data for k in _SEGCORE_KEYS) and "model_type" not in data


def _check_folder(out: Path) -> None:
    """Refuse to write over a ``config.json`` or ``model.safetensors`` that segcore did not write."""
    config = out / CONFIG_NAME
    if config.is_file() and not _is_segcore_config(config):
        raise CheckpointError(
            f"{config} exists and is not a segcore config (no encoder/decoder/num_classes keys): save_pretrained "
            "does not overwrite files it did not write. Save into an empty folder, or remove that file first."
        )
    weights = out / WEIGHTS_NAME
    if weights.is_file() and not config.is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(weights), "pt") as fh:
                ours = (fh.metadata() or {}).get("library") == "segcore"
        except Exception:  # noqa: BLE001 - unreadable: certainly not ours
            ours = False
        if not ours:
            raise CheckpointError(
                f"{weights} exists and was not written by segcore: save_pretrained does not overwrite it. Save into "
                "an empty folder, or remove that file first."
            )


def _tensors_for_saving(model: SegModel) -> dict[str, Tensor]:
    # Clone so that tied or strided views become independent contiguous tensors safetensors accepts.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def save_pretrained(
    model: SegModel,
    save_directory: str | Path,
    model_card: str | None = None,
    *,
    config: SegModelConfig | None = None,
    repo_id: str | None = None,
) -> Path:
    """Write ``config.json``, ``model.safetensors`` and the model card ``README.md`` into ``save_directory``.

    Each file is written atomically with the permissions a plain ``open()`` gives (the umask's). Files segcore
    did not write are never replaced: a foreign ``config.json`` or ``model.safetensors`` is an error, and a
    ``README.md`` that is not an unedited segcore card is kept (a warning says so).

    Args:
        model: the model.
        save_directory: the folder (created if needed).
        model_card: the card's text; default :func:`segcore.weights.cards.model_card`.
        config: the config to write instead of ``model.config`` (e.g. with measured scores added).
        repo_id: the Hub repo the folder is for (the card's usage snippet names it).

    Returns:
        The directory.
    """
    out = Path(save_directory)
    out.mkdir(parents=True, exist_ok=True)
    _check_folder(out)
    config = config if config is not None else model.config
    files = {CONFIG_NAME: (json.dumps(config.to_dict(), indent=2) + "\n").encode()}
    readme = out / CARD_NAME
    if model_card is not None:
        files[CARD_NAME] = model_card.encode()
    elif readme.is_file() and not is_segcore_card(readme.read_text(errors="replace")):
        logger.warning(
            "%s is not a card segcore wrote (or it was edited): kept as it is. Delete it to get segcore's card, or "
            "write segcore.weights.cards.model_card(model) yourself.",
            readme,
        )
    else:
        num_params = sum(p.numel() for p in model.parameters())
        card = cards.model_card(config, repo_id=repo_id, num_params=num_params)
        files[CARD_NAME] = str(card).encode()
    save_weights(_tensors_for_saving(model), out / WEIGHTS_NAME)
    for name, data in files.items():
        write_atomic(out / name, data)
    return out


def save_evaluated(
    model: SegModel,
    folder: str | Path,
    scores: Mapping[str, Any] | str | Path | None,
    protocol: EvalProtocol | Mapping[str, Any] | None = None,
    split: str = "val",
) -> Path:
    """Save ``model`` with its measured validation scores (``config.extra["eval_results"]`` and the card).

    What training calls for its final and best models; the model itself is not changed.

    Args:
        model: the model.
        folder: the output folder.
        scores: the evaluation (``mIoU``, ``mAcc``, ``aAcc``, optionally ``iter``), or a ``metrics.jsonl`` whose
            last evaluation row is used; ``None`` saves without scores.
        protocol: the protocol of that evaluation (default: the model's ``config.eval``).
        split: the split evaluated.
    """
    if isinstance(scores, (str, Path)):
        scores = scores_from_metrics(scores)
    config = model.config
    if scores:
        dataset = str(config.extra.get("dataset") or "unknown")
        source = "segcore train" + (f", iteration {scores['iter']}" if "iter" in scores else "")
        entry = eval_result(scores, protocol if protocol is not None else (config.eval or None), dataset, split, source)
        config = with_eval_results(config, entry)
    return save_pretrained(model, folder, config=config)


# ------------------------------------------------------------------------------------------------------------ load
def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object; an unreadable file or another JSON value is a :class:`CheckpointError`."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a {type(data).__name__}, not a config object")
    return data


def _card_license(readme: Path) -> dict[str, str]:
    """The licence fields of a source repo's card (``license``, ``license_name``, ``license_link``)."""
    if not readme.is_file():
        return {}
    from huggingface_hub import ModelCard

    try:
        data = ModelCard.load(readme).data.to_dict()
    except Exception:  # noqa: BLE001 - a card without valid metadata states no licence
        return {}
    return {k: str(data[k]) for k in ("license", "license_name", "license_link") if data.get(k)}


def _load_transformers(
    model_cls: type[SegModel], folder: Path, data: dict[str, Any], map_location: str | torch.device, source: str
) -> SegModel:
    pre = folder / PREPROCESSOR_NAME
    preprocessor = read_json(pre) if pre.is_file() else None
    # An unsupported model, a bad value or a model too large is said before reading its weights.
    fields = model_config_from_transformers(data, preprocessor)
    config_path = str(folder / CONFIG_NAME)
    try:
        config = SegModelConfig.from_names(pair_defaults=False, **fields)
    except OptionsError as err:
        raise CheckpointError(f"{config_path}: {err}") from err
    model_cls.check_config(config, source=config_path)
    model = build_from_transformers(model_cls, data, read_weights(folder), preprocessor, source)
    extra = model.config.extra
    is_folder = Path(source).expanduser().exists()
    extra.setdefault("name", Path(source).name if is_folder else source)
    extra.update(_card_license(folder / CARD_NAME))
    if not is_folder:  # a Hub repo id: the card's base_model
        extra["base_model"] = source.split("@")[0]
    return model.to(map_location)


def load_folder(
    model_cls: type[SegModel], folder: Path, map_location: str | torch.device = "cpu", source: str | None = None
) -> SegModel:
    """Load the model of a local folder: segcore's (``config.json`` + ``model.safetensors``) or transformers'.

    Args:
        model_cls: the model class to build (:class:`~segcore.models.model.SegModel`; its ``from_pretrained`` passes
            itself).
        folder: the folder.
        map_location: device of the returned model.
        source: what to name as the model's source (a Hub repo id; default the folder).

    Before anything is allocated, every value of ``config.json`` is checked (type and range) and the model's
    size
    against :func:`~segcore.models.model.max_param_bytes` (:meth:`SegModel.check_config
    <segcore.models.model.SegModel>`).

    Raises:
        CheckpointError: no model folder, an invalid config or weights that do not match, said in words.
    """
    from safetensors.torch import load_file

    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not config_path.is_file():
        raise CheckpointError(
            f"{folder} is not a segcore model folder: config.json is missing (a folder written by "
            "save_pretrained or segcore train holds config.json and model.safetensors)"
        )
    data = read_json(config_path)
    if is_transformers_config(data):
        return _load_transformers(model_cls, folder, data, map_location, source or str(folder))
    if not weights_path.is_file():
        raise CheckpointError(
            f"{folder} is not a segcore model folder: model.safetensors is missing (a folder written by "
            "save_pretrained or segcore train holds config.json and model.safetensors)"
        )
    try:
        config = SegModelConfig.from_dict(data, source=str(config_path))
    except OptionsError as err:
        raise CheckpointError(str(err)) from err
    model_cls.check_config(config, source=str(config_path))
    try:
        state = load_file(str(weights_path), device=str(map_location))
    except Exception as err:
        raise CheckpointError(
            f"cannot read {weights_path}: {err} (the file is truncated or not safetensors; download it again)"
        ) from err
    model = model_cls(config, check=False)
    load_strict(model, state, source=str(weights_path))
    return model.to(map_location).eval()

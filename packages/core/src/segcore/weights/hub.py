"""Model folders on disk and on the Hugging Face Hub: ``config.json`` + ``model.safetensors`` + a model card.

No pickle is ever loaded from the Hub and no remote code runs: a model is rebuilt from ``config.json``
through the registry, then filled strictly from safetensors. A transformers segmentation repo (SegFormer,
UperNet + ConvNeXt) is converted on the fly by :mod:`segcore.weights.transformers_format`, without transformers.
Registered checkpoint names are :mod:`segcore.weights.checkpoints`' business; this module knows folders and repos only,
and builds models through the class it is given (:meth:`SegModel.from_pretrained <segcore.models.model.SegModel>` passes
itself, as huggingface_hub's ``ModelHubMixin`` does), so it never imports the model.

Hub access follows huggingface_hub: ``revision``, ``token``, ``cache_dir``, ``local_files_only`` and
``force_download`` mean what they mean there (:class:`Fetch`), and ``HF_HUB_OFFLINE=1`` forbids every download.
A network failure is reported after one attempt, within ``SEGCORE_HUB_TIMEOUT`` seconds (default 5), instead of
huggingface_hub's five retries.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from segcore.data.storage import atomic_path, replace_file, write_atomic
from segcore.errors import CheckpointError, HubNetworkError, NotCachedError, OptionsError
from segcore.models.model_config import SegModelConfig
from segcore.weights import cards
from segcore.weights.cards import CARD_NAME, eval_result, is_segcore_card, scores_from_metrics, with_eval_results
from segcore.weights.state_dict import load_strict
from segcore.weights.transformers_format import (
    PREPROCESSOR_NAME,
    WEIGHT_FILES,
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
    "CARD_NAME",
    "Fetch",
    "save_pretrained",
    "save_weights",
    "save_evaluated",
    "load_folder",
    "download_repo",
    "hub_file",
    "probe",
    "push_to_hub",
    "read_json",
    "replace_file",
    "segcore_cache_dir",
    "offline",
    "network_timeout",
    "is_network_error",
    "network_failure",
    "hub_network",
]

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_SEGCORE_KEYS = ("encoder", "decoder", "num_classes")


def segcore_cache_dir() -> Path:
    """Where converted official checkpoints (and their downloads) are cached.

    ``$SEGCORE_CACHE`` when set, else ``$HF_HOME/segcore`` (huggingface_hub's home: ``$HF_HOME``, else
    ``$XDG_CACHE_HOME/huggingface``, else ``~/.cache/huggingface``). Read at each call.
    """
    if os.environ.get("SEGCORE_CACHE"):
        return Path(os.environ["SEGCORE_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        home = Path(os.environ["HF_HOME"]).expanduser()
    else:
        home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "huggingface"
    return home / "segcore"


def offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set (read now, and as huggingface_hub read it at import)."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return value in ("1", "ON", "YES", "TRUE") or bool(constants.HF_HUB_OFFLINE)


def network_timeout() -> float:
    """Seconds one network attempt may take: ``$SEGCORE_HUB_TIMEOUT``, default 5."""
    return float(os.environ.get("SEGCORE_HUB_TIMEOUT") or 5)


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


@dataclasses.dataclass(frozen=True)
class Fetch:
    """huggingface_hub's download keywords, as ``from_pretrained`` got them (they mean what they mean there)."""

    revision: str | None = None
    cache_dir: str | Path | None = None
    token: str | bool | None = None
    local_files_only: bool = False
    force_download: bool = False


def is_network_error(err: BaseException) -> bool:
    """True when ``err`` is a network failure (not a missing repo, file or revision)."""
    # huggingface_hub raises its HTTP client's transport errors (httpx or its fork) unwrapped.
    names = {c.__name__ for c in type(err).__mro__}
    return bool(names & {"TransportError", "ConnectionError", "TimeoutError", "Timeout", "URLError"}) or isinstance(
        err, (ConnectionError, TimeoutError)
    )


def network_failure(err: BaseException, what: str, advice: str = "") -> HubNetworkError:
    """The error every Hub command gives when the Hub cannot be reached while it does ``what``.

    Args:
        err: the transport error (``is_network_error(err)``).
        what: what was being done, e.g. ``"push to 'me/model'"``.
        advice: what the user can do; default: check the connection and ``HF_ENDPOINT``.

    Example:
        >>> str(network_failure(ConnectionRefusedError("refused"), "push to 'me/x'")).startswith("network failure")
        True
    """
    from huggingface_hub import constants

    advice = advice or "check the connection (and HF_ENDPOINT), then try again"
    return HubNetworkError(
        f"network failure: cannot reach {constants.ENDPOINT} to {what} ({type(err).__name__}: {err}); {advice}"
    )


@contextlib.contextmanager
def hub_network(what: str) -> Iterator[None]:
    """Turn a network failure inside the block into :func:`network_failure`'s error; other errors pass unchanged.

    Example:
        >>> with hub_network("push to 'me/model'"):  # doctest: +SKIP
        ...     HfApi().create_repo("me/model", exist_ok=True)
    """
    try:
        yield
    except HubNetworkError:
        raise
    except Exception as err:
        if is_network_error(err):
            raise network_failure(err, what) from err
        raise


def _not_cached(repo_id: str, revision: str | None) -> NotCachedError:
    why = "HF_HUB_OFFLINE=1" if offline() else "local_files_only=True"
    rev = f" --revision {revision}" if revision else ""
    return NotCachedError(
        f"{repo_id} is not cached and {why} forbids downloading it. Get it once with network access "
        f"(`hf download {repo_id}{rev}`, or load it with HF_HUB_OFFLINE unset), then load it offline."
    )


def hub_file(repo_id: str, filename: str, f: Fetch, optional: bool = False) -> Path | None:
    """Download (or find in the cache) one file of a Hub repo; errors are said in words."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo_id!r} (revision {f.revision or 'main'}) at {constants.ENDPOINT}"
    try:
        return Path(
            hf_hub_download(
                repo_id,
                filename,
                revision=f.revision,
                cache_dir=f.cache_dir,
                token=f.token,
                local_files_only=f.local_files_only or offline(),
                force_download=f.force_download,
            )
        )
    except GatedRepoError as err:
        raise CheckpointError(
            f"Hub repo {where} is gated: accept its terms on the Hub and log in (hf auth login)"
        ) from err
    except RepositoryNotFoundError as err:
        raise CheckpointError(
            f"Hub repo {repo_id!r} not found at {constants.ENDPOINT} (revision {f.revision or 'main'}): check the "
            "id, log in for a private repo (hf auth login), or pass a local folder or a registered "
            "checkpoint name (segcore list --kind checkpoints)"
        ) from err
    except RevisionNotFoundError as err:
        raise CheckpointError(f"Hub repo {repo_id!r} has no revision {f.revision!r}") from err
    except LocalEntryNotFoundError as err:
        if optional:
            return None
        if f.local_files_only or offline():
            raise _not_cached(repo_id, f.revision) from err
        raise HubNetworkError(f"network failure: cannot download {filename} of {where}: {err}") from err
    except EntryNotFoundError as err:
        if optional:
            return None
        raise CheckpointError(
            f"Hub repo {repo_id!r} has no {filename}: it is not a segcore model repo (expected config.json and "
            "model.safetensors written by save_pretrained/push_to_hub) nor a transformers one"
        ) from err


def probe(repo_id: str, filename: str, f: Fetch) -> Fetch:
    """Ask the Hub once, without retries, whether ``filename`` of ``repo_id`` is there.

    huggingface_hub retries a network failure five times with back-off (about half a minute, several minutes when
    the endpoint does not answer): one short attempt here turns that into an error within the timeout. When the
    network fails but the file is cached, the cache is used, as huggingface_hub does.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    if f.local_files_only or offline():
        return f
    try:
        get_hf_file_metadata(
            hf_hub_url(repo_id, filename, revision=f.revision), token=f.token, timeout=network_timeout()
        )
    except Exception as err:
        if not is_network_error(err):
            return f  # a missing repo, file or revision: the download says it in words
        cached = hub_file(repo_id, filename, dataclasses.replace(f, local_files_only=True), optional=True)
        if cached is not None and not f.force_download:
            logger.warning("segcore: network failure (%s); using the cached copy of %s", err, repo_id)
            return dataclasses.replace(f, local_files_only=True)
        raise network_failure(
            err,
            f"download {repo_id!r}",
            "nothing is cached for it. Check the connection (and HF_ENDPOINT), or set HF_HUB_OFFLINE=1 to use "
            "cached models only.",
        ) from err
    return f


def download_repo(repo_id: str, f: Fetch) -> Path:
    """Download what a Hub repo's model needs (segcore or transformers format) and return the local folder."""
    f = probe(repo_id, CONFIG_NAME, f)
    config_path = hub_file(repo_id, CONFIG_NAME, f)
    assert config_path is not None
    if not is_transformers_config(read_json(config_path)):
        hub_file(repo_id, WEIGHTS_NAME, f)
        hub_file(repo_id, CARD_NAME, f, optional=True)
        return config_path.parent
    for name in WEIGHT_FILES:
        path = hub_file(repo_id, name, f, optional=True)
        if path is None:
            continue
        if name.endswith(".index.json"):
            for shard in sorted(set(read_json(path)["weight_map"].values())):
                hub_file(repo_id, shard, f)
        break
    else:
        raise CheckpointError(f"Hub repo {repo_id!r} holds a transformers config.json but none of {WEIGHT_FILES}")
    hub_file(repo_id, PREPROCESSOR_NAME, f, optional=True)
    hub_file(repo_id, CARD_NAME, f, optional=True)
    return config_path.parent


# ------------------------------------------------------------------------------------------------------------ push
def push_to_hub(
    model: SegModel,
    repo_id: str,
    private: bool = False,
    commit_message: str = "Upload segcore model",
    token: str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    commit_description: str | None = None,
) -> str:
    """Create ``repo_id`` if needed and upload the model's ``from_pretrained`` folder with its card.

    The model is not changed (the card names the repo without writing it into ``model.config``).

    Args:
        model: the model.
        repo_id: ``org/name``.
        private: create the repo private (an existing repo keeps its visibility).
        commit_message: the commit's title.
        token: Hub token (``None``: the logged-in one).
        revision: the branch to push to (created from the default branch if missing).
        create_pr: open a pull request instead of committing to the branch.
        commit_description: the commit's (or pull request's) description.

    Returns:
        The commit URL, or the pull request's URL with ``create_pr``.

    Raises:
        HubNetworkError: "network failure: ..." when the Hub cannot be reached.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    with hub_network(f"push to {repo_id!r}"):
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision and revision != "main" and not create_pr:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="segcore-push-") as tmp, hub_network(f"push to {repo_id!r}"):
        save_pretrained(model, tmp, repo_id=repo_id)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=tmp,
            commit_message=commit_message,
            commit_description=commit_description,
            revision=revision,
            create_pr=create_pr,
        )
    url = getattr(info, "pr_url", None) if create_pr else None
    return str(url or getattr(info, "commit_url", info))

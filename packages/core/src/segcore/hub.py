"""Weights on disk and on the Hugging Face Hub: ``config.json`` + ``model.safetensors`` + a model card.

No pickle is ever loaded from the Hub and no remote code runs: a model is rebuilt from ``config.json``
through the registry, then filled strictly from safetensors. A transformers segmentation repo (SegFormer,
UperNet + ConvNeXt) is converted on the fly by :mod:`segcore.transformers_format`, without transformers.
A registered checkpoint name resolves to its Hub repo; when that repo does not exist, the official file is
downloaded, verified, converted with the plugin's converter and cached as a normal ``from_pretrained`` folder
under :func:`cache_dir`.

Hub access follows huggingface_hub: ``revision``, ``token``, ``cache_dir``, ``local_files_only`` and
``force_download`` mean what they mean there, and ``HF_HUB_OFFLINE=1`` forbids every download (the Hub's and
the official files'). A network failure is reported after one attempt, within ``SEGCORE_HUB_TIMEOUT`` seconds
(default 5), instead of huggingface_hub's five retries.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from segcore import cards
from segcore.cards import CARD_NAME, eval_result, is_segcore_card, scores_from_metrics, with_eval_results
from segcore.convert import load_strict
from segcore.errors import CheckpointError, HubNetworkError, NotCachedError
from segcore.registry import components
from segcore.transformers_format import (
    PREPROCESSOR_NAME,
    WEIGHT_FILES,
    build_from_transformers,
    encoder_state_from_transformers,
    is_transformers_config,
    model_config_from_transformers,
    read_weights,
)

if TYPE_CHECKING:
    from segcore.model import SegModel, SegModelConfig
    from segcore.settings import EvalProtocol
    from segcore.specs import CheckpointSpec

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "CARD_NAME",
    "save_pretrained",
    "save_evaluated",
    "from_pretrained",
    "push_to_hub",
    "load_pretrained_encoder_state",
    "cache_dir",
    "offline",
]

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_SEGCORE_KEYS = ("encoder", "decoder", "num_classes")


def cache_dir() -> Path:
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


def _network_timeout() -> float:
    return float(os.environ.get("SEGCORE_HUB_TIMEOUT") or 5)


# ------------------------------------------------------------------------------------------------------------ save
def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask would, briefly, for every thread)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _replace(tmp: Path, target: Path) -> None:
    # Temporary files may be created 0600 (safetensors does): give the result the mode a plain open() would.
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, target)


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
        model_card: the card's text; default :func:`segcore.cards.model_card`.
        config: the config to write instead of ``model.config`` (e.g. with measured scores added).
        repo_id: the Hub repo the folder is for (the card's usage snippet names it).

    Returns:
        The directory.
    """
    from safetensors.torch import save_file

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
            "write segcore.cards.model_card(model) yourself.",
            readme,
        )
    else:
        num_params = sum(p.numel() for p in model.parameters())
        card = cards.model_card(config, repo_id=repo_id, num_params=num_params)
        files[CARD_NAME] = str(card).encode()
    tmp = out / f".{WEIGHTS_NAME}.tmp"
    save_file(_tensors_for_saving(model), str(tmp), metadata={"format": "pt", "library": "segcore"})
    _replace(tmp, out / WEIGHTS_NAME)
    for name, data in files.items():
        tmp = out / f".{name}.tmp"
        tmp.write_bytes(data)
        _replace(tmp, out / name)
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
def _read_json(path: Path) -> dict[str, Any]:
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


def _load_transformers(folder: Path, data: dict[str, Any], map_location: str | torch.device, source: str) -> SegModel:
    pre = folder / PREPROCESSOR_NAME
    preprocessor = _read_json(pre) if pre.is_file() else None
    model_config_from_transformers(data, preprocessor)  # an unsupported model is said before reading its weights
    model = build_from_transformers(data, read_weights(folder), preprocessor, source)
    extra = model.config.extra
    is_folder = Path(source).expanduser().exists()
    extra.setdefault("name", Path(source).name if is_folder else source)
    extra.update(_card_license(folder / CARD_NAME))
    if not is_folder:  # a Hub repo id: the card's base_model
        extra["base_model"] = source.split("@")[0]
    return model.to(map_location)


def _load_folder(folder: Path, map_location: str | torch.device = "cpu", source: str | None = None) -> SegModel:
    from safetensors.torch import load_file

    from segcore.model import SegModel, SegModelConfig

    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not config_path.is_file():
        raise CheckpointError(
            f"{folder} is not a segcore model folder: config.json is missing (a folder written by "
            "save_pretrained or segcore train holds config.json and model.safetensors)"
        )
    data = _read_json(config_path)
    if is_transformers_config(data):
        return _load_transformers(folder, data, map_location, source or str(folder))
    if not weights_path.is_file():
        raise CheckpointError(
            f"{folder} is not a segcore model folder: model.safetensors is missing (a folder written by "
            "save_pretrained or segcore train holds config.json and model.safetensors)"
        )
    try:
        config = SegModelConfig.from_dict(data)
    except TypeError as err:
        raise CheckpointError(f"{config_path} is not a valid segcore config: {err}") from err
    try:
        state = load_file(str(weights_path), device=str(map_location))
    except Exception as err:
        raise CheckpointError(
            f"cannot read {weights_path}: {err} (the file is truncated or not safetensors; download it again)"
        ) from err
    model = SegModel(config, check=False)
    load_strict(model, state, source=str(weights_path))
    return model.to(map_location).eval()


@dataclasses.dataclass(frozen=True)
class _Fetch:
    """huggingface_hub's download keywords, as ``from_pretrained`` got them."""

    revision: str | None = None
    cache_dir: str | Path | None = None
    token: str | bool | None = None
    local_files_only: bool = False
    force_download: bool = False


def _is_network_error(err: BaseException) -> bool:
    # huggingface_hub raises its HTTP client's transport errors (httpx or its fork) unwrapped.
    names = {c.__name__ for c in type(err).__mro__}
    return bool(names & {"TransportError", "ConnectionError", "TimeoutError", "Timeout", "URLError"}) or isinstance(
        err, (ConnectionError, TimeoutError)
    )


def _not_cached(repo_id: str, revision: str | None) -> NotCachedError:
    why = "HF_HUB_OFFLINE=1" if offline() else "local_files_only=True"
    rev = f" --revision {revision}" if revision else ""
    return NotCachedError(
        f"{repo_id} is not cached and {why} forbids downloading it. Get it once with network access "
        f"(`hf download {repo_id}{rev}`, or load it with HF_HUB_OFFLINE unset), then load it offline."
    )


def _hub_file(repo_id: str, filename: str, f: _Fetch, optional: bool = False) -> Path | None:
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


def _probe(repo_id: str, filename: str, f: _Fetch) -> _Fetch:
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
            hf_hub_url(repo_id, filename, revision=f.revision), token=f.token, timeout=_network_timeout()
        )
    except Exception as err:
        if not _is_network_error(err):
            return f  # a missing repo, file or revision: the download says it in words
        cached = _hub_file(repo_id, filename, dataclasses.replace(f, local_files_only=True), optional=True)
        if cached is not None and not f.force_download:
            logger.warning("segcore: network failure (%s); using the cached copy of %s", err, repo_id)
            return dataclasses.replace(f, local_files_only=True)
        from huggingface_hub import constants

        raise HubNetworkError(
            f"network failure: cannot reach {constants.ENDPOINT} for {repo_id!r} ({type(err).__name__}: {err}); "
            "nothing is cached for it. Check the connection (and HF_ENDPOINT), or set HF_HUB_OFFLINE=1 to use "
            "cached models only."
        ) from err
    return f


def _download_repo(repo_id: str, f: _Fetch) -> Path:
    """Download what a Hub repo's model needs (segcore or transformers format) and return the local folder."""
    f = _probe(repo_id, CONFIG_NAME, f)
    config_path = _hub_file(repo_id, CONFIG_NAME, f)
    assert config_path is not None
    if not is_transformers_config(_read_json(config_path)):
        _hub_file(repo_id, WEIGHTS_NAME, f)
        _hub_file(repo_id, CARD_NAME, f, optional=True)
        return config_path.parent
    for name in WEIGHT_FILES:
        path = _hub_file(repo_id, name, f, optional=True)
        if path is None:
            continue
        if name.endswith(".index.json"):
            for shard in sorted(set(_read_json(path)["weight_map"].values())):
                _hub_file(repo_id, shard, f)
        break
    else:
        raise CheckpointError(f"Hub repo {repo_id!r} holds a transformers config.json but none of {WEIGHT_FILES}")
    _hub_file(repo_id, PREPROCESSOR_NAME, f, optional=True)
    _hub_file(repo_id, CARD_NAME, f, optional=True)
    return config_path.parent


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch_official(spec: CheckpointSpec, name: str, root: Path | None = None) -> Path:
    """Download the official file of ``spec`` into the cache (with progress) and verify its checksum."""
    if spec.manual_step:
        raise CheckpointError(f"{name}: the official file cannot be downloaded automatically. {spec.manual_step}")
    if not spec.official_url:
        raise CheckpointError(f"{name}: no Hub copy could be reached and no official URL is registered")
    target = (root or cache_dir()) / "downloads" / (spec.official_filename or spec.official_url.rsplit("/", 1)[-1])
    if not target.is_file():
        if offline():
            raise NotCachedError(
                f"{name} is not cached and HF_HUB_OFFLINE=1 forbids downloading it: neither its Hub copy "
                f"{spec.repo_id} nor the official file is here. Get it once with network access (unset "
                f"HF_HUB_OFFLINE and load it again), or download {spec.official_url} by hand and run "
                f"`segcore convert --format {spec.format} FILE --out DIR` (then load DIR)."
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        from tqdm.auto import tqdm

        tmp = target.with_suffix(target.suffix + ".part")
        try:
            # One attempt; the timeout bounds connecting and each read (a stalled server fails, a slow one does not).
            with urllib.request.urlopen(spec.official_url, timeout=max(_network_timeout(), 30)) as response:  # noqa: S310
                total = int(response.headers.get("Content-Length") or 0) or None
                with (
                    tmp.open("wb") as fh,
                    tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {target.name}") as bar,
                ):
                    for block in iter(lambda: response.read(1 << 20), b""):
                        fh.write(block)
                        bar.update(len(block))
        except OSError as err:
            tmp.unlink(missing_ok=True)
            error = HubNetworkError if _is_network_error(err) else CheckpointError
            raise error(
                f"{name}: cannot download {spec.official_url}: {err}. Download it by hand and run "
                f"`segcore convert --format {spec.format} ...`"
            ) from err
        _replace(tmp, target)
    if spec.sha256:
        digest = _sha256(target)
        if not digest.startswith(spec.sha256.lower()):
            bad = target.with_suffix(target.suffix + ".corrupt")
            os.replace(target, bad)
            raise CheckpointError(
                f"{name}: {target.name} has SHA-256 {digest[:16]}..., expected {spec.sha256}...; moved it to {bad}. "
                "Download again."
            )
    return target


def _license_of(spec: CheckpointSpec) -> dict[str, str]:
    fields = {"license": spec.license, "license_name": spec.license_name, "license_note": spec.license_note}
    return {k: v for k, v in fields.items() if v}


def checkpoint_config(name: str, spec: CheckpointSpec) -> dict[str, Any]:
    """The :class:`SegModelConfig` fields a registered model checkpoint's converted model gets.

    Besides the architecture, the config records the paper's eval protocol (``eval``, typed), so that ``segcore
    eval`` runs the paper's test pipeline by default, and where the weights come from and under which licence
    (``extra``), which the model card states.
    """
    return {
        "encoder_options": dict(spec.encoder_options),
        "decoder_options": dict(spec.decoder_options),
        "eval": spec.eval_protocol.to_dict() if spec.eval_protocol is not None else {},
        **dict(spec.model_config),
        "extra": {
            "name": name,
            "source": spec.official_url or spec.official_filename,
            "converter": f"segcore convert --format {spec.format}",
            "metric": spec.metric,
            "eval_protocol": spec.eval_protocol.describe() if spec.eval_protocol is not None else "",
            "dataset": spec.dataset,
            **_license_of(spec),
        },
    }


def convert_registered(name: str, spec: CheckpointSpec, official_file: str | Path | None = None) -> SegModel:
    """Convert the official file of the registered model checkpoint ``name`` (downloaded and verified if not given).

    The model's config is :func:`checkpoint_config`'s: the paper's eval protocol and the weights' provenance.
    """
    from segcore.convert import convert_checkpoint

    official = Path(official_file) if official_file is not None else _fetch_official(spec, name)
    config = checkpoint_config(name, spec)
    extra = config.pop("extra")
    model = convert_checkpoint(
        official, format=spec.format, encoder=spec.encoder, decoder=spec.decoder, num_classes=spec.num_classes, **config
    )
    model.config.extra.update(extra)
    return model


def _converted_dir(name: str, f: _Fetch) -> Path:
    root = Path(f.cache_dir).expanduser() / "segcore" if f.cache_dir is not None else cache_dir()
    return root / "converted" / name


def _from_registered(name: str, spec: CheckpointSpec, f: _Fetch, map_location: str | torch.device) -> SegModel:
    if spec.kind != "model":
        raise CheckpointError(f"{name!r} holds encoder weights only; use it with build_model(pretrained_encoder=True)")
    converted = _converted_dir(name, f)
    if converted.is_dir() and not f.force_download:
        return _load_folder(converted, map_location)
    hub = dataclasses.replace(f, revision=f.revision or spec.revision)
    try:
        return _load_folder(_download_repo(spec.repo_id, hub), map_location, source=spec.repo_id)
    except NotCachedError as err:
        if not (spec.official_url or spec.manual_step):
            raise
        raise NotCachedError(
            f"{name} is not cached ({converted} does not exist and the Hub copy {spec.repo_id} is not in the Hub "
            f"cache) and {'HF_HUB_OFFLINE=1' if offline() else 'local_files_only=True'} forbids downloading it. Get "
            "it once with network access (load it again without HF_HUB_OFFLINE / local_files_only), or download "
            f"{spec.official_url or 'the official file'} by hand and run `segcore convert --format {spec.format} "
            f"FILE --out {converted}`."
        ) from err
    except HubNetworkError:
        raise  # the network is down: trying the official URL would only wait longer
    except CheckpointError:
        if not (spec.official_url or spec.manual_step):
            raise
    logger.warning("segcore: converting the official %s checkpoint (no Hub copy at %s)", name, spec.repo_id)
    model = convert_registered(name, spec, _fetch_official(spec, name, converted.parent.parent))
    save_pretrained(model, converted)
    logger.warning("segcore: cached converted %s at %s", name, converted)
    return model.eval().to(map_location)


def from_pretrained(
    name_or_path: str | Path,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    map_location: str | torch.device = "cpu",
    *,
    token: str | bool | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
) -> SegModel:
    """Load a :class:`SegModel` from a local folder, a registered checkpoint name or a Hub repo id.

    Folders and repos may be segcore's (``config.json`` + ``model.safetensors``) or transformers' (SegFormer,
    UperNet + ConvNeXt), which are converted on the fly.

    Args:
        name_or_path: folder, registered name (``segcore list --kind checkpoints``) or Hub repo id.
        revision: Hub branch, tag or commit (a registered name's pinned revision otherwise).
        cache_dir: huggingface_hub cache folder; converted official checkpoints go to ``<cache_dir>/segcore``.
        map_location: device of the returned model.
        token: Hub token (``None``: the logged-in one; ``False``: none).
        local_files_only: use the caches only (as ``HF_HUB_OFFLINE=1``).
        force_download: download again (and, for registered names, convert again).

    Raises:
        NotCachedError: offline and not cached; the message says how to get it.
        HubNetworkError: the Hub could not be reached (one attempt, ``SEGCORE_HUB_TIMEOUT`` seconds at most).
        CheckpointError: the source does not exist or does not match, said in words.
    """
    f = _Fetch(revision, cache_dir, token, local_files_only, force_download)
    text = str(name_or_path)
    local = Path(text).expanduser()
    if local.is_dir():
        return _load_folder(local, map_location)
    registered = components("checkpoints")
    if text in registered:
        return _from_registered(text, registered[text], f, map_location)
    looks_local = text.startswith((".", "/", "~")) or os.sep in text.strip("/").replace("/", "", 1) or local.exists()
    if looks_local or text.count("/") != 1:
        models = ", ".join(sorted(n for n, s in registered.items() if s.kind == "model")) or "(none)"
        raise CheckpointError(
            f"{text!r} is not a model folder, a registered checkpoint or a Hub repo id (org/name); "
            f"registered checkpoints: {models}"
        )
    source = text + (f"@{revision}" if revision else "")
    return _load_folder(_download_repo(text, f), map_location, source=source)


def load_pretrained_encoder_state(
    name: str, encoder: str | None = None, *, revision: str | None = None, token: str | bool | None = None
) -> dict[str, Tensor]:
    """Encoder weights (segcore keys) from a registered ``kind="encoder"`` checkpoint, a Hub repo or a folder.

    A Hub repo or folder may hold segcore encoder weights (``model.safetensors``) or a transformers model whose
    encoder segcore has (the Hub's MiT ImageNet encoders ``nvidia/mit-b0`` ... ``nvidia/mit-b5``).

    Args:
        name: registered name (``mit-b0-imagenet``), Hub repo id or folder.
        encoder: the encoder the weights are for (needed for transformers repos and folders).
        revision: Hub revision of a repo id.
        token: Hub token.
    """
    from safetensors.torch import load_file

    f = _Fetch(revision=revision, token=token)
    registered = components("checkpoints")
    if name not in registered:
        local = Path(name).expanduser()
        folder = local if local.is_dir() else None
        if folder is None:
            if name.count("/") != 1:
                raise CheckpointError(f"no registered checkpoint {name!r}; see `segcore list --kind checkpoints`")
            folder = _download_repo(name, f)
        data = _read_json(folder / CONFIG_NAME) if (folder / CONFIG_NAME).is_file() else {}
        if is_transformers_config(data):
            if encoder is None:
                raise CheckpointError(f"{name}: say which encoder the transformers weights are for (encoder=...)")
            return encoder_state_from_transformers(data, read_weights(folder), encoder)
        return load_file(str(folder / WEIGHTS_NAME))
    spec: CheckpointSpec = registered[name]
    cached = cache_dir() / "converted" / name / WEIGHTS_NAME
    if cached.is_file():
        return load_file(str(cached))
    hub = dataclasses.replace(f, revision=revision or spec.revision)
    try:
        path = _hub_file(spec.repo_id, WEIGHTS_NAME, _probe(spec.repo_id, WEIGHTS_NAME, hub))
        assert path is not None
        return load_file(str(path))
    except (NotCachedError, HubNetworkError):
        raise
    except CheckpointError as err:
        if not (spec.official_url or spec.manual_step):
            raise CheckpointError(f"{name}: cannot fetch {spec.repo_id}@{spec.revision}: {err}") from err
    from safetensors.torch import save_file

    from segcore.convert import convert_component, load_state_dict_file

    official = _fetch_official(spec, name)
    state = convert_component(spec.format, spec.encoder, load_state_dict_file(official))
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(f".{WEIGHTS_NAME}.tmp")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata={"format": "pt", "library": "segcore"})
    _replace(tmp, cached)
    return state


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
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision and revision != "main" and not create_pr:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="segcore-push-") as tmp:
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

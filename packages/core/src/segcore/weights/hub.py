"""Model folders on the Hugging Face Hub: downloads, offline use, time-outs and pushes.

A Hub repo is downloaded into huggingface_hub's cache and read as a local folder by
:mod:`segcore.weights.pretrained` (segcore's format, or a transformers one converted on the fly); a push uploads the
folder :func:`~segcore.weights.pretrained.save_pretrained` writes. Registered checkpoint names are
:mod:`segcore.weights.checkpoints`' business; this module knows repos only and never imports the model.

Hub access follows huggingface_hub: ``revision``, ``token``, ``cache_dir``, ``local_files_only`` and
``force_download`` mean what they mean there (:class:`Fetch`), and ``HF_HUB_OFFLINE=1`` forbids every download.
A network failure is reported after one attempt, within ``SEGCORE_HUB_TIMEOUT`` seconds (default 5), instead of
huggingface_hub's five retries.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from segcore.errors import CheckpointError, HubNetworkError, NotCachedError
from segcore.weights.cards import CARD_NAME
from segcore.weights.pretrained import CONFIG_NAME, WEIGHTS_NAME, read_json, save_pretrained
from segcore.weights.transformers_format import PREPROCESSOR_NAME, WEIGHT_FILES, is_transformers_config

if TYPE_CHECKING:
    from segcore.models.model import SegModel

__all__ = [
    "Fetch",
    "download_repo",
    "hub_file",
    "probe",
    "push_to_hub",
    "segcore_cache_dir",
    "offline",
    "network_timeout",
    "is_network_error",
    "network_failure",
    "hub_network",
]

logger = logging.getLogger(__name__)


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

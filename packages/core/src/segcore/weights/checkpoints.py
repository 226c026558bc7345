"""Named checkpoints: a registered name -> its Hub copy, or its official file -> verify -> convert -> cache.

A registered model checkpoint (``segcore_checkpoints``, ``kind="model"``) resolves to its Hub repo at the pinned
revision; when that repo does not exist, the official file is downloaded (one attempt, with progress), its
SHA-256 verified, converted with the plugin's converter and cached as a normal ``from_pretrained`` folder under
:func:`~segcore.weights.hub.segcore_cache_dir` (``converted/<name>``). ``HF_HUB_OFFLINE=1`` forbids the official
download
too. Encoder checkpoints (``kind="encoder"``) resolve the same way to a state dict, which
:func:`load_pretrained_encoder` loads: the one helper through which encoders get pretrained weights.

:func:`from_pretrained` is what :meth:`SegModel.from_pretrained <segcore.models.model.SegModel>` runs: a folder, a
registered name or a Hub repo id. Models are built through the class it is given, so this module sits below
the model and never imports it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn

from segcore.data.storage import replace_file
from segcore.errors import CheckpointError, HubNetworkError, NotCachedError
from segcore.models.model_config import SegModelConfig
from segcore.plugins.registry import components
from segcore.weights.convert import convert_component, load_official
from segcore.weights.hub import (
    Fetch,
    download_repo,
    hub_file,
    is_network_error,
    network_timeout,
    offline,
    probe,
    segcore_cache_dir,
)
from segcore.weights.pretrained import CONFIG_NAME, WEIGHTS_NAME, load_folder, read_json, save_pretrained, save_weights
from segcore.weights.state_dict import load_state_dict_file, load_strict
from segcore.weights.transformers_format import encoder_state_from_transformers, is_transformers_config, read_weights

if TYPE_CHECKING:
    from segcore.models.model import SegModel
    from segcore.plugins.specs import CheckpointSpec

__all__ = [
    "from_pretrained",
    "source_kind",
    "checkpoint_config",
    "convert_registered",
    "load_pretrained_encoder_state",
    "load_pretrained_encoder",
]

logger = logging.getLogger(__name__)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(url: str, target: Path, name: str, fmt: str) -> None:
    """Download ``url`` to ``target`` in one attempt, with a progress bar; a failure leaves nothing behind."""
    from tqdm.auto import tqdm

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".part")
    try:
        # One attempt; the timeout bounds connecting and each read (a stalled server fails, a slow one does not).
        with urllib.request.urlopen(url, timeout=max(network_timeout(), 30)) as response:  # noqa: S310
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
        error = HubNetworkError if is_network_error(err) else CheckpointError
        raise error(
            f"{name}: cannot download {url}: {err}. Download it by hand and run `segcore convert --format {fmt} ...`"
        ) from err
    replace_file(tmp, target)


def _verify(target: Path, sha256: str, name: str) -> None:
    """Check the SHA-256 (or its prefix) of ``target``; a mismatch moves the file aside as ``.corrupt``."""
    digest = _sha256(target)
    if not digest.startswith(sha256.lower()):
        bad = target.with_suffix(target.suffix + ".corrupt")
        os.replace(target, bad)
        raise CheckpointError(
            f"{name}: {target.name} has SHA-256 {digest[:16]}..., expected {sha256}...; moved it to {bad}. "
            "Download again."
        )


def _fetch_official(spec: CheckpointSpec, name: str, root: Path | None = None) -> Path:
    """Download the official file of ``spec`` into the cache (with progress) and verify its checksum."""
    if spec.manual_step:
        raise CheckpointError(f"{name}: the official file cannot be downloaded automatically. {spec.manual_step}")
    if not spec.official_url:
        raise CheckpointError(f"{name}: no Hub copy could be reached and no official URL is registered")
    filename = spec.official_filename or spec.official_url.rsplit("/", 1)[-1]
    target = (root or segcore_cache_dir()) / "downloads" / filename
    if not target.is_file():
        if offline():
            raise NotCachedError(
                f"{name} is not cached and HF_HUB_OFFLINE=1 forbids downloading it: neither its Hub copy "
                f"{spec.repo_id} nor the official file is here. Get it once with network access (unset "
                f"HF_HUB_OFFLINE and load it again), or download {spec.official_url} by hand and run "
                f"`segcore convert --format {spec.format} FILE --out DIR` (then load DIR)."
            )
        _download(spec.official_url, target, name, spec.format)
    if spec.sha256:
        _verify(target, spec.sha256, name)
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


def convert_registered(
    model_cls: type[SegModel], name: str, spec: CheckpointSpec, official_file: str | Path | None = None
) -> SegModel:
    """Convert the official file of the registered model checkpoint ``name`` (downloaded and verified if not given).

    The model's config is :func:`checkpoint_config`'s: the paper's eval protocol and the weights' provenance.

    Args:
        model_cls: the model class to build (:class:`~segcore.models.model.SegModel`).
        name: the registered name.
        spec: its checkpoint spec.
        official_file: the official file, when it is already here.
    """
    official = Path(official_file) if official_file is not None else _fetch_official(spec, name)
    config = checkpoint_config(name, spec)
    extra = config.pop("extra")
    state = load_state_dict_file(official)
    model = model_cls(SegModelConfig.from_names(spec.encoder, spec.decoder, spec.num_classes, **config))
    load_official(model, state, spec.format, official)
    model.config.extra.update(extra)
    return model


def _converted_dir(name: str, f: Fetch) -> Path:
    root = Path(f.cache_dir).expanduser() / "segcore" if f.cache_dir is not None else segcore_cache_dir()
    return root / "converted" / name


def source_kind(name_or_path: str | Path) -> Literal["folder", "registered", "hub"]:
    """What a model source names: a local ``folder``, a ``registered`` model checkpoint or a ``hub`` repo id.

    The one decision :func:`from_pretrained` and ``segcore train --init-from`` (its dry run too) take, so that a
    path that a real run refuses is refused without downloading anything.

    Raises:
        CheckpointError: a path that is no folder (``./nonexistent``, a file), a registered encoder checkpoint,
            or a name that is no Hub repo id (``org/name``).
    """
    text = str(name_or_path)
    local = Path(text).expanduser()
    if local.is_dir():
        return "folder"
    registered = components("checkpoints")
    if text in registered:
        if registered[text].kind != "model":
            raise CheckpointError(
                f"{text!r} holds encoder weights only; use it with build_model(pretrained_encoder=True)"
            )
        return "registered"
    looks_local = text.startswith((".", "/", "~")) or os.sep in text.strip("/").replace("/", "", 1) or local.exists()
    if looks_local or text.count("/") != 1:
        models = ", ".join(sorted(n for n, s in registered.items() if s.kind == "model")) or "(none)"
        what = ": it is a file, not a folder" if local.exists() else ": no such folder" if looks_local else ""
        raise CheckpointError(
            f"{text!r} is not a model folder, a registered checkpoint or a Hub repo id (org/name){what}; "
            f"registered checkpoints: {models}"
        )
    return "hub"


def _from_registered(
    model_cls: type[SegModel], name: str, spec: CheckpointSpec, f: Fetch, map_location: str | torch.device
) -> SegModel:
    converted = _converted_dir(name, f)
    if converted.is_dir() and not f.force_download:
        return load_folder(model_cls, converted, map_location)
    hub = dataclasses.replace(f, revision=f.revision or spec.revision)
    try:
        return load_folder(model_cls, download_repo(spec.repo_id, hub), map_location, source=spec.repo_id)
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
    model = convert_registered(model_cls, name, spec, _fetch_official(spec, name, converted.parent.parent))
    save_pretrained(model, converted)
    logger.warning("segcore: cached converted %s at %s", name, converted)
    return model.eval().to(map_location)


def from_pretrained(
    model_cls: type[SegModel],
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
        model_cls: the model class to build (:meth:`SegModel.from_pretrained <segcore.models.model.SegModel>` passes
        itself).
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
    f = Fetch(revision, cache_dir, token, local_files_only, force_download)
    text = str(name_or_path)
    kind = source_kind(text)
    if kind == "folder":
        return load_folder(model_cls, Path(text).expanduser(), map_location)
    if kind == "registered":
        return _from_registered(model_cls, text, components("checkpoints")[text], f, map_location)
    source = text + (f"@{revision}" if revision else "")
    return load_folder(model_cls, download_repo(text, f), map_location, source=source)


def _encoder_state_from_folder(name: str, encoder: str | None, f: Fetch) -> dict[str, Tensor]:
    """Encoder weights from a local folder or a Hub repo (segcore's ``model.safetensors`` or a transformers model)."""
    from safetensors.torch import load_file

    local = Path(name).expanduser()
    folder = local if local.is_dir() else None
    if folder is None:
        if name.count("/") != 1:
            raise CheckpointError(f"no registered checkpoint {name!r}; see `segcore list --kind checkpoints`")
        folder = download_repo(name, f)
    data = read_json(folder / CONFIG_NAME) if (folder / CONFIG_NAME).is_file() else {}
    if is_transformers_config(data):
        if encoder is None:
            raise CheckpointError(f"{name}: say which encoder the transformers weights are for (encoder=...)")
        return encoder_state_from_transformers(data, read_weights(folder), encoder)
    return load_file(str(folder / WEIGHTS_NAME))


def _encoder_state_registered(name: str, spec: CheckpointSpec, f: Fetch) -> dict[str, Tensor]:
    """A registered encoder checkpoint: the converted cache, else its Hub copy, else the official file converted."""
    from safetensors.torch import load_file

    cached = segcore_cache_dir() / "converted" / name / WEIGHTS_NAME
    if cached.is_file():
        return load_file(str(cached))
    hub = dataclasses.replace(f, revision=f.revision or spec.revision)
    try:
        path = hub_file(spec.repo_id, WEIGHTS_NAME, probe(spec.repo_id, WEIGHTS_NAME, hub))
        assert path is not None
        return load_file(str(path))
    except (NotCachedError, HubNetworkError):
        raise
    except CheckpointError as err:
        if not (spec.official_url or spec.manual_step):
            raise CheckpointError(f"{name}: cannot fetch {spec.repo_id}@{spec.revision}: {err}") from err
    official = _fetch_official(spec, name)
    state = convert_component(spec.format, spec.encoder, load_state_dict_file(official))
    cached.parent.mkdir(parents=True, exist_ok=True)
    save_weights({k: v.contiguous() for k, v in state.items()}, cached)
    return state


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
    f = Fetch(revision=revision, token=token)
    registered = components("checkpoints")
    if name in registered:
        return _encoder_state_registered(name, registered[name], f)
    return _encoder_state_from_folder(name, encoder, f)


def load_pretrained_encoder(
    module: nn.Module, encoder: str, source: bool | str | Mapping[str, Tensor] = True
) -> nn.Module:
    """Fill an encoder with pretrained weights, strictly: the one way encoder factories get them.

    What ``build_model(..., pretrained_encoder=...)``, ``segcore train --pretrained-encoder [SOURCE]`` and a
    factory's ``pretrained`` argument come down to.

    Args:
        module: the encoder, freshly built.
        encoder: its registered name (``mit-b0``); a transformers source is converted for it.
        source: ``True`` for its registered ImageNet weights (``<encoder>-imagenet``); a string names a
            registered checkpoint, a Hub repo (the transformers MiT encoders ``nvidia/mit-b0`` ... ``b5``
            included) or a folder; a state dict is weights the factory got elsewhere (timm's), in segcore keys.

    Returns:
        ``module``, loaded.

    Raises:
        CheckpointError: the source cannot be read, or its tensors do not match the encoder (listed by module).

    Example:
        >>> encoder = load_pretrained_encoder(mit_b0(), "mit-b0", "nvidia/mit-b0")  # doctest: +SKIP
    """
    if isinstance(source, Mapping):
        load_strict(module, source, source=f"{encoder} pretrained weights")
        return module
    name = source if isinstance(source, str) else f"{encoder}-imagenet"
    load_strict(module, load_pretrained_encoder_state(name, encoder=encoder), source=name)
    return module

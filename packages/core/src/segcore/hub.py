"""Weights on disk and on the Hugging Face Hub: ``config.json`` + ``model.safetensors`` + a model card.

No pickle is ever loaded from the Hub and no remote code runs: a model is rebuilt from ``config.json``
through the registry, then filled strictly from safetensors. A registered checkpoint name resolves to
its Hub repo; when that repo cannot be reached, the official file is downloaded, verified, converted
with the plugin's converter and cached as a normal ``from_pretrained`` folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from segcore.convert import load_strict
from segcore.errors import CheckpointError
from segcore.registry import components

if TYPE_CHECKING:
    from segcore.model import SegModel
    from segcore.specs import CheckpointSpec

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "save_pretrained",
    "from_pretrained",
    "push_to_hub",
    "model_card",
    "load_pretrained_encoder_state",
    "cache_dir",
]

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"


def cache_dir() -> Path:
    """Where converted official checkpoints are cached (``$SEGCORE_CACHE`` or ``~/.cache/segcore``)."""
    return Path(os.environ.get("SEGCORE_CACHE", Path.home() / ".cache" / "segcore"))


# ------------------------------------------------------------------------------------------------------------ save
def model_card(model: SegModel) -> str:
    """Return a model card (``README.md``) describing the model's config, classes and provenance."""
    cfg = model.config
    params = sum(p.numel() for p in model.parameters())
    extra = cfg.extra or {}
    lines = [
        "---",
        "library_name: segcore",
        "tags:",
        "- semantic-segmentation",
        "- segcore",
        f"- {cfg.encoder.replace(':', '-')}",
        f"- {cfg.decoder}",
        "---",
        "",
        f"# {extra.get('name', f'{cfg.encoder} + {cfg.decoder}')}",
        "",
        f"A [segcore](https://github.com/segcore/segcore) semantic segmentation model: encoder `{cfg.encoder}`, "
        f"decoder `{cfg.decoder}`, {cfg.num_classes} classes, {params / 1e6:.3f} M parameters.",
        "",
        "## How it was made",
        "",
    ]
    for key in ("source", "converted_from", "dataset", "recipe", "metric", "eval_protocol", "converter"):
        if key in extra:
            value = extra[key]
            lines.append(f"- **{key.replace('_', ' ')}**: {json.dumps(value) if isinstance(value, dict) else value}")
    if len(lines) and lines[-1] == "":
        lines.append("- built with `segcore` (see `config.json`)")
    lines += [
        "",
        "## Usage",
        "",
        "```python",
        "import segcore",
        f'model = segcore.SegModel.from_pretrained("{extra.get("repo_id", "<this repo or folder>")}")',
        "labels = model.predict(images)  # images: uint8 [B, 3, H, W]",
        "```",
        "",
        "## Config",
        "",
        "```json",
        json.dumps(cfg.to_dict(), indent=2),
        "```",
    ]
    if cfg.class_names:
        lines += ["", "## Classes", "", ", ".join(f"{i}: {n}" for i, n in enumerate(cfg.class_names))]
    return "\n".join(lines) + "\n"


def _tensors_for_saving(model: SegModel) -> dict[str, Tensor]:
    # Clone so that tied or strided views become independent contiguous tensors safetensors accepts.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def save_pretrained(model: SegModel, save_directory: str | Path, model_card: str | None = None) -> Path:
    """Write ``config.json``, ``model.safetensors`` and ``README.md`` into ``save_directory`` (atomically per file).

    Returns:
        The directory.
    """
    from safetensors.torch import save_file

    out = Path(save_directory)
    out.mkdir(parents=True, exist_ok=True)
    card = model_card if model_card is not None else globals()["model_card"](model)
    files = {
        CONFIG_NAME: (json.dumps(model.config.to_dict(), indent=2) + "\n").encode(),
        CARD_NAME: card.encode(),
    }
    for name, data in files.items():
        tmp = out / f".{name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, out / name)
    tmp = out / f".{WEIGHTS_NAME}.tmp"
    save_file(_tensors_for_saving(model), str(tmp), metadata={"format": "pt", "library": "segcore"})
    os.replace(tmp, out / WEIGHTS_NAME)
    return out


# ------------------------------------------------------------------------------------------------------------ load
def _load_folder(folder: Path, map_location: str | torch.device = "cpu") -> SegModel:
    from safetensors.torch import load_file

    from segcore.model import SegModel, SegModelConfig

    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise CheckpointError(
                f"{folder} is not a segcore model folder: {path.name} is missing (a folder written by "
                "save_pretrained or segcore train holds config.json and model.safetensors)"
            )
    try:
        config = SegModelConfig.from_dict(json.loads(config_path.read_text()))
    except (json.JSONDecodeError, TypeError) as err:
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


def _hub_errors() -> tuple[type[Exception], ...]:
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    return (
        RepositoryNotFoundError,
        RevisionNotFoundError,
        EntryNotFoundError,
        LocalEntryNotFoundError,
        HfHubHTTPError,
        OSError,
    )


def _download_repo(repo_id: str, revision: str | None, cache: str | Path | None) -> Path:
    """Download config and weights of a Hub repo and return the local folder holding them."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    folder: Path | None = None
    for filename in (CONFIG_NAME, WEIGHTS_NAME):
        try:
            path = hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache)
        except RepositoryNotFoundError as err:
            raise CheckpointError(
                f"Hub repo {repo_id!r} not found at {constants.ENDPOINT} (revision {revision or 'main'}): check the "
                "id, log in for a private repo (hf auth login), or pass a local folder or a registered "
                "checkpoint name (segcore list --kind checkpoints)"
            ) from err
        except RevisionNotFoundError as err:
            raise CheckpointError(f"Hub repo {repo_id!r} has no revision {revision!r}") from err
        except EntryNotFoundError as err:
            raise CheckpointError(
                f"Hub repo {repo_id!r} has no {filename}: it is not a segcore model repo (expected config.json and "
                "model.safetensors written by save_pretrained/push_to_hub)"
            ) from err
        folder = Path(path).parent
    assert folder is not None
    return folder


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch_official(spec: CheckpointSpec, name: str) -> Path:
    """Download the official file of ``spec`` into the cache (with progress) and verify its checksum."""
    if spec.manual_step:
        raise CheckpointError(f"{name}: the official file cannot be downloaded automatically. {spec.manual_step}")
    if not spec.official_url:
        raise CheckpointError(f"{name}: no Hub copy could be reached and no official URL is registered")
    target = cache_dir() / "downloads" / (spec.official_filename or spec.official_url.rsplit("/", 1)[-1])
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        from tqdm.auto import tqdm

        tmp = target.with_suffix(target.suffix + ".part")
        try:
            with urllib.request.urlopen(spec.official_url, timeout=60) as response, tmp.open("wb") as fh:  # noqa: S310
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {target.name}") as bar:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        fh.write(block)
                        bar.update(len(block))
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise CheckpointError(
                f"{name}: cannot download {spec.official_url}: {err}. Download it by hand and run "
                f"`segcore convert --format {spec.format} ...`"
            ) from err
        os.replace(tmp, target)
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


def checkpoint_config(name: str, spec: CheckpointSpec) -> dict[str, Any]:
    """The :class:`SegModelConfig` fields a registered model checkpoint's converted model gets.

    Besides the architecture, the config records the paper's eval protocol (``eval``, typed), so that ``segcore
    eval`` runs the paper's test pipeline by default, and where the weights come from (``extra``), which the model
    card states.
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


def _convert_registered(name: str, spec: CheckpointSpec, folder: Path) -> SegModel:
    logger.warning("segcore: converting the official %s checkpoint (Hub copy unavailable)", name)
    model = convert_registered(name, spec)
    save_pretrained(model, folder)
    logger.warning("segcore: cached converted %s at %s", name, folder)
    return model.eval()


def from_pretrained(
    name_or_path: str | Path,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    map_location: str | torch.device = "cpu",
) -> SegModel:
    """Load a :class:`SegModel` from a local folder, a registered checkpoint name or a Hub repo id.

    Raises:
        CheckpointError: the source does not exist or does not match, said in words.
    """
    text = str(name_or_path)
    local = Path(text).expanduser()
    if local.is_dir():
        return _load_folder(local, map_location)
    registered = components("checkpoints")
    if text in registered:
        spec: CheckpointSpec = registered[text]
        if spec.kind != "model":
            raise CheckpointError(
                f"{text!r} holds encoder weights only; use it with build_model(pretrained_encoder=True)"
            )
        converted = globals()["cache_dir"]() / "converted" / text
        if converted.is_dir():
            return _load_folder(converted, map_location)
        try:
            return _load_folder(_download_repo(spec.repo_id, revision or spec.revision, cache_dir), map_location)
        except CheckpointError:
            if not (spec.official_url or spec.manual_step):
                raise
        return _convert_registered(text, spec, converted).to(map_location)
    looks_local = text.startswith((".", "/", "~")) or os.sep in text.strip("/").replace("/", "", 1) or local.exists()
    if looks_local or text.count("/") != 1:
        models = ", ".join(sorted(n for n, s in registered.items() if s.kind == "model")) or "(none)"
        raise CheckpointError(
            f"{text!r} is not a model folder, a registered checkpoint or a Hub repo id (org/name); "
            f"registered checkpoints: {models}"
        )
    return _load_folder(_download_repo(text, revision, cache_dir), map_location)


def load_pretrained_encoder_state(name: str) -> dict[str, Tensor]:
    """Return the encoder weights of the registered ``kind="encoder"`` checkpoint ``name`` (segcore keys)."""
    from huggingface_hub import hf_hub_download
    from safetensors.torch import load_file

    registered = components("checkpoints")
    if name not in registered:
        raise CheckpointError(f"no registered checkpoint {name!r}; see `segcore list --kind checkpoints`")
    spec: CheckpointSpec = registered[name]
    cached = globals()["cache_dir"]() / "converted" / name / WEIGHTS_NAME
    if cached.is_file():
        return load_file(str(cached))
    try:
        return load_file(hf_hub_download(spec.repo_id, WEIGHTS_NAME, revision=spec.revision))
    except _hub_errors() as err:
        if not (spec.official_url or spec.manual_step):
            raise CheckpointError(f"{name}: cannot fetch {spec.repo_id}@{spec.revision}: {err}") from err
    from safetensors.torch import save_file

    from segcore.convert import convert_component, load_state_dict_file

    official = _fetch_official(spec, name)
    state = convert_component(spec.format, spec.encoder, load_state_dict_file(official))
    cached.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(cached))
    return state


# ------------------------------------------------------------------------------------------------------------ push
def push_to_hub(
    model: SegModel,
    repo_id: str,
    private: bool = False,
    commit_message: str = "Upload segcore model",
    token: str | None = None,
    revision: str | None = None,
) -> str:
    """Create ``repo_id`` if needed and upload the model's ``from_pretrained`` folder; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    model.config.extra.setdefault("repo_id", repo_id)
    with tempfile.TemporaryDirectory(prefix="segcore-push-") as tmp:
        save_pretrained(model, tmp)
        info = api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message, revision=revision)
    return str(getattr(info, "commit_url", info))


def copy_folder(src: Path, dst: Path) -> None:
    """Copy a ``from_pretrained`` folder (config, weights, card)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME):
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)

"""Test helpers: a tiny Hugging Face Hub look-alike served on 127.0.0.1, and a ``torch.compile`` check.

:func:`serve_hub` serves folders as Hub model repos to the real ``huggingface_hub`` client (downloads
through ``/resolve/``, repo info, and uploads of small files through ``preupload``/``commit``), so
``from_pretrained`` and ``push_to_hub`` are tested without a network. It also serves plain files under
``/files/<name>`` to stand in for official download URLs. :func:`compare_compiled` runs a model compiled
and eagerly on the same inputs, for each package's compile tests. :func:`perturb_norms` moves every norm
away from its initial identity, so that logits-match tests notice a norm that is skipped or misplaced.
:func:`register_tiny_shapes` registers ``tiny-shapes``, a 4-class dataset of coloured rectangles, so that
training, evaluation and CLI tests need no dataset plugin; :func:`write_image` and :func:`write_label` write the
tiny files of dataset layouts.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from segcore.plugins.hookspecs import hookimpl
from segcore.plugins.specs import ComponentSpec

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from segcore.train import TrainSettings

__all__ = [
    "serve_hub",
    "LocalHub",
    "compare_compiled",
    "perturb_norms",
    "TinyShapes",
    "TINY_MODEL",
    "register_tiny_shapes",
    "unregister_tiny_shapes",
    "tiny_run",
    "write_image",
    "write_label",
]

_REVISION_SHA = "0" * 40


class LocalHub:
    """Repos and files served by :func:`serve_hub`.

    Attributes:
        root: directory holding one sub-folder per repo (``root/<org>/<name>/``) and ``root/_files/``.
        endpoint: the base URL (``http://127.0.0.1:<port>``).
        requests: every ``(method, path)`` served, for assertions.
        authorizations: the ``Authorization`` header of each request (``None`` when absent), in order.
        commits: one dict per commit: ``repo``, ``revision``, ``summary``, ``description``, ``create_pr``, ``files``.
        branches: ``(repo, branch)`` of every branch created.
        pull_requests: one dict per pull request opened (``repo``, ``title``, ``description``).
    """

    def __init__(self, root: Path, endpoint: str = "") -> None:
        """Serve from ``root``."""
        self.root = root
        self.endpoint = endpoint
        self.requests: list[tuple[str, str]] = []
        self.authorizations: list[str | None] = []
        self.commits: list[dict] = []
        self.branches: list[tuple[str, str]] = []
        self.pull_requests: list[dict] = []

    def add_repo(self, repo_id: str, folder: str | Path) -> None:
        """Copy ``folder`` in as repo ``repo_id``."""
        shutil.copytree(folder, self.root / repo_id, dirs_exist_ok=True)

    def add_file(self, name: str, path: str | Path) -> str:
        """Serve ``path`` at ``<endpoint>/files/<name>`` and return that URL."""
        target = self.root / "_files" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        return f"{self.endpoint}/files/{name}"

    def repo_dir(self, repo_id: str) -> Path:
        """Folder of repo ``repo_id``."""
        return self.root / repo_id


def _handler(hub: LocalHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - silence
            pass

        def _send(self, code: int, body: bytes = b"", headers: Mapping[str, str] | None = None) -> None:
            self.send_response(code)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, data: object, code: int = 200) -> None:
            self._send(code, json.dumps(data).encode(), {"Content-Type": "application/json"})

        def _error(self, code: int, error_code: str, message: str) -> None:
            self._send(
                code,
                json.dumps({"error": message}).encode(),
                {"Content-Type": "application/json", "X-Error-Code": error_code, "X-Error-Message": message},
            )

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _resolve(self, parts: list[str]) -> None:
            # /{org}/{name}/resolve/{revision}/{path...}
            i = parts.index("resolve")
            repo_id = "/".join(parts[:i])
            filename = "/".join(parts[i + 2 :])
            repo = hub.repo_dir(repo_id)
            if not repo.is_dir():
                return self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            path = repo / filename
            if not path.is_file():
                return self._error(404, "EntryNotFound", f"{filename} does not exist in {repo_id}")
            data = path.read_bytes()
            etag = hashlib.sha256(data).hexdigest()
            headers = {"ETag": f'"{etag}"', "X-Repo-Commit": _REVISION_SHA, "Content-Type": "application/octet-stream"}
            self._send(200, data, headers)

        def _repo_info(self, repo_id: str) -> None:
            repo = hub.repo_dir(repo_id)
            if not repo.is_dir():
                return self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            files = sorted(str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file())
            self._json(
                {
                    "id": repo_id,
                    "modelId": repo_id,
                    "sha": _REVISION_SHA,
                    "private": False,
                    "siblings": [{"rfilename": f} for f in files],
                }
            )

        def do_HEAD(self) -> None:  # noqa: N802
            self.do_GET()

        def do_GET(self) -> None:  # noqa: N802
            path = unquote(urlsplit(self.path).path)
            hub.requests.append((self.command, path))
            hub.authorizations.append(self.headers.get("Authorization"))
            parts = [p for p in path.split("/") if p]
            if parts[:1] == ["files"]:
                target = hub.root / "_files" / "/".join(parts[1:])
                if not target.is_file():
                    return self._send(404, b"not found")
                return self._send(200, target.read_bytes(), {"Content-Type": "application/octet-stream"})
            if "resolve" in parts:
                return self._resolve(parts)
            if parts[:2] == ["api", "models"] and len(parts) >= 4 and parts[-2] == "discussions":
                num = int(parts[-1])
                pr = hub.pull_requests[num - 1]
                return self._json(
                    {
                        "num": num,
                        "title": pr.get("title", ""),
                        "status": "open",
                        "createdAt": "2024-01-01T00:00:00.000Z",
                        "repo": {"name": pr["repo"], "type": "model"},
                        "isPullRequest": True,
                        "events": [],
                        "changes": {"base": "refs/heads/main"},
                        "filesWithConflicts": [],
                    }
                )
            if parts[:2] == ["api", "models"]:
                repo_parts = parts[2:]
                if "revision" in repo_parts:
                    repo_parts = repo_parts[: repo_parts.index("revision")]
                return self._repo_info("/".join(repo_parts))
            self._error(404, "NotFound", f"{path} not served")

        def do_POST(self) -> None:  # noqa: N802
            url = urlsplit(self.path)
            path = unquote(url.path)
            hub.requests.append((self.command, path))
            hub.authorizations.append(self.headers.get("Authorization"))
            parts = [p for p in path.split("/") if p]
            body = self._body()
            if parts[:2] == ["api", "models"] and parts[-1] == "discussions":  # a pull request (create_pr)
                repo_id = "/".join(parts[2:-1])
                hub.pull_requests.append({"repo": repo_id, **json.loads(body or b"{}")})
                return self._json({"num": len(hub.pull_requests)})
            if parts[:2] == ["api", "models"] and "branch" in parts:
                i = parts.index("branch")
                hub.branches.append(("/".join(parts[2:i]), "/".join(parts[i + 1 :])))
                return self._json({})
            if parts == ["api", "validate-yaml"]:
                return self._json({"errors": [], "warnings": []})
            if parts == ["api", "repos", "create"]:
                payload = json.loads(body or b"{}")
                repo_id = (
                    f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
                )
                hub.repo_dir(repo_id).mkdir(parents=True, exist_ok=True)
                return self._json({"url": f"{hub.endpoint}/{repo_id}", "name": repo_id, "id": repo_id})
            if parts[:2] == ["api", "models"] and "preupload" in parts:
                files = json.loads(body or b"{}").get("files", [])
                return self._json(
                    {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
                )
            if parts[:2] == ["api", "models"] and "commit" in parts:
                i = parts.index("commit")
                repo_id = "/".join(parts[2:i])
                repo = hub.repo_dir(repo_id)
                create_pr = "create_pr=1" in (url.query or "") or "refs/pr/" in "/".join(parts[i + 1 :])
                commit = {"repo": repo_id, "revision": "/".join(parts[i + 1 :]), "create_pr": create_pr, "files": []}
                for line in body.splitlines():
                    item = json.loads(line)
                    if item.get("key") == "header":
                        commit["summary"] = item["value"].get("summary")
                        commit["description"] = item["value"].get("description")
                    if item.get("key") == "file":
                        value = item["value"]
                        commit["files"].append(value["path"])
                        target = repo / value["path"]
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_bytes(base64.b64decode(value["content"]))
                hub.commits.append(commit)
                answer = {
                    "commitUrl": f"{hub.endpoint}/{repo_id}/commit/{_REVISION_SHA}",
                    "commitOid": _REVISION_SHA,
                    "success": True,
                }
                if create_pr:
                    answer["pullRequestUrl"] = f"{hub.endpoint}/{repo_id}/discussions/{len(hub.commits)}"
                return self._json(answer)
            self._error(404, "NotFound", f"{path} not served")

    return Handler


@contextlib.contextmanager
def serve_hub(repos: Mapping[str, str | Path] | None = None) -> Iterator[LocalHub]:
    """Serve ``repos`` (``repo_id -> folder``) as a Hub on 127.0.0.1 and point ``huggingface_hub`` at it.

    Sets ``HF_ENDPOINT`` (and the already imported ``huggingface_hub.constants``), an empty token and a
    temporary ``HF_HOME`` cache for the duration, then restores everything.

    Example:
        >>> with serve_hub({"me/model": "out/"}) as hub:  # doctest: +SKIP
        ...     model = SegModel.from_pretrained("me/model")
    """
    from huggingface_hub import constants

    tmp = Path(tempfile.mkdtemp(prefix="segcore-hub-"))
    hub = LocalHub(tmp / "repos")
    hub.root.mkdir()
    for repo_id, folder in (repos or {}).items():
        hub.add_repo(repo_id, folder)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    hub.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    saved_env = {
        k: os.environ.get(k)
        for k in ("HF_ENDPOINT", "HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "HF_TOKEN", "HF_HUB_DISABLE_TELEMETRY")
    }
    saved_consts = {
        k: getattr(constants, k) for k in ("ENDPOINT", "HUGGINGFACE_CO_URL_TEMPLATE", "HF_HUB_CACHE", "HF_HUB_OFFLINE")
    }
    os.environ.update(
        {
            "HF_ENDPOINT": hub.endpoint,
            "HF_HOME": str(tmp / "home"),
            "HF_HUB_CACHE": str(tmp / "cache"),
            "HF_HUB_OFFLINE": "0",
            "HF_TOKEN": "segcore-test-token",
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }
    )
    constants.ENDPOINT = hub.endpoint
    constants.HUGGINGFACE_CO_URL_TEMPLATE = hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    constants.HF_HUB_CACHE = str(tmp / "cache")
    constants.HF_HUB_OFFLINE = False
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for key, value in saved_consts.items():
            setattr(constants, key, value)
        shutil.rmtree(tmp, ignore_errors=True)


def compare_compiled(
    model: nn.Module,
    sizes: Sequence[tuple[int, int, int]],
    *,
    backend: str = "inductor",
    dynamic: bool | None = None,
    seed: int = 0,
) -> list[tuple[float, float]]:
    """Run ``torch.compile(model)`` and ``model`` (eval mode, no grad) on one random input per ``(B, H, W)``.

    Dynamo's caches are reset first, so every call compiles afresh. With ``dynamic=None`` (torch's default) a
    second size recompiles with dynamic shapes, as it would for a user.

    Returns:
        ``(max abs difference, max abs eager logit)`` per size.

    Example:
        >>> compare_compiled(model, [(1, 64, 64), (2, 96, 80)])  # doctest: +SKIP
        [(1.2e-07, 0.11), (1.5e-07, 0.12)]
    """
    import torch

    torch.compiler.reset()
    model.eval()
    compiled = torch.compile(model, backend=backend, dynamic=dynamic)
    results = []
    with torch.no_grad():
        for i, (b, h, w) in enumerate(sizes):
            x = torch.randn((b, 3, h, w), generator=torch.Generator().manual_seed(seed + i))
            ref, got = model(x), compiled(x)
            if got.shape != ref.shape:
                raise AssertionError(f"compiled output {tuple(got.shape)} != eager {tuple(ref.shape)} at {(b, h, w)}")
            results.append((float((got - ref).abs().max()), float(ref.abs().max())))
    torch.compiler.reset()
    return results


def perturb_norms(model: nn.Module, seed: int = 0, scale: float = 0.3) -> nn.Module:
    """Randomise norms, layer scales and classifiers in place, so that logits-match tests can see them.

    Changes every normalisation layer (affine weights, biases, BatchNorm running statistics), layer-scale parameter
    (``gamma``, ``layer_scale_parameter``) and classifier (``classifier``, ``conv_seg``).
    Freshly initialised norms are identities and classifiers near zero: a converter that drops or swaps them would
    still match. Returns the model.
    """
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(seed)

    def rand(t: torch.Tensor) -> torch.Tensor:
        return torch.randn(t.shape, generator=g, dtype=torch.float32).to(t.dtype)

    with torch.no_grad():
        for name, module in model.named_modules():
            weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
            is_norm = isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase)) or (
                "norm" in type(module).__name__.lower() and isinstance(weight, torch.Tensor) and weight.ndim == 1
            )
            if is_norm and isinstance(weight, torch.Tensor):
                weight.copy_(1 + scale * rand(weight))
                if isinstance(bias, torch.Tensor):
                    bias.copy_(scale * rand(bias))
            if isinstance(module, nn.modules.batchnorm._NormBase) and module.running_mean is not None:
                module.running_mean.copy_(scale * rand(module.running_mean))
                module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=g))
            if name.split(".")[-1] in ("classifier", "conv_seg") and isinstance(weight, torch.Tensor):
                weight.copy_(rand(weight) / weight[0].numel() ** 0.5)
        for name, param in model.named_parameters():
            if name.split(".")[-1] in ("gamma", "layer_scale_parameter"):
                param.copy_(scale * rand(param))
    return model


TINY_SHAPES_PLUGIN = "segcore-testing-tiny-shapes"
#: A model small enough for a training test on CPU (a timm test network and a 16-channel MLP head).
TINY_MODEL = {"encoder": "timm:test_convnext", "decoder": "mlp", "decoder_opt": {"channels": 16}}


class TinyShapes:
    """Coloured rectangles on a dark background, 4 classes, deterministic by index; a few ignore pixels.

    Validation images are 0, 4 or 8 pixels larger than ``size`` (by index), so evaluation sees several sizes.
    """

    classes = ("background", "red", "green", "blue")
    palette = ((0, 0, 0), (220, 20, 60), (20, 200, 20), (30, 60, 230))
    ignore_index = 255

    def __init__(self, root: str | None = None, split: str = "train", size: int = 32, length: int = 16) -> None:
        """``length`` samples of ``size`` x ``size`` pixels; ``root`` is ignored."""
        self.split, self.size, self.length = split, size, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        import numpy as np

        rng = np.random.default_rng([0 if self.split == "train" else 1, i])
        h = w = self.size + (4 * (i % 3) if self.split == "val" else 0)
        image = rng.integers(0, 40, size=(3, h, w), dtype=np.uint8)
        label = np.zeros((h, w), dtype=np.int64)
        for cls in (1, 2, 3):
            y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
            hh, ww = rng.integers(6, h // 2), rng.integers(6, w // 2)
            label[y : y + hh, x : x + ww] = cls
            image[:, y : y + hh, x : x + ww] = np.array(self.palette[cls], dtype=np.uint8)[:, None, None]
        label[0, :3] = 255
        return {"image": image, "label": label, "path": f"tiny/{self.split}/{i}.png"}


def tiny_shapes(root: str | None = None, split: str = "train", **options: int) -> TinyShapes:
    """The ``tiny-shapes`` factory (options: ``size``, ``length``)."""
    return TinyShapes(root, split, **options)


def tiny_run(output_dir: str | Path, **overrides: Any) -> TrainSettings:
    """Settings of a short CPU run of :data:`TINY_MODEL` on ``tiny-shapes`` (register it first), ``overrides`` over.

    Batch 2 of 32x32 crops, lr 1e-3, no progress bar; the test gives ``iters``, ``eval_every`` and the rest.
    """
    from segcore.train import TrainSettings

    base = dict(dataset="tiny-shapes", batch_size=2, crop_size=(32, 32), lr=1e-3, progress=False, **TINY_MODEL)
    return TrainSettings(**{**base, "output_dir": str(output_dir), **overrides})


class _TinyShapesPlugin:
    @hookimpl
    def segcore_datasets(self) -> dict[str, ComponentSpec]:
        return {"tiny-shapes": ComponentSpec(factory=f"{__name__}:tiny_shapes", description="test rectangles")}


def register_tiny_shapes() -> None:
    """Register the ``tiny-shapes`` dataset (again, if it is registered); undo with :func:`unregister_tiny_shapes`.

    Example:
        >>> register_tiny_shapes()  # doctest: +SKIP
        >>> train(TrainSettings(dataset="tiny-shapes", output_dir="run", **TINY_MODEL))  # doctest: +SKIP
        >>> unregister_tiny_shapes()  # doctest: +SKIP
    """
    from segcore.plugins import registry

    registry.unregister_plugin(TINY_SHAPES_PLUGIN)
    registry.register_plugin(_TinyShapesPlugin(), TINY_SHAPES_PLUGIN)


def unregister_tiny_shapes() -> None:
    """Remove the ``tiny-shapes`` dataset registered by :func:`register_tiny_shapes`."""
    from segcore.plugins import registry

    registry.unregister_plugin(TINY_SHAPES_PLUGIN)


def write_image(path: str | Path, h: int = 8, w: int = 12, mode: str = "RGB", seed: int = 0) -> np.ndarray:
    """Write a random ``h`` x ``w`` RGB image, converted to ``mode``, to ``path`` (the format follows the suffix).

    Returns:
        The RGB pixels before the conversion, ``(h, w, 3)`` uint8.
    """
    import numpy as np
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng([seed, h, w]).integers(0, 255, (h, w, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    (image if mode == "RGB" else image.convert(mode)).save(path)
    return pixels


def write_label(path: str | Path, label: np.ndarray, mode: str = "L") -> None:
    """Write ``label`` (values 0-255) as an 8-bit image, a palette image with the same indices for ``mode="P"``."""
    import numpy as np
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.asarray(label).astype(np.uint8))  # 2-D uint8: mode L
    (image.convert("P") if mode == "P" else image).save(path)

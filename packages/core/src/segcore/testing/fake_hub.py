"""A Hugging Face Hub look-alike on 127.0.0.1, for tests of downloads and uploads without a network.

:func:`serve_hub` serves folders as Hub model repos to the real ``huggingface_hub`` client: downloads through
``/resolve/``, repo info, and uploads of small files through ``preupload``/``commit`` (with branches and pull
requests), so ``from_pretrained`` and ``push_to_hub`` are tested end to end. It also serves plain files under
``/files/<name>`` to stand in for official download URLs. The server answers from one route table: a path pattern
and one short method per route (:data:`ROUTES`). The ``local_hub`` fixture of :mod:`segcore.testing.fixtures` is
the same server for one test.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["LocalHub", "ROUTES", "client_settings", "run_server", "serve_hub"]

REVISION_SHA = "0" * 40
_REPO = r"(?P<repo>[^/]+(?:/[^/]+)?)"  # "name" or "org/name"
#: ``(method, path pattern, handler method)``, first match wins; the path has no leading or doubled ``/``.
ROUTES = (
    ("GET", r"files/(?P<name>.+)", "get_file"),
    ("GET", _REPO + r"/resolve/(?P<revision>[^/]+)/(?P<filename>.+)", "get_resolve"),
    ("GET", r"api/models/" + _REPO + r"/discussions/(?P<num>\d+)", "get_pull_request"),
    ("GET", r"api/models/" + _REPO + r"(?:/revision/(?P<revision>.+))?", "get_repo_info"),
    ("POST", r"api/models/" + _REPO + r"/discussions", "post_pull_request"),
    ("POST", r"api/models/" + _REPO + r"/branch/(?P<branch>.+)", "post_branch"),
    ("POST", r"api/validate-yaml", "post_validate_yaml"),
    ("POST", r"api/repos/create", "post_create_repo"),
    ("POST", r"api/models/" + _REPO + r"/preupload/(?P<revision>.+)", "post_preupload"),
    ("POST", r"api/models/" + _REPO + r"/commit/(?P<revision>.+)", "post_commit"),
)
_COMPILED = tuple((method, re.compile(pattern), name) for method, pattern, name in ROUTES)


class LocalHub:
    """Repos and files served by :func:`serve_hub` (or the ``local_hub`` fixture), and what the server was asked.

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

    def add_repo(self, repo_id: str, folder: str | Path) -> Path:
        """Copy ``folder`` in as repo ``repo_id`` (files already there stay unless replaced); return its folder."""
        shutil.copytree(folder, self.root / repo_id, dirs_exist_ok=True)
        return self.root / repo_id

    def add_file(self, name: str, path: str | Path) -> str:
        """Serve ``path`` at ``<endpoint>/files/<name>`` and return that URL."""
        target = self.root / "_files" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        return f"{self.endpoint}/files/{name}"

    def repo_dir(self, repo_id: str) -> Path:
        """Folder of repo ``repo_id``."""
        return self.root / repo_id


class _HubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, hub: LocalHub) -> None:
        super().__init__(("127.0.0.1", 0), _HubHandler)
        self.hub = hub


class _HubHandler(BaseHTTPRequestHandler):
    """One request: recorded on the hub, then answered by the first route of :data:`ROUTES` that matches."""

    protocol_version = "HTTP/1.1"
    server: _HubServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - silence the default stderr log
        """Log nothing."""

    def do_HEAD(self) -> None:  # noqa: N802 - the name http.server calls
        """Answer as GET, without the body (``_send`` leaves it out)."""
        self._dispatch("GET")

    def do_GET(self) -> None:  # noqa: N802
        """Answer a download or a repo query."""
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        """Answer an upload, a branch, a pull request or a repo creation."""
        self._dispatch("POST")

    @property
    def hub(self) -> LocalHub:
        """The hub this server serves."""
        return self.server.hub

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        self.hub.requests.append((self.command, path))
        self.hub.authorizations.append(self.headers.get("Authorization"))
        self.query = url.query or ""
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""  # read always: the connection is kept alive
        key = "/".join(p for p in path.split("/") if p)
        for verb, pattern, name in _COMPILED:
            if verb == method and (match := pattern.fullmatch(key)):
                return getattr(self, name)(**{k: v for k, v in match.groupdict().items() if v is not None})
        self._error(404, "NotFound", f"{path} not served")

    # ---------------------------------------------------------------------------------------------- answers
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
        headers = {"Content-Type": "application/json", "X-Error-Code": error_code, "X-Error-Message": message}
        self._send(code, json.dumps({"error": message}).encode(), headers)

    def _body_json(self) -> Any:
        return json.loads(self.body or b"{}")

    def _repo(self, repo: str) -> Path | None:
        """The folder of ``repo``, or ``None`` after answering 404 ``RepoNotFound``."""
        folder = self.hub.repo_dir(repo)
        if folder.is_dir():
            return folder
        self._error(404, "RepoNotFound", f"Repository {repo} not found")
        return None

    # ------------------------------------------------------------------------------------------- GET routes
    def get_file(self, name: str) -> None:
        """A plain file added with :meth:`LocalHub.add_file` (a stand-in official URL)."""
        target = self.hub.root / "_files" / name
        if not target.is_file():
            return self._send(404, b"not found")
        self._send(200, target.read_bytes(), {"Content-Type": "application/octet-stream"})

    def get_resolve(self, repo: str, revision: str, filename: str) -> None:
        """A repo file, with the ETag and commit headers ``hf_hub_download`` reads (any revision serves main)."""
        if (folder := self._repo(repo)) is None:
            return
        path = folder / filename
        if not path.is_file():
            return self._error(404, "EntryNotFound", f"{filename} does not exist in {repo}")
        data = path.read_bytes()
        etag = hashlib.sha256(data).hexdigest()
        headers = {"ETag": f'"{etag}"', "X-Repo-Commit": REVISION_SHA, "Content-Type": "application/octet-stream"}
        self._send(200, data, headers)

    def get_pull_request(self, repo: str, num: str) -> None:
        """A pull request opened by an earlier ``create_pr`` commit."""
        pr = self.hub.pull_requests[int(num) - 1]
        self._json(
            {
                "num": int(num),
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

    def get_repo_info(self, repo: str, revision: str = "main") -> None:
        """``model_info``: the repo's files as siblings, one fixed commit sha."""
        if (folder := self._repo(repo)) is None:
            return
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        info = {"id": repo, "modelId": repo, "sha": REVISION_SHA, "private": False}
        self._json({**info, "siblings": [{"rfilename": f} for f in files]})

    # ------------------------------------------------------------------------------------------ POST routes
    def post_pull_request(self, repo: str) -> None:
        """Open a pull request (``create_pr``)."""
        self.hub.pull_requests.append({"repo": repo, **self._body_json()})
        self._json({"num": len(self.hub.pull_requests)})

    def post_branch(self, repo: str, branch: str) -> None:
        """Create a branch (recorded; every branch serves the same files)."""
        self.hub.branches.append((repo, branch))
        self._json({})

    def post_validate_yaml(self) -> None:
        """Accept any model card metadata."""
        self._json({"errors": [], "warnings": []})

    def post_create_repo(self) -> None:
        """Create an empty repo (``create_repo``; an existing one is kept)."""
        payload = self._body_json()
        repo = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        self.hub.repo_dir(repo).mkdir(parents=True, exist_ok=True)
        self._json({"url": f"{self.hub.endpoint}/{repo}", "name": repo, "id": repo})

    def post_preupload(self, repo: str, revision: str) -> None:
        """Every file goes up inline ("regular"), never through LFS."""
        files = self._body_json().get("files", [])
        self._json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]})

    def post_commit(self, repo: str, revision: str) -> None:
        """Write the commit's files into the repo and record it (``create_commit``'s NDJSON body)."""
        create_pr = "create_pr=1" in self.query or "refs/pr/" in revision
        commit: dict = {"repo": repo, "revision": revision, "create_pr": create_pr, "files": []}
        for item in map(json.loads, self.body.splitlines()):
            if item.get("key") == "header":
                commit.update(summary=item["value"].get("summary"), description=item["value"].get("description"))
            elif item.get("key") == "file":
                commit["files"].append(item["value"]["path"])
                target = self.hub.repo_dir(repo) / item["value"]["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(base64.b64decode(item["value"]["content"]))
        self.hub.commits.append(commit)
        answer = {"commitUrl": f"{self.hub.endpoint}/{repo}/commit/{REVISION_SHA}", "commitOid": REVISION_SHA}
        if create_pr:
            answer["pullRequestUrl"] = f"{self.hub.endpoint}/{repo}/discussions/{len(self.hub.commits)}"
        self._json({**answer, "success": True})


@contextlib.contextmanager
def run_server(hub: LocalHub) -> Iterator[LocalHub]:
    """Serve ``hub`` on a free port of 127.0.0.1 (setting ``hub.endpoint``) until the block ends."""
    server = _HubServer(hub)
    hub.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def client_settings(endpoint: str, home: Path) -> tuple[dict[str, str], dict[str, object]]:
    """What points ``huggingface_hub`` at ``endpoint`` with its caches under ``home``.

    Returns:
        The environment variables, and the values of ``huggingface_hub.constants`` that the client read at import.
    """
    env = {
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(home / "home"),
        "HF_HUB_CACHE": str(home / "cache"),
        "HF_HUB_OFFLINE": "0",
        "HF_TOKEN": "segcore-test-token",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    constants = {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HUB_CACHE": str(home / "cache"),
        "HF_HUB_OFFLINE": False,
    }
    return env, constants


@contextlib.contextmanager
def _pointed_at(env: Mapping[str, str], values: Mapping[str, object]) -> Iterator[None]:
    from huggingface_hub import constants

    saved_env = {key: os.environ.get(key) for key in env}
    saved_values = {key: getattr(constants, key) for key in values}
    os.environ.update(env)
    for key, value in values.items():
        setattr(constants, key, value)
    try:
        yield
    finally:
        for key, old in saved_env.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
        for key, old in saved_values.items():
            setattr(constants, key, old)


@contextlib.contextmanager
def serve_hub(repos: Mapping[str, str | Path] | None = None) -> Iterator[LocalHub]:
    """Serve ``repos`` (``repo_id -> folder``) as a Hub on 127.0.0.1 and point ``huggingface_hub`` at it.

    Sets ``HF_ENDPOINT`` (and the already imported ``huggingface_hub.constants``), a test token and a
    temporary ``HF_HOME`` cache for the duration, then restores everything. In a test, the ``local_hub``
    fixture does the same for the whole test.

    Example:
        >>> with serve_hub({"me/model": "out/"}) as hub:  # doctest: +SKIP
        ...     model = SegModel.from_pretrained("me/model")
    """
    tmp = Path(tempfile.mkdtemp(prefix="segcore-hub-"))
    hub = LocalHub(tmp / "repos")
    hub.root.mkdir()
    for repo_id, folder in (repos or {}).items():
        hub.add_repo(repo_id, folder)
    try:
        with run_server(hub), _pointed_at(*client_settings(hub.endpoint, tmp)):
            yield hub
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

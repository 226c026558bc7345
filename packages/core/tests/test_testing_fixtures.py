"""The pytest plugin of segcore.testing: each fixture does what it says, and undoes it after the test, failed or not."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from segcore.plugins.registry import components
from segcore.testing import TINY_MODEL, serve_hub, write_image_folder

pytest_plugins = ["pytester"]

CORE = Path(__file__).resolve().parents[1]


def _run_inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, code: str) -> pytest.RunResult:
    """Run the test file ``code`` in this process with only the plugin (no installed plugins, whatever is installed)."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(textwrap.dedent(code))
    return pytester.runpytest_inprocess("-p", "segcore.testing.fixtures", "-q")


# ------------------------------------------------------------------------------------------------ tiny_plugin
def test_tiny_plugin_registers_tiny_shapes_for_the_test(tiny_plugin):
    import segcore

    assert tiny_plugin == "tiny-shapes" and "tiny-shapes" in components("datasets")
    data = segcore.build_dataset("tiny-shapes", split="val", length=3)
    assert len(data) == 3 and data.classes == ("background", "red", "green", "blue")


def test_tiny_plugin_unregisters_after_the_test_even_when_it_fails(pytester, monkeypatch):
    assert "tiny-shapes" not in components("datasets")
    result = _run_inner(
        pytester,
        monkeypatch,
        """
        import pytest
        from segcore.plugins.registry import components

        def test_fails_with_tiny_shapes(tiny_plugin):
            assert "tiny-shapes" in components("datasets")
            pytest.fail("failed on purpose")

        def test_next_test_has_none():
            assert "tiny-shapes" not in components("datasets")
        """,
    )
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*failed on purpose*"])
    assert "tiny-shapes" not in components("datasets")


# --------------------------------------------------------------------------------------------------- tiny_run
def test_tiny_run_makes_tiny_settings_with_tiny_shapes_registered(tiny_run, tmp_path):
    settings = tiny_run(iters=3)
    assert "tiny-shapes" in components("datasets")
    assert (settings.dataset, settings.output_dir, settings.iters) == ("tiny-shapes", str(tmp_path / "run"), 3)
    assert (settings.encoder, settings.decoder, settings.batch_size) == (TINY_MODEL["encoder"], "mlp", 2)
    assert tuple(settings.crop_size) == (32, 32) and settings.progress is False
    other = tiny_run(tmp_path / "other", lr=0.5)
    assert other.output_dir == str(tmp_path / "other") and other.lr == 0.5


# -------------------------------------------------------------------------------------------------- local_hub
def test_local_hub_serves_a_repo_to_huggingface_hubs_client(local_hub, tmp_path):
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

    folder = tmp_path / "repo"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"a": 1}')
    (folder / "sub" / "weights.bin").write_bytes(b"\x00\x01")
    local_hub.add_repo("me/tiny", folder)

    path = Path(hf_hub_download("me/tiny", "config.json"))
    assert path.read_text() == '{"a": 1}' and path.is_relative_to(os.environ["HF_HUB_CACHE"])
    assert os.environ["HF_ENDPOINT"] == local_hub.endpoint
    info = HfApi().model_info("me/tiny")
    assert sorted(s.rfilename for s in info.siblings) == ["config.json", "sub/weights.bin"]
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("me/absent", "config.json")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("me/tiny", "absent.json")
    # Every request is recorded, with the token the client sent.
    assert ("GET", "/me/tiny/resolve/main/config.json") in local_hub.requests
    assert ("GET", "/api/models/me/tiny") in local_hub.requests
    assert len(local_hub.authorizations) == len(local_hub.requests)
    sent = {
        a for (_, p), a in zip(local_hub.requests, local_hub.authorizations) if p.startswith(("/me/", "/api/models"))
    }
    assert sent == {"Bearer segcore-test-token"}


def test_local_hub_records_uploads_branches_and_pull_requests(local_hub):
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo("me/up")
    api.create_branch("me/up", branch="dev")
    api.upload_file(path_or_fileobj=b"hello", path_in_repo="a/b.txt", repo_id="me/up", commit_message="first")
    pr = api.upload_file(path_or_fileobj=b"two", path_in_repo="c.txt", repo_id="me/up", create_pr=True)
    assert (local_hub.repo_dir("me/up") / "a" / "b.txt").read_bytes() == b"hello"
    assert local_hub.branches == [("me/up", "dev")]
    first, second = local_hub.commits
    assert (first["repo"], first["summary"], first["files"], first["create_pr"]) == (
        "me/up",
        "first",
        ["a/b.txt"],
        False,
    )
    assert second["create_pr"] and second["files"] == ["c.txt"] and "/discussions/" in pr.pr_url


def test_local_hub_answers_an_unknown_path_with_404_and_records_it(local_hub):
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{local_hub.endpoint}/api/spaces/me/x", timeout=5)
    assert err.value.code == 404 and err.value.headers["X-Error-Code"] == "NotFound"
    assert local_hub.requests == [("GET", "/api/spaces/me/x")] and local_hub.authorizations == [None]


def test_local_hub_stops_and_restores_the_environment_after_the_test(pytester, monkeypatch):
    from huggingface_hub import constants

    names = ("HF_ENDPOINT", "HF_TOKEN", "HF_HOME", "HF_HUB_OFFLINE")
    before = ({n: os.environ.get(n) for n in names}, constants.ENDPOINT, constants.HF_HUB_CACHE)
    seen = pytester.path / "endpoint.txt"
    result = _run_inner(
        pytester,
        monkeypatch,
        f"""
        import os
        from pathlib import Path

        def test_serves(local_hub, monkeypatch):
            Path({str(seen)!r}).write_text(local_hub.endpoint)
            monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the test's own change, undone before the hub's
            assert os.environ["HF_ENDPOINT"] == local_hub.endpoint
            raise RuntimeError("failed on purpose")
        """,
    )
    result.assert_outcomes(failed=1)
    assert ({n: os.environ.get(n) for n in names}, constants.ENDPOINT, constants.HF_HUB_CACHE) == before
    endpoint = seen.read_text()
    assert endpoint.startswith("http://127.0.0.1:")
    with pytest.raises(urllib.error.URLError):  # the server is gone
        urllib.request.urlopen(f"{endpoint}/api/models/x/y", timeout=5)


def test_serve_hub_is_the_same_server_as_a_context_manager(tmp_path):
    from huggingface_hub import hf_hub_download

    before = os.environ.get("HF_ENDPOINT")
    (tmp_path / "config.json").write_text("{}")
    with serve_hub({"me/ctx": tmp_path}) as hub:
        assert Path(hf_hub_download("me/ctx", "config.json")).read_text() == "{}"
        assert os.environ["HF_ENDPOINT"] == hub.endpoint
    assert os.environ.get("HF_ENDPOINT") == before and ("GET", "/me/ctx/resolve/main/config.json") in hub.requests


# ----------------------------------------------------------------------------------------------- image_folder
def test_image_folder_writes_images_masks_and_classes(image_folder, tmp_path):
    root = image_folder(classes=("bg", "cat", "dog"), counts={"train": 3, "val": 1}, size=16)
    assert root == tmp_path / "data"
    assert (root / "classes.txt").read_text().splitlines() == ["bg", "cat", "dog"]
    for split, names in (("train", ["0.png", "1.png", "2.png"]), ("val", ["0.png"])):
        assert sorted(p.name for p in (root / "images" / split).iterdir()) == names
        assert sorted(p.name for p in (root / "masks" / split).iterdir()) == names
    image = np.asarray(Image.open(root / "images" / "train" / "1.png"))
    mask = np.asarray(Image.open(root / "masks" / "train" / "1.png"))
    assert image.shape == (16, 16, 3) and mask.shape == (16, 16) and mask.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 1, 2}
    # Each class has one colour, a different one per class: the image can be learned from.
    colours = {c: {tuple(px) for px in image[mask == c]} for c in (0, 1, 2)}
    assert all(len(found) == 1 for found in colours.values()) and len(set().union(*colours.values())) == 3
    # Deterministic for a seed; another seed draws other squares.
    again = write_image_folder(tmp_path / "again", ("bg", "cat", "dog"), {"train": 3}, size=16)
    assert (again / "masks" / "train" / "1.png").read_bytes() == (root / "masks" / "train" / "1.png").read_bytes()
    other = image_folder("other", classes=("bg", "cat", "dog"), counts={"train": 3}, size=16, seed=5)
    assert not np.array_equal(np.asarray(Image.open(other / "masks" / "train" / "1.png")), mask)


def test_image_folder_refuses_what_no_mask_can_hold(image_folder):
    with pytest.raises(ValueError, match="need 1 to 255 classes and a size of at least 9, got 3 classes and size 4"):
        image_folder(classes=("a", "b", "c"), size=4)


# ------------------------------------------------------------------------------------------------- the plugin
def test_the_plugin_imports_neither_torch_nor_the_hub_client():
    code = (
        "import sys, segcore.testing.fixtures; print(sorted({'torch', 'huggingface_hub', 'numpy'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_pytest11_entry_point_of_pyproject_gives_tests_the_fixtures(tmp_path):
    """The entry point as pyproject.toml declares it, installed as a stand-in dist-info: no ``-p`` needed."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((CORE / "pyproject.toml").read_text())["project"]
    entry_points = project["entry-points"]["pytest11"]
    assert entry_points == {"segcore": "segcore.testing.fixtures"}
    info = tmp_path / "site" / "segcore_plugin_check-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: segcore-plugin-check\nVersion: 0\n")
    (info / "entry_points.txt").write_text("[pytest11]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))
    (tmp_path / "test_uses_fixtures.py").write_text(
        "def test_it(tiny_plugin, image_folder, tiny_run, local_hub):\n    assert tiny_plugin == 'tiny-shapes'\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), *sys.path])}
    env.pop("PYTEST_DISABLE_PLUGIN_AUTOLOAD", None)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "test_uses_fixtures.py"]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "1 passed" in result.stdout

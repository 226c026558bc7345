"""pytest fixtures of segcore's test helpers: a local Hub, the ``tiny-shapes`` plugin, tiny runs, own-data folders.

A pytest plugin, registered as the ``segcore`` ``pytest11`` entry point of the ``segcore`` distribution, so every
test of a project that installs segcore can ask for these fixtures by name (``pytest -p no:segcore`` turns them
off). Each undoes what it set up when its test ends, passed or failed. Importing it imports neither torch nor
``huggingface_hub``.

Example:
    >>> def test_round_trip(local_hub, tiny_run):  # doctest: +SKIP
    ...     run = train(tiny_run(iters=2))
    ...     local_hub.add_repo("me/tiny", run)
    ...     assert SegModel.from_pretrained("me/tiny").config.num_classes == 4
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from segcore.testing.fake_hub import LocalHub, client_settings, run_server
from segcore.testing.images import FOLDER_CLASSES, write_image_folder
from segcore.testing.tiny import registered_tiny_shapes
from segcore.testing.tiny import tiny_run as tiny_settings

if TYPE_CHECKING:
    from segcore.train import TrainSettings

__all__ = ["image_folder", "local_hub", "tiny_plugin", "tiny_run_factory"]


@pytest.fixture
def local_hub(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHub]:
    """A fake Hugging Face Hub on 127.0.0.1 for the test, with ``huggingface_hub`` pointed at it.

    ``HF_ENDPOINT``, a test ``HF_TOKEN``, an empty ``HF_HOME``/``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE=0`` are set
    (in ``os.environ``, so child processes see them too, and in the already imported ``huggingface_hub.constants``)
    through ``monkeypatch``, so a test's own ``monkeypatch.setenv`` on them is undone in the right order. Add repos
    with ``local_hub.add_repo(repo_id, folder)`` and plain files with ``local_hub.add_file(name, path)``; assert on
    ``local_hub.requests``, ``authorizations``, ``commits``, ``branches`` and ``pull_requests``.

    Example:
        >>> def test_load(local_hub, saved_folder):  # doctest: +SKIP
        ...     local_hub.add_repo("me/model", saved_folder)
        ...     SegModel.from_pretrained("me/model")
        ...     assert ("GET", "/me/model/resolve/main/model.safetensors") in local_hub.requests
    """
    from huggingface_hub import constants

    home = tmp_path_factory.mktemp("local-hub")
    hub = LocalHub(home / "repos")
    hub.root.mkdir()
    with run_server(hub):
        env, values = client_settings(hub.endpoint, home)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        for key, value in values.items():
            monkeypatch.setattr(constants, key, value)
        yield hub


@pytest.fixture
def tiny_plugin() -> Iterator[str]:
    """The ``tiny-shapes`` dataset registered for the test and removed after it, even when the test fails.

    Yields the dataset name, ``"tiny-shapes"`` (:class:`segcore.testing.TinyShapes`: 4 classes of coloured
    rectangles, 32x32 by default). A test module that needs it throughout says
    ``pytestmark = pytest.mark.usefixtures("tiny_plugin")``.
    """
    with registered_tiny_shapes() as name:
        yield name


@pytest.fixture(name="tiny_run")
def tiny_run_factory(tiny_plugin: str, tmp_path: Path) -> Callable[..., TrainSettings]:
    """A factory of the settings of a short CPU run on ``tiny-shapes``, which is registered for the test.

    ``tiny_run(output_dir=None, **overrides)`` returns :func:`segcore.testing.tiny_run`'s ``TrainSettings`` (the
    tiny model, batch 2 of 32x32 crops, lr 1e-3, no progress bar) with ``overrides`` over them; the run folder is
    ``<tmp_path>/run`` unless given.

    Example:
        >>> def test_two_steps(tiny_run):  # doctest: +SKIP
        ...     out = train(tiny_run(iters=2, eval_every=0))
    """

    def make(output_dir: str | Path | None = None, **overrides: Any) -> TrainSettings:
        return tiny_settings(tmp_path / "run" if output_dir is None else output_dir, **overrides)

    return make


@pytest.fixture
def image_folder(tmp_path: Path) -> Callable[..., Path]:
    """A factory that writes a small own-data folder (``images/`` + ``masks/`` + ``classes.txt``) under ``tmp_path``.

    ``image_folder(name="data", classes=("background", "red", "green"), counts={"train": 4, "val": 2}, size=24,
    seed=0)`` writes ``<tmp_path>/<name>`` with :func:`segcore.testing.write_image_folder` (each image an 8-pixel
    square of every class but the first, its mask the class indices) and returns it; it loads as the ``folder``
    dataset of ``segcore-datasets``.

    Example:
        >>> def test_folder(image_folder):  # doctest: +SKIP
        ...     root = image_folder(classes=("bg", "cat"), counts={"train": 2})
        ...     ds = segcore.build_dataset("folder", root=str(root), split="train")
    """

    def make(
        name: str = "data",
        classes: Sequence[str] = FOLDER_CLASSES,
        counts: Mapping[str, int] | None = None,
        size: int = 24,
        seed: int = 0,
    ) -> Path:
        return write_image_folder(tmp_path / name, classes, counts, size, seed)

    return make

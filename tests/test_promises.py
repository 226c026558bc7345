"""The README's three promises, each tested by name across the commands it covers.

- "Nothing that segcore did not write is removed or replaced": ``train --overwrite``, ``eval --report``,
  ``predict --out`` and ``save_pretrained``, each pointed at a folder of the user's files.
- "``--resume`` continues the run exactly": a run resumed from a middle checkpoint ends bit for bit where the
  uninterrupted run ended.
- No pickle from the Hub runs: a Hub repo whose weights are a pickle that would run code, through
  ``from_pretrained``, ``train --init-from`` and ``convert``.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch
from segcore_cli.main import main

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
TINY = ["--encoder", "timm:test_convnext", "--decoder", "mlp", "--decoder-opt", "channels=16"]
TINY += ["--dataset", "tiny-shapes", "--batch-size", "2", "--crop-size", "32", "--no-progress"]

pytestmark = pytest.mark.usefixtures("tiny_plugin")


def _tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _users_folder(folder: Path, names: tuple[str, ...]) -> dict[str, str]:
    folder.mkdir(parents=True)
    for name in names:
        (folder / name).write_text(f"the user's own {name}\n")
    return _tree(folder)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished tiny run (checkpoints at iterations 2 and 4)."""
    from segcore.testing import registered_tiny_shapes

    out = tmp_path_factory.mktemp("promises") / "run"
    with registered_tiny_shapes():
        args = [*TINY, "--iters", "4", "--eval-every", "0", "--checkpoint-every", "2", "--keep-checkpoints", "0"]
        assert main(["train", *args, "--output-dir", str(out)]) == 0
    return out


def test_promise_nothing_that_segcore_did_not_write_is_replaced(run, tmp_path, capsys):
    assert "Nothing that segcore did not write is\n  removed or replaced" in README
    import segcore

    # train --overwrite into a folder of the user's: it trains beside their files and says what it left.
    folder = tmp_path / "train"
    before = _users_folder(folder, ("README.md", "notes.txt"))
    assert main(["train", *TINY, "--iters", "1", "--output-dir", str(folder), "--overwrite"]) == 0
    assert {k: v for k, v in _tree(folder).items() if k in before} == before
    # eval --report into a folder holding the user's report.html: refused before evaluating, the folder as it was.
    folder = tmp_path / "report"
    before = _users_folder(folder, ("report.html", "per_class.csv"))
    assert main(["eval", "--model", str(run), "--dataset", "tiny-shapes", "--report", str(folder)]) != 0
    assert _tree(folder) == before
    # predict --out where the user's own a_label.png is: refused before predicting.
    image = tmp_path / "a.png"
    from segcore.testing import write_image

    write_image(image, 40, 40)
    folder = tmp_path / "predicted"
    before = _users_folder(folder, ("a_label.png",))
    assert main(["predict", "--model", str(run), str(image), "--out", str(folder)]) != 0
    assert _tree(folder) == before
    # save_pretrained into a folder with the user's README.md: the card is not written over it.
    folder = tmp_path / "saved"
    before = _users_folder(folder, ("README.md",))
    segcore.SegModel.from_pretrained(run).save_pretrained(folder)
    assert _tree(folder)["README.md"] == before["README.md"]
    capsys.readouterr()


def test_promise_resume_continues_the_run_exactly(run, tmp_path):
    assert "`--resume` continues the run exactly" in README
    resumed = tmp_path / "run"
    shutil.copytree(run, resumed)
    shutil.rmtree(resumed / "checkpoints" / "iter_4")  # as if the run had stopped after its checkpoint at 2
    assert main(["train", "--output-dir", str(resumed), "--resume", "--no-progress"]) == 0
    from safetensors.torch import load_file

    final, straight = load_file(str(resumed / "model.safetensors")), load_file(str(run / "model.safetensors"))
    assert final.keys() == straight.keys() and all(torch.equal(final[k], straight[k]) for k in final)


class _Payload:
    """A pickle that writes ``marker`` when it is unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def test_promise_no_pickle_from_the_hub_runs(tmp_path, local_hub, capsys):
    assert "never runs its code" in README
    transformers = pytest.importorskip("transformers")
    import segcore

    repo = tmp_path / "repo"
    config = transformers.SegformerConfig(
        num_channels=3,
        depths=[1, 1, 1, 1],
        hidden_sizes=[8, 16, 32, 64],
        num_attention_heads=[1, 2, 4, 8],
        decoder_hidden_size=16,
        num_labels=4,
    )
    config.save_pretrained(repo)
    marker = tmp_path / "MARKER"
    torch.save(_Payload(marker), repo / "pytorch_model.bin")
    local_hub.add_repo("someone/evil", repo)
    with pytest.raises(segcore.SegcoreError, match="refused") as refused:
        segcore.SegModel.from_pretrained("someone/evil")
    assert "pytorch_model.bin" in str(refused.value)
    capsys.readouterr()
    data = ["--dataset", "tiny-shapes", "--batch-size", "2", "--crop-size", "32", "--iters", "1", "--no-progress"]
    assert main(["train", *data, "--output-dir", str(tmp_path / "run"), "--init-from", "someone/evil"]) != 0
    assert "refused" in capsys.readouterr().err
    assert main(["convert", "someone/evil", "--format", "transformers", "--out", str(tmp_path / "converted")]) != 0
    assert "refused" in capsys.readouterr().err
    assert not marker.exists()

"""Names are data: the class-name rules every source shares, CSV cells that cannot run as formulas, and the one
"network failure" wording of every Hub command."""

from __future__ import annotations

import csv
import socket

import pytest
import segcore
import torch
from segcore.data import check_class_names
from segcore.errors import ClassNamesError, HubNetworkError
from segcore.evaluation.metrics import metrics_from_confusion
from segcore.evaluation.report import save_tables
from segcore.testing import TINY_MODEL


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["a", "  "], "class 1 has an empty name"),
        (["a", "b", "A"], "class 2 'A' repeats class 0 'a'"),
        (["a", "b  c", "b c"], "class 2 'b c' repeats class 1 'b  c'"),
        (["a", "b\x1b[31m"], "class 1 'b\\x1b[31m' holds the control character U+001B"),
        (["a\tb"], "U+0009"),
        (["a", None], "class 1 is None, not a name"),
        ([], "no class names"),
    ],
    ids=["empty", "duplicate", "duplicate-spacing", "escape", "tab", "none", "no-names"],
)
def test_class_names_are_refused_naming_source_and_entry(names, message):
    with pytest.raises(ClassNamesError, match="^data/classes.json: ") as err:
        check_class_names(names, "data/classes.json")
    assert message in str(err.value)


def test_class_names_are_stripped_and_entries_named_by_the_caller():
    assert check_class_names([" background ", "cat", 7], "x") == ("background", "cat", "7")
    with pytest.raises(ClassNamesError, match="line 2 \\(class 1\\) has an empty name"):
        check_class_names(["a", ""], "classes.txt", lambda i: f"line {i + 1} (class {i})")


def test_csv_text_cells_that_a_spreadsheet_would_run_get_a_quote(tmp_path):
    names = ['=HYPERLINK("http://x","y")', "+1", "-cmd", "@SUM(A1)", "plain", "a=b"]
    k = len(names)
    confusion = torch.eye(k, dtype=torch.int64) * 3
    confusion[0, 1] = 1
    save_tables({**metrics_from_confusion(confusion, names), "confusion": confusion.tolist()}, tmp_path)
    escaped = ["'" + n for n in names[:4]] + names[4:]
    per_class = list(csv.reader((tmp_path / "per_class.csv").open()))
    assert [r[0] for r in per_class[1:]] == escaped
    assert all(r[1] and not r[1].startswith("'") for r in per_class[1:])  # scores stay numbers
    confusion_rows = list(csv.reader((tmp_path / "confusion.csv").open()))
    assert confusion_rows[0][1:] == escaped and [r[0] for r in confusion_rows[1:]] == escaped
    assert confusion_rows[1][1:3] == ["3", "1"]


@pytest.fixture
def closed_endpoint(monkeypatch):
    """``HF_ENDPOINT`` (and huggingface_hub's constants) pointing at a local port where nothing listens."""
    from huggingface_hub import constants

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_TOKEN", "segcore-test-token")
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    return endpoint


def test_push_to_an_unreachable_hub_is_a_network_failure(closed_endpoint):
    model = segcore.build_model(TINY_MODEL["encoder"], "mlp", 3, decoder_options=TINY_MODEL["decoder_opt"])
    with pytest.raises(HubNetworkError) as err:
        model.push_to_hub("me/tiny")
    text = str(err.value)
    assert text.startswith(f"network failure: cannot reach {closed_endpoint} to push to 'me/tiny'"), text
    assert "HF_ENDPOINT" in text


def test_hub_network_leaves_other_errors_alone():
    from segcore.weights.hub import hub_network

    with pytest.raises(KeyError), hub_network("push to 'me/x'"):
        raise KeyError("not a network error")
    with pytest.raises(HubNetworkError, match="network failure: .* to push to 'me/x' \\(ConnectionRefusedError"):
        with hub_network("push to 'me/x'"):
            raise ConnectionRefusedError("refused")

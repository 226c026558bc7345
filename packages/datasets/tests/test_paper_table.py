"""The paper datasets are one table: every entry is registered as its one-line factory of ``papers.py``.

(The package's shape, no import cycle, no private import, short modules and functions, is checked with every other
package's by the root ``tests/test_layout.py``.)
"""

from __future__ import annotations


def test_paper_factories_are_registered_from_the_table() -> None:
    import segcore_datasets.papers as papers
    from segcore_datasets.plugin import segcore_datasets as hook

    specs = hook()
    for name in papers.PAPERS:
        assert specs[name].factory == f"segcore_datasets.papers:{name.replace('-', '_')}"
        assert callable(getattr(papers, name.replace("-", "_")))

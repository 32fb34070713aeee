"""The examples in the docstrings of the public API run as written, with their outputs.

The site shows them on the API pages; they read the public data through
``XBKG_DATA``, as the other pages do, and write into an empty folder.
"""

from __future__ import annotations

import doctest
import importlib
import os

import pytest

from conftest import DATA_DIR

#: The modules whose docstrings hold examples (kept in step by the test below).
MODULES = ("xbkg", "xbkg.products", "xbkg.plotting", "xbkg.io.datastore", "xbkg.validation")


def examples(module_name: str) -> list[doctest.DocTest]:
    module = importlib.import_module(module_name)
    tests = doctest.DocTestFinder(exclude_empty=True).find(module, module_name)
    return [t for t in tests if t.examples and t.name.split(".")[0] == "xbkg"]


def test_every_module_with_examples_is_run() -> None:
    import pkgutil

    import xbkg

    found = set()
    for info in pkgutil.walk_packages(xbkg.__path__, "xbkg."):
        # xbkg.__main__ runs the program when imported.
        if info.name != "xbkg.__main__" and examples(info.name):
            found.add(info.name)
    if examples("xbkg"):
        found.add("xbkg")
    assert found == set(MODULES)


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples_run(module_name, dr1_dir, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XBKG_DATA", str(DATA_DIR))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in examples(module_name):
        result = runner.run(test, out=lambda text: print(text, end=""))
        assert result.failed == 0, f"{test.name}: {result.failed} example(s) failed (see output)"
    assert os.getcwd() == str(tmp_path)

"""The examples run from start to end, as scripts and as notebooks."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DATA_DIR, ROOT, require

EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def test_examples_exist():
    assert [p.name for p in EXAMPLES] == [
        "background_model_tutorial.py",
        "compare_dr1_templates.py",
        "validate_dr1.py",
    ]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs(path, dr1_dir, gammacat_path, tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg", "XBKG_DATA": str(DATA_DIR)}
    out = subprocess.run(
        [sys.executable, str(path)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "Warning" not in out.stderr, out.stderr
    if path.stem == "background_model_tutorial":
        assert (tmp_path / "background" / "background.nc").is_file()
        assert out.stdout.strip().endswith("True")  # exported files are byte-identical


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_is_a_notebook(path):
    jupytext = require("jupytext")
    notebook = jupytext.read(path)
    kinds = [cell.cell_type for cell in notebook.cells]
    assert kinds[0] == "markdown"
    assert kinds.count("markdown") >= 5
    assert kinds.count("code") >= 5
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    # the data are found through XBKG_DATA, never through a path of one machine
    assert "XBKG_DATA" in Path(path).read_text()

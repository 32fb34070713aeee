"""The documentation site builds without a warning, with the executed examples."""

import os
import subprocess
import sys

from conftest import DATA_DIR, ROOT, require


def test_docs_build_without_warnings(dr1_dir, gammacat_path, tmp_path):
    # Sphinx runs in a subprocess: without these it would fail with an unclear error
    for module in ("sphinx", "myst_nb", "jupytext"):
        require(module)
    out = tmp_path / "html"
    env = {**os.environ, "XBKG_DATA": str(DATA_DIR)}
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         str(ROOT / "docs"), str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for page in ("index", "getting-started", "data-model", "gammapy06", "api"):
        assert (out / f"{page}.html").is_file(), page
    # the examples were executed and their figures are in the pages
    tutorial = (out / "examples" / "background_model_tutorial.html").read_text()
    assert tutorial.count("<img") == 4
    assert "61 runs selected" in tutorial
    compare = (out / "examples" / "compare_dr1_templates.html").read_text()
    assert compare.count("<img") == 2
    # the API reference is generated from the docstrings
    api = (out / "api.html").read_text()
    for name in (
        "products.acceptance_curve",
        "io.store.write_model_fits",
        "io.backend.GadfBackendEntrypoint",
        "io.netcdf.read_archive",
    ):
        assert f'id="xbkg.{name}"' in api, name
    # nothing was written into the source tree
    assert not (ROOT / "docs" / "jupyter_execute").exists()

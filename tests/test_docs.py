"""The documentation site: one nitpicky build, without a warning, checked for what a reader needs.

The site is built once per test session (the build executes the three
examples) with ``python -m sphinx -n -W``, as without a connection: every
cross-reference must resolve, links into other projects through the
inventories kept in ``docs/_inventories``. The other tests look at that one
build.
"""

import json
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import xbkg
from conftest import DATA_DIR, ROOT, require

DOCS = ROOT / "docs"
EXAMPLES = sorted(p.stem for p in (ROOT / "examples").glob("*.py"))
#: What the site may write into the source tree: autosummary's stub pages (git-ignored).
GENERATED = DOCS / "api" / "generated"


@pytest.fixture(scope="session")
def site(dr1_dir, gammacat_path, tmp_path_factory) -> Path:
    """The built site (HTML), after a nitpicky build that must not warn."""
    # Sphinx runs in a subprocess: without these it would fail with an unclear error
    for module in ("sphinx", "myst_nb", "jupytext", "sphinxarg", "latex2mathml"):
        require(module)
    work = tmp_path_factory.mktemp("docs")
    out = work / "html"
    before = source_tree()
    env = {**os.environ, "XBKG_DATA": str(DATA_DIR)}
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-n", "-W", "--keep-going", "-q", "-b", "html",
         str(DOCS), str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=work,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # Sphinx's own warnings ("WARNING: ..."); a notebook kernel's log lines are not
    assert "WARNING:" not in result.stderr, result.stderr
    # nothing was written into the source tree but the API stubs
    assert source_tree() == before
    return out


def source_tree() -> set[str]:
    return {
        str(p.relative_to(ROOT))
        for p in (*DOCS.rglob("*"), *(ROOT / "examples").rglob("*"))
        # the stub folder itself appears on a fresh clone's first build
        if p != GENERATED and GENERATED not in p.parents and "__pycache__" not in p.parts
    }


def text(page: Path) -> str:
    """The visible text of an HTML page."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page.read_text(encoding="utf-8")))


def test_index_leads_a_newcomer(site):
    index = (site / "index.html").read_text(encoding="utf-8")
    for caption in ("Getting started", "Tutorials", "User guide", "Reference", "About"):
        assert f'<span class="caption-text">{caption}</span>' in index, caption
    for page in (
        "data",
        "getting-started",
        "examples/index",
        "user-guide/conditions",
        "user-guide/validation",
        "user-guide/exclusion",
        "user-guide/time",
        "user-guide/gammapy",
        "api/index",
        "cli",
        "data-model",
        "changelog",
        "citing",
    ):
        assert f'href="{page}.html"' in index, page
        assert (site / f"{page}.html").is_file(), page


def test_getting_the_data_names_sources_licences_and_citations(site):
    page = text(site / "data.html")
    for needed in (
        "https://www.mpi-hd.mpg.de/hfm/HESS/pages/dl3-dr1/",
        "arXiv:1810.04516",
        "https://github.com/gammapy/gamma-cat",
        "CC BY-NC-SA 4.0",
        "CC BY 4.0",
        "XBKG_DATA",
        "xbkg simulate",
    ):
        assert needed in page, needed


def test_user_guide_explains_validation_and_crossval(site):
    page = text(site / "user-guide" / "validation.html")
    for needed in ("xbkg validate", "xbkg crossval", "Poisson deviance", "chi2/dof", "scatter"):
        assert needed in page, needed


def test_examples_are_executed_with_their_figures(site):
    tutorial = (site / "examples" / "background_model_tutorial.html").read_text()
    assert tutorial.count("<img") == 4
    assert "61 runs selected" in tutorial
    compare = (site / "examples" / "compare_dr1_templates.html").read_text()
    assert compare.count("<img") == 2
    validate = (site / "examples" / "validate_dr1.html").read_text()
    assert validate.count("<img") == 2


@pytest.mark.parametrize("name", EXAMPLES)
def test_examples_have_no_stray_outputs(site, name):
    page = (site / "examples" / f"{name}.html").read_text(encoding="utf-8")
    outputs = " ".join(re.findall(r'<div class="cell_output.*?</div>\s*</div>', page, re.S))
    # xarray's rich reprs keep their data folded (and a plain-text copy for old browsers)
    outputs = re.sub(r"<pre class=.xr-text-repr-fallback.>.*?</pre>", "", outputs, flags=re.S)
    outputs = re.sub(r"<div class=.xr-array-data.>.*?</div>", "", outputs, flags=re.S)
    # the repr of a plotting call (end the line with ';'), long reprs of numbers
    for stray in ("&lt;matplotlib.", "np.float64(", "array([", "Text(0"):
        assert stray not in outputs, stray
    # tables trimmed to the columns that matter
    for table in re.findall(r'<table class="dataframe.*?</table>', outputs, re.S):
        assert table.count("<th") <= 40, table[:300]


@pytest.mark.parametrize("name", EXAMPLES)
def test_examples_code_lines_do_not_scroll(name):
    long = [
        f"{name}.py:{n}: {line}"
        for n, line in enumerate((ROOT / "examples" / f"{name}.py").read_text().splitlines(), 1)
        if len(line) > 88
    ]
    assert not long, "\n".join(long)


@pytest.mark.parametrize("name", EXAMPLES)
def test_examples_can_be_downloaded(site, name):
    jupytext = require("jupytext")
    page = (site / "examples" / f"{name}.html").read_text(encoding="utf-8")
    assert f'href="{name}.ipynb"' in page
    assert f'href="{name}.py"' in page
    gallery = (site / "examples" / "index.html").read_text(encoding="utf-8")
    assert f'href="{name}.ipynb"' in gallery
    assert f'href="{name}.py"' in gallery
    script = site / "examples" / f"{name}.py"
    assert script.read_bytes() == (ROOT / "examples" / f"{name}.py").read_bytes()
    notebook = json.loads((site / "examples" / f"{name}.ipynb").read_text(encoding="utf-8"))
    assert notebook["nbformat"] == 4
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
    source = jupytext.read(ROOT / "examples" / f"{name}.py")
    assert len(notebook["cells"]) == len(source.cells)
    assert all(not cell.get("outputs") for cell in notebook["cells"])


def public_modules() -> list[str]:
    names = ["xbkg.io"]
    for info in pkgutil.walk_packages(xbkg.__path__, "xbkg."):
        last = info.name.rsplit(".", 1)[1]
        if not last.startswith("_") and info.name not in names:
            names.append(info.name)
    return sorted(names)


def test_api_has_a_page_per_top_level_name_and_per_module(site):
    api_source = (DOCS / "api" / "index.md").read_text(encoding="utf-8")
    missing = []
    for name in xbkg.__all__:
        if name == "__version__":
            continue
        if f"~xbkg.{name}\n" not in api_source:
            missing.append(f"{name}: add '~xbkg.{name}' to docs/api/index.md")
            continue
        page = site / "api" / "generated" / f"xbkg.{name}.html"
        assert f'id="xbkg.{name}"' in page.read_text(encoding="utf-8"), name
    for module in public_modules():
        if f"   {module}\n" not in api_source:
            missing.append(f"{module}: add it to a module table of docs/api/index.md")
            continue
        assert (site / "api" / "generated" / f"{module}.html").is_file(), module
    assert not missing, "\n".join(missing)
    # a module page has summary tables, and documents the names not at the top level
    page = (site / "api" / "generated" / "xbkg.products.html").read_text(encoding="utf-8")
    assert 'class="autosummary' in page
    assert 'id="xbkg.products.integrate"' in page
    assert 'href="xbkg.acceptance_curve.html#xbkg.acceptance_curve"' in page


def test_api_parameters_are_documented_one_by_one(site):
    page = text(site / "api" / "generated" / "xbkg.build_background.html")
    assert "workers ( int ) –" in page
    assert "scheduler ( str | None ) –" in page
    assert "workers, scheduler" not in page


def test_api_links_into_other_projects(site):
    page = (site / "api" / "generated" / "xbkg.build_background.html").read_text()
    assert 'href="https://docs.xarray.dev/en/stable/generated/xarray.Dataset.html' in page
    assert 'href="https://docs.python.org/3/library/' in page


def test_command_reference_is_the_parser(site):
    from xbkg.cli import build_parser

    page = text(site / "cli.html")
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert {"make", "validate", "crossval", "simulate", "plot", "export", "copy"} <= set(commands)
    for name, sub in commands.items():
        assert f"xbkg {name}" in page, name
        for action in sub._actions:
            for option in action.option_strings:
                assert option in page, f"{name} {option}"


def test_math_renders_offline(site):
    conditions = (site / "user-guide" / "conditions.html").read_text(encoding="utf-8")
    assert conditions.count("<math") >= 5
    assert "\\mathrm{Poisson}" not in text(site / "user-guide" / "conditions.html")
    for page in site.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        remote = re.findall(r'<(?:script|link)[^>]*(?:src|href)="(?:https?:)?//[^"]*"', html)
        assert not remote, f"{page.relative_to(site)} loads {remote}"
        assert "mathjax" not in " ".join(re.findall(r"<script[^>]*>", html)).lower()


def test_inventories_name_objects_of_the_installed_packages():
    # docs/make_inventories.py writes them; each name must exist where it says
    sys.path.insert(0, str(DOCS))
    try:
        from make_inventories import resolve
    finally:
        sys.path.remove(str(DOCS))
    for inventory in sorted((DOCS / "_inventories").glob("*.inv")):
        lines = inventory.read_text(encoding="utf-8").splitlines()
        assert lines[0] == "# Sphinx inventory version 1", inventory.name
        assert len(lines) < 200, f"{inventory.name}: only the names the pages link to"
        for line in lines[3:]:
            name, _kind, page = line.split()
            resolve(name)  # LookupError if the installed package has no such name
            assert page.endswith(".html"), line

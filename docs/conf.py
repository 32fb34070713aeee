"""Sphinx configuration of the xbkg documentation.

Pages are MyST Markdown; the examples (jupytext percent-format scripts in
``examples/``, reached through the ``docs/examples`` link) are executed at
build time by myst-nb, in a temporary folder, and shown with their figures.
The data are found through ``XBKG_DATA`` (default ``../shared/data`` next to
the repository), as in the tests.

The site builds without a connection: links into the documentation of Python,
numpy, xarray, astropy and matplotlib are resolved from the small inventories
in ``_inventories/`` (written by ``make_inventories.py``), and formulas are
written as MathML, which browsers draw themselves (``_ext/xbkg_sphinx.py``).
``python -m sphinx -n -W -b html docs OUT`` (nitpicky) passes without a warning.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import xbkg

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE / "_ext"))
os.environ.setdefault("XBKG_DATA", str(ROOT.parent / "shared" / "data"))
# The notebook kernels must draw figures inline (into the pages), whatever
# backend the environment asks for (e.g. MPLBACKEND=Agg in the tests).
os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"

project = "xbkg"
author = "xbkg developers"
copyright = "xbkg developers"
release = xbkg.__version__
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinxarg.ext",
    "xbkg_sphinx",
]

# The examples are Python scripts in jupytext's percent format.
nb_custom_formats = {".py": ["jupytext.reads", {"fmt": "py:percent"}]}
nb_execution_mode = "force"
nb_execution_in_temp = True
nb_execution_timeout = 900
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

exclude_patterns = [
    "_build",
    "conf.py",
    "make_inventories.py",
    "_ext",
    "_templates",
    "_inventories",
    "**/.ipynb_checkpoints",
    "**/__pycache__",
]
templates_path = ["_templates"]
myst_heading_anchors = 3
myst_enable_extensions = ["dollarmath", "amsmath"]

# Formulas as MathML, drawn by the browser: nothing is loaded from a CDN.
html_math_renderer = "mathml"

# Every cross-reference must resolve (python -m sphinx -n).
nitpicky = True

# ------------------------------------------------------------------ API reference

autosummary_generate = True
autosummary_ignore_module_all = False
autosummary_imported_members = False
# The names importable from ``xbkg`` have pages of their own (``xbkg.NAME``);
# the module pages link to them (docs/_templates/autosummary/module.rst).
autosummary_context = {
    "toplevel": {
        name: f"xbkg.{xbkg._EXPORTS[name]}" for name in xbkg.__all__ if name != "__version__"
    }
}

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_default_options = {"show-inheritance": False}
# numpy's ArrayLike, by its name (not the union it stands for).
autodoc_type_aliases = {"ArrayLike": "numpy.typing.ArrayLike"}
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False

# --------------------------------------------------------------- links elsewhere

# Offline: the inventories are files of this folder, holding only what these
# pages link to (python docs/make_inventories.py writes them again).
INVENTORIES = {
    "python": "https://docs.python.org/3/",
    "numpy": "https://numpy.org/doc/stable/",
    "xarray": "https://docs.xarray.dev/en/stable/",
    "astropy": "https://docs.astropy.org/en/stable/",
    "matplotlib": "https://matplotlib.org/stable/",
}
intersphinx_mapping = {
    name: (url, str(HERE / "_inventories" / f"{name}.inv")) for name, url in INVENTORIES.items()
}
intersphinx_disabled_reftypes = ["std:doc"]
intersphinx_timeout = 1

# ------------------------------------------------------------------------- HTML

html_theme = "alabaster"
html_title = f"xbkg {release}"
html_theme_options = {
    "description": "Template background models for gamma-ray telescopes on labelled arrays",
    "fixed_sidebar": True,
    "page_width": "1100px",
    "sidebar_width": "240px",
}

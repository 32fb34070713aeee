"""Sphinx configuration of the xbkg documentation.

Pages are MyST Markdown; the examples (jupytext percent-format scripts in
``examples/``, reached through the ``docs/examples`` link) are executed at
build time by myst-nb, in a temporary folder, and shown with their figures.
The data are found through ``XBKG_DATA`` (default ``../shared/data`` next to
the repository), as in the tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import xbkg

ROOT = Path(__file__).resolve().parents[1]
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
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]

# The examples are Python scripts in jupytext's percent format.
nb_custom_formats = {".py": ["jupytext.reads", {"fmt": "py:percent"}]}
nb_execution_mode = "force"
nb_execution_in_temp = True
nb_execution_timeout = 900
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

exclude_patterns = ["_build", "conf.py", "**/.ipynb_checkpoints", "**/__pycache__"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False

html_theme = "alabaster"
html_title = f"xbkg {release}"
html_theme_options = {
    "description": "Template background models for gamma-ray telescopes on labelled arrays",
    "fixed_sidebar": True,
}

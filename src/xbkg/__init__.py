"""xbkg: template background models for gamma-ray telescopes on labelled arrays.

The names a notebook user needs are importable from the package top level
(:data:`__all__`); everything else is in the submodules. They are loaded on
first use, so that ``import xbkg`` (and the ``xbkg`` command) stay fast.
``import xbkg`` registers the ``ds.bkg`` accessor (:mod:`xbkg.accessor`).

Examples
--------
>>> import os, xbkg
>>> store = xbkg.open_datastore(os.path.join(os.environ["XBKG_DATA"], "hess-dl3-dr1"))
>>> runs = xbkg.select_runs(xbkg.run_table(store), ranges={"|GLAT_PNT|": (10, None)})
>>> bkg = xbkg.build_background(store, runs)  # gamma-cat sources excluded by default
>>> result = xbkg.write_background(bkg, store, "background")
>>> bkg.options.model, len(result["background"].run_models["obs_id"])
('conditions', 105)
"""

from __future__ import annotations

import importlib
from typing import Any

# Registers the ``ds.bkg`` accessor: it exists as soon as xbkg is imported,
# whatever else was imported before.
from xbkg import accessor as _accessor  # noqa: F401
from xbkg._version import __version__

#: The names a notebook user needs -> the submodule that defines each. Everything
#: else lives in its submodule (``xbkg.model.fill_unconstrained``, ...). They are
#: loaded on first use, so that ``import xbkg`` and the command line start fast.
_EXPORTS = {
    # the input data store
    "open_datastore": "io.datastore",
    "run_table": "io.datastore",
    "select_runs": "io.datastore",
    "read_events": "io.datastore",
    # choices
    "Options": "options",
    "options_for": "options",
    "GroupAxis": "grouping",
    "group_definitions": "grouping",
    "assign_groups": "grouping",
    # known sources
    "read_catalog": "io.catalog",
    "exclusion_circles": "regions",
    # the build, step by step and in one call
    "make_run_cube": "cube",
    "stack_groups": "model",
    "compute_rate": "model",
    "smooth": "model",
    "build_background": "pipeline",
    "write_background": "pipeline",
    "export_models": "pipeline",
    # products
    "acceptance_curve": "products",
    "spectrum": "products",
    "image": "products",
    "radial_profile": "products",
    # files: one reader and one writer per format
    "read_archive": "io.netcdf",
    "read_bkg": "io.gadf",
    "write_bkg_2d": "io.gadf",
    # checks
    "predict_counts": "validation",
    "template_predictions": "validation",
    "validate": "validation",
    "crossval": "validation",
    # synthetic data stores
    "simulate_datastore": "simulate",
    # the base class of every error xbkg raises on bad input
    "XbkgError": "errors",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"xbkg.{_EXPORTS[name]}")
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'xbkg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

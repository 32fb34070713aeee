"""xbkg: template background models for gamma-ray telescopes on labelled arrays.

The public API is importable from the package top level. Submodules are loaded
on first use, so that ``import xbkg`` (and the ``xbkg`` command) stay fast.

The ``ds.bkg`` accessor (:mod:`xbkg.accessor`) is registered as soon as both
xbkg and xarray are in use: at ``import xbkg`` if xarray is already imported,
otherwise by the first xbkg function used or module imported that makes or
reads Datasets, and by ``xr.open_dataset(path)`` without an ``engine``
(xarray then loads every installed backend, xbkg's among them). ``import
xbkg.accessor`` registers it explicitly.

Examples
--------
>>> import os, xbkg
>>> store = xbkg.open_datastore(os.path.join(os.environ["XBKG_DATA"], "hess-dl3-dr1"))
>>> runs = xbkg.run_table(store)
>>> bkg = xbkg.build_background(store, runs)  # gamma-cat sources excluded by default
>>> result = xbkg.write_background(bkg, store, "background")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

# The one place of the version (pyproject.toml reads it from here): a literal,
# because looking up installed package metadata costs a tenth of a second at
# every start of the command line.
__version__ = "0.1.0"

#: Public name -> submodule that defines it.
_EXPORTS = {
    "open_datastore": "io.datastore",
    "run_table": "io.datastore",
    "select_runs": "io.datastore",
    "copy_runs": "io.datastore",
    "read_events": "io.datastore",
    "XbkgError": "errors",
    "DataStoreError": "errors",
    "CatalogError": "errors",
    "ConfigError": "errors",
    "OutputError": "errors",
    "OutputExistsError": "errors",
    "RunsFailedError": "errors",
    "read_catalog": "io.catalog",
    "exclusion_circles": "regions",
    "combine_regions": "regions",
    "make_run_cube": "cube",
    "GroupAxis": "grouping",
    "group_definitions": "grouping",
    "assign_groups": "grouping",
    "read_group_def": "io.store",
    "write_group_def": "io.store",
    "stack_groups": "model",
    "compute_rate": "model",
    "smooth": "model",
    "Options": "options",
    "PRESETS": "options",
    "options_for": "options",
    "Background": "options",
    "build_background": "pipeline",
    "write_background": "pipeline",
    "read_bkg": "io.gadf",
    "write_bkg_2d": "io.gadf",
    "export_models": "pipeline",
    "write_model_fits": "io.store",
    "integrate": "products",
    "acceptance_curve": "products",
    "spectrum": "products",
    "image": "products",
    "radial_profile": "products",
    "plot_acceptance_curve": "plotting",
    "plot_spectrum": "plotting",
    "plot_image": "plotting",
    "plot_overview": "plotting",
    "read_archive": "io.netcdf",
    "write_archive": "io.netcdf",
    "simulate_datastore": "simulate",
    "fit_conditions": "conditions",
    "run_rate": "conditions",
    "validate": "validation",
    "crossval": "validation",
    "predict_counts": "validation",
    "template_predictions": "validation",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


if "xarray" in sys.modules:  # xarray is loaded already: registering costs nothing
    importlib.import_module("xbkg.accessor")


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"xbkg.{_EXPORTS[name]}")
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'xbkg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

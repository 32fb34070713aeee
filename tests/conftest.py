"""Shared fixtures: where the public test data live, and small synthetic stores.

The real data (H.E.S.S. DL3 DR1, the Gammapy 0.6 tutorial store, gamma-cat, the
GADF example files) are found through the ``XBKG_DATA`` environment variable,
by default ``../shared/data`` next to the project. Outside CI a missing data
folder skips the tests that need it, with the reason; in CI (``CI=true``) it is
an error, so that a green CI run always means the real-data checks ran.

The same holds for the packages of the test extra (Gammapy, cf-xarray, dask,
hypothesis, the documentation tools): tests get them through :func:`require`,
never through ``pytest.importorskip``.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("XBKG_DATA", ROOT.parent / "shared" / "data")).resolve()


def in_ci() -> bool:
    """True when running in CI (``CI=true``): what is missing is then a failure."""
    return os.environ.get("CI", "").lower() == "true"


def _missing(reason: str) -> NoReturn:
    """Skip with ``reason`` (also a whole module, at import), or fail in CI."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: required)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require(module_name: str) -> ModuleType:
    """Import a package of the test extra: skip without it, but fail in CI.

    Use it instead of ``pytest.importorskip``, in a test or at module level
    (``hypothesis = require("hypothesis")``): a green CI run then means that
    every check ran.
    """
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        _missing(
            f"{module_name} is not importable ({exc}); it comes with the test extra: "
            "pip install -e '.[test]'"
        )


try:
    from hypothesis import settings
except ImportError:  # the modules that use it say so through require("hypothesis")
    pass
else:
    # Property and fuzz tests draw the same examples on every run, so that a CI
    # result does not depend on luck; no example database is written.
    settings.register_profile("xbkg", derandomize=True, database=None, deadline=None)
    settings.load_profile("xbkg")


def _data_path(*parts: str) -> Path:
    path = DATA_DIR.joinpath(*parts)
    if not path.exists():
        _missing(
            f"test data not found at {path}; set XBKG_DATA to the folder holding "
            "hess-dl3-dr1, hess-crab4-hd-hap-prod2, catalogs and gadf-examples"
        )
    return path


@pytest.fixture(scope="session")
def dr1_dir() -> Path:
    """H.E.S.S. DL3 DR1 data store (105 runs)."""
    return _data_path("hess-dl3-dr1")


@pytest.fixture(scope="session")
def crab4_dir() -> Path:
    """The Gammapy 0.6 tutorial data store (4 Crab runs, old per-HDU layout)."""
    return _data_path("hess-crab4-hd-hap-prod2")


@pytest.fixture(scope="session")
def gammacat_path() -> Path:
    """The gamma-cat source catalogue."""
    return _data_path("catalogs", "gammacat", "gammacat.fits.gz")


@pytest.fixture(scope="session")
def hgps_path() -> Path:
    """The H.E.S.S. Galactic Plane Survey catalogue."""
    return _data_path("catalogs", "hgps_catalog_v1.fits.gz")


@pytest.fixture(scope="session")
def gadf_examples_dir() -> Path:
    """The GADF specification's example bkg_2d / bkg_3d files."""
    return _data_path("gadf-examples")


@pytest.fixture(scope="session")
def dr1_make_dir(dr1_dir, gammacat_path, tmp_path_factory) -> Path:
    """Output folder of ``xbkg make`` on all of H.E.S.S. DR1 with gamma-cat exclusion.

    Built once per session and shared; tests must not modify it (copy it first).
    """
    from xbkg.cli import main

    out = tmp_path_factory.mktemp("dr1-make") / "model"
    code = main(["make", str(dr1_dir), str(out), "--exclude", str(gammacat_path), "-q"])
    assert code == 0
    return out


@pytest.fixture(scope="session")
def sim_store(tmp_path_factory):
    """A simulated data store with known truth (16 runs x 20,000 events), and its run table."""
    from xbkg import simulate
    from xbkg.io.datastore import open_datastore, run_table

    path = simulate.simulate_datastore(
        tmp_path_factory.mktemp("sim") / "store", n_runs=16, seed=7, events_per_run=20_000
    )
    store = open_datastore(path)
    return store, run_table(store)


@pytest.fixture(scope="session")
def sim_cube(sim_store):
    """The run cube of ``sim_store`` with default options, binned once per session."""
    from xbkg.cube import make_run_cube

    return make_run_cube(*sim_store)

"""Default energy edges chosen from the data, on a fixed log grid."""

import json

import numpy as np
import pytest
import xarray as xr

from xbkg import simulate
from xbkg.axes import edges, energy_edges
from xbkg.io.datastore import open_datastore, run_table
from xbkg.io.netcdf import from_archive, to_archive
from xbkg.options import PRESETS, Options, options_for
from xbkg.pipeline import _plan_energy_edges, build_background


def _on_grid(values):
    k = np.log10(np.asarray(values)) * 5
    return np.allclose(k, np.round(k), atol=1e-9)


def _runs(lo, hi):
    return xr.Dataset(
        {"safe_energy_lo": ("obs_id", lo), "safe_energy_hi": ("obs_id", hi)},
        coords={"obs_id": np.arange(len(lo))},
    )


def test_defaults():
    assert Options().energy_edges is None
    assert "energy_edges=<from the data>" in repr(Options())
    assert json.loads(Options().to_json())["energy_edges"] is None
    # the Gammapy 0.6 preset and explicit values keep their edges
    assert PRESETS["gammapy-0.6"].energy_edges == tuple(energy_edges())
    assert options_for(energy_edges=[1, 2, 4]).energy_edges == (1.0, 2.0, 4.0)
    assert Options(energy_edges=[1, 10]).energy_edges == (1.0, 10.0)


@pytest.mark.parametrize(
    ("lo", "hi", "first", "last"),
    [
        ([0.2, 0.5], [100.0, 100.0], 0.1, 100.0),  # inside the default range: unchanged
        ([0.05, 0.3], [100.0, 150.0], 10 ** (-7 / 5), 10 ** (11 / 5)),
        ([0.0631, 1.0], [30.0, 50.0], 10 ** (-6 / 5), 100.0),  # 0.0631 is a grid point
    ],
)
def test_edges_from_safe_ranges(lo, hi, first, last):
    plan = _plan_energy_edges(_runs(lo, hi), Options())
    assert not plan.search_lo
    assert not plan.search_hi
    assert plan.edges[0] == pytest.approx(first, rel=1e-12)
    assert plan.edges[-1] == pytest.approx(last, rel=1e-12)
    assert _on_grid(plan.edges)
    assert len(plan.edges) - 1 == round(5 * np.log10(last / first))


def test_sides_without_a_safe_range_are_searched():
    plan = _plan_energy_edges(_runs([0.2, np.nan], [100.0, 100.0]), Options())
    assert (plan.search_lo, plan.search_hi) == (True, False)
    assert plan.edges[0] == pytest.approx(1e-3)
    assert plan.edges[-1] == pytest.approx(100.0)
    plan = _plan_energy_edges(_runs([0.2, 0.3], [100.0, 100.0]), Options(safe_energy=False))
    assert plan.search_lo
    assert plan.search_hi
    assert "safe_energy is off" in plan.reasons[0]


def test_dr1_default_edges_stay_the_default(dr1_dir):
    """On H.E.S.S. DR1 every threshold lies above 0.1 TeV: 15 bins, 0.1-100 TeV, as before."""
    runs = run_table(open_datastore(dr1_dir))
    assert float(runs["safe_energy_lo"].min()) == pytest.approx(0.204, abs=1e-3)
    plan = _plan_energy_edges(runs, Options())
    assert plan.edges == tuple(energy_edges())  # exactly the old default


@pytest.fixture(scope="module")
def magic_like(tmp_path_factory):
    """A store without safe energy range whose events reach down to 20 GeV."""
    path = simulate.simulate_datastore(
        tmp_path_factory.mktemp("magic") / "store",
        n_runs=4,
        seed=5,
        events_per_run=4000,
        telescope="MAGIC",
        energy_range=(0.02, 50.0),
        missing_columns=("SAFE_ENERGY_LO", "SAFE_ENERGY_HI"),
    )
    store = open_datastore(path)
    return store, run_table(store)


def test_edges_from_the_events(magic_like):
    store, runs = magic_like
    options = options_for(model="groups")
    bkg = build_background(store, runs, options=options)
    got = bkg.options.energy_edges
    # from the grid point at or below the lowest binned event (simulated from 20 GeV) ...
    assert 0.02 / 10**0.2 < got[0] < 0.1
    assert int(bkg.cube["counts"].isel(energy=0).sum()) > 0
    # ... to 100 TeV, as the events stay below
    assert got[-1] == pytest.approx(100.0)
    assert _on_grid(got)
    np.testing.assert_array_equal(edges(bkg.cube, "energy"), got)
    assert json.loads(bkg.cube.attrs["options"])["energy_edges"] == list(got)
    assert "no SAFE_ENERGY_LO: from the events" in bkg.cube.attrs["energy_binning"]
    # the same events are binned as with these edges given
    given = build_background(store, runs, options=options_for(model="groups", energy_edges=got))
    np.testing.assert_array_equal(bkg.cube["counts"], given.cube["counts"])
    np.testing.assert_array_equal(bkg.cube["n_outside"], given.cube["n_outside"])
    # the old default would have lost the events below 0.1 TeV
    old = options_for(model="groups", energy_edges=energy_edges())
    old = build_background(store, runs, options=old)
    assert int(old.cube["n_outside"].sum()) > int(bkg.cube["n_outside"].sum())
    # the archive records the edges used
    assert from_archive(to_archive(bkg)).options.energy_edges == got

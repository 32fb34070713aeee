"""The pipeline recovers a known background (simulated data stores with truth)."""

import numpy as np
import pytest
import xarray as xr

from xbkg import simulate, truth
from xbkg.io.datastore import open_datastore, run_table
from xbkg.options import options_for
from xbkg.pipeline import build_background, write_background
from xbkg.regions import exclusion_circles


def expected_cube(cube):
    """Expected counts of every run and bin, with the run's safe-energy mask."""
    edges_e = np.append(cube["energy_lo"].values, cube["energy_hi"].values[-1])
    edges_t = np.append(cube["offset_lo"].values, cube["offset_hi"].values[-1])
    expected = truth.expected_counts(
        edges_e, edges_t, zenith=cube["zen_pnt"], livetime=cube["livetime"], muoneff=cube["muoneff"]
    )
    return expected.where(cube["exposure_time"] > 0, 0.0).transpose(*cube["counts"].dims)


@pytest.mark.parametrize("time", ["livetime", "ontime"])
def test_truth_recovered(sim_store, time):
    store, runs = sim_store
    # no exclusion: the truth below is that of whole rings
    bkg = build_background(store, runs, options=options_for(time=time, exclude="none"))
    cube = bkg.cube
    expected = expected_cube(cube)
    # per run and bin: counts agree with the truth
    mask = expected > 20
    pulls = ((cube["counts"] - expected) / np.sqrt(expected)).values[mask.values]
    assert pulls.size > 500
    assert abs(pulls.mean()) < 0.1
    assert abs(pulls.std() - 1) < 0.1
    # grouped rate: truth = expected counts / (exposure x volume), per the time convention
    model = bkg.model
    member = cube["group_id"]
    exp_group = xr.concat(
        [expected.where(member == g, 0).sum("obs_id") for g in model.group.values], dim="group"
    ).assign_coords(group=model.group)
    denom = model["counts"] / model["rate"]
    true_rate = exp_group / denom
    good = exp_group > 20
    pulls = ((model["rate"] - true_rate) / (np.sqrt(exp_group) / denom)).values[good.values]
    assert abs(pulls.mean()) < 0.1
    assert abs(pulls.std() - 1) < 0.15


def test_ontime_rate_is_lower_by_the_dead_time(sim_store):
    """Per ONTIME, a group's rate is its per-LIVETIME rate times the members' DEADC.

    Events arrive during the live time only: with the same counts, the rate per
    ONTIME is smaller by DEADC = LIVETIME / ONTIME (1 minus the dead-time
    fraction), averaged over the member runs with their exposure as weights.
    DEADC is read from the obs-index, not derived from the cubes.
    """
    store, runs = sim_store
    live = build_background(store, runs, options=options_for(time="livetime"))
    on = build_background(store, runs, options=options_for(time="ontime"))
    np.testing.assert_array_equal(live.cube["counts"], on.cube["counts"])  # the same events
    index = store.obs_index
    deadc = xr.DataArray(
        np.asarray(index["DEADC"], dtype=float),
        dims="obs_id",
        coords={"obs_id": np.asarray(index["OBS_ID"])},
    ).sel(obs_id=on.cube["obs_id"])
    assert float(deadc.max()) < 1
    # every run's exposure per ONTIME: its exposure per LIVETIME / DEADC
    np.testing.assert_allclose(
        on.cube["exposure_time"] * deadc, live.cube["exposure_time"], rtol=1e-6
    )
    member, on_exposure = on.cube["group_id"], on.cube["exposure_time"]
    weighted = xr.concat(
        [
            (deadc * on_exposure).where(member == g, 0).sum("obs_id")
            / on_exposure.where(member == g, 0).sum("obs_id")
            for g in on.model.group.values
        ],
        dim="group",
    ).assign_coords(group=on.model.group)
    ratio = on.model["rate"] / live.model["rate"]
    counted = (on.model["counts"] > 0).values
    assert counted.sum() > 500
    np.testing.assert_allclose(ratio.values[counted], weighted.values[counted], rtol=1e-6)
    assert float(ratio.max()) <= float(deadc.max()) * (1 + 1e-6)
    assert float(ratio.min()) >= float(deadc.min()) * (1 - 1e-6)


def test_truth_recovered_with_sources_excluded(tmp_path):
    source = (0.0, 0.0, 0.1, 4000)  # ra, dec, sigma, events per run near it
    path = simulate.simulate_datastore(
        tmp_path / "store", n_runs=8, seed=3, sources=[source], zenith_range=(20, 40)
    )
    store = open_datastore(path)
    runs = run_table(store)
    regions = exclusion_circles([source[0]], [source[1]], [0.6])
    with_excl = build_background(store, runs, regions=regions, options=options_for(time="livetime"))
    without = build_background(store, runs, options=options_for(time="livetime", exclude="none"))
    assert int(with_excl.cube["n_excluded"].sum()) > 4000
    # without exclusion the source shows up as an excess over the truth; with it, it does not
    for bkg, ok in ((with_excl, True), (without, False)):
        cube = bkg.cube
        expected = expected_cube(cube).where(cube["exposure_time"] > 0, 0) * (
            cube["exposure_time"] / cube["livetime"]
        )
        excess = float(cube["counts"].sum() - expected.sum())
        sigma = float(np.sqrt(expected.sum()))
        assert (abs(excess) < 4 * sigma) == ok, (excess, sigma)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"layout": "per-hdu"},
        {"telescope": "MAGIC", "missing_columns": ("ZEN_PNT", "SAFE_ENERGY_LO", "MUONEFF")},
        {"telescope": "CTA", "point_like": True, "missing_columns": ("LIVETIME", "ONTIME")},
        {"telescope": "VERITAS", "missing_columns": ("RA_PNT", "DEC_PNT", "SAFE_ENERGY_HI")},
    ],
)
def test_other_instruments_and_layouts(tmp_path, kwargs):
    path = simulate.simulate_datastore(tmp_path / "store", n_runs=4, seed=1, **kwargs)
    store = open_datastore(path)
    runs = run_table(store)
    assert np.all(np.isfinite(runs["zen_pnt"].values))
    bkg = build_background(store, runs)
    out = tmp_path / "out"
    write_background(bkg, store, out)
    assert int(bkg.cube["counts"].sum()) > 0
    assert (out / "hdu-index.fits.gz").is_file()
    if "SAFE_ENERGY_LO" in kwargs.get("missing_columns", ()):
        # no threshold known: every energy bin has exposure
        assert bool((bkg.cube["exposure_time"] > 0).all())

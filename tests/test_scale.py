"""Parallel, distributed and streaming execution give identical results."""

import filecmp
import json

import numpy as np
import pytest
import xarray as xr

from conftest import require
from xbkg import exclusion, simulate
from xbkg.cli import main
from xbkg.cube import bin_events, make_run_cube, run_specs
from xbkg.io.datastore import open_datastore, read_events, run_table
from xbkg.regions import exclusion_circles


@pytest.fixture(scope="module")
def store_and_runs(tmp_path_factory):
    path = simulate.simulate_datastore(
        tmp_path_factory.mktemp("sim") / "store",
        n_runs=10,
        seed=11,
        sources=[(0.0, 0.0, 0.1, 500)],
    )
    store = open_datastore(path)
    return store, run_table(store)


@pytest.fixture(scope="module")
def regions():
    return exclusion_circles([0.0, 0.5], [0.0, 0.3], [0.4, 0.2])


@pytest.fixture(scope="module")
def fov_spec():
    from xbkg.axes import fov_edges
    from xbkg.cube import FovSpec

    bin_edges = tuple(fov_edges(2.0, 16))
    return FovSpec(bin_edges, bin_edges, "ALTAZ")


def test_workers_give_identical_cubes(store_and_runs, regions):
    store, runs = store_and_runs
    one = make_run_cube(store, runs, regions=regions, workers=1)
    two = make_run_cube(store, runs, regions=regions, workers=2)
    xr.testing.assert_identical(one, two)
    assert int(one["n_excluded"].sum()) > 0


def test_dask_cluster_gives_identical_cube(store_and_runs, regions, fov_spec):
    """Also in the field of view, where the pointing tracks travel to the workers."""
    distributed = require("distributed")
    store, runs = store_and_runs
    reference = make_run_cube(store, runs, regions=regions, fov=fov_spec)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
    ):
        on_cluster = make_run_cube(
            store, runs, regions=regions, scheduler=cluster.scheduler_address, fov=fov_spec
        )
    xr.testing.assert_identical(reference, on_cluster)


def test_streaming_equals_in_memory(store_and_runs, regions):
    """The run-by-run cube equals binning all events held in memory at once."""
    store, runs = store_and_runs
    cube = make_run_cube(store, runs, regions=regions)
    specs, problems = run_specs(store, runs)
    assert problems == {}
    events = [read_events(s.path, s.hdu) for s in specs]  # every run in memory
    edges_e = np.append(cube["energy_lo"].values, cube["energy_hi"].values[-1])
    edges_t = np.append(cube["offset_lo"].values, cube["offset_hi"].values[-1])
    for spec, ev in zip(specs, events, strict=True):
        hist = bin_events(ev, spec, edges_e, edges_t, regions)
        np.testing.assert_array_equal(cube["counts"].sel(obs_id=spec.obs_id), hist.counts)
        np.testing.assert_array_equal(
            cube["exposure_time"].sel(obs_id=spec.obs_id), hist.exposure_time
        )
    # and a reference histogram with numpy's histogram2d on the concatenated events
    ra = np.concatenate([e.ra for e in events])
    dec = np.concatenate([e.dec for e in events])
    energy = np.concatenate([e.energy for e in events])
    pairs = list(zip(specs, events, strict=True))
    pnt_ra = np.concatenate([np.full(e.ra.size, s.ra_pnt) for s, e in pairs])
    pnt_dec = np.concatenate([np.full(e.ra.size, s.dec_pnt) for s, e in pairs])
    keep = exclusion.outside_regions(ra, dec, regions)
    offset = exclusion.separation(pnt_ra, pnt_dec, ra, dec)
    ref, _, _ = np.histogram2d(energy[keep], offset[keep], bins=[edges_e, edges_t])
    unsafe = cube["n_unsafe"].sum()
    assert int(ref.sum()) == int(cube["counts"].sum() + unsafe)


def test_cli_workers_byte_identical(store_and_runs, tmp_path):
    store, _ = store_and_runs
    assert main(["make", str(store.path), str(tmp_path / "w1"), "-q"]) == 0
    assert main(["make", str(store.path), str(tmp_path / "w2"), "-q", "--workers", "2"]) == 0
    names = sorted(p.name for p in (tmp_path / "w1").iterdir())
    match, mismatch, errors = filecmp.cmpfiles(
        tmp_path / "w1", tmp_path / "w2", names, shallow=False
    )
    assert mismatch == []
    assert errors == []
    assert len(match) == len(names) >= 8


def test_workers_must_be_positive(store_and_runs):
    store, runs = store_and_runs
    with pytest.raises(ValueError, match="workers"):
        make_run_cube(store, runs, workers=0)


# --------------------------------------------------------------------------- field of view


def test_fov_cube_is_the_same_with_tracks_built_per_run(store_and_runs, regions, fov_spec):
    """The pointing tracks, built for all runs at once, are those each run builds alone."""
    from xbkg import cube as cube_module

    store, runs = store_and_runs
    batched = make_run_cube(store, runs, regions=regions, fov=fov_spec)
    specs, _ = run_specs(store, runs)
    assert all(s.track is not None for s in cube_module._with_tracks(specs))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cube_module, "_with_tracks", lambda specs: specs)
        per_run = make_run_cube(store, runs, regions=regions, fov=fov_spec, workers=2)
    xr.testing.assert_identical(batched, per_run)
    assert int(batched["fov_counts"].sum()) > 0


def test_fov_run_without_site_is_skipped_alone(tmp_path, fov_spec):
    """A header the batch cannot use leaves each run to build its own track and report its error."""
    from astropy.io import fits

    path = simulate.simulate_datastore(tmp_path / "store", n_runs=3, events_per_run=2000, seed=3)
    store = open_datastore(path)
    runs = run_table(store)
    bad = sorted((path / "data").glob("*.fits.gz"))[1]
    with fits.open(bad) as hdul:
        for key in ("GEOLAT", "GEOLON", "ALTITUDE", "GEOALT", "TELESCOP"):
            hdul["EVENTS"].header.remove(key, ignore_missing=True)
        hdul.writeto(bad, overwrite=True)
    cube = make_run_cube(store, runs, fov=fov_spec, skip_bad_runs=True)
    skipped = json.loads(cube.attrs["skipped_runs"])
    assert len(skipped) == 1
    (message,) = skipped.values()
    assert "site of the run is unknown" in message
    assert bad.name in message
    assert cube.sizes["obs_id"] == 2


def test_cli_workers_byte_identical_bkg_3d(store_and_runs, tmp_path):
    store, _ = store_and_runs
    common = ["make", str(store.path), "-q", "--bkg-class", "bkg_3d", "--fov-bins", "16"]
    assert main([*common[:2], str(tmp_path / "w1"), *common[2:], "--workers", "1"]) == 0
    assert main([*common[:2], str(tmp_path / "w2"), *common[2:], "--workers", "2"]) == 0
    names = sorted(p.name for p in (tmp_path / "w1").iterdir())
    _, mismatch, errors = filecmp.cmpfiles(tmp_path / "w1", tmp_path / "w2", names, shallow=False)
    assert mismatch == []
    assert errors == []
    assert sum(name.startswith("background_run_") for name in names) == 10

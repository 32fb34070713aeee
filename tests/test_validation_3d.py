"""Validation of ``bkg_3d`` models on sky maps, as a 3D analysis uses them.

The prediction (:func:`xbkg.prediction.fov_consumer_counts`) is checked against
Gammapy 2.1's ``MapDatasetMaker`` itself, on simulated stores in the GADF
convention and flagged like H.E.S.S. DR1, for ALTAZ and RADEC models. The
metrics (:func:`xbkg.validation.validate_fov`) are checked on a store with a
known field-of-view asymmetry in AltAz: the true model passes (pulls of mean 0
and width 1, no gradient of obs/pred), a mirrored or rotated one fails.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from astropy.io import fits

from conftest import require
from xbkg import conventions, simulate
from xbkg.cli import main
from xbkg.fov import track_from_header
from xbkg.io.datastore import (
    gammapy_reversed_lon,
    hdu_location,
    open_datastore,
    read_events,
    run_table,
    write_index,
)
from xbkg.io.gadf import read_bkg, write_bkg_3d
from xbkg.io.hdu_index import make_hdu_index, make_obs_index
from xbkg.prediction import consumer_alignment, fov_consumer_counts, sky_grid
from xbkg.truth import RunTruth, true_fov_rate
from xbkg.validation import fit_fov_gradient, fov_validation_maps, validate_fov

FOV = np.linspace(-3.0, 3.0, 31)
MODEL_ENERGY = np.geomspace(0.05, 200.0, 41)
MAP_ENERGY = np.geomspace(0.1, 100.0, 16)
# Standard errors allowed between a fitted gradient and zero.
GRADIENT_SIGMAS = 4.0


def true_model(store, obs_id: int, alignment: str) -> xr.DataArray:
    """The run's true rate per ONTIME as a bkg_3d (GADF orientation), ``FOVALIGN`` set."""
    path, _ = hdu_location(store, obs_id)
    run = RunTruth.from_header(fits.getheader(path, "EVENTS"))
    rate = true_fov_rate(run, MODEL_ENERGY, FOV, FOV, alignment)
    # The truth is per live time; Gammapy multiplies a model by the run's duration.
    rate = rate * (run.livetime / (run.tstop - run.tstart))
    rate.attrs[conventions.FOVALIGN_KEYWORD] = alignment
    return rate


# --------------------------------------------------------------------------- against Gammapy


@pytest.fixture(scope="module")
def one_run(tmp_path_factory) -> dict[bool, Path]:
    """One 30-min run at 15-25 deg zenith (the field turns by tens of deg), plain and flagged."""
    root = tmp_path_factory.mktemp("one_run")
    return {
        flagged: simulate.simulate_datastore(
            root / f"store_{flagged}",
            n_runs=1,
            livetime=1800.0,
            seed=8,
            zenith_range=(15.0, 25.0),
            fov_gradient=-0.1,
            camera_asymmetry=0.08,
            flag_like_hess_dr1=flagged,
        )
        for flagged in (False, True)
    }


@pytest.mark.parametrize(
    ("flagged", "alignment", "reverse_lon"),
    [
        (False, "ALTAZ", False),
        (False, "RADEC", False),
        (True, "RADEC", True),
        (True, "ALTAZ", False),
    ],
    ids=["altaz", "radec", "flagged-radec-reversed", "flagged-altaz-read-as-radec"],
)
def test_numpy_prediction_is_gammapys_map(one_run, tmp_path, flagged, alignment, reverse_lon):
    data, makers = require("gammapy.data"), require("gammapy.makers")
    maps, datasets = require("gammapy.maps"), require("gammapy.datasets")
    store = open_datastore(one_run[flagged])
    obs_id = int(store.obs_ids[0])
    name = conventions.run_model_filename(obs_id)
    write_bkg_3d(
        true_model(store, obs_id, alignment),
        tmp_path / name,
        reverse_lon=reverse_lon,
        header={"OBS_ID": obs_id},
    )
    index = make_hdu_index(store, tmp_path, {obs_id: name}, hdu_class="bkg_3d")
    write_index(index, tmp_path / conventions.HDU_INDEX_FILE, "HDU_INDEX")
    write_index(make_obs_index(store), tmp_path / conventions.OBS_INDEX_FILE, "OBS_INDEX")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        obs = data.DataStore.from_dir(tmp_path).obs(obs_id, required_irf="all-optional")
        energy = maps.MapAxis.from_edges(MAP_ENERGY, unit="TeV", name="energy", interp="log")
        geom = maps.WcsGeom.create(
            skydir=obs.get_pointing_icrs(obs.tmid), width=4.4, binsz=0.1, axes=[energy]
        )
        maker = makers.MapDatasetMaker(selection=["background"])
        gammapy_map = maker.run(datasets.MapDataset.create(geom), obs).background.data
        gammapy_alignment = obs.bkg.fov_alignment.value
        tstart, ontime = obs.tstart, obs.observation_time_duration.to_value("s")

    path, _ = hdu_location(store, obs_id)
    header = fits.getheader(path, "EVENTS")
    track = track_from_header(header)
    stored = read_bkg(tmp_path / name, reverse_lon=False)
    align = consumer_alignment(stored.attrs["FOVALIGN"], gammapy_reversed_lon(store)[obs_id])
    assert align == gammapy_alignment
    # The run's start in the track's time reference, as Gammapy takes it.
    start = float((tstart - track.time_ref).to_value("s"))
    assert start == pytest.approx(float(header["TSTART"]), abs=1e-3)
    ra, dec, omega = sky_grid(float(header["RA_PNT"]), float(header["DEC_PNT"]), 4.4, 0.1)
    sky = geom.to_image().get_coord().skycoord
    np.testing.assert_allclose(ra, sky.ra.deg, atol=1e-9)
    np.testing.assert_allclose(omega, geom.to_image().solid_angle().to_value("sr"), rtol=1e-6)
    ours = fov_consumer_counts(stored, align, track, ra, dec, omega, MAP_ENERGY, start, ontime)
    if align == "ALTAZ":
        assert ours.times.size > 5  # the rotation is integrated over several steps
    inside = geom.to_image().separation(obs.get_pointing_icrs(obs.tmid)).deg < 2.0
    theirs = gammapy_map[:, inside]
    mine = ours.counts[:, inside]
    assert np.array_equal(theirs > 0, mine > 0)
    positive = theirs > 0
    assert positive.sum() > 0.5 * positive.size
    # Measured: 1e-7 (solid angles computed with astropy's separations in Gammapy).
    worst = float(np.max(np.abs(mine[positive] / theirs[positive] - 1)))
    assert worst < 1e-3, worst


# --------------------------------------------------------------------------- metrics


@pytest.fixture(scope="module")
def asymmetric_store(tmp_path_factory) -> Path:
    """Three runs at 30-50 deg zenith with a known ALTAZ gradient and camera asymmetry."""
    return simulate.simulate_datastore(
        tmp_path_factory.mktemp("asym") / "store",
        n_runs=3,
        events_per_run=20000,
        seed=5,
        zenith_range=(30.0, 50.0),
        fov_gradient=-0.1,
        camera_asymmetry=0.08,
    )


def mirrored(rate: xr.DataArray) -> xr.DataArray:
    """The model mirrored in fov_lon (same coordinates, values reversed)."""
    return rate.copy(data=rate.values[:, ::-1, :])


def rotated(rate: xr.DataArray) -> xr.DataArray:
    """The model turned by 180 deg about the pointing."""
    return rate.copy(data=rate.values[:, ::-1, ::-1])


def validation_of(store_dir: Path, change) -> xr.Dataset:
    store = open_datastore(store_dir)

    def events_of(obs_id: int):
        path, hdu = hdu_location(store, obs_id)
        return read_events(path, hdu, time=True)

    def model_of(obs_id: int):
        return change(true_model(store, obs_id, "ALTAZ")), "ALTAZ"

    maps = fov_validation_maps(run_table(store), events_of, model_of, MAP_ENERGY)
    return validate_fov(maps)


def passes(table: xr.Dataset) -> list[str]:
    """What fails the checks of a model equal to the truth (empty if none)."""
    s = table.attrs
    problems = []
    if abs(s["significance_mean"]) > 0.1:
        problems.append(f"pull mean {s['significance_mean']:.3f}")
    if abs(s["significance_width"] - 1) > 0.1:
        problems.append(f"pull width {s['significance_width']:.3f}")
    for name in ("gradient_lat", "gradient_lon"):
        pull = table[name] / table[f"{name}_err"]
        if np.any(np.abs(pull) > GRADIENT_SIGMAS):
            problems.append(f"{name} {table[name].values} +- {table[f'{name}_err'].values}")
    return problems


def test_true_model_passes(asymmetric_store):
    table = validation_of(asymmetric_store, lambda r: r)
    assert passes(table) == []
    assert table.sizes["obs_id"] == 3
    # obs/pred within Poisson errors of 1, and the shape deviance below that of a wrong model
    assert np.all(np.abs(table["significance"]) < 4)
    wrong = validation_of(asymmetric_store, mirrored)
    assert table.attrs["deviance_dof"] < wrong.attrs["deviance_dof"]


@pytest.mark.parametrize("change", [mirrored, rotated], ids=["mirrored", "rotated"])
def test_wrong_orientations_fail(asymmetric_store, change):
    table = validation_of(asymmetric_store, change)
    problems = passes(table)
    # The camera asymmetry (8 %/deg along fov_lon) comes back doubled, with the opposite sign.
    assert any("gradient_lon" in p for p in problems), problems
    assert np.all(table["gradient_lon"] > 0.1)


def test_gradient_fit_recovers_a_known_gradient():
    rng = np.random.default_rng(1)
    x, y = np.meshgrid(np.linspace(-2, 2, 21), np.linspace(-2, 2, 21))
    predicted = np.full(x.shape, 200.0)
    observed = rng.poisson(predicted * 1.1 * (1 + 0.05 * x - 0.1 * y))
    fit = fit_fov_gradient(observed, predicted, x, y)
    assert fit["norm"] == pytest.approx(1.1, rel=0.02)
    assert abs(fit["gradient_lon"] - 0.05) < 4 * fit["gradient_lon_err"]
    assert abs(fit["gradient_lat"] + 0.1) < 4 * fit["gradient_lat_err"]
    assert 0.001 < fit["gradient_lat_err"] < 0.01


# --------------------------------------------------------------------------- command line


def test_validate_and_crossval_on_3d_models(tmp_path, capsys):
    store = simulate.simulate_datastore(
        tmp_path / "store",
        n_runs=6,
        events_per_run=5000,
        seed=3,
        fov_gradient=-0.1,
        camera_asymmetry=0.05,
    )
    out = tmp_path / "out"
    assert main(["make", str(store), str(out), "--bkg-class", "bkg_3d", "--fov-bins", "30",
                 "--fov-max", "3", "-q"]) == 0  # fmt: skip
    capsys.readouterr()
    table_path = tmp_path / "table.nc"
    assert main(["validate", str(out), "--output", str(table_path)]) == 0
    printed = capsys.readouterr().out
    assert "xbkg validate: 6 runs on sky maps" in printed
    assert "shape Poisson deviance/dof" in printed
    assert "altitude gradient" in printed
    table = xr.open_dataset(table_path)
    assert set(table["obs_id"].values) == set(open_datastore(store).obs_ids)
    ratio = f"{float(table['ratio'].values[0]):9.3f}"
    assert ratio in printed
    table.close()

    assert main(["crossval", str(store), "--bkg-class", "bkg_3d", "--k", "3", "-q"]) == 0
    printed = capsys.readouterr().out
    assert "xbkg crossval (conditions, bkg_3d ALTAZ, k=3, seed=0): 6 runs on sky maps" in printed
    assert "shape Poisson deviance/dof" in printed

"""The geomagnetic term uses the field at the runs' own site, or is left out with a note."""

import shutil
import warnings

import numpy as np
import pytest
import xarray as xr
from astropy.io import fits

from xbkg import simulate
from xbkg.conditions import (
    SITES,
    ConditionsWarning,
    condition_values,
    fit_conditions,
    run_condition_factor,
    run_rate,
    runs_site,
)
from xbkg.cube import make_run_cube
from xbkg.io.datastore import open_datastore, run_table
from xbkg.pipeline import conditions_builder


def _table(**columns):
    n = len(next(iter(columns.values())))
    return xr.Dataset(
        {k: ("obs_id", v) for k, v in columns.items()}, coords={"obs_id": np.arange(1, n + 1)}
    )


def _sin_angle(runs, field):
    """Reference: sin of the angle between the pointings and a field direction (az, alt)."""
    az, alt = np.deg2rad(field)
    p_alt = np.deg2rad(90.0 - runs["zen_pnt"].values)
    p_az = np.deg2rad(runs["az_pnt"].values)
    pointing = np.stack([np.cos(p_alt) * np.cos(p_az), np.cos(p_alt) * np.sin(p_az), np.sin(p_alt)])
    b = np.array([np.cos(alt) * np.cos(az), np.cos(alt) * np.sin(az), np.sin(alt)])
    return np.linalg.norm(np.cross(pointing.T, b), axis=1)


def test_sites_table():
    for site in SITES.values():
        az, alt = site.field_direction
        assert 0 <= az < 360
        # the field points up in the southern magnetic hemisphere, down in the northern
        assert np.sign(alt) == -np.sign(site.latitude)
    assert SITES["MAGIC"].field_direction == pytest.approx((354.85, -37.49))


def test_site_from_coordinates_and_telescop():
    veritas = SITES["VERITAS"]
    runs = _table(geolat=[veritas.latitude + 0.01] * 2, geolon=[veritas.longitude] * 2)
    assert runs_site(runs) == (veritas, "")
    # GEOLAT = GEOLON = 0 is a placeholder: TELESCOP decides
    runs = _table(geolat=[0.0, 0.0], geolon=[0.0, 0.0], telescop=["HESS", "HESS"])
    assert runs_site(runs)[0] is SITES["H.E.S.S."]
    runs = _table(telescop=["CTAO-SOUTH", "cta-s"])
    assert runs_site(runs)[0] is SITES["CTAO-South"]


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        ({"zen_pnt": [20.0, 30.0]}, "no GEOLAT/GEOLON or TELESCOP"),
        ({"telescop": ["CTA", "CTA"]}, "TELESCOP 'CTA' names no single known site"),
        ({"geolat": [45.0, 45.0], "geolon": [7.0, 7.0]}, "GEOLAT 45, GEOLON 7 is no known site"),
        ({"telescop": ["HESS", "MAGIC"]}, "several sites: H.E.S.S. (1 runs), MAGIC (1 runs)"),
    ],
)
def test_unknown_or_several_sites(columns, expected):
    site, why = runs_site(_table(**columns))
    assert site is None
    assert expected in why
    if "several" not in expected:
        assert "add GEOLAT and GEOLON" in why


@pytest.fixture(scope="module")
def veritas_cube(tmp_path_factory):
    path = simulate.simulate_datastore(
        tmp_path_factory.mktemp("veritas") / "store",
        n_runs=8,
        seed=3,
        events_per_run=3000,
        telescope="VERITAS",
    )
    store = open_datastore(path)
    return make_run_cube(store, run_table(store))


def test_simulated_store_at_another_site(veritas_cube):
    """A store simulated at the VERITAS site gets the field there, from its headers."""
    site = SITES["VERITAS"]
    assert veritas_cube["geolat"].values == pytest.approx(site.latitude, abs=0.01)
    model = fit_conditions(veritas_cube)
    assert model.attrs["geomagnetic_site"] == "VERITAS"
    assert (model.attrs["geomagnetic_field_az"], model.attrs["geomagnetic_field_alt"]) == (
        pytest.approx(site.field_direction)
    )
    assert "geomagnetic" not in model.attrs["dropped_conditions"]
    values = condition_values(veritas_cube, ["geomagnetic"]).isel(energy=0, condition=0)
    np.testing.assert_allclose(values, _sin_angle(veritas_cube, site.field_direction), atol=1e-12)
    hess = _sin_angle(veritas_cube, SITES["H.E.S.S."].field_direction)
    assert np.abs(values.values - hess).max() > 0.1
    # runs of another site get no geomagnetic factor from this model
    elsewhere = veritas_cube.assign_coords(telescop=("obs_id", ["MAGIC"] * 8)).drop_vars(
        ["geolat", "geolon"]
    )
    np.testing.assert_allclose(
        run_condition_factor(model, elsewhere), np.exp(float(model["run_intercept"]))
    )


def test_store_without_site_drops_the_term(sim_cube):
    lacking = sim_cube.drop_vars(["geolat", "geolon", "altitude", "telescop"], errors="ignore")
    with pytest.warns(ConditionsWarning, match="geomagnetic term: the site of 16 of 16 runs") as w:
        model = fit_conditions(lacking)
    assert "add GEOLAT and GEOLON" in str(w[0].message)
    assert "geomagnetic" in model.attrs["dropped_conditions"].split(", ")
    assert model.sizes["run_condition"] == 0
    assert "geomagnetic_site" not in model.attrs
    rate = run_rate(model, lacking).where(lacking["exposure_time"] > 0, 1.0)
    assert np.all(np.isfinite(rate))
    with pytest.raises(KeyError, match="site of 16 of 16 runs is unknown"):
        fit_conditions(lacking, skip_unavailable=False)
    # cross-validation reports it once, not once per fold
    build = conditions_builder(period_days=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            build(lacking, lacking)
    assert [type(w.message) for w in caught] == [ConditionsWarning]


def test_runs_from_several_sites_drop_the_term(sim_cube):
    magic = SITES["MAGIC"]
    n = sim_cube.sizes["obs_id"]
    lat = np.where(np.arange(n) < 4, magic.latitude, sim_cube["geolat"].values)
    lon = np.where(np.arange(n) < 4, magic.longitude, sim_cube["geolon"].values)
    mixed = sim_cube.assign_coords(geolat=("obs_id", lat), geolon=("obs_id", lon))
    with pytest.warns(ConditionsWarning, match=r"several sites: H\.E\.S\.S\. \(12 runs\), MAGIC"):
        model = fit_conditions(mixed, period_days=None)
    assert model.attrs["dropped_conditions"] == "geomagnetic"


def test_site_from_event_headers(crab4_dir):
    """The old per-HDU store has the site only in its EVENTS headers: 0, 0 and TELESCOP HESS."""
    runs = run_table(open_datastore(crab4_dir))
    assert runs["telescop"].values.tolist() == ["HESS"] * 4
    assert runs_site(runs)[0] is SITES["H.E.S.S."]


def test_site_from_obs_index_header(sim_store, tmp_path):
    """GADF's obs-index header keywords count for every run; without them, the EVENTS headers."""
    store, runs = sim_store
    assert runs_site(runs)[0] is SITES["H.E.S.S."]
    copy = tmp_path / "store"
    shutil.copytree(store.path, copy)
    with fits.open(copy / "obs-index.fits.gz") as hdul:
        for key in ("GEOLAT", "GEOLON", "ALTITUDE", "TELESCOP"):
            del hdul[1].header[key]
        hdul.writeto(copy / "obs-index.fits.gz", overwrite=True)
    again = run_table(open_datastore(copy))
    np.testing.assert_allclose(again["geolat"], runs["geolat"])
    assert again["telescop"].values.tolist() == ["HESS"] * runs.sizes["obs_id"]


def test_dr1_keeps_its_field(dr1_dir):
    """On H.E.S.S. DR1 the term is within 0.01 of the one with the field of 2004-2008."""
    runs = run_table(open_datastore(dr1_dir))
    assert runs_site(runs) == (SITES["H.E.S.S."], "")
    runs = runs.assign_coords(energy_lo=("energy", [1.0]))
    values = condition_values(runs, ["geomagnetic"]).isel(energy=0, condition=0).values
    # IGRF for 2004-2008 (declination -14 deg, inclination -64.4 deg), used before
    old = _sin_angle(runs, (346.0, 64.4))
    assert np.abs(values - old).max() < 0.01
    assert np.corrcoef(values, old)[0, 1] > 0.999

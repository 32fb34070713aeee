"""Validation maths: predictions, templates, per-run tables, folds and cross-validation."""

import functools

import numpy as np
import pytest
import xarray as xr

from conftest import require
from xbkg import axes
from xbkg.exclusion import ring_excluded_fraction
from xbkg.options import options_for
from xbkg.pipeline import (
    build_background,
    builder_for,
    file_rate,
    grouped_builder,
    models_from_cube,
    run_models,
)
from xbkg.regions import exclusion_circles
from xbkg.truth import expected_counts, true_binned_rate
from xbkg.validation import (
    crossval,
    crossval_predictions,
    energy_redistribution,
    fold_assignment,
    fov_coordinates,
    predict_counts,
    run_rates,
    template_counts,
    time_scale,
    validate,
)


def expected(cube):
    """Exact expected counts of every run and bin (per live time), zero where unexposed."""
    counts = expected_counts(
        axes.edges(cube, "energy"),
        axes.edges(cube, "offset"),
        zenith=cube["zen_pnt"],
        livetime=cube["livetime"],
        muoneff=cube["muoneff"],
    )
    counts = counts.where(cube["exposure_time"] > 0, 0.0).transpose(*cube["counts"].dims)
    return counts.drop_vars([c for c in counts.coords if c not in counts.dims])


def truth_rate(cube):
    """The true rate of every run (per live time), as a model would hold it."""
    rate = true_binned_rate(
        axes.edges(cube, "energy"), axes.edges(cube, "offset"), cube["zen_pnt"], cube["muoneff"]
    )
    return rate.assign_attrs(time_convention="livetime").transpose("obs_id", "energy", "offset")


def test_truth_scores_poisson(sim_cube):
    """A model equal to the truth: chi2/dof ~ 1, scatter ~ Poisson, residuals ~ N(0, 1)."""
    # The statistics need the exact expected counts: the bin averages of the truth times
    # the bin volumes ("step"). The analysis' log-log interpolation of the same bin
    # averages is off by up to 8 % near the spectral turnover (tests/test_prediction.py).
    pred = predict_counts(truth_rate(sim_cube), sim_cube, prediction="step")
    table = validate(sim_cube, pred)
    s = table.attrs
    assert s["n_runs"] == 16
    assert s["normalisation"] == pytest.approx(1.0, abs=0.01)
    assert 0.9 < s["chi2_dof"] < 1.1
    assert 0.4 < s["scatter"] / s["poisson_scatter"] < 1.8
    assert abs(s["significance_mean"]) < 0.05
    assert abs(s["significance_width"] - 1) < 0.05
    assert abs(s["run_significance_mean"]) < 1.0
    # per run: ratio and dof
    assert np.all(np.abs(table["ratio"] - 1) < 5 * np.sqrt(1 / table["predicted"]))
    assert np.all(table["dof"] > 20)


def test_truth_rate_prediction_is_expected_counts(sim_cube):
    """rate x exposure x volume, with ONTIME exposure converted to the rate's LIVETIME."""
    assert sim_cube.attrs["time_convention"] == "ontime"
    pred = predict_counts(truth_rate(sim_cube), sim_cube, prediction="step")
    np.testing.assert_allclose(pred.values, expected(sim_cube).values, rtol=1e-9, atol=1e-12)
    factor = time_scale(sim_cube, "livetime")
    np.testing.assert_allclose(factor, sim_cube["livetime"] / sim_cube["ontime"])
    # The same rate declared per ONTIME predicts more by ONTIME / LIVETIME.
    per_on = predict_counts(truth_rate(sim_cube), sim_cube, time="ontime", prediction="step")
    np.testing.assert_allclose(
        (per_on.sum(("energy", "offset")) / pred.sum(("energy", "offset"))).values,
        (sim_cube["ontime"] / sim_cube["livetime"]).values,
    )


def test_wrong_models_score_badly(sim_cube):
    truth = truth_rate(sim_cube)
    # Exact bin integrals, so that the truth scores as the truth: the analysis'
    # interpolation misses it by a zenith-dependent few % near the threshold, which
    # alone doubles the scatter (tests/test_prediction.py).
    step = functools.partial(predict_counts, prediction="step")
    good = validate(sim_cube, step(truth, sim_cube)).attrs
    # A global factor changes the normalisation only.
    scaled = validate(sim_cube, step(truth * 1.25, sim_cube)).attrs
    assert scaled["normalisation"] == pytest.approx(good["normalisation"] / 1.25)
    assert scaled["chi2_dof"] == pytest.approx(good["chi2_dof"])
    assert scaled["scatter"] == pytest.approx(good["scatter"])
    # A run-to-run factor shows in the scatter, a wrong radial shape in the chi2.
    rng = np.random.default_rng(1)
    factor = xr.DataArray(rng.uniform(0.8, 1.2, 16), dims="obs_id")
    noisy = validate(sim_cube, step(truth * factor, sim_cube)).attrs
    assert noisy["scatter"] > 5 * good["scatter"]
    tilt = 1 + 0.3 * (sim_cube["offset"] - 1.0)
    tilted = validate(sim_cube, step(truth * tilt, sim_cube)).attrs
    assert tilted["chi2_dof"] > 1.5


def test_validation_bins(sim_cube):
    """Only exposed bins within the offset limit count; NaN predictions are reported."""
    pred = predict_counts(truth_rate(sim_cube), sim_cube)
    table = validate(sim_cube, pred, offset_max=1.0, merge_rings=1)
    inside = (sim_cube["offset_hi"] <= 1.0) & (sim_cube["exposure_time"] > 0)
    np.testing.assert_array_equal(
        table["observed"], sim_cube["counts"].where(inside, 0).sum(("energy", "offset"))
    )
    holes = pred.copy()
    holes[:, :, 0] = np.nan
    with_holes = validate(sim_cube, holes, offset_max=1.0, merge_rings=1)
    n_exposed_first_ring = (sim_cube["exposure_time"].isel(offset=0) > 0).sum("energy")
    np.testing.assert_array_equal(with_holes["n_unpredicted"], n_exposed_first_ring)
    with pytest.raises(ValueError, match="merge_rings"):
        validate(sim_cube, pred, merge_rings=0)


def test_energy_redistribution():
    fine = np.geomspace(0.1, 100, 21)
    # identical bins: identity
    np.testing.assert_allclose(energy_redistribution(fine, fine, np.ones(20)), np.eye(20))
    # nested bins: exact whatever the spectrum
    coarse = fine[::4]
    m = energy_redistribution(fine, coarse, np.geomspace(1, 1e-6, 20))
    np.testing.assert_allclose(m.sum(axis=1), 1.0)
    np.testing.assert_allclose(m, np.kron(np.eye(5), np.ones((4, 1))))
    # a pure power law is split exactly
    gamma = -2.7
    src = np.array([1.0, 2.0, 4.0, 8.0])
    centres = np.sqrt(src[:-1] * src[1:])
    bin_average = (src[1:] ** (gamma + 1) - src[:-1] ** (gamma + 1)) / (gamma + 1) / np.diff(src)
    dst = np.array([1.0, 1.5, 3.0, 8.0])
    m = energy_redistribution(src, dst, bin_average)
    integral = bin_average * np.diff(src)
    exact = (dst[1:] ** (gamma + 1) - dst[:-1] ** (gamma + 1)) / (gamma + 1)
    # interior bins see the local slope; the slope estimate from bin averages at the
    # centres is within 1 % of the true index for these bin widths
    np.testing.assert_allclose(integral @ m, exact, rtol=2e-3)
    assert np.isclose(
        np.log(bin_average[1] / bin_average[0]) / np.log(centres[1] / centres[0]), gamma, rtol=0.02
    )
    # target bins outside the source range cannot be predicted
    m = energy_redistribution(src, np.array([0.5, 1.0, 2.0]), bin_average)
    assert np.all(np.isnan(m[:, 0]))
    assert np.all(np.isfinite(m[:, 1]))


def test_fov_coordinates_match_gammapy():
    """DETX towards West, DETY towards North, as Gammapy's sky_to_fov for RADEC alignment."""
    import astropy.units as astropy_units
    from astropy.coordinates import SkyCoord

    sky_to_fov = require("gammapy.utils.coordinates").sky_to_fov

    rng = np.random.default_rng(2)
    offset = rng.uniform(0, 3, 50)
    pa = rng.uniform(0, 360, 50)
    pointing = SkyCoord(83.6, -5.0, unit="deg")
    sky = pointing.directional_offset_by(pa * astropy_units.deg, offset * astropy_units.deg)
    lon, lat = sky_to_fov(sky.ra, sky.dec, pointing.ra, pointing.dec)
    detx, dety = fov_coordinates(offset, pa)
    np.testing.assert_allclose(detx, lon.to_value("deg"), atol=1e-9)
    np.testing.assert_allclose(dety, lat.to_value("deg"), atol=1e-9)


def flat_template(value=1e-6, energy=(0.1, 1.0, 10.0), half_width=3.0):
    det = np.linspace(-half_width, half_width, 61)
    coords = axes.binned_coords(energy_edges := np.asarray(energy), np.array([0.0, 1.0]))
    coords = {k: v for k, v in coords.items() if k.startswith("energy")}
    for dim in ("fov_lon", "fov_lat"):
        coords[dim] = (dim, 0.5 * (det[:-1] + det[1:]))
        coords[f"{dim}_lo"] = (dim, det[:-1])
        coords[f"{dim}_hi"] = (dim, det[1:])
    return xr.DataArray(
        np.full((len(energy_edges) - 1, 60, 60), value),
        dims=("energy", "fov_lon", "fov_lat"),
        coords=coords,
        attrs={"units": "s-1 MeV-1 sr-1", "FOVALIGN": "RADEC"},
    )


def test_template_counts_flat_is_exact():
    """A flat template predicts rate x dE x exact unexcluded ring area."""
    tpl = flat_template()
    e_edges = np.array([0.1, 1.0, 10.0])
    t_edges = np.sqrt(np.linspace(0, 2.5**2, 100))
    omega = axes.ring_solid_angle(offset=t_edges).values
    width = np.diff(e_edges) * 1e6
    counts = template_counts(tpl, 10.0, -20.0, e_edges, t_edges)
    np.testing.assert_allclose(counts, 1e-6 * width[:, None] * omega[None], rtol=1e-12)
    regions = exclusion_circles([10.5, 9.0], [-20.2, -21.0], [0.4, 0.3])
    fraction = ring_excluded_fraction(t_edges, regions, 10.0, -20.0)
    assert fraction.max() > 0.1
    counts = template_counts(tpl, 10.0, -20.0, e_edges, t_edges, regions)
    np.testing.assert_allclose(
        counts, 1e-6 * width[:, None] * (omega * (1 - fraction))[None], rtol=1e-12
    )
    # energies beyond the template: unknown
    counts = template_counts(tpl, 10.0, -20.0, np.array([1.0, 10.0, 100.0]), t_edges)
    assert np.all(np.isfinite(counts[0]))
    assert np.all(np.isnan(counts[1]))
    with pytest.raises(ValueError, match="FOVALIGN"):
        template_counts(tpl.assign_attrs(FOVALIGN="ALTAZ"), 10.0, -20.0, e_edges, t_edges)


def test_template_counts_follow_the_template():
    """Only the side of the field of view where the template is non-zero predicts events."""
    tpl = flat_template()
    west = tpl.where(tpl["fov_lon"] > 0, 0.0)  # DETX > 0: West of the pointing (lower RA)
    e_edges, t_edges = np.array([0.1, 1.0]), np.array([0.0, 0.5, 1.0])
    half = template_counts(west, 50.0, 0.0, e_edges, t_edges)
    full = template_counts(tpl, 50.0, 0.0, e_edges, t_edges)
    np.testing.assert_allclose(half / full, 0.5, rtol=2e-3)
    # A circle East of the pointing removes nothing from a West-only template, one
    # West of it removes the rate x its area (to the grid's accuracy).
    east = exclusion_circles([50.7], [0.0], [0.2])
    np.testing.assert_allclose(
        template_counts(west, 50.0, 0.0, e_edges, t_edges, east), half, rtol=1e-2
    )
    west_circle = exclusion_circles([49.3], [0.0], [0.2])
    with_west = template_counts(west, 50.0, 0.0, e_edges, t_edges, west_circle)
    cap = 2 * np.pi * (1 - np.cos(np.deg2rad(0.2)))
    np.testing.assert_allclose(with_west[0, 0], half[0, 0])
    np.testing.assert_allclose(half[0, 1] - with_west[0, 1], 1e-6 * 0.9e6 * cap, rtol=1e-2)


def test_fold_assignment():
    ids = np.array([5, 3, 9, 1, 7, 2, 8])
    folds = fold_assignment(ids, k=3, seed=4)
    assert folds.sizes["obs_id"] == 7
    assert sorted(np.bincount(folds.values).tolist()) == [2, 2, 3]
    # independent of the order the runs come in
    again = fold_assignment(ids[::-1], k=3, seed=4)
    assert dict(zip(ids.tolist(), folds.values.tolist(), strict=True)) == dict(
        zip(ids[::-1].tolist(), again.values.tolist(), strict=True)
    )
    assert not np.array_equal(folds.values, fold_assignment(ids, k=3, seed=5).values)
    with pytest.raises(ValueError, match="k"):
        fold_assignment(ids, k=1)


def test_crossval_on_simulation(sim_cube):
    table = crossval(sim_cube, grouped_builder(), k=4, seed=0)
    assert table["fold"].values.tolist().count(0) == 4
    assert np.all(np.isfinite(table["ratio"]))
    # each held-out prediction comes from the other folds only: it differs from in-sample
    assert table.attrs["k"] == 4
    assert 0.8 < table.attrs["normalisation"] < 1.2


@pytest.mark.parametrize("model", ["conditions", "groups"])
def test_crossval_builds_what_make_builds(sim_store, model):
    """A fold's model is build_background's on its runs; each run gets the rate make indexes."""
    store, runs = sim_store
    bkg = build_background(store, runs, options=options_for(model=model, exclude="none"))
    models = models_from_cube(bkg.cube, bkg.options)
    xr.testing.assert_identical(models.groups, bkg.groups)
    xr.testing.assert_identical(models.model, bkg.model)
    xr.testing.assert_identical(models.smoothed, bkg.smoothed)
    if model == "conditions":
        xr.testing.assert_identical(models.conditions, bkg.conditions)
        written = run_models(bkg, runs.sortby("obs_id"))["rate"]
    else:
        assert models.conditions is None
        written = run_rates(bkg.smoothed, runs.sortby("obs_id"))
    rate = builder_for(bkg.options)(bkg.cube, bkg.cube)
    assert rate.attrs["time_convention"] == bkg.options.time
    # as the files hold it (log-log energy nodes)
    np.testing.assert_array_equal(rate.values, file_rate(written, bkg.options).values)
    assert not rate.isnull().any()  # filled, as written


def test_crossval_table_is_validation_of_held_out_predictions(sim_cube):
    predicted = crossval_predictions(sim_cube, grouped_builder(), k=4, seed=1)
    assert predicted.attrs["k"] == 4
    table = crossval(sim_cube, grouped_builder(), k=4, seed=1)
    again = validate(sim_cube, predicted.drop_vars("fold"))
    np.testing.assert_allclose(table["ratio"], again["ratio"])
    np.testing.assert_array_equal(table["fold"], predicted["fold"])


def test_prediction_from_a_model_on_finer_energy_bins(sim_cube):
    """Nested energy bins are summed exactly; a missing model bin makes its cube bin unknown."""
    coarse = axes.edges(sim_cube, "energy")
    fine = np.sort(np.concatenate([coarse, np.sqrt(coarse[:-1] * coarse[1:])]))
    rate = true_binned_rate(
        fine, axes.edges(sim_cube, "offset"), sim_cube["zen_pnt"], sim_cube["muoneff"]
    ).assign_attrs(time_convention="livetime")
    pred = predict_counts(rate.transpose("obs_id", "energy", "offset"), sim_cube, prediction="step")
    np.testing.assert_allclose(pred.values, expected(sim_cube).values, rtol=1e-9, atol=1e-12)
    holes = rate.copy()
    holes[:, 17, 5] = np.nan  # fine bin 17 lies in cube bin 8
    pred = predict_counts(
        holes.transpose("obs_id", "energy", "offset"), sim_cube, prediction="step"
    )
    exposed = (sim_cube["exposure_time"] > 0).isel(energy=8, offset=5)
    assert bool(pred.isel(energy=8, offset=5).isnull().where(exposed, True).all())
    assert int(pred.isnull().sum()) == int(exposed.sum())

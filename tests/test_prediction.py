"""Predictions as the analysis makes them: xbkg.prediction against Gammapy itself.

Gammapy is used here only as the reference the numpy code must reproduce:
its ``Background2D`` evaluation and log-log integration on synthetic rates
(exact zeros next to populated bins, power laws, points beyond the nodes and
the edges), and ``MapDatasetMaker`` on H.E.S.S. DR1 runs with the models
written by ``xbkg make``.
"""

import itertools
import warnings

import astropy.units as u
import numpy as np
import pytest
import xarray as xr
from scipy import integrate

from conftest import require
from xbkg import axes
from xbkg.axes import binned_coords
from xbkg.prediction import (
    consumer_counts,
    consumer_model,
    evaluate_rate,
    integrate_log_log,
    rate_integrals,
)
from xbkg.validation import predict_counts, template_predictions, time_scale, validate

hypothesis = require("hypothesis")
st = hypothesis.strategies

RATE_UNIT = "s-1 MeV-1 sr-1"


def make_rate(values, energy_edges, offset_edges, **attrs):
    """A rate DataArray along (energy, offset) with edges."""
    return xr.DataArray(
        values,
        dims=("energy", "offset"),
        coords=axes.binned_coords(energy_edges, offset_edges),
        attrs={"units": RATE_UNIT, **attrs},
    )


def gammapy_background(values, energy_edges, offset_edges):
    """The same rate as Gammapy's Background2D."""
    u = require("astropy.units")
    irf = require("gammapy.irf")
    maps = require("gammapy.maps")
    return irf.Background2D(
        axes=[
            maps.MapAxis.from_energy_edges(np.asarray(energy_edges) * u.TeV),
            maps.MapAxis.from_edges(np.asarray(offset_edges) * u.deg, name="offset", interp="lin"),
        ],
        data=values,
        unit=RATE_UNIT,
    )


def random_model(seed, dtype):
    """Random edges and log-normal rates with exact zeros, some next to populated bins."""
    rng = np.random.default_rng(seed)
    n_e, n_t = int(rng.integers(1, 9)), int(rng.integers(1, 7))
    if n_e == 1 and n_t == 1:
        n_e = 2  # Gammapy interpolates no rate with neither axis
    energy = np.sort(np.exp(rng.uniform(np.log(0.05), np.log(200.0), n_e + 1)))
    offset = np.concatenate([[0.0], np.sort(rng.uniform(0.05, 3.0, n_t))])
    values = np.exp(rng.normal(-9.0, 3.0, (n_e, n_t)))
    values[rng.random((n_e, n_t)) < 0.25] = 0.0
    if n_e > 2:
        values[0] = 0.0  # a whole row, as below a safe threshold
    return energy, offset, values.astype(dtype)


def evaluation_points(rng, energy, offset, background):
    """Energies and offsets inside, on the edges (as given and as Gammapy holds them) and beyond."""
    e = np.concatenate(
        [
            np.exp(rng.uniform(np.log(energy[0] / 3), np.log(energy[-1] * 3), 40)),
            energy,
            background.axes["energy"].edges.to_value("TeV"),
            np.sqrt(energy[:-1] * energy[1:]),
        ]
    )
    t = np.concatenate([rng.uniform(-0.2, offset[-1] + 0.5, 25), offset])
    return e, t


@hypothesis.given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.float32, np.float64]))
@hypothesis.settings(max_examples=40)
def test_evaluate_rate_is_gammapy_background2d(seed, dtype):
    """Interpolation, extrapolation to the edges, 0 beyond, zeros: as Background2D.evaluate."""
    energy, offset, values = random_model(seed, dtype)
    bkg = gammapy_background(values, energy, offset)
    e, t = evaluation_points(np.random.default_rng(seed + 1), energy, offset, bkg)
    u = require("astropy.units")
    # Full arrays: Gammapy mis-broadcasts along an axis of one bin. It warns where it
    # extrapolates far beyond the edges (then overwritten by 0).
    energies, offsets = np.broadcast_arrays(e[:, None], t[None, :])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        theirs = bkg.evaluate(energy=energies * u.TeV, offset=offsets * u.deg)
    theirs = theirs.to_value(RATE_UNIT)
    ours = evaluate_rate(make_rate(values, energy, offset), e[:, None], t[None, :])
    assert ours.shape == theirs.shape
    np.testing.assert_array_equal(ours == 0, theirs == 0)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=0)


@hypothesis.given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.float32, np.float64]))
@hypothesis.settings(max_examples=40)
def test_log_log_integral_is_gammapy(seed, dtype):
    """Energy integrals between map edges reaching beyond the nodes, as integrate_log_log."""
    energy, offset, values = random_model(seed, dtype)
    bkg = gammapy_background(values, energy, offset)
    rng = np.random.default_rng(seed + 2)
    # Map bins narrower than a factor 4 (wider ones with a zero at the lower edge make
    # Gammapy 2.1 return NaN, see xbkg.prediction), from below the model to above it.
    lo, hi = np.log(energy[0] / 2), np.log(energy[-1] * 2)
    logs = lo + np.concatenate([[0.0], np.cumsum(rng.uniform(0.05, np.log(3.5), 400))])
    map_edges = np.exp(np.append(logs[logs < hi], hi))
    assert np.all(np.diff(np.log(map_edges)) < np.log(4))
    t = rng.uniform(0, offset[-1] * 1.1, 7)
    u = require("astropy.units")
    energies, offsets = np.broadcast_arrays(map_edges[:, None], t[None, :])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        theirs = bkg.integrate_log_log(
            axis_name="energy", energy=energies * u.TeV, offset=offsets * u.deg
        ).to_value(f"TeV {RATE_UNIT}")
    at_edges = evaluate_rate(make_rate(values, energy, offset), map_edges[:, None], t[None, :])
    ours = integrate_log_log(at_edges, map_edges, axis=0)
    assert not np.isnan(theirs).any()
    np.testing.assert_array_equal(ours == 0, theirs == 0)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=0)


def test_integrate_log_log_is_trapz_loglog():
    """The rule alone, on values with zeros, equal neighbours and an E**-1 interval."""
    trapz_loglog = require("gammapy.utils.integrate").trapz_loglog
    rng = np.random.default_rng(3)
    x = np.geomspace(0.2, 50, 12)
    y = np.exp(rng.normal(-5, 2, (12, 9)))
    y[rng.random(y.shape) < 0.2] = 0.0
    y[4, 0] = y[5, 0]  # flat
    y[7, 1] = y[6, 1] * x[6] / x[7]  # E**-1: the logarithmic form
    theirs = trapz_loglog(y, x[:, None], axis=0)
    ours = integrate_log_log(y, x, axis=0)
    np.testing.assert_array_equal(ours == 0, theirs == 0)
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=0)
    # the axis may be anywhere, and NaN marks what it touches
    np.testing.assert_allclose(integrate_log_log(y.T, x, axis=1), ours.T, rtol=1e-14)
    y[3, 2] = np.nan
    holes = integrate_log_log(y, x, axis=0)
    assert np.isnan(holes[2:4, 2]).all()
    assert np.isfinite(holes[:, 3]).all()
    with pytest.raises(ValueError, match="energy"):
        integrate_log_log(y, x[:-1])


def test_power_law_is_integrated_exactly():
    """A power law in energy, exponential in offset: exact in the analysis' scheme.

    Log-log interpolation and extrapolation reproduce such a rate everywhere inside
    the model's edges, so whatever the model's and the cube's bins, the predicted
    integral is the analytic one (without the offset padding, which makes the rate
    flat at the field of view's centre and edge).
    """
    amplitude, index, scale = 3e-6, 2.7, 0.8

    def truth(e, t):
        return amplitude * e**-index * np.exp(-t / scale)

    model_e = np.geomspace(0.1, 100, 13)
    model_t = np.sqrt(np.linspace(0, 2.5**2, 17))
    rate = make_rate(
        truth(np.sqrt(model_e[:-1] * model_e[1:])[:, None], 0.5 * (model_t[:-1] + model_t[1:])),
        model_e,
        model_t,
    )
    e = np.array([0.1, 0.13, 0.7, 1.0, 9.0, 55.0, 100.0])
    t = np.array([0.0, 0.05, 0.4, 1.1, 1.13, 2.2, 2.5])
    got = rate_integrals(rate, e, t, pad_offset=False).values
    energy_part = amplitude * np.diff(e ** (1 - index)) / (1 - index) * 1e6  # MeV
    ring_part = [
        integrate.quad(
            lambda x: 2 * np.pi * np.sin(x) * np.exp(-np.rad2deg(x) / scale),
            *np.deg2rad(pair),
            epsabs=0,
            epsrel=1e-13,
        )[0]
        for pair in itertools.pairwise(t)
    ]
    np.testing.assert_allclose(got, np.outer(energy_part, ring_part), rtol=1e-9)
    # the evaluation alone, beyond the first and last node
    points_e = np.array([0.1000001, 0.11, 95.0, 100.0])
    points_t = np.array([0.0, 0.01, 2.45, 2.5])
    np.testing.assert_allclose(
        evaluate_rate(rate, points_e, points_t), truth(points_e, points_t), rtol=1e-12
    )
    # Gammapy's energy axis holds the edge 0.1 as 0.10000000000000002: 0.1 is outside
    assert evaluate_rate(rate, 0.1, 1.0) == 0


def zeros_model():
    """A smooth rate with the zeros models have: rows below threshold, holes, an empty corner."""
    e = np.geomspace(0.1, 100, 16)
    t = np.sqrt(np.linspace(0, 2.5**2, 21))
    ec, tc = np.sqrt(e[:-1] * e[1:]), 0.5 * (t[:-1] + t[1:])
    values = 1e-3 * ec[:, None] ** -2.6 * np.exp(-(tc[None, :] ** 2) / 2.0)
    values[:3] = 0.0  # below the safe threshold
    values[6, 4] = 0.0  # a hole inside the populated range
    values[-2:, -5:] = 0.0  # no events at the highest energies and offsets
    return make_rate(values, e, t, time_convention="ontime")


def test_consumer_model_is_what_mapdatasetmaker_evaluates():
    """Missing values between populated bins filled, offsets padded: as Gammapy prepares it."""
    rate = zeros_model()
    e, t = axes.edges(rate, "energy"), axes.edges(rate, "offset")
    bkg = gammapy_background(rate.values.copy(), e, t)
    bkg.interp_missing_data(axis_name="energy")
    padded = bkg.pad(1, mode="edge", axis_name="offset")
    ours = consumer_model(rate)
    np.testing.assert_allclose(ours.values, padded.data, rtol=1e-12, atol=0)
    np.testing.assert_allclose(
        axes.edges(ours, "offset"), padded.axes["offset"].edges.to_value("deg"), rtol=1e-12
    )
    assert ours.values[6, 5] > 0  # the hole, filled
    assert (ours.values[:3] == 0).all()  # the leading rows, not
    assert (ours.values[-2:, -6:] == 0).all()  # nor the trailing ones (padded too)
    # without the options it is the rate itself
    same = consumer_model(rate, interp_missing_data=False, pad_offset=False)
    xr.testing.assert_allclose(same, rate)


def fine_ring_sum(rate, energy_edges, offset_edges, n=2000):
    """Reference: the analysis' per-point energy integrals summed on thin equal-area sub-rings."""
    model = consumer_model(rate)
    out = []
    for a, b in itertools.pairwise(offset_edges):
        u = np.linspace(1 - np.cos(np.deg2rad(a)), 1 - np.cos(np.deg2rad(b)), n + 1)
        mid = np.rad2deg(np.arccos(1 - 0.5 * (u[:-1] + u[1:])))
        at_edges = evaluate_rate(model, energy_edges[:, None], mid[None, :])
        per_point = integrate_log_log(at_edges, energy_edges, axis=0)
        out.append(per_point.sum(axis=1) * 2 * np.pi * np.diff(u)[0])
    return np.array(out).T * 1e6


def test_ring_integrals_match_a_fine_sum():
    """The closed-form ring integral against 2000 sub-rings per ring, zeros included.

    To 1e-3 in every bin, including those next to the empty corner where the rate
    falls by hundreds of e-folds across a model bin, and 1e-5 per energy bin.
    """
    rate = zeros_model()
    energy = np.geomspace(0.1, 100, 11)  # not the model's bins
    offset = np.sqrt(np.linspace(0, 2.5**2, 31))
    ours = rate_integrals(rate, energy, offset).values
    reference = fine_ring_sum(rate, energy, offset)
    np.testing.assert_array_equal(ours == 0, reference == 0)
    # (below 1e-12 of the largest bin, e.g. 1e-259 at the empty corner, the fine sum is
    # the less precise one, 2e-3: ten times finer it agrees with ours to 2e-5)
    np.testing.assert_allclose(ours, reference, rtol=1e-3, atol=1e-12 * ours.max())
    np.testing.assert_allclose(ours.sum(axis=1), reference.sum(axis=1), rtol=1e-5)
    finer = rate_integrals(rate, energy, offset, n_sub=64).values
    np.testing.assert_allclose(ours, finer, rtol=1e-3)
    np.testing.assert_allclose(ours.sum(axis=1), finer.sum(axis=1), rtol=1e-6)
    # the bin whose lower edge is interpolated towards the empty rows predicts far less
    # than rate x width: the effect this module is there to show
    step = rate.isel(offset=0).values[3] * (energy[3] - energy[2]) * 1e6
    assert ours[2, 0] / axes.ring_solid_angle(offset=offset).values[0] < 0.2 * step


@pytest.fixture(scope="module")
def small_cube():
    """A run cube of three runs (exposure, run durations), with a safe-energy mask."""
    e = np.geomspace(0.1, 100, 16)
    t = np.sqrt(np.linspace(0, 2.5**2, 21))
    coords = axes.binned_coords(e, t)
    obs = np.array([11, 12, 13])
    ontime = np.array([1600.0, 1700.0, 1800.0])
    exposure = np.broadcast_to(ontime[:, None, None], (3, 15, 20)).copy()
    exposure[0, :5] = 0.0  # below run 11's threshold
    exposure[1, :, 3] *= 0.6  # part of a ring excluded
    return xr.Dataset(
        {
            "exposure_time": (("obs_id", "energy", "offset"), exposure),
            "counts": (("obs_id", "energy", "offset"), np.zeros((3, 15, 20), dtype=np.int64)),
        },
        coords={
            **coords,
            "obs_id": obs,
            "ontime": ("obs_id", ontime),
            "livetime": ("obs_id", 0.9 * ontime),
        },
        attrs={"time_convention": "ontime"},
    )


def test_consumer_counts_in_the_cube(small_cube):
    """Exposure x ring integrals, per run, with the cube's masks and time conventions."""
    rate = zeros_model()
    e, t = axes.edges(small_cube, "energy"), axes.edges(small_cube, "offset")
    per_second = rate_integrals(rate, e, t).values
    counts = consumer_counts(rate, small_cube)
    assert counts.dims == ("obs_id", "energy", "offset")
    assert counts.attrs["prediction"] == "consumer"
    expected = per_second[None] * small_cube["exposure_time"].values
    np.testing.assert_allclose(counts.values, expected, rtol=1e-12)
    assert (counts.values[0, :5] == 0).all()
    # the same through validation, and the rate given per run
    per_run = rate.expand_dims(obs_id=small_cube["obs_id"].values)
    xr.testing.assert_allclose(predict_counts(per_run, small_cube), counts)
    # a rate per LIVETIME predicts with the livetime
    livetime = predict_counts(rate.assign_attrs(time_convention="livetime"), small_cube)
    np.testing.assert_allclose(
        livetime.values, counts.values * time_scale(small_cube, "livetime").values[:, None, None]
    )
    # a run the rate does not cover
    with pytest.raises(ValueError, match="no model for runs"):
        consumer_counts(per_run.isel(obs_id=[0, 1]), small_cube)


def test_consumer_counts_unpredicted_bins(small_cube):
    """NaN rates and bins beyond the model's edges are unpredicted; unexposed bins are 0."""
    rate = zeros_model()
    holes = rate.copy()
    holes[14, 12] = np.nan  # the last energy: not between populated bins, so not filled
    counts = consumer_counts(holes, small_cube)
    unknown = counts.isnull()
    # the two energy bins whose edges are interpolated with the node, and the three rings
    # whose offsets are (the node's and its neighbours' inner and outer halves)
    assert int(unknown.any("obs_id").sum()) == 2 * 3
    assert bool(unknown.isel(energy=[13, 14], offset=[11, 12, 13]).all())
    # an inner NaN gap along energy is filled like a zero, as the analysis does
    filled = rate.copy()
    filled[9, :] = np.nan
    assert not consumer_counts(filled, small_cube).isnull().any()
    # a model on a narrower energy range and fewer rings
    narrow = rate.isel(energy=slice(3, 12), offset=slice(0, 15))
    partial = consumer_counts(narrow, small_cube)
    exposed = small_cube["exposure_time"] > 0
    outside_e = (small_cube["energy_lo"] < narrow["energy_lo"][0] * 0.999) | (
        small_cube["energy_hi"] > narrow["energy_hi"][-1] * 1.001
    )
    outside_t = small_cube["offset_hi"] > narrow["offset_hi"][-1] * 1.001
    np.testing.assert_array_equal(partial.isnull(), exposed & (outside_e | outside_t))
    assert bool((partial.fillna(0.0) >= 0).all())


def test_step_option_is_rate_times_width_times_solid_angle(small_cube):
    """prediction='step': the old numbers, rate x dE x dOmega x exposure."""
    rate = zeros_model().assign_attrs(time_convention="livetime")
    step = predict_counts(rate, small_cube, prediction="step")
    width = np.diff(axes.edges(small_cube, "energy")) * 1e6
    omega = axes.ring_solid_angle(small_cube).values
    direct = (
        rate.values[None]
        * width[None, :, None]
        * omega[None, None, :]
        * small_cube["exposure_time"].values
        * (small_cube["livetime"] / small_cube["ontime"]).values[:, None, None]
    )
    np.testing.assert_allclose(step.values, direct, rtol=1e-12, atol=0)
    assert step.attrs["prediction"] == "step"
    consumer = predict_counts(rate, small_cube)
    assert consumer.attrs["prediction"] == "consumer"
    # the two agree where the rate is smooth; the analysis fills the hole in bin 6 and
    # nearly empties the bin next to the empty rows
    ratio = (consumer.sum(("obs_id", "offset")) / step.sum(("obs_id", "offset"))).values
    assert np.all(np.abs(ratio[8:12] - 1) < 0.01)
    assert ratio[6] > 1.05
    assert ratio[3] < 0.5
    with pytest.raises(ValueError, match="prediction"):
        predict_counts(rate, small_cube, prediction="pixels")


def test_validate_records_the_prediction(small_cube):
    rate = zeros_model()
    cube = small_cube.assign(counts=small_cube["exposure_time"].astype(np.int64) * 0 + 5)
    table = validate(cube, predict_counts(rate, cube), merge_rings=1)
    assert table.attrs["prediction"] == "consumer"
    step = predict_counts(rate, cube, prediction="step")
    assert validate(cube, step, merge_rings=1).attrs["prediction"] == "step"
    with pytest.raises(ValueError, match="prediction"):
        validate(cube, step, prediction="consumer")
    bare = step.copy()
    bare.attrs = {}
    assert validate(cube, bare, merge_rings=1).attrs["prediction"] == "unknown"
    # bkg_2d templates follow the option
    templates = [rate.assign_attrs(BKGTIME="ONTIME")] * 3
    assert template_predictions(templates, cube).attrs["prediction"] == "consumer"
    stepped = template_predictions(templates, cube, prediction="step")
    assert stepped.attrs["prediction"] == "step"
    np.testing.assert_allclose(stepped.values, step.values, rtol=1e-12)


# --------------------------------------------------------------------------- H.E.S.S. DR1

DR1_RUNS = (20136, 23523)
MAP_BINSZ = 0.02  # deg
MAP_WIDTH = 5.4  # deg: the padded 2.51 deg radius fits with room to spare


def gammapy_background_map(observation):
    """MapDatasetMaker's background of one run on a 0.1-100 TeV map covering its field of view."""
    u = require("astropy.units")
    datasets = require("gammapy.datasets")
    makers = require("gammapy.makers")
    maps = require("gammapy.maps")
    energy_axis = maps.MapAxis.from_energy_bounds(0.1, 100, 15, unit="TeV")
    centre = observation.pointing.fixed_icrs
    geom = maps.WcsGeom.create(
        skydir=centre, binsz=MAP_BINSZ, width=MAP_WIDTH, frame="icrs", axes=[energy_axis]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        empty = datasets.MapDataset.create(geom)
        dataset = makers.MapDatasetMaker(selection=["background"]).run(empty, observation)
    offset = geom.to_image().separation(centre).to_value("deg")
    return (
        dataset.background.data,
        offset,
        energy_axis.edges.to_value("TeV"),
        observation.observation_time_duration.to_value("s"),
        u,
    )


def full_exposure_cube(obs_id, energy_edges, offset_edges, ontime):
    """A run-cube-like input: the run's ONTIME in every bin, no safe-energy mask, no exclusion."""
    coords = axes.binned_coords(energy_edges, offset_edges)
    shape = (1, energy_edges.size - 1, offset_edges.size - 1)
    return xr.Dataset(
        {"exposure_time": (("obs_id", "energy", "offset"), np.full(shape, ontime))},
        coords={**coords, "obs_id": [obs_id], "ontime": ("obs_id", [ontime])},
        attrs={"time_convention": "ontime"},
    )


@pytest.fixture(scope="module")
def dr1_models(dr1_make_dir):
    """Gammapy's view of the runs of DR1_RUNS in the 'xbkg make' output, and our rates."""
    data = require("gammapy.data")
    from xbkg.io.gadf import read_bkg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        store = data.DataStore.from_dir(dr1_make_dir)
        out = {}
        for obs_id in DR1_RUNS:
            observation = store.obs(obs_id)
            location = store.hdu_table.hdu_location(obs_id, "bkg")
            rate = read_bkg(location.path(), location.hdu_name)
            out[obs_id] = observation, rate
    return out


def compare_with_gammapy(observation, rate):
    """Our counts per energy bin against MapDatasetMaker's, within 2.5 deg and in the full map."""
    background, offset, energy_edges, ontime, _ = gammapy_background_map(observation)
    offset_edges = axes.edges(rate, "offset")
    assert offset_edges[-1] == pytest.approx(2.5)
    cube = full_exposure_cube(observation.obs_id, energy_edges, offset_edges, ontime)
    ours = consumer_counts(rate, cube, time="ontime").sum(("obs_id", "offset")).values
    theirs = background[:, offset <= offset_edges[-1]].sum(axis=1)
    # The full map holds the padded ring beyond 2.5 deg too: predict the consumer's
    # whole field of view.
    fov_edge = float(consumer_model(rate)["offset_hi"][-1])
    assert offset.max() > fov_edge + 3 * MAP_BINSZ
    fov = np.append(offset_edges, fov_edge)
    ours_fov = rate_integrals(rate, energy_edges, fov).sum("offset").values * ontime
    return ours, theirs, ours_fov, background.sum(axis=(1, 2))


@pytest.mark.parametrize("obs_id", DR1_RUNS)
def test_dr1_prediction_is_mapdatasetmaker(dr1_models, obs_id):
    """The 'xbkg make' model of a DR1 run: our counts are Gammapy's to 1 % in every energy bin.

    Measured: 1.2e-4 at most within 2.5 deg and 5.3e-4 for the whole map (the pixel sum
    against the exact ring integral).
    """
    observation, rate = dr1_models[obs_id]
    assert rate.attrs["BKGTIME"] == "ONTIME"
    ours, theirs, ours_fov, theirs_fov = compare_with_gammapy(observation, rate)
    assert (theirs > 0).all()
    np.testing.assert_allclose(ours, theirs, rtol=0.01, atol=0)
    np.testing.assert_allclose(ours_fov, theirs_fov, rtol=0.01, atol=0)


def test_dr1_prediction_with_zeros_is_mapdatasetmaker(dr1_models):
    """The same with exact zeros next to populated bins, in energy and in offset."""
    irf = require("gammapy.irf")
    observation, rate = dr1_models[DR1_RUNS[0]]
    zeroed = rate.copy()
    values = zeroed.values
    values[:4] = 0.0  # below a safe threshold of 0.63 TeV
    values[7, :] = 0.0  # a hole, filled by the analysis
    values[-3:, 60:] = 0.0  # nothing at high energies and large offsets
    bkg = observation.bkg
    observation.bkg = irf.Background2D(axes=bkg.axes, data=values.copy(), unit=bkg.unit)
    try:
        ours, theirs, ours_fov, theirs_fov = compare_with_gammapy(observation, zeroed)
    finally:
        observation.bkg = bkg
    # a zero at either edge of a bin empties it: up to 0.63 TeV, the first zero's edge
    assert (theirs[:4] == 0).all()
    np.testing.assert_array_equal(ours == 0, theirs == 0)
    np.testing.assert_allclose(ours, theirs, rtol=0.01, atol=0)
    np.testing.assert_allclose(ours_fov, theirs_fov, rtol=0.01, atol=0)
    # the bin above the zeros is nearly empty in the analysis, unlike rate x width
    width = np.diff(axes.edges(rate, "energy"))[4] * 1e6
    step = float((zeroed.isel(energy=4) * axes.ring_solid_angle(zeroed)).sum()) * width
    assert ours[4] < 0.05 * step * observation.observation_time_duration.to_value("s")


def test_cli_prediction_option(dr1_make_dir, gammacat_path, capsys):
    """--prediction chooses how 'xbkg validate' and 'xbkg crossval' integrate bkg_2d models."""
    from xbkg.cli import main

    runs = ["--obs-id", "20136", "20137", "20151", "20275", "20282", "20283"]
    common = [*runs, "--exclude", str(gammacat_path), "-q"]
    assert main(["validate", str(dr1_make_dir), *common]) == 0
    consumer = capsys.readouterr().out
    assert "prediction consumer:" in consumer
    assert main(["validate", str(dr1_make_dir), *common, "--prediction", "step"]) == 0
    step = capsys.readouterr().out
    assert "prediction step:" in step
    assert consumer.split(":", 2)[2] != step.split(":", 2)[2]
    assert main(["crossval", str(dr1_make_dir), *common, "--k", "3"]) == 0
    assert "prediction consumer:" in capsys.readouterr().out


def test_loglog_nodes_give_gammapy_the_bin_means(tmp_path) -> None:
    """Gammapy's log-log interpolant of the nodes averages to the model's mean over every bin."""
    require("gammapy")
    from gammapy.irf import Background2D

    from xbkg.io.gadf import write_bkg_2d
    from xbkg.prediction import loglog_nodes

    bin_edges = np.geomspace(0.1, 100, 16)
    coords = binned_coords(bin_edges, np.linspace(0, 2.5, 6))

    def spectrum(e):  # curved: a turn-on below 0.3 TeV, steepening above
        return e**-2.5 * np.exp(-((0.3 / e) ** 2)) * (1 + e / 10) ** -0.8

    fine = [np.geomspace(lo, hi, 2001) for lo, hi in itertools.pairwise(bin_edges)]
    means = np.array([np.trapezoid(spectrum(e), e) / (e[-1] - e[0]) for e in fine])
    rate = xr.DataArray(
        np.outer(means, np.linspace(1, 0.5, 5)),
        dims=("energy", "offset"),
        coords=coords,
        attrs={"units": "s-1 MeV-1 sr-1"},
    )
    nodes = loglog_nodes(rate)
    assert nodes.attrs["energy_nodes"] == "loglog"
    model = Background2D.read(write_bkg_2d(nodes, tmp_path / "bkg.fits"))
    for which, e in enumerate(fine):
        values = model.evaluate(energy=e * u.TeV, offset=0.25 * u.deg).to_value("s-1 MeV-1 sr-1")
        average = np.trapezoid(values, e) / (e[-1] - e[0])
        assert average == pytest.approx(means[which], rel=2e-4), which
    # The bin means themselves would be read 1-2 % too high where the spectrum falls.
    plain = Background2D.read(write_bkg_2d(rate, tmp_path / "means.fits"))
    e = fine[10]
    values = plain.evaluate(energy=e * u.TeV, offset=0.25 * u.deg).to_value("s-1 MeV-1 sr-1")
    assert np.trapezoid(values, e) / (e[-1] - e[0]) / means[10] > 1.01


def test_loglog_nodes_of_a_power_law_are_its_values_at_the_centres() -> None:
    from xbkg.prediction import loglog_nodes

    bin_edges = np.geomspace(0.1, 100, 16)
    coords = binned_coords(bin_edges, [0.0, 1.0])
    index = 2.7
    means = np.diff(bin_edges ** (1 - index)) / (1 - index) / np.diff(bin_edges)
    rate = xr.DataArray(means[:, None], dims=("energy", "offset"), coords=coords)
    nodes = loglog_nodes(rate).values[:, 0]
    np.testing.assert_allclose(nodes, coords["energy"].values ** -index, rtol=1e-10)
    # Zeros and NaN stay as they are; their neighbours still get finite nodes.
    holes = rate.copy(data=np.where(np.arange(15)[:, None] % 5 == 0, 0.0, means[:, None]))
    holes[7, 0] = np.nan
    out = loglog_nodes(holes).values[:, 0]
    assert (out[::5] == 0).all()
    assert np.isnan(out[7])
    assert np.isfinite(np.delete(out, 7)).all()


def reference_interpolant_means(values, bin_edges, centres):
    """Mean over each bin of the log-log interpolant through ``values`` (energy last).

    The plain definition, term by term: the power law between neighbouring
    nodes, continued beyond the end nodes with their segment's slope; a segment
    with a node that is not positive is replaced by the other side's (or a
    constant), and each half-bin is integrated exactly.
    """
    positive = values > 0
    log_v = np.log(np.where(positive, values, 1.0))
    slope = np.diff(log_v, axis=-1) / np.diff(np.log(centres))
    slope = np.where(positive[..., :-1] & positive[..., 1:], slope, np.nan)
    left = np.full(values.shape, np.nan)  # slope used below each node
    right = np.full(values.shape, np.nan)  # and above it
    left[..., 1:], right[..., :-1] = slope, slope
    left[..., 0], right[..., -1] = slope[..., 0], slope[..., -1]
    left = np.where(np.isnan(left), right, left)
    right = np.where(np.isnan(right), left, right)
    left, right = np.nan_to_num(left), np.nan_to_num(right)
    lo, hi = bin_edges[:-1], bin_edges[1:]

    def piece(s, a, b):
        k = s + 1.0
        with np.errstate(divide="ignore", invalid="ignore"):
            power = (b * (b / centres) ** s - a * (a / centres) ** s) / k
        return np.where(np.abs(k) < 1e-9, centres * np.log(b / a), power)

    total = piece(left, lo, centres) + piece(right, centres, hi)
    return np.where(positive, values * total / (hi - lo), values)


def reference_loglog_nodes(rate):
    """Nodes by the plain fixed-point iteration (multiplicative corrections, over-relaxed).

    It takes some 20 iterations on smooth spectra, about 130 on the H.E.S.S. DR1
    templates below (their means change by up to 10 decades from bin to bin).
    """
    bin_edges = axes.edges(rate, "energy")
    centres = rate["energy"].values
    means = np.moveaxis(rate.values.astype(np.float64), rate.get_axis_num("energy"), -1)
    nodes = means.copy()
    for _ in range(300):
        achieved = reference_interpolant_means(nodes, bin_edges, centres)
        with np.errstate(divide="ignore", invalid="ignore"):
            correction = np.where((means > 0) & (achieved > 0), means / achieved, 1.0)
        if np.all(np.abs(correction - 1.0) < 1e-10):
            break
        nodes = nodes * correction**1.3
    else:
        raise AssertionError("the reference did not converge")
    return np.moveaxis(nodes, -1, rate.get_axis_num("energy"))


def assert_nodes_match_reference(rate) -> None:
    """loglog_nodes equals the reference to 1e-9, keeps the bins that are not positive, and
    its interpolant has the bin means."""
    from xbkg.prediction import loglog_nodes

    nodes = loglog_nodes(rate)
    assert nodes.dims == rate.dims
    assert nodes.attrs["energy_nodes"] == "loglog"
    expected = reference_loglog_nodes(rate)
    np.testing.assert_allclose(nodes.values, expected, rtol=1e-9)
    kept = ~(rate.values > 0)
    np.testing.assert_array_equal(nodes.values[kept], rate.values[kept])  # NaN compare equal
    axis = rate.get_axis_num("energy")
    values = np.moveaxis(nodes.values, axis, -1)
    achieved = reference_interpolant_means(values, axes.edges(rate, "energy"), rate.energy.values)
    np.testing.assert_allclose(achieved, np.moveaxis(rate.values, axis, -1), rtol=1e-9)


def test_loglog_nodes_match_the_fixed_point_on_random_spectra() -> None:
    """Curved and noisy falling spectra with zeros (isolated bins too) and NaN, energy inside."""
    rng = np.random.default_rng(11)
    bin_edges = np.geomspace(0.1, 100, 16)
    coords = binned_coords(bin_edges)
    energy = coords["energy"].values[None, :, None]
    shape = (40, 15, 30)
    index = rng.uniform(0.5, 3.5, (40, 1, 30))
    turn_on = rng.uniform(0.0, 0.3, (40, 1, 30))
    values = energy**-index * np.exp(-((turn_on / energy) ** 2)) * rng.uniform(0.7, 1.3, shape)
    values[rng.random(shape) < 0.1] = 0.0
    values[:20, ::2][rng.random((20, 8, 30)) < 0.5] = 0.0  # isolated bins and lone pairs
    values[rng.random(shape) < 0.02] = np.nan
    values[0, 3, 0] = -1.0
    dims = ("x", "energy", "y")
    rate = xr.DataArray(values, dims=dims, coords={k: coords[k] for k in coords if "energy" in k})
    assert_nodes_match_reference(rate)
    assert_nodes_match_reference(rate.transpose("y", "x", "energy"))
    # E^-1: the slope + 1 is (about) 0, where the closed-form integrals are 0 / 0.
    means = np.log(bin_edges[1:] / bin_edges[:-1]) / np.diff(bin_edges)
    flat = xr.DataArray(means, dims="energy", coords={k: coords[k] for k in rate.coords})
    assert_nodes_match_reference(flat)
    # A spectrum's nodes do not depend on the others solved with it (nor on the chunks
    # a caller splits its runs into).
    from xbkg.prediction import loglog_nodes

    whole = loglog_nodes(rate)
    np.testing.assert_array_equal(loglog_nodes(rate[7:9]), whole[7:9])
    np.testing.assert_array_equal(loglog_nodes(rate[3, :, 5]), whole[3, :, 5])
    # An infinite bin is kept, like a zero: its neighbours still get finite nodes.

    spike = rate.copy()
    spike[5, 7, 3] = np.inf
    out = loglog_nodes(spike).values
    assert out[5, 7, 3] == np.inf
    assert np.isfinite(out[(spike.values > 0) & np.isfinite(spike.values)]).all()


def test_loglog_nodes_match_the_fixed_point_on_dr1(dr1_dir, dr1_make_dir) -> None:
    """The H.E.S.S. DR1 bkg_3d templates of two runs, and the bkg_2d models 'xbkg make' writes."""
    from xbkg.io.gadf import read_bkg

    runs = [dr1_dir / "data" / f"hess_dl3_dr1_obs_id_{obs:06d}.fits.gz" for obs in DR1_RUNS]
    assert_nodes_match_reference(xr.concat([read_bkg(path) for path in runs], "obs_id"))
    files = sorted(dr1_make_dir.glob("*group_*_table.fits*"))
    assert files, f"no group model files in {dr1_make_dir}"
    for path in files:
        assert_nodes_match_reference(read_bkg(path))

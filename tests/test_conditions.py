"""The condition-dependent model recovers a known background (simulated stores with truth)."""

import numpy as np
import pytest
import xarray as xr

from xbkg import axes
from xbkg.conditions import (
    SITES,
    condition_values,
    fit_conditions,
    period_correction,
    run_condition_factor,
    run_rate,
)
from xbkg.model import bin_volume
from xbkg.pipeline import conditions_builder
from xbkg.truth import expected_counts
from xbkg.validation import crossval, predict_counts, validate


@pytest.fixture(scope="module")
def model(sim_cube):
    return fit_conditions(sim_cube)


def expected(cube):
    counts = expected_counts(
        axes.edges(cube, "energy"),
        axes.edges(cube, "offset"),
        zenith=cube["zen_pnt"],
        livetime=cube["livetime"],
        muoneff=cube["muoneff"],
    )
    counts = counts.where(cube["exposure_time"] > 0, 0.0).transpose(*cube["counts"].dims)
    return counts.drop_vars([c for c in counts.coords if c not in counts.dims])


def test_recovered_rate_pulls(sim_cube, model):
    """Each run's recovered (unsmoothed) rate against the truth: pulls ~ N(0, 1)."""
    raw = model.assign(rate=model["rate_raw"])
    # Bin averages against the truth's bin integrals: step bins, exact by construction
    # (the consumer's log-log reading of bin averages is checked in test_prediction).
    predicted = predict_counts(run_rate(raw, sim_cube), sim_cube, prediction="step")
    truth = expected(sim_cube)
    # The statistical error of a run's rate is that of the reference bin it scales.
    n_ref = model["counts"].broadcast_like(predicted)
    good = (truth > 0) & (n_ref > 20)
    pulls = ((predicted - truth) / (predicted / np.sqrt(n_ref))).values[good.values]
    assert pulls.size > 5000
    assert abs(pulls.mean()) < 0.1
    assert abs(pulls.std() - 1) < 0.1


def test_model_scores_like_the_truth(sim_cube, model):
    # The fit's own likelihood is over step bins: its totals hold there exactly.
    table = validate(
        sim_cube, predict_counts(run_rate(model, sim_cube), sim_cube, prediction="step")
    )
    s = table.attrs
    assert abs(s["normalisation"] - 1) < 0.01
    assert s["scatter"] < 2 * s["poisson_scatter"]
    assert 0.85 < s["chi2_dof"] < 1.1
    held_out = crossval(sim_cube, conditions_builder(), k=4, seed=0).attrs
    assert held_out["scatter"] < 4 * held_out["poisson_scatter"]
    assert held_out["chi2_dof"] < 1.2


def test_fit_reproduces_summed_counts(sim_cube):
    """Without the period and run-level corrections the fit predicts every bin's total exactly."""
    m = fit_conditions(sim_cube, period_days=None, run_conditions=(), robust_scale=None)
    raw = m.assign(rate=m["rate_raw"])
    rate = run_rate(raw, sim_cube, time="livetime")
    live = sim_cube["exposure_time"] * sim_cube["livetime"] / sim_cube["ontime"]
    predicted = (rate * live * bin_volume(sim_cube)).where(sim_cube["exposure_time"] > 0, 0)
    np.testing.assert_allclose(
        predicted.sum("obs_id").values,
        sim_cube["counts"].sum("obs_id").values,
        rtol=1e-8,
        atol=1e-8,
    )
    assert m.attrs["time_convention"] == "livetime"
    assert m.attrs["input_time_convention"] == "ontime"


def test_time_conventions_and_clipping(sim_cube, model):
    live = run_rate(model, sim_cube, time="livetime")
    on = run_rate(model, sim_cube, time="ontime")
    assert on.attrs["time_convention"] == "ontime"
    ratio = (on / live).isel(energy=8, offset=0)
    np.testing.assert_allclose(ratio, sim_cube["livetime"] / sim_cube["ontime"])
    # Conditions beyond the training range get the factor at the edge of the range.
    runs = sim_cube.isel(obs_id=[0, 1]).copy()
    runs["zen_pnt"] = ("obs_id", [0.0, 89.0])
    runs["muoneff"] = ("obs_id", [0.5, 2.0])
    zen = sim_cube["zen_pnt"].values
    edge = sim_cube.isel(obs_id=[0, 1]).copy()
    edge["zen_pnt"] = ("obs_id", [zen.min(), zen.max()])
    edge["muoneff"] = ("obs_id", [sim_cube["muoneff"].values.min(), sim_cube["muoneff"].max()])
    row = 8  # an energy bin every run saw
    assert bool((sim_cube["exposure_time"].isel(energy=row).sum("offset") > 0).all())
    # (the run-level geomagnetic factor differs between these pointings; divided out)
    np.testing.assert_allclose(
        (run_rate(model, runs) / run_condition_factor(model, runs)).isel(energy=row),
        (run_rate(model, edge) / run_condition_factor(model, edge)).isel(energy=row),
    )


def test_period_correction(sim_cube, model):
    own = period_correction(model, sim_cube)
    assert own.shape == (16,)
    assert np.all(np.isfinite(own))
    # A run far in time from every training run gets no correction.
    later = sim_cube.assign_coords(tstart=sim_cube["tstart"] + 1e9)
    np.testing.assert_allclose(period_correction(model, later), 1.0)
    # A run never informs its own correction.
    one = fit_conditions(sim_cube.isel(obs_id=[0]))
    np.testing.assert_allclose(period_correction(one, sim_cube.isel(obs_id=[0])), 1.0)


def test_condition_values_and_errors(sim_cube):
    values = condition_values(sim_cube, ["log_secz", "log_muoneff", "above_threshold"])
    assert values.dims == ("obs_id", "energy", "condition")
    np.testing.assert_allclose(
        values.sel(condition="log_secz").isel(energy=0),
        -np.log(np.cos(np.deg2rad(sim_cube["zen_pnt"]))),
    )
    above = values.sel(condition="above_threshold")
    assert float(above.isel(energy=-1).min()) > 0 > float(above.isel(energy=0).max())
    with pytest.raises(KeyError, match="unknown condition"):
        condition_values(sim_cube, ["phase_of_moon"])
    with pytest.raises(KeyError, match="muoneff"):
        condition_values(sim_cube.drop_vars("muoneff"), ["log_muoneff"])
    with pytest.raises(ValueError, match="shape conditions"):
        fit_conditions(sim_cube, conditions=("log_secz",), shape_conditions=("log_muoneff",))
    with pytest.raises(ValueError, match="at least one run"):
        fit_conditions(sim_cube.isel(obs_id=[]))


def test_shape_conditions(sim_cube):
    """Optional radial-shape terms fit and stay finite; inputs are never modified."""
    before = sim_cube.copy(deep=True)
    m = fit_conditions(sim_cube, shape_conditions=("log_secz",))
    xr.testing.assert_identical(sim_cube, before)
    assert m["shape_coefficient"].dims == ("energy", "shape_condition")
    rate = run_rate(m, sim_cube)
    exposed = sim_cube["exposure_time"] > 0
    assert bool(np.isfinite(rate.where(exposed, 1.0)).all())


def test_correlated_conditions_converge(sim_cube):
    """Nearly collinear conditions: the damped fit stays finite and close to the simple one."""
    m = fit_conditions(sim_cube, conditions=("log_secz", "secz", "secz2", "log_muoneff"))
    assert np.all(np.isfinite(m["coefficient"]))
    simple = run_rate(fit_conditions(sim_cube), sim_cube)
    rich = run_rate(m, sim_cube)
    exposed = (sim_cube["exposure_time"] > 0) & (sim_cube["counts"].sum("obs_id") > 100)
    ratio = (rich / simple).where(exposed)
    assert float(abs(np.log(ratio)).max()) < 0.2


def test_likelihood_without_offset_dependence(sim_cube):
    """The fast path of a design without offset dependence equals the general one."""
    from xbkg.conditions import _ProfileLikelihood

    rng = np.random.default_rng(1)
    counts = sim_cube["counts"].transpose("obs_id", "energy", "offset").values.astype(float)
    exposure = sim_cube["exposure_time"].transpose("obs_id", "energy", "offset").values
    n_r, n_e, n_t = counts.shape
    design = rng.normal(size=(n_r, n_e, 1, 2))
    fast = _ProfileLikelihood(counts, exposure, design)
    full = _ProfileLikelihood(counts, exposure, np.repeat(design, n_t, axis=2).copy())
    assert fast.flat
    assert not full.flat
    for _ in range(3):
        beta = rng.normal(scale=0.3, size=(n_e, 2))
        assert fast.value(beta) == pytest.approx(full.value(beta), rel=1e-12)
        for a, b in zip(fast.derivatives(), full.derivatives(), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-8 * np.abs(b).max())
    # The gradient is that of the value (central differences).
    beta = rng.normal(scale=0.3, size=(n_e, 2))
    fast.value(beta)
    grad, hess = fast.derivatives()
    step = 1e-6
    for e, k in [(0, 0), (n_e // 2, 1), (n_e - 1, 0)]:
        shift = np.zeros_like(beta)
        shift[e, k] = step
        numeric = (fast.value(beta + shift) - fast.value(beta - shift)) / (2 * step)
        assert numeric == pytest.approx(grad[e, k], rel=1e-5, abs=1e-3)
        fast.value(beta + shift)
        plus = fast.derivatives()[0][e]
        fast.value(beta - shift)
        minus = fast.derivatives()[0][e]
        np.testing.assert_allclose((plus - minus) / (2 * step), hess[e, :, k], rtol=1e-4, atol=1e-3)


def test_unavailable_conditions_are_dropped(sim_cube):
    """A store without SAFE_ENERGY_LO still gets a model (without that condition)."""
    lacking = sim_cube.drop_vars("safe_energy_lo")
    m = fit_conditions(lacking)
    assert "near_threshold" not in m["condition"].values.tolist()
    assert m.attrs["dropped_conditions"] == "near_threshold"
    assert np.all(np.isfinite(run_rate(m, lacking).where(sim_cube["exposure_time"] > 0, 1.0)))
    with pytest.raises(KeyError, match="safe_energy_lo"):
        fit_conditions(lacking, skip_unavailable=False)


def test_geomagnetic_condition():
    """sin of the angle between the pointing and the field, on a small table."""
    field_az, field_alt = SITES["H.E.S.S."].field_direction
    runs = xr.Dataset(
        {
            "zen_pnt": ("obs_id", [90.0 - field_alt, 0.0, 90.0, 90.0 - field_alt]),
            "az_pnt": ("obs_id", [field_az, 123.0, field_az + 90.0, field_az + 180.0]),
            "telescop": ("obs_id", ["HESS"] * 4),
        },
        coords={"obs_id": [1, 2, 3, 4], "energy_lo": ("energy", [0.1, 1.0])},
    )
    values = condition_values(runs, ["geomagnetic"]).sel(condition="geomagnetic")
    expected = [0.0, np.cos(np.deg2rad(field_alt)), 1.0, np.sin(np.deg2rad(2 * field_alt))]
    np.testing.assert_allclose(values.isel(energy=0), expected, atol=1e-12)
    np.testing.assert_allclose(values.isel(energy=1), values.isel(energy=0))


def test_run_conditions(sim_cube):
    """Run-level conditions scale whole runs and keep the training runs' total."""
    m = fit_conditions(sim_cube, run_conditions=("geomagnetic",), period_days=None)
    assert m["run_coefficient"].dims == ("run_condition",)
    assert np.all(np.isfinite(m["run_coefficient"]))
    raw = m.assign(rate=m["rate_raw"])
    # Step bins: the fit keeps the training total of the step-bin prediction exactly.
    predicted = predict_counts(run_rate(raw, sim_cube), sim_cube, prediction="step")
    plain = predict_counts(
        run_rate(raw, sim_cube) / run_condition_factor(m, sim_cube), sim_cube, prediction="step"
    )
    np.testing.assert_allclose(float(predicted.sum()), float(plain.sum()), rtol=1e-8)
    # one factor per run: the same in every bin of the run
    ratio = (predicted / plain).where(plain > 0)
    np.testing.assert_allclose(ratio.max(("energy", "offset")), ratio.min(("energy", "offset")))
    # a run without azimuth gets the factor at the training mean
    lacking = sim_cube.drop_vars("az_pnt")
    np.testing.assert_allclose(run_condition_factor(m, lacking), np.exp(float(m["run_intercept"])))
    none = fit_conditions(sim_cube, run_conditions=())
    np.testing.assert_allclose(run_condition_factor(none, sim_cube), 1.0)
    with pytest.raises(ValueError, match="must not depend on energy"):
        fit_conditions(sim_cube, run_conditions=("near_threshold",))


def test_robust_weights(sim_cube):
    """A training run with an anomalous normalisation is down-weighted, the others are not."""
    odd = sim_cube.copy(deep=True)
    odd["counts"][0] = odd["counts"][0] * 2
    m = fit_conditions(odd)
    weight = m["run_weight"].values
    assert weight[0] < 0.3
    assert np.median(weight[1:]) > 0.9
    assert np.issubdtype(m["counts"].dtype, np.integer)
    np.testing.assert_array_equal(m["counts"], odd["counts"].sum("obs_id"))
    # the other runs' rates (fit alone) stay closer to those without the anomalous run
    others = sim_cube.isel(obs_id=slice(1, None))
    fit = {"period_days": None, "run_conditions": ()}
    clean = run_rate(fit_conditions(sim_cube, **fit), others)
    plain = run_rate(fit_conditions(odd, robust_scale=None, **fit), others)
    robust = run_rate(fit_conditions(odd, **fit), others)
    exposed = (others["exposure_time"] > 0) & (sim_cube["counts"].sum("obs_id") > 100)
    shift = {
        name: float(abs(np.log(rate / clean)).where(exposed).mean())
        for name, rate in (("plain", plain), ("robust", robust))
    }
    assert shift["robust"] < 0.8 * shift["plain"], shift


def test_condition_far_outside_its_range_where_unexposed(sim_cube, monkeypatch):
    """Values far off below a run's threshold (no exposure) do not upset the fit (exp overflow)."""
    from xbkg.conditions import CONDITIONS

    def odd(runs, energy_lo):
        below = runs["safe_energy_lo"].values[:, None] > energy_lo[None, :]
        return np.log(1 / np.cos(np.deg2rad(runs["zen_pnt"].values[:, None]))) + 1e4 * below

    monkeypatch.setitem(CONDITIONS, "odd", (("safe_energy_lo", "zen_pnt"), odd))
    m = fit_conditions(sim_cube, conditions=("odd", "log_muoneff"))
    assert np.all(np.isfinite(m["coefficient"]))
    assert bool(np.isfinite(m["rate"].where(m["counts"] > 0, 0.0)).all())
    rate = run_rate(m, sim_cube)
    assert bool(np.isfinite(rate.where(sim_cube["exposure_time"] > 0, 1.0)).all())

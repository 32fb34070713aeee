"""The default 'poisson' smoothing: a penalised Poisson fit of the log rate."""

import numpy as np
import xarray as xr

from conftest import require
from xbkg import axes
from xbkg.grouping import GroupAxis, group_definitions
from xbkg.model import compute_rate, smooth, stack_groups

hypothesis = require("hypothesis")
st = require("hypothesis.strategies")
given, settings = hypothesis.given, hypothesis.settings


def make_model(counts, exposure):
    counts = np.asarray(counts)
    n_runs, n_e, n_t = counts.shape
    coords = axes.binned_coords(
        np.geomspace(0.1, 100, n_e + 1), np.sqrt(np.linspace(0, 6.25, n_t + 1))
    )
    cube = xr.Dataset(
        {
            "counts": (("obs_id", "energy", "offset"), counts),
            "exposure_time": (("obs_id", "energy", "offset"), np.asarray(exposure, dtype=float)),
        },
        coords={**coords, "obs_id": np.arange(n_runs) + 1, "zen_pnt": ("obs_id", [10.0] * n_runs)},
    )
    groups = group_definitions([GroupAxis("ZEN_PNT", edges=(0, 90))])
    return compute_rate(stack_groups(cube, groups))


def predicted_counts(model, rate):
    return (
        rate * model["exposure_time"] * axes.ring_solid_angle(model) * axes.energy_width_mev(model)
    )


@settings(max_examples=30, deadline=None)
@given(
    lam=st.floats(0.0, 200.0),
    n_e=st.integers(1, 6),
    n_t=st.integers(3, 60),
    seed=st.integers(0, 2**31),
    hole=st.booleans(),
)
def test_poisson_smoothing_properties(lam, n_e, n_t, seed, hole):
    rng = np.random.default_rng(seed)
    shape = np.linspace(1.0, 0.2, n_t)[None, :] * np.geomspace(1, 0.01, n_e)[:, None]
    counts = rng.poisson(lam * shape, size=(1, n_e, n_t))
    exposure = np.full(counts.shape, 1000.0) * rng.uniform(0.5, 1, size=counts.shape)
    if hole:
        exposure[..., n_t // 3] = 0.0
        counts[..., n_t // 3] = 0
        exposure[:, 0, :] = 0.0  # a row below every threshold
        counts[:, 0, :] = 0
    model = make_model(counts, exposure)
    before = model.copy(deep=True)
    sm = smooth(model)
    xr.testing.assert_identical(model, before)
    assert sm.attrs["smoothing"] == "poisson"
    rate = sm["rate"].values
    exposed = model["exposure_time"].values > 0
    # unexposed bins stay marked, exposed ones are finite and never negative
    assert np.all(np.isnan(rate[~exposed]))
    assert np.all(np.isfinite(rate[exposed]))
    assert np.all(rate[exposed] >= 0)
    row_counts = model["counts"].sum("offset").values
    if row_counts.sum() > 0:
        # no exact zeros inside the exposed range once the model has events
        assert np.all(rate[exposed] > 0)
    # every energy row with events predicts exactly its observed counts
    pred = predicted_counts(model, sm["rate"]).sum("offset").values
    has_events = row_counts > 0
    np.testing.assert_allclose(pred[has_events], row_counts[has_events], rtol=1e-9)


def test_flat_rate_stays_flat_to_the_axis_ends():
    counts = np.full((1, 3, 99), 10_000)
    model = make_model(counts, np.full(counts.shape, 1.0))
    r = smooth(model)["rate"].values[0]
    np.testing.assert_allclose(r / r.mean(axis=1, keepdims=True), 1.0, rtol=2e-3)


def test_follows_the_data_where_statistics_are_high():
    """A steep radial profile with many events is kept (no blurring of real structure)."""
    n_t = 40
    t = np.linspace(0, 1, n_t)
    truth = np.exp(-((t / 0.4) ** 2))
    counts = np.rint(1e5 * truth)[None, None, :].astype(int)
    model = make_model(counts, np.ones(counts.shape))
    r = smooth(model)["rate"].values[0, 0]
    raw = model["rate"].values[0, 0]
    np.testing.assert_allclose(r, raw, rtol=0.03)


def test_empty_rows_get_neighbour_values_not_zero():
    """Low statistics: rows without events follow the spectrum of their neighbours."""
    rng = np.random.default_rng(5)
    n_e, n_t = 10, 30
    spectrum = np.geomspace(2000, 0.02, n_e)  # events per bin, falling like a power law
    counts = rng.poisson(spectrum[:, None] * np.ones(n_t), size=(1, n_e, n_t))
    counts[0, -1] = 0
    model = make_model(counts, np.ones(counts.shape))
    r = smooth(model)["rate"].values[0]
    assert np.all(r > 0)
    truth = spectrum / (
        axes.energy_width_mev(model).values * axes.ring_solid_angle(model).values.mean()
    )
    # the last, empty row is within a factor 10 of the truth (a power law continued)
    ratio = r[-1].mean() / truth[-1]
    assert 0.1 < ratio < 10


def test_empty_row_positive_with_poisson_zero_with_adaptive():
    counts = np.zeros((1, 2, 12), dtype=int)
    counts[0, 1] = 5
    model = make_model(counts, np.ones(counts.shape))
    assert np.all(smooth(model, "adaptive")["rate"].values[0, 0] == 0)
    assert np.all(smooth(model)["rate"].values[0, 0] > 0)


@settings(max_examples=30, deadline=None, derandomize=True, database=None)
@given(n_e=st.integers(1, 12), n_t=st.integers(1, 40), seed=st.integers(0, 2**31))
def test_penalty_solver_matches_dense(n_e, n_t, seed):
    """The numpy block solver of the smoothing's Newton steps equals a dense solve."""
    from xbkg.model import (
        POISSON_ENERGY_PENALTY,
        POISSON_OFFSET_PENALTY,
        _PlanePenalty,
        _second_difference_penalty,
    )

    rng = np.random.default_rng(seed)
    size = n_e * n_t
    dense = (
        POISSON_OFFSET_PENALTY * np.kron(np.eye(n_e), _second_difference_penalty(n_t))
        + POISSON_ENERGY_PENALTY * np.kron(_second_difference_penalty(n_e), np.eye(n_t))
        + _PlanePenalty.RIDGE * np.eye(size)
    )
    if n_t >= 3:
        d = np.diff(np.eye(n_t), n=2, axis=0)
        np.testing.assert_array_equal(_second_difference_penalty(n_t), d.T @ d)
    penalty = _PlanePenalty(n_e, n_t)
    x = rng.normal(size=size)
    np.testing.assert_allclose(penalty.apply(x), dense @ x, rtol=1e-12, atol=1e-9)
    mu = rng.exponential(10.0, size) * (rng.random(size) < 0.7)
    rhs = rng.normal(size=size)
    matrix = dense + np.diag(mu)
    solution = penalty.solve(mu, rhs)
    # Where many mu are 0 only the tiny ridge keeps the system regular, so two
    # exact solvers may differ in the solution by the condition number times the
    # rounding error; what both must achieve is a small backward error.
    residual = np.linalg.norm(matrix @ solution - rhs)
    bound = 1e-10 * (np.linalg.norm(matrix, 2) * np.linalg.norm(solution) + np.linalg.norm(rhs))
    assert residual <= bound, (residual, bound)
    if np.linalg.cond(matrix) < 1e6:
        expected = np.linalg.solve(matrix, rhs)
        np.testing.assert_allclose(solution, expected, rtol=1e-8, atol=1e-10)

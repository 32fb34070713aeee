import numpy as np
import pytest
import xarray as xr
from scipy import ndimage

from conftest import require
from xbkg import axes
from xbkg.grouping import GroupAxis, group_definitions
from xbkg.model import compute_rate, smooth, stack_groups

hypothesis = require("hypothesis")
st = require("hypothesis.strategies")
given, settings = hypothesis.given, hypothesis.settings


def make_cube(counts, exposure, zen):
    counts = np.asarray(counts)
    n_runs, n_e, n_t = counts.shape
    coords = axes.binned_coords(
        np.geomspace(0.1, 100, n_e + 1), np.sqrt(np.linspace(0, 4, n_t + 1))
    )
    return xr.Dataset(
        {
            "counts": (("obs_id", "energy", "offset"), counts),
            "exposure_time": (("obs_id", "energy", "offset"), np.asarray(exposure, dtype=float)),
        },
        coords={**coords, "obs_id": np.arange(n_runs) + 1, "zen_pnt": ("obs_id", zen)},
    )


def test_stack_and_rate_units():
    rng = np.random.default_rng(1)
    counts = rng.poisson(20, size=(4, 3, 5))
    exposure = np.full((4, 3, 5), 1000.0)
    exposure[:, 0, :] = 0.0  # energy row 0: never exposed
    counts[:, 0, :] = 0
    exposure[3, 1, 2] = 500.0
    cube = make_cube(counts, exposure, zen=[10.0, 20.0, 55.0, 60.0])
    groups = group_definitions([GroupAxis("ZEN_PNT", edges=(0, 49, 90))])
    model = compute_rate(stack_groups(cube, groups))
    assert model["counts"].dims == ("group", "energy", "offset")
    np.testing.assert_array_equal(model["counts"].sel(group=0), counts[:2].sum(0))
    assert model["n_runs"].values.tolist() == [2, 2]
    assert model["rate"].attrs["units"] == "s-1 MeV-1 sr-1"
    # rate x exposure x dE(MeV) x dOmega == counts; the energy width is 1e6 x the TeV width
    de_tev = np.diff(axes.edges(model, "energy"))
    omega = axes.ring_solid_angle(offset=axes.edges(model, "offset")).values
    recon = model["rate"] * model["exposure_time"] * de_tev[:, None] * 1e6 * omega
    np.testing.assert_allclose(
        recon.isel(energy=slice(1, None)), model["counts"].isel(energy=slice(1, None))
    )
    # no exposure -> NaN, exposed but empty -> 0
    assert np.all(np.isnan(model["rate"].isel(energy=0)))
    assert not np.any(np.isnan(model["rate"].isel(energy=slice(1, None))))
    # errors are Poisson
    np.testing.assert_allclose(
        (model["rate_error"] / model["rate"]).isel(energy=1),
        1 / np.sqrt(model["counts"].isel(energy=1)),
    )


def test_flat_solid_angle_is_gammapy06():
    cube = make_cube(np.ones((1, 2, 3), int), np.ones((1, 2, 3)), zen=[0.0])
    groups = group_definitions([GroupAxis("ZEN_PNT", edges=(0, 90))])
    exact = compute_rate(stack_groups(cube, groups))
    flat = compute_rate(stack_groups(cube, groups), solid_angle="flat")
    ratio = (exact["rate"] / flat["rate"]).values
    t = np.deg2rad(axes.edges(cube, "offset"))
    np.testing.assert_allclose(
        ratio[0, 0], np.pi * np.diff(t**2) / (2 * np.pi * -np.diff(np.cos(t)))
    )


def reference_gammapy06_smooth(counts_row, rate_row):
    """Straight transcription of the algorithm description in the issue."""
    n_bins = len(rate_row)
    nev = counts_row.sum()
    if nev == 0:
        return rate_row
    sigma = np.clip(150 * n_bins / nev, 4, n_bins / 6)
    x = np.linspace(-3, 3, int(6 * sigma))
    k = np.exp(-(x**2) / 2)
    return ndimage.convolve(rate_row, k / k.sum(), mode="reflect")


def test_gammapy06_smoothing_matches_reference():
    rng = np.random.default_rng(3)
    counts = rng.poisson([[0.0], [2.0], [40.0]], size=(1, 3, 99))
    cube = make_cube(counts, np.full(counts.shape, 1500.0), zen=[10.0])
    model = compute_rate(
        stack_groups(cube, group_definitions([GroupAxis("ZEN_PNT", edges=(0, 90))]))
    )
    sm = smooth(model, "gammapy-0.6")
    for i in range(3):
        ref = reference_gammapy06_smooth(counts[0, i], model["rate"].values[0, i])
        np.testing.assert_allclose(sm["rate"].values[0, i], ref, rtol=1e-13, atol=0)
    # Never in place: the raw model is untouched
    assert not np.array_equal(sm["rate"].values[0, 2], model["rate"].values[0, 2])
    np.testing.assert_array_equal(model["rate"].values, compute_rate(model)["rate"].values)
    assert sm.attrs["smoothing"] == "gammapy-0.6"
    assert model.attrs["smoothing"] == "none"


@settings(max_examples=40, deadline=None)
@given(
    lam=st.floats(0.0, 200.0),
    n_bins=st.integers(6, 120),
    seed=st.integers(0, 2**31),
    hole=st.booleans(),
)
def test_adaptive_smoothing_properties(lam, n_bins, seed, hole):
    rng = np.random.default_rng(seed)
    counts = rng.poisson(lam * np.linspace(1.0, 0.2, n_bins), size=(1, 2, n_bins))
    exposure = np.full(counts.shape, 1000.0) * rng.uniform(0.5, 1, size=counts.shape)
    if hole:
        exposure[..., n_bins // 3] = 0.0
        counts[..., n_bins // 3] = 0
    cube = make_cube(counts, exposure, zen=[10.0])
    model = compute_rate(
        stack_groups(cube, group_definitions([GroupAxis("ZEN_PNT", edges=(0, 90))]))
    )
    before = model.copy(deep=True)
    sm = smooth(model, "adaptive")
    xr.testing.assert_identical(model, before)
    rate = sm["rate"].values
    exposed = model["exposure_time"].values > 0
    assert np.all(np.isnan(rate[~exposed]))
    assert np.all(rate[exposed] >= 0)
    # conserves counts per energy row
    pred = (
        sm["rate"]
        * model["exposure_time"]
        * axes.ring_solid_angle(model)
        * axes.energy_width_mev(model)
    )
    np.testing.assert_allclose(
        pred.sum("offset").values, model["counts"].sum("offset").values, rtol=1e-9, atol=1e-9
    )


def test_adaptive_smoothing_flat_truth_has_no_edge_artefacts():
    # A flat rate with high statistics stays flat up to the axis ends (reflect-free).
    counts = np.full((1, 1, 99), 10_000)
    cube = make_cube(counts, np.full(counts.shape, 1.0), zen=[10.0])
    model = compute_rate(
        stack_groups(cube, group_definitions([GroupAxis("ZEN_PNT", edges=(0, 90))]))
    )
    sm = smooth(model, "adaptive")
    r = sm["rate"].values[0, 0]
    np.testing.assert_allclose(r / r.mean(), 1.0, rtol=2e-3)


def test_smooth_requires_rate():
    cube = make_cube(np.ones((1, 1, 6), int), np.ones((1, 1, 6)), zen=[10.0])
    model = stack_groups(cube, group_definitions([GroupAxis("ZEN_PNT", edges=(0, 90))]))
    with pytest.raises(ValueError, match="compute_rate"):
        smooth(model)
    with pytest.raises(ValueError, match="method must be"):
        smooth(compute_rate(model), "boxcar")


def _power_law_rate(index: float = -2.5) -> xr.DataArray:
    from xbkg.axes import binned_coords

    coords = binned_coords(None, None)
    energy = np.sqrt(coords["energy_lo"].values * coords["energy_hi"].values)
    offset = 0.5 * (coords["offset_lo"].values + coords["offset_hi"].values)
    values = 1e-3 * energy[:, None] ** index * np.exp(-(offset[None, :] ** 2) / 2)
    return xr.DataArray(values, dims=("energy", "offset"), coords=coords)


def test_fill_continues_a_power_law_exactly():
    from xbkg.model import fill_unconstrained

    truth = _power_law_rate()
    holed = truth.copy()
    holed[:3] = 0.0  # below a threshold
    holed[-2:] = np.nan  # beyond the last counts
    holed[8] = 0.0  # an empty row inside
    filled_rate, filled = fill_unconstrained(holed)
    assert filled.dtype == bool
    np.testing.assert_array_equal(
        filled.values.any(axis=1), np.isin(np.arange(15), [0, 1, 2, 8, 13, 14])
    )
    np.testing.assert_allclose(filled_rate.values, truth.values, rtol=1e-9)
    # constrained bins keep their value exactly, and the input is not modified
    kept = ~filled.values
    np.testing.assert_array_equal(filled_rate.values[kept], holed.values[kept])
    assert np.all(holed[:3].values == 0)


def test_fill_inside_a_row_and_limits():
    from xbkg.model import fill_unconstrained

    truth = _power_law_rate(index=-0.2)  # rising above: clipped to a falling continuation
    holed = truth.copy()
    holed[5, 40:50] = 0.0
    holed[12:] = 0.0
    mask = xr.ones_like(holed, dtype=bool)
    mask[0] = False  # constrained explicitly excluded, although positive
    filled_rate, filled = fill_unconstrained(holed, mask)
    assert np.all(filled_rate.values > 0)
    assert np.all(np.isfinite(filled_rate.values))
    assert filled.values[0].all()
    assert filled.values[5, 40:50].all()
    assert filled.values[12:].all()
    # log-linear along offset between the row's neighbours
    centres = truth["offset"].values
    ends = np.log(holed.values[5, [39, 50]])
    expected = np.interp(centres[40:50], centres[[39, 50]], ends)
    np.testing.assert_allclose(np.log(filled_rate.values[5, 40:50]), expected, rtol=1e-12)
    # above the data the rate falls at least as E^-1
    ratio = filled_rate.values[13] / filled_rate.values[12]
    width = float(truth["energy"][13] / truth["energy"][12])
    assert np.all(ratio <= width**-1 * (1 + 1e-12))
    # a plane without any constrained bin is returned as it is, not marked
    empty = xr.zeros_like(holed)
    same, none = fill_unconstrained(empty)
    assert not none.values.any()
    assert np.all(same.values == 0)


def test_fill_keeps_other_dimensions():
    from xbkg.model import fill_unconstrained

    one = _power_law_rate()
    many = xr.concat([one, 2 * one], dim="group").assign_coords(group=[0, 1]).copy()
    many[1, :2] = 0.0
    rate, filled = fill_unconstrained(many.transpose("offset", "group", "energy"))
    assert rate.dims == ("offset", "group", "energy")
    assert int(filled.sel(group=0).sum()) == 0
    np.testing.assert_allclose(rate.sel(group=1).values, 2 * one.T.values, rtol=1e-9)

"""Products as labelled data: selections, sums before division, smoothed models, templates."""

import numpy as np
import pytest
import xarray as xr

from conftest import require
from xbkg import products
from xbkg.axes import binned_coords, edges, energy_edges
from xbkg.io.datastore import open_datastore, run_table
from xbkg.io.gadf import read_bkg
from xbkg.model import bin_volume
from xbkg.pipeline import build_background
from xbkg.simulate import simulate_datastore

hypothesis = require("hypothesis")
st = require("hypothesis.strategies")
given, settings = hypothesis.given, hypothesis.settings


@pytest.fixture(scope="module")
def sim_bkg(tmp_path_factory):
    """A small simulated build: 6 runs in two zenith groups (4 + 2)."""
    path = simulate_datastore(tmp_path_factory.mktemp("sim") / "store", n_runs=6, seed=1)
    store = open_datastore(path)
    return build_background(store, run_table(store))


def manual_rate(model, e, o):
    """sum(counts) / sum(exposure x volume) over positional bins, in plain numpy."""
    counts = model["counts"].values[..., e, o].sum(axis=(-2, -1))
    denominator = (model["exposure_time"] * bin_volume(model)).transpose(*model["counts"].dims)
    total = denominator.values[..., e, o].sum(axis=(-2, -1))
    return np.where(total > 0, counts, np.nan) / np.where(total > 0, total, 1.0)


# --------------------------------------------------------------------------- selections


def test_bin_slice_by_value_and_index(sim_bkg):
    model = sim_bkg.model
    e = edges(model, "energy")
    assert products.bin_slice(model, "energy", 1.0) == slice(5, 6)  # [1.0, 1.58)
    assert products.bin_slice(model, "energy", e[5]) == slice(5, 6)  # lower edge is inside
    assert products.bin_slice(model, "energy", np.nextafter(e[6], 0)) == slice(5, 6)
    assert products.bin_slice(model, "energy", None) == slice(0, 15)
    assert products.bin_slice(model, "energy", index=6) == slice(6, 7)
    assert products.bin_slice(model, "energy", index=-1) == slice(14, 15)
    assert products.bin_slice(model, "energy", index=slice(6, 9)) == slice(6, 9)
    # ranges: every bin overlapping [start, stop), whole; edges that are bin edges select exactly
    assert products.bin_slice(model, "energy", slice(1, 10)) == slice(5, 10)
    assert products.bin_slice(model, "energy", slice(1.2, 10)) == slice(5, 10)
    assert products.bin_slice(model, "energy", slice(0.9, 1.1)) == slice(4, 6)
    assert products.bin_slice(model, "energy", slice(None, 1)) == slice(0, 5)
    assert products.bin_slice(model, "energy", slice(10, None)) == slice(10, 15)
    # an edge a rounding error away from a bin edge does not select the neighbour
    assert products.bin_slice(model, "energy", slice(1 - 1e-12, 10 + 1e-12)) == slice(5, 10)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"value": 200.0},
            r"energy=200 TeV is outside the axis: the energy axis covers \[0.1, 100\)",
        ),
        ({"value": 100.0}, "outside the axis"),  # half-open: the upper edge is not inside
        ({"value": 0.05}, "outside the axis"),
        ({"value": slice(50, 200)}, "stop 200 TeV is outside the axis"),
        ({"value": slice(10, 1)}, "empty or reversed"),
        ({"value": slice(1, 10, 2)}, "has no step"),
        ({"index": 15}, "outside the axis of 15 bins"),
        ({"index": slice(20, 30)}, "selects no bin"),
        ({"index": slice(0, 10, 2)}, "with a step"),
        ({"value": 1.0, "index": 3}, "not both"),
    ],
)
def test_bin_slice_errors(sim_bkg, kwargs, message):
    with pytest.raises(ValueError, match=message):
        products.bin_slice(sim_bkg.model, "energy", **kwargs)


def test_bin_slice_type_errors(sim_bkg):
    with pytest.raises(TypeError, match="must be a number"):
        products.bin_slice(sim_bkg.model, "energy", "1 TeV")
    with pytest.raises(TypeError, match="integer or a slice"):
        products.bin_slice(sim_bkg.model, "energy", index=1.5)


# --------------------------------------------------------------------------- products


def test_products_sum_before_dividing(sim_bkg):
    model = sim_bkg.model
    curve = products.acceptance_curve(model, slice(1, 10))
    assert curve.dims == ("group", "offset")
    assert curve.attrs["units"] == "s-1 MeV-1 sr-1"
    assert float(curve["energy_lo"]) == pytest.approx(1.0)
    assert float(curve["energy_hi"]) == pytest.approx(10.0)
    assert curve["offset_lo"].attrs["units"] == "deg"
    np.testing.assert_array_equal(curve["offset_hi"], model["offset_hi"])
    for j in (0, 40, 98):
        expected = manual_rate(model, slice(5, 10), slice(j, j + 1))
        np.testing.assert_allclose(curve.isel(offset=j).values, expected, rtol=1e-12)
    # not the mean of the bin rates
    mean_rate = model["rate"].isel(energy=slice(5, 10)).mean("energy")
    assert not np.allclose(curve.values, mean_rate.values)

    spec = products.spectrum(model.sel(group=0))
    assert spec.dims == ("energy",)
    assert (float(spec["offset_lo"]), float(spec["offset_hi"])) == (0.0, 2.5)
    for i in (3, 7):
        expected = manual_rate(model.sel(group=0), slice(i, i + 1), slice(None))
        assert float(spec.isel(energy=i)) == pytest.approx(float(expected), rel=1e-12)

    ring = products.spectrum(model, offset=slice(0.5, 1.0))
    lo, hi = float(ring["offset_lo"]), float(ring["offset_hi"])
    assert lo <= 0.5 < 1.0 <= hi
    # a single bin is exactly the model's own rate
    np.testing.assert_array_equal(
        products.acceptance_curve(model, energy_index=6).values,
        model["rate"].isel(energy=6).values,
    )
    image = products.image(model.sel(group=1))
    assert image.dims == ("energy", "offset")
    np.testing.assert_array_equal(image.values, model["rate"].sel(group=1).values)
    np.testing.assert_array_equal(image["energy_lo"], model["energy_lo"])


def test_unexposed_bins_are_nan_and_errors_poisson(sim_bkg):
    model = sim_bkg.model.sel(group=0)
    result = products.integrate(model, "energy", energy=slice(1, 10))
    n = result["counts"]
    np.testing.assert_allclose(result["rate_error"], np.sqrt(n) / result["exposure"])
    assert result["exposure"].attrs["units"] == "s sr MeV"
    unexposed = model.assign(exposure_time=model["exposure_time"] * 0, counts=model["counts"] * 0)
    assert np.isnan(products.spectrum(unexposed).values).all()


def test_cube_products_sum_runs_like_the_group_model(sim_bkg):
    cube, model = sim_bkg.cube, sim_bkg.model
    members = cube["obs_id"].values[cube["group_id"].values == 0]
    per_run = products.acceptance_curve(cube, 1.0)
    assert per_run.dims == ("obs_id", "offset")
    combined = products.acceptance_curve(cube.sel(obs_id=members), 1.0, sum_over="obs_id")
    np.testing.assert_allclose(
        combined.values, products.acceptance_curve(model.sel(group=0), 1.0).values, rtol=1e-12
    )
    spec = products.spectrum(cube.sel(obs_id=members), sum_over=["obs_id"])
    np.testing.assert_allclose(spec.values, products.spectrum(model.sel(group=0)).values)


def test_smoothed_products_use_the_smoothed_rate(sim_bkg):
    raw, smoothed = sim_bkg.model, sim_bkg.smoothed
    # the smoothing conserves the counts of each energy row: so do its products
    row = products.integrate(smoothed, "offset")
    np.testing.assert_allclose(row["predicted_counts"], row["counts"], rtol=1e-9)
    # bin by bin, the products of a smoothed model are its smoothed rate where it was
    # exposed (the filled bins without exposure have no product)
    exposed = (smoothed["exposure_time"] > 0).sel(group=0)
    np.testing.assert_allclose(
        products.image(smoothed.sel(group=0)).where(exposed).values,
        smoothed["rate"].sel(group=0).where(exposed).values,
        rtol=1e-12,
    )
    curve = products.acceptance_curve(smoothed, slice(1, 10))
    raw_curve = products.acceptance_curve(raw, slice(1, 10))
    assert not np.allclose(curve.values, raw_curve.values)
    volume = smoothed["exposure_time"] * bin_volume(smoothed)
    expected = (smoothed["rate"] * volume).isel(energy=slice(5, 10)).sum("energy") / volume.isel(
        energy=slice(5, 10)
    ).sum("energy")
    np.testing.assert_allclose(curve.values, expected.transpose(*curve.dims).values, rtol=1e-12)
    # errors: the relative Poisson error of the range's observed counts
    result = products.integrate(smoothed.sel(group=0), "energy", energy=slice(1, 10))
    np.testing.assert_allclose(
        result["rate_error"] / result["rate"], 1 / np.sqrt(result["counts"]), rtol=1e-12
    )


def test_rate_only_dataset_is_volume_weighted(sim_bkg):
    rate = sim_bkg.smoothed["rate"].sel(group=0).fillna(0.0)
    ds = rate.to_dataset()
    spec = products.spectrum(ds, offset=slice(0, 1))
    volume = bin_volume(ds).isel(
        offset=slice(0, products.bin_slice(ds, "offset", slice(0, 1)).stop)
    )
    sel = rate.isel(offset=slice(0, volume.sizes["offset"]))
    np.testing.assert_allclose(spec.values, ((sel * volume).sum("offset") / volume.sum("offset")))
    assert "rate_error" not in products.integrate(ds, "offset")


def test_input_errors(sim_bkg):
    with pytest.raises(ValueError, match="cannot sum over"):
        products.integrate(sim_bkg.model, "run")
    with pytest.raises(ValueError, match="needs an 'offset' dimension"):
        products.integrate(sim_bkg.model.isel(offset=0))
    with pytest.raises(ValueError, match="need counts and exposure_time"):
        products.integrate(sim_bkg.model[["rate_error"]].drop_vars("rate_error"))
    model = sim_bkg.model.copy()
    model.attrs["solid_angle"] = "spherical"
    with pytest.raises(ValueError, match="unknown solid_angle"):
        products.spectrum(model)


def test_products_do_not_mutate(sim_bkg):
    before = sim_bkg.smoothed.copy(deep=True)
    products.acceptance_curve(sim_bkg.smoothed, slice(1, 10))
    products.image(sim_bkg.smoothed, energy=slice(1, None))
    xr.testing.assert_identical(before, sim_bkg.smoothed)


@settings(max_examples=40, deadline=None)
@given(
    e=st.tuples(st.integers(0, 14), st.integers(1, 15)).filter(lambda t: t[0] < t[1]),
    o=st.tuples(st.integers(0, 98), st.integers(1, 99)).filter(lambda t: t[0] < t[1]),
    group=st.integers(0, 1),
)
def test_integrated_rate_is_the_ratio_of_sums(sim_bkg, e, o, group):
    model = sim_bkg.model.sel(group=group)
    result = products.integrate(
        model,
        ("energy", "offset"),
        energy_index=slice(*e),
        offset_index=slice(*o),
    )
    expected = manual_rate(model, slice(*e), slice(*o))
    assert int(result["counts"]) == int(model["counts"].values[slice(*e), slice(*o)].sum())
    np.testing.assert_allclose(float(result["rate"]), expected, rtol=1e-12)
    # ... and whatever the range, rate x exposure gives back the counts
    if float(result["exposure"]) > 0:
        np.testing.assert_allclose(
            float(result["rate"] * result["exposure"]), float(result["counts"])
        )
    else:
        assert np.isnan(float(result["rate"]))


# --------------------------------------------------------------------------- templates


def _template(values_of_offset, n_energy=3):
    edges_xy = np.linspace(-2.5, 2.5, 51)
    centres = 0.5 * (edges_xy[1:] + edges_xy[:-1])
    theta = np.hypot(centres[:, None], centres[None, :])
    data = np.broadcast_to(values_of_offset(theta), (n_energy, 50, 50))
    coords = dict(binned_coords(energy=energy_edges(0.1, 100, n_energy)))
    coords = {k: v for k, v in coords.items() if k.startswith("energy")}
    for dim in ("fov_lon", "fov_lat"):
        coords[dim] = xr.Variable(dim, centres, {"units": "deg"})
        coords[f"{dim}_lo"] = xr.Variable(dim, edges_xy[:-1], {"units": "deg"})
        coords[f"{dim}_hi"] = xr.Variable(dim, edges_xy[1:], {"units": "deg"})
    return xr.DataArray(
        data,
        dims=("energy", "fov_lon", "fov_lat"),
        coords=coords,
        attrs={"units": "s-1 MeV-1 sr-1"},
    )


def test_radial_profile_of_known_templates():
    flat = products.radial_profile(_template(lambda t: np.full_like(t, 2.0)))
    assert flat.dims == ("energy", "offset")
    assert flat.attrs["units"] == "s-1 MeV-1 sr-1"
    np.testing.assert_allclose(flat.values, 2.0)
    assert flat.sizes["offset"] == 99
    # a template beyond its reach is NaN; partly covered rings average what is covered
    # (the template's corners are at 3.54 deg)
    far = products.radial_profile(_template(lambda t: np.ones_like(t)), [0, 1, 3, 3.6, 4])
    np.testing.assert_allclose(far.values[:, :3], 1.0)
    assert np.isnan(far.values[:, 3]).all()
    # a step at 1 deg (on pixel-centre offsets): rings well inside/outside see 1 and 0
    step = products.radial_profile(_template(lambda t: (t < 1.0).astype(float)), [0, 0.8, 1.2, 2])
    np.testing.assert_allclose(step.values[:, [0, 2]], [[1.0, 0.0]] * 3)
    assert 0.3 < float(step.values[0, 1]) < 0.7


def test_radial_profile_of_a_dr1_template(dr1_dir):
    template = read_bkg(dr1_dir / "data" / "hess_dl3_dr1_obs_id_020136.fits.gz", "bkg")
    profile = products.radial_profile(template)
    np.testing.assert_array_equal(profile["energy_lo"], template["energy_lo"])
    # the average over the disc of 2.5 deg is the mean of the template over the disc,
    # here computed independently on a grid 20 times finer than the pixels
    ring_area = (profile["offset_hi"] ** 2 - profile["offset_lo"] ** 2).values
    mean_from_rings = (profile.values * ring_area).sum(axis=1) / ring_area.sum()
    fine = np.linspace(-2.5, 2.5, 50 * 20, endpoint=False) + 2.5 / (50 * 20)
    pixel = np.clip(((fine + 2.5) / 0.1).astype(int), 0, 49)
    inside = np.hypot(fine[:, None], fine[None, :]) < 2.5
    px, py = np.broadcast_to(pixel[:, None], inside.shape), np.broadcast_to(pixel, inside.shape)
    mean_from_pixels = template.values[:, px[inside], py[inside]].mean(axis=1)
    np.testing.assert_allclose(mean_from_rings, mean_from_pixels, rtol=1e-3)


def test_radial_profile_keeps_other_dimensions():
    one = _template(lambda t: 1.0 + t)
    many = xr.concat([one, 2 * one], dim="obs_id").assign_coords(obs_id=[10, 11])
    profiles = products.radial_profile(many, [0, 0.5, 1, 2])
    assert profiles.dims == ("obs_id", "energy", "offset")
    assert profiles["obs_id"].values.tolist() == [10, 11]
    single = products.radial_profile(one, [0, 0.5, 1, 2])
    np.testing.assert_allclose(profiles.sel(obs_id=11), 2 * single, rtol=1e-12)
    # the same rings, but averaged in one array with another run: summation order may differ
    np.testing.assert_allclose(profiles.sel(obs_id=10), single, rtol=1e-12)


def test_prediction_dataset_uses_rate_times_exposure(sim_bkg):
    smoothed = sim_bkg.smoothed
    prediction = smoothed[["rate", "exposure_time"]].assign_attrs(smoothing="none")
    np.testing.assert_allclose(
        products.acceptance_curve(prediction, slice(1, 10)).values,
        products.acceptance_curve(smoothed, slice(1, 10)).values,
        rtol=1e-12,
    )
    assert "rate_error" not in products.integrate(prediction, "energy")

import numpy as np
import pytest
import xarray as xr

from xbkg import axes


def test_default_binning_matches_gammapy_06():
    e = axes.energy_edges()
    assert e.size == 16
    np.testing.assert_allclose(e[[0, 5, -1]], [0.1, 1.0, 100.0])
    o = axes.offset_edges()
    assert o.size == 100
    np.testing.assert_allclose(o[1], 0.251259, atol=1e-6)
    # equal area rings: delta(theta^2) = 6.25 / 99
    np.testing.assert_allclose(np.diff(o**2), 6.25 / 99)


def test_bounds_roundtrip():
    e = np.array([0.1, 1.0, 10.0])
    o = np.array([0.0, 0.5, 1.0, 2.0])
    da = xr.DataArray(np.zeros((2, 3)), dims=("energy", "offset"), coords=axes.binned_coords(e, o))
    np.testing.assert_array_equal(axes.edges(da, "energy"), e)
    np.testing.assert_array_equal(axes.edges(da, "offset"), o)
    np.testing.assert_allclose(da.energy.values, [np.sqrt(0.1), np.sqrt(10)])
    # edges follow selections, unlike a CF bounds variable which xarray would drop here
    np.testing.assert_array_equal(axes.edges(da.isel(offset=slice(1, 3)), "offset"), o[1:])
    np.testing.assert_allclose(axes.energy_width_mev(da).values, [0.9e6, 9e6])


def test_ring_solid_angle_exact_and_flat():
    o = np.array([0.0, 1.0, 2.5])
    exact = axes.ring_solid_angle(offset=o).values
    t = np.deg2rad(o)
    np.testing.assert_allclose(exact, 2 * np.pi * (np.cos(t[:-1]) - np.cos(t[1:])), rtol=1e-12)
    flat = axes.ring_solid_angle(offset=o, flat=True).values
    np.testing.assert_allclose(flat, np.pi * np.diff(t**2))
    assert np.all(exact < flat)
    # full sphere
    np.testing.assert_allclose(axes.ring_solid_angle(offset=[0, 180]).values, 4 * np.pi)


@pytest.mark.parametrize("bad", [[1.0], [0.0, 0.0], [2.0, 1.0], [0.0, np.nan], [[0.0, 1.0]]])
def test_invalid_edges_are_refused(bad):
    with pytest.raises(ValueError, match="offset edges"):
        axes.validate_edges(bad, "offset")


def test_edges_require_bounds():
    da = xr.DataArray([1.0, 2.0], dims="energy", coords={"energy": [1.0, 2.0]})
    with pytest.raises(KeyError, match="no bin edges"):
        axes.edges(da, "energy")


def test_cf_bounds_roundtrip():
    ds = xr.Dataset({"x": (("energy", "offset"), np.ones((15, 99)))}, coords=axes.binned_coords())
    cf = axes.to_cf_bounds(ds)
    assert cf["energy_bounds"].dims == ("energy", "bounds")
    assert cf["energy"].attrs["bounds"] == "energy_bounds"
    assert "energy_lo" not in cf.coords
    xr.testing.assert_identical(axes.from_cf_bounds(cf), ds)

"""Products of field-of-view (bkg_3d) models: images per energy band and profiles through the
centre, checked on models of known shape, on files, and on a build of a store with a known
field-of-view gradient."""

import numpy as np
import pytest
import xarray as xr

from xbkg import axes, conventions, products
from xbkg.cli import main
from xbkg.io.gadf import write_bkg_3d
from xbkg.io.netcdf import read_archive
from xbkg.pipeline import run_fov_rates

DIMS = ("energy", "fov_lon", "fov_lat")
NORM, INDEX = 1e-6, 2.7
#: Simulated asymmetry: rate x (1 + GRADIENT tan(zenith) fov_lat + CAMERA fov_lon), ALTAZ.
GRADIENT, CAMERA = -0.1, 0.05


def model(lon_slope=0.0, lat_slope=0.0, *, n_fov=20, half_width=2.5, align="ALTAZ") -> xr.DataArray:
    """A rate ``NORM E^-INDEX (1 + lon_slope fov_lon + lat_slope fov_lat)`` at bin centres."""
    coords = {
        k: v
        for k, v in axes.binned_coords(np.geomspace(0.1, 100.0, 13)).items()
        if k.startswith("energy")
    }
    fov = axes.fov_edges(half_width, n_fov)
    coords.update(axes.fov_coords(fov, fov))
    e, x, y = (coords[d].values for d in DIMS)
    values = (
        NORM
        * e[:, None, None] ** -INDEX
        * (1 + lon_slope * x[None, :, None] + lat_slope * y[None, None, :])
    )
    return xr.DataArray(
        values,
        dims=DIMS,
        coords=coords,
        name="rate",
        attrs={"units": conventions.RATE_UNIT, "FOVALIGN": align},
    )


def band_mean(rate: xr.DataArray, lo: float, hi: float) -> np.ndarray:
    """Mean over the energy bins inside [lo, hi], weighted by their widths, written out."""
    e_lo, e_hi = rate["energy_lo"].values, rate["energy_hi"].values
    inside = (e_lo >= lo * (1 - 1e-9)) & (e_hi <= hi * (1 + 1e-9))
    width = (e_hi - e_lo)[inside]
    return np.tensordot(width, rate.values[inside], axes=1) / width.sum()


def test_image_is_the_rate_over_the_band():
    rate = model(0.1, -0.2)
    image = products.fov_image(rate, slice(1.0, 10.0))
    assert image.dims == ("fov_lon", "fov_lat")
    np.testing.assert_allclose(image.values, band_mean(rate, 1.0, 10.0), rtol=1e-12)
    assert float(image["energy_lo"]) == pytest.approx(1.0)
    assert float(image["energy_hi"]) == pytest.approx(10.0)
    assert image.attrs["units"] == conventions.RATE_UNIT
    assert image.attrs["FOVALIGN"] == "ALTAZ"
    assert image.attrs["energy_weights"] == "energy bin width"
    np.testing.assert_array_equal(axes.edges(image, "fov_lon"), axes.fov_edges(2.5, 20))
    # one energy, by value or by position: that bin as it is
    i = int(np.searchsorted(axes.edges(rate, "energy"), 3.0, side="right")) - 1
    one = products.fov_image(rate, 3.0)
    np.testing.assert_allclose(one.values, rate.isel(energy=i).values, rtol=1e-15)
    xr.testing.assert_identical(one, products.fov_image(rate, energy_index=i))


def test_image_with_given_weights():
    rate = model(0.1)
    weights = np.zeros(rate.sizes["energy"])
    weights[[5, 6]] = [3.0, 1.0]
    image = products.fov_image(rate, weights=weights)
    expected = (3 * rate.isel(energy=5).values + rate.isel(energy=6).values) / 4
    np.testing.assert_allclose(image.values, expected, rtol=1e-12)
    assert image.attrs["energy_weights"] == "given weights"
    # weights of several runs give an image per run
    per_run = xr.DataArray(
        np.stack([weights, np.ones_like(weights)]),
        dims=("obs_id", "energy"),
        coords={"obs_id": [1, 2], "energy": rate["energy"].values},
    )
    images = products.fov_image(rate, weights=per_run)
    assert images.dims == ("obs_id", "fov_lon", "fov_lat")
    np.testing.assert_allclose(images.sel(obs_id=1).values, expected, rtol=1e-12)
    np.testing.assert_allclose(images.sel(obs_id=2).values, rate.mean("energy").values, rtol=1e-12)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        (np.ones(5), "one value per energy bin"),
        (-np.ones(12), "non-negative"),
        (np.full(12, np.nan), "finite"),
        (np.r_[np.zeros(6), np.ones(6)], "all zero"),
    ],
)
def test_bad_weights(weights, message):
    with pytest.raises(ValueError, match=message):
        products.fov_image(model(), slice(0.1, 1.0), weights=weights)


def test_weights_on_other_energy_bins_are_refused():
    rate = model()
    shifted = xr.DataArray(np.ones(12), dims="energy", coords={"energy": rate["energy"] * 1.1})
    with pytest.raises(ValueError, match="energy bins are not those of the model"):
        products.fov_image(rate, weights=shifted)


@pytest.mark.parametrize("n_fov", [20, 15])
def test_profiles_of_a_known_gradient(n_fov):
    lon_slope, lat_slope = 0.08, -0.12
    rate = model(lon_slope, lat_slope, n_fov=n_fov)
    level = band_mean(model(n_fov=n_fov), 1.0, 10.0)[0, 0]
    for along, slope in (("fov_lon", lon_slope), ("fov_lat", lat_slope)):
        profile = products.fov_profile(rate, along, slice(1.0, 10.0))
        assert profile.dims == (along,)
        x = profile[along].values
        # the strip is symmetric about the centre: the other gradient averages out exactly
        np.testing.assert_allclose(profile.values, level * (1 + slope * x), rtol=1e-12)
        other = "fov_lat" if along == "fov_lon" else "fov_lon"
        pixel = 5.0 / n_fov
        # the central strip: the two pixels either side of 0, or the middle one
        width = 2 * pixel if n_fov % 2 == 0 else pixel
        assert float(profile[f"{other}_lo"]) == pytest.approx(-width / 2)
        assert float(profile[f"{other}_hi"]) == pytest.approx(width / 2)
        np.testing.assert_array_equal(axes.edges(profile, along), axes.fov_edges(2.5, n_fov))


def test_profile_strip_is_weighted_by_solid_angle():
    # a steep gradient across a wide, one-sided strip: pixels nearer the equator of the
    # field-of-view coordinates weigh more
    rate = model(0.0, 0.3, half_width=10.0)
    profile = products.fov_profile(rate, "fov_lon", energy_index=0, across=slice(0.0, 10.0))
    lat = axes.fov_edges(10.0, 20)
    lat = lat[lat.size // 2 :]
    omega = np.diff(np.sin(np.deg2rad(lat)))
    values = rate.isel(energy=0).sel(fov_lat=slice(0, None)).values
    expected = values @ omega / omega.sum()
    np.testing.assert_allclose(profile.values, expected, rtol=1e-12)
    assert not np.allclose(profile.values, values.mean(axis=1), rtol=1e-5)
    assert float(profile["fov_lat_lo"]) == 0.0
    assert float(profile["fov_lat_hi"]) == 10.0


def test_profile_by_index_and_errors():
    rate = model(0.1, 0.1)
    by_index = products.fov_profile(rate, "fov_lat", across_index=slice(9, 11), energy_index=4)
    xr.testing.assert_identical(by_index, products.fov_profile(rate, "fov_lat", energy_index=4))
    with pytest.raises(ValueError, match="along must be 'fov_lon' or 'fov_lat'"):
        products.fov_profile(rate, "offset")
    with pytest.raises(ValueError, match="outside the axis"):
        products.fov_profile(rate, "fov_lon", across=3.0)
    with pytest.raises(ValueError, match="outside the axis"):
        products.fov_image(rate, 200.0)
    radial = xr.Dataset(
        {"rate": (("energy", "offset"), np.ones((2, 3)))},
        coords=axes.binned_coords(np.array([1.0, 2.0, 4.0]), np.array([0.0, 1.0, 2.0, 3.0])),
    )
    with pytest.raises(ValueError, match="needs the dimensions energy, fov_lon, fov_lat"):
        products.fov_image(radial)
    with pytest.raises(ValueError, match="needs a 'rate' variable"):
        products.fov_image(rate.to_dataset(name="other"))


@pytest.mark.parametrize(("align", "reverse_lon"), [("ALTAZ", False), ("RADEC", True)])
def test_products_of_a_file(tmp_path, align, reverse_lon):
    # a RADEC model stored mirrored for Gammapy (REVLON) opens in the GADF orientation
    rate = model(0.08, -0.12, align=align)
    path = write_bkg_3d(rate, tmp_path / "bkg.fits.gz", reverse_lon=reverse_lon)
    ds = xr.open_dataset(path, engine="gadf")
    assert ds["rate"].dims == DIMS
    for along, slope in (("fov_lon", 0.08), ("fov_lat", -0.12)):
        from_file = ds.bkg.fov_profile(along, slice(1.0, 10.0))
        expected = products.fov_profile(rate, along, slice(1.0, 10.0))
        np.testing.assert_allclose(from_file.values, expected.values, rtol=1e-6)
        assert np.polyfit(from_file[along].values, from_file.values, 1)[0] / float(
            from_file.mean()
        ) == pytest.approx(slope, rel=1e-3)
        assert from_file.attrs["FOVALIGN"] == align
    image = ds.bkg.fov_image(slice(1.0, 10.0))
    np.testing.assert_allclose(image.values, band_mean(rate, 1.0, 10.0), rtol=1e-6)


@pytest.fixture(scope="module")
def build_3d(tmp_path_factory):
    """A bkg_3d build of a simulated store whose true background has a known FoV asymmetry."""
    root = tmp_path_factory.mktemp("fov")
    store, out = root / "store", root / "out"
    assert (
        main(
            [
                "simulate",
                str(store),
                "--runs",
                "4",
                "--seed",
                "5",
                "--events-per-run",
                "15000",
                "--fov-gradient",
                str(GRADIENT),
                "--camera-asymmetry",
                str(CAMERA),
            ]
        )
        == 0
    )
    assert (
        main(["make", str(store), str(out), "--bkg-class", "bkg_3d", "--fov-bins", "20", "-q"]) == 0
    )
    return out


def test_shape_profiles_of_a_build_follow_the_true_gradient(build_3d):
    bkg = read_archive(build_3d / "background.nc")
    assert bkg.fov_shape is not None
    counts = bkg.cube["fov_counts"].sum(["obs_id", "fov_lon", "fov_lat"])
    zenith = np.deg2rad(bkg.cube["zen_pnt"].values)
    events = bkg.cube["fov_counts"].sum(["energy", "fov_lon", "fov_lat"]).values
    lat_slope = GRADIENT * float(np.sum(np.tan(zenith) * events) / events.sum())
    slopes = {}
    for along in ("fov_lon", "fov_lat"):
        profile = products.fov_profile(
            bkg.fov_shape, along, weights=counts, across=slice(-1.0, 1.0)
        )
        slopes[along] = np.polyfit(profile[along].values, profile.values, 1)[0]
    # the signs and sizes of the simulated gradients, in the GADF orientation (a mirrored
    # or swapped shape fails); the smoothed estimate is pulled towards 1 where counts are few
    assert 0.5 * CAMERA < slopes["fov_lon"] < 1.2 * CAMERA
    assert 1.2 * lat_slope < slopes["fov_lat"] < 0.5 * lat_slope


def test_run_products_are_those_of_its_file(build_3d):
    bkg = read_archive(build_3d / "background.nc")
    obs_id = int(bkg.run_models["obs_id"][0])
    rate = run_fov_rates(bkg, [obs_id]).sel(obs_id=obs_id)
    ds = xr.open_dataset(build_3d / f"background_run_{obs_id:06d}.fits.gz", engine="gadf")
    for along in ("fov_lon", "fov_lat"):
        np.testing.assert_allclose(
            ds.bkg.fov_profile(along, slice(1.0, 10.0)).values,
            products.fov_profile(rate, along, slice(1.0, 10.0)).values,
            rtol=1e-6,
        )
    in_memory = products.fov_image(rate, slice(1.0, 10.0))
    assert int(in_memory["obs_id"]) == obs_id
    np.testing.assert_allclose(
        ds.bkg.fov_image(slice(1.0, 10.0)).values, in_memory.values, rtol=1e-6
    )

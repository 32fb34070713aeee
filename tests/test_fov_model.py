"""Field-of-view (bkg_3d) models: pixel geometry, the shape factor, rotation, end to end."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from xbkg.axes import binned_coords, fov_coords, fov_edges
from xbkg.fov_model import (
    fov_shape,
    pixel_offset,
    pixel_solid_angle,
    radial_on_fov,
    rotated_shape,
)


def fov_array(values: np.ndarray, bin_edges: np.ndarray) -> xr.DataArray:
    """A DataArray along (energy, fov_lon, fov_lat) on a square field of view."""
    coords = {**binned_coords(np.geomspace(0.1, 100, values.shape[0] + 1), [0.0, 1.0])}
    coords = {k: v for k, v in coords.items() if not k.startswith("offset")}
    coords.update(fov_coords(bin_edges, bin_edges))
    return xr.DataArray(values, dims=("energy", "fov_lon", "fov_lat"), coords=coords)


def test_pixel_solid_angles_add_up_to_the_square_on_the_sphere() -> None:
    bin_edges = fov_edges(2.5, 50)
    omega = pixel_solid_angle(bin_edges, bin_edges)
    half = np.deg2rad(2.5)
    assert omega.sum() == pytest.approx(2 * half * 2 * np.sin(half), rel=1e-12)
    assert omega.shape == (50, 50)
    assert omega[25, 25] > omega[25, 0]  # pixels shrink away from fov_lat = 0


def test_pixel_offset_is_the_angular_distance_of_the_centre() -> None:
    bin_edges = np.array([-1.0, 0.0, 1.0, 2.0])
    offset = pixel_offset(bin_edges, bin_edges)
    lon = np.deg2rad(1.5)
    assert offset[2, 1] == pytest.approx(np.hypot(1.5, 0.5), rel=1e-3)  # nearly flat here
    assert offset[2, 0] == pytest.approx(offset[0, 2])
    assert offset[2, 1] == pytest.approx(
        np.rad2deg(np.arccos(np.cos(lon) * np.cos(np.deg2rad(0.5))))
    )


def test_radial_rate_on_the_field_of_view_follows_the_offset() -> None:
    offset_edges = np.linspace(0, 3, 31)
    coords = binned_coords(np.geomspace(1, 10, 3), offset_edges)
    centres = coords["offset"].values
    rate = xr.DataArray(
        np.vstack([10 - centres, 20 - 2 * centres]), dims=("energy", "offset"), coords=coords
    )
    bin_edges = fov_edges(2.0, 20)
    on_fov = radial_on_fov(rate, xr.Dataset(coords=fov_coords(bin_edges, bin_edges)))
    offset = pixel_offset(bin_edges, bin_edges)
    # Linear in offset: exact where the offset lies between bin centres.
    np.testing.assert_allclose(on_fov.values[0], 10 - offset, rtol=1e-12)
    np.testing.assert_allclose(on_fov.values[1], 20 - 2 * offset, rtol=1e-12)
    assert on_fov.dims == ("energy", "fov_lon", "fov_lat")


def test_shape_is_one_where_the_radial_model_predicts_the_counts() -> None:
    bin_edges = fov_edges(2.0, 20)
    predicted = fov_array(np.full((4, 20, 20), 50.0), bin_edges)
    shape = fov_shape(predicted, predicted)
    np.testing.assert_allclose(shape.values, 1.0, rtol=1e-12)


def test_shape_measures_a_gradient_and_falls_back_to_one_without_data() -> None:
    rng = np.random.default_rng(1)
    bin_edges = fov_edges(2.0, 20)
    lat = 0.5 * (bin_edges[:-1] + bin_edges[1:])
    truth = np.broadcast_to(1 + 0.1 * lat[None, None, :], (4, 20, 20))
    predicted = fov_array(np.full((4, 20, 20), 400.0), bin_edges)
    counts = predicted.copy(data=rng.poisson(400.0 * truth))
    shape = fov_shape(counts, predicted, sigma=0.3)
    inner = shape.isel(fov_lon=slice(5, 15), fov_lat=slice(5, 15)).values
    np.testing.assert_allclose(inner, truth[:, 5:15, 5:15], atol=0.03)
    # Nothing predicted, nothing observed: the radial model stands.
    empty = fov_shape(counts * 0, predicted * 0)
    np.testing.assert_allclose(empty.values, 1.0)
    # Few counts: pulled towards 1, not to 0 or infinity.
    sparse = fov_shape(predicted.copy(data=np.zeros((4, 20, 20))), predicted * 1e-3)
    assert (sparse.values > 0.5).all()


def test_altitude_gradient_growing_with_zenith_is_recovered() -> None:
    from xbkg.fov_model import altitude_gradient, run_shape

    bin_edges = fov_edges(2.0, 20)
    lat = 0.5 * (bin_edges[:-1] + bin_edges[1:])
    tilt = np.array([-0.6, -0.2, 0.0, 0.3, 0.5])
    growth = 0.03  # per deg of fov_lat and unit of tan(zenith)
    predicted = np.full((len(tilt), 3, 20, 20), 2000.0)
    counts = predicted * np.exp(growth * tilt[:, None, None, None] * lat)
    sums = xr.Dataset(
        {
            "counts_tilt": (
                ("energy", "fov_lon", "fov_lat"),
                np.einsum("r,rexy->exy", tilt, counts),
            ),
            "predicted_tilt": (("energy", "fov_lon", "fov_lat"), predicted[0] * tilt.sum()),
            "predicted_tilt2": (("energy", "fov_lon", "fov_lat"), predicted[0] * (tilt**2).sum()),
        },
        coords=fov_array(np.ones((3, 20, 20)), bin_edges).coords,
    )
    shape = fov_array(np.ones((3, 20, 20)), bin_edges)
    gradient = altitude_gradient(sums, shape)
    np.testing.assert_allclose(gradient.values, growth, rtol=0.03)
    # The shape of a run with tilt 0.5: the gradient along fov_lat, none along fov_lon.
    shape = shape.assign_coords(altitude_gradient=gradient)
    run = run_shape(shape, 0.5)
    np.testing.assert_allclose(run.values[0, 7], np.exp(gradient.values[0] * 0.5 * lat))
    np.testing.assert_allclose(run_shape(shape, 0.0).values, 1.0)
    # No gradient without data: the prior holds it at 0.
    empty = altitude_gradient(sums * 0, shape)
    np.testing.assert_allclose(empty.values, 0.0)


def test_rotated_shape_turns_an_altitude_gradient_into_the_radec_frame() -> None:
    bin_edges = fov_edges(2.0, 40)
    lat = 0.5 * (bin_edges[:-1] + bin_edges[1:])
    values = np.broadcast_to(1 + 0.1 * lat[None, None, :], (2, 40, 40)).copy()
    shape = fov_array(values, bin_edges)
    # psi = 90 deg: fov_lat_altaz = -fov_lon_radec (the frames are mirror images).
    turned = rotated_shape(shape, np.array([90.0]))
    lon = lat
    np.testing.assert_allclose(turned.values[0, 10:30, 20], 1 - 0.1 * lon[10:30], atol=1e-9)
    # psi = 0: the same up to the mirror in fov_lon, which a gradient along fov_lat ignores.
    np.testing.assert_allclose(rotated_shape(shape, np.array([0.0])).values, shape.values)
    camera = fov_array(np.broadcast_to(1 + 0.1 * lat[None, :, None], (2, 40, 40)).copy(), bin_edges)
    mirrored = rotated_shape(camera, np.array([0.0]))
    np.testing.assert_allclose(mirrored.values[0, 10:30, 20], 1 - 0.1 * lon[10:30], atol=1e-9)
    # A full turn averages the gradient away near the centre.
    spun = rotated_shape(shape, np.linspace(0, 360, 72, endpoint=False))
    np.testing.assert_allclose(spun.values[0, 15:25, 15:25], 1.0, atol=1e-3)


def test_rotated_shape_follows_the_frames_of_a_real_run(sim_store) -> None:
    """The RADEC-to-ALTAZ relation used by rotated_shape is the one of xbkg.fov."""
    from xbkg.fov import track_from_header
    from xbkg.io.datastore import read_events

    store, _ = sim_store
    path = store.path / "data" / sorted(p.name for p in (store.path / "data").iterdir())[0]
    header = read_events(path).header
    track = track_from_header(header, str(path))
    time = 0.5 * (float(header["TSTART"]) + float(header["TSTOP"]))
    # The same shape evaluated both ways: a linear shape makes the turn exact.
    bin_edges = fov_edges(2.0, 40)
    centre = 0.5 * (bin_edges[:-1] + bin_edges[1:])
    gx, gy = np.meshgrid(centre, centre, indexing="ij")
    shape = fov_array(np.broadcast_to(1 + 0.1 * gx + 0.05 * gy, (1, 40, 40)).copy(), bin_edges)
    psi = float(track.rotation_angle(time))
    turned = rotated_shape(shape, np.array([psi]))
    index = [int(np.argmin(abs(centre - v))) for v in (0.95, -0.45, 0.35)]
    index_lat = [int(np.argmin(abs(centre - v))) for v in (0.25, 1.45, -1.05)]
    for k in range(3):
        x, y = centre[index[k]], centre[index_lat[k]]
        ra_k, dec_k = track.sky_coordinates(x, y, time, "RADEC")
        xa, ya = track.fov_coordinates(ra_k, dec_k, time, "ALTAZ")
        expected = 1 + 0.1 * xa + 0.05 * ya
        assert turned.values[0, index[k], index_lat[k]] == pytest.approx(expected, abs=2e-3)


def map_coordinates_rotation(shape: xr.DataArray, angles: np.ndarray) -> np.ndarray:
    """Reference for rotated_shape: one scipy interpolation per angle and energy."""
    from scipy.ndimage import map_coordinates

    values = shape.transpose("energy", "fov_lon", "fov_lat").values
    lon, lat = shape["fov_lon"].values, shape["fov_lat"].values
    x, y = np.meshgrid(lon, lat, indexing="ij")
    total = np.zeros_like(values)
    for psi in np.deg2rad(angles):
        c, s = np.cos(psi), np.sin(psi)
        ix = (-c * x - s * y - lon[0]) / (lon[1] - lon[0])
        iy = (-s * x + c * y - lat[0]) / (lat[1] - lat[0])
        for k in range(values.shape[0]):
            total[k] += map_coordinates(values[k], [ix, iy], order=1, mode="nearest")
    return total / max(len(angles), 1)


def test_rotated_shape_is_the_bilinear_interpolation_of_map_coordinates() -> None:
    rng = np.random.default_rng(3)
    lon_edges, lat_edges = np.linspace(-2.0, 2.0, 31), np.linspace(-1.5, 1.5, 19)
    coords = {**binned_coords(np.geomspace(0.1, 100, 4), [0.0, 1.0])}
    coords = {k: v for k, v in coords.items() if not k.startswith("offset")}
    coords.update(fov_coords(lon_edges, lat_edges))
    shape = xr.DataArray(
        rng.uniform(0.5, 2.0, (3, 30, 18)), dims=("energy", "fov_lon", "fov_lat"), coords=coords
    )
    # Turned corners fall outside the (non-square) grid: the edge values are taken.
    for angles in ([0.0], [45.0], [90.0, 91.5], [-170.0, 12.3, 137.0, 250.0], np.arange(16.0)):
        expected = map_coordinates_rotation(shape, np.asarray(angles))
        turned = rotated_shape(shape, np.asarray(angles))
        np.testing.assert_allclose(turned.values, expected, rtol=1e-12, atol=1e-12)
    # Any order of the dimensions in, (energy, fov_lon, fov_lat) out; no angle: zeros.
    turned = rotated_shape(shape.transpose("fov_lat", "energy", "fov_lon"), np.array([33.0]))
    assert turned.dims == ("energy", "fov_lon", "fov_lat")
    expected = map_coordinates_rotation(shape, np.array([33.0]))
    np.testing.assert_allclose(turned.values, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(rotated_shape(shape, np.zeros(0)).values, 0.0)


def test_fov_rates_are_the_models_of_the_runs_one_by_one() -> None:
    from xbkg.fov_model import fov_rates, run_fov_rate, run_shape

    rng = np.random.default_rng(5)
    bin_edges = fov_edges(2.0, 16)
    n_runs, n_energy = 4, 3
    shape = fov_array(rng.uniform(0.8, 1.2, (n_energy, 16, 16)), bin_edges)
    shape = shape.assign_coords(altitude_gradient=("energy", [0.02, -0.01, 0.05]))
    shape.attrs["tan_zenith_ref"] = 0.4
    coords = binned_coords(np.geomspace(0.1, 100, n_energy + 1), np.linspace(0, 3, 7))
    radial = xr.DataArray(
        rng.uniform(1.0, 2.0, (n_runs, n_energy, 6)),
        dims=("obs_id", "energy", "offset"),
        coords={**coords, "obs_id": [11, 12, 13, 14]},
        attrs={"units": "s-1 MeV-1 sr-1"},
    )
    tan_zenith = np.array([0.1, 0.7, np.nan, 0.4])
    rotation = rng.uniform(-180, 180, (n_runs, 5))
    for alignment in ("ALTAZ", "RADEC"):
        for tilt in (tan_zenith, None):
            rate = fov_rates(shape, radial, alignment=alignment, tan_zenith=tilt, rotation=rotation)
            runs = []
            for i in range(n_runs):
                run = shape if tilt is None else run_shape(shape, float(tilt[i]) - 0.4)
                if alignment == "RADEC":
                    run = rotated_shape(run, rotation[i])
                runs.append(run_fov_rate(radial.isel(obs_id=i), run))
            expected = xr.concat(runs, dim="obs_id")
            assert rate.dims == ("obs_id", "energy", "fov_lon", "fov_lat")
            assert rate.attrs == {"units": "s-1 MeV-1 sr-1", "FOVALIGN": alignment}
            xr.testing.assert_allclose(rate, expected, rtol=1e-12)
            if alignment == "ALTAZ":  # the same operations, run by run or all at once
                np.testing.assert_array_equal(rate.values, expected.values)
    with pytest.raises(ValueError, match="rotation"):
        fov_rates(shape, radial, alignment="RADEC")


def full_unexcluded_fraction(lon_edges, lat_edges, regions, to_sky, times) -> np.ndarray:
    """Reference for unexcluded_fraction: every sub-pixel taken to the sky at every time."""
    from xbkg.exclusion import outside_regions

    n = 3
    step = (np.arange(n) + 0.5) / n
    lon = (lon_edges[:-1, None] + np.diff(lon_edges)[:, None] * step).ravel()
    lat = (lat_edges[:-1, None] + np.diff(lat_edges)[:, None] * step).ravel()
    ra, dec = to_sky(lon[:, None, None], lat[None, :, None], np.asarray(times)[None, None, :])
    outside = outside_regions(ra, dec, regions).mean(axis=-1)
    return outside.reshape(lon_edges.size - 1, n, lat_edges.size - 1, n).mean(axis=(1, 3))


class CountingSky:
    """A ``to_sky`` that counts the (point, time) pairs it is asked for."""

    def __init__(self, to_sky) -> None:
        self.to_sky, self.count = to_sky, 0

    def __call__(self, lon, lat, time):
        self.count += np.broadcast(lon, lat, time).size
        return self.to_sky(lon, lat, time)


def turning_sky(ra_pnt: float, dec_pnt: float, turn_per_s: float, scale: float = 1.0):
    """A mirrored field turning about a fixed pointing, offsets stretched by ``scale``."""
    from xbkg.fov import fov_to_radec

    def to_sky(lon, lat, time):
        lon, lat, time = np.broadcast_arrays(lon, lat, time)
        x, y, z = (
            np.cos(np.deg2rad(lat)) * np.cos(np.deg2rad(lon)),
            np.cos(np.deg2rad(lat)) * np.sin(np.deg2rad(lon)),
            np.sin(np.deg2rad(lat)),
        )
        c, s = np.cos(np.deg2rad(turn_per_s * time)), np.sin(np.deg2rad(turn_per_s * time))
        y, z = -(c * y - s * z), s * y + c * z
        r = np.rad2deg(np.arctan2(np.hypot(y, z), x)) * scale
        angle = np.arctan2(y, z)
        lon_t = np.rad2deg(np.arctan2(np.sin(np.deg2rad(r)) * np.sin(angle), np.cos(np.deg2rad(r))))
        lat_t = np.rad2deg(np.arcsin(np.sin(np.deg2rad(r)) * np.cos(angle)))
        return fov_to_radec(lon_t, lat_t, ra_pnt, dec_pnt)

    return to_sky


def test_unexcluded_fraction_is_the_full_evaluation_on_synthetic_frames() -> None:
    from xbkg.exclusion import separation
    from xbkg.fov_model import unexcluded_fraction
    from xbkg.regions import make_regions

    bin_edges = fov_edges(2.5, 25)
    n_points = (25 * 3) ** 2
    ra_pnt, dec_pnt = 83.6, 22.0
    # Circles at the pointing, on it (d = R), at the edge of the field, larger than
    # the field, tiny, beyond the field.
    ra = np.array([83.6, 84.1, 83.6, 86.0, 80.0, 83.1, 90.0])
    dec = np.array([22.0, 22.0, 23.2, 22.0, 21.0, 21.3, 30.0])
    radius = np.array([0.3, separation(ra_pnt, dec_pnt, 84.1, 22.0)[()], 0.25, 0.6, 2.0, 0.02, 0.5])
    regions = make_regions(ra, dec, radius, [f"s{i}" for i in range(7)], {})
    times = np.linspace(0.0, 1800.0, 30)
    # Per frame: whether few points (near the circles' edges at some time) are
    # taken to the sky, all of them (no bounds), or either.
    frames = {
        "RADEC": (turning_sky(ra_pnt, dec_pnt, 0.0), np.zeros(1), "few"),
        "turning": (turning_sky(ra_pnt, dec_pnt, 0.02), times, "few"),  # 36 deg over the run
        "half a turn": (turning_sky(ra_pnt, dec_pnt, 0.1), times, "either"),
        "stretched": (turning_sky(ra_pnt, dec_pnt, 0.02, scale=1.0005), times, "few"),
        "not a turn": (
            lambda lon, lat, t: turning_sky(ra_pnt, dec_pnt, 0.0)(2 * lon, lat, t),
            times,
            "all",
        ),
    }
    for name, (to_sky, at, evaluated) in frames.items():
        counting = CountingSky(to_sky)
        fraction = unexcluded_fraction(bin_edges, bin_edges, regions, counting, at)
        expected = full_unexcluded_fraction(bin_edges, bin_edges, regions, to_sky, at)
        np.testing.assert_array_equal(fraction, expected, err_msg=name)
        assert (fraction == 0).any(), name
        assert ((fraction > 0) & (fraction < 1)).any(), name
        if evaluated == "all":
            assert counting.count > n_points * at.size, name
        elif evaluated == "few":
            assert counting.count < 0.5 * n_points * at.size, name
    # A frame without a finite pointing gives no bounds either.
    broken = CountingSky(
        lambda lon, lat, t: tuple(np.full(np.broadcast(lon, lat, t).shape, np.nan) for _ in "xy")
    )
    fraction = unexcluded_fraction(bin_edges, bin_edges, regions, broken, times)
    np.testing.assert_array_equal(fraction, 1.0)
    assert broken.count > n_points * times.size


@pytest.mark.parametrize("obs_id", [20136, 20327, 20899, 23523, 29487, 33794])
def test_unexcluded_fraction_is_the_full_evaluation_on_dr1_runs(
    dr1_dir, gammacat_path, obs_id
) -> None:
    import functools

    from xbkg.exclusion import regions_in_fov
    from xbkg.fov import track_from_header
    from xbkg.fov_model import exclusion_times, unexcluded_fraction
    from xbkg.io.catalog import catalog_regions
    from xbkg.io.datastore import read_events

    path = dr1_dir / "data" / f"hess_dl3_dr1_obs_id_{obs_id:06d}.fits.gz"
    header = read_events(path, verify=False).header
    track = track_from_header(header, str(path))
    bin_edges = fov_edges(2.5, 50)
    radius = float(pixel_offset(bin_edges, bin_edges).max()) + 0.5
    regions = catalog_regions([gammacat_path])
    near = regions_in_fov(regions, track.ra_pnt, track.dec_pnt, radius)
    assert near.sizes["source"] > 0
    times = exclusion_times(track.rotation_angle, float(header["TSTART"]), float(header["TSTOP"]))
    to_sky = functools.partial(track.sky_coordinates, alignment="ALTAZ")
    fraction = unexcluded_fraction(bin_edges, bin_edges, near, to_sky, times)
    expected = full_unexcluded_fraction(bin_edges, bin_edges, near, to_sky, times)
    np.testing.assert_array_equal(fraction, expected)
    assert (fraction < 1).any()


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def made_3d(sim_store, tmp_path_factory):
    """``xbkg make --bkg-class bkg_3d`` on the simulated store."""
    from xbkg.cli import main

    store, _ = sim_store
    out = tmp_path_factory.mktemp("make3d") / "model"
    args = ["make", str(store.path), str(out), "--bkg-class", "bkg_3d", "--fov-bins", "20"]
    assert main([*args, "--fov-max", "2.0", "-q"]) == 0
    return out, store


def test_make_bkg_3d_writes_run_models_gammapy_reads(made_3d) -> None:
    from conftest import require

    require("gammapy")
    from gammapy.data import DataStore

    from xbkg.io.gadf import read_bkg
    from xbkg.io.netcdf import read_archive

    out, _ = made_3d
    bkg = read_archive(out / "background.nc")
    assert bkg.options.bkg_class == "bkg_3d"
    assert bkg.options.fov_alignment == "ALTAZ"  # not flagged like the H.E.S.S. DR1 release
    assert bkg.fov_shape is not None
    assert bkg.fov_shape.sizes["fov_lon"] == 20
    assert int(bkg.cube["fov_counts"].sum()) > 0
    gp = DataStore.from_dir(out)
    obs_id = int(bkg.run_models["obs_id"][0])
    model = gp.obs(obs_id, required_irf="all-optional").bkg
    assert type(model).__name__ == "Background3D"
    assert "ALTAZ" in str(model.fov_alignment)
    ours = read_bkg(out / f"background_run_{obs_id:06d}.fits.gz")
    assert ours.attrs.get("FOVALIGN", ours.attrs.get("fov_alignment")) in ("ALTAZ", None)
    assert np.isfinite(ours.values).all()
    assert (ours.values > 0).all()  # filled: no zeros where Gammapy interpolates


def test_bkg_3d_archive_exports_the_same_files(made_3d, tmp_path) -> None:
    from xbkg.cli import main

    out, _ = made_3d
    assert main(["export", str(out / "background.nc"), str(tmp_path / "again")]) == 0
    written = sorted(p.name for p in out.glob("*.fits*") if "index" not in p.name)
    assert written
    for name in written:
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes(), name


def test_bkg_3d_needs_the_site_and_says_so(tmp_path, capsys) -> None:
    from astropy.io import fits

    from xbkg.cli import main
    from xbkg.simulate import simulate_datastore

    store = simulate_datastore(tmp_path / "store", n_runs=2, events_per_run=2000)
    for path in sorted((store / "data").glob("*.fits.gz")):
        with fits.open(path) as hdul:
            for key in ("GEOLAT", "GEOLON", "ALTITUDE", "GEOALT", "TELESCOP"):
                hdul["EVENTS"].header.remove(key, ignore_missing=True)
            hdul.writeto(path, overwrite=True)
    out = tmp_path / "out"
    assert main(["make", str(store), str(out), "--bkg-class", "bkg_3d", "-q"]) == 1
    err = capsys.readouterr().err
    assert "obs_" in err
    assert "site of the run is unknown" in err
    assert "add GEOLAT and GEOLON" in err
    assert err.count(".fits.gz") == 1  # the file named once
    assert not out.exists()

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

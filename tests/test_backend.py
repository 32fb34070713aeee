"""xr.open_dataset(path, engine="gadf") for GADF background files."""

import numpy as np
import pytest
import xarray as xr
from xarray.backends import list_engines

from xbkg.axes import edges
from xbkg.io.backend import GadfBackendEntrypoint
from xbkg.io.gadf import read_bkg


def test_engine_is_registered():
    assert isinstance(list_engines()["gadf"], GadfBackendEntrypoint)


def test_open_our_bkg_2d(dr1_make_dir):
    path = dr1_make_dir / "smooth_background_2D_group_000_table.fits.gz"
    with xr.open_dataset(path, engine="gadf") as ds:
        assert list(ds.data_vars) == ["rate"]
        assert ds["rate"].dims == ("energy", "offset")
        assert ds["rate"].attrs["units"] == "s-1 MeV-1 sr-1"
        assert ds["energy_lo"].attrs["units"] == "TeV"
        assert ds["offset_hi"].attrs["units"] == "deg"
        np.testing.assert_allclose(edges(ds, "energy"), np.geomspace(0.1, 100, 16))
        assert ds.attrs["HDUCLAS4"] == "BKG_2D"
        assert ds.attrs["GROUP_ID"] == 0
        assert ds.attrs["BKGTIME"] == "ONTIME"
        assert ds.attrs["ZEN_PNT_MIN"] == 0.0
        assert ds.attrs["ZEN_PNT_MAX"] == 49.0
        expected = read_bkg(path)
        np.testing.assert_array_equal(ds["rate"].values, expected.values)
        for name, coord in expected.coords.items():
            xr.testing.assert_identical(ds[name].variable, coord.variable)
        # the products of a file (no counts) weight bins by solid angle x energy width
        curve = ds.bkg.acceptance_curve(energy=1.0)
        np.testing.assert_allclose(curve.values, ds["rate"].isel(energy=5).values, rtol=1e-12)
    # the engine is guessed from the file name
    with xr.open_dataset(path) as guessed:
        assert "rate" in guessed


def test_open_dr1_per_run_template(dr1_dir):
    path = dr1_dir / "data" / "hess_dl3_dr1_obs_id_020136.fits.gz"
    with xr.open_dataset(path, engine="gadf", hdu="bkg") as ds:
        assert ds["rate"].dims == ("energy", "fov_lon", "fov_lat")
        assert ds.sizes == {"energy": 20, "fov_lon": 50, "fov_lat": 50}
        assert ds.attrs["HDUCLAS4"] == "BKG_3D"
        assert ds.attrs["FOVALIGN"] == "RADEC"
        assert ds["fov_lon_lo"].attrs["units"] == "deg"
        np.testing.assert_allclose(edges(ds, "fov_lon")[[0, -1]], [-2.5, 2.5])
        np.testing.assert_array_equal(ds["rate"].values, read_bkg(path, "bkg").values)
        # a bkg_3d has no offset axis: its products go through radial profiles
        with pytest.raises(ValueError, match="radial_profile"):
            ds.bkg.spectrum()


@pytest.mark.parametrize("name", ["bkg_2d_full_example.fits", "bkg_3d_full_example.fits"])
def test_open_gadf_examples(gadf_examples_dir, name):
    path = gadf_examples_dir / name
    with xr.open_dataset(path, engine="gadf") as ds:
        expected = read_bkg(path)
        np.testing.assert_array_equal(ds["rate"].values, expected.values)
        assert ds["rate"].dims == expected.dims


def test_backend_options_and_errors(dr1_dir, dr1_make_dir, tmp_path):
    path = dr1_make_dir / "background_2D_group_001_table.fits.gz"
    with xr.open_dataset(path, engine="gadf", drop_variables="rate") as ds:
        assert not ds.data_vars
    with xr.open_dataset(path, engine="gadf", axis_order=("energy", "offset")) as ds:
        assert ds["rate"].dims == ("energy", "offset")
    with pytest.raises(ValueError, match="no HDU named 'nope'"):
        xr.open_dataset(path, engine="gadf", hdu="nope")
    # a DR1 run file has several tables: the background is found by its HDUCLAS2
    run_file = dr1_dir / "data" / "hess_dl3_dr1_obs_id_020136.fits.gz"
    with xr.open_dataset(run_file, engine="gadf") as ds:
        assert ds.attrs["HDUCLAS4"] == "BKG_3D"
    assert not GadfBackendEntrypoint().guess_can_open(tmp_path / "a.nc")
    assert GadfBackendEntrypoint().guess_can_open(str(path))

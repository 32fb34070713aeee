"""The ds.bkg accessor: registration without importing xarray early, and delegation."""

import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import xarray as xr

from xbkg import model as model_module
from xbkg import products
from xbkg.accessor import BackgroundAccessor
from xbkg.io.datastore import open_datastore, run_table
from xbkg.io.gadf import read_bkg
from xbkg.io.store import model_fits_header
from xbkg.pipeline import build_background
from xbkg.simulate import simulate_datastore


def python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        # import xbkg registers it, whatever was imported before or after
        ("import xbkg, xarray as xr; print(hasattr(xr.Dataset(), 'bkg'))", "True"),
        ("import xarray as xr, xbkg; print(hasattr(xr.Dataset(), 'bkg'))", "True"),
        # so does importing any xbkg module (the package is imported first)
        ("from xbkg.io.gadf import read_bkg; import xarray as xr; "
         "print(hasattr(xr.Dataset(), 'bkg'))", "True"),
        ("import xbkg.cli, xarray as xr; print(hasattr(xr.Dataset(), 'bkg'))", "True"),
    ],
)  # fmt: skip
def test_registration(code, expected):
    assert python(code) == expected


def test_registration_by_open_dataset(tmp_path):
    # xr.open_dataset without an engine loads every backend to choose one, xbkg's among them
    path = tmp_path / "plain.nc"
    xr.Dataset({"x": ("i", [1, 2])}).to_netcdf(path)
    code = (
        f"import xbkg, xarray as xr; xr.open_dataset({str(path)!r}).close(); "
        "print(hasattr(xr.Dataset(), 'bkg'))"
    )
    assert python(code) == "True"


def test_no_warning_about_overriding():
    # registering twice (re-import) is a no-op, and nothing else owns the name
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", "import xbkg.accessor, xbkg.products"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr


@pytest.fixture(scope="module")
def bkg(tmp_path_factory):
    path = simulate_datastore(tmp_path_factory.mktemp("sim") / "store", n_runs=4, seed=3)
    store = open_datastore(path)
    return build_background(store, run_table(store))


def test_methods_delegate(bkg):
    raw, smoothed = bkg.model, bkg.smoothed
    assert isinstance(raw.bkg, BackgroundAccessor)
    xr.testing.assert_identical(
        raw.drop_vars(["rate", "rate_error"]).bkg.rate(), model_module.compute_rate(raw)
    )
    xr.testing.assert_identical(raw.bkg.smooth(), model_module.smooth(raw))
    xr.testing.assert_identical(
        raw.bkg.smooth("gammapy-0.6"), model_module.smooth(raw, "gammapy-0.6")
    )
    xr.testing.assert_identical(
        smoothed.bkg.acceptance_curve(energy=1.0), products.acceptance_curve(smoothed, 1.0)
    )
    xr.testing.assert_identical(
        smoothed.bkg.spectrum(slice(0, 1)), products.spectrum(smoothed, slice(0, 1))
    )
    xr.testing.assert_identical(smoothed.bkg.image(), products.image(smoothed))
    xr.testing.assert_identical(
        bkg.cube.bkg.integrate("obs_id"), products.integrate(bkg.cube, "obs_id")
    )
    one = smoothed.sel(group=0)
    for method in ("plot_acceptance_curve", "plot_spectrum", "plot_image"):
        fig, ax = plt.subplots()
        assert getattr(one.bkg, method)(ax=ax) is ax
        plt.close(fig)
    axes = one.bkg.plot_overview(raw=raw.sel(group=0))
    assert len(axes) == 3
    plt.close(axes[0].figure)


def test_to_fits(bkg, tmp_path):
    path = bkg.smoothed.bkg.to_fits(tmp_path / "m.fits.gz", group=1)
    back = read_bkg(path)
    np.testing.assert_array_equal(back.values, bkg.smoothed["rate"].sel(group=1).fillna(0).values)
    header = model_fits_header(bkg.smoothed.sel(group=1))
    assert back.attrs["GROUP_ID"] == 1
    assert back.attrs["SMOOTHED"] == "poisson" == header["SMOOTHED"][0]
    assert back.attrs["NFILLED"] == int(bkg.smoothed["filled"].sel(group=1).sum())
    assert back.attrs["BKGTIME"] == "ONTIME"
    assert back.attrs["ZEN_PNT_MIN"] == 49.0
    with pytest.raises(ValueError, match="choose the one to write with group="):
        bkg.smoothed.bkg.to_fits(tmp_path / "all.fits")
    with pytest.raises(FileExistsError, match="overwrite"):
        bkg.smoothed.sel(group=1).bkg.to_fits(path)

"""The netCDF archive: contents, provenance, CF, export to FITS, schema versions."""

import shutil

import netCDF4
import numpy as np
import pytest
import xarray as xr

from conftest import require
from xbkg.axes import edges
from xbkg.cli import main
from xbkg.conventions import model_filename
from xbkg.grouping import GroupAxis
from xbkg.io.datastore import open_datastore, run_table
from xbkg.io.netcdf import ARCHIVE_VERSION, RUN_STATUS, read_archive, run_status, write_archive
from xbkg.options import options_for
from xbkg.pipeline import build_background, export_models, model_files, write_background
from xbkg.simulate import simulate_datastore

cf_xarray = require("cf_xarray")


@pytest.fixture(scope="module")
def archive(dr1_make_dir):
    return dr1_make_dir / "background.nc"


def test_archive_holds_everything(archive):
    with xr.open_dataset(archive) as ds:
        for name in (
            "run_counts",
            "run_exposure_time",
            "counts",
            "exposure_time",
            "rate",
            "rate_error",
            "smoothed_rate",
            "smoothed_rate_error",
            "region_ra",
            "region_radius",
            "run_status",
            "group_id",
            "zen_pnt_min",
            "zen_pnt_max",
            "n_runs",
        ):
            assert name in ds.variables, name
        assert ds.sizes["obs_id"] == 105
        assert ds.sizes["source"] > 0
        assert ds.attrs["time_convention"] == "ontime"
        assert ds.attrs["xbkg_version"]
        assert ds.attrs["source"] == f"xbkg {ds.attrs['xbkg_version']}"
        assert ds.attrs["xbkg_schema_version"] == ARCHIVE_VERSION
        assert '"smoothing": "poisson"' in ds.attrs["options"]
        assert ds.attrs["region_catalog"] == "gammacat.fits.gz"
        # runs used per group
        assert int((ds["group_id"] == 0).sum()) == int(ds["n_runs"].sel(group=0))
        # every run of DR1 was selected and used
        assert ds.sizes["obs_id_not_selected"] == 0
        assert (ds["run_status"] == 0).all()


def test_archive_is_cf(archive):
    with xr.open_dataset(archive) as ds:
        assert ds.attrs["Conventions"].startswith("CF-")
        assert ds.cf.bounds == {"energy": ["energy_bounds"], "offset": ["offset_bounds"]}
        vertices = ds.cf.bounds_to_vertices("energy")["energy_vertices"]
        np.testing.assert_allclose(vertices, np.geomspace(0.1, 100, 16))
        # every variable but the bounds (which inherit them) has a long name
        for name, var in ds.variables.items():
            if not str(name).endswith("_bounds"):
                assert "long_name" in var.attrs, name
        for name in ("rate", "smoothed_rate", "rate_error", "counts", "exposure_time"):
            assert ds[name].attrs["units"], name
        assert ds["energy"].attrs["units"] == "TeV"
        assert ds["offset"].attrs["units"] == "deg"
        assert not any("standard_name" in v.attrs for v in ds.variables.values())
        # flags and ancillary variables, understood by cf-xarray
        assert int((ds["run_status"].cf == "used").sum()) == 105
        assert "rate_error" in ds.cf["rate"].coords
        assert "smoothed_rate_error" in ds.cf["smoothed_rate"].coords


def test_archive_opens_with_plain_xarray(archive):
    with xr.open_dataset(archive) as ds:
        rate = ds["smoothed_rate"].sel(group=0, energy=1.0, method="nearest")
        assert rate.dims == ("offset",)
        assert np.isfinite(rate.values).all()
        # the accessor works on the archive's smoothed model
        curve = ds.rename(rate="raw_rate", smoothed_rate="rate").bkg.acceptance_curve(energy=1.0)
        assert curve.dims == ("group", "offset")


def test_run_status_and_runs_not_selected(crab4_dir, tmp_path):
    store = open_datastore(crab4_dir)
    runs = run_table(store)
    # group 1 covers 49-50 deg only: 23523 (49.4 deg) is in it, 23526 (46.8) in no group
    options = options_for(grouping=[GroupAxis("ZEN_PNT", edges=(49, 50))])
    bkg = build_background(store, runs.sel(obs_id=[23523, 23526]), options=options)
    path = write_archive(bkg, tmp_path / "a.nc", all_runs=runs)
    with xr.open_dataset(path) as ds:
        obs_ids, flags = ds["obs_id"].values.tolist(), ds["run_status"].values.tolist()
        status = dict(zip(obs_ids, flags, strict=True))
        assert status == {23523: 0, 23526: 1}
        assert ds["run_status"].attrs["flag_meanings"] == "used in_no_group no_exposure"
        np.testing.assert_array_equal(ds["run_status"].attrs["flag_values"], [0, 1, 2])
        assert ds["obs_id_not_selected"].values.tolist() == [23559, 23592]
        assert int((ds["run_status"].cf == "in_no_group").sum()) == 1
    back = read_archive(path)
    xr.testing.assert_identical(back.cube, bkg.cube)
    xr.testing.assert_identical(back.model, bkg.model)
    assert set(RUN_STATUS.values()) == {"used", "in_no_group", "no_exposure"}


def test_run_without_exposure_is_flagged(crab4_dir):
    store = open_datastore(crab4_dir)
    bkg = build_background(store, run_table(store).sel(obs_id=[23523, 23526]))
    cube = bkg.cube.copy()
    cube["exposure_time"] = cube["exposure_time"].where(cube["obs_id"] != 23526, 0.0)
    assert run_status(cube).values.tolist() == [0, 2]


def test_export_is_byte_identical_to_make(dr1_make_dir, archive, tmp_path, capsys):
    out = tmp_path / "exported"
    assert main(["export", str(archive), str(out)]) == 0
    # Every model file make wrote, per-run models included: all but the two indexes
    # and the archive itself.
    made = sorted(p.name for p in dr1_make_dir.iterdir())
    expected = [
        n for n in made if n not in ("background.nc", "hdu-index.fits.gz", "obs-index.fits.gz")
    ]
    assert f"wrote {len(expected)} files" in capsys.readouterr().out
    names = sorted(p.name for p in out.iterdir())
    assert names == expected
    assert {model_filename(g, s) for g in (0, 1) for s in (False, True)} <= set(names)
    assert sum(n.startswith("background_run_") for n in names) == 105
    for name in names:
        assert (out / name).read_bytes() == (dr1_make_dir / name).read_bytes(), name
    # refuses to overwrite, then does with --overwrite
    assert main(["export", str(archive), str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", str(archive), str(out), "--overwrite"]) == 0


def test_export_from_python_and_other_options(tmp_path):
    store = simulate_datastore(tmp_path / "store", n_runs=4, seed=5)
    ds = open_datastore(store)
    grouping = [GroupAxis("ZEN_PNT", edges=(0, 40, 90)), GroupAxis("N_TELS", values=(3, 4))]
    options = options_for("gammapy-0.6", grouping=grouping)
    bkg = build_background(ds, run_table(ds), options=options)
    write_background(bkg, ds, tmp_path / "made")
    exported = export_models(read_archive(tmp_path / "made" / "background.nc"), tmp_path / "ex")
    assert [p.name for p in exported] == model_files(bkg)
    for path in exported:
        assert path.read_bytes() == (tmp_path / "made" / path.name).read_bytes(), path.name


def test_unknown_schema_version_is_refused(archive, tmp_path, capsys):
    future = tmp_path / "future.nc"
    shutil.copy(archive, future)
    with netCDF4.Dataset(future, "a") as nc:
        nc.xbkg_schema_version = np.int64(ARCHIVE_VERSION + 1)
    message = (
        f"not an xbkg archive of schema version 2 or {ARCHIVE_VERSION} "
        rf"\(found schema 'xbkg-background-archive', version {ARCHIVE_VERSION + 1}\)"
    )
    with pytest.raises(ValueError, match=message):
        read_archive(future)
    assert main(["export", str(future), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("xbkg: error:")
    assert "future.nc" in err
    assert "schema version" in err
    assert not (tmp_path / "out").exists()

    other = tmp_path / "other.nc"
    xr.Dataset({"x": ("i", [1])}).to_netcdf(other)
    with pytest.raises(ValueError, match="found schema None"):
        read_archive(other)


def test_edges_round_trip_exactly(archive):
    bkg = read_archive(archive)
    with xr.open_dataset(archive) as ds:
        np.testing.assert_array_equal(
            ds["offset_bounds"].values[:, 0], edges(bkg.model, "offset")[:-1]
        )


def test_products_of_an_opened_archive_are_those_of_the_fits_model(archive):
    """``ds.bkg`` on a plain ``xr.open_dataset``: the smoothed model (as in the FITS files)."""
    import xbkg  # noqa: F401  (registers the accessor)

    bkg = read_archive(archive)
    with xr.open_dataset(archive) as ds:
        smoothed = ds.bkg.acceptance_curve(energy=1.0)
        raw = ds.bkg.acceptance_curve(energy=1.0, model="raw")
        spectrum = ds.bkg.spectrum(offset=slice(0, 1))
        with pytest.raises(ValueError, match="'smoothed' or 'raw'"):
            ds.bkg.image(model="best")
    np.testing.assert_allclose(
        smoothed.values, bkg.smoothed.bkg.acceptance_curve(energy=1.0).values, rtol=1e-12
    )
    np.testing.assert_allclose(
        raw.values, bkg.model.bkg.acceptance_curve(energy=1.0).values, rtol=1e-12
    )
    assert not np.allclose(smoothed.values, raw.values)
    np.testing.assert_allclose(
        spectrum.values, bkg.smoothed.bkg.spectrum(offset=slice(0, 1)).values, rtol=1e-12
    )
    # the raw view of a smoothed model in memory is its observed counts
    np.testing.assert_allclose(
        bkg.smoothed.bkg.acceptance_curve(energy=1.0, model="raw").values, raw.values, rtol=1e-12
    )


def test_no_fill_keeps_zeros_and_exports_identically(tmp_path, capsys):
    """``--no-fill``: per-run models with exact zeros, no fill masks, export byte-identical."""
    store = simulate_datastore(tmp_path / "store", n_runs=4, seed=6, events_per_run=5_000)
    out = tmp_path / "made"
    assert main(["make", str(store), str(out), "--no-fill"]) == 0
    assert "zeros kept where the data say nothing" in capsys.readouterr().out
    bkg = read_archive(out / "background.nc")
    assert bkg.options.fill_unconstrained is False
    assert bkg.run_models is not None
    assert "filled" not in bkg.run_models
    assert "filled" not in bkg.smoothed
    assert bkg.run_models["rate"].fillna(0).min() == 0
    assert main(["export", str(out / "background.nc"), str(tmp_path / "ex")]) == 0
    for path in (tmp_path / "ex").iterdir():
        assert path.read_bytes() == (out / path.name).read_bytes(), path.name

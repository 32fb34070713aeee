"""The netCDF archive: contents, provenance, CF, round trips, export to FITS, schema versions."""

import json
import shutil
import subprocess
import sys

import netCDF4
import numpy as np
import pytest
import xarray as xr
from xarray.backends import NetCDF4DataStore

from conftest import require
from xbkg.axes import edges, to_cf_bounds
from xbkg.cli import main
from xbkg.conventions import model_filename
from xbkg.grouping import GroupAxis
from xbkg.io.datastore import open_datastore, run_table
from xbkg.io.netcdf import (
    ARCHIVE_GROUPS,
    ARCHIVE_VERSION,
    RUN_STATUS,
    from_archive,
    read_archive,
    run_status,
    to_archive,
    write_archive,
)
from xbkg.options import Background, options_for
from xbkg.pipeline import build_background, export_models, model_files, write_background
from xbkg.simulate import simulate_datastore

cf_xarray = require("cf_xarray")

FIELDS = (
    "cube",
    "groups",
    "model",
    "smoothed",
    "regions",
    "conditions",
    "run_models",
    "fov_shape",
)
BINNED_GROUPS = ("runs", "model/raw", "model/smoothed", "conditions", "run_models")


def assert_same_background(back: Background, bkg: Background) -> None:
    """Every field identical, with the same dtypes and attribute types, and the same options."""
    assert back.options == bkg.options
    for field in FIELDS:
        a, b = getattr(back, field), getattr(bkg, field)
        assert (a is None) == (b is None), field
        if a is None:
            continue
        xr.testing.assert_identical(a, b)
        for name, var in b.variables.items():
            assert a[name].dtype == var.dtype, (field, name)
            for key, value in var.attrs.items():
                assert type(a[name].attrs[key]) is type(value), (field, name, key)
        assert list(a.attrs) == list(b.attrs), field
        for key, value in b.attrs.items():
            assert type(a.attrs[key]) is type(value), (field, key)


@pytest.fixture(scope="module")
def archive(dr1_make_dir):
    return dr1_make_dir / "background.nc"


@pytest.fixture(scope="module")
def dr1_default(dr1_dir, tmp_path_factory):
    """A default DR1 build (condition model), written, with the Background written."""
    store = open_datastore(dr1_dir)
    runs = run_table(store)
    bkg = build_background(store, runs)
    out = tmp_path_factory.mktemp("dr1-default") / "model"
    result = write_background(bkg, store, out, all_runs=runs)
    return result["background"], out, store, runs


@pytest.fixture(scope="module")
def sim_store(tmp_path_factory):
    return simulate_datastore(
        tmp_path_factory.mktemp("sim") / "store", n_runs=6, seed=11, events_per_run=8_000
    )


def test_archive_holds_everything(archive):
    with xr.open_datatree(archive) as tree:
        # A bkg_2d build has no field-of-view shape (tests/test_fov_model.py archives one).
        optional = {"/model/fov_shape"}
        assert set(tree.groups) == {"/", "/model", *(f"/{p}" for p in ARCHIVE_GROUPS)} - optional
        assert set(ARCHIVE_GROUPS.values()) == set(FIELDS)
        expected = {
            "runs": ("counts", "exposure_time", "excluded_fraction", "run_status", "group_id"),
            "groups": ("zen_pnt_min", "zen_pnt_max"),
            "model/raw": ("counts", "exposure_time", "rate", "rate_error", "n_runs"),
            "model/smoothed": ("rate", "rate_error", "filled", "zen_pnt_min", "n_runs"),
            "conditions": ("rate", "rate_raw", "coefficient", "condition_min", "run_weight"),
            "run_models": ("rate", "filled"),
            "regions": ("ra", "dec", "radius", "name"),
        }
        for path, names in expected.items():
            for name in names:
                assert name in tree[path].variables, (path, name)
        runs = tree["runs"]
        assert runs.sizes["obs_id"] == 105
        assert tree["run_models"].sizes["obs_id"] == 105
        assert tree["regions"].sizes["source"] > 0
        assert tree["conditions"].sizes["training_run"] == 105
        root = tree.attrs
        assert root["time_convention"] == "ontime"
        assert root["xbkg_version"]
        assert root["source"] == f"xbkg {root['xbkg_version']}"
        assert root["xbkg_schema"] == "xbkg-background-archive"
        assert root["xbkg_schema_version"] == ARCHIVE_VERSION
        assert json.loads(root["options"])["smoothing"] == "poisson"
        assert tree["regions"].attrs["catalog"] == "gammacat.fits.gz"
        assert tree["model/smoothed"].attrs["smoothing"] == "poisson"
        assert tree["model/raw"].attrs["smoothing"] == "none"
        assert tree["conditions"].attrs["model"] == "conditions"
        # runs used per group
        n_runs = tree["model/raw"]["n_runs"]
        assert int((runs["group_id"] == 0).sum()) == int(n_runs.sel(group=0))
        # every run of DR1 was selected and used
        assert tree["obs_id_not_selected"].size == 0
        assert (runs["run_status"] == 0).all()
        # no group inherits the variables or dimensions of another
        assert set(tree["model/smoothed"].to_dataset().dims) == {
            "group",
            "energy",
            "offset",
            "bounds",
        }


def test_archive_is_cf(archive):
    with xr.open_datatree(archive) as tree:
        assert tree.attrs["Conventions"].startswith("CF-")
        for node in tree.subtree:
            ds = node.to_dataset()
            # every variable but the bounds (which inherit them) has a long name
            for name, var in ds.variables.items():
                if not str(name).endswith("_bounds"):
                    assert "long_name" in var.attrs, (node.path, name)
            assert not any("standard_name" in v.attrs for v in ds.variables.values())
        for path in BINNED_GROUPS:
            ds = tree[path].to_dataset()
            assert ds.cf.bounds == {"energy": ["energy_bounds"], "offset": ["offset_bounds"]}, path
            vertices = ds.cf.bounds_to_vertices("energy")["energy_vertices"]
            np.testing.assert_allclose(vertices, np.geomspace(0.1, 100, 16))
            assert ds["energy"].attrs["units"] == "TeV"
            assert ds["offset"].attrs["units"] == "deg"
            if path != "runs":
                assert ds["rate"].attrs["units"] == "s-1 MeV-1 sr-1", path
        for path in ("model/raw", "model/smoothed", "conditions"):
            ds = tree[path].to_dataset()
            for name in ("rate_error", "counts", "exposure_time"):
                assert ds[name].attrs["units"], (path, name)
            assert "rate_error" in ds.cf["rate"].coords, path  # ancillary variables
        # flags, understood by cf-xarray
        runs = tree["runs"].to_dataset()
        assert int((runs["run_status"].cf == "used").sum()) == 105


def test_archive_opens_with_plain_xarray(archive):
    with xr.open_dataset(archive, group="model/smoothed") as ds:
        rate = ds["rate"].sel(group=0, energy=1.0, method="nearest")
        assert rate.dims == ("offset",)
        assert np.isfinite(rate.values).all()
        curve = ds.bkg.acceptance_curve(energy=1.0)
        assert curve.dims == ("group", "offset")
    # the root holds the provenance
    with xr.open_dataset(archive) as root:
        assert root.attrs["xbkg_schema_version"] == ARCHIVE_VERSION
        assert "obs_id_not_selected" in root


def test_dr1_default_round_trip(dr1_default, tmp_path):
    """The condition model, the per-run models and every other product come back identical."""
    bkg, out, _, runs = dr1_default
    assert bkg.conditions is not None
    assert bkg.run_models is not None
    back = read_archive(out / "background.nc")
    assert_same_background(back, bkg)
    # in memory too, and the same bytes for the same build
    assert_same_background(from_archive(to_archive(bkg)), bkg)
    again = write_archive(bkg, tmp_path / "again.nc", all_runs=runs)
    assert again.read_bytes() == (out / "background.nc").read_bytes()


def test_archive_bytes_do_not_depend_on_the_process(dr1_default, tmp_path):
    """netCDF-4 (HDF5) records no time: another process writes the same bytes."""
    _, out, store, _ = dr1_default
    code = (
        "import sys; from xbkg.io.netcdf import read_archive, write_archive; "
        "from xbkg.io.datastore import open_datastore, run_table; "
        "bkg = read_archive(sys.argv[1]); "
        "write_archive(bkg, sys.argv[2], all_runs=run_table(open_datastore(sys.argv[3])))"
    )
    copy = tmp_path / "copy.nc"
    argv = [str(out / "background.nc"), str(copy), str(store.path)]
    subprocess.run([sys.executable, "-c", code, *argv], check=True)
    assert copy.read_bytes() == (out / "background.nc").read_bytes()


@pytest.mark.parametrize(
    "args",
    [[], ["--model", "groups"], ["--no-fill"], ["--preset", "gammapy-0.6"]],
    ids=["default", "groups", "no-fill", "gammapy-0.6"],
)
def test_round_trip_and_export(sim_store, tmp_path, args):
    """read_archive gives back the Background written; export regenerates every model file."""
    ds = open_datastore(sim_store)
    runs = run_table(ds)
    preset = args[1] if args[:1] == ["--preset"] else "default"
    overrides = {}
    if "--model" in args:
        overrides["model"] = "groups"
    if "--no-fill" in args:
        overrides["fill_unconstrained"] = False
    bkg = build_background(ds, runs, options=options_for(preset, **overrides))
    result = write_background(bkg, ds, tmp_path / "made", all_runs=runs)
    written = result["background"]
    assert (written.conditions is not None) == (written.options.model == "conditions")
    back = read_archive(tmp_path / "made" / "background.nc")
    assert_same_background(back, written)
    exported = export_models(back, tmp_path / "ex")
    assert [p.name for p in exported] == model_files(written)
    for path in exported:
        assert path.read_bytes() == (tmp_path / "made" / path.name).read_bytes(), path.name


def test_run_status_and_runs_not_selected(crab4_dir, tmp_path):
    store = open_datastore(crab4_dir)
    runs = run_table(store)
    # group 1 covers 49-50 deg only: 23523 (49.4 deg) is in it, 23526 (46.8) in no group
    options = options_for(grouping=[GroupAxis("ZEN_PNT", edges=(49, 50))])
    bkg = build_background(store, runs.sel(obs_id=[23523, 23526]), options=options)
    path = write_archive(bkg, tmp_path / "a.nc", all_runs=runs)
    with xr.open_datatree(path) as tree:
        status = tree["runs/run_status"]
        assert dict(zip(status["obs_id"].values.tolist(), status.values.tolist(), strict=True)) == {
            23523: 0,
            23526: 1,
        }
        assert status.attrs["flag_meanings"] == "used in_no_group no_exposure"
        np.testing.assert_array_equal(status.attrs["flag_values"], [0, 1, 2])
        assert tree["obs_id_not_selected"].values.tolist() == [23559, 23592]
        assert int((tree["runs"].to_dataset()["run_status"].cf == "in_no_group").sum()) == 1
    assert_same_background(read_archive(path), bkg)
    assert set(RUN_STATUS.values()) == {"used", "in_no_group", "no_exposure"}


def test_run_without_exposure_is_flagged(crab4_dir):
    store = open_datastore(crab4_dir)
    bkg = build_background(store, run_table(store).sel(obs_id=[23523, 23526]))
    cube = bkg.cube.copy()
    cube["exposure_time"] = cube["exposure_time"].where(cube["obs_id"] != 23526, 0.0)
    assert run_status(cube).values.tolist() == [0, 2]


def check_export(made, archive, out, capsys):
    """``xbkg export`` writes every file ``xbkg make`` wrote but the indexes, byte for byte."""
    assert main(["export", str(archive), str(out)]) == 0
    names = sorted(
        p.name
        for p in made.iterdir()
        if p.name not in ("background.nc", "hdu-index.fits.gz", "obs-index.fits.gz")
    )
    assert f"wrote {len(names)} files" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == names
    for name in names:
        assert (out / name).read_bytes() == (made / name).read_bytes(), name
    return names


def test_export_is_byte_identical_to_make(dr1_make_dir, archive, tmp_path, capsys):
    out = tmp_path / "exported"
    names = check_export(dr1_make_dir, archive, out, capsys)
    # per-run models included
    assert {model_filename(g, s) for g in (0, 1) for s in (False, True)} <= set(names)
    assert sum(n.startswith("background_run_") for n in names) == 105
    # refuses to overwrite, then does with --overwrite
    assert main(["export", str(archive), str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", str(archive), str(out), "--overwrite"]) == 0


def test_export_with_model_groups(dr1_dir, tmp_path, capsys):
    made = tmp_path / "made"
    assert main(["make", str(dr1_dir), str(made), "--model", "groups", "-q"]) == 0
    capsys.readouterr()
    names = check_export(made, made / "background.nc", tmp_path / "ex", capsys)
    assert not any(n.startswith("background_run_") for n in names)
    back = read_archive(made / "background.nc")
    assert back.conditions is None
    assert back.run_models is None
    with xr.open_datatree(made / "background.nc") as tree:
        assert "/conditions" not in tree.groups
        assert "/run_models" not in tree.groups


def test_export_from_python_and_other_options(tmp_path):
    store = simulate_datastore(tmp_path / "store", n_runs=4, seed=5)
    ds = open_datastore(store)
    grouping = [GroupAxis("ZEN_PNT", edges=(0, 40, 90)), GroupAxis("N_TELS", values=(3, 4))]
    options = options_for("gammapy-0.6", grouping=grouping)
    bkg = build_background(ds, run_table(ds), options=options)
    write_background(bkg, ds, tmp_path / "made")
    back = read_archive(tmp_path / "made" / "background.nc")
    assert_same_background(back, bkg)
    exported = export_models(back, tmp_path / "ex")
    assert [p.name for p in exported] == model_files(bkg)
    for path in exported:
        assert path.read_bytes() == (tmp_path / "made" / path.name).read_bytes(), path.name


def test_no_fill_keeps_zeros_and_exports_identically(tmp_path, capsys):
    """``--no-fill``: per-run models with exact zeros, no fill masks, export byte-identical."""
    store = simulate_datastore(tmp_path / "store", n_runs=4, seed=6, events_per_run=5_000)
    out = tmp_path / "made"
    assert main(["make", str(store), str(out), "--no-fill"]) == 0
    assert "zeros kept where the data say nothing" in capsys.readouterr().out
    bkg = read_archive(out / "background.nc")
    assert bkg.options.fill_unconstrained is False
    assert bkg.conditions is not None
    assert bkg.run_models is not None
    assert "filled" not in bkg.run_models
    assert "filled" not in bkg.smoothed
    assert bkg.run_models["rate"].fillna(0).min() == 0
    check_export(out, out / "background.nc", tmp_path / "ex", capsys)


def test_skipped_and_reassigned_runs_are_in_the_root(crab4_dir, tmp_path):
    store = open_datastore(crab4_dir)
    runs = run_table(store)
    bkg = build_background(
        store, runs.sel(obs_id=[23526, 23559]), options=options_for(model="groups")
    )
    skipped = {"23592": "obs_023592.fits.gz: not a gzip file"}
    bkg = Background(
        bkg.cube.assign_attrs(skipped_runs=json.dumps(skipped)),
        bkg.groups,
        bkg.model,
        bkg.smoothed,
        bkg.regions,
        bkg.options,
    )
    path = write_archive(bkg, tmp_path / "a.nc", all_runs=runs, reassigned=[(23523, 1, 0)])
    with xr.open_dataset(path) as root:
        assert root["obs_id_skipped"].values.tolist() == [23592]
        assert root["skip_reason"].values.tolist() == [skipped["23592"]]
        assert root["obs_id_reassigned"].values.tolist() == [23523]
        assert root["reassigned_own_group"].values.tolist() == [1]
        assert root["reassigned_model_group"].values.tolist() == [0]
        assert sorted(root["obs_id_not_selected"].values.tolist()) == [23523, 23592]
    assert_same_background(read_archive(path), bkg)


# -- schema versions --------------------------------------------------------------------------


def write_schema3(bkg, path, *, all_runs=None):
    """A flat archive of schema 3, as xbkg wrote them before the tree (for the tests only)."""
    cube = bkg.cube.rename(counts="run_counts", exposure_time="run_exposure_time")
    renames = {k: f"smoothed_{k}" for k in ("rate", "rate_error", "filled") if k in bkg.smoothed}
    smoothed = bkg.smoothed[list(renames)].rename(renames)
    for name in renames.values():
        smoothed[name].attrs["smoothing"] = bkg.smoothed.attrs["smoothing"]
    ds = xr.merge([cube, bkg.model, smoothed], compat="identical", join="exact")
    if bkg.run_models is not None:
        present = {k: f"run_model_{k}" for k in ("rate", "filled") if k in bkg.run_models}
        own = bkg.run_models.rename({"obs_id": "obs_id_model", **present})
        ds = ds.merge(own, compat="identical", join="exact", combine_attrs="override")
    if bkg.regions is not None:
        ds = ds.merge(bkg.regions.rename({k: f"region_{k}" for k in bkg.regions.variables}))
    ds.attrs = {
        "Conventions": "CF-1.10",
        "xbkg_schema": "xbkg-background-archive",
        "xbkg_schema_version": 3,
        **{k: v for k, v in bkg.model.attrs.items() if k != "smoothing"},
        "smoothing": bkg.smoothed.attrs["smoothing"],
        **{
            f"region_{k}": v
            for k, v in (bkg.regions.attrs if bkg.regions is not None else {}).items()
        },
        "source": "xbkg 0.1.0",
    }
    ds["run_status"] = run_status(bkg.cube)
    if all_runs is not None:
        left_out = np.setdiff1d(all_runs["obs_id"].values, bkg.cube["obs_id"].values)
        ds["obs_id_not_selected"] = xr.DataArray(left_out, dims="obs_id_not_selected")
    ds["obs_id"].attrs.update(long_name="OBS_ID", xbkg_archive_attrs="long_name")
    store = NetCDF4DataStore.open(path, mode="w", format="NETCDF4")
    try:
        to_cf_bounds(ds).dump_to_store(store)
    finally:
        store.close()
    return path


def test_schema3_archives_still_open(dr1_default, tmp_path, capsys):
    """A flat archive of schema 3 gives its products back (it has no condition model)."""
    import xbkg  # noqa: F401  (registers the accessor)

    bkg, out, _, runs = dr1_default
    old = write_schema3(bkg, tmp_path / "v3.nc", all_runs=runs)
    back = read_archive(old)
    assert back.conditions is None
    for field in ("cube", "groups", "model", "smoothed", "regions", "run_models"):
        xr.testing.assert_identical(getattr(back, field), getattr(bkg, field))
    assert back.options == bkg.options
    # its model files are exported byte for byte
    assert main(["export", str(old), str(tmp_path / "ex")]) == 0
    capsys.readouterr()
    for path in (tmp_path / "ex").iterdir():
        assert path.read_bytes() == (out / path.name).read_bytes(), path.name
    # and plain xarray products still use its smoothed rate
    with xr.open_dataset(old) as ds:
        curve = ds.bkg.acceptance_curve(energy=1.0)
    np.testing.assert_array_equal(
        curve.values, bkg.smoothed.bkg.acceptance_curve(energy=1.0).values
    )


def test_schema2_archives_still_open(sim_store, tmp_path):
    """Schema 2: no fill masks, no per-run models, options without fill_unconstrained."""
    ds = open_datastore(sim_store)
    bkg = build_background(ds, run_table(ds), options=options_for("gammapy-0.6"))
    old = write_schema3(bkg, tmp_path / "v2.nc")
    with netCDF4.Dataset(old, "a") as nc:
        nc.xbkg_schema_version = np.int64(2)
        options = json.loads(nc.options)
        del options["fill_unconstrained"], options["exclude"]
        nc.options = json.dumps(options)
    back = read_archive(old)
    assert back.options == bkg.options
    assert back.options.fill_unconstrained is False
    # the options attribute is the one edited above
    xr.testing.assert_identical(
        back.smoothed.drop_attrs(deep=False), bkg.smoothed.drop_attrs(deep=False)
    )


def test_other_schema_versions_are_refused(archive, tmp_path, capsys):
    future = tmp_path / "future.nc"
    shutil.copy(archive, future)
    with netCDF4.Dataset(future, "a") as nc:
        nc.xbkg_schema_version = np.int64(ARCHIVE_VERSION + 1)
    message = (
        rf"future.nc: an xbkg archive of schema version {ARCHIVE_VERSION + 1}, which this xbkg "
        rf"\(reading versions 2, 3, {ARCHIVE_VERSION}\) cannot read; it was written by a newer "
        "xbkg: upgrade xbkg to read it"
    )
    with pytest.raises(ValueError, match=message):
        read_archive(future)
    assert main(["export", str(future), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("xbkg: error:")
    assert "future.nc" in err
    assert "schema version" in err
    assert not (tmp_path / "out").exists()

    ancient = tmp_path / "ancient.nc"
    shutil.copy(archive, ancient)
    with netCDF4.Dataset(ancient, "a") as nc:
        nc.xbkg_schema_version = np.int64(1)
    with pytest.raises(
        ValueError, match=r"ancient.nc: .* version 1, .*; rebuild it with xbkg make"
    ):
        read_archive(ancient)

    other = tmp_path / "other.nc"
    xr.Dataset({"x": ("i", [1])}).to_netcdf(other)
    with pytest.raises(ValueError, match=r"other.nc: not an xbkg archive \(found schema None"):
        read_archive(other)


def test_edges_round_trip_exactly(archive):
    bkg = read_archive(archive)
    with xr.open_dataset(archive, group="model/raw") as ds:
        np.testing.assert_array_equal(
            ds["offset_bounds"].values[:, 0], edges(bkg.model, "offset")[:-1]
        )
        np.testing.assert_array_equal(
            ds["energy_bounds"].values[:, 1], edges(bkg.model, "energy")[1:]
        )


def test_products_of_an_opened_archive_are_those_of_the_fits_model(archive):
    """``ds.bkg`` on the group models of ``xr.open_datatree``: as in the FITS files."""
    import xbkg  # noqa: F401  (registers the accessor)

    bkg = read_archive(archive)
    with xr.open_datatree(archive) as tree:
        ds = tree["model/smoothed"].to_dataset()
        smoothed = ds.bkg.acceptance_curve(energy=1.0)
        raw = tree["model/raw"].to_dataset().bkg.acceptance_curve(energy=1.0)
        observed = ds.bkg.acceptance_curve(energy=1.0, model="raw")
        spectrum = ds.bkg.spectrum(offset=slice(0, 1))
        with pytest.raises(ValueError, match="'smoothed' or 'raw'"):
            ds.bkg.image(model="best")
        # the root holds no model, and says where the models are
        with pytest.raises(ValueError, match=r"root of an xbkg archive.*'model/smoothed'"):
            tree.to_dataset().bkg.acceptance_curve(energy=1.0)
    np.testing.assert_array_equal(
        smoothed.values, bkg.smoothed.bkg.acceptance_curve(energy=1.0).values
    )
    np.testing.assert_array_equal(raw.values, bkg.model.bkg.acceptance_curve(energy=1.0).values)
    assert not np.allclose(smoothed.values, raw.values)
    np.testing.assert_array_equal(
        spectrum.values, bkg.smoothed.bkg.spectrum(offset=slice(0, 1)).values
    )
    # the raw view of a smoothed model is its observed counts
    np.testing.assert_allclose(observed.values, raw.values, rtol=1e-12)

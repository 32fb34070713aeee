"""End-to-end: data store -> models -> files, on the real H.E.S.S. data."""

import numpy as np
import pytest
import xarray as xr
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table

from conftest import require
from xbkg.cube import _vincenty_offset
from xbkg.errors import BackgroundWarning
from xbkg.grouping import GroupAxis
from xbkg.io import catalog
from xbkg.io.datastore import open_datastore, run_table
from xbkg.io.gadf import read_bkg
from xbkg.io.netcdf import read_archive
from xbkg.options import PRESETS, Options, options_for
from xbkg.pipeline import build_background, write_background


@pytest.fixture(scope="module")
def crab4(crab4_dir):
    store = open_datastore(crab4_dir)
    return store, run_table(store)


def test_gammapy06_reference_numbers(crab4):
    """The numbers of the Gammapy 0.6 implementation the tutorial used."""
    store, runs = crab4
    bkg = build_background(store, runs, options=PRESETS["gammapy-0.6"])
    per_run = bkg.cube["counts"].sum(("energy", "offset"))
    assert int(per_run.sum()) == 5403
    assert per_run.sel(obs_id=[23523, 23526, 23559, 23592]).values.tolist() == [
        1398,
        1373,
        1291,
        1341,
    ]
    gid = bkg.cube["group_id"]
    assert sorted(gid.obs_id.values[gid.values == 0].tolist()) == [23526, 23559, 23592]
    assert gid.obs_id.values[gid.values == 1].tolist() == [23523]
    assert float(bkg.cube["livetime"].sum()) == pytest.approx(6313.8117676, abs=1e-6)
    # LIVETIME everywhere, flat ring area, no safe-energy cut
    expo = bkg.model["exposure_time"].sel(group=0)
    np.testing.assert_allclose(expo, runs["livetime"].sel(obs_id=[23526, 23559, 23592]).sum())
    rate = bkg.model["rate"].sel(group=1)
    t = np.deg2rad(np.sqrt(np.linspace(0, 2.5**2, 100)))
    de = np.diff(np.geomspace(0.1, 100, 16)) * 1e6
    expected = bkg.model["counts"].sel(group=1) / (
        1581.7368164 * de[:, None] * (np.pi * np.diff(t**2))[None, :]
    )
    np.testing.assert_allclose(rate, expected, rtol=1e-7)


def test_gammapy06_wedge_exclusion(crab4, gammacat_path):
    store, runs = crab4
    regions = catalog.read_catalog(gammacat_path, min_radius=0.0)
    bkg = build_background(store, runs, regions=regions, options=PRESETS["gammapy-0.6"])
    cube = bkg.cube
    # one run-wide factor (1 - wedge fraction) on LIVETIME, the same in every bin
    for obs_id in runs.obs_id.values:
        expo = cube["exposure_time"].sel(obs_id=obs_id)
        assert np.ptp(expo.values) == 0
        frac = float(cube["excluded_fraction"].sel(obs_id=obs_id)[0])
        assert 0 < frac < 0.5
        assert float(expo[0, 0]) == pytest.approx(
            float(runs["livetime"].sel(obs_id=obs_id)) * (1 - frac)
        )
    assert int(cube["n_excluded"].sum()) > 0
    kept = cube["counts"].sum() + cube["n_excluded"].sum() + cube["n_outside"].sum()
    assert int(kept) == int(cube["n_events"].sum())


def test_gammapy06_offsets_are_astropy_separations():
    """The preset's offsets are astropy's Vincenty separations, poles and antipodes included."""
    rng = np.random.default_rng(5)
    ra = rng.uniform(0, 360, 5000).astype(np.float32).astype(np.float64)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, 5000))).astype(np.float32).astype(np.float64)
    ra[:3], dec[:3] = [10.0, 190.0, 123.0], [-20.0, 20.0, 90.0]  # same point, antipode, pole
    expected = SkyCoord(ra, dec, unit="deg").separation(SkyCoord(10.0, -20.0, unit="deg")).deg
    got = _vincenty_offset(10.0, -20.0, ra, dec)
    np.testing.assert_allclose(got, expected, rtol=1e-15, atol=1e-13)
    assert got[0] == 0.0
    assert got[1] == pytest.approx(180.0, rel=1e-15)


def test_gammapy06_counts_equal_astropy_histogram_on_dr1(dr1_dir):
    """On the 4 DR1 Crab runs every event is in the bin Gammapy 0.6 put it in.

    Gammapy 0.6 binned ``numpy.histogramdd`` of (ENERGY, offset) with the offset
    from astropy's ``SkyCoord.separation`` between the float32 RA/DEC columns
    (as float64) and the EVENTS header's RA_PNT/DEC_PNT; all events, without
    exclusion or safe-energy cut. The haversine of the default binning, or the
    obs-index pointing (float32), would move some events near a bin edge.
    """
    options = PRESETS["gammapy-0.6"]
    assert not options.safe_energy  # all events, as the reference below
    store = open_datastore(dr1_dir)
    crab = [23523, 23526, 23559, 23592]
    cube = build_background(store, run_table(store).sel(obs_id=crab), options=options).cube
    energy_edges, offset_edges = np.asarray(options.energy_edges), np.asarray(options.offset_edges)
    total = 0
    for obs_id in crab:
        path = dr1_dir / "data" / f"hess_dl3_dr1_obs_id_{obs_id:06d}.fits.gz"
        with fits.open(path) as hdul:
            events, header = hdul["EVENTS"].data, hdul["EVENTS"].header
            ra, dec = (np.asarray(events[c], dtype=np.float64) for c in ("RA", "DEC"))
            energy = np.asarray(events["ENERGY"], dtype=np.float64)
            pointing = SkyCoord(header["RA_PNT"], header["DEC_PNT"], unit="deg")
        offset = SkyCoord(ra, dec, unit="deg").separation(pointing).deg
        reference, _, _ = np.histogram2d(energy, offset, bins=[energy_edges, offset_edges])
        np.testing.assert_array_equal(cube["counts"].sel(obs_id=obs_id).values, reference)
        total += int(reference.sum())
    assert total > 20_000


def test_default_exact_exclusion_removes_every_source(crab4, gammacat_path):
    store, runs = crab4
    regions = catalog.read_catalog(gammacat_path)
    bkg = build_background(store, runs, regions=regions)
    frac = bkg.cube["excluded_fraction"]
    # per-ring fractions: non-zero on the Crab's ring (0.5 deg), zero beyond its circle
    near = frac.sel(obs_id=[23523, 23526])
    assert np.all(near.sel(offset=0.5, method="nearest") > 0.15)
    assert np.all(near.sel(offset=slice(0.85, None)) == 0)
    # runs 23559 and 23592 have the Crab at 1.50 deg on opposite sides; 23592 also has
    # RGB J0521+212 at 1.67 deg, which Gammapy 0.6 ignored (it used the nearest only)
    ring = frac.sel(offset=1.67, method="nearest")
    assert float(ring.sel(obs_id=23592)) > float(ring.sel(obs_id=23559)) + 0.05
    # exposure time is the ONTIME scaled by the unexcluded fraction
    on = runs["ontime"].sel(obs_id=23523)
    row = bkg.cube["exposure_time"].sel(obs_id=23523, energy=2.0, method="nearest")
    np.testing.assert_allclose(row, on * (1 - frac.sel(obs_id=23523)))
    assert bkg.model.attrs["time_convention"] == "ontime"


@pytest.fixture(scope="module")
def dr1_build(dr1_dir, gammacat_path, tmp_path_factory):
    store = open_datastore(dr1_dir)
    runs = run_table(store)
    regions = catalog.read_catalog(gammacat_path)
    # The group models in the index (the default gives every run a model of its own).
    bkg = build_background(store, runs, regions=regions, options=Options(model="groups"))
    out = tmp_path_factory.mktemp("dr1") / "model"
    result = write_background(bkg, store, out, all_runs=runs)
    return store, runs, bkg, out, result


def test_dr1_model_and_files(dr1_build):
    _store, runs, bkg, out, _ = dr1_build
    assert bkg.cube.sizes["obs_id"] == 105
    # counts conserved: every event is binned, excluded, unsafe or outside the binning
    cube = bkg.cube
    np.testing.assert_array_equal(
        cube["counts"].sum(("energy", "offset"))
        + cube["n_excluded"]
        + cube["n_unsafe"]
        + cube["n_outside"],
        cube["n_events"],
    )
    assert int(cube["n_events"].sum()) == int(runs["event_count"].sum())
    # no counts nor exposure below the safe threshold
    for obs_id in [20136, 47802]:
        lo = float(runs["safe_energy_lo"].sel(obs_id=obs_id))
        below = cube["energy_lo"] < lo * (1 - 1e-5)
        assert float(cube["exposure_time"].sel(obs_id=obs_id).where(below).max()) == 0
        assert int(cube["counts"].sel(obs_id=obs_id).where(below).sum()) == 0
    # files
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "background.nc",
        "background_2D_group_000_table.fits.gz",
        "background_2D_group_001_table.fits.gz",
        "group-def.fits",
        "hdu-index.fits.gz",
        "obs-index.fits.gz",
        "smooth_background_2D_group_000_table.fits.gz",
        "smooth_background_2D_group_001_table.fits.gz",
    ]
    raw = read_bkg(out / "background_2D_group_000_table.fits.gz")
    smooth = read_bkg(out / "smooth_background_2D_group_000_table.fits.gz")
    assert not np.array_equal(raw.values, smooth.values)  # the Gammapy 0.6 files were identical
    # Bins the data constrain keep the raw rate, the others get a positive
    # continuation; the file holds the log-log nodes of that (BKGENODE).
    from xbkg.pipeline import fill_model
    from xbkg.prediction import loglog_nodes

    measured = bkg.model["rate"].sel(group=0)
    constrained = (measured > 0).values
    filled = fill_model(bkg.model)["rate"].sel(group=0)
    np.testing.assert_allclose(filled.values[constrained], measured.values[constrained], rtol=1e-12)
    np.testing.assert_allclose(raw.values, loglog_nodes(filled).values, rtol=1e-12)
    assert raw.attrs["BKGENODE"] == "LOGLOG"
    assert np.all(raw.values > 0)
    assert np.all(smooth.values > 0)
    assert raw.attrs["NFILLED"] == int((~constrained).sum())
    assert smooth.attrs["NFILLED"] == int(bkg.smoothed["filled"].sel(group=0).sum())
    assert raw.attrs["BKGTIME"] == "ONTIME"
    assert raw.attrs["HDUCLAS4"] == "BKG_2D"


def test_dr1_hdu_index(dr1_build):
    store, _runs, bkg, out, _ = dr1_build
    hdu = Table.read(out / "hdu-index.fits.gz")
    obs = Table.read(out / "obs-index.fits.gz")
    assert len(obs) == 105
    bkg_rows = hdu[hdu["HDU_TYPE"] == "bkg"]
    assert len(bkg_rows) == 105  # DR1's own bkg_3d rows replaced, not duplicated
    assert set(bkg_rows["HDU_CLASS"]) == {"bkg_2d"}
    assert len(hdu) == len(store.hdu_index)
    for row in hdu:
        path = out / row["FILE_DIR"] / row["FILE_NAME"]
        assert path.is_file(), path
    gid = bkg.cube["group_id"]
    for row in bkg_rows:
        group = int(gid.sel(obs_id=row["OBS_ID"]))
        assert row["FILE_NAME"] == f"smooth_background_2D_group_{group:03d}_table.fits.gz"
        assert row["SIZE"] == (out / row["FILE_NAME"]).stat().st_size
        assert len(row["MD5"]) == 32


def test_gammapy_reads_the_output_store(dr1_build):
    gammapy_data = require("gammapy.data")
    import astropy.units as u

    _, _, bkg, out, _ = dr1_build
    store = gammapy_data.DataStore.from_dir(out)
    obs = store.obs(20136)
    assert len(obs.events.table) == 11243
    group = int(bkg.cube["group_id"].sel(obs_id=20136))
    from xbkg.prediction import loglog_nodes

    # At the nodes Gammapy reads the values the file holds: the log-log nodes of the model.
    model = loglog_nodes(bkg.smoothed["rate"].sel(group=group))
    e, o = model.energy.values[8], model.offset.values[20]
    value = obs.bkg.evaluate(energy=e * u.TeV, offset=o * u.deg)
    assert value.unit.is_equivalent("MeV-1 s-1 sr-1")
    assert value.to_value("MeV-1 s-1 sr-1") == pytest.approx(
        float(model.sel(energy=e, offset=o)), rel=1e-6
    )


def test_archive_roundtrip(dr1_build):
    _, _, bkg, out, _ = dr1_build
    back = read_archive(out / "background.nc")
    xr.testing.assert_identical(back.cube, bkg.cube)
    xr.testing.assert_identical(back.model, bkg.model)
    xr.testing.assert_identical(back.smoothed, bkg.smoothed)
    xr.testing.assert_identical(back.groups, bkg.groups)
    xr.testing.assert_identical(back.regions, bkg.regions)
    assert back.options == bkg.options


def test_outputs_are_reproducible_and_not_overwritten(crab4, tmp_path):
    store, runs = crab4
    bkg = build_background(store, runs)
    a = write_background(bkg, store, tmp_path / "a", all_runs=runs)
    write_background(bkg, store, tmp_path / "b", all_runs=runs)
    for name in a["files"]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    before = {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()}
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_background(bkg, store, tmp_path / "a", all_runs=runs)
    assert {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()} == before
    write_background(bkg, store, tmp_path / "a", all_runs=runs, overwrite=True)


def test_runs_without_model_get_nearest_group(crab4, tmp_path):
    store, runs = crab4
    # Build from group-0 runs only: run 23523 (group 1) must still get a model.
    options = options_for("default", missing_group="nearest", model="groups")
    bkg = build_background(store, runs.sel(obs_id=[23526, 23559]), options=options)
    with pytest.warns(BackgroundWarning, match=r"1 run of the data store \(1 in a group without"):
        result = write_background(bkg, store, tmp_path / "m", all_runs=runs)
    assert result["reassigned"] == [(23523, 1, 0)]
    hdu = Table.read(tmp_path / "m" / "hdu-index.fits.gz")
    row = hdu[(hdu["OBS_ID"] == 23523) & (hdu["HDU_TYPE"] == "bkg")]
    assert row["FILE_NAME"][0] == "smooth_background_2D_group_000_table.fits.gz"
    # The full list is in the archive.
    with xr.open_dataset(tmp_path / "m" / "background.nc") as ds:
        assert ds["obs_id_reassigned"].values.tolist() == [23523]
        assert ds["reassigned_own_group"].values.tolist() == [1]
        assert ds["reassigned_model_group"].values.tolist() == [0]

    strict = build_background(
        store,
        runs.sel(obs_id=[23526]),
        options=options_for(missing_group="error", model="groups"),
    )
    with pytest.raises(ValueError, match="OBS_IDs 23523"):
        write_background(strict, store, tmp_path / "strict", all_runs=runs)
    assert not (tmp_path / "strict").exists() or not any((tmp_path / "strict").iterdir())


def test_runs_in_no_group_are_reported_once_and_get_the_nearest_group(crab4, tmp_path):
    """Runs outside every group: one warning, the group nearest in zenith, not in number."""
    store, runs = crab4
    # Zenith angles: 23559 45.8, 23526 46.8, 23592 49.0, 23523 49.4 deg.
    grouping = [GroupAxis("ZEN_PNT", edges=(10.0, 20.0, 46.0, 47.0))]
    options = options_for(grouping=grouping)
    assert options.model == "groups"  # asking for groups means wanting their models
    bkg = build_background(store, runs, options=options)
    with pytest.warns(BackgroundWarning) as record:
        result = write_background(bkg, store, tmp_path / "m", all_runs=runs)
    assert len(record) == 1
    message = str(record[0].message)
    assert "2 runs of the data store (2 in no group" in message
    assert "nearest group with runs in the grouping variables" in message
    assert "23523" in message
    assert "23592" in message
    # Group 2 ([46, 47)) is the nearest to 49 deg, although group 1 holds run 23559.
    assert sorted(result["reassigned"]) == [(23523, -1, 2), (23592, -1, 2)]


def test_options_validation():
    with pytest.raises(ValueError, match="unknown preset"):
        options_for("gammapy-0.5")
    with pytest.raises(ValueError, match="unknown option"):
        options_for(smoothness="a lot")

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from xbkg.errors import OutputExistsError
from xbkg.io import datastore as ds


def test_dr1_store(dr1_dir):
    store = ds.open_datastore(dr1_dir)
    runs = ds.run_table(store)
    assert runs.sizes["obs_id"] == 105
    assert runs["zen_pnt"].attrs["units"] == "deg"
    assert runs["safe_energy_lo"].attrs["gadf_name"] == "SAFE_ENERGY_LO"
    path, hdu = ds.hdu_location(store, 20136)
    assert path.name == "hess_dl3_dr1_obs_id_020136.fits.gz"
    assert hdu == "events"  # lower case in the index, EVENTS in the file
    events = ds.read_events(path, hdu)
    assert events.energy.size == 11243
    assert events.header["OBS_ID"] == 20136


def test_crab4_old_layout(crab4_dir):
    store = ds.open_datastore(crab4_dir)
    # NUL padding stripped from the index strings
    assert all("\x00" not in v for v in store.hdu_index["FILE_DIR"])
    runs = ds.run_table(store)
    np.testing.assert_allclose(
        runs["zen_pnt"].values, [49.393833, 46.787724, 45.7608, 48.96561], rtol=1e-6
    )
    # No units on the event columns: energy in TeV by convention
    events = ds.read_events(*ds.hdu_location(store, 23523))
    assert events.energy.size == 1527
    assert 0.4 < np.median(events.energy) < 5


def test_select_runs(dr1_dir):
    runs = ds.run_table(ds.open_datastore(dr1_dir))
    extragalactic = ds.select_runs(runs, ranges={"|GLAT_PNT|": (10, None)})
    assert extragalactic.sizes["obs_id"] == 61
    assert np.all(np.abs(extragalactic["glat_pnt"].values) >= 10)
    crab = ds.select_runs(runs, [23592, 23523])
    assert crab["obs_id"].values.tolist() == [23592, 23523]
    with pytest.raises(ds.DataStoreError, match="not in the data store"):
        ds.select_runs(runs, [1])
    with pytest.raises(ds.DataStoreError, match="no such run column"):
        ds.select_runs(runs, ranges={"NOPE": (0, 1)})


def test_missing_columns_completed_from_headers(crab4_dir, tmp_path):
    # Another instrument's index: no ZEN_PNT, no LIVETIME, no pointing.
    store = ds.copy_runs(ds.open_datastore(crab4_dir), [23523, 23526], tmp_path / "s")
    obs = store.obs_index.copy()
    obs.remove_columns(["ZEN_PNT", "LIVETIME", "RA_PNT", "DEC_PNT", "MUONEFF"])
    fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(obs)]).writeto(
        tmp_path / "s" / "obs-index.fits.gz", overwrite=True
    )
    runs = ds.run_table(ds.open_datastore(tmp_path / "s"))
    np.testing.assert_allclose(runs["zen_pnt"].values, 90 - runs["alt_pnt"].values)
    np.testing.assert_allclose(runs["livetime"].values, [1581.7368164, 1572.68676758], rtol=1e-6)
    np.testing.assert_allclose(runs["ra_pnt"].values, 83.633333, rtol=1e-6)
    np.testing.assert_allclose(runs["muoneff"].values, [0.7, 0.8])  # from the EVENTS headers


def test_copy_runs(crab4_dir, tmp_path):
    src = ds.open_datastore(crab4_dir)
    out = ds.copy_runs(src, [23559], tmp_path / "copy")
    assert out.obs_ids.tolist() == [23559]
    assert len(out.hdu_index) == 7
    for row in out.hdu_index:
        assert (out.base_dir / row["FILE_DIR"] / row["FILE_NAME"]).is_file()
    with pytest.raises(OutputExistsError, match="would overwrite"):
        ds.copy_runs(src, [23559], tmp_path / "copy")
    with pytest.raises(ds.DataStoreError, match="not in the data store"):
        ds.copy_runs(src, [1], tmp_path / "other")


def test_errors_name_the_file(tmp_path):
    with pytest.raises(ds.DataStoreError, match="folder not found"):
        ds.open_datastore(tmp_path / "nowhere")
    with pytest.raises(ds.DataStoreError, match=r"hdu-index.fits.gz: HDU index not found"):
        ds.open_datastore(tmp_path)
    bad = Table({"OBS_ID": [1], "HDU_TYPE": ["events"]})
    bad.write(tmp_path / "hdu-index.fits.gz")
    Table({"OBS_ID": [1]}).write(tmp_path / "obs-index.fits.gz")
    with pytest.raises(ds.DataStoreError, match="lacks the required columns"):
        ds.open_datastore(tmp_path)
    with pytest.raises(ds.DataStoreError, match="does not exist"):
        ds.read_events(tmp_path / "missing.fits")
    (tmp_path / "junk.fits").write_bytes(b"not a fits file")
    with pytest.raises(ds.DataStoreError, match=r"junk\.fits"):
        ds.read_events(tmp_path / "junk.fits")

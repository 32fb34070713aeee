"""Tables read and written with astropy: indexes, catalogues; the same bytes run to run."""

from __future__ import annotations

import gzip
import io
import warnings

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.table import Table

from xbkg.errors import DataStoreError
from xbkg.io import datastore
from xbkg.io.catalog import read_catalog
from xbkg.io.gadf import read_bkg


def cleaned(column):
    """What the index reader promises for a column astropy reads."""
    data = np.ma.asarray(column)
    if data.dtype.kind in "SU":
        return np.array([str(v).replace("\x00", "").strip() for v in data.filled("")])
    return np.ma.filled(data, np.nan) if data.dtype.kind == "f" else np.asarray(data)


@pytest.mark.parametrize("name", ["hdu_index", "obs_index"])
@pytest.mark.parametrize("folder", ["dr1_dir", "crab4_dir"])
def test_index_tables_read_as_astropy_reads_them(request, folder, name):
    path = request.getfixturevalue(folder) / f"{name.replace('_', '-')}.fits.gz"
    table = getattr(datastore.open_datastore(path.parent), name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", u.UnitsWarning)
        reference = Table.read(path)
    assert table.colnames == reference.colnames
    for column in reference.colnames:
        expected = cleaned(reference[column])
        if column in ("HDU_TYPE", "HDU_CLASS"):
            expected = np.char.lower(expected)
        np.testing.assert_array_equal(table[column], expected)
        assert table[column].dtype.kind == expected.dtype.kind
        assert table[column].unit == reference[column].unit
    assert table.meta == {k: v for k, v in reference.meta.items() if k != "EXTNAME"}


def test_index_round_trip(crab4_dir, tmp_path):
    store = datastore.open_datastore(crab4_dir)
    index = store.hdu_index.copy()
    index.meta["BASE_DIR"] = "somewhere"
    path = datastore.write_index(index, tmp_path / "hdu-index.fits.gz", "HDU_INDEX")
    data = path.read_bytes()
    assert data[4:8] == b"\0\0\0\0"  # no gzip timestamp
    again = datastore.write_index(index, tmp_path / "again.fits.gz", "HDU_INDEX")
    assert again.read_bytes() == data
    with fits.open(path) as hdul:
        assert hdul[1].name == "HDU_INDEX"
        assert "BASE_DIR" not in hdul[1].header  # the files lie beside a written index
        assert not {"DATE", "CHECKSUM"} & set(hdul[1].header)
    read = datastore._read_index(path, "HDU index")
    assert read.colnames == store.hdu_index.colnames
    for column in read.colnames:
        np.testing.assert_array_equal(read[column], store.hdu_index[column])
        assert read[column].unit == store.hdu_index[column].unit
    assert read.meta == {k: v for k, v in store.hdu_index.meta.items() if k != "BASE_DIR"}
    with pytest.raises(FileExistsError, match="overwrite"):
        datastore.write_index(index, path, "HDU_INDEX")


def test_catalogues(gammacat_path, hgps_path):
    # HGPS holds several tables: the sources are in HGPS_SOURCES.
    assert read_catalog(hgps_path).sizes["source"] == 78
    assert read_catalog(gammacat_path).sizes["source"] == 162


def test_binary_garbage_in_a_header_is_refused(dr1_dir, tmp_path):
    path = sorted((dr1_dir / "data").glob("*.fits.gz"))[0]
    raw = bytearray(gzip.decompress(path.read_bytes()))
    with fits.open(io.BytesIO(bytes(raw))) as hdul:
        start = hdul.fileinfo(hdul.index_of("BKG"))["hdrLoc"]
    raw[start + 11 : start + 2000 : 7] = bytes([0xC6]) * len(raw[start + 11 : start + 2000 : 7])
    damaged = tmp_path / "damaged.fits"
    damaged.write_bytes(bytes(raw))
    with pytest.raises(DataStoreError, match=r"damaged\.fits: .*not printable ASCII"):
        read_bkg(damaged, "BKG")

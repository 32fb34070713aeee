"""The astropy-free table reader and writer agree with astropy, byte for byte where
they write, value for value where they read; ``xbkg make`` never imports astropy."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.table import Table

from conftest import require
from xbkg.io import datastore
from xbkg.io.catalog import _from_astropy, _read_fits_fast, _read_source_table, read_catalog
from xbkg.io.eventfile import read_table
from xbkg.io.fitsfile import _card_text, format_card, table_bytes, write_table

hypothesis = require("hypothesis")
st = require("hypothesis.strategies")
given, settings = hypothesis.given, hypothesis.settings

PRINTABLE = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=70)
VALUES = st.one_of(
    st.booleans(),
    st.integers(-(10**19), 10**19),
    st.floats(allow_nan=False, allow_infinity=False),
    PRINTABLE,
)


def astropy_card(key, value, comment=""):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy warns when it truncates a comment
        return fits.Card(key, value, comment).image


def mine(key, value, comment=""):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the same warning, where astropy formats the card
        return format_card(key, value, comment)


@settings(max_examples=3000)
@given(st.from_regex(r"[A-Z][A-Z0-9_-]{0,7}", fullmatch=True), VALUES, PRINTABLE)
def test_cards_as_astropy_formats_them(key, value, comment):
    assert mine(key, value, comment) == astropy_card(key, value, comment)


@settings(max_examples=1000)
@given(st.from_regex(r"HIERARCH [A-Z][A-Z0-9_-]{8,30}", fullmatch=True), VALUES, PRINTABLE)
def test_hierarch_cards_as_astropy_formats_them(key, value, comment):
    assert mine(key, value, comment) == astropy_card(key, value, comment)


@pytest.mark.parametrize(
    ("key", "value", "comment"),
    [
        ("COMMENT", "a remark", ""),
        ("HISTORY", "", ""),
        ("A", "x" * 90, ""),  # long string: CONTINUE cards, left to astropy
        ("A", 1.0, "x" * 90),  # comment truncated by astropy
        ("A", np.float32(0.1), ""),  # float32 prints differently: left to astropy
        ("lower", 1, ""),
    ],
)
def test_cards_beyond_the_common_cases(key, value, comment):
    assert mine(key, value, comment) == astropy_card(key, value, comment)
    if key in ("COMMENT", "HISTORY"):
        assert _card_text(key, value, comment) is not None  # formatted without astropy


def astropy_table_bytes(columns, header, extname):
    fits_columns = []
    for name, values, unit, tdim in columns:
        values = np.asarray(values)
        if values.dtype.kind == "U":
            code = f"{max(1, max((len(v) for v in values), default=1))}A"
        else:
            code = {"i8": "K", "i4": "J", "i2": "I", "u1": "B", "f8": "D", "f4": "E", "b1": "L"}[
                f"{values.dtype.kind}{values.dtype.itemsize}"
            ]
            if values.ndim > 1:
                code = f"{values.shape[1]}{code}"
        fits_columns.append(fits.Column(name, code, unit=unit, dim=tdim, array=values))
    cards = fits.Header([fits.Card(*card) for card in header])
    hdu = fits.BinTableHDU.from_columns(fits_columns, header=cards, name=extname)
    out = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(out)
    return out.getvalue()


def test_table_bytes_as_astropy_writes_them():
    columns = [
        ("OBS_ID", np.array([20136, 20137, 20151]), None, None),
        ("RA_PNT", np.array([1.5, 2.0, -3.25]), "deg", None),
        ("LIVETIME", np.array([1.5, 2.0, 3.0], dtype=np.float32), "s", None),
        ("N_TELS", np.array([3, 4, 4], dtype=np.int16), None, None),
        ("EVENTS", np.array([1, 2, 3], dtype=np.int32), None, None),
        ("FLAG", np.array([1, 0, 255], dtype=np.uint8), None, None),
        ("GOOD", np.array([True, False, True]), None, None),
        ("FILE_NAME", np.array(["a.fits", "", "hess_dl3_dr1_obs_id_020151.fits.gz"]), None, None),
        ("EDGES", np.arange(6.0).reshape(3, 2), "TeV", None),
    ]
    header = [("HDUCLASS", "GADF", ""), ("HIERARCH ZEN_PNT_MAX", 49.0, "group range")]
    assert table_bytes(columns, header, "OBS_INDEX") == astropy_table_bytes(
        columns, header, "OBS_INDEX"
    )


def test_empty_table_as_astropy_writes_it():
    columns = [("OBS_ID", np.array([], dtype=np.int64), None, None)]
    assert table_bytes(columns, [], "X") == astropy_table_bytes(columns, [], "X")


def test_table_bytes_refuses_what_it_cannot_write():
    with pytest.raises(TypeError, match="'T'"):
        table_bytes([("T", np.array([1], dtype=np.uint32), None, None)], [], "X")
    with pytest.raises(ValueError, match="different lengths"):
        table_bytes([("A", np.zeros(2), None, None), ("B", np.zeros(3), None, None)], [], "X")


def test_write_table_round_trip(tmp_path):
    columns = {"OBS_ID": np.array([3, 1]), "NAME": np.array(["Crab", "PKS 2155-304"])}
    header = [("COMMENT", "first"), ("TELESCOP", "HESS"), ("COMMENT", "second"), ("X", None)]
    path = write_table(columns, tmp_path / "t.fits.gz", "OBS_INDEX", units={}, header=header)
    assert path.read_bytes()[4:8] == b"\0\0\0\0"  # no gzip timestamp
    table = Table.read(path)
    assert table["OBS_ID"].tolist() == [3, 1]
    assert table["NAME"].tolist() == ["Crab", "PKS 2155-304"]
    assert table.meta["TELESCOP"] == "HESS"
    assert table.meta["comments"] == ["first", "second"]
    with pytest.raises(FileExistsError, match="overwrite"):
        write_table(columns, path, "OBS_INDEX")


# --------------------------------------------------------------------------- reading


def cleaned(column):
    """What the reader promises for a column astropy read."""
    data = np.ma.asarray(column)
    if data.dtype.kind in "SU":
        return np.array([str(v).replace("\x00", "").strip() for v in data.filled("")])
    return np.ma.filled(data, np.nan) if data.dtype.kind == "f" else np.asarray(data)


@pytest.mark.parametrize("name", ["hdu-index.fits.gz", "obs-index.fits.gz"])
@pytest.mark.parametrize("store", ["dr1_dir", "crab4_dir"])
def test_index_tables_read_as_astropy_reads_them(request, store, name):
    path = request.getfixturevalue(store) / name
    fast = read_table(path)
    assert fast is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", u.UnitsWarning)
        reference = Table.read(path)
    assert list(fast.columns) == reference.colnames
    for column in reference.colnames:
        np.testing.assert_array_equal(fast.columns[column], cleaned(reference[column]))
        assert fast.columns[column].dtype.kind == cleaned(reference[column]).dtype.kind
        if reference[column].unit is not None:
            assert fast.units[column] == str(reference[column].unit)
    keywords = dict(fast.header)
    assert {k: keywords[k] for k in reference.meta if k not in ("comments", "EXTNAME")} == {
        k: v for k, v in reference.meta.items() if k not in ("comments", "EXTNAME")
    }


def test_open_datastore_same_with_and_without_astropy(dr1_dir, monkeypatch):
    fast = datastore.open_datastore(dr1_dir)
    monkeypatch.setattr(datastore, "read_table", lambda path: None)
    slow = datastore.open_datastore(dr1_dir)
    for name in ("hdu_index", "obs_index"):
        a, b = getattr(fast, name), getattr(slow, name)
        assert a.colnames == b.colnames
        assert dict(a.units) == dict(b.units)
        assert a.header == b.header
        for column in a.colnames:
            np.testing.assert_array_equal(a[column], b[column])
            assert a[column].dtype == b[column].dtype
    assert datastore.run_table(fast).identical(datastore.run_table(slow))


def test_index_table_round_trip(dr1_dir, tmp_path):
    store = datastore.open_datastore(dr1_dir)
    path = store.obs_index.write(tmp_path / "obs-index.fits.gz", "OBS_INDEX")
    table = Table.read(path)
    reference = store.obs_index.to_table()
    assert table.colnames == reference.colnames
    for column in table.colnames:
        kinds = {table[column].dtype.kind, reference[column].dtype.kind}
        assert len(kinds) == 1 or kinds == {"S", "U"}  # astropy reads FITS text as bytes
        assert table[column].unit == reference[column].unit
    assert table.meta["comments"] == reference.meta["comments"]
    again = datastore._read_index(path, "observation index")
    assert again.header == store.obs_index.header
    for column in again.colnames:
        np.testing.assert_array_equal(again[column], store.obs_index[column])


def write_tables(path, tables):
    hdus = [fits.PrimaryHDU()]
    for name, columns in tables:
        hdus.append(fits.BinTableHDU.from_columns(columns, name=name))
    fits.HDUList(hdus).writeto(path)


def test_scaled_and_null_integers_and_logicals(tmp_path):
    path = tmp_path / "t.fits"
    write_tables(
        path,
        [
            (
                "T",
                [
                    fits.Column(
                        "U16", "I", bzero=32768, array=np.array([0, 65535], dtype=np.uint16)
                    ),
                    fits.Column("NUL", "J", null=-1, array=np.array([5, -1], dtype=np.int32)),
                    fits.Column("OK", "L", array=np.array([True, False])),
                    fits.Column("VEC", "2E", array=np.zeros((2, 2))),
                ],
            )
        ],
    )
    table = read_table(path, columns=["u16", "nul", "ok"])
    assert table is not None
    assert table.columns["U16"].tolist() == [0, 65535]
    np.testing.assert_array_equal(table.columns["NUL"], [5.0, np.nan])
    assert table.columns["OK"].tolist() == [True, False]
    # A vector column is for astropy to read.
    assert read_table(path) is None
    assert read_table(path, columns=["missing"]) is None


def test_rank_chooses_the_table(tmp_path):
    path = tmp_path / "t.fits"
    column = fits.Column("X", "D", array=[1.0])
    write_tables(path, [("A", [column]), ("B", [column]), ("C", [column])])

    def rank(name, names):
        return {"A": 2, "B": 1, "C": None}[name]

    assert read_table(path, rank).name == "B"
    assert read_table(path, lambda name, names: 0 if name == "C" else None).name == "C"
    assert read_table(path, lambda name, names: None) is None


def test_catalogues_read_as_with_astropy(gammacat_path, hgps_path):
    for path in (gammacat_path, hgps_path):
        fast = _read_fits_fast(path, None)
        assert fast is not None
        slow = _from_astropy(_read_source_table(path, None))
        assert sorted(fast.colnames) == sorted(slow.colnames)
        assert dict(fast.units) == dict(slow.units)
        for column in fast.colnames:
            expected = cleaned(slow.columns[column])
            np.testing.assert_array_equal(np.asarray(fast.columns[column]), expected)
    assert read_catalog(hgps_path).sizes["source"] == 78


@pytest.mark.parametrize("unit", ["deg", "rad", "arcmin", "arcsec"])
def test_angle_units_without_astropy(unit):
    values = np.array([0.5, 1.0])
    factor = u.Unit(unit).to(u.deg)
    np.testing.assert_allclose(
        datastore._to_unit(values, unit, "deg", "f", "RA"), values * factor, rtol=1e-15
    )


@pytest.mark.parametrize("unit", ["TeV", "GeV", "MeV", "keV", "eV", "PeV", "J", "erg"])
def test_energy_units_without_astropy(unit):
    values = np.array([0.5, 1.0])
    factor = u.Unit(unit).to(u.TeV)
    np.testing.assert_allclose(
        datastore._to_unit(values, unit, "TeV", "f", "E"), values * factor, rtol=1e-15
    )


def test_binary_garbage_in_a_header_is_refused_quickly(dr1_dir, tmp_path):
    """astropy can spend minutes parsing such a header; it is refused before."""
    import gzip

    from xbkg.errors import DataStoreError
    from xbkg.io.gadf import read_bkg

    path = sorted((dr1_dir / "data").glob("*.fits.gz"))[0]
    raw = bytearray(gzip.decompress(path.read_bytes()))
    with fits.open(io.BytesIO(bytes(raw))) as hdul:
        start = hdul.fileinfo(hdul.index_of("BKG"))["hdrLoc"]
    raw[start + 11 : start + 2000 : 7] = bytes([0xC6]) * len(raw[start + 11 : start + 2000 : 7])
    damaged = tmp_path / "damaged.fits"
    damaged.write_bytes(bytes(raw))
    with pytest.raises(DataStoreError, match="not printable ASCII"):
        read_bkg(damaged, "BKG")

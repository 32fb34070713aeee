"""The FITS reader: the EVENTS tables it reads are astropy's, and damage is named.

:func:`xbkg.io.fitsread.read_table` walks the HDUs of a file it decompresses
itself; astropy parses the headers and column definitions. Every event file
the tests use (all of H.E.S.S. DR1, the Gammapy 0.6 store, simulated stores
of both layouts) reads to the values and header keywords of
``Table.read(path, hdu="EVENTS")``.
"""

from __future__ import annotations

import gzip
import io
import zlib
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from xbkg.errors import DataStoreError
from xbkg.io.datastore import event_locations, open_datastore, read_events
from xbkg.io.fitsread import DamagedFile, NoSuchHDU, read_fits, read_table
from xbkg.simulate import simulate_datastore


def check_against_astropy(path: Path, hdu: str) -> None:
    reference = Table.read(path, hdu=hdu)
    numeric = tuple(
        c for c in reference.colnames if reference[c].ndim == 1 and reference[c].dtype.kind in "iuf"
    )
    for verify in (True, False):
        cards, values, units = read_table(path, hdu, numeric, verify=verify)
        assert list(values) == list(numeric)
        for name in numeric:
            expected = np.ma.filled(np.ma.asarray(reference[name]).astype(np.float64), np.nan)
            np.testing.assert_array_equal(values[name], expected, err_msg=f"{path} {name}")
            unit = reference[name].unit
            assert (units[name] or None) == (None if unit is None else unit.to_string())
    for key, value in reference.meta.items():
        if key not in ("comments", "history"):
            assert cards.header[key] == cards.get(key) == value, (path, key)
    with fits.open(path) as hdul:
        assert cards.header == hdul[hdu].header


def test_dr1_event_files(dr1_dir):
    files = sorted((dr1_dir / "data").glob("*.fits.gz"))
    assert len(files) == 105
    for path in files:
        check_against_astropy(path, "EVENTS")


def test_old_layout_with_bit_and_scaled_columns(crab4_dir):
    # 26 columns, a 100X bit column and TZERO-scaled integers before RA/DEC/ENERGY;
    # the events are found by their HDUNAME, as the index names them.
    store = open_datastore(crab4_dir)
    for path, hdu in event_locations(store).values():
        check_against_astropy(path, hdu)


@pytest.mark.parametrize("layout", ["dr1", "per-hdu"])
def test_simulated_event_files(tmp_path, layout):
    store = open_datastore(simulate_datastore(tmp_path / "store", n_runs=3, seed=2, layout=layout))
    for path, hdu in event_locations(store).values():
        check_against_astropy(path, hdu)


def test_simulated_store_of_the_tests(sim_store):
    store, _ = sim_store
    for path, hdu in event_locations(store).values():
        check_against_astropy(path, hdu)


def write_events(path: Path, columns, header=None, *, packed: bool | None = None) -> Path:
    """An EVENTS table after an image primary and an image extension."""
    hdu = fits.BinTableHDU.from_columns(columns, name="EVENTS")
    for key, value in (header or {}).items():
        hdu.header[key] = value
    out = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(np.zeros((3, 3))), fits.ImageHDU(np.ones(7)), hdu]).writeto(out)
    data = out.getvalue()
    path.write_bytes(gzip.compress(data, mtime=0) if packed or path.suffix == ".gz" else data)
    return path


def test_scaling_units_and_skipped_hdus(tmp_path):
    n = 1000
    rng = np.random.default_rng(0)
    ra, dec = rng.uniform(0, 360, n), rng.uniform(-90, 90, n)
    energy_gev = rng.uniform(100, 1e5, n).astype(np.float32)
    raw = rng.integers(-30000, 30000, n).astype(np.int16)
    cols = [
        fits.Column("FLAGS", "3X", array=np.zeros((n, 3), bool)),
        fits.Column("RA", "D", array=ra, unit="deg"),
        fits.Column("DEC", "D", array=dec, unit="deg"),
        fits.Column("ENERGY", "E", array=energy_gev, unit="GeV"),
        fits.Column("SCALED", "I", array=raw),
    ]
    header = {"OBS_ID": 7, "TSCAL5": 0.5, "TZERO5": 10.0}
    path = write_events(tmp_path / "ev.fits.gz", cols, header)
    cards, values, _ = read_table(path, "events", ("RA", "DEC", "ENERGY", "SCALED"))
    assert cards.header["OBS_ID"] == cards.get("OBS_ID") == 7
    np.testing.assert_array_equal(values["SCALED"], raw * 0.5 + 10.0)
    check_against_astropy(path, "EVENTS")
    events = read_events(path)
    np.testing.assert_allclose(events.energy, energy_gev.astype(float) / 1000, rtol=1e-15)
    np.testing.assert_array_equal(events.ra, ra)


def test_gzip_members_and_zero_padding(tmp_path):
    """Read as :mod:`gzip` reads them: members one after another, zeros after the last."""
    cols = [fits.Column(c, "D", array=np.arange(5000.0)) for c in ("RA", "DEC", "ENERGY")]
    raw = gzip.decompress(write_events(tmp_path / "one.fits.gz", cols).read_bytes())
    cut = len(raw) // 3
    parts = gzip.compress(raw[:cut], mtime=0) + gzip.compress(raw[cut:], mtime=0)
    for name, data in [("members", parts), ("padded", parts + bytes(1000))]:
        path = tmp_path / f"{name}.fits.gz"
        path.write_bytes(data)
        assert gzip.decompress(data) == raw
        np.testing.assert_array_equal(read_events(path).energy, np.arange(5000.0))
    path = tmp_path / "trailing.fits.gz"
    path.write_bytes(parts + b"garbage")
    read_events(path, verify=False)  # the EVENTS table is before the garbage
    with pytest.raises(DataStoreError, match="gzip check failed"):
        read_events(path)


def one_run(dr1_dir) -> bytes:
    return gzip.decompress((dr1_dir / "data" / "hess_dl3_dr1_obs_id_023523.fits.gz").read_bytes())


def events_header_start(raw: bytes) -> int:
    with fits.open(io.BytesIO(raw)) as hdul:
        return hdul.fileinfo(hdul.index_of("EVENTS"))["hdrLoc"]


def set_card(raw: bytes, start: int, key: str, value: str | None) -> bytes:
    """``raw`` with the card ``key`` of the header at ``start`` set to a value text, or blanked."""
    out = bytearray(raw)
    pos = next(p for p in range(start, len(raw), 80) if raw[p : p + 8] == key.encode().ljust(8))
    text = b" " * 80 if value is None else (key.ljust(8) + "= " + value).encode().ljust(80)
    out[pos : pos + 80] = text
    return bytes(out)


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("NAXIS2", str(10**10), "truncated"),
        ("NAXIS2", "-1", "NAXIS2 = -1"),
        ("NAXIS1", "'x'", "NAXIS1 = 'x'"),
        ("BITPIX", None, "not a binary table"),
        ("TFIELDS", "'x", "garbled"),
        ("EXTNAME", ":", "garbled"),
        ("TFORM3", "'1Q'", "column definitions are garbled"),
        ("TFORM2", None, "TFORM2 = None"),
        ("TTYPE1", "0", "TTYPE1 = 0"),
        ("TTYPE1", None, "column definitions are garbled"),
        ("NAXIS1", "29", "NAXIS1 = 29"),
    ],
)
def test_garbled_event_header(dr1_dir, tmp_path, key, value, problem):
    raw = one_run(dr1_dir)
    path = tmp_path / "run.fits"
    path.write_bytes(set_card(raw, events_header_start(raw), key, value))
    with pytest.raises(DamagedFile, match=problem):
        read_table(path, "EVENTS", ("RA", "DEC", "ENERGY"))
    with pytest.raises(DataStoreError, match=r"run\.fits: .*copy it again, or leave the run out"):
        read_events(path)


def test_damaged_files(dr1_dir, tmp_path):
    raw = one_run(dr1_dir)
    start = events_header_start(raw)
    cases = {
        "empty.fits": b"",
        "text.fits": b"this is not a FITS file" * 200,
        "cut-header.fits": raw[: start + 100],
        "cut-events.fits": raw[: start + 2880 * 3 + 100],
        "cut-gzip.fits.gz": gzip.compress(raw, mtime=0)[:5000],
        "garbage-gzip.fits.gz": b"\x1f\x8b\x08\x00" + bytes(range(256)) * 10,
        "binary-header.fits": raw[:start] + bytes([0xC6]) * 80 + raw[start + 80 :],
    }
    problems = {
        "empty.fits": "the file is empty",
        "text.fits": "not a FITS file",
        "cut-header.fits": "ends inside the header of HDU 1",
        "cut-events.fits": "ends inside the EVENTS table",
        "cut-gzip.fits.gz": "the data end early",
        "garbage-gzip.fits.gz": "gzip check failed",
        "binary-header.fits": "not printable ASCII",
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(DamagedFile, match=problems[name]):
            read_table(path, "EVENTS", ("RA",))
        with pytest.raises(DataStoreError, match=name.replace(".", r"\.")):
            read_events(path)
        with pytest.raises(DamagedFile, match=problems[name].replace("EVENTS table", "data of")):
            read_fits(path)


def test_missing_hdu_and_columns(tmp_path):
    cols = [
        fits.Column("RA", "D", array=np.ones(3)),
        fits.Column("DEC", "2D", array=np.ones((3, 2))),
    ]
    path = write_events(tmp_path / "ev.fits", cols)
    with pytest.raises(NoSuchHDU) as error:
        read_table(path, "OTHER", ("RA",))
    assert error.value.names == ["PRIMARY", "", "EVENTS"]
    with pytest.raises(DataStoreError, match=r"no HDU named 'OTHER'.*fix HDU_NAME"):
        read_events(path, "OTHER")
    assert list(read_table(path, "EVENTS", ("RA", "ENERGY"))[1]) == ["RA"]
    with pytest.raises(DamagedFile, match="DEC holds 2D, not a number per row"):
        read_table(path, "EVENTS", ("DEC",))
    with pytest.raises(DataStoreError, match="not a number per row"):
        read_events(path)


def test_read_fits_is_what_astropy_reads(dr1_dir, gadf_examples_dir):
    for path in [
        dr1_dir / "hdu-index.fits.gz",
        dr1_dir / "data" / "hess_dl3_dr1_obs_id_023523.fits.gz",
        gadf_examples_dir / "bkg_2d_full_example.fits",
    ]:
        with fits.open(path) as reference:
            hdul = read_fits(path)
            assert len(hdul) == len(reference)
            for ours, theirs in zip(hdul, reference, strict=True):
                assert ours.header == theirs.header
                if theirs.data is not None:
                    assert ours.data.tobytes() == theirs.data.tobytes()


def test_checksum_checked_in_the_same_pass(tmp_path):
    """Damage after the EVENTS table is found by the gzip check, which only ``verify`` reaches."""
    cols = [fits.Column(c, "D", array=np.arange(50.0)) for c in ("RA", "DEC", "ENERGY")]
    after = fits.ImageHDU(np.random.default_rng(1).normal(size=200_000))  # does not compress
    out = io.BytesIO()
    fits.HDUList(
        [fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols, name="EVENTS"), after]
    ).writeto(out)
    packed = bytearray(gzip.compress(out.getvalue(), mtime=0))
    packed[-8] ^= 1  # the CRC-32 in the trailer
    bad = tmp_path / "bad-crc.fits.gz"
    bad.write_bytes(bytes(packed))
    with pytest.raises(zlib.error):
        zlib.decompress(bytes(packed), 31)
    _, values, _ = read_table(bad, "EVENTS", ("RA",), verify=False)
    np.testing.assert_array_equal(values["RA"], np.arange(50.0))
    with pytest.raises(DamagedFile, match=r"gzip check failed.*incorrect data check"):
        read_table(bad, "EVENTS", ("RA",))

"""The fast EVENTS reader agrees with astropy and steps aside when unsure."""

import numpy as np
import pytest
from astropy.io import fits

from xbkg.io.datastore import read_events
from xbkg.io.eventfile import read_table_columns


def check_against_astropy(path, hdu="EVENTS"):
    fast = read_table_columns(path, hdu, ["RA", "DEC", "ENERGY"])
    assert fast is not None
    columns, cards, _ = fast
    with fits.open(path) as hdul:
        data = hdul[hdu].data
        for name in ("RA", "DEC", "ENERGY"):
            np.testing.assert_array_equal(columns[name], data[name].astype(np.float64))
        assert cards["OBS_ID"] == hdul[hdu].header["OBS_ID"]


def test_dr1_files(dr1_dir):
    for path in sorted((dr1_dir / "data").glob("*.fits.gz"))[:20]:
        check_against_astropy(path)


def test_old_layout_with_bit_and_scaled_columns(crab4_dir):
    # 26 columns incl. a 100X bit column and TZERO-scaled integers before RA/DEC/ENERGY
    for path in sorted(crab4_dir.rglob("hess_events_*.fits.gz")):
        check_against_astropy(path)
        assert read_table_columns(path, "events", ["EVENT_ID"]) is not None


def write_events(path, columns, header=None):
    """An EVENTS table after an image primary and an image extension (gzip if ``.gz``)."""
    hdu = fits.BinTableHDU.from_columns(columns, name="EVENTS")
    for key, value in (header or {}).items():
        hdu.header[key] = value
    hdul = fits.HDUList([fits.PrimaryHDU(np.zeros((3, 3))), fits.ImageHDU(np.ones(7)), hdu])
    hdul.writeto(path)
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
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    columns, cards, _ = read_table_columns(path, "events", ["RA", "DEC", "ENERGY", "SCALED"])
    assert cards["OBS_ID"] == 7
    with fits.open(path) as hdul:
        np.testing.assert_array_equal(columns["SCALED"], hdul["EVENTS"].data["SCALED"])
    np.testing.assert_array_equal(columns["SCALED"], raw * 0.5 + 10.0)
    events = read_events(path)
    np.testing.assert_allclose(events.energy, energy_gev.astype(float) / 1000, rtol=1e-15)
    np.testing.assert_array_equal(events.ra, ra)


@pytest.mark.parametrize(
    "case",
    ["vector column", "missing column", "missing hdu", "truncated"],
)
def test_falls_back_when_unsure(tmp_path, case):
    n = 10
    cols = [
        fits.Column(
            "RA",
            "2D" if case == "vector column" else "D",
            array=np.ones((n, 2)) if case == "vector column" else np.ones(n),
        ),
        fits.Column("DEC", "D", array=np.ones(n)),
    ]
    if case != "missing column":
        cols.append(fits.Column("ENERGY", "E", array=np.ones(n)))
    path = write_events(tmp_path / "ev.fits", cols)
    if case == "truncated":
        path.write_bytes(path.read_bytes()[:-3000])
    hdu = "OTHER" if case == "missing hdu" else "EVENTS"
    assert read_table_columns(path, hdu, ["RA", "DEC", "ENERGY"]) is None

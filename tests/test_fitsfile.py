"""The one-row tables of the model files: the bytes astropy's writer gives."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from xbkg.io.fitsfile import fits_bytes, one_row_table_bytes, write_fits_bytes

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
finite32 = st.floats(allow_nan=False, allow_infinity=False, width=32)
cell = st.one_of(
    st.integers(1, 40).flatmap(lambda n: arrays(np.float64, n, elements=finite)),
    st.integers(1, 40).flatmap(lambda n: arrays(np.float32, n, elements=finite32)),
)
keywords = st.dictionaries(
    st.sampled_from(["OBS_ID", "BKGTIME", "DATA_ELO", "CREATOR", "HIERARCH ZEN_PNT_MIN"]),
    st.one_of(st.integers(-(10**9), 10**9), finite, st.text("ABCxyz 09.-", max_size=30)),
    max_size=5,
)


def astropy_table(cells: list[np.ndarray], cards: dict[str, object]) -> fits.BinTableHDU:
    columns = [
        fits.Column(
            name=f"C{i}",
            format=f"{c.size}{'E' if c.dtype == np.float32 else 'D'}",
            unit="TeV",
            array=c[np.newaxis],
        )
        for i, c in enumerate(cells)
    ]
    table = fits.BinTableHDU.from_columns(columns, name="BACKGROUND")
    table.header.extend(list(cards.items()))
    return table


@settings(max_examples=60, deadline=None)
@given(cells=st.lists(cell, min_size=1, max_size=5), cards=keywords)
def test_one_row_table_bytes_are_astropys(cells: list[np.ndarray], cards: dict) -> None:
    table = astropy_table(cells, cards)
    expected = fits_bytes(fits.HDUList([fits.PrimaryHDU(), table]), compress=False)
    assert one_row_table_bytes(table.header, cells) == expected
    with fits.open(io.BytesIO(expected)) as hdul:
        for i, c in enumerate(cells):
            np.testing.assert_array_equal(hdul[1].data[f"C{i}"][0], c)


def test_one_row_table_bytes_refuses_cells_the_header_does_not_describe() -> None:
    cells = [np.arange(3.0), np.arange(4.0)]
    header = astropy_table(cells, {}).header
    with pytest.raises(ValueError, match="columns"):
        one_row_table_bytes(header, [np.arange(3.0), np.arange(5.0)])
    with pytest.raises(ValueError, match="columns"):
        one_row_table_bytes(header, cells[:1])
    with pytest.raises(ValueError, match="columns"):  # float32 cells where the header says D
        one_row_table_bytes(header, [c.astype(np.float32) for c in cells])
    with pytest.raises(ValueError, match="float64 or float32"):
        one_row_table_bytes(header, [np.arange(3), np.arange(4)])


def test_write_fits_bytes_compresses_reproducibly(tmp_path) -> None:
    cells = [np.linspace(0, 1, 7)]
    raw = one_row_table_bytes(astropy_table(cells, {"OBS_ID": 3}).header, cells)
    first = write_fits_bytes(raw, tmp_path / "a.fits.gz").read_bytes()
    second = write_fits_bytes(raw, tmp_path / "b.fits.gz").read_bytes()
    assert first == second
    assert first[:2] == b"\x1f\x8b"
    assert write_fits_bytes(raw, tmp_path / "c.fits").read_bytes() == raw
    with pytest.raises(FileExistsError, match="overwrite"):
        write_fits_bytes(raw, tmp_path / "c.fits")
    with fits.open(tmp_path / "a.fits.gz") as hdul:
        assert hdul[1].header["OBS_ID"] == 3

"""A minimal, fast reader for the columns of one FITS binary table.

Building a background reads a few columns (RA, DEC, ENERGY) of the EVENTS
table of every run, and nothing else. A general FITS library decompresses and
parses every HDU it meets and builds table objects for all columns; here the
file is decompressed as a stream only up to the end of the wanted table, the
header cards are parsed as text, and the wanted columns are viewed straight
from the row bytes with a numpy structured dtype.

Anything this reader does not understand (a column with a repeat count, an
unknown format, a malformed header) makes it return None, and the caller falls
back to :mod:`astropy.io.fits`, which reports problems properly.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import IO

import numpy as np
from numpy.typing import NDArray

__all__ = ["DamagedFile", "read_table_columns"]

_BLOCK = 2880
_CARD = 80
#: Largest read at once: a header cannot make the reader allocate more than this
#: ahead of the bytes actually being there.
_CHUNK = 1 << 22
#: Bytes per element of each FITS binary table format code.
_SIZES = {"L": 1, "B": 1, "I": 2, "J": 4, "K": 8, "A": 1, "E": 4, "D": 8, "C": 8, "M": 16}
_DESCRIPTORS = {"P": 8, "Q": 16}
_NUMPY = {"B": "u1", "I": ">i2", "J": ">i4", "K": ">i8", "E": ">f4", "D": ">f8"}


class _Unsupported(Exception):
    """The file needs the general reader."""


def _value(text: str) -> str | int | float | bool:
    text = text.strip()
    if text.startswith("'"):
        # Quoted string: '' is an escaped quote; a '/' after the closing quote starts the comment.
        out, i = [], 1
        while i < len(text):
            if text[i] == "'":
                if i + 1 < len(text) and text[i + 1] == "'":
                    out.append("'")
                    i += 2
                    continue
                break
            out.append(text[i])
            i += 1
        return "".join(out).rstrip()
    text = text.split("/", 1)[0].strip()
    if text in ("T", "F"):
        return text == "T"
    try:
        return int(text)
    except ValueError:
        try:
            return float(text.replace("D", "E"))
        except ValueError as exc:
            raise _Unsupported(f"cannot parse header value {text!r}") from exc


class Cards(Mapping[str, "str | int | float | bool"]):
    """Header keyword values, parsed when first looked up.

    An EVENTS header has about a hundred cards and the reader needs a dozen;
    parsing only those keeps header reading off the profile. A value that
    cannot be parsed is returned as its raw text.
    """

    def __init__(self) -> None:
        self._raw: dict[str, str] = {}
        self._parsed: dict[str, str | int | float | bool] = {}

    def add(self, key: str, raw: str) -> None:
        """Record a card's value text (the first card of a keyword wins)."""
        self._raw.setdefault(key, raw)

    def __getitem__(self, key: str) -> str | int | float | bool:
        if key not in self._parsed:
            raw = self._raw[key]
            try:
                self._parsed[key] = _value(raw)
            except _Unsupported:
                self._parsed[key] = raw.strip()
        return self._parsed[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)


def _read_header(stream: IO[bytes]) -> tuple[Cards, bytes] | None:
    """Read one header; None at the end of the file."""
    blocks: list[bytes] = []
    cards = Cards()
    while True:
        block = stream.read(_BLOCK)
        if not block:
            if blocks:
                raise _Unsupported("file ends inside a header")
            return None
        if len(block) != _BLOCK:
            raise _Unsupported("truncated header block")
        blocks.append(block)
        text = block.decode("ascii", errors="replace")
        for i in range(0, _BLOCK, _CARD):
            card = text[i : i + _CARD]
            key = card[:8].strip()
            if key == "END":
                return cards, b"".join(blocks)
            if card[8:10] == "= ":
                cards.add(key, card[10:])


def _int(cards: Cards, key: str, default: int | None = None, *, minimum: int = 0) -> int:
    """An integer keyword that must be at least ``minimum`` (a damaged header is not guessed)."""
    if key not in cards and default is not None:
        return default
    value = cards[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _Unsupported(f"keyword {key} = {value!r} is not an integer >= {minimum}")
    return value


def _data_size(cards: Cards) -> int:
    naxis = _int(cards, "NAXIS", 0)
    if naxis == 0:
        return 0
    n = 1
    for i in range(1, naxis + 1):
        n *= _int(cards, f"NAXIS{i}")
    bits = abs(int(cards["BITPIX"]))
    return bits // 8 * _int(cards, "GCOUNT", 1) * (_int(cards, "PCOUNT", 0) + n)


def _skip(stream: IO[bytes], nbytes: int) -> None:
    padded = -(-nbytes // _BLOCK) * _BLOCK
    while padded > 0:
        chunk = stream.read(min(padded, _CHUNK))
        if not chunk:
            raise _Unsupported("file ends inside a data unit")
        padded -= len(chunk)


def _read_exactly(stream: IO[bytes], nbytes: int) -> bytes:
    """``nbytes`` bytes of the stream, read in chunks so that a damaged header
    claiming a huge table cannot make the reader allocate more than the file holds."""
    if nbytes <= _CHUNK:
        data = stream.read(nbytes)
    else:
        chunks, left = [], nbytes
        while left > 0:
            chunk = stream.read(min(left, _CHUNK))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
    if len(data) != nbytes:
        raise _Unsupported("file ends inside the table")
    return data


def _column_layout(
    cards: Cards,
) -> dict[str, tuple[int, int, str, int]]:
    """Column name (upper case) -> (column number, byte offset in the row, format code, repeat)."""
    layout: dict[str, tuple[int, int, str, int]] = {}
    offset = 0
    for i in range(1, _int(cards, "TFIELDS") + 1):
        form = str(cards[f"TFORM{i}"]).strip().upper()
        digits = ""
        while form and form[0].isdigit():
            digits, form = digits + form[0], form[1:]
        repeat = int(digits) if digits else 1
        code = form[:1]
        if code == "X":
            size = (repeat + 7) // 8
        elif code in _DESCRIPTORS:
            size = _DESCRIPTORS[code] * repeat
        elif code in _SIZES:
            size = _SIZES[code] * repeat
        else:
            raise _Unsupported(f"unknown column format {cards[f'TFORM{i}']!r}")
        name = str(cards.get(f"TTYPE{i}", f"COL{i}")).strip().upper()
        layout.setdefault(name, (i, offset, code, repeat))
        offset += size
    if offset != _int(cards, "NAXIS1"):
        raise _Unsupported("column formats do not add up to the row length")
    return layout


def _check_gzip(stream: gzip.GzipFile) -> None:
    """Decompress to the end of the gzip stream, where gzip checks the CRC and length."""
    try:
        while stream.read(_CHUNK):
            pass
    except (OSError, EOFError, zlib.error) as exc:
        raise DamagedFile(str(exc) or type(exc).__name__) from exc


def _open(path: str | os.PathLike[str]) -> IO[bytes]:
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


class DamagedFile(Exception):
    """The file's gzip checksum or length does not match its content."""


def read_table_columns(
    path: str | os.PathLike[str], extname: str, columns: Sequence[str], *, verify: bool = False
) -> tuple[dict[str, NDArray[np.float64]], Cards, bytes] | None:
    """Read some numeric columns of a binary table as float64 arrays.

    Parameters
    ----------
    path
        FITS file, optionally gzip-compressed.
    extname
        Name of the table HDU (EXTNAME, or HDUNAME for old files), case-insensitive.
    columns
        Column names (case-insensitive) of scalar numeric columns.
    verify
        For a gzip-compressed file, also decompress the rest of the file and
        check the gzip CRC-32 and length, which cover the whole file: damage
        inside the table that still decompresses is found only this way.

    Raises
    ------
    DamagedFile
        With ``verify``, if the checksum or length does not match.

    Returns
    -------
    tuple or None
        ``(arrays, cards, raw header bytes)`` with TSCAL/TZERO applied and the
        column units in ``cards`` as ``TUNITn``; or None if the file needs the
        general reader (unknown layout, missing HDU or column, damaged file).
    """
    wanted = extname.strip().upper()
    try:
        with _open(path) as stream:
            while True:
                found = _read_header(stream)
                if found is None:
                    return None
                cards, raw = found
                name = str(cards.get("EXTNAME", cards.get("HDUNAME", ""))).strip().upper()
                size = _data_size(cards)
                if name != wanted or cards.get("XTENSION") != "BINTABLE":
                    _skip(stream, size)
                    continue
                layout = _column_layout(cards)
                nrows, rowlen = _int(cards, "NAXIS2"), _int(cards, "NAXIS1")
                data = _read_exactly(stream, nrows * rowlen)
                out = {}
                for column in columns:
                    key = column.upper()
                    if key not in layout:
                        return None
                    index, offset, code, repeat = layout[key]
                    if repeat != 1 or code not in _NUMPY:
                        return None
                    view = np.ndarray(
                        (nrows,),
                        dtype=np.dtype(_NUMPY[code]),
                        buffer=data,
                        offset=offset,
                        strides=(rowlen,),
                    )
                    # Damaged bytes may hold signalling NaNs; they stay NaN, without a warning.
                    with np.errstate(invalid="ignore"):
                        values = view.astype(np.float64)
                    scale = float(cards.get(f"TSCAL{index}", 1.0))
                    zero = float(cards.get(f"TZERO{index}", 0.0))
                    if scale != 1.0 or zero != 0.0:
                        values = values * scale + zero
                    out[key] = values
                if verify and isinstance(stream, gzip.GzipFile):
                    _check_gzip(stream)
                return out, cards, raw
    except (
        _Unsupported,
        # What a damaged file can raise: gzip (OSError, EOFError, zlib.error), a
        # garbled header value (ValueError, KeyError, TypeError, OverflowError).
        OSError,
        EOFError,
        zlib.error,
        ValueError,
        KeyError,
        TypeError,
        OverflowError,
    ):
        return None

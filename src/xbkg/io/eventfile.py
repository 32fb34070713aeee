"""A minimal, fast reader for the columns of one FITS binary table.

Building a background reads a few columns (RA, DEC, ENERGY) of the EVENTS
table of every run, the two index tables and a catalogue, and nothing else. A
general FITS library decompresses and parses every HDU it meets and builds
table objects for all columns (and importing one costs half a second); here the
file is decompressed as a stream only up to the end of the wanted table, the
header cards are parsed as text, and the wanted columns are viewed straight
from the row bytes with numpy.

Anything this reader does not understand (a vector or variable-length column,
an unknown format, a malformed header) makes it return None, and the caller
falls back to :mod:`astropy.io.fits`, which reports problems properly.
"""

from __future__ import annotations

import gzip
import io
import itertools
import os
import re
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "Cards",
    "DamagedFile",
    "TableColumns",
    "header_items",
    "read_table",
    "read_table_columns",
]

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


def _int(
    cards: Cards,
    key: str,
    default: int | None = None,
    *,
    minimum: int = 0,
    maximum: int | None = None,
) -> int:
    """An integer keyword within bounds (a damaged header is not guessed)."""
    if key not in cards and default is not None:
        return default
    value = cards[key]
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        raise _Unsupported(f"keyword {key} = {value!r} is not an integer in [{minimum}, {maximum}]")
    return value


def _tfields(cards: Cards) -> int:
    """Number of columns; the FITS standard allows at most 999."""
    return _int(cards, "TFIELDS", maximum=999)


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


def _skip_exactly(stream: IO[bytes], nbytes: int) -> None:
    while nbytes > 0:
        chunk = stream.read(min(nbytes, _CHUNK))
        if not chunk:
            raise _Unsupported("file ends inside a data unit")
        nbytes -= len(chunk)


def garbled_header(path: str | os.PathLike[str]) -> int | None:
    """Number of the first HDU whose header holds bytes that are not printable ASCII.

    FITS headers are printable ASCII only. astropy can spend minutes on a
    header overwritten with binary garbage, so readers check first. None if all
    headers are text, or if the layout cannot be followed (then astropy judges).
    """
    try:
        with _open(path) as stream:
            for number in itertools.count():
                start = stream.read(_BLOCK)
                if not start.strip(b"\0"):
                    return None  # end of file, or zero padding after the last HDU
                blocks = [start]
                while b"END     " not in blocks[-1] and len(blocks[-1]) == _BLOCK:
                    blocks.append(stream.read(_BLOCK))
                raw = b"".join(blocks)
                if raw.translate(None, _PRINTABLE_BYTES):
                    return number
                found = _read_header(io.BytesIO(raw))
                if found is None:
                    return None
                _skip(stream, _data_size(found[0]))
    except _PARSE_ERRORS:
        return None
    return None


_PRINTABLE_BYTES = bytes(range(32, 127))


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
    for i in range(1, _tfields(cards) + 1):
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


#: What a damaged file can raise while it is parsed here: gzip (OSError,
#: EOFError, zlib.error), a garbled header value (ValueError, KeyError,
#: TypeError, OverflowError). Any of these means "use the general reader".
_PARSE_ERRORS = (
    _Unsupported,
    OSError,
    EOFError,
    zlib.error,
    ValueError,
    KeyError,
    TypeError,
    OverflowError,
)

#: Ranks a binary table by (extension name, column names): None to pass it by,
#: 0 to take it at once, a positive number for a candidate (the lowest wins).
Rank = Callable[[str, list[str]], "int | None"]


@dataclass(frozen=True)
class _Found:
    name: str
    cards: Cards
    raw: bytes
    data: bytes
    layout: dict[str, tuple[int, int, str, int]]
    names: list[str]


def _table_names(cards: Cards) -> list[str]:
    return [str(cards.get(f"TTYPE{i}", f"COL{i}")).strip() for i in range(1, _tfields(cards) + 1)]


def _find_table(stream: IO[bytes], rank: Rank) -> _Found | None:
    """Scan the HDUs; read the data of the best-ranked binary table."""
    best: tuple[int, _Found] | None = None
    while True:
        found = _read_header(stream)
        if found is None:
            return best[1] if best else None
        cards, raw = found
        size = _data_size(cards)
        score = None
        if cards.get("XTENSION") == "BINTABLE":
            name = str(cards.get("EXTNAME", cards.get("HDUNAME", ""))).strip()
            names = _table_names(cards)
            score = rank(name, names)
        if score is None or (best is not None and score >= best[0]):
            _skip(stream, size)
            continue
        layout = _column_layout(cards)
        nrows, rowlen = _int(cards, "NAXIS2"), _int(cards, "NAXIS1")
        data = _read_exactly(stream, nrows * rowlen)
        best = (score, _Found(name, cards, raw, data, layout, names))
        if score <= 0:
            return best[1]
        # Scanning on for a better table: skip the heap (if any) and the padding.
        _skip_exactly(stream, -(-size // _BLOCK) * _BLOCK - nrows * rowlen)


def _view(found: _Found, key: str, dtype: str) -> NDArray[Any]:
    """One cell per row of a column, viewed in the row bytes (no copy)."""
    offset = found.layout[key][1]
    rowlen = _int(found.cards, "NAXIS1")
    nrows = len(found.data) // rowlen if rowlen else 0
    return np.ndarray(
        (nrows,), dtype=np.dtype(dtype), buffer=found.data, offset=offset, strides=(rowlen,)
    )


def _numeric(found: _Found, key: str) -> NDArray[Any] | None:
    """A scalar numeric column as float64 (TSCAL/TZERO applied), or None if not one."""
    index, _, code, repeat = found.layout[key]
    if repeat != 1 or code not in _NUMPY:
        return None
    view = _view(found, key, _NUMPY[code])
    # Damaged bytes may hold signalling NaNs; they stay NaN, without a warning.
    with np.errstate(invalid="ignore"):
        values = view.astype(np.float64)
    scale = float(found.cards.get(f"TSCAL{index}", 1.0))
    zero = float(found.cards.get(f"TZERO{index}", 0.0))
    if scale != 1.0 or zero != 0.0:
        values = values * scale + zero
    return values


def _column(found: _Found, key: str) -> NDArray[Any] | None:
    """A scalar column in its natural type, or None if this reader cannot decode it.

    Floats keep their precision; integers become int64 unless TNULL marks
    missing values, which become NaN in float64 (as when astropy's masked
    integers are filled); scaled columns (TSCAL/TZERO) are float64;
    logical columns are bool; strings are str with blanks and NUL padding stripped.
    """
    index, _, code, repeat = found.layout[key]

    def view(dtype: str) -> NDArray[Any]:
        return _view(found, key, dtype)

    if code == "A":
        text = np.char.decode(view(f"S{repeat}"), "ascii", errors="replace")
        return np.char.strip(np.char.replace(text, "\x00", "")).astype(str)
    if repeat != 1:
        return None
    if code == "L":
        return view("u1") == ord("T")
    if code not in _NUMPY:
        return None
    scale = found.cards.get(f"TSCAL{index}", 1)
    zero = found.cards.get(f"TZERO{index}", 0)
    if code in "ED" and scale == 1 and zero == 0:
        # Floats keep their precision (a writer copying the table keeps its types).
        return view(_NUMPY[code]).astype(_NUMPY[code][1:])
    if code in "ED" or not (isinstance(scale, int) and scale == 1 and isinstance(zero, int)):
        return _numeric(found, key)
    values = view(_NUMPY[code]).astype(np.int64) + zero
    null = found.cards.get(f"TNULL{index}")
    if isinstance(null, int) and not isinstance(null, bool):
        missing = view(_NUMPY[code]) == null
        if missing.any():
            return np.where(missing, np.nan, values.astype(np.float64))
    return values


#: Keywords that describe the table layout; a writer sets them itself.
_STRUCTURAL = re.compile(
    r"(XTENSION|BITPIX|NAXIS\d*|PCOUNT|GCOUNT|TFIELDS|THEAP|EXTNAME|CHECKSUM|DATASUM|END"
    r"|T(TYPE|FORM|UNIT|DIM|NULL|SCAL|ZERO|DISP|LMIN|LMAX|DMIN|DMAX)\d+)"
)


def header_items(raw: bytes) -> list[tuple[str, str | int | float | bool]]:
    """The keywords of a table header that do not describe its layout, in order.

    COMMENT and HISTORY cards are included with their text.

    Raises
    ------
    _Unsupported
        If a value does not parse (it may be damage: the caller lets astropy judge).
    """
    items: list[tuple[str, str | int | float | bool]] = []
    text = raw.decode("ascii", errors="replace")
    for i in range(0, len(text), _CARD):
        card = text[i : i + _CARD]
        key = card[:8].strip()
        if key in ("COMMENT", "HISTORY"):
            items.append((key, card[8:].rstrip()))
        elif card[8:10] == "= ":
            value = _value(card[10:])
            if not _STRUCTURAL.fullmatch(key):
                items.append((key, value))
    return items


@dataclass(frozen=True)
class TableColumns:
    """Columns of a binary table read by :func:`read_table`.

    Attributes
    ----------
    name
        EXTNAME (or HDUNAME) of the table.
    columns
        Column name (as in the file) -> values, in file order.
    units
        Column name -> TUNITn, for the columns that have a non-blank unit.
    cards
        The header keyword values.
    header
        The keywords that do not describe the layout (:func:`header_items`).
    """

    name: str
    columns: dict[str, NDArray[Any]]
    units: dict[str, str]
    cards: Cards
    header: list[tuple[str, str | int | float | bool]]


def _first_table(name: str, names: list[str]) -> int:
    return 0


def read_table(
    path: str | os.PathLike[str],
    rank: Rank | None = None,
    columns: Sequence[str] | Callable[[list[str]], Sequence[str]] | None = None,
) -> TableColumns | None:
    """Read the scalar columns of a binary table.

    Parameters
    ----------
    path
        FITS file, optionally gzip-compressed.
    rank
        Chooses the table from its name and column names (see :data:`Rank`);
        default the first binary table.
    columns
        Names (case-insensitive) of the columns to read, or a function that
        chooses them from the table's column names; default all.

    Returns
    -------
    TableColumns or None
        None if the file has no such table, a wanted column is missing or not
        a scalar column this reader decodes (vector, variable-length, bit or
        complex), or the file is damaged: the caller then uses astropy.
    """
    try:
        with _open(path) as stream:
            found = _find_table(stream, rank or _first_table)
            if found is None:
                return None
            by_key = {n.upper(): n for n in reversed(found.names)}
            header = header_items(found.raw)
            if callable(columns):
                columns = columns(list(found.names))
            wanted = found.names if columns is None else list(columns)
            out: dict[str, NDArray[Any]] = {}
            units: dict[str, str] = {}
            for column in wanted:
                name = by_key.get(column.upper())
                if name is None or name in out:
                    return None
                values = _column(found, name.upper())
                if values is None:
                    return None
                out[name] = values
                unit = str(found.cards.get(f"TUNIT{found.layout[name.upper()][0]}", "")).strip()
                if unit:
                    units[name] = unit
            return TableColumns(found.name, out, units, found.cards, header)
    except _PARSE_ERRORS:
        return None


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

    def rank(name: str, names: list[str]) -> int | None:
        return 0 if name.upper() == wanted else None

    try:
        with _open(path) as stream:
            found = _find_table(stream, rank)
            if found is None:
                return None
            out = {}
            for column in columns:
                key = column.upper()
                values = _numeric(found, key) if key in found.layout else None
                if values is None:
                    return None
                out[key] = values
            if verify and isinstance(stream, gzip.GzipFile):
                _check_gzip(stream)
            return out, found.cards, found.raw
    except _PARSE_ERRORS:
        return None

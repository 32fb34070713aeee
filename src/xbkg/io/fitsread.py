"""Reading FITS files: the layout is checked here, astropy parses the headers and columns.

An event file holds the EVENTS table first and large IRF tables after it;
building a background needs three of its columns. :func:`read_table`
decompresses the file as a stream (:mod:`zlib`; gzip members and zero padding
as :mod:`gzip` handles them) only up to the end of the wanted table, walking
the HDU headers. astropy parses the header cards (those that give the layout
at once, the whole header when it is looked into) and the column definitions
(:class:`astropy.io.fits.ColDefs`, built once per table layout: building them
costs more than reading a table). With ``verify``, the rest of the stream is
decompressed too, so that zlib checks the gzip CRC-32 and length of the whole
file in the same pass. Small files (indexes, catalogues, models) are read
whole through the same walk and decoded by astropy (:func:`read_fits`).
Uncompressed files are read the same way.

The walk checks what would make astropy fail obscurely on a damaged file
(allocate what a garbled size claims, read a short buffer): headers are
printable ASCII and end, sizes are integers and the data are there. Problems
raise :class:`DamagedFile`, saying what is wrong; the readers add the file
name and the fix.
"""

from __future__ import annotations

import functools
import os
import re
import zlib
from typing import IO, Any

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyError
from numpy.typing import NDArray

__all__ = ["DamagedFile", "NoSuchHDU", "TableColumns", "read_fits", "read_header", "read_table"]

_BLOCK = 2880
_CHUNK = 1 << 16  # compressed bytes read, and content bytes decompressed, at a time
_PRINTABLE = bytes(range(32, 127))
_END = b"END".ljust(80)
#: The cards that define the columns of a binary table (astropy's column keywords),
#: as the first group, or any other card.
_LAYOUT = re.compile(
    rb"((?:NAXIS1|TFIELDS|T(?:TYPE|FORM|UNIT|NULL|SCAL|ZERO|DISP|DIM)\d+) *=.{71})|.{80}", re.S
)


class DamagedFile(Exception):
    """The file is truncated, its gzip data or checksum are wrong, or a header is garbled."""


class NoSuchHDU(DamagedFile):
    """The file has no HDU of the wanted name; ``names`` are those it has."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(f"no such HDU (the file has {names})")
        self.names = names


class _Content:
    """The bytes of a FITS file, decompressed on the way if it is gzip-compressed."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file, self._buffer = file, bytearray()
        self._input = file.read(_CHUNK)
        self._gzip = self._input[:2] == b"\x1f\x8b"
        self._zlib = zlib.decompressobj(31)

    def _more(self) -> bytes:
        """The next bytes of content; empty at the end of the file."""
        if not self._gzip:
            data, self._input = self._input or self._file.read(_CHUNK), b""
            return data
        while True:
            if not self._input:
                self._input = self._file.read(_CHUNK)
                if not self._input:
                    if self._zlib.eof:
                        return b""
                    raise DamagedFile(
                        "gzip check failed: the compressed data end early (the file is "
                        "truncated or damaged)"
                    )
            if self._zlib.eof:  # after a member: zero padding, another member or the end
                self._input = self._input.lstrip(b"\0")
                if not self._input:
                    continue
                self._zlib = zlib.decompressobj(31)
            try:
                out = self._zlib.decompress(self._input, _CHUNK)
            except zlib.error as exc:
                raise DamagedFile(f"gzip check failed ({exc})") from exc
            self._input = self._zlib.unconsumed_tail + self._zlib.unused_data
            if out:
                return out

    def read(self, size: int, what: str = "") -> bytearray:
        """The next ``size`` bytes; fewer at the end of the file, unless ``what`` must be whole."""
        while len(self._buffer) < size and (more := self._more()):
            self._buffer += more
        out = self._buffer[:size]
        del self._buffer[:size]
        if what and len(out) < size:
            raise DamagedFile(f"the file ends inside {what} (it is truncated)")
        return out

    def drain(self) -> None:
        """Decompress to the end, where zlib checks the CRC-32 and length of every member."""
        while self._gzip and self._more():
            pass


def _card(raw: bytes, key: bytes) -> int:
    """Offset of the first card of ``raw`` starting with ``key``; -1 if there is none."""
    start = raw.find(key)
    while start > 0 and start % 80:
        start = raw.find(key, start - start % 80 + 80)
    return start


class _Header:
    """A header's bytes: astropy parses single cards at once, the whole header when asked."""

    def __init__(self, raw: bytes, number: int) -> None:
        self.raw, self.number, self._values = raw, number, dict[str, Any]()

    def get(self, key: str, default: Any = None) -> Any:
        """The value of the first card ``key``."""
        if key not in self._values:
            start = _card(self.raw, key.encode().ljust(8))
            if start < 0:
                return default
            try:
                card = fits.Card.fromstring(self.raw[start : start + 80].decode())
                self._values[key] = card.value
            except VerifyError as exc:
                raise DamagedFile(f"the header of HDU {self.number} is garbled ({exc})") from exc
        return self._values[key]

    def size(self, key: str, default: int | None = None) -> int:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 62:
            raise DamagedFile(f"the header of HDU {self.number} gives {key} = {value!r}")
        return value

    def data_size(self) -> int:
        """Bytes in the data unit (FITS standard 4.4.1.1)."""
        naxis, size = self.size("NAXIS"), 1
        if naxis == 0:
            return 0
        for i in range(1, min(naxis, 999) + 1):
            size *= self.size(f"NAXIS{i}")
        bits = self.get("BITPIX")
        if bits not in (8, 16, 32, 64, -32, -64):
            raise DamagedFile(f"the header of HDU {self.number} gives BITPIX = {bits!r}")
        return abs(bits) // 8 * self.size("GCOUNT", 1) * (self.size("PCOUNT", 0) + size)

    @functools.cached_property
    def parsed(self) -> fits.Header:
        return fits.Header.fromstring(self.raw)


def _next_header(content: _Content, number: int) -> _Header | None:
    """The next header; None at the end of the file (or at zero padding after the last HDU)."""
    blocks: list[bytes] = []
    while not blocks or _card(blocks[-1], _END) < 0:
        block = bytes(content.read(_BLOCK))
        if number > 0 and not blocks and not block.strip(b"\0"):
            return None
        if number == 0 and not blocks and not block.startswith(b"SIMPLE  ="):
            raise DamagedFile("the file is empty" if not block else "it is not a FITS file")
        if len(block) < _BLOCK:
            raise DamagedFile(f"the file ends inside the header of HDU {number} (it is truncated)")
        blocks.append(block)
    raw = b"".join(blocks)
    if raw.translate(None, _PRINTABLE):
        raise DamagedFile(f"the header of HDU {number} holds bytes that are not printable ASCII")
    return _Header(raw, number)


def _find(content: _Content, hdu: str) -> _Header:
    """Walk the HDUs up to the one named ``hdu`` (EXTNAME, or HDUNAME in old files)."""
    wanted, names = hdu.strip().upper(), list[str]()
    while (header := _next_header(content, len(names))) is not None:
        name, other = (str(header.get(k, "")).strip().upper() for k in ("EXTNAME", "HDUNAME"))
        if wanted in (name, other):
            return header
        names.append(name or ("PRIMARY" if not names else ""))
        content.read(-(-header.data_size() // _BLOCK) * _BLOCK, "a data unit")
    raise NoSuchHDU(names)


def read_header(path: str | os.PathLike[str], hdu: str) -> fits.Header:
    """The header of the HDU named ``hdu``; the file is decompressed only up to it.

    Raises ``OSError`` if the file cannot be opened, :class:`DamagedFile` if it
    is damaged, :class:`NoSuchHDU` if it has no such HDU.
    """
    with open(path, "rb") as file:
        return _find(_Content(file), hdu).parsed


def _check_table(header: _Header) -> None:
    """A binary table header astropy can build a table from (it trips over others)."""
    structure = [header.get(key) for key in ("XTENSION", "BITPIX", "NAXIS", "GCOUNT")]
    if structure != ["BINTABLE", 8, 2, 1]:
        raise DamagedFile(
            f"HDU {header.number} is not a binary table (XTENSION, BITPIX, NAXIS, GCOUNT "
            f"= {structure}, not ['BINTABLE', 8, 2, 1])"
        )
    for key in ("NAXIS1", "NAXIS2", "PCOUNT"):
        header.size(key)


def _column_defs(header: _Header) -> fits.ColDefs:
    """The column definitions of a binary table, checked."""
    for i in range(1, min(header.size("TFIELDS"), 999) + 1):
        for key in (f"TFORM{i}", f"TTYPE{i}", f"TUNIT{i}", f"TDIM{i}"):
            value = header.get(key, "" if key[1] != "F" else None)
            if not isinstance(value, str) or (key[1] == "F" and not value.strip()):
                raise DamagedFile(f"the header gives {key} = {value!r}, not text")
    try:
        columns = fits.BinTableHDU.fromstring(header.raw).columns
        columns.dtype  # noqa: B018 (built here: astropy refuses some column names only here)
    except (ValueError, VerifyError) as exc:
        raise DamagedFile(f"the column definitions are garbled ({exc})") from exc
    if columns.dtype.itemsize != header.size("NAXIS1"):
        raise DamagedFile(
            f"the header gives rows of NAXIS1 = {header.get('NAXIS1')} bytes, but the columns "
            f"(TFORMn) take {columns.dtype.itemsize}"
        )
    return columns


#: Column definitions by the cards that define them: building them costs more
#: than reading a table, and the event files of a store share a few layouts.
_LAYOUTS: dict[bytes, fits.ColDefs] = {}


def _columns(header: _Header) -> fits.ColDefs:
    """The column definitions of a binary table, built once per layout."""
    layout = b"".join(_LAYOUT.findall(header.raw))
    if layout not in _LAYOUTS:
        if len(_LAYOUTS) >= 64:
            _LAYOUTS.clear()
        _LAYOUTS[layout] = _column_defs(header)
    return _LAYOUTS[layout]


class TableColumns:
    """Numeric columns of a table (float64, TSCALn/TZEROn applied), their TUNITn, the header."""

    def __init__(
        self, header: _Header, values: dict[str, NDArray[np.float64]], units: dict[str, str | None]
    ) -> None:
        self._header, self.values, self.units = header, values, units

    def get(self, key: str, default: Any = None) -> Any:
        """One header value (parsed alone: quicker than :attr:`header`)."""
        return self._header.get(key, default)

    @property
    def header(self) -> fits.Header:
        """The whole header, parsed when first asked for."""
        return self._header.parsed


def read_table(
    path: str | os.PathLike[str], hdu: str, names: tuple[str, ...], *, verify: bool = True
) -> TableColumns:
    """Numeric columns ``names`` (any case; those the table has) of the binary table ``hdu``.

    ``hdu`` is matched with EXTNAME, or HDUNAME in old files. The file is
    decompressed only up to the end of that table, unless ``verify``: then the
    rest is decompressed too, which checks the gzip CRC-32 and length of the
    whole file.

    Raises ``OSError`` if the file cannot be opened, :class:`DamagedFile` if it
    is truncated, its gzip data or checksum are wrong, a header is garbled or a
    wanted column does not hold one number per row; :class:`NoSuchHDU` if there
    is no such HDU.
    """
    with open(path, "rb") as file:
        content = _Content(file)
        header = _find(content, hdu)
        _check_table(header)
        data = content.read(header.data_size(), f"the {hdu} table")
        if verify:
            content.drain()
    columns = _columns(header)
    rows = np.frombuffer(data, columns.dtype.newbyteorder(">"), count=header.size("NAXIS2"))
    by_name = {str(c.name).upper(): c for c in reversed(columns)}
    values, units = {}, {}
    for name in names:
        column = by_name.get(name.upper())
        if column is None:
            continue
        cells = rows[column.name]
        if cells.ndim != 1 or cells.dtype.kind not in "iuf":
            raise DamagedFile(f"column {column.name} holds {column.format}, not a number per row")
        values[name] = cells.astype(np.float64)
        if column.bscale not in (None, 1) or column.bzero not in (None, 0):
            values[name] = values[name] * (column.bscale or 1) + (column.bzero or 0)
        units[name] = column.unit
    return TableColumns(header, values, units)


def read_fits(path: str | os.PathLike[str]) -> fits.HDUList:
    """All HDUs of a file, checked whole (the gzip CRC-32 too), then decoded by astropy.

    For small files (indexes, catalogues, models). Every header value is
    parsed here, so that a garbled card is found at once.

    Raises ``OSError`` if the file cannot be opened, :class:`DamagedFile` if it
    is truncated, its gzip data or checksum are wrong, or a header is garbled.
    """
    pieces: list[bytes] = []
    with open(path, "rb") as file:
        content = _Content(file)
        while (header := _next_header(content, len(pieces))) is not None:
            try:
                list(header.parsed.values())
            except VerifyError as exc:
                raise DamagedFile(f"the header of HDU {len(pieces)} is garbled ({exc})") from exc
            size = header.data_size()
            if header.get("XTENSION") == "BINTABLE":
                _check_table(header)
                _column_defs(header)
            data = content.read(size, f"the data of HDU {len(pieces)}")
            content.read(-size % _BLOCK)  # the padding (may be missing at the end)
            pieces.append(header.raw + data + bytes(-size % _BLOCK))
        content.drain()
    return fits.HDUList.fromstring(b"".join(pieces))

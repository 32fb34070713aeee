"""Reading FITS files: the layout is checked here, astropy parses headers and columns.

:func:`read_table` decompresses a file as a stream (:mod:`zlib`; gzip members
and zero padding as :mod:`gzip` handles them) only up to the end of the wanted
table: event files hold the EVENTS table first and large IRF tables after it.
astropy parses the header cards and the column definitions (built once per
table layout: that costs more than reading a table). With ``verify``, the rest
of the stream is decompressed in the same pass, so that zlib checks the gzip
CRC-32 and length. :func:`read_fits` reads small files whole the same way.

The walk checks what astropy trips over in a damaged file (sizes it would
allocate, short data, headers that are not text) and raises :class:`DamagedFile`
saying what is wrong; the readers add the file name and the fix.
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

__all__ = ["DamagedFile", "HeaderCards", "NoSuchHDU", "read_fits", "read_table"]

_BLOCK, _CHUNK = 2880, 1 << 16  # FITS block; bytes read and decompressed at a time
_PRINTABLE, _END = bytes(range(32, 127)), b"END".ljust(80)
#: The cards defining the columns of a binary table (first group), or another card.
_LAYOUT = re.compile(
    rb"((?:NAXIS1|TFIELDS|T(?:TYPE|FORM|UNIT|NULL|SCAL|ZERO|DIM)\d+) *=.{71})|.{80}", re.S
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
        self._file, self._buffer, self._input = file, bytearray(), file.read(_CHUNK)
        self._gzip, self._zlib = self._input[:2] == b"\x1f\x8b", zlib.decompressobj(31)

    def _more(self) -> bytes:
        """The next bytes of content; empty at the end of the file."""
        if not self._gzip:
            data, self._input = self._input or self._file.read(_CHUNK), b""
            return data
        while True:
            self._input = self._input or self._file.read(_CHUNK)
            if not self._input:
                if self._zlib.eof:
                    return b""
                raise DamagedFile("gzip check failed: the data end early (truncated or damaged)")
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


class HeaderCards:
    """A header's bytes; astropy parses a card when it is looked up, the whole header on demand."""

    def __init__(self, raw: bytes, number: int) -> None:
        self.raw, self.number, self._values = raw, number, dict[str, Any]()

    def get(self, key: str, default: Any = None) -> Any:
        """The value of the first card ``key`` (quicker than parsing the whole header)."""
        try:
            if "header" in self.__dict__:  # parsed already
                return self.header.get(key, default)
            if key not in self._values:
                start = _card(self.raw, key.encode().ljust(8))
                if start < 0:
                    return default
                card = fits.Card.fromstring(self.raw[start : start + 80].decode())
                self._values[key] = card.value
            return self._values[key]
        except VerifyError as exc:
            raise DamagedFile(f"the header of HDU {self.number} is garbled ({exc})") from exc

    @functools.cached_property
    def header(self) -> fits.Header:
        """The whole header."""
        return fits.Header.fromstring(self.raw)

    def size(self, key: str, default: int | None = None) -> int:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 62:
            raise DamagedFile(f"the header of HDU {self.number} gives {key} = {value!r}")
        return value

    def data_size(self) -> int:
        """Bytes in the data unit (FITS standard 4.4.1.1)."""
        naxis, size, bits = self.size("NAXIS"), 1, self.get("BITPIX")
        for i in range(1, min(naxis, 999) + 1):
            size *= self.size(f"NAXIS{i}")
        if bits not in (8, 16, 32, 64, -32, -64):
            raise DamagedFile(f"the header of HDU {self.number} gives BITPIX = {bits!r}")
        if not naxis:
            return 0
        return abs(bits) // 8 * self.size("GCOUNT", 1) * (self.size("PCOUNT", 0) + size)

    def check_table(self) -> None:
        """A binary table header astropy can build a table from."""
        structure = [self.get(key) for key in ("XTENSION", "BITPIX", "NAXIS", "GCOUNT")]
        if structure != ["BINTABLE", 8, 2, 1] or not all(
            self.size(key) >= 0 for key in ("NAXIS1", "NAXIS2", "PCOUNT")
        ):
            raise DamagedFile(
                f"HDU {self.number} is not a binary table "
                f"(XTENSION, BITPIX, NAXIS, GCOUNT = {structure})"
            )


def _next_header(content: _Content, number: int) -> HeaderCards | None:
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
    return HeaderCards(raw, number)


def _column_defs(header: HeaderCards, table: fits.BinTableHDU | None = None) -> fits.ColDefs:
    """The column definitions of a binary table (the header's, or ``table``'s), checked."""
    for i in range(1, min(header.size("TFIELDS"), 999) + 1):
        for key in (f"TFORM{i}", f"TTYPE{i}", f"TUNIT{i}", f"TDIM{i}"):
            value = header.get(key, "" if key[1] != "F" else None)
            if not isinstance(value, str) or (key[1] == "F" and not value.strip()):
                raise DamagedFile(f"the header gives {key} = {value!r}, not text")
    try:
        columns = (table or fits.BinTableHDU.fromstring(header.raw)).columns
        width = columns.dtype.itemsize  # astropy refuses some column names only here
    except (ValueError, VerifyError) as exc:
        raise DamagedFile(f"the column definitions are garbled ({exc})") from exc
    if width != header.size("NAXIS1"):
        raise DamagedFile(
            f"the header gives rows of NAXIS1 = {header.get('NAXIS1')} bytes, "
            f"but the columns (TFORMn) take {width}"
        )
    return columns


#: Column definitions by the cards defining them (a store's event files share a few).
_LAYOUTS: dict[bytes, fits.ColDefs] = {}


def _columns(header: HeaderCards) -> fits.ColDefs:
    layout = b"".join(_LAYOUT.findall(header.raw))
    if layout not in _LAYOUTS:
        if len(_LAYOUTS) > 64:
            _LAYOUTS.clear()
        _LAYOUTS[layout] = _column_defs(header)
    return _LAYOUTS[layout]


def read_table(
    path: str | os.PathLike[str], hdu: str, names: tuple[str, ...] = (), *, verify: bool = True
) -> tuple[HeaderCards, dict[str, NDArray[np.float64]], dict[str, str | None]]:
    """The header and the numeric columns ``names`` (those the table has) of a binary table.

    ``hdu`` is matched (in any case) with EXTNAME, or HDUNAME in old files;
    ``names`` in any case. The file is decompressed only up to the end of that
    table, unless ``verify``: then the rest is decompressed too, which checks
    the gzip CRC-32 and length of the whole file.

    Returns
    -------
    tuple
        The header, ``{name: values}`` in float64 with TSCALn/TZEROn applied,
        ``{name: TUNITn or None}``.

    Raises
    ------
    OSError
        If the file cannot be opened.
    DamagedFile
        If it is truncated, its gzip data or checksum are wrong, a header is
        garbled or a wanted column does not hold one number per row;
        :class:`NoSuchHDU` if there is no such HDU.
    """
    wanted, found = hdu.strip().upper(), list[str]()
    with open(path, "rb") as file:
        content = _Content(file)
        while (header := _next_header(content, len(found))) is not None:
            name, other = (str(header.get(k, "")).strip().upper() for k in ("EXTNAME", "HDUNAME"))
            if wanted in (name, other):
                break
            found.append(name or ("PRIMARY" if not found else ""))
            content.read(-(-header.data_size() // _BLOCK) * _BLOCK, "a data unit")
        else:
            raise NoSuchHDU(found)
        header.check_table()
        data = content.read(header.data_size(), f"the {hdu} table")
        if verify:
            content.drain()
    columns = _columns(header)
    rows = np.frombuffer(data, columns.dtype.newbyteorder(">"), count=header.size("NAXIS2"))
    by_name = {str(c.name).upper(): c for c in reversed(columns)}
    values, units = {}, {}
    for name in (n for n in names if n.upper() in by_name):
        column = by_name[name.upper()]
        cells = rows[column.name]
        if cells.ndim != 1 or cells.dtype.kind not in "iuf":
            raise DamagedFile(f"column {column.name} holds {column.format}, not a number per row")
        values[name], units[name] = cells.astype(np.float64), column.unit
        if column.bscale not in (None, 1) or column.bzero not in (None, 0):
            values[name] = values[name] * (column.bscale or 1) + (column.bzero or 0)
    return header, values, units


def read_fits(path: str | os.PathLike[str]) -> fits.HDUList:
    """All HDUs of a (small) file, checked whole (gzip CRC-32, every card), decoded by astropy.

    Raises ``OSError`` if the file cannot be opened, :class:`DamagedFile` if it
    is truncated, its gzip data or checksum are wrong, or a header is garbled.
    """
    pieces, tables = list[bytes](), dict[int, HeaderCards]()
    with open(path, "rb") as file:
        content = _Content(file)
        while (header := _next_header(content, len(pieces))) is not None:
            try:
                list(header.header.values())
            except VerifyError as exc:
                raise DamagedFile(f"the header of HDU {len(pieces)} is garbled ({exc})") from exc
            size = header.data_size()
            if header.get("XTENSION") == "BINTABLE":
                header.check_table()
                tables[len(pieces)] = header
            data = content.read(size, f"the data of HDU {len(pieces)}")
            content.read(-size % _BLOCK)  # the padding (may be missing at the end)
            pieces.append(header.raw + data + bytes(-size % _BLOCK))
        content.drain()
    hdus = fits.HDUList.fromstring(b"".join(pieces))
    for number, header in tables.items():
        _column_defs(header, hdus[number])
    return hdus

"""Reproducible, all-or-nothing FITS file writing, and strict FITS reading.

astropy stamps the current time into the gzip header of ``.gz`` files, so two
runs on the same inputs would give different bytes. We serialise to memory,
compress with a zero gzip timestamp and move the finished file into place in
one rename, so that a failure never leaves a partial file behind.

The tables ``xbkg make`` writes (models, indexes, group definitions) are built
here directly (:func:`table_bytes`, :func:`format_card`): importing astropy
alone takes about half a second, more than the rest of the command's fixed
cost. astropy is imported only where a general FITS reader or writer is needed.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import io
import os
import re
import tempfile
import warnings
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from astropy.io import fits

__all__ = [
    "atomic_write_bytes",
    "fits_bytes",
    "format_card",
    "gzip_bytes",
    "one_row_table_bytes",
    "open_fits",
    "publish",
    "read_errors",
    "strict_warnings",
    "table_bytes",
    "write_fits",
    "write_table",
]

_BLOCK = 2880

#: What reading a damaged or malformed file can raise: gzip (EOFError,
#: zlib.error, OSError) and astropy, depending on the damage (OSError,
#: ValueError, TypeError, KeyError, IndexError, AttributeError, MemoryError for
#: sizes beyond the file, AssertionError for a non-string TTYPEn,
#: UnboundLocalError for a blank TFORMn). :func:`read_errors` adds astropy's own.
_BUILTIN_READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    zlib.error,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    UnicodeError,
    MemoryError,
    OverflowError,
    AssertionError,
    UnboundLocalError,
)


@functools.cache
def read_errors() -> tuple[type[BaseException], ...]:
    """What reading a damaged or malformed file can raise.

    The builtin errors of gzip and astropy plus astropy's VerifyError,
    IORegistryError (no known format) and the warnings that
    :func:`strict_warnings` turns into errors. Readers catch these around calls
    into gzip and astropy only (``except read_errors() as exc``; the handler's
    expression is evaluated only when something was raised, so astropy is not
    imported on the fast path) and report a damaged file.
    """
    from astropy.io.fits.verify import VerifyError, VerifyWarning
    from astropy.io.registry import IORegistryError
    from astropy.utils.exceptions import AstropyUserWarning

    return (
        *_BUILTIN_READ_ERRORS,
        VerifyError,
        VerifyWarning,
        AstropyUserWarning,
        IORegistryError,
    )


@contextlib.contextmanager
def strict_warnings() -> Iterator[None]:
    """astropy's warnings about a truncated file or a damaged card, raised as errors.

    astropy reads what it can of such a file and only warns; a reader of
    event lists, indexes or catalogues must not go on with half a table.
    """
    from astropy.io.fits.verify import VerifyWarning
    from astropy.utils.exceptions import AstropyUserWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", VerifyWarning)
        warnings.filterwarnings("error", ".*truncated", AstropyUserWarning)
        yield


@contextlib.contextmanager
def open_fits(path: str | os.PathLike[str]) -> Iterator[fits.HDUList]:
    """Open a FITS file (optionally gzip-compressed) for reading, strictly.

    Under :func:`strict_warnings`, and with the file opened here, so that it
    is closed even when astropy fails while opening it; a header that is not
    text is refused first. Failures are among :func:`read_errors`.
    """
    from astropy.io import fits

    from xbkg.io.eventfile import garbled_header

    garbled = garbled_header(path)
    if garbled is not None:
        # astropy can spend minutes parsing binary garbage as header cards.
        raise ValueError(f"the header of HDU {garbled} holds bytes that are not printable ASCII")
    with strict_warnings(), open(path, "rb") as file, fits.open(file, memmap=False) as hdul:
        yield hdul


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish(tmp: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Give a finished temporary file the usual permissions and rename it to ``path``.

    ``tempfile.mkstemp`` creates files readable by the owner only; outputs
    should get the permissions of any newly created file.
    """
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


def fits_bytes(hdulist: fits.HDUList, *, compress: bool) -> bytes:
    """Serialise ``hdulist`` to bytes; gzip-compressed (timestamp 0) if ``compress``."""
    buffer = io.BytesIO()
    hdulist.writeto(buffer, output_verify="exception", checksum=False)
    raw = buffer.getvalue()
    return gzip_bytes(raw) if compress else raw


def gzip_bytes(raw: bytes) -> bytes:
    """gzip-compress with a zero timestamp and no file name, so the bytes are reproducible."""
    return gzip.compress(raw, compresslevel=6, mtime=0)


def atomic_write_bytes(data: bytes, path: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Write ``data`` to ``path`` through a temporary file and one rename.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: file exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_fits(
    hdulist: fits.HDUList, path: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write ``hdulist`` reproducibly and atomically; gzip if the name ends in ``.gz``."""
    path = Path(path)
    return atomic_write_bytes(
        fits_bytes(hdulist, compress=path.suffix == ".gz"), path, overwrite=overwrite
    )


def _padded(data: bytes, fill: bytes) -> bytes:
    return data + fill * (-len(data) % _BLOCK)


_KEYWORD = re.compile(r"[A-Z0-9_-]{1,8}")
_PRINTABLE = re.compile(r"[ -~]*")
_HIERARCH = re.compile(r"HIERARCH ([A-Z0-9_-]{9,})")


# typed: True and 1, or 1 and 1.0, are equal keys but different cards.
@functools.lru_cache(maxsize=4096, typed=True)
def format_card(key: str, value: object, comment: str = "") -> str:
    """The 80-character image of a header card, as astropy formats it.

    Formatted here for the common cases (a standard keyword; a bool, int,
    finite float or printable ASCII string value; a card that fits on one
    line), which is all our writers need; anything else is left to
    :class:`astropy.io.fits.Card`. Cached, as most cards repeat from file to file.
    """
    text = _card_text(key, value, comment)
    if text is not None:
        return text
    from astropy.io import fits

    return str(fits.Card(key, value, comment).image)


def _card_text(key: str, value: object, comment: str) -> str | None:
    hierarch = _HIERARCH.fullmatch(key)
    if not ((hierarch or _KEYWORD.fullmatch(key)) and _PRINTABLE.fullmatch(comment)):
        return None
    if key in ("COMMENT", "HISTORY"):
        text = str(value)
        ok = not comment and _PRINTABLE.fullmatch(text) and len(text) <= 72
        return f"{key:8}{text:72}" if ok else None
    if isinstance(value, (bool, np.bool_)):
        text = f"{'T' if value else 'F':>20}"
    elif isinstance(value, (int, np.integer)):
        text = f"{int(value):>20d}"
    elif isinstance(value, (float, np.float64)) and np.isfinite(value):
        # str() gives the shortest repr that reads back exactly; FITS wants an upper-case E.
        number = str(float(value)).replace("e", "E")
        if len(number) > 20:
            return None
        text = f"{number:>20}"
    elif isinstance(value, str) and _PRINTABLE.fullmatch(value):
        # Quoted, quotes doubled, padded to 8 characters inside and 20 outside
        # the quotes; an empty string is just the two quotes.
        quoted = "'" + f"{value.replace(chr(39), chr(39) * 2):8}" + "'"
        text = f"{quoted:20}" if value else "''"
    else:
        return None
    comment = comment.rstrip()  # as astropy: a blank comment is no comment
    # Long keywords (the HIERARCH convention) have their value unpadded.
    card = f"HIERARCH {hierarch.group(1)} = {text.strip()}" if hierarch else f"{key:8}= {text}"
    card += f" / {comment}" if comment else ""
    return f"{card:80}" if len(card) <= 80 else None


#: FITS binary table format code of each numpy dtype kind and size we write.
_TFORM = {"b1": "L", "u1": "B", "i2": "I", "i4": "J", "i8": "K", "f4": "E", "f8": "D"}


def _column_bytes(values: NDArray[Any], name: str) -> tuple[str, NDArray[Any]]:
    """TFORM code and big-endian (or ASCII) cell bytes of one column, rows first."""
    if values.dtype.kind in "US":
        text = values.astype("U") if values.dtype.kind == "S" else values
        encoded = np.char.encode(text, "ascii") if text.size else text.astype("S1")
        width = max(1, encoded.dtype.itemsize)
        return f"{width}A", encoded.astype(f"S{width}").reshape(len(values), 1)
    key = f"{values.dtype.kind}{values.dtype.itemsize}"
    if (values.dtype.kind == "u" and values.dtype.itemsize > 1) or key not in _TFORM:
        raise TypeError(f"column {name!r}: cannot write dtype {values.dtype} to FITS")
    if values.dtype.kind == "b":
        cells = np.where(values, b"T", b"F").astype("S1")
    else:
        cells = values.astype(values.dtype.newbyteorder(">"))
    repeat = int(np.prod(values.shape[1:], dtype=np.int64))
    cells = cells.reshape(len(values), repeat)
    return f"{repeat if repeat != 1 or values.ndim > 1 else ''}{_TFORM[key]}", cells


def table_bytes(
    columns: Sequence[tuple[str, NDArray[Any], str | None, str | None]],
    header: Sequence[tuple[str, object, str]],
    extname: str,
) -> bytes:
    """A FITS file (empty primary + one binary table) as bytes.

    The same bytes as astropy writes for ``HDUList([PrimaryHDU(),
    BinTableHDU.from_columns(..., header=header, name=extname)])`` (tested),
    built directly: astropy's table machinery costs tens of milliseconds per
    small file, and importing it half a second.

    Parameters
    ----------
    columns
        ``(name, values, unit, tdim)`` per column. ``values`` has one entry per
        row: scalars (bool, integer, float or str) or, for vector cells, rows of
        numbers (2-D).
    header
        ``(keyword, value, comment)`` written after the column descriptions.
    extname
        Extension name.
    """
    cards = [
        format_card("SIMPLE", True, "conforms to FITS standard"),
        format_card("BITPIX", 8, "array data type"),
        format_card("NAXIS", 0, "number of array dimensions"),
        format_card("EXTEND", True),
    ]
    primary = _padded("".join(cards).encode() + b"END".ljust(80), b" ")
    n_rows = {len(values) for _, values, _, _ in columns}
    if len(n_rows) > 1:
        raise ValueError(f"table {extname}: columns have different lengths {sorted(n_rows)}")
    described = []
    cells = []
    for name, values, unit, tdim in columns:
        tform, data = _column_bytes(np.asarray(values), name)
        described.append((name, tform, unit, tdim))
        cells.append(data.view(np.uint8).reshape(len(data), data.dtype.itemsize * data.shape[1]))
    rows = np.hstack(cells) if cells else np.zeros((0, 0), dtype=np.uint8)
    cards = [
        format_card("XTENSION", "BINTABLE", "binary table extension"),
        format_card("BITPIX", 8, "array data type"),
        format_card("NAXIS", 2, "number of array dimensions"),
        format_card("NAXIS1", rows.shape[1], "length of dimension 1"),
        format_card("NAXIS2", rows.shape[0], "length of dimension 2"),
        format_card("PCOUNT", 0, "number of group parameters"),
        format_card("GCOUNT", 1, "number of groups"),
        format_card("TFIELDS", len(columns), "number of table fields"),
    ]
    for i, (name, tform, unit, tdim) in enumerate(described, start=1):
        cards += [format_card(f"TTYPE{i}", name), format_card(f"TFORM{i}", tform)]
        if unit:
            cards.append(format_card(f"TUNIT{i}", unit))
        if tdim:
            cards.append(format_card(f"TDIM{i}", tdim))
    cards += [format_card(key, value, comment) for key, value, comment in header]
    cards.append(format_card("EXTNAME", extname, "extension name"))
    table = _padded("".join(cards).encode() + b"END".ljust(80), b" ")
    return primary + table + _padded(np.ascontiguousarray(rows).tobytes(), b"\0")


def one_row_table_bytes(
    columns: Sequence[tuple[str, NDArray[np.float64], str, str | None]],
    header: Sequence[tuple[str, object, str]],
    extname: str,
) -> bytes:
    """:func:`table_bytes` of a one-row table of float64 vectors (``values`` is the cell)."""
    rows = [
        (name, np.asarray(values, dtype=np.float64).reshape(1, -1), unit, tdim)
        for name, values, unit, tdim in columns
    ]
    return table_bytes(rows, header, extname)


def write_table(
    columns: Mapping[str, NDArray[Any]],
    path: str | os.PathLike[str],
    extname: str,
    *,
    units: Mapping[str, str] | None = None,
    header: Mapping[str, object] | Sequence[tuple[str, object]] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a binary table of scalar columns reproducibly and atomically.

    Gzip-compressed if the name ends in ``.gz``. ``header`` holds keyword
    values (pairs may repeat a keyword, e.g. COMMENT); values that cannot be
    FITS keywords (not a bool, number or string) are left out.
    """
    path = Path(path)
    units = units or {}
    described = [(name, values, units.get(name) or None, None) for name, values in columns.items()]
    cards = [
        (key, value, "")
        for key, value in (header.items() if isinstance(header, Mapping) else header or ())
        if isinstance(value, (bool, int, float, str, np.bool_, np.integer, np.floating))
    ]
    data = table_bytes(described, cards, extname)
    if path.suffix == ".gz":
        data = gzip_bytes(data)
    return atomic_write_bytes(data, path, overwrite=overwrite)

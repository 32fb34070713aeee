"""Reproducible, all-or-nothing FITS file writing.

astropy stamps the current time into the gzip header of ``.gz`` files, so two
runs on the same inputs would give different bytes. We serialise to memory,
compress with a zero gzip timestamp and move the finished file into place in
one rename, so that a failure never leaves a partial file behind.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import io
import os
import tempfile
import warnings
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyError, VerifyWarning
from astropy.io.registry import IORegistryError
from astropy.utils.exceptions import AstropyUserWarning
from numpy.typing import NDArray

__all__ = [
    "READ_ERRORS",
    "atomic_write_bytes",
    "fits_bytes",
    "gzip_bytes",
    "one_row_table_bytes",
    "open_fits",
    "publish",
    "strict_warnings",
    "write_fits",
]

_BLOCK = 2880

#: What reading a damaged or malformed file can raise: gzip (EOFError,
#: zlib.error, OSError) and astropy, depending on the damage (OSError,
#: ValueError, TypeError, KeyError, IndexError, AttributeError, MemoryError for
#: sizes beyond the file, AssertionError for a non-string TTYPEn,
#: UnboundLocalError for a blank TFORMn, VerifyError, IORegistryError for no
#: known format, and the warnings that readers turn into errors). Readers catch
#: these around calls into gzip and astropy only, and report a damaged file.
READ_ERRORS: tuple[type[BaseException], ...] = (
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
    with warnings.catch_warnings():
        warnings.simplefilter("error", VerifyWarning)
        warnings.filterwarnings("error", ".*truncated", AstropyUserWarning)
        yield


@contextlib.contextmanager
def open_fits(path: str | os.PathLike[str]) -> Iterator[fits.HDUList]:
    """Open a FITS file (optionally gzip-compressed) for reading, strictly.

    Under :func:`strict_warnings`, and with the file opened here, so that it
    is closed even when astropy fails while opening it. Failures are among
    :data:`READ_ERRORS`.
    """
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
        raise FileExistsError(
            f"{path}: file exists; pass overwrite=True (command line: --overwrite) to replace it"
        )
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


@functools.lru_cache(maxsize=4096)
def _card(key: str, value: object, comment: str = "") -> str:
    """The 80-character image of a header card (astropy formats it; cached, as most
    cards repeat from file to file and building a Card is slow)."""
    return fits.Card(key, value, comment).image


def one_row_table_bytes(
    columns: Sequence[tuple[str, NDArray[np.float64], str, str | None]],
    header: Sequence[tuple[str, object, str]],
    extname: str,
) -> bytes:
    """A FITS file (empty primary + a one-row table of float64 vectors) as bytes.

    The same bytes as astropy writes for ``HDUList([PrimaryHDU(),
    BinTableHDU.from_columns(..., header=header, name=extname)])``, built
    directly: astropy's table machinery costs tens of milliseconds per small
    file, which dominates when a model file is written for every run.

    Parameters
    ----------
    columns
        ``(name, values, unit, tdim)`` per column; ``values`` is the cell.
    header
        ``(keyword, value, comment)`` written after the column descriptions.
    extname
        Extension name.
    """
    cards = [
        _card("SIMPLE", True, "conforms to FITS standard"),
        _card("BITPIX", 8, "array data type"),
        _card("NAXIS", 0, "number of array dimensions"),
        _card("EXTEND", True),
    ]
    primary = _padded("".join(cards).encode() + b"END".ljust(80), b" ")
    row = b"".join(np.asarray(v, dtype=">f8").tobytes() for _, v, _, _ in columns)
    cards = [
        _card("XTENSION", "BINTABLE", "binary table extension"),
        _card("BITPIX", 8, "array data type"),
        _card("NAXIS", 2, "number of array dimensions"),
        _card("NAXIS1", len(row), "length of dimension 1"),
        _card("NAXIS2", 1, "length of dimension 2"),
        _card("PCOUNT", 0, "number of group parameters"),
        _card("GCOUNT", 1, "number of groups"),
        _card("TFIELDS", len(columns), "number of table fields"),
    ]
    for i, (name, values, unit, tdim) in enumerate(columns, start=1):
        cards += [_card(f"TTYPE{i}", name), _card(f"TFORM{i}", f"{np.size(values)}D")]
        if unit:
            cards.append(_card(f"TUNIT{i}", unit))
        if tdim:
            cards.append(_card(f"TDIM{i}", tdim))
    cards += [_card(key, value, comment) for key, value, comment in header]
    cards.append(_card("EXTNAME", extname, "extension name"))
    table = _padded("".join(cards).encode() + b"END".ljust(80), b" ")
    return primary + table + _padded(row, b"\0")

"""Reproducible, all-or-nothing FITS file writing.

astropy stamps the current time into the gzip header of ``.gz`` files, so two
runs on the same inputs would give different bytes. We serialise to memory,
compress with a zero gzip timestamp and move the finished file into place in
one rename, so that a failure never leaves a partial file behind.
"""

from __future__ import annotations

import gzip
import io
import os
import tempfile
from pathlib import Path

from astropy.io import fits

__all__ = ["atomic_write_bytes", "fits_bytes", "publish", "write_fits"]


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
    if compress:
        return gzip.compress(raw, compresslevel=6, mtime=0)
    return raw


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

"""Checking a whole gzip stream: its CRC-32 and length.

Reading the EVENTS table of an event file decompresses the file only up to the
end of that table; damage there that still decompresses would go unnoticed.
gzip checks the CRC-32 and the length of the data only at the end of the
stream, so :func:`check_gzip_file` decompresses the file to its end. The
process that reads a run checks its file (:func:`xbkg.io.datastore.read_events`).
"""

from __future__ import annotations

import gzip
import os

__all__ = ["check_gzip_file"]

_CHUNK = 1 << 22


def check_gzip_file(path: str | os.PathLike[str]) -> None:
    """Decompress a gzip file to its end, where gzip checks its CRC-32 and length.

    Nothing to check in a file that is not gzip-compressed.

    Raises
    ------
    OSError, EOFError, zlib.error
        If the file cannot be read, is truncated or its checksum or length
        does not match.
    """
    with open(path, "rb") as f:
        if f.read(2) != b"\x1f\x8b":
            return
    with gzip.open(path, "rb") as stream:
        while stream.read(_CHUNK):
            pass

"""Checking whole gzip streams in background processes, while the command starts.

Checking an event file's gzip CRC-32 and length means decompressing all of
it, and on H.E.S.S. DR1 this is most of the work of reading the events: the
EVENTS table is small next to the instrument response tables after it. The
command line has nothing for the processor cores to do while it imports the
data model (xarray and pandas: most of a second), so ``xbkg make`` starts the
checks in a few forked processes first, and then reads only the EVENTS
tables of the files found intact (:func:`xbkg.cube.make_run_cube`,
``verified``).

The checks only ever save work. A file that is not reported intact, because
its check failed or was not finished in time, is checked again while it is
read, and the error, if any, comes from there, as without the early checks.
"""

from __future__ import annotations

import contextlib
import gzip
import multiprocessing
import os
import signal
import zlib
from collections.abc import Sequence
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any

__all__ = ["GzipChecks", "available", "check_gzip_file", "gzip_intact"]

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


def gzip_intact(path: str) -> bool:
    """Whether the file is gzip-compressed and passes :func:`check_gzip_file`.

    False for a file that is not gzip-compressed, missing or unreadable:
    nothing is learned about it, and the reader checks it as usual.
    """
    try:
        with open(path, "rb") as f:
            if f.read(2) != b"\x1f\x8b":
                return False
        check_gzip_file(path)
    except (OSError, EOFError, zlib.error):
        return False
    return True


def _check(paths: Sequence[str], first: int, step: int, out: Connection) -> None:
    """Worker: check ``paths[first::step]``, sending the index of each intact one."""
    # The parent handles Ctrl-C and stops the workers; SIGTERM ends them at once.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with contextlib.suppress(BaseException):
        for i in range(first, len(paths), step):
            if gzip_intact(paths[i]):
                # One small message is one write to the pipe: a worker stopped
                # at any moment leaves whole messages behind.
                out.send_bytes(i.to_bytes(4, "little"))
    out.close()


class GzipChecks:
    """Gzip checks of files running in forked processes until :meth:`stop`.

    Parameters
    ----------
    paths
        Files to check, in the order they are wanted.
    processes
        Number of processes.

    Use as a context manager: leaving it stops the processes.
    """

    def __init__(self, paths: Sequence[str], processes: int) -> None:
        self._paths = list(paths)
        self._workers: list[tuple[Any, Connection]] = []
        # Plain processes and pipes, no threads: the process may fork again later.
        context = multiprocessing.get_context("fork")
        try:
            for first in range(min(processes, len(self._paths))):
                receive, send = context.Pipe(duplex=False)
                worker = context.Process(
                    target=_check, args=(self._paths, first, processes, send), daemon=True
                )
                self._workers.append((worker, receive))
                worker.start()
                send.close()
        except BaseException:
            self.stop()  # the processes started so far (a limit on processes reached)
            raise

    def stop(self, *, wait: bool = False) -> frozenset[str]:
        """Stop the checks (or with ``wait``, let them finish); the files found intact."""
        intact = set()
        for worker, receive in self._workers:
            if worker.pid is None:  # never started
                receive.close()
                continue
            if not wait:
                worker.terminate()
            # Read up to the end of the pipe (the worker ended): a worker that
            # filled the pipe waits for this reading before it can end.
            with contextlib.suppress(EOFError, OSError):
                while True:
                    message = receive.recv_bytes()
                    if len(message) == 4:
                        intact.add(self._paths[int.from_bytes(message, "little")])
            receive.close()
            worker.join()
        self._workers = []
        return frozenset(intact)

    def __enter__(self) -> GzipChecks:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def available() -> bool:
    """Whether checks can run here: they need processes started by forking."""
    return "fork" in multiprocessing.get_all_start_methods()

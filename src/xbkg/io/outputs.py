"""Outputs that appear complete or not at all, and never replace files unasked.

Every command that writes files goes through :func:`all_or_nothing`: the files
are written into a hidden folder inside the output folder and moved into place
only when all are complete. Files being replaced are set aside until every new
file is in place and put back if anything fails, so an error, a full disk,
Ctrl-C or SIGTERM leave the output folder complete and new, or as it was.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from xbkg.errors import OutputError, OutputExistsError, XbkgError, describe

__all__ = ["all_or_nothing", "alongside", "check_outputs"]


def check_outputs(
    out_dir: Path, names: Sequence[str], overwrite: bool, *, empty_folder: bool = True
) -> None:
    """Refuse to write into a folder with files in it, unless ``overwrite``.

    With ``empty_folder=False`` only files named ``names`` are in the way
    (figures added to an output folder).

    Raises
    ------
    OutputExistsError
        If ``out_dir`` holds anything (or, with ``empty_folder=False``, one of
        ``names``) and ``overwrite`` is false.
    OutputError
        If ``out_dir`` or one of ``names`` in it is in the way (a file where a
        folder must be, a folder where a file must be).
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: exists and is not a folder; choose another output folder")
    blocked = [n for n in names if (out_dir / n).is_dir()]
    if blocked:
        raise OutputError(f"{out_dir}: {blocked} are folders; move them away")
    if out_dir.is_dir() and not overwrite:
        taken = [n for n in names if (out_dir / n).exists()]
        present = sorted(p.name for p in out_dir.iterdir()) if empty_folder else taken
        if present:
            what = f"would overwrite {taken}" if taken else f"is not empty ({present[:3]} ...)"
            raise OutputExistsError(
                f"{out_dir}: {what}; choose a new or empty folder, or pass --overwrite "
                "(overwrite=True) to replace xbkg's files in it"
            )


def all_or_nothing(
    out_dir: Path,
    names: Sequence[str],
    overwrite: bool,
    write: Callable[[Path], object],
    *,
    empty_folder: bool = True,
) -> None:
    """Run ``write(stage)`` in a fresh folder inside ``out_dir``, then move ``names`` out.

    Whatever happens (an error, a full disk, Ctrl-C), ``out_dir`` ends up
    either with all new files or exactly as it was: files replaced under
    ``overwrite`` are set aside until every new file is in place, and put
    back if anything fails.

    Raises
    ------
    OutputExistsError
        If outputs are in the way and ``overwrite`` is false (:func:`check_outputs`).
    OutputError
        If the files cannot be written; nothing is changed in ``out_dir``.
    """
    check_outputs(out_dir, names, overwrite, empty_folder=empty_folder)
    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=".xbkg-", dir=out_dir))
    except OSError as exc:
        raise OutputError(
            f"{out_dir}: cannot create files there ({exc.strerror or exc}); choose a writable "
            "output folder"
        ) from exc
    try:
        try:
            write(stage)
        except XbkgError:
            raise
        except OSError as exc:
            raise OutputError(
                f"{out_dir}: writing the outputs failed ({describe(exc)}); nothing was written, "
                "the folder is as it was"
            ) from exc
        _swap_in(stage, out_dir, names)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if created:  # leave no empty output folder behind either
            with contextlib.suppress(OSError):
                out_dir.rmdir()
        raise
    shutil.rmtree(stage, ignore_errors=True)


def _swap_in(stage: Path, out_dir: Path, names: Sequence[str]) -> None:
    """Move ``names`` from ``stage`` to ``out_dir``; on any failure restore ``out_dir``."""
    previous = stage / ".previous"
    previous.mkdir()
    set_aside: list[str] = []
    placed: list[str] = []
    try:
        for name in names:
            target = out_dir / name
            if target.exists():
                (previous / name).parent.mkdir(parents=True, exist_ok=True)
                target.replace(previous / name)
                set_aside.append(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            (stage / name).replace(target)
            placed.append(name)
    except BaseException:
        for name in placed:
            (out_dir / name).unlink(missing_ok=True)
        for name in set_aside:
            (previous / name).replace(out_dir / name)
        raise


@contextlib.contextmanager
def alongside(task: Callable[[], object]) -> Iterator[None]:
    """Run ``task`` in a forked process while the body of the ``with`` runs.

    Two independent groups of outputs (the archive, the FITS files) are
    written at the same time on two processor cores. Leaving the body waits
    for ``task`` and raises its exception, if any; an exception in the body
    (Ctrl-C included) stops ``task`` at once. Where forking is not possible,
    or not safe because other threads are running (a forked thread's locks
    stay held), ``task`` runs first, in this process.
    """
    if not _can_fork():
        task()
        yield
        return
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: whatever happens, it ends here, never in the caller's code
        status = 1
        try:
            os.close(read_end)
            try:
                task()
                status = 0
            except BaseException as exc:
                data = memoryview(_pickled(exc))
                while data:
                    data = data[os.write(write_end, data) :]
        finally:
            os._exit(status)
    os.close(write_end)
    reaped = False
    try:
        yield
        chunks = []
        while chunk := os.read(read_end, 1 << 16):
            chunks.append(chunk)
        _, status = os.waitpid(pid, 0)
        reaped = True
    except BaseException:
        # An error or Ctrl-C here, in the body or while waiting: the task must not
        # go on writing into a folder that is about to be removed.
        if not reaped:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        raise
    finally:
        os.close(read_end)
    error = b"".join(chunks)
    if error:
        raise _unpickled(error)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        how = f"was killed by signal {-code}" if code < 0 else f"ended with status {code}"
        raise OSError(f"the process writing part of the outputs {how}")


def _can_fork() -> bool:
    return hasattr(os, "fork") and threading.active_count() == 1


def _pickled(exc: BaseException) -> bytes:
    try:
        data = pickle.dumps(exc)
        pickle.loads(data)  # exceptions with their own __init__ may not load
    except Exception:
        kind = XbkgError if isinstance(exc, XbkgError) else OSError
        data = pickle.dumps(kind(f"{type(exc).__name__}: {exc}"))
    return data


def _unpickled(data: bytes) -> BaseException:
    error = pickle.loads(data)
    return error if isinstance(error, BaseException) else OSError(str(error))

"""Outputs that appear complete or not at all, and never replace files unasked.

Every command that writes files goes through :func:`all_or_nothing`: the files
are written into a hidden folder inside the output folder and moved into place
only when all are complete. Files being replaced are set aside until every new
file is in place and put back if anything fails, so an error, a full disk,
Ctrl-C or SIGTERM leave the output folder complete and new, or as it was.

A job killed outright (SIGKILL) cannot clean up, and leaves its hidden folder
behind. The folder's name says which process on which host made it, so a
later job writing into the same output folder removes the folders of
processes of its host that no longer run, with a warning, and refuses to write
next to one whose process may still be writing.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from xbkg.errors import OutputError, OutputExistsError, XbkgError, XbkgWarning, describe

__all__ = ["all_or_nothing", "check_outputs", "publish"]


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


def check_outputs(
    out_dir: Path, names: Sequence[str], overwrite: bool, *, empty_folder: bool = True
) -> None:
    """Refuse to write into a folder with files in it, unless ``overwrite``.

    With ``empty_folder=False`` only files named ``names`` are in the way
    (figures added to an output folder). The staging folders of killed jobs
    (:func:`all_or_nothing`) are not in the way: they are removed, with a
    warning.

    Raises
    ------
    OutputExistsError
        If ``out_dir`` holds anything (or, with ``empty_folder=False``, one of
        ``names``) and ``overwrite`` is false.
    OutputError
        If ``out_dir`` or one of ``names`` in it is in the way (a file where a
        folder must be, a folder where a file must be), or if another xbkg
        process may be writing into ``out_dir`` (its staging folder is there).
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: exists and is not a folder; choose another output folder")
    blocked = [n for n in names if (out_dir / n).is_dir()]
    if blocked:
        raise OutputError(f"{out_dir}: {blocked} are folders; move them away")
    if out_dir.is_dir():
        _clear_stages(out_dir)
    if out_dir.is_dir() and not overwrite:
        taken = [n for n in names if (out_dir / n).exists()]
        present = sorted(p.name for p in out_dir.iterdir()) if empty_folder else taken
        if present:
            what = f"would overwrite {taken}" if taken else f"is not empty ({present[:3]} ...)"
            raise OutputExistsError(
                f"{out_dir}: {what}; choose a new or empty folder, or pass overwrite=True "
                "to replace xbkg's files in it"
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

    The folder, ``.xbkg-PID@HOST-XXXXXXXX``, names the process writing and its
    host: should the process be killed before it can remove the folder, the
    next job writing into ``out_dir`` on that host removes it
    (:func:`check_outputs`).

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
        prefix = f"{STAGE_PREFIX}{os.getpid()}@{_host()}-"
        stage = Path(tempfile.mkdtemp(prefix=prefix, dir=out_dir))
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


#: Start of the names of the staging folders of :func:`all_or_nothing`.
STAGE_PREFIX = ".xbkg-"
#: ``.xbkg-PID@HOST-XXXXXXXX``; the random end (``tempfile.mkdtemp``) holds no dash.
_STAGE_NAME = re.compile(r"\.xbkg-(?P<pid>[0-9]+)@(?P<host>[A-Za-z0-9._-]+)-[a-z0-9_]+")


def _host() -> str:
    """This host's name, as it goes into the name of a staging folder."""
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())[:64] or "unknown"


@dataclass(frozen=True)
class _Stage:
    """A staging folder of :func:`all_or_nothing` and the process that made it."""

    path: Path
    pid: int
    host: str

    @classmethod
    def find(cls, out_dir: Path) -> list[_Stage]:
        """The staging folders in ``out_dir`` (hidden folders of other names are not)."""
        stages = []
        for path in sorted(out_dir.glob(STAGE_PREFIX + "*")):
            match = _STAGE_NAME.fullmatch(path.name)
            if match and path.is_dir():
                stages.append(cls(path, int(match["pid"]), match["host"]))
        return stages

    def abandoned(self) -> bool:
        """Whether the process that made the folder has ended: it was on this host and is gone.

        A process of another host cannot be checked, nor one on Windows, where
        signal 0 is Ctrl-C: those count as running. A new process given the
        same number counts as running too: the folder is then left alone, and
        reported, rather than removed under a job that may still be writing.
        """
        if self.host != _host() or sys.platform == "win32":
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except OSError:  # a process of another user
            return False
        return False


def _clear_stages(out_dir: Path) -> None:
    """Remove the staging folders of killed jobs; refuse a folder other jobs may write into.

    Raises
    ------
    OutputError
        If a staging folder of a process that may be running is in ``out_dir``,
        if one of a killed job holds files it had set aside (the job was
        killed while moving its files into place: ``out_dir`` may mix old and
        new files), or if one cannot be removed.
    """
    for stage in _Stage.find(out_dir):
        where = f"xbkg process {stage.pid} on host {stage.host}"
        if not stage.abandoned():
            checked = "" if stage.host == _host() else ", which cannot be checked from here"
            raise OutputError(
                f"{out_dir}: {where}{checked} may be writing into this folder (its staging "
                f"folder {stage.path.name} is there); wait for it to end or choose another "
                "folder. If no such job is running, remove that folder"
            )
        previous = stage.path / ".previous"
        if previous.is_dir() and any(previous.iterdir()):
            raise OutputError(
                f"{out_dir}: {where} was killed while moving its files into place, so the "
                f"folder may hold both old and new files; the files it replaced are in "
                f"{previous}: move back what you need, then remove {stage.path}"
            )
        shutil.rmtree(stage.path, ignore_errors=True)
        if stage.path.exists():
            raise OutputError(
                f"{stage.path}: the staging folder of {where}, which no longer runs, cannot be "
                "removed; remove it"
            )
        warnings.warn(
            f"{out_dir}: removed {stage.path.name}, left behind by {where}, which was killed "
            "before it finished",
            XbkgWarning,
            stacklevel=3,
        )

"""The exceptions xbkg raises on bad input, bad options and unwritable outputs.

Every error a user can cause derives from :class:`XbkgError`, and also from
the builtin exception a Python user would expect (``ValueError`` for bad
values, ``OSError`` for outputs), so that existing ``except ValueError``
code keeps working. Messages name the file (and the run), say what is wrong
and what to do about it.

- :class:`DataStoreError`: a data store, index or event file that cannot be used;
- :class:`RunsFailedError`: runs that cannot be used, every one listed;
- :class:`CatalogError`: a source catalogue or region list that cannot be used;
- :class:`ConfigError`: options that cannot work (edges, groups, columns, ...);
- :class:`OutputError`: outputs that cannot be written;
- :class:`OutputExistsError`: outputs in the way, refused without ``overwrite``.

Warnings that do not stop a job (runs not used, ...) are :class:`XbkgWarning`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

__all__ = [
    "CatalogError",
    "ConfigError",
    "DataStoreError",
    "OutputError",
    "OutputExistsError",
    "RunsFailedError",
    "XbkgError",
    "XbkgWarning",
    "describe",
]


class XbkgError(Exception):
    """Base class of the errors xbkg reports to users."""


class XbkgWarning(UserWarning):
    """Something the user should know that does not stop the job (unused runs, ...)."""


class DataStoreError(XbkgError, ValueError):
    """A data store, index or event file that cannot be used as it is."""


class CatalogError(XbkgError, ValueError):
    """A source catalogue or region list that cannot be used as it is."""


class ConfigError(XbkgError, ValueError):
    """Options that cannot work: binning, groups, unknown columns, ..."""


class OutputError(XbkgError, OSError):
    """Outputs that cannot be written (folder not writable, disk full, ...)."""


class OutputExistsError(OutputError, FileExistsError):
    """Outputs that exist already; pass ``overwrite`` to replace them."""


class RunsFailedError(DataStoreError):
    """Runs that could not be used, with the reason for each.

    Parameters
    ----------
    failures
        OBS_ID -> message (file and what is wrong).
    skipping
        The runs were being skipped (``--skip-bad-runs``) and none was left.
    """

    def __init__(self, failures: Mapping[int, str], *, skipping: bool = False) -> None:
        self.failures = dict(failures)
        self.skipping = skipping
        lines = [f"{plural(len(self.failures), 'run')} could not be used:"]
        lines += [f"  {message}" for message in self.failures.values()]
        lines.append(
            "no run is left to build from: fix the runs or select others"
            if skipping
            else "fix or deselect these runs (select_runs), or pass skip_bad_runs=True to build "
            "without them"
        )
        super().__init__("\n".join(lines))

    def __reduce__(self) -> tuple[object, ...]:
        # Sent back from worker processes: rebuilt from the failures, not the message.
        return (functools.partial(RunsFailedError, skipping=self.skipping), (self.failures,))


class BackgroundWarning(XbkgWarning):
    """Something the user should know about the model, e.g. a run given another group's model."""


def describe(exc: BaseException) -> str:
    """``Type: first line of the message`` of a library's exception, for our messages.

    Library messages can run over many lines (astropy lists every table
    format it knows); one line per problem keeps the command's output readable.
    """
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def plural(n: int, word: str) -> str:
    """``"1 run"``, ``"2 runs"``: a count and its noun, for messages."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"

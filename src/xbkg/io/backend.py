"""xarray backend: ``xr.open_dataset(path, engine="gadf")`` for GADF background files.

Registered through the ``xarray.backends`` entry point of the package, so
that any GADF ``bkg_2d`` or ``bkg_3d`` table (ours, the GADF examples, files
written by Gammapy, the H.E.S.S. DR1 per-run templates) opens as a Dataset::

    ds = xr.open_dataset("smooth_background_2D_group_000_table.fits.gz", engine="gadf")
    ds = xr.open_dataset("hess_dl3_dr1_obs_id_020136.fits.gz", engine="gadf", hdu="bkg")

The Dataset holds one variable ``rate`` (s-1 MeV-1 sr-1) along ``(energy,
offset)`` or ``(energy, fov_lon, fov_lat)``, with ``<dim>_lo``/``<dim>_hi`` edge
coordinates with units, and the header keywords as attributes; reading is
done by :func:`xbkg.io.gadf.read_bkg`, whose ``hdu`` and ``axis_order``
options are accepted. Because the file has no counts, the
:mod:`xbkg.products` of such a Dataset weight the bins by solid angle x
energy width (uniform exposure).

xarray imports every installed backend module when it has to choose an
engine, so this module imports nothing heavy at import time. Being part of
xbkg, importing it registers the ``ds.bkg`` accessor (``import xbkg`` does).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import xarray as xr
from xarray.backends import BackendEntrypoint

__all__ = ["GadfBackendEntrypoint", "open_bkg_dataset"]

_SUFFIXES = (".fits", ".fits.gz", ".fit", ".fit.gz", ".fts", ".fts.gz")


def open_bkg_dataset(
    path: str | os.PathLike[str],
    hdu: str | int | None = None,
    *,
    axis_order: Sequence[str] | None = None,
) -> xr.Dataset:
    """Read a GADF background table as a Dataset with a ``rate`` variable.

    Parameters
    ----------
    path
        FITS file (optionally gzip-compressed).
    hdu, axis_order
        As for :func:`xbkg.io.gadf.read_bkg`.

    Returns
    -------
    xarray.Dataset
        ``rate`` with edges and units; the header keywords in ``attrs`` of
        both the Dataset and the variable.
    """
    from xbkg.io.gadf import read_bkg

    rate = read_bkg(path, hdu, axis_order=axis_order)
    ds = rate.rename("rate").to_dataset()
    ds.attrs = {k: v for k, v in rate.attrs.items() if k not in ("units", "long_name")}
    return ds


class GadfBackendEntrypoint(BackendEntrypoint):
    """xarray backend for GADF ``bkg_2d``/``bkg_3d`` FITS tables (``engine="gadf"``)."""

    description = "GADF background tables (bkg_2d, bkg_3d) as Datasets with bin edges (xbkg)"
    url = "https://gamma-astro-data-formats.readthedocs.io"
    open_dataset_parameters = ("filename_or_obj", "drop_variables", "hdu", "axis_order")

    def open_dataset(
        self,
        filename_or_obj: Any,
        *,
        drop_variables: str | Iterable[str] | None = None,
        hdu: str | int | None = None,
        axis_order: Sequence[str] | None = None,
    ) -> xr.Dataset:
        """Open a background table; see :func:`open_bkg_dataset`."""
        if not isinstance(filename_or_obj, (str, os.PathLike)):
            raise TypeError(
                f"the gadf engine opens files by path, got {type(filename_or_obj).__name__}"
            )
        ds = open_bkg_dataset(filename_or_obj, hdu, axis_order=axis_order)
        if drop_variables is not None:
            names = [drop_variables] if isinstance(drop_variables, str) else list(drop_variables)
            ds = ds.drop_vars(names, errors="ignore")
        return ds

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        """FITS file names: the engine can then be left out of ``open_dataset``."""
        if not isinstance(filename_or_obj, (str, os.PathLike)):
            return False
        return str(filename_or_obj).lower().endswith(_SUFFIXES)

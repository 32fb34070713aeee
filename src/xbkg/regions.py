"""Exclusion regions as data: a list of circles on the sky.

A *region list* is an :class:`xarray.Dataset` with one dimension ``source``
and the variables ``ra``, ``dec``, ``radius`` (deg, ICRS) and ``name``. It is
made from user circles (:func:`exclusion_circles`), read from a catalogue
(:func:`xbkg.io.catalog.read_catalog`), joined (:func:`combine_regions`), used
by the geometry of :mod:`xbkg.exclusion` and stored in the archive next to the
model it shaped.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr
from numpy.typing import ArrayLike, NDArray

from xbkg.errors import CatalogError

__all__ = [
    "SOURCE_DIM",
    "check_regions",
    "combine_regions",
    "describe_rows",
    "exclusion_circles",
    "make_regions",
    "region_arrays",
]

#: Dimension of a region list.
SOURCE_DIM = "source"

_ANGLE_ATTRS = {"units": "deg"}


def make_regions(
    ra: NDArray[np.float64],
    dec: NDArray[np.float64],
    radius: NDArray[np.float64],
    name: Sequence[str],
    attrs: dict[str, str],
) -> xr.Dataset:
    return xr.Dataset(
        {
            "ra": (SOURCE_DIM, ra, {**_ANGLE_ATTRS, "long_name": "right ascension (ICRS)"}),
            "dec": (SOURCE_DIM, dec, {**_ANGLE_ATTRS, "long_name": "declination (ICRS)"}),
            "radius": (SOURCE_DIM, radius, {**_ANGLE_ATTRS, "long_name": "exclusion radius"}),
            "name": (SOURCE_DIM, np.asarray(list(name), dtype=str), {"long_name": "source name"}),
        },
        attrs={"frame": "icrs", **attrs},
    )


def check_regions(regions: xr.Dataset) -> None:
    if not isinstance(regions, xr.Dataset):
        raise TypeError(f"a region list must be an xarray.Dataset, got {type(regions).__name__}")
    missing = [v for v in ("ra", "dec", "radius", "name") if v not in regions.variables]
    if missing or set(regions.dims) - {SOURCE_DIM}:
        raise CatalogError(
            f"not a region list: need variables ra, dec, radius, name along dimension "
            f"{SOURCE_DIM!r}; missing {missing}, dimensions {list(regions.dims)}"
        )


def region_arrays(
    regions: xr.Dataset,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """``ra, dec, radius`` of a region list as float64 numpy arrays in deg."""
    check_regions(regions)
    return (
        np.asarray(regions["ra"].values, dtype=np.float64),
        np.asarray(regions["dec"].values, dtype=np.float64),
        np.asarray(regions["radius"].values, dtype=np.float64),
    )


def describe_rows(index: NDArray[np.intp], names: Sequence[str], limit: int = 10) -> str:
    """Describe offending rows by index and name for error messages."""
    shown = ", ".join(f"{i} ({names[i]!r})" for i in index[:limit])
    more = f" and {index.size - limit} more" if index.size > limit else ""
    return shown + more


def exclusion_circles(
    ra: ArrayLike,
    dec: ArrayLike,
    radius: ArrayLike,
    name: str | Sequence[str] | None = None,
) -> xr.Dataset:
    """Region list from user circles.

    Parameters
    ----------
    ra
        Right ascensions of the centres in deg (ICRS), wrapped into [0, 360);
        a scalar or a 1-D sequence.
    dec
        Declinations of the centres in deg (ICRS); as many as ``ra``.
    radius
        Radii in deg, scalar (same for all circles) or one per circle; each must
        satisfy ``0 < radius < 180``.
    name
        One name per circle (a single string for a single circle); default
        ``"circle <i>"``.

    Returns
    -------
    xarray.Dataset
        Region list with dimension ``source``.

    Raises
    ------
    xbkg.errors.CatalogError
        Naming the offending circles, for non-finite values, ``|dec| > 90`` or a
        radius outside ``(0, 180)`` (a ``ValueError`` subclass).
    """
    ra_a = np.atleast_1d(np.asarray(ra, dtype=np.float64))
    dec_a = np.atleast_1d(np.asarray(dec, dtype=np.float64))
    if ra_a.ndim != 1 or ra_a.shape != dec_a.shape:
        raise CatalogError(
            f"ra and dec must be 1-D of equal length, got {ra_a.shape}, {dec_a.shape}"
        )
    try:
        rad_a = np.broadcast_to(np.asarray(radius, dtype=np.float64), ra_a.shape).copy()
    except ValueError:
        raise CatalogError(
            f"radius must be a scalar or one value per circle ({ra_a.size}), "
            f"got shape {np.shape(radius)}"
        ) from None
    if name is None:
        names = [f"circle {i}" for i in range(ra_a.size)]
    else:
        names = [name] if isinstance(name, str) else [str(n) for n in name]
        if len(names) != ra_a.size:
            raise CatalogError(f"got {len(names)} names for {ra_a.size} circles")
    problems = []
    bad = np.flatnonzero(~(np.isfinite(ra_a) & np.isfinite(dec_a) & np.isfinite(rad_a)))
    if bad.size:
        problems.append(f"non-finite values in circles {describe_rows(bad, names)}")
    bad = np.flatnonzero(np.abs(dec_a) > 90)
    if bad.size:
        problems.append(f"|dec| > 90 deg in circles {describe_rows(bad, names)}")
    bad = np.flatnonzero((rad_a <= 0) | (rad_a >= 180))
    if bad.size:
        problems.append(f"radius not in (0, 180) deg in circles {describe_rows(bad, names)}")
    if problems:
        raise CatalogError("invalid exclusion circles: " + "; ".join(problems))
    return make_regions(np.mod(ra_a, 360.0), dec_a, rad_a, names, {})


def combine_regions(*regions: xr.Dataset) -> xr.Dataset:
    """Concatenate region lists along ``source``; no arguments give an empty list.

    Attributes that differ between the inputs are dropped. Overlapping or
    duplicate circles are kept: the union is taken where it matters
    (:func:`outside_regions`, :func:`ring_excluded_fraction`).
    """
    for r in regions:
        check_regions(r)
    if not regions:
        empty = np.empty(0, dtype=np.float64)
        return make_regions(empty, empty, empty, [], {})
    variables = ["ra", "dec", "radius", "name"]
    return xr.concat(
        [r[variables] for r in regions], dim=SOURCE_DIM, combine_attrs="drop_conflicts"
    )

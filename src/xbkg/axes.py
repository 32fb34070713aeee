"""Binned axes: edges, CF bounds, widths and exact solid angles.

Bin edges are data. A binned dimension ``x`` is carried as a centre coordinate
``x`` plus two coordinates ``x_lo`` and ``x_hi`` along ``x`` holding the lower
and upper edge of every bin. Edges are recovered from them, never from centres.

Why not a CF ``x_bounds`` variable of shape ``(x, bounds)`` in memory? xarray
drops such a coordinate whenever a variable is taken out of its Dataset
(``ds["rate"]``), because a DataArray may only carry coordinates along its own
dimensions; the edges would then be lost exactly where users need them (plots,
slices). ``x_lo``/``x_hi`` follow every selection and arithmetic. The netCDF
archive converts them to CF bounds on disk and back on load
(:func:`to_cf_bounds`, :func:`from_cf_bounds`).
"""

from __future__ import annotations

import operator
import reprlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import ArrayLike, NDArray

from xbkg.conventions import (
    BOUNDS_DIM,
    DEFAULT_ENERGY_BINS,
    DEFAULT_ENERGY_RANGE,
    DEFAULT_FOV_BINS,
    DEFAULT_FOV_HALF_WIDTH,
    DEFAULT_OFFSET_EDGES,
    DEFAULT_OFFSET_MAX,
    ENERGY_DIM,
    ENERGY_UNIT,
    FOV_LAT_DIM,
    FOV_LON_DIM,
    FOV_UNIT,
    MEV_PER_TEV,
    OFFSET_DIM,
    OFFSET_UNIT,
)
from xbkg.errors import ConfigError

__all__ = [
    "bin_index",
    "binned_coords",
    "edges",
    "energy_edges",
    "energy_width_mev",
    "fov_coords",
    "fov_edges",
    "from_cf_bounds",
    "offset_edges",
    "ring_solid_angle",
    "to_cf_bounds",
    "validate_edges",
]


def energy_edges(
    emin: float = DEFAULT_ENERGY_RANGE[0],
    emax: float = DEFAULT_ENERGY_RANGE[1],
    nbins: int = DEFAULT_ENERGY_BINS,
) -> NDArray[np.float64]:
    """Logarithmically spaced energy edges in TeV (``nbins`` bins, ``nbins + 1`` edges).

    Raises
    ------
    xbkg.errors.ConfigError
        Unless ``0 < emin < emax`` are finite and ``nbins >= 1`` is an integer.
    """
    lo, hi = _finite_float(emin, "emin"), _finite_float(emax, "emax")
    if not (0 < lo < hi):
        raise ConfigError(
            f"energy range must satisfy 0 < emin < emax, got emin={emin}, emax={emax}"
        )
    n = _count(nbins, "nbins", 1)
    values = np.geomspace(lo, hi, n + 1)
    if np.any(np.diff(values) <= 0):
        raise ConfigError(
            f"{n} energy bins between {lo} and {hi} TeV are too narrow to be told apart in "
            "floating point; use fewer bins"
        )
    return values


def offset_edges(
    offset_max: float = DEFAULT_OFFSET_MAX, n_edges: int = DEFAULT_OFFSET_EDGES
) -> NDArray[np.float64]:
    """Offset edges in deg spaced in offset squared, so each ring has the same area.

    ``n_edges`` counts edges, as Gammapy 0.6's ``sqrt_space`` did: the default
    100 edges give 99 rings out to 2.5 deg.

    Raises
    ------
    xbkg.errors.ConfigError
        Unless ``0 < offset_max <= 180`` (deg) and ``n_edges >= 2`` is an integer.
    """
    o_max = _finite_float(offset_max, "offset_max")
    if not 0 < o_max <= 180:
        raise ConfigError(f"need 0 < offset_max <= 180 deg, got {offset_max}")
    n = _count(n_edges, "n_edges", 2)
    values = np.sqrt(np.linspace(0.0, o_max**2, n))
    if np.any(np.diff(values) <= 0):
        raise ConfigError(
            f"{n} offset edges up to {o_max} deg are too close to be told apart in floating "
            "point; use fewer edges or a larger offset_max"
        )
    return values


def _finite_float(value: Any, what: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number, got {value!r}") from None
    if not np.isfinite(out):
        raise ConfigError(f"{what} must be finite, got {value!r}")
    return out


def _count(value: Any, what: str, minimum: int) -> int:
    try:
        n = operator.index(value)
    except TypeError:
        raise ConfigError(f"{what} must be an integer, got {value!r}") from None
    if isinstance(value, bool) or n < minimum:
        raise ConfigError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return n


def bin_index(values: NDArray[np.float64], bin_edges: NDArray[np.float64]) -> NDArray[np.intp]:
    """Half-open bin index ``bin_edges[i] <= v < bin_edges[i+1]`` of each value; -1 outside."""
    index = np.searchsorted(bin_edges, values, side="right") - 1
    index[(index >= len(bin_edges) - 1) | ~np.isfinite(values)] = -1
    return index


def validate_edges(
    values: ArrayLike, name: str, *, positive: bool = False, signed: bool = False
) -> NDArray[np.float64]:
    """Return ``values`` as a float array of strictly increasing, finite bin edges.

    Edges must not be negative, unless ``signed`` (field-of-view axes cross
    the pointing); with ``positive`` they must be above 0 (energies).

    Raises
    ------
    xbkg.errors.ConfigError
        Naming the axis and what is wrong, if the edges are not usable (a
        ``ValueError`` subclass).
    """
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{name} edges must be a 1-D sequence of numbers, got {reprlib.repr(values)}"
        ) from None
    if arr.ndim != 1 or arr.size < 2:
        raise ConfigError(
            f"{name} edges must be a 1-D sequence of at least 2 values, got {arr.tolist()}"
        )
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{name} edges must be finite, got {arr.tolist()}")
    if np.any(np.diff(arr) <= 0):
        raise ConfigError(f"{name} edges must be strictly increasing, got {arr.tolist()}")
    if positive and arr[0] <= 0:
        raise ConfigError(f"{name} edges must be positive, got {arr.tolist()}")
    if not (positive or signed) and arr[0] < 0:
        raise ConfigError(f"{name} edges must not be negative, got {arr.tolist()}")
    return arr


def _edge_coords(
    dim: str, lo: NDArray[np.float64], hi: NDArray[np.float64], unit: str, long_name: str
) -> dict[str, xr.Variable]:
    return {
        f"{dim}_lo": xr.Variable(dim, lo, {"units": unit, "long_name": f"{long_name}, lower edge"}),
        f"{dim}_hi": xr.Variable(dim, hi, {"units": unit, "long_name": f"{long_name}, upper edge"}),
    }


def _axis_coords(
    dim: str, edges_: NDArray[np.float64], centres: NDArray[np.float64], unit: str, long_name: str
) -> dict[str, xr.Variable]:
    coords = {dim: xr.Variable(dim, centres, attrs={"units": unit, "long_name": long_name})}
    coords.update(_edge_coords(dim, edges_[:-1], edges_[1:], unit, long_name))
    return coords


def binned_coords(
    energy: ArrayLike | None = None, offset: ArrayLike | None = None
) -> dict[str, xr.Variable]:
    """Coordinates of the energy and offset dimensions, with bin edges.

    Energy centres are logarithmic (``sqrt(lo * hi)``), offset centres linear.

    Parameters
    ----------
    energy
        Energy edges in TeV (default: :func:`energy_edges`).
    offset
        Offset edges in deg (default: :func:`offset_edges`).
    """
    e = validate_edges(energy_edges() if energy is None else energy, "energy", positive=True)
    o = validate_edges(offset_edges() if offset is None else offset, "offset")
    coords = _axis_coords(
        ENERGY_DIM, e, np.sqrt(e[:-1] * e[1:]), ENERGY_UNIT, "reconstructed energy"
    )
    coords.update(
        _axis_coords(OFFSET_DIM, o, 0.5 * (o[:-1] + o[1:]), OFFSET_UNIT, "field-of-view offset")
    )
    return coords


def edges(obj: xr.Dataset | xr.DataArray, dim: str) -> NDArray[np.float64]:
    """Bin edges of ``dim``, read from its ``<dim>_lo`` / ``<dim>_hi`` coordinates.

    Raises
    ------
    KeyError
        If ``obj`` carries no edges for ``dim`` (edges are never guessed from centres).
    ValueError
        If the bins are not contiguous (edges of a non-contiguous selection).
    """
    lo, hi = f"{dim}_lo", f"{dim}_hi"
    if lo not in obj.coords or hi not in obj.coords:
        raise KeyError(
            f"{dim!r} has no bin edges ({lo!r}, {hi!r} coordinates); edges cannot be recovered "
            "from centres. Build the axis with xbkg.axes.binned_coords."
        )
    lo_v, hi_v = obj[lo].values, obj[hi].values
    if lo_v.size > 1 and not np.array_equal(lo_v[1:], hi_v[:-1]):
        raise ValueError(f"the {dim!r} bins are not contiguous, so they have no single edge array")
    return np.append(lo_v, hi_v[-1:])


def to_cf_bounds(ds: xr.Dataset) -> xr.Dataset:
    """Replace ``<dim>_lo``/``<dim>_hi`` by a CF bounds variable ``<dim>_bounds`` (for files)."""
    out = ds.copy()
    for dim in list(ds.dims):
        lo, hi = f"{dim}_lo", f"{dim}_hi"
        if lo in ds.coords and hi in ds.coords:
            name = f"{dim}_bounds"
            bounds = xr.concat([ds[lo], ds[hi]], dim=BOUNDS_DIM)
            out.coords[name] = bounds.transpose(dim, BOUNDS_DIM)
            out[name].attrs = {"units": ds[lo].attrs.get("units", "")}
            out = out.drop_vars([lo, hi])
            out[dim].attrs["bounds"] = name
    return out


def from_cf_bounds(ds: xr.Dataset) -> xr.Dataset:
    """Inverse of :func:`to_cf_bounds`: CF bounds back to ``<dim>_lo``/``<dim>_hi``."""
    out = ds.copy()
    for dim in map(str, ds.dims):
        if dim not in ds.coords or "bounds" not in ds[dim].attrs:
            continue
        name = ds[dim].attrs["bounds"]
        if name not in ds.variables:
            continue
        b = ds[name].transpose(dim, ...)
        long_name = ds[dim].attrs.get("long_name", dim)
        units = ds[dim].attrs.get("units", b.attrs.get("units", ""))
        out = out.drop_vars(name)
        out = out.assign_coords(_edge_coords(dim, b.values[:, 0], b.values[:, 1], units, long_name))
        attrs = dict(out[dim].attrs)
        attrs.pop("bounds")
        out[dim].attrs = attrs
    if BOUNDS_DIM in out.dims and not any(BOUNDS_DIM in v.dims for v in out.variables.values()):
        out = out.drop_dims(BOUNDS_DIM)
    return out


def energy_width_mev(obj: xr.Dataset | xr.DataArray) -> xr.DataArray:
    """Width of each energy bin in MeV (edges are stored in TeV)."""
    e = edges(obj, ENERGY_DIM)
    return xr.DataArray(
        np.diff(e) * MEV_PER_TEV,
        dims=ENERGY_DIM,
        coords={ENERGY_DIM: obj[ENERGY_DIM]},
        attrs={"units": "MeV", "long_name": "energy bin width"},
    )


def ring_solid_angle(
    obj: xr.Dataset | xr.DataArray | None = None,
    *,
    offset: Sequence[float] | NDArray[np.float64] | None = None,
    flat: bool = False,
) -> xr.DataArray:
    """Solid angle in sr of each offset ring.

    The exact value for a ring between offsets ``t1 < t2`` on the sphere is
    ``2 pi (cos t1 - cos t2)``. With ``flat=True`` the flat-sky area
    ``pi (t2**2 - t1**2)`` is returned instead (Gammapy 0.6's approximation,
    0.016 % smaller at 2.5 deg).

    Parameters
    ----------
    obj
        Dataset or DataArray with an ``offset`` dimension and bounds.
    offset
        Offset edges in deg, instead of ``obj``.
    flat
        Use the flat-sky approximation.
    """
    if obj is not None:
        o = edges(obj, OFFSET_DIM)
        coords: dict[str, Any] = {OFFSET_DIM: obj[OFFSET_DIM]}
    elif offset is not None:
        o = validate_edges(offset, "offset")
        coords = {OFFSET_DIM: 0.5 * (o[:-1] + o[1:])}
    else:
        raise TypeError("give either a Dataset/DataArray or offset edges")
    t = np.deg2rad(o)
    if flat:
        omega = np.pi * np.diff(t**2)
    else:
        # cos(t1) - cos(t2) = 2 sin((t2 + t1)/2) sin((t2 - t1)/2): no cancellation for thin rings.
        omega = 4 * np.pi * np.sin(0.5 * (t[1:] + t[:-1])) * np.sin(0.5 * np.diff(t))
    return xr.DataArray(
        omega, dims=OFFSET_DIM, coords=coords, attrs={"units": "sr", "long_name": "solid angle"}
    )


def fov_edges(
    half_width: float = DEFAULT_FOV_HALF_WIDTH, nbins: int = DEFAULT_FOV_BINS
) -> NDArray[np.float64]:
    """Field-of-view edges in deg: ``nbins`` equal bins from ``-half_width`` to ``half_width``.

    Raises
    ------
    xbkg.errors.ConfigError
        Unless ``0 < half_width <= 90`` (deg) and ``nbins >= 1`` is an integer.
    """
    width = _finite_float(half_width, "half_width")
    if not 0 < width <= 90:
        raise ConfigError(f"need 0 < half_width <= 90 deg, got {half_width}")
    return np.linspace(-width, width, _count(nbins, "nbins", 1) + 1)


def fov_coords(
    fov_lon: ArrayLike | None = None, fov_lat: ArrayLike | None = None
) -> dict[str, xr.Variable]:
    """Coordinates of the field-of-view dimensions ``fov_lon`` and ``fov_lat``, with bin edges.

    Centres are linear. Edges may be negative (the axes cross the pointing).

    Parameters
    ----------
    fov_lon, fov_lat
        Edges in deg (default: :func:`fov_edges`).

    Raises
    ------
    xbkg.errors.ConfigError
        If the edges are not finite and strictly increasing.
    """
    coords: dict[str, xr.Variable] = {}
    for dim, values, long_name in (
        (FOV_LON_DIM, fov_lon, "field-of-view longitude"),
        (FOV_LAT_DIM, fov_lat, "field-of-view latitude"),
    ):
        e = validate_edges(fov_edges() if values is None else values, dim, signed=True)
        coords.update(_axis_coords(dim, e, 0.5 * (e[:-1] + e[1:]), FOV_UNIT, long_name))
    return coords

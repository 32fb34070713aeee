"""Binned axes: edges, CF bounds, widths and exact solid angles.

Bin edges are data. A binned dimension ``x`` is carried as a centre coordinate
``x`` (with ``attrs["bounds"] = "x_bounds"``) plus a ``x_bounds`` coordinate of
shape ``(x, bounds)`` holding the lower and upper edge of every bin, as the CF
conventions prescribe. Edges are recovered from the bounds, never from centres.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr
from numpy.typing import ArrayLike, NDArray

from xbkg.conventions import (
    BOUNDS_DIM,
    DEFAULT_ENERGY_BINS,
    DEFAULT_ENERGY_RANGE,
    DEFAULT_OFFSET_EDGES,
    DEFAULT_OFFSET_MAX,
    ENERGY_DIM,
    ENERGY_UNIT,
    MEV_PER_TEV,
    OFFSET_DIM,
    OFFSET_UNIT,
)

__all__ = [
    "binned_coords",
    "bounds_name",
    "edges",
    "energy_edges",
    "energy_width_mev",
    "offset_edges",
    "ring_solid_angle",
    "validate_edges",
]


def energy_edges(
    emin: float = DEFAULT_ENERGY_RANGE[0],
    emax: float = DEFAULT_ENERGY_RANGE[1],
    nbins: int = DEFAULT_ENERGY_BINS,
) -> NDArray[np.float64]:
    """Logarithmically spaced energy edges in TeV (``nbins`` bins, ``nbins + 1`` edges)."""
    if not (0 < emin < emax):
        raise ValueError(f"energy range must satisfy 0 < emin < emax, got emin={emin}, emax={emax}")
    return np.geomspace(emin, emax, nbins + 1)


def offset_edges(
    offset_max: float = DEFAULT_OFFSET_MAX, n_edges: int = DEFAULT_OFFSET_EDGES
) -> NDArray[np.float64]:
    """Offset edges in deg spaced in offset squared, so each ring has the same area.

    ``n_edges`` counts edges, as Gammapy 0.6's ``sqrt_space`` did: the default
    100 edges give 99 rings out to 2.5 deg.
    """
    if offset_max <= 0 or n_edges < 2:
        raise ValueError(f"need offset_max > 0 and n_edges >= 2, got {offset_max}, {n_edges}")
    return np.sqrt(np.linspace(0.0, offset_max**2, n_edges))


def validate_edges(values: ArrayLike, name: str, *, positive: bool = False) -> NDArray[np.float64]:
    """Return ``values`` as a float array of strictly increasing, finite bin edges.

    Raises
    ------
    ValueError
        Naming the axis and what is wrong, if the edges are not usable.
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size < 2:
        raise ValueError(f"{name} edges must be a 1-D sequence of at least 2 values, got {arr!r}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} edges must be finite, got {arr!r}")
    if np.any(np.diff(arr) <= 0):
        raise ValueError(f"{name} edges must be strictly increasing, got {arr!r}")
    if positive and arr[0] <= 0:
        raise ValueError(f"{name} edges must be positive, got {arr!r}")
    if not positive and arr[0] < 0:
        raise ValueError(f"{name} edges must not be negative, got {arr!r}")
    return arr


def bounds_name(dim: str) -> str:
    """Name of the CF bounds coordinate of a binned dimension."""
    return f"{dim}_bounds"


def _axis_coords(
    dim: str, edges_: NDArray[np.float64], centres: NDArray[np.float64], unit: str, long_name: str
) -> dict[str, xr.Variable]:
    bname = bounds_name(dim)
    bounds = np.stack([edges_[:-1], edges_[1:]], axis=-1)
    return {
        dim: xr.Variable(
            dim,
            centres,
            attrs={"units": unit, "long_name": long_name, "bounds": bname},
        ),
        bname: xr.Variable(
            (dim, BOUNDS_DIM), bounds, attrs={"units": unit, "long_name": f"{long_name} bin edges"}
        ),
    }


def binned_coords(
    energy: ArrayLike | None = None, offset: ArrayLike | None = None
) -> dict[str, xr.Variable]:
    """Coordinates of the energy and offset dimensions, with CF bounds.

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
    """Bin edges of ``dim``, read from its CF bounds coordinate.

    Raises
    ------
    KeyError
        If ``obj`` has no bounds for ``dim`` (edges are never guessed from centres).
    """
    bname = obj[dim].attrs.get("bounds", bounds_name(dim))
    if bname not in obj.coords:
        raise KeyError(
            f"{dim!r} has no bounds coordinate {bname!r}; bin edges cannot be recovered from "
            "centres. Build the axis with xbkg.axes.binned_coords."
        )
    b = obj[bname].transpose(dim, ...).values
    if b.shape[0] > 1 and not np.allclose(b[1:, 0], b[:-1, 1], rtol=1e-12, atol=0):
        raise ValueError(f"{bname!r} does not describe contiguous bins")
    return np.append(b[:, 0], b[-1, 1])


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
        coords = {OFFSET_DIM: obj[OFFSET_DIM]}
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
        omega, dims=OFFSET_DIM, coords=coords, attrs={"units": "sr", "long_name": "ring solid angle"}
    )

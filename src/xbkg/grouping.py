"""Groups of runs with similar observing conditions.

A grouping is a list of :class:`GroupAxis`, each a run column (``ZEN_PNT``,
``MUONEFF``, ``N_TELS``, ...) binned by half-open edges ``[min, max)`` or by
discrete values. Several axes make the cartesian product; ``GROUP_ID`` counts
the product cells with the first axis varying slowest (row-major), as Gammapy
0.6 did, so existing ``group-def.fits`` files keep their meaning.

Groups are a Dataset along ``group`` whose coordinates describe each cell
(``zen_pnt_min``, ``zen_pnt_max`` for edges, ``n_tels_value`` for values; the
suffix keeps them apart from the run columns such as ``n_tels``). Assigning runs to groups
gives a ``group_id`` per run (-1 for a run in no group, which is reported,
never dropped silently).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from xbkg.conventions import DEFAULT_GROUPING, GROUP_DIM, OBS_DIM, coord_name
from xbkg.errors import ConfigError

__all__ = [
    "GroupAxis",
    "assign_groups",
    "default_grouping",
    "group_definitions",
    "grouping_description",
    "nearest_group",
]

NO_GROUP = -1


@dataclass(frozen=True)
class GroupAxis:
    """One condition axis of a grouping.

    Parameters
    ----------
    column
        Run column (obs-index name such as ``"ZEN_PNT"``; case-insensitive).
    edges
        Increasing bin edges; runs with ``edges[i] <= value < edges[i+1]`` fall in bin ``i``.
    values
        Discrete values instead of edges (e.g. ``N_TELS`` 3 or 4).
    """

    column: str
    edges: tuple[float, ...] | None = None
    values: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        if (self.edges is None) == (self.values is None):
            raise ConfigError(f"group axis {self.column!r}: give either edges or values")
        if self.edges is not None:
            e = np.asarray(self.edges, dtype=float)
            if e.ndim != 1 or e.size < 2 or np.any(np.diff(e) <= 0) or not np.all(np.isfinite(e)):
                raise ConfigError(
                    f"group axis {self.column!r}: edges must be >= 2 finite increasing values, "
                    f"got {list(self.edges)}"
                )
            object.__setattr__(self, "edges", tuple(float(x) for x in e))
        if self.values is not None:
            vals = tuple(self.values)
            if len(vals) == 0 or len(set(vals)) != len(vals):
                raise ConfigError(
                    f"group axis {self.column!r}: values must be non-empty and distinct, got {vals}"
                )
            object.__setattr__(self, "values", vals)
        object.__setattr__(self, "column", self.column.strip().upper())

    @property
    def n_bins(self) -> int:
        """Number of bins (or values) along the axis."""
        if self.edges is not None:
            return len(self.edges) - 1
        assert self.values is not None
        return len(self.values)


def default_grouping() -> list[GroupAxis]:
    """The Gammapy 0.6 tutorial grouping: ZEN_PNT edges [0, 49, 90]."""
    return [GroupAxis(col, edges=tuple(e)) for col, e in DEFAULT_GROUPING.items()]


def group_definitions(axes: Sequence[GroupAxis]) -> xr.Dataset:
    """The groups of a grouping: one entry per cell of the cartesian product.

    Returns
    -------
    xarray.Dataset
        Along ``group`` (the GROUP_ID, 0..n-1, first axis slowest), with
        coordinates ``<col>_min``/``<col>_max`` for edge axes and ``<col>_value``
        for value axes, and the axes recorded in ``attrs["grouping"]``.
    """
    if not axes:
        raise ConfigError("a grouping needs at least one axis")
    columns = [a.column for a in axes]
    if len(set(columns)) != len(columns):
        raise ConfigError(f"each column may appear once in a grouping, got {columns}")
    cells = list(itertools.product(*[range(a.n_bins) for a in axes]))
    coords: dict[str, xr.Variable] = {
        GROUP_DIM: xr.Variable(GROUP_DIM, np.arange(len(cells)), {"long_name": "GROUP_ID"})
    }
    for k, axis in enumerate(axes):
        name = coord_name(axis.column)
        idx = np.array([c[k] for c in cells], dtype=int)
        if axis.edges is not None:
            e = np.asarray(axis.edges)
            coords[f"{name}_min"] = xr.Variable(
                GROUP_DIM, e[idx], {"gadf_name": f"{axis.column}_MIN", "long_name": "lower edge"}
            )
            coords[f"{name}_max"] = xr.Variable(
                GROUP_DIM,
                e[idx + 1],
                {"gadf_name": f"{axis.column}_MAX", "long_name": "upper edge"},
            )
        else:
            assert axis.values is not None
            coords[f"{name}_value"] = xr.Variable(
                GROUP_DIM, np.asarray(axis.values)[idx], {"gadf_name": axis.column}
            )
    groups = xr.Dataset(coords=coords)
    groups.attrs["grouping"] = grouping_description(axes)
    return groups


def grouping_description(axes: Sequence[GroupAxis]) -> str:
    """Human-readable, parseable description, e.g. ``ZEN_PNT=[0,49,90)``."""
    parts = []
    for a in axes:
        if a.edges is not None:
            parts.append(f"{a.column} edges {list(a.edges)}")
        else:
            parts.append(f"{a.column} values {list(a.values or ())}")
    return "; ".join(parts)


def axes_from_definitions(groups: xr.Dataset) -> list[GroupAxis]:
    """Rebuild the axes from a group Dataset (inverse of :func:`group_definitions`)."""
    axes = []
    for name, var in groups.coords.items():
        if name == GROUP_DIM:
            continue
        gadf = str(var.attrs.get("gadf_name", str(name).upper()))
        if gadf.endswith("_MIN"):
            col = gadf[: -len("_MIN")]
            hi = groups[f"{coord_name(col)}_max"].values
            edges = np.unique(np.concatenate([var.values, hi]))
            axes.append(GroupAxis(col, edges=tuple(edges)))
        elif gadf.endswith("_MAX"):
            continue
        else:
            axes.append(GroupAxis(gadf, values=tuple(dict.fromkeys(var.values.tolist()))))
    return axes


def _run_values(runs: xr.Dataset, column: str) -> NDArray[Any]:
    name = coord_name(column)
    if name not in runs.variables:
        # Named as users type them: the obs-index column names, upper-case.
        available = sorted(
            str(v.attrs.get("gadf_name", str(k).upper()))
            for k, v in runs.variables.items()
            if v.dims == (OBS_DIM,)
        )
        raise ConfigError(
            f"cannot group on {column!r}: the runs have no such column; choose one of {available}"
        )
    return np.asarray(runs[name].values)


def assign_groups(runs: xr.Dataset, groups: xr.Dataset) -> xr.DataArray:
    """The GROUP_ID of every run (``-1`` for runs in no group).

    Parameters
    ----------
    runs
        Dataset along ``obs_id`` holding the grouping columns (run table or run cube).
    groups
        Output of :func:`group_definitions`.
    """
    axes = axes_from_definitions(groups)
    n_runs = runs.sizes[OBS_DIM]
    # Bin index of every run along every axis; -1 = outside.
    indices = []
    for axis in axes:
        values = _run_values(runs, axis.column)
        if axis.edges is not None:
            e = np.asarray(axis.edges)
            v = values.astype(float)
            idx = np.searchsorted(e, v, side="right") - 1
            idx[(idx >= len(e) - 1) | ~np.isfinite(v)] = NO_GROUP
        else:
            lookup = {val: i for i, val in enumerate(axis.values or ())}
            idx = np.array([lookup.get(val, NO_GROUP) for val in values.tolist()], dtype=int)
        indices.append(idx)
    shape = [a.n_bins for a in axes]
    stacked = np.stack(indices) if indices else np.zeros((0, n_runs), dtype=int)
    inside = np.all(stacked >= 0, axis=0)
    gid = np.full(n_runs, NO_GROUP, dtype=np.int64)
    if inside.any():
        gid[inside] = np.ravel_multi_index(tuple(stacked[:, inside]), shape)
    return xr.DataArray(
        gid,
        dims=OBS_DIM,
        coords={OBS_DIM: runs[OBS_DIM].values},
        name="group_id",
        attrs={"long_name": "GROUP_ID of the run (-1: in no group)"},
    )


def nearest_group(runs: xr.Dataset, groups: xr.Dataset, candidates: Sequence[int]) -> xr.DataArray:
    """For every run, the closest of the ``candidates`` groups in condition space.

    The distance along an edge axis is how far the run's value lies outside
    the group's ``[min, max)`` range, in units of the axis span; along a value
    axis it is 0 for the group's value and 1 otherwise. Ties go to the lower
    GROUP_ID.
    """
    if len(candidates) == 0:
        raise ConfigError("no populated group to choose from")
    cand = np.asarray(candidates, dtype=int)
    axes = axes_from_definitions(groups)
    dist = np.zeros((runs.sizes[OBS_DIM], cand.size))
    for axis in axes:
        values = _run_values(runs, axis.column)
        name = coord_name(axis.column)
        if axis.edges is not None:
            v = values.astype(float)[:, None]
            lo = groups[f"{name}_min"].values[cand][None, :]
            hi = groups[f"{name}_max"].values[cand][None, :]
            span = axis.edges[-1] - axis.edges[0]
            outside = np.where(v < lo, lo - v, np.where(v >= hi, v - hi, 0.0)) / span
            dist += np.where(np.isfinite(outside), outside, np.inf) ** 2
        else:
            gv = groups[f"{name}_value"].values[cand]
            dist += (values[:, None] != gv[None, :]).astype(float)
    best = cand[np.argmin(dist, axis=1)]
    return xr.DataArray(best, dims=OBS_DIM, coords={OBS_DIM: runs[OBS_DIM].values})

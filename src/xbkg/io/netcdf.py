"""Lossless netCDF archive of a background build.

One file holds the per-run cube, the group definitions, the raw and smoothed
models, the exclusion regions and every option, following the CF conventions
(units, long names, bin bounds), so that plain :func:`xarray.open_dataset`
understands it. :func:`read_archive` rebuilds the :class:`~xbkg.pipeline.Background`
exactly and refuses archives of a schema version it does not know.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import xarray as xr
from xarray.backends import NetCDF4DataStore

from xbkg.axes import from_cf_bounds, to_cf_bounds
from xbkg.conventions import GROUP_DIM, OBS_DIM
from xbkg.io.fitsfile import publish

if TYPE_CHECKING:
    from xbkg.pipeline import Background

__all__ = ["ARCHIVE_VERSION", "from_archive", "read_archive", "to_archive", "write_archive"]

ARCHIVE_SCHEMA = "xbkg-background-archive"
ARCHIVE_VERSION = 1

_RUN_RENAMES = {"counts": "run_counts", "exposure_time": "run_exposure_time"}
_SMOOTH_RENAMES = {"rate": "smoothed_rate", "rate_error": "smoothed_rate_error"}
_REGION_PREFIX = "region_"


def to_archive(bkg: Background) -> xr.Dataset:
    """One Dataset holding everything of a background build (in-memory form)."""
    cube = bkg.cube.rename(_RUN_RENAMES)
    smoothed = bkg.smoothed[list(_SMOOTH_RENAMES)].rename(_SMOOTH_RENAMES)
    for name in _SMOOTH_RENAMES.values():
        smoothed[name].attrs["smoothing"] = bkg.smoothed.attrs.get("smoothing", "")
    ds = xr.merge([cube, bkg.model, smoothed], compat="identical", join="exact")
    if bkg.regions is not None:
        regions = bkg.regions.rename({k: f"{_REGION_PREFIX}{k}" for k in bkg.regions.variables})
        ds = ds.merge(regions, combine_attrs="override")
    ds.attrs = {
        "Conventions": "CF-1.10",
        "title": "xbkg template background model",
        "xbkg_schema": ARCHIVE_SCHEMA,
        "xbkg_schema_version": ARCHIVE_VERSION,
        **{k: v for k, v in bkg.model.attrs.items() if k != "smoothing"},
        "smoothing": bkg.smoothed.attrs.get("smoothing", ""),
    }
    if bkg.regions is not None:
        ds.attrs.update({f"{_REGION_PREFIX}{k}": v for k, v in bkg.regions.attrs.items()})
    return ds


def from_archive(ds: xr.Dataset, source: str = "archive") -> Background:
    """Rebuild a :class:`~xbkg.pipeline.Background` from :func:`to_archive` output."""
    from xbkg.grouping import GroupAxis
    from xbkg.pipeline import Background, Options

    version = ds.attrs.get("xbkg_schema_version")
    if ds.attrs.get("xbkg_schema") != ARCHIVE_SCHEMA or version != ARCHIVE_VERSION:
        raise ValueError(
            f"{source}: not an xbkg archive of schema version {ARCHIVE_VERSION} "
            f"(found schema {ds.attrs.get('xbkg_schema')!r}, version {version!r}); "
            "read it with the xbkg version that wrote it"
        )
    raw: dict[str, Any] = json.loads(ds.attrs["options"])
    raw["grouping"] = tuple(
        GroupAxis(
            a["column"],
            edges=tuple(a["edges"]) if "edges" in a else None,
            values=tuple(a["values"]) if "values" in a else None,
        )
        for a in raw["grouping"]
    )
    for key in ("energy_edges", "offset_edges"):
        raw[key] = tuple(raw[key])
    options = Options(**raw)
    attrs = {
        k: v
        for k, v in ds.attrs.items()
        if not k.startswith("xbkg_schema") and not k.startswith(_REGION_PREFIX)
    }
    for k in ("Conventions", "title", "smoothing"):
        attrs.pop(k, None)
    region_vars = [str(v) for v in ds.variables if str(v).startswith(_REGION_PREFIX)]
    regions = None
    if region_vars:
        regions = ds[region_vars].rename({v: v[len(_REGION_PREFIX) :] for v in region_vars})
        regions = regions.drop_vars([c for c in regions.coords if "source" not in regions[c].dims])
        regions.attrs = {
            k[len(_REGION_PREFIX) :]: v for k, v in ds.attrs.items() if k.startswith(_REGION_PREFIX)
        }
    group_vars = [v for v in ds.data_vars if GROUP_DIM in ds[v].dims]
    cube_vars = [v for v in ds.data_vars if OBS_DIM in ds[v].dims]
    cube = ds[cube_vars].rename({v: k for k, v in _RUN_RENAMES.items()})
    cube = cube.drop_vars([c for c in cube.coords if GROUP_DIM in cube[c].dims])
    cube.attrs = {k: v for k, v in attrs.items() if k != "solid_angle" and k != "grouping"}
    model_all = ds[group_vars]
    model_all = model_all.drop_vars([c for c in model_all.coords if OBS_DIM in model_all[c].dims])
    model = model_all.drop_vars(list(_SMOOTH_RENAMES.values()))
    model.attrs = {**attrs, "smoothing": "none"}
    smoothed = model.assign(
        {k: model_all[v] for k, v in _SMOOTH_RENAMES.items()},
    )
    for k in _SMOOTH_RENAMES:
        smoothed[k].attrs = {a: b for a, b in smoothed[k].attrs.items() if a != "smoothing"}
    smoothed.attrs = {**attrs, "smoothing": ds.attrs.get("smoothing", "")}
    # The group definitions are the group coordinates that describe a cell (gadf_name).
    definition = [c for c in model.coords if c == GROUP_DIM or "gadf_name" in model.coords[c].attrs]
    groups = xr.Dataset(coords={c: model.coords[c].variable for c in definition})
    groups.attrs["grouping"] = attrs.get("grouping", "")
    return Background(cube, groups, model, smoothed, regions, options)


def write_archive(bkg: Background, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write the archive (netCDF-4) through a temporary file and one rename."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path}: file exists; pass overwrite=True (--overwrite) to replace it"
        )
    ds = to_cf_bounds(to_archive(bkg))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        # Dataset.to_netcdf asks dask for its scheduler to choose a lock (importing
        # dask and distributed when installed: a large part of a small build's run
        # time). This process is the only writer of a fresh temporary file, so the
        # backend store is used directly and without a lock.
        target = NetCDF4DataStore.open(tmp, mode="w", format="NETCDF4", lock=False)
        try:
            ds.dump_to_store(target)
        finally:
            target.close()
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_archive(path: str | Path) -> Background:
    """Read an archive written by :func:`write_archive`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: archive not found")
    with xr.open_dataset(path, engine="netcdf4") as ds:
        loaded = from_cf_bounds(ds.load())
    return from_archive(loaded, source=str(path))

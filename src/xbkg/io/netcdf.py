"""Lossless netCDF archive of a background build.

One file holds the per-run cube, the group definitions, the raw and smoothed
models, the exclusion regions, every option and the provenance of the build:

- ``run_counts``, ``run_exposure_time`` and the run tallies along ``obs_id``,
  with the obs-index columns and ``group_id`` (the group each run was stacked
  into) as run coordinates;
- ``run_status`` along ``obs_id``, a CF flag variable saying why each run was
  used or left out (``used``, ``in_no_group``, ``no_exposure``), and
  ``obs_id_not_selected``: the runs of the data store that the run selection
  left out, and ``obs_id_skipped`` with ``skip_reason``: the runs left out as
  unusable (``--skip-bad-runs``);
- ``counts``, ``exposure_time``, ``rate``, ``rate_error`` (raw model) and
  ``smoothed_rate``, ``smoothed_rate_error`` along ``(group, energy, offset)``,
  with the group definitions (``zen_pnt_min``, ...) and ``n_runs`` as group
  coordinates;
- ``region_ra``, ``region_dec``, ``region_radius``, ``region_name`` along
  ``source``: the exclusion circles;
- global attributes: ``options`` (JSON of every option), ``time_convention``,
  ``smoothing``, ``solid_angle``, ``grouping``, ``xbkg_version``, and the
  schema name and version.

It follows the CF conventions: every variable has ``units`` (where it has
any) and a ``long_name``, bins have CF ``bounds`` variables
(``energy_bounds``), rates name their errors as ``ancillary_variables``, and
no ``standard_name`` is used since none exists for these quantities. Plain
:func:`xarray.open_dataset` and cf-xarray understand it. Attributes that the
writer adds only for the file are listed in each variable's
``xbkg_archive_attrs`` attribute and removed again by :func:`read_archive`,
which rebuilds the :class:`~xbkg.pipeline.Background` exactly and refuses
archives of a schema version it does not know.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr
from xarray.backends import NetCDF4DataStore

from xbkg.axes import from_cf_bounds, to_cf_bounds
from xbkg.conventions import GROUP_DIM, OBS_DIM, SKIPPED_ATTR
from xbkg.io.fitsfile import publish

if TYPE_CHECKING:
    from xbkg.options import Background

__all__ = [
    "ARCHIVE_VERSION",
    "RUN_STATUS",
    "from_archive",
    "read_archive",
    "run_status",
    "to_archive",
    "write_archive",
]

ARCHIVE_SCHEMA = "xbkg-background-archive"
#: Version 2 added the provenance variables (run_status, obs_id_not_selected)
#: and the CF attributes listed in ``xbkg_archive_attrs``.
ARCHIVE_VERSION = 3
#: Older versions still read: 2 lacks the fill masks and the per-run models
#: (its models were written without filling).
_READABLE_VERSIONS = (2, 3)
_RUN_MODEL_DIM = "obs_id_model"
_RUN_MODEL_RENAMES = {"rate": "run_model_rate", "filled": "run_model_filled"}

#: Flag values of ``run_status`` and their meanings.
RUN_STATUS: dict[int, str] = {0: "used", 1: "in_no_group", 2: "no_exposure"}
_ADDED = "xbkg_archive_attrs"
_NOT_SELECTED = "obs_id_not_selected"
_SKIPPED = "obs_id_skipped"
_SKIP_REASON = "skip_reason"
_REASSIGNED = "obs_id_reassigned"

_RUN_RENAMES = {"counts": "run_counts", "exposure_time": "run_exposure_time"}
_SMOOTH_RENAMES = {
    "rate": "smoothed_rate",
    "rate_error": "smoothed_rate_error",
    "filled": "smoothed_filled",
}
_REGION_PREFIX = "region_"
_SMOOTH_RENAMES_PAIRS = (("smoothed_rate", "smoothed_rate_error"),)


def run_status(cube: xr.Dataset) -> xr.DataArray:
    """Why each run of a cube was used or left out, as a CF flag variable.

    ``0`` (``used``): stacked into group ``group_id``; ``1``
    (``in_no_group``): its conditions fall in no group; ``2``
    (``no_exposure``): in a group but with no exposure in any bin (e.g. a safe
    energy range outside the energy axis), so it adds nothing to the model.
    """
    exposed = (cube["exposure_time"] > 0).any(
        [d for d in cube["exposure_time"].dims if d != OBS_DIM]
    )
    status = np.where(cube["group_id"].values < 0, 1, np.where(exposed.values, 0, 2))
    return xr.DataArray(
        status.astype(np.int8),
        dims=OBS_DIM,
        coords={OBS_DIM: cube[OBS_DIM]},
        attrs={
            "long_name": "whether the run was used in a model, or why not",
            "flag_values": np.array(list(RUN_STATUS), dtype=np.int8),
            "flag_meanings": " ".join(RUN_STATUS.values()),
        },
    )


def _add_attrs(var: xr.Variable, **attrs: str) -> None:
    """Add CF attributes for the file only; they are listed so that reading drops them."""
    new = {k: v for k, v in attrs.items() if k not in var.attrs}
    if new:
        var.attrs.update(new)
        var.attrs[_ADDED] = " ".join(sorted(new))


def _drop_added_attrs(ds: xr.Dataset) -> xr.Dataset:
    ds = ds.copy()
    for var in ds.variables.values():
        for name in str(var.attrs.pop(_ADDED, "")).split():
            var.attrs.pop(name, None)
    return ds


def to_archive(
    bkg: Background,
    *,
    all_runs: xr.Dataset | None = None,
    reassigned: Sequence[tuple[int, int, int]] = (),
) -> xr.Dataset:
    """One Dataset holding everything of a background build (in-memory form).

    Parameters
    ----------
    bkg
        The build.
    all_runs
        The run table of the whole data store, to record which runs the
        selection left out (``obs_id_not_selected``); optional.
    reassigned
        ``(obs_id, own group, group used)`` of the runs whose group has no
        model, recorded as ``obs_id_reassigned`` with ``reassigned_own_group``
        and ``reassigned_model_group`` (own group -1: in no group).
    """
    cube = bkg.cube.rename(_RUN_RENAMES)
    renames = {k: v for k, v in _SMOOTH_RENAMES.items() if k in bkg.smoothed}
    smoothed = bkg.smoothed[list(renames)].rename(renames)
    for name in renames.values():
        smoothed[name].attrs["smoothing"] = bkg.smoothed.attrs.get("smoothing", "")
    ds = xr.merge([cube, bkg.model, smoothed], compat="identical", join="exact")
    if bkg.run_models is not None:
        present = {k: v for k, v in _RUN_MODEL_RENAMES.items() if k in bkg.run_models}
        own = bkg.run_models.rename({OBS_DIM: _RUN_MODEL_DIM, **present})
        ds = ds.merge(own, compat="identical", join="exact", combine_attrs="override")
        ds[_RUN_MODEL_DIM].attrs["long_name"] = "OBS_ID of the run a per-run model is for"
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
    ds.attrs["source"] = f"xbkg {bkg.model.attrs.get('xbkg_version', '')}".strip()
    ds["run_status"] = run_status(bkg.cube)
    if all_runs is not None:
        left_out = np.setdiff1d(all_runs[OBS_DIM].values, bkg.cube[OBS_DIM].values)
        ds[_NOT_SELECTED] = xr.DataArray(
            left_out.astype(np.int64),
            dims=_NOT_SELECTED,
            attrs={"long_name": "OBS_IDs of the data store left out by the run selection"},
        )
    if reassigned:
        table = np.asarray(reassigned, dtype=np.int64).reshape(-1, 3)
        ds[_REASSIGNED] = xr.DataArray(
            table[:, 0],
            dims=_REASSIGNED,
            attrs={"long_name": "OBS_IDs whose group has no model (the index uses another)"},
        )
        ds["reassigned_own_group"] = xr.DataArray(
            table[:, 1], dims=_REASSIGNED, attrs={"long_name": "GROUP_ID of the run (-1: none)"}
        )
        ds["reassigned_model_group"] = xr.DataArray(
            table[:, 2],
            dims=_REASSIGNED,
            attrs={"long_name": "GROUP_ID of the model the HDU index gives the run"},
        )
    skipped = json.loads(bkg.cube.attrs.get(SKIPPED_ATTR, "{}"))
    if skipped:
        ds[_SKIPPED] = xr.DataArray(
            np.asarray([int(k) for k in skipped], dtype=np.int64),
            dims=_SKIPPED,
            attrs={"long_name": "OBS_IDs left out as unusable (--skip-bad-runs)"},
        )
        ds[_SKIP_REASON] = xr.DataArray(
            np.asarray(list(skipped.values()), dtype=str),
            dims=_SKIPPED,
            attrs={"long_name": "why the run was left out"},
        )
    # CF metadata that the in-memory products do not carry.
    for key, var in ds.variables.items():
        if key == OBS_DIM:
            _add_attrs(var, long_name="observation identifier (OBS_ID)")
        elif "gadf_name" in var.attrs and "long_name" not in var.attrs:
            _add_attrs(var, long_name=f"{var.attrs['gadf_name']} column of the obs-index")
    for rate, error in (("rate", "rate_error"), *_SMOOTH_RENAMES_PAIRS):
        _add_attrs(ds[rate].variable, ancillary_variables=error)
    return ds


def from_archive(ds: xr.Dataset, source: str = "archive") -> Background:
    """Rebuild a :class:`~xbkg.pipeline.Background` from :func:`to_archive` output."""
    from xbkg.grouping import GroupAxis
    from xbkg.options import Background, Options

    version = ds.attrs.get("xbkg_schema_version")
    if ds.attrs.get("xbkg_schema") != ARCHIVE_SCHEMA or version not in _READABLE_VERSIONS:
        found = version.item() if isinstance(version, np.generic) else version
        raise ValueError(
            f"{source}: not an xbkg archive of schema version "
            f"{' or '.join(map(str, _READABLE_VERSIONS))} "
            f"(found schema {ds.attrs.get('xbkg_schema')!r}, version {found!r}); "
            "read it with the xbkg version that wrote it"
        )
    run_models = None
    run_model_vars = [v for v in _RUN_MODEL_RENAMES.values() if v in ds.variables]
    if run_model_vars:
        run_models = _drop_added_attrs(ds[run_model_vars]).rename(
            {
                _RUN_MODEL_DIM: OBS_DIM,
                **{v: k for k, v in _RUN_MODEL_RENAMES.items() if v in run_model_vars},
            }
        )
        run_models = run_models.drop_vars(
            [
                c
                for c in run_models.coords
                if c not in ("energy", "offset", OBS_DIM)
                and not str(c).startswith(("energy_", "offset_"))
            ]
        )
        run_models.attrs = {}
        ds = ds.drop_dims(_RUN_MODEL_DIM)
    skipped = {}
    if _SKIPPED in ds.variables:
        reasons = ds[_SKIP_REASON].values.tolist()
        skipped = dict(zip(ds[_SKIPPED].values.tolist(), reasons, strict=True))
    ds = _drop_added_attrs(ds).drop_vars(["run_status", _NOT_SELECTED], errors="ignore")
    for dim in (_NOT_SELECTED, _SKIPPED, _REASSIGNED):
        if dim in ds.dims:
            ds = ds.drop_dims(dim)
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
    if version == 2:  # written before models were filled
        raw.setdefault("fill_unconstrained", False)
    # Written before the default catalogue: the regions (region_*) were all given.
    raw.setdefault("exclude", [])
    options = Options(**raw)
    attrs = {
        k: v
        for k, v in ds.attrs.items()
        if not k.startswith("xbkg_schema") and not k.startswith(_REGION_PREFIX)
    }
    for k in ("Conventions", "title", "smoothing", "source"):
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
    if skipped:
        cube.attrs[SKIPPED_ATTR] = json.dumps({str(k): v for k, v in skipped.items()})
    model_all = ds[group_vars]
    model_all = model_all.drop_vars([c for c in model_all.coords if OBS_DIM in model_all[c].dims])
    present = {k: v for k, v in _SMOOTH_RENAMES.items() if v in model_all.variables}
    model = model_all.drop_vars(list(present.values()))
    model.attrs = {**attrs, "smoothing": "none"}
    smoothed = model.assign({k: model_all[v] for k, v in present.items()})
    for k in present:
        smoothed[k].attrs = {a: b for a, b in smoothed[k].attrs.items() if a != "smoothing"}
    smoothed.attrs = {**attrs, "smoothing": ds.attrs.get("smoothing", "")}
    # The group definitions are the group coordinates that describe a cell (gadf_name).
    definition = [c for c in model.coords if c == GROUP_DIM or "gadf_name" in model.coords[c].attrs]
    groups = xr.Dataset(coords={c: model.coords[c].variable for c in definition})
    groups.attrs["grouping"] = attrs.get("grouping", "")
    return Background(cube, groups, model, smoothed, regions, options, run_models=run_models)


def write_archive(
    bkg: Background,
    path: str | Path,
    *,
    all_runs: xr.Dataset | None = None,
    reassigned: Sequence[tuple[int, int, int]] = (),
    overwrite: bool = False,
) -> Path:
    """Write the archive (netCDF-4) through a temporary file and one rename.

    Parameters
    ----------
    bkg
        The build to archive.
    path
        Output file.
    all_runs
        Run table of the whole data store (records the runs not selected).
    reassigned
        Runs whose group has no model (:func:`to_archive`).
    overwrite
        Replace an existing file.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: file exists; pass overwrite=True to replace it")
    ds = to_cf_bounds(to_archive(bkg, all_runs=all_runs, reassigned=reassigned))
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

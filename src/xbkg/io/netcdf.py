"""Lossless netCDF archive of a background build.

One netCDF-4 file, an :class:`xarray.DataTree` of groups, holds everything a
build produced (``xr.open_datatree("background.nc")`` shows it):

- ``/``: the provenance. Attributes: the schema (``xbkg_schema``,
  ``xbkg_schema_version``), ``xbkg_version``, ``source``, ``options`` (JSON of
  every option), ``time_convention``, ``smoothing``, ``solid_angle``,
  ``grouping``, ... Variables: ``obs_id_not_selected`` (the runs of the data
  store that the run selection left out), ``obs_id_skipped`` with
  ``skip_reason`` (the runs left out as unusable, ``--skip-bad-runs``) and
  ``obs_id_reassigned`` with ``reassigned_own_group`` and
  ``reassigned_model_group`` (the runs whose group has no model, and the
  group whose model the HDU index gives them);
- ``/runs``: the per-run cube along ``(obs_id, energy, offset)``, with the
  obs-index columns and ``group_id`` as run coordinates, and ``run_status``,
  a CF flag variable saying why each run was used or left out;
- ``/groups``: the group definitions along ``group``;
- ``/model/raw`` and ``/model/smoothed``: the group models along ``(group,
  energy, offset)`` (``filled``: the bins filled by the continuation);
- ``/model/fov_shape``: for ``bkg_3d`` builds, the field-of-view shape factor
  along ``(energy, fov_lon, fov_lat)`` (the run cube then also holds the
  field-of-view counts, ``fov_counts``, ``fov_unexcluded`` and ``fov_rotation``);
- ``/conditions``: the condition model (:func:`xbkg.conditions.fit_conditions`),
  when the build has one;
- ``/run_models``: the per-run models as written to the per-run files
  (``rate``, ``filled``), when there are any;
- ``/regions``: the exclusion circles along ``source``.

Every group but the root is one :class:`~xbkg.options.Background` field as it
is in memory, its attributes included, so that each opens on its own
(``xr.open_dataset(path, group="model/smoothed")``) and the ``ds.bkg``
products work on it. It follows the CF conventions: every variable has
``units`` (where it has any) and a ``long_name``, bins have CF ``bounds``
variables (``energy_bounds``), rates name their errors as
``ancillary_variables``, and no ``standard_name`` is used since none exists
for these quantities. Attributes that the writer adds only for the file are
listed in each variable's ``xbkg_archive_attrs`` attribute and removed again
by :func:`read_archive`, which rebuilds the :class:`~xbkg.options.Background`
exactly. Archives of schema 2 and 3 (one flat Dataset) are still read.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr
from xarray.backends import NetCDF4DataStore

from xbkg.axes import from_cf_bounds, to_cf_bounds
from xbkg.conventions import GROUP_DIM, OBS_DIM, SKIPPED_ATTR
from xbkg.io.outputs import publish

if TYPE_CHECKING:
    from xbkg.options import Background, Options

__all__ = [
    "ARCHIVE_GROUPS",
    "ARCHIVE_VERSION",
    "RUN_STATUS",
    "from_archive",
    "read_archive",
    "run_status",
    "to_archive",
    "write_archive",
]

ARCHIVE_SCHEMA = "xbkg-background-archive"
#: Version 4: a tree of groups holding the products as they are in memory,
#: the condition model included. Versions 2 and 3 were one flat Dataset.
ARCHIVE_VERSION = 4
#: Flat archives still read: 2 lacks the fill masks and the per-run models
#: (its models were written without filling); neither has the condition model.
_LEGACY_VERSIONS = (2, 3)

#: The groups of the archive and the :class:`~xbkg.options.Background` field each holds.
ARCHIVE_GROUPS: dict[str, str] = {
    "runs": "cube",
    "groups": "groups",
    "model/raw": "model",
    "model/smoothed": "smoothed",
    "model/fov_shape": "fov_shape",
    "conditions": "conditions",
    "run_models": "run_models",
    "regions": "regions",
}

#: The fields every build has (the others may be None).
_REQUIRED = ("cube", "groups", "model", "smoothed")

#: Flag values of ``run_status`` and their meanings.
RUN_STATUS: dict[int, str] = {0: "used", 1: "in_no_group", 2: "no_exposure"}
_ADDED = "xbkg_archive_attrs"
#: The binned variables are compressed (losslessly, and the same bytes every time).
_COMPRESSION = {"zlib": True, "complevel": 4, "shuffle": True}
_STATUS = "run_status"
_NOT_SELECTED = "obs_id_not_selected"
_SKIPPED = "obs_id_skipped"
_SKIP_REASON = "skip_reason"
_REASSIGNED = "obs_id_reassigned"

#: Long names the file gives variables that have none in memory (mostly the
#: condition model's coordinates); any other gets its name, spelt out.
_LONG_NAMES = {
    OBS_DIM: "observation identifier (OBS_ID)",
    "counts": "background counts",
    "condition": "condition acting on the rate of each energy bin",
    "shape_condition": "condition acting on the radial shape as well",
    "run_condition": "condition acting on the normalisation of each run",
    "training_run": "OBS_ID of a run the condition model was fitted to",
    "condition_mean": "mean of the condition over the exposed (run, energy) pairs",
    "condition_scale": "standard deviation of the condition over the exposed (run, energy) pairs",
    "condition_min": "smallest value of the condition among the runs exposed in the energy bin",
    "condition_max": "largest value of the condition among the runs exposed in the energy bin",
    "run_condition_mean": "mean of the run condition over the training runs",
    "run_condition_scale": "standard deviation of the run condition over the training runs",
    "run_condition_min": "smallest value of the run condition among the training runs",
    "run_condition_max": "largest value of the run condition among the training runs",
}


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
        listed = str(var.attrs.get(_ADDED, "")).split()
        var.attrs.update(new)
        var.attrs[_ADDED] = " ".join(sorted({*listed, *new}))


def _drop_added_attrs(ds: xr.Dataset) -> xr.Dataset:
    ds = ds.copy()
    for var in ds.variables.values():
        for name in str(var.attrs.pop(_ADDED, "")).split():
            var.attrs.pop(name, None)
    return ds


def _with_cf_attrs(ds: xr.Dataset) -> xr.Dataset:
    """A copy of ``ds`` with the CF metadata that the in-memory products do not carry."""
    ds = ds.copy()
    for key, var in ds.variables.items():
        name = str(key)
        if "gadf_name" in var.attrs:
            long_name = f"{var.attrs['gadf_name']} column of the obs-index"
        else:
            long_name = _LONG_NAMES.get(name, name.replace("_", " "))
        _add_attrs(var, long_name=long_name)
    if "rate" in ds.data_vars and "rate_error" in ds.data_vars:
        _add_attrs(ds["rate"].variable, ancillary_variables="rate_error")
    return ds


def _provenance(
    bkg: Background, all_runs: xr.Dataset | None, reassigned: Sequence[tuple[int, int, int]]
) -> xr.Dataset:
    """The root group: the provenance of the build and the runs left out or moved."""
    root = xr.Dataset(
        attrs={
            "Conventions": "CF-1.10",
            "title": "xbkg template background model",
            "source": f"xbkg {bkg.model.attrs.get('xbkg_version', '')}".strip(),
            "xbkg_schema": ARCHIVE_SCHEMA,
            "xbkg_schema_version": ARCHIVE_VERSION,
            **{k: v for k, v in bkg.smoothed.attrs.items() if k != "options"},
            "options": bkg.options.to_json(),
        }
    )
    if all_runs is not None:
        left_out = np.setdiff1d(all_runs[OBS_DIM].values, bkg.cube[OBS_DIM].values)
        root[_NOT_SELECTED] = xr.DataArray(
            left_out.astype(np.int64),
            dims="not_selected",
            attrs={"long_name": "OBS_IDs of the data store left out by the run selection"},
        )
    skipped = json.loads(bkg.cube.attrs.get(SKIPPED_ATTR, "{}"))
    if skipped:
        root[_SKIPPED] = xr.DataArray(
            np.asarray([int(k) for k in skipped], dtype=np.int64),
            dims="skipped",
            attrs={"long_name": "OBS_IDs left out as unusable (--skip-bad-runs)"},
        )
        root[_SKIP_REASON] = xr.DataArray(
            np.asarray(list(skipped.values()), dtype=str),
            dims="skipped",
            attrs={"long_name": "why the run was left out"},
        )
    if reassigned:
        table = np.asarray(reassigned, dtype=np.int64).reshape(-1, 3)
        columns = {
            _REASSIGNED: "OBS_IDs whose group has no model (the HDU index gives another)",
            "reassigned_own_group": "GROUP_ID of the run (-1: in no group)",
            "reassigned_model_group": "GROUP_ID of the model the HDU index gives the run",
        }
        for i, (name, long_name) in enumerate(columns.items()):
            root[name] = xr.DataArray(
                table[:, i], dims="reassigned", attrs={"long_name": long_name}
            )
    return root


def to_archive(
    bkg: Background,
    *,
    all_runs: xr.Dataset | None = None,
    reassigned: Sequence[tuple[int, int, int]] = (),
) -> xr.DataTree:
    """The archive of a background build, in memory (bins with edges, not CF bounds).

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

    Returns
    -------
    xarray.DataTree
        The provenance at the root and one group per product
        (:data:`ARCHIVE_GROUPS`); :func:`write_archive` writes it.
    """
    nodes = {"/": _provenance(bkg, all_runs, reassigned)}
    for path, field in ARCHIVE_GROUPS.items():
        parent = path.rpartition("/")[0]
        if parent:  # "model", in the order of ARCHIVE_GROUPS
            nodes.setdefault(f"/{parent}", xr.Dataset())
        ds: xr.Dataset | xr.DataArray | None = getattr(bkg, field)
        if ds is None:
            continue
        if isinstance(ds, xr.DataArray):  # the field-of-view shape factor
            ds = ds.to_dataset(name=field)
        if field == "cube":
            ds = ds.assign({_STATUS: run_status(ds)})
        nodes[f"/{path}"] = _with_cf_attrs(ds)
    return xr.DataTree.from_dict(nodes)


def _plain_attrs(ds: xr.Dataset) -> xr.Dataset:
    """Numbers read from attributes back to Python scalars, as they are in memory."""
    for attrs in (ds.attrs, *(v.attrs for v in ds.variables.values())):
        for key, value in attrs.items():
            if isinstance(value, np.generic):
                attrs[key] = value.item()
    return ds


def _options(text: str, version: int) -> Options:
    """The :class:`~xbkg.options.Options` of an archive's ``options`` JSON."""
    from xbkg.grouping import GroupAxis
    from xbkg.options import Options

    raw: dict[str, Any] = json.loads(text)
    raw["grouping"] = tuple(
        GroupAxis(
            a["column"],
            edges=tuple(a["edges"]) if "edges" in a else None,
            values=tuple(a["values"]) if "values" in a else None,
        )
        for a in raw["grouping"]
    )
    for key in ("energy_edges", "offset_edges"):
        if raw.get(key) is not None:
            raw[key] = tuple(raw[key])
    if version == 2:  # written before models were filled
        raw.setdefault("fill_unconstrained", False)
    # Written before the files held log-log nodes: their files held the bin means.
    raw.setdefault("energy_nodes", "mean")
    # Written before the default catalogue: the regions (region_*) were all given.
    raw.setdefault("exclude", [])
    return Options(**raw)


def _schema_version(attrs: Mapping[Any, Any], source: str) -> int:
    """The schema version of an archive, or a clear refusal."""
    schema, version = attrs.get("xbkg_schema"), attrs.get("xbkg_schema_version")
    if isinstance(version, np.generic):
        version = version.item()
    readable = (*_LEGACY_VERSIONS, ARCHIVE_VERSION)
    if schema != ARCHIVE_SCHEMA:
        raise ValueError(
            f"{source}: not an xbkg archive (found schema {schema!r}, version {version!r}); "
            "xbkg make writes one as background.nc"
        )
    if version not in readable:
        newer = isinstance(version, int) and version > ARCHIVE_VERSION
        advice = (
            "it was written by a newer xbkg: upgrade xbkg to read it"
            if newer
            else "rebuild it with xbkg make"
        )
        raise ValueError(
            f"{source}: an xbkg archive of schema version {version!r}, which this xbkg "
            f"(reading versions {', '.join(map(str, readable))}) cannot read; {advice}"
        )
    return int(version)


def from_archive(archive: xr.DataTree | xr.Dataset, source: str = "archive") -> Background:
    """Rebuild a :class:`~xbkg.options.Background` from :func:`to_archive` output.

    Parameters
    ----------
    archive
        The tree of :func:`to_archive` (edges, not CF bounds), or the Dataset of
        an archive of schema 2 or 3 (as :func:`read_archive` opens it).
    source
        Name of the archive in error messages.

    Raises
    ------
    ValueError
        If ``archive`` is not an xbkg archive of a schema version this xbkg reads.
    """
    from xbkg.options import Background

    root = archive.to_dataset(inherit=False) if isinstance(archive, xr.DataTree) else archive
    version = _schema_version(root.attrs, source)
    if version in _LEGACY_VERSIONS:
        return _from_flat_archive(root, version)
    if not isinstance(archive, xr.DataTree):
        raise ValueError(f"{source}: schema version {version} is a tree of groups, not a Dataset")
    nodes: dict[str, xr.Dataset] = {}
    for path, field in ARCHIVE_GROUPS.items():
        if f"/{path}" in archive.groups:
            node = archive[path]
            assert isinstance(node, xr.DataTree)
            nodes[field] = _plain_attrs(_drop_added_attrs(node.to_dataset(inherit=False)))
    missing = [p for p, f in ARCHIVE_GROUPS.items() if f in _REQUIRED and f not in nodes]
    if missing:
        raise ValueError(f"{source}: the archive lacks the group(s) {missing}")
    return Background(
        nodes["cube"].drop_vars(_STATUS),
        nodes["groups"],
        nodes["model"],
        nodes["smoothed"],
        nodes.get("regions"),
        _options(str(root.attrs["options"]), version),
        conditions=nodes.get("conditions"),
        run_models=nodes.get("run_models"),
        fov_shape=nodes["fov_shape"]["fov_shape"] if "fov_shape" in nodes else None,
    )


def _from_flat_archive(ds: xr.Dataset, version: int) -> Background:
    """Rebuild a :class:`~xbkg.options.Background` from a flat archive (schema 2 or 3)."""
    from xbkg.options import Background

    run_models = None
    run_model_vars = [v for v in ("run_model_rate", "run_model_filled") if v in ds.variables]
    if run_model_vars:
        run_models = _drop_added_attrs(ds[run_model_vars]).rename(
            {"obs_id_model": OBS_DIM, **{v: v.removeprefix("run_model_") for v in run_model_vars}}
        )
        run_models = run_models.drop_vars(
            [
                c
                for c in run_models.coords
                if c not in ("energy", "offset", OBS_DIM)
                and not str(c).startswith(("energy_", "offset_"))
            ]
        )
        run_models[OBS_DIM].attrs = {}
        run_models.attrs = {}
        ds = ds.drop_dims("obs_id_model")
    skipped = {}
    if _SKIPPED in ds.variables:
        reasons = ds[_SKIP_REASON].values.tolist()
        skipped = dict(zip(ds[_SKIPPED].values.tolist(), reasons, strict=True))
    ds = _drop_added_attrs(ds).drop_vars([_STATUS, _NOT_SELECTED], errors="ignore")
    for dim in (_NOT_SELECTED, _SKIPPED, _REASSIGNED):
        if dim in ds.dims:
            ds = ds.drop_dims(dim)
    options = _options(str(ds.attrs["options"]), version)
    attrs = {
        k: v
        for k, v in ds.attrs.items()
        if not k.startswith("xbkg_schema") and not k.startswith("region_")
    }
    for k in ("Conventions", "title", "smoothing", "source"):
        attrs.pop(k, None)
    region_vars = [str(v) for v in ds.variables if str(v).startswith("region_")]
    regions = None
    if region_vars:
        regions = ds[region_vars].rename({v: v.removeprefix("region_") for v in region_vars})
        regions = regions.drop_vars([c for c in regions.coords if "source" not in regions[c].dims])
        regions.attrs = {
            k.removeprefix("region_"): v for k, v in ds.attrs.items() if k.startswith("region_")
        }
    group_vars = [v for v in ds.data_vars if GROUP_DIM in ds[v].dims]
    cube_vars = [v for v in ds.data_vars if OBS_DIM in ds[v].dims]
    cube = ds[cube_vars].rename({"run_counts": "counts", "run_exposure_time": "exposure_time"})
    cube = cube.drop_vars([c for c in cube.coords if GROUP_DIM in cube[c].dims])
    cube.attrs = {k: v for k, v in attrs.items() if k != "solid_angle" and k != "grouping"}
    if skipped:
        cube.attrs[SKIPPED_ATTR] = json.dumps({str(k): v for k, v in skipped.items()})
    model_all = ds[group_vars]
    model_all = model_all.drop_vars([c for c in model_all.coords if OBS_DIM in model_all[c].dims])
    renamed = {
        k: f"smoothed_{k}"
        for k in ("rate", "rate_error", "filled")
        if f"smoothed_{k}" in model_all.variables
    }
    model = model_all.drop_vars(list(renamed.values()))
    model.attrs = {**attrs, "smoothing": "none"}
    smoothed = model.assign({k: model_all[v] for k, v in renamed.items()})
    for k in renamed:
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

    The same build gives the same bytes: netCDF-4 records no time, and the
    binned variables are compressed with zlib, which is deterministic.

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
    tree = to_archive(bkg, all_runs=all_runs, reassigned=reassigned)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        # DataTree.to_netcdf asks dask for its scheduler to choose a lock (importing
        # dask and distributed when installed: a large part of a small build's run
        # time). This process is the only writer of a fresh temporary file, so the
        # backend store is used directly, one group after the other, without a lock.
        root = NetCDF4DataStore.open(tmp, mode="w", format="NETCDF4", lock=False)
        try:
            for node in tree.subtree:
                store = root if node is tree else root.get_child_store(node.path)
                ds = to_cf_bounds(node.to_dataset(inherit=False))
                binned = {name: _COMPRESSION for name, v in ds.data_vars.items() if v.ndim > 1}
                ds.dump_to_store(store, encoding=binned)
        finally:
            root.close()
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_archive(path: str | Path) -> Background:
    """Read an archive written by :func:`write_archive` (or by xbkg of schema 2 or 3).

    Raises
    ------
    FileNotFoundError
        If there is no file at ``path``.
    ValueError
        If it is not an xbkg archive of a schema version this xbkg reads; the
        message names the file, the version found and what to do.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: archive not found")
    with xr.open_datatree(path, engine="netcdf4") as tree:
        root = tree.to_dataset(inherit=False)
        version = _schema_version(root.attrs, str(path))
        if version in _LEGACY_VERSIONS:
            return from_archive(from_cf_bounds(root.load()), source=str(path))
        nodes = {
            node.path: from_cf_bounds(node.to_dataset(inherit=False).load())
            for node in tree.subtree
        }
    return from_archive(xr.DataTree.from_dict(nodes), source=str(path))

"""The whole job: data store -> run cube -> groups -> rate -> smoothed model -> files.

:func:`build_background` does the computing and returns labelled products;
:func:`write_background` writes them as a data store folder (bkg_2d FITS per
group, ``group-def.fits``, obs-index, HDU index, netCDF archive), all or
nothing. :data:`PRESETS` holds named :class:`Options`; ``"gammapy-0.6"``
reproduces the Gammapy 0.6 tool behind the original tutorial.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, cast

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from xbkg._version import __version__
from xbkg.axes import edges, energy_edges
from xbkg.conventions import (
    ARCHIVE_FILE,
    BKG_2D_HDU_CLASS,
    BKG_3D_HDU_CLASS,
    DEFAULT_ENERGY_RANGE,
    ENERGY_DIM,
    ENERGY_GRID_PER_DECADE,
    ENERGY_SEARCH_RANGE,
    GROUP_DEF_FILE,
    GROUP_DIM,
    HDU_INDEX_FILE,
    OBS_DIM,
    OBS_INDEX_FILE,
    OFFSET_DIM,
    RATE_UNIT,
    TimeConvention,
    coord_name,
    model_filename,
    run_model_filename,
)
from xbkg.cube import FovSpec, make_run_cube
from xbkg.errors import BackgroundWarning, ConfigError, DataStoreError, plural
from xbkg.grouping import (
    GroupAxis,
    assign_groups,
    group_definitions,
    grouping_description,
    nearest_group,
)
from xbkg.io.catalog import catalog_regions
from xbkg.io.datastore import DataStore, run_table, write_index
from xbkg.io.outputs import all_or_nothing, check_outputs
from xbkg.io.store import write_group_def, write_model_fits, write_run_model_files
from xbkg.model import (
    DEFAULT_SMOOTHING,
    SmoothingMethod,
    SolidAngle,
    compute_rate,
    fill_unconstrained,
    smooth,
    stack_groups,
)
from xbkg.options import PRESETS, Background, Options, options_for
from xbkg.regions import SOURCE_DIM, combine_regions
from xbkg.validation import ModelBuilder

__all__ = [
    "Models",
    "build_background",
    "builder_for",
    "conditions_builder",
    "export_models",
    "file_rate",
    "fov_builder_for",
    "grouped_builder",
    "index_rates",
    "model_files",
    "models_from_cube",
    "run_models",
    "write_background",
    "write_model_files",
]


def build_background(
    store: DataStore,
    runs: xr.Dataset,
    *,
    regions: xr.Dataset | None = None,
    options: Options | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    progress: Callable[[int, int, int], None] | None = None,
    skip_bad_runs: bool = False,
    verify: bool = True,
) -> Background:
    """Build grouped raw and smoothed background models from runs.

    Runs are used in OBS_ID order, whatever their order in ``runs``, so that
    the models (sums of floating-point numbers) do not depend on the order of
    the obs-index.

    Parameters
    ----------
    store
        The input data store.
    runs
        The runs to build from (a run table, possibly selected).
    regions
        Exclusion circles (:func:`xbkg.regions.exclusion_circles`,
        :func:`xbkg.io.catalog.read_catalog`, ...) excluded in addition to the
        catalogues of ``options.exclude`` (by default the shipped gamma-cat;
        set ``exclude=()`` to exclude only these), or None. The result's
        ``regions`` holds all circles used.
    options
        Choices; default ``PRESETS["default"]``.
    workers
        Number of local processes that bin the runs (1: in this process). The
        result does not depend on it.
    scheduler
        Address of a running dask.distributed scheduler that bins the runs
        instead of local processes (e.g. ``"tcp://host:8786"``); default None.
        The result does not depend on it.
    progress
        Called as ``progress(i, n, obs_id)`` after each run.
    skip_bad_runs
        Build without the runs that cannot be used instead of stopping at the
        first; they are listed, with the reason, in
        ``cube.attrs["skipped_runs"]`` (JSON) and in the archive.
    verify
        Check the gzip checksum of every event file (:func:`xbkg.cube.make_run_cube`).

    Raises
    ------
    RunsFailedError, DataStoreError
        For unusable runs (:func:`xbkg.cube.make_run_cube`).
    """
    options = options or PRESETS["default"]
    # Unknown grouping columns fail here, before the pass over the events.
    assign_groups(runs, group_definitions(options.grouping))
    known = catalog_regions(options.exclude, min_radius=options.min_radius)
    if known is not None:
        regions = known if regions is None else _add_regions(known, regions)
    plan = None if options.energy_edges is not None else _plan_energy_edges(runs, options)
    fov = None
    if options.bkg_class == "bkg_3d":
        options, fov = _fov_binning(options)
    cube = make_run_cube(
        store,
        runs.sortby(OBS_DIM),
        energy_edges=options.energy_edges if plan is None else plan.edges,
        offset_edges=options.offset_edges,
        regions=regions,
        time=options.time,
        safe_energy=options.safe_energy,
        method=options.exclusion_method,
        workers=workers,
        scheduler=scheduler,
        progress=progress,
        skip_bad_runs=skip_bad_runs,
        verify=verify,
        fov=fov,
    )
    if plan is not None:
        cube = _trim_energy(cube, plan)
        options = dataclasses.replace(options, energy_edges=tuple(edges(cube, ENERGY_DIM)))
    if fov is not None:
        options = _fov_alignment(options, cube)
    cube.attrs["options"] = options.to_json()
    models = models_from_cube(cube, options)
    cube = cube.assign_coords(
        group_id=assign_groups(cube, models.groups).assign_attrs(
            long_name="GROUP_ID the run was stacked into (-1: in no group)"
        )
    )
    bkg = Background(
        cube, models.groups, models.model, models.smoothed, regions, options, models.conditions
    )
    if fov is not None:
        bkg = dataclasses.replace(bkg, fov_shape=fov_shape_of(bkg))
    return bkg


def _fov_binning(options: Options) -> tuple[Options, FovSpec]:
    """The field-of-view edges of a ``bkg_3d`` build resolved, and its binning.

    Events are always binned in the ALTAZ frame, where the acceptance's
    asymmetries are fixed; RADEC models are made from it run by run.
    """
    from xbkg.axes import fov_edges

    bin_edges = options.fov_edges or tuple(float(e) for e in fov_edges())
    resolved = dataclasses.replace(options, fov_edges=bin_edges)
    return resolved, FovSpec(bin_edges, bin_edges, "ALTAZ")


def _fov_alignment(options: Options, cube: xr.Dataset) -> Options:
    """The alignment of a ``bkg_3d`` build resolved from its runs' EVENTS headers.

    Default: RADEC if Gammapy 2.1 reads any run's models lon-reversed (the
    cube's ``gammapy_reversed_lon``, from the headers the binning read), else
    ALTAZ. An explicit ALTAZ on such runs warns: Gammapy would read it wrongly.
    """
    flags = cube["gammapy_reversed_lon"].values.astype(bool)
    flagged = [int(o) for o in cube[OBS_DIM].values[flags]]
    alignment = options.fov_alignment
    if alignment is None:
        alignment = "RADEC" if flagged else "ALTAZ"
    elif alignment == "ALTAZ" and flagged:
        warnings.warn(
            f"{plural(len(flagged), 'run')} (OBS_IDs {flagged[:5]}"
            f"{'...' if len(flagged) > 5 else ''}) "
            "have EVENTS headers flagged like the H.E.S.S. DL3 DR1 release (CREATOR 'SASH FITS::"
            "EventListWriter', HDUVERS '0.2'), for which Gammapy 2.1 reads every background "
            "model as RADEC with fov_lon reversed, whatever its FOVALIGN: it will read these "
            "ALTAZ models wrongly. Leave out --fov-alignment (fov_alignment=None) to get RADEC "
            "models written in the orientation Gammapy then applies",
            BackgroundWarning,
            stacklevel=3,
        )
    return dataclasses.replace(options, fov_alignment=alignment)


def _obs_ids(runs: xr.Dataset) -> list[int]:
    return [int(o) for o in runs[OBS_DIM].values]


def _cube_runs(cube: xr.Dataset) -> xr.Dataset:
    """The run table columns of a cube (its ``obs_id`` coordinates) as a run table."""
    columns = [c for c in cube.coords if cube[c].dims == (OBS_DIM,) and c != OBS_DIM]
    return xr.Dataset({c: cube[c].variable for c in columns}, coords={OBS_DIM: cube[OBS_DIM]})


def fov_shape_of(bkg: Background) -> xr.DataArray:
    """The field-of-view shape factor of a ``bkg_3d`` build (:func:`xbkg.fov_model.fov_shape`).

    The counts the radial models predict in each pixel of each run, summed
    over runs, against the field-of-view counts of the cube (ALTAZ frame).
    Each run's radial rate is the one it gets in the written store
    (:func:`index_rates`). The shape carries, as the coordinate
    ``altitude_gradient`` (with the attribute ``tan_zenith_ref``), how its
    gradient along altitude grows with the zenith angle
    (:func:`xbkg.fov_model.altitude_gradient`, :func:`xbkg.fov_model.run_shape`).
    """
    from xbkg.fov_model import altitude_gradient, fov_shape, predicted_fov_counts

    cube = bkg.cube
    radial = index_rates(bkg, _cube_runs(cube))
    time = cube[bkg.options.time].values.astype(np.float64)
    energy_ok = (cube["exposure_time"].max(OFFSET_DIM) > 0).values
    tan_zenith = _tan_zenith(cube)
    usable = np.isfinite(tan_zenith)
    reference = float(np.average(tan_zenith[usable], weights=time[usable])) if usable.any() else 0.0
    tilt = np.where(usable, tan_zenith - reference, 0.0)
    sums = predicted_fov_counts(radial, cube, time=time, energy_ok=energy_ok, tilt=tilt)
    shape = fov_shape(cube["fov_counts"].sum(OBS_DIM), sums["predicted"])
    gradient = altitude_gradient(sums, shape)
    shape = shape.assign_coords(altitude_gradient=gradient)
    shape.attrs["tan_zenith_ref"] = reference
    return shape


def _tan_zenith(runs: xr.Dataset) -> NDArray[np.float64]:
    """``tan(ZEN_PNT)`` of each run (NaN where unknown)."""
    if "zen_pnt" not in runs.coords and "zen_pnt" not in runs:
        return np.full(runs.sizes[OBS_DIM], np.nan)
    return np.tan(np.deg2rad(np.asarray(runs["zen_pnt"].values, dtype=np.float64)))


class Models(NamedTuple):
    """The models of a run cube (:func:`models_from_cube`), as in :class:`Background`."""

    groups: xr.Dataset
    model: xr.Dataset
    smoothed: xr.Dataset
    conditions: xr.Dataset | None


def models_from_cube(
    cube: xr.Dataset, options: Options, *, fit_options: Mapping[str, Any] | None = None
) -> Models:
    """The models :func:`build_background` builds from a run cube.

    The runs are stacked per group of ``options.grouping``, the group rates
    computed and smoothed (``options.smoothing``, ``options.solid_angle``),
    the unconstrained bins of the smoothed models filled if
    ``options.fill_unconstrained`` (:func:`fill_model`), and, if
    ``options.model == "conditions"``, the condition model fitted
    (:func:`xbkg.conditions.fit_conditions`). The options that shape the cube
    (binning, time convention, safe energy, exclusion) are the cube's.

    Parameters
    ----------
    cube
        Run cube (:func:`xbkg.cube.make_run_cube`).
    options
        The options of the build.
    fit_options
        Further arguments of :func:`xbkg.conditions.fit_conditions` (e.g.
        ``period_days=None``), overriding those from ``options``.

    Returns
    -------
    Models
        ``(groups, model, smoothed, conditions)``: the group definitions, the
        raw and the smoothed group models, and the condition model or None.

    Raises
    ------
    ConfigError
        If no run falls into any group.
    """
    groups = group_definitions(options.grouping)
    if not (assign_groups(cube, groups).values >= 0).any():
        ranges = ", ".join(f"{a.column} {_run_range(cube, a.column)}" for a in options.grouping)
        grouping = grouping_description(options.grouping)
        raise ConfigError(
            f"no run falls into any group of the grouping {grouping}; "
            f"the runs have {ranges}: change the group edges or values (grouping=)"
        )
    model = compute_rate(stack_groups(cube, groups), solid_angle=options.solid_angle)
    model.attrs["options"] = options.to_json()
    smoothed = smooth(model, options.smoothing)
    if options.fill_unconstrained:
        smoothed = fill_model(smoothed, solid_angle=options.solid_angle)
    conditions = None
    if options.model == "conditions":
        from xbkg.conditions import fit_conditions

        arguments = {"smoothing": options.smoothing, "solid_angle": options.solid_angle}
        conditions = fit_conditions(cube, **{**arguments, **(fit_options or {})})
        conditions.attrs["options"] = options.to_json()
    return Models(groups, model, smoothed, conditions)


def _add_regions(known: xr.Dataset, given: xr.Dataset) -> xr.Dataset:
    """The catalogue circles and the given ones, without given circles equal to a catalogue's.

    Regions read from the default catalogue and given again (as scripts did
    before it was the default) are thus excluded once, not twice.
    """
    key = ("ra", "dec", "radius")
    seen = {tuple(float(known[k].values[i]) for k in key) for i in range(known.sizes[SOURCE_DIM])}
    new = [
        i
        for i in range(given.sizes[SOURCE_DIM])
        if tuple(float(given[k].values[i]) for k in key) not in seen
    ]
    return combine_regions(known, given.isel({SOURCE_DIM: new})) if new else known


@dataclass(frozen=True)
class _EnergyPlan:
    """Energy edges of the binning pass when the edges come from the data.

    ``edges`` run from grid point ``k_lo`` to ``k_hi`` (``10**(k / n)`` TeV);
    ``search_lo`` / ``search_hi``: that side reaches into
    :data:`ENERGY_SEARCH_RANGE` and is cut back to the events afterwards.
    ``reasons``: what decided each side, for :data:`ENERGY_BINNING_ATTR`.
    """

    edges: tuple[float, ...]
    k_lo: int
    k_hi: int
    search_lo: bool
    search_hi: bool
    reasons: tuple[str, str]


#: Run-cube (and archive) attribute: how the energy edges were chosen.
ENERGY_BINNING_ATTR = "energy_binning"


def _grid_k(energy: float, side: Literal["lo", "hi"]) -> int:
    """Index ``k`` of the grid point at or below (``lo``) or at or above (``hi``) ``energy``."""
    x = float(np.log10(energy)) * ENERGY_GRID_PER_DECADE
    # Values within rounding of a grid point are on it (0.1 TeV is k = -5).
    return int(np.floor(x + 1e-9)) if side == "lo" else int(np.ceil(x - 1e-9))


def _grid_range(energies: tuple[float, float]) -> tuple[int, int]:
    """Grid indices of the smallest grid range covering ``energies`` (lo, hi)."""
    return _grid_k(energies[0], "lo"), _grid_k(energies[1], "hi")


def _grid_edges(k_lo: int, k_hi: int) -> tuple[float, ...]:
    n = ENERGY_GRID_PER_DECADE
    return tuple(energy_edges(10.0 ** (k_lo / n), 10.0 ** (k_hi / n), k_hi - k_lo))


def _plan_energy_edges(runs: xr.Dataset, options: Options) -> _EnergyPlan:
    """Edges for the binning pass of the runs when ``options.energy_edges`` is None.

    Each side comes from the runs' safe energy range when every run has one
    (and ``options.safe_energy``), else from the events (searched).
    """
    default_lo, default_hi = _grid_range(DEFAULT_ENERGY_RANGE)
    search_lo, search_hi = _grid_range(ENERGY_SEARCH_RANGE)
    sides = []
    for column, side, default, search in (
        ("safe_energy_lo", "lo", default_lo, search_lo),
        ("safe_energy_hi", "hi", default_hi, search_hi),
    ):
        values = (
            np.asarray(runs[column].values, dtype=np.float64)
            if column in runs.variables
            else np.full(runs.sizes[OBS_DIM], np.nan)
        )
        known = np.isfinite(values) & (values > 0)
        if options.safe_energy and values.size and known.all():
            value = float(values.min() if side == "lo" else values.max())
            k = _grid_k(value, "lo" if side == "lo" else "hi")
            k = min(k, default) if side == "lo" else max(k, default)
            word = "lowest" if side == "lo" else "highest"
            sides.append((k, False, f"{word} {column.upper()} {value:.3g} TeV"))
        else:
            why = "safe_energy is off" if not options.safe_energy else f"no {column.upper()}"
            sides.append((search, True, f"{why}: from the events"))
    (k_lo, s_lo, r_lo), (k_hi, s_hi, r_hi) = sides
    return _EnergyPlan(_grid_edges(k_lo, k_hi), k_lo, k_hi, s_lo, s_hi, (r_lo, r_hi))


def _trim_energy(cube: xr.Dataset, plan: _EnergyPlan) -> xr.Dataset:
    """Drop the searched energy bins beyond the outermost binned events (and the default range).

    The dropped bins hold no counts in any run, so nothing changes but the axis.
    """
    per_bin = cube["counts"].sum([d for d in cube["counts"].dims if d != ENERGY_DIM]).values
    used = np.flatnonzero(per_bin > 0)
    default_lo, default_hi = _grid_range(DEFAULT_ENERGY_RANGE)
    first, last = plan.k_lo, plan.k_hi  # grid index of the first and the last edge
    if plan.search_lo:
        first = min(default_lo, plan.k_lo + int(used[0]) if used.size else default_lo)
    if plan.search_hi:
        last = max(default_hi, plan.k_lo + int(used[-1]) + 1 if used.size else default_hi)
    cube = cube.isel({ENERGY_DIM: slice(first - plan.k_lo, last - plan.k_lo)})
    cube.attrs[ENERGY_BINNING_ATTR] = "from the data: " + "; ".join(plan.reasons)
    return cube


def fill_model(model: xr.Dataset, *, solid_angle: SolidAngle = "exact") -> xr.Dataset:
    """A model whose unconstrained bins hold a smooth continuation, and a ``filled`` mask.

    The bins with exposure and a positive rate are kept; the others are
    filled by :func:`xbkg.model.fill_unconstrained`, their ``rate_error``
    set to NaN (the data say nothing there).
    """
    exposed = model["exposure_time"] > 0
    rate, filled = fill_unconstrained(model["rate"], exposed, solid_angle=solid_angle)
    out = model.assign(rate=rate.assign_attrs(model["rate"].attrs), filled=filled)
    if "rate_error" in model:
        out["rate_error"] = model["rate_error"].where(~filled)
    return out


def _run_range(cube: xr.Dataset, column: str) -> str:
    values = np.asarray(cube[coord_name(column)].values)
    if values.dtype.kind in "iuf":
        finite = values[np.isfinite(values)]
        return f"{finite.min():g} to {finite.max():g}" if finite.size else "no finite values"
    return str(sorted(set(values.tolist())))


def model_files(bkg: Background) -> list[str]:
    """Names of the files :func:`write_model_files` writes."""
    names = [GROUP_DEF_FILE]
    for g in populated_groups(bkg):
        names += [model_filename(g, smooth=False), model_filename(g, smooth=True)]
    if bkg.run_models is not None:
        names += [run_model_filename(int(o)) for o in bkg.run_models[OBS_DIM].values]
    return names


def write_model_files(bkg: Background, directory: str | Path) -> list[Path]:
    """Write the FITS files describing the models into ``directory``.

    The raw and the smoothed ``bkg_2d`` model of every group with runs
    (:func:`write_model_fits`) and ``group-def.fits``. Everything comes from
    ``bkg`` alone, so a :class:`Background` read back from its archive gives
    byte-identical files. Existing files are never replaced.

    Returns
    -------
    list of pathlib.Path
        The files written, in the order of :func:`model_files`.
    """
    directory = Path(directory)
    written = [write_group_def(bkg.groups, directory / GROUP_DEF_FILE)]
    raw = bkg.model
    if bkg.options.fill_unconstrained:
        raw = fill_model(raw, solid_angle=bkg.options.solid_angle)
    raw, smoothed = (m.assign(rate=file_rate(m["rate"], bkg.options)) for m in (raw, bkg.smoothed))
    for g in populated_groups(bkg):
        for model, is_smooth in ((raw, False), (smoothed, True)):
            written.append(
                write_model_fits(model, directory / model_filename(g, smooth=is_smooth), group=g)
            )
    if bkg.run_models is not None:
        version = str(bkg.cube.attrs.get("xbkg_version", __version__))
        if bkg.options.bkg_class == "bkg_3d":
            written += _write_run_fov_files(bkg, directory, version)
        else:
            run_models = bkg.run_models.assign(rate=file_rate(bkg.run_models["rate"], bkg.options))
            written += write_run_model_files(
                run_models, directory, time=bkg.options.time, version=version
            )
    return written


#: Runs whose 3D models are computed and written at a time (bounds the memory).
_FOV_CHUNK = 64


def run_fov_rates(bkg: Background, obs_ids: Sequence[int]) -> xr.DataArray:
    """The ``bkg_3d`` rate of some runs with models of their own, as written to their files.

    Each run's radial model (``run_models``) times the field-of-view shape
    factor: as measured (ALTAZ), or turned by the run's field-of-view
    rotation and averaged over the run (RADEC, :func:`xbkg.fov_model.rotated_shape`).

    Returns
    -------
    xarray.DataArray
        Along ``(obs_id, energy, fov_lon, fov_lat)`` with ``attrs["FOVALIGN"]``.
    """
    from xbkg.fov_model import fov_rates

    if bkg.run_models is None or bkg.fov_shape is None:
        raise ConfigError("run_fov_rates needs a bkg_3d build with per-run models")
    models = bkg.run_models.sel({OBS_DIM: list(obs_ids)})
    rate = fov_rates(
        bkg.fov_shape,
        models["rate"].fillna(0.0),
        alignment=bkg.options.fov_alignment or "ALTAZ",
        tan_zenith=models["tan_zenith"].values if "tan_zenith" in models else None,
        rotation=models["fov_rotation"].values if "fov_rotation" in models else None,
    )
    rate.attrs["units"] = RATE_UNIT
    return file_rate(rate, bkg.options)


def _write_run_fov_files(bkg: Background, directory: Path, version: str) -> list[Path]:
    """Write each run's ``bkg_3d`` model, a chunk of runs at a time."""
    from xbkg.io.gadf import write_bkg_3d_files
    from xbkg.io.store import run_model_headers

    assert bkg.run_models is not None
    obs_ids = _obs_ids(bkg.run_models)
    # The headers say what the files hold: the rates of file_rate().
    described = bkg.run_models
    if bkg.options.energy_nodes == "loglog":
        described = described.assign(rate=described["rate"].assign_attrs(energy_nodes="loglog"))
    headers = run_model_headers(described, time=bkg.options.time, version=version)
    reverse = bkg.run_models["reverse_lon"].values.astype(bool)
    written: list[Path] = []
    for start in range(0, len(obs_ids), _FOV_CHUNK):
        chunk = slice(start, start + _FOV_CHUNK)
        written += write_bkg_3d_files(
            run_fov_rates(bkg, obs_ids[chunk]),
            OBS_DIM,
            [directory / run_model_filename(o) for o in obs_ids[chunk]],
            headers[chunk],
            reverse_lon=[bool(r) for r in reverse[chunk]],
        )
    return written


def _with_fov_orientation(
    bkg: Background, store: DataStore, models: xr.Dataset, runs: xr.Dataset
) -> xr.Dataset:
    """Add to per-run models what their ``bkg_3d`` files need from the data store.

    ``tan_zenith``: ``tan(ZEN_PNT)`` of each run (:func:`xbkg.fov_model.run_shape`);
    ``fov_rotation``: each run's RADEC-to-ALTAZ rotation during the run, and
    ``reverse_lon``: whether Gammapy 2.1 reads the run's models with
    ``fov_lon`` reversed (:func:`xbkg.io.datastore.gammapy_reverses_lon`);
    both from the cube, or, for a run that was not binned, from one read of
    its EVENTS header.
    """
    from xbkg.cube import ROTATION_SAMPLES

    obs_ids = _obs_ids(models)
    cube = bkg.cube
    row = {o: i for i, o in enumerate(_obs_ids(cube))}
    others = _header_orientation(store, [o for o in obs_ids if o not in row], ROTATION_SAMPLES)
    binned_rotation = cube["fov_rotation"].transpose(OBS_DIM, ...).values
    binned_flags = cube["gammapy_reversed_lon"].values.astype(bool)
    rotation = np.array(
        [binned_rotation[row[o]] if o in row else others[o][0] for o in obs_ids]
    ).reshape(len(obs_ids), ROTATION_SAMPLES)
    flags = np.array(
        [bool(binned_flags[row[o]]) if o in row else others[o][1] for o in obs_ids], dtype=bool
    )
    return models.assign(
        tan_zenith=(
            OBS_DIM,
            _tan_zenith(runs.sel({OBS_DIM: obs_ids})),
            {"long_name": "tan(ZEN_PNT) of the run (the shape's altitude gradient grows with it)"},
        ),
        fov_rotation=((OBS_DIM, "rotation_sample"), rotation, dict(cube["fov_rotation"].attrs)),
        reverse_lon=(
            OBS_DIM,
            flags,
            {"long_name": "Gammapy 2.1 reads this run's models with fov_lon reversed"},
        ),
    )


def _header_orientation(
    store: DataStore, obs_ids: Sequence[int], samples: int
) -> dict[int, tuple[NDArray[np.float64], bool]]:
    """Per run, from one read of its EVENTS header: the field-of-view rotation at ``samples``
    times spread over the run, and whether Gammapy 2.1 reads its models lon-reversed."""
    from xbkg.fov import track_from_header
    from xbkg.io.datastore import event_locations, gammapy_reverses_lon
    from xbkg.io.fitsread import DamagedFile, read_table

    locations = event_locations(store) if obs_ids else {}
    out = {}
    for obs_id in obs_ids:
        path, hdu = locations[obs_id]
        try:
            cards, _, _ = read_table(path, hdu, (), verify=False)
        except DamagedFile as exc:
            raise DataStoreError(f"OBS_ID {obs_id}: {path}: {exc}") from exc
        tstart, tstop = float(cards.get("TSTART")), float(cards.get("TSTOP"))
        times = tstart + (np.arange(samples) + 0.5) * (tstop - tstart) / samples
        rotation = track_from_header(cards, str(path)).rotation_angle(times)
        out[obs_id] = (rotation, gammapy_reverses_lon(cards))
    return out


def file_rate(rate: xr.DataArray, options: Options) -> xr.DataArray:
    """A model's rate as its files hold it (``options.energy_nodes``).

    ``"loglog"``: the nodes whose log-log interpolant, which Gammapy
    integrates, has the model's mean over every energy bin
    (:func:`xbkg.prediction.loglog_nodes`); ``"mean"``: the rate itself.
    """
    if options.energy_nodes == "mean":
        return rate
    from xbkg.prediction import loglog_nodes

    return loglog_nodes(rate)


def export_models(bkg: Background, out_dir: str | Path, *, overwrite: bool = False) -> list[Path]:
    """Write the model files of ``bkg`` into ``out_dir``, all or nothing.

    The files are those of :func:`write_model_files`. This is ``xbkg
    export``: with ``bkg = read_archive("background.nc")`` it regenerates the
    files ``xbkg make`` wrote, byte for byte.

    Raises
    ------
    OutputExistsError
        If ``out_dir`` holds files and ``overwrite`` is false (nothing is written).
    """
    out_dir = Path(out_dir)
    names = model_files(bkg)
    all_or_nothing(out_dir, names, overwrite, lambda stage: write_model_files(bkg, stage))
    return [out_dir / n for n in names]


def populated_groups(bkg: Background) -> list[int]:
    """GROUP_IDs with at least one run (only these get model files)."""
    n_runs = bkg.model["n_runs"]
    return [int(g) for g in n_runs[GROUP_DIM].values[n_runs.values > 0]]


def index_assignment(
    bkg: Background, runs: xr.Dataset
) -> tuple[dict[int, int], list[tuple[int, int, int]]]:
    """The model group each run of ``runs`` uses in the HDU index.

    Returns ``({obs_id: group}, [(obs_id, own_group, used_group), ...])``; the
    list holds the runs that got another group's model.
    """
    populated = populated_groups(bkg)
    own = assign_groups(runs, bkg.groups)
    has_model = np.isin(own.values, populated)
    used = own.values.copy()
    if not has_model.all():
        nearest = nearest_group(runs, bkg.groups, populated).values
        used = np.where(has_model, own.values, nearest)
    moved = [
        (int(o), int(g), int(u))
        for o, g, u, ok in zip(runs[OBS_DIM].values, own.values, used, has_model, strict=True)
        if not ok
    ]
    return {int(o): int(g) for o, g in zip(runs[OBS_DIM].values, used, strict=True)}, moved


def reassignment_summary(bkg: Background, moved: Sequence[tuple[int, int, int]]) -> str:
    """One sentence on the runs whose group has no model: how many, the rule, the first few.

    ``moved`` is the list of :func:`index_assignment`; the full list is in the
    archive (``obs_id_reassigned``).
    """
    n_none = sum(1 for _, own, _ in moved if own < 0)
    where = []
    if n_none:
        where.append(f"{n_none} in no group")
    if len(moved) > n_none:
        where.append(f"{len(moved) - n_none} in a group without runs")
    first = ", ".join(str(o) for o, _, _ in moved[:5])
    more = f" and {len(moved) - 5} more" if len(moved) > 5 else ""
    used = sorted({u for _, _, u in moved})
    grouping = grouping_description(bkg.options.grouping)
    return (
        f"{plural(len(moved), 'run')} of the data store ({', '.join(where)} of the grouping "
        f"{grouping}) have no model of their group: each uses the model "
        f"of the nearest group with runs in the grouping variables (group(s) {used}); "
        f"OBS_IDs {first}{more} (all listed in the archive)"
    )


def output_files(bkg: Background) -> list[str]:
    """Names of the files :func:`write_background` writes."""
    return [*model_files(bkg), OBS_INDEX_FILE, HDU_INDEX_FILE, ARCHIVE_FILE]


def write_background(
    bkg: Background,
    store: DataStore,
    out_dir: str | Path,
    *,
    all_runs: xr.Dataset | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the models and make ``out_dir`` a data store; all or nothing.

    Parameters
    ----------
    bkg
        Output of :func:`build_background`.
    store
        The input data store (its runs all get an index entry).
    out_dir
        Output folder (created if needed).
    all_runs
        Run table of every run of the input store (for the index); read from
        ``store`` if not given.
    overwrite
        Replace files of the same names in ``out_dir``.

    Returns
    -------
    dict
        ``out_dir``, ``files`` (names written), ``reassigned`` (``(obs_id,
        own group, group used)`` of the runs whose group has no model) and
        ``background``: ``bkg`` with its per-run models.

    Raises
    ------
    OutputExistsError
        If ``out_dir`` holds files and ``overwrite`` is false (nothing is written).
    OutputError
        If the files cannot be written (nothing is changed in ``out_dir``).
    ConfigError
        If ``options.missing_group == "error"`` and some run's group has no model.
    """
    from xbkg.io.hdu_index import make_hdu_index, make_obs_index
    from xbkg.io.netcdf import write_archive

    out_dir = Path(out_dir)
    check_outputs(out_dir, output_files(bkg), overwrite)
    if all_runs is None:
        all_runs = run_table(store)
    if bkg.run_models is None and bkg.conditions is not None:
        # In OBS_ID order, whatever the order of the obs-index (outputs must not depend on it).
        models = run_models(bkg, all_runs.sortby(OBS_DIM))
        if models is not None and bkg.options.bkg_class == "bkg_3d":
            models = _with_fov_orientation(bkg, store, models, all_runs)
        bkg = dataclasses.replace(bkg, run_models=models)
    names = output_files(bkg)
    assignment, moved = index_assignment(bkg, all_runs.sortby(OBS_DIM))
    if bkg.run_models is not None:  # runs with a model of their own keep it
        own = set(bkg.run_models[OBS_DIM].values.tolist())
        moved = [m for m in moved if m[0] not in own]
    if moved and bkg.options.missing_group == "error":
        raise ConfigError(
            f"{reassignment_summary(bkg, moved)}; add runs to those groups, change the "
            "grouping, or let such runs use the nearest group's model (missing_group='nearest')"
        )
    if moved:
        warnings.warn(reassignment_summary(bkg, moved), BackgroundWarning, stacklevel=2)
    smooth_index = bkg.options.index_model == "smooth"
    files = {o: model_filename(g, smooth=smooth_index) for o, g in assignment.items()}
    classes = dict.fromkeys(files, BKG_2D_HDU_CLASS)
    if bkg.run_models is not None:
        files.update({int(o): run_model_filename(int(o)) for o in bkg.run_models[OBS_DIM].values})
        own_class = BKG_3D_HDU_CLASS if bkg.options.bkg_class == "bkg_3d" else BKG_2D_HDU_CLASS
        classes.update(dict.fromkeys(_obs_ids(bkg.run_models), own_class))

    def write(stage: Path) -> None:
        write_archive(bkg, stage / ARCHIVE_FILE, all_runs=all_runs, reassigned=moved)
        write_model_files(bkg, stage)
        hdu_index = make_hdu_index(store, out_dir, files, files_dir=stage, hdu_class=classes)
        write_index(hdu_index, stage / HDU_INDEX_FILE, "HDU_INDEX")
        write_index(make_obs_index(store), stage / OBS_INDEX_FILE, "OBS_INDEX")

    all_or_nothing(out_dir, names, overwrite, write)
    return {"out_dir": out_dir, "files": names, "reassigned": moved, "background": bkg}


def run_models(bkg: Background, runs: xr.Dataset) -> xr.Dataset | None:
    """Each run's own model from the condition model, in the options' time convention.

    The smoothed rate, or the raw one if ``options.index_model == "raw"``.
    With ``options.fill_unconstrained`` the bins that the data do not
    constrain for that run (no training exposure, or outside the run's own
    safe energy range) are filled (:func:`xbkg.model.fill_unconstrained`)
    and marked in ``filled``.

    Runs whose conditions are unknown (no finite zenith angle or muon efficiency)
    are left out with a :class:`BackgroundWarning`; they keep their group's model.

    Returns
    -------
    xarray.Dataset or None
        ``rate`` (and ``filled``) along ``(obs_id, energy, offset)``; None
        without a condition model.
    """
    from xbkg.conditions import CONDITIONS, COVARIATE_DIM, run_rate
    from xbkg.cube import safe_energy_mask

    if bkg.conditions is None:
        return None
    names = [str(c) for c in bkg.conditions[COVARIATE_DIM].values]
    columns = {c for name in names for c in CONDITIONS[name][0]}
    if bkg.options.time == "ontime":
        columns |= {"livetime", "ontime"}
    usable = np.ones(runs.sizes[OBS_DIM], dtype=bool)
    for column in sorted(columns):
        if column not in runs.variables:
            usable[:] = False
        else:
            usable &= np.isfinite(np.asarray(runs[column].values, dtype=np.float64))
    left_out = runs[OBS_DIM].values[~usable].tolist()
    if left_out:
        warnings.warn(
            f"{plural(len(left_out), 'run')} lack the conditions {names} of the condition model "
            f"(OBS_IDs {left_out}); they use their group's model",
            BackgroundWarning,
            stacklevel=2,
        )
    chosen = runs.isel({OBS_DIM: np.flatnonzero(usable)})
    model = bkg.conditions
    if bkg.options.index_model == "raw":
        model = model.assign(rate=model["rate_raw"])
    rate = run_rate(model, chosen, time=bkg.options.time)
    run_coords = [c for c in rate.coords if OBS_DIM in rate[c].dims and c != OBS_DIM]
    rate = rate.drop_vars(run_coords)
    rate.attrs["smoothing"] = str(bkg.conditions.attrs.get("smoothing", "none"))
    if not bkg.options.fill_unconstrained:
        return xr.Dataset({"rate": rate})
    constrained = np.ones(rate.shape, dtype=bool)
    if bkg.options.safe_energy:
        energy = edges(rate, ENERGY_DIM)
        nan = np.full(chosen.sizes[OBS_DIM], np.nan)
        lo = chosen["safe_energy_lo"].values if "safe_energy_lo" in chosen else nan
        hi = chosen["safe_energy_hi"].values if "safe_energy_hi" in chosen else nan
        for i, (a, b) in enumerate(zip(lo, hi, strict=True)):
            constrained[i] = safe_energy_mask(energy, float(a), float(b))[:, None]
    mask = rate.copy(data=constrained)
    filled_rate, filled = fill_unconstrained(rate, mask, solid_angle=bkg.options.solid_angle)
    return xr.Dataset({"rate": filled_rate.assign_attrs(rate.attrs), "filled": filled})


def group_summary(bkg: Background) -> list[dict[str, Any]]:
    """Per group: runs, counts, exposure (for the command-line summary)."""
    rows = []
    gid = bkg.cube["group_id"]
    for g in bkg.model[GROUP_DIM].values:
        members = gid[OBS_DIM].values[gid.values == g]
        rows.append(
            {
                "group": int(g),
                "runs": [int(x) for x in members],
                "counts": int(bkg.model["counts"].sel(group=g).sum()),
                "range": {
                    str(k): bkg.groups[k].sel(group=g).item()
                    for k in bkg.groups.coords
                    if k != GROUP_DIM
                },
            }
        )
    return rows


def index_rates(bkg: Background, runs: xr.Dataset) -> xr.DataArray:
    """The rate each run gets from the models :func:`write_background` writes for ``bkg``.

    A run with a model of its own (:func:`run_models`: a condition model, and
    the run has its conditions) gets that; the others get their group's
    model, or the nearest populated group's (:func:`index_assignment`): the
    smoothed or the raw one as ``options.index_model`` says, filled if
    ``options.fill_unconstrained``.

    Returns
    -------
    xarray.DataArray
        Rate along ``(obs_id, energy, offset)`` in the order of ``runs``, with
        ``attrs["time_convention"]``.
    """
    from xbkg.validation import run_rates

    own = run_models(bkg, runs)
    if own is not None and own.sizes[OBS_DIM] == runs.sizes[OBS_DIM]:
        return own["rate"]
    group_model = bkg.smoothed
    if bkg.options.index_model == "raw":
        group_model = bkg.model
        if bkg.options.fill_unconstrained:
            group_model = fill_model(group_model, solid_angle=bkg.options.solid_angle)
    rate = run_rates(group_model, runs)
    if own is None or own.sizes[OBS_DIM] == 0:
        return rate
    if own["rate"].attrs["time_convention"] != rate.attrs["time_convention"]:
        raise ValueError(
            f"the group models are per {rate.attrs['time_convention']}, the run models per "
            f"{own['rate'].attrs['time_convention']}: build with the cube's time convention"
        )
    where = np.flatnonzero(np.isin(runs[OBS_DIM].values, own[OBS_DIM].values))
    values = rate.values.copy()
    values[where] = own["rate"].transpose(OBS_DIM, ENERGY_DIM, OFFSET_DIM).values
    return rate.copy(data=values)


def builder_for(options: Options | None = None, **fit_options: Any) -> ModelBuilder:
    """Builder of what ``xbkg make`` builds, for :func:`xbkg.validation.crossval`.

    ``builder(train_cube, test_cube)`` builds the models of the training runs
    as :func:`build_background` does with ``options`` (:func:`models_from_cube`)
    and returns the rate each test run gets from the written store
    (:func:`index_rates`). The cube holds the options that shape it (binning,
    safe energy, exclusion); its time convention is used for ``options.time``.

    Parameters
    ----------
    options
        Default ``PRESETS["default"]`` (the condition model).
    fit_options
        Further arguments of :func:`xbkg.conditions.fit_conditions` (e.g.
        ``period_days=None``), to study variants of the condition model. A
        condition left out for lack of data is reported by the first fit only
        (the folds share it).
    """
    from xbkg.conditions import ConditionsWarning

    chosen = options or PRESETS["default"]
    warned = False

    def build(train: xr.Dataset, test: xr.Dataset) -> xr.DataArray:
        nonlocal warned
        time = cast(TimeConvention, train.attrs.get("time_convention", chosen.time))
        used = dataclasses.replace(chosen, time=time)
        with warnings.catch_warnings():
            if warned:
                warnings.simplefilter("ignore", ConditionsWarning)
            models = models_from_cube(train, used, fit_options=fit_options)
        warned = True
        groups, model, smoothed, conditions = models
        bkg = Background(train, groups, model, smoothed, None, used, conditions)
        return file_rate(index_rates(bkg, test), used)

    return build


def grouped_builder(
    grouping: Sequence[GroupAxis] | None = None,
    smoothing: SmoothingMethod = DEFAULT_SMOOTHING,
    solid_angle: SolidAngle = "exact",
) -> ModelBuilder:
    """Builder of grouped models (the classic method) for :func:`xbkg.validation.crossval`.

    :func:`builder_for` with the options of ``xbkg make --group``: the
    training runs are stacked per group (``grouping``, default the two zenith
    bands), the rate computed, smoothed and filled, and each test run gets its
    group's rate (the nearest populated group's if its own is empty).
    """
    options = options_for(
        grouping=grouping, smoothing=smoothing, solid_angle=solid_angle, model="groups"
    )
    return builder_for(options)


def conditions_builder(**fit_options: Any) -> ModelBuilder:
    """Builder of condition-dependent models for :func:`xbkg.validation.crossval`.

    :func:`builder_for` with the default options (``model="conditions"``);
    ``fit_options`` are passed to :func:`xbkg.conditions.fit_conditions`.
    """
    return builder_for(options_for(model="conditions"), **fit_options)


def fov_builder_for(options: Options) -> ModelBuilder:
    """Builder of what ``xbkg make --bkg-class bkg_3d`` builds, for 3D cross-validation.

    ``builder(train_cube, test_cube)`` builds the radial models and the
    field-of-view shape factor (:func:`fov_shape_of`) from the training runs
    of a ``bkg_3d`` cube (``build_background(..., options=...).cube``) and
    returns each test run's ``bkg_3d`` rate as :func:`run_fov_rates` writes
    it: along ``(obs_id, energy, fov_lon, fov_lat)`` in the GADF orientation,
    with ``attrs["FOVALIGN"]`` (``options.fov_alignment``, resolved as the
    build resolved it). RADEC rates are turned with each test run's
    ``fov_rotation`` from the test cube.
    """
    from xbkg.fov_model import fov_rates

    if options.bkg_class != "bkg_3d" or options.fov_alignment is None:
        raise ConfigError(
            "fov_builder_for needs the resolved options of a bkg_3d build (bkg.options)"
        )

    def build(train: xr.Dataset, test: xr.Dataset) -> xr.DataArray:
        time = cast(TimeConvention, train.attrs.get("time_convention", options.time))
        used = dataclasses.replace(options, time=time)
        groups, model, smoothed, conditions = models_from_cube(train, used)
        bkg = Background(train, groups, model, smoothed, None, used, conditions)
        bkg = dataclasses.replace(bkg, fov_shape=fov_shape_of(bkg))
        assert bkg.fov_shape is not None
        radial = index_rates(bkg, _cube_runs(test)).fillna(0.0)
        assert used.fov_alignment is not None
        rate = fov_rates(
            bkg.fov_shape,
            radial,
            alignment=used.fov_alignment,
            tan_zenith=_tan_zenith(test),
            rotation=test["fov_rotation"].values,
        )
        rate.attrs["units"] = RATE_UNIT
        return file_rate(rate, used)

    return build

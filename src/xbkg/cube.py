"""The per-run cube: one pass over the events of each run.

For every run the events are histogrammed in reconstructed energy x
field-of-view offset, leaving out events in exclusion regions and outside the
run's safe energy range, and the exposure time that each bin really saw is
recorded alongside:

``exposure_time[E, t] = T_run x (1 - excluded fraction of ring t) x safe(E)``

The result is a Dataset along ``(obs_id, energy, offset)``; every later step
(grouping, regrouping, cross-validation) is a cheap labelled reduction of it
and never re-reads events.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr
from numpy.typing import ArrayLike, NDArray

from xbkg import exclusion, regions
from xbkg._version import __version__
from xbkg.axes import bin_index, binned_coords, fov_coords
from xbkg.conventions import (
    DEFAULT_TIME_CONVENTION,
    ENERGY_DIM,
    EXCLUSION_METHODS,
    FOV_LAT_DIM,
    FOV_LON_DIM,
    OBS_DIM,
    OBS_INDEX_FILE,
    OFFSET_DIM,
    SKIPPED_ATTR,
    TIME_CONVENTIONS,
    TIME_UNIT,
    ExclusionMethod,
    FovAlignment,
    TimeConvention,
)
from xbkg.errors import ConfigError, DataStoreError, RunsFailedError
from xbkg.io.datastore import (
    UNREADABLE_ATTR,
    DataStore,
    EventList,
    event_locations,
    gammapy_reverses_lon,
    index_problems,
    read_events,
)

if TYPE_CHECKING:
    from xbkg.fov import PointingTrack

__all__ = [
    "FovSpec",
    "RunArrays",
    "RunFailure",
    "RunHistogram",
    "RunSpec",
    "bin_events",
    "make_run_cube",
    "run_specs",
    "safe_energy_mask",
]


#: Times per run at which the field-of-view rotation is recorded (``fov_rotation``).
ROTATION_SAMPLES = 16
#: Relative tolerance when comparing a safe threshold (often float32) with bin edges.
_SAFE_RTOL = 1e-5


@dataclass(frozen=True)
class RunSpec:
    """Everything the per-run pass needs to know about one run (picklable)."""

    obs_id: int
    path: str
    hdu: str
    time: float
    ra_pnt: float
    dec_pnt: float
    safe_energy_lo: float = np.nan
    safe_energy_hi: float = np.nan
    #: For an ALTAZ field-of-view binning, the run's pointing track when it was
    #: built with those of the other runs (:func:`_with_tracks`); None: the
    #: process binning the run builds it from the run's EVENTS header.
    track: PointingTrack | None = None


@dataclass(frozen=True)
class RunHistogram:
    """Result of binning one run."""

    obs_id: int
    counts: NDArray[np.int64]
    exposure_time: NDArray[np.float64]
    excluded_fraction: NDArray[np.float64]
    n_events: int
    n_invalid: int
    n_excluded: int
    n_unsafe: int
    n_outside: int
    #: With a field-of-view binning: counts (energy, fov_lon, fov_lat), int32.
    fov_counts: NDArray[np.int32] | None = None
    #: With a field-of-view binning: each pixel's unexcluded time fraction (fov_lon, fov_lat).
    fov_unexcluded: NDArray[np.float64] | None = None
    #: With an ALTAZ binning: the RADEC-to-ALTAZ rotation (deg) at times spread over the run.
    fov_rotation: NDArray[np.float64] | None = None
    #: With a field-of-view binning: Gammapy 2.1 reads the run's models lon-reversed.
    gammapy_reversed_lon: bool = False


@dataclass(frozen=True)
class FovSpec:
    """The field-of-view binning of a 3D cube: pixel edges (deg) and alignment (picklable)."""

    lon_edges: tuple[float, ...]
    lat_edges: tuple[float, ...]
    alignment: FovAlignment


def safe_energy_mask(
    energy_edges: NDArray[np.float64], safe_lo: float, safe_hi: float
) -> NDArray[np.bool_]:
    """Energy bins lying entirely inside the safe range ``[safe_lo, safe_hi]``.

    A bin straddling the threshold is dropped as a whole: counts and exposure
    must describe the same energies, and the events just above the threshold
    in that bin cannot be given an exposure without assuming a spectrum.
    NaN thresholds mean "no limit".
    """
    lo, hi = energy_edges[:-1], energy_edges[1:]
    keep = np.ones(lo.shape, dtype=bool)
    if np.isfinite(safe_lo):
        keep &= lo >= safe_lo * (1 - _SAFE_RTOL)
    if np.isfinite(safe_hi):
        keep &= hi <= safe_hi * (1 + _SAFE_RTOL)
    return keep


def _haversine(
    ra0: float, dec0: float, ra: NDArray[np.float64], dec: NDArray[np.float64]
) -> NDArray[np.float64]:
    """``sin(offset / 2)**2`` of events from the pointing (accurate at small offsets)."""
    d0 = np.deg2rad(dec0)
    dec_rad = np.deg2rad(dec)
    h = np.sin(0.5 * (dec_rad - d0))
    h *= h
    sa = np.sin(np.deg2rad(0.5 * (ra - ra0)))
    sa *= sa
    sa *= np.cos(dec_rad)
    sa *= np.cos(d0)
    h += sa
    return h


def _haversine_edges(offset_edges: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.sin(0.5 * np.deg2rad(offset_edges)) ** 2


def _vincenty_offset(
    ra0: float, dec0: float, ra: NDArray[np.float64], dec: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Offset (deg) of events from the pointing, as Gammapy 0.6 computed it.

    Gammapy 0.6 took ``events.separation(pointing)`` from astropy: the Vincenty
    formula with the event as the first point and the pointing as the second,
    differences of longitude taken in degrees before the conversion to
    radians. The same operations in the same order give the same float64
    values, so the events next to a bin edge fall on the same side as in the
    original (the haversine of :func:`_haversine` differs in the last bits).
    """
    dlon = np.deg2rad(ra0 - ra)
    sdlon, cdlon = np.sin(dlon), np.cos(dlon)
    lat1, lat2 = np.deg2rad(dec), np.deg2rad(dec0)
    slat1, clat1 = np.sin(lat1), np.cos(lat1)
    slat2, clat2 = np.sin(lat2), np.cos(lat2)
    num1 = clat2 * sdlon
    num2 = clat1 * slat2 - slat1 * clat2 * cdlon
    denominator = slat1 * slat2 + clat1 * clat2 * cdlon
    return np.rad2deg(np.arctan2(np.hypot(num1, num2), denominator))


def _gammapy06_pointing(events: EventList, spec: RunSpec) -> tuple[float, float]:
    """The pointing Gammapy 0.6 used: ``RA_PNT``/``DEC_PNT`` of the EVENTS header.

    The obs-index columns often hold the same pointing rounded to float32;
    the run table's pointing is the fallback for headers without it.
    """
    try:
        ra, dec = float(events.header["RA_PNT"]), float(events.header["DEC_PNT"])
    except (KeyError, TypeError, ValueError):
        return spec.ra_pnt, spec.dec_pnt
    if not (np.isfinite(ra) and np.isfinite(dec)):
        return spec.ra_pnt, spec.dec_pnt
    return ra, dec


def _histogram_index(values: NDArray[np.float64], edges: NDArray[np.float64]) -> NDArray[np.intp]:
    """Bin index as ``numpy.histogramdd`` gives it: half-open bins, the last one closed."""
    idx = bin_index(values, edges)
    idx[values == edges[-1]] = len(edges) - 2
    return idx


RegionsKey = tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]


def _regions_key(regions: xr.Dataset) -> RegionsKey:
    return (
        tuple(regions["ra"].values.tolist()),
        tuple(regions["dec"].values.tolist()),
        tuple(regions["radius"].values.tolist()),
    )


@functools.lru_cache(maxsize=4)
def _regions(key: RegionsKey) -> xr.Dataset:
    """The exclusion circles of a key, built once per process rather than once per pointing."""
    return regions.exclusion_circles(*key)


@functools.lru_cache(maxsize=1024)
def _exclusion_geometry(
    key: RegionsKey,
    ra_pnt: float,
    dec_pnt: float,
    offset_edges: tuple[float, ...],
    method: ExclusionMethod,
) -> tuple[xr.Dataset | None, tuple[float, float] | None, NDArray[np.float64]]:
    """Regions near one pointing, the wedge (Gammapy 0.6) and the excluded ring fractions.

    Cached: many runs share a pointing (wobble positions), and the geometry
    does not depend on the events.
    """
    regions = _regions(key) if key[0] else None
    edges = np.asarray(offset_edges)
    fraction = np.zeros(len(edges) - 1)
    if regions is None:
        return None, None, fraction
    if method == "exact":
        near = exclusion.regions_in_fov(regions, ra_pnt, dec_pnt, edges[-1])
        if near.sizes["source"] == 0:
            return None, None, fraction
        fraction = exclusion.ring_excluded_fraction(edges, near, ra_pnt, dec_pnt)
        return near, None, fraction
    wedge = exclusion.nearest_source_wedge(regions, ra_pnt, dec_pnt)
    if wedge is None:
        return None, None, fraction
    return None, wedge, np.full(len(fraction), exclusion.wedge_fraction(wedge))


def bin_events(
    events: EventList,
    spec: RunSpec,
    energy_edges: NDArray[np.float64],
    offset_edges: NDArray[np.float64],
    regions: xr.Dataset | None = None,
    *,
    safe_energy: bool = True,
    method: ExclusionMethod = "exact",
    fov: FovSpec | None = None,
) -> RunHistogram:
    """Histogram one run's events and compute the exposure time of each bin.

    Parameters
    ----------
    events
        The run's events.
    spec
        Pointing, run time and safe energy range of the run.
    energy_edges
        Energy bin edges in TeV.
    offset_edges
        Offset bin edges in deg.
    regions
        Exclusion circles (:mod:`xbkg.exclusion`), or None.
    safe_energy
        Drop counts and exposure outside the safe energy range.
    method
        ``"exact"``: remove events inside every circle overlapping the field of
        view and reduce each ring's exposure by the excluded fraction of that
        ring. ``"gammapy-0.6"``: remove the azimuthal wedge of the nearest
        source only and reduce the exposure of all bins by the wedge fraction;
        and bin as Gammapy 0.6 did, offsets from astropy's angular separation
        (Vincenty formula, float64) and the last energy and offset bins closed
        (``numpy.histogramdd``), both from the EVENTS header's pointing, so
        that events on or next to a bin edge land in the same bin as in the
        original.
    """
    n_e, n_t = len(energy_edges) - 1, len(offset_edges) - 1
    n_events = int(events.ra.size)
    # NaN or infinite values cannot be binned: dropped here and counted apart.
    valid = np.isfinite(events.ra) & np.isfinite(events.dec) & np.isfinite(events.energy)
    n_invalid = n_events - int(np.count_nonzero(valid))
    if n_invalid:
        events = dataclasses.replace(
            events, ra=events.ra[valid], dec=events.dec[valid], energy=events.energy[valid]
        )
    ra_pnt, dec_pnt = spec.ra_pnt, spec.dec_pnt
    if method == "gammapy-0.6":
        ra_pnt, dec_pnt = _gammapy06_pointing(events, spec)
    keep = np.ones(events.ra.shape, dtype=bool)
    ring_fraction = np.zeros(n_t)
    if regions is not None and regions.sizes.get("source", 0) > 0:
        near, wedge, ring_fraction = _exclusion_geometry(
            _regions_key(regions), ra_pnt, dec_pnt, tuple(offset_edges), method
        )
        if near is not None:
            keep = exclusion.outside_regions(events.ra, events.dec, near)
        elif wedge is not None:
            keep = exclusion.wedge_keep(events.ra, events.dec, ra_pnt, dec_pnt, wedge)
    n_excluded = int(np.count_nonzero(~keep))

    if method == "gammapy-0.6":
        # Exactly as Gammapy 0.6: astropy's separation, numpy.histogramdd's bins.
        e_idx = _histogram_index(events.energy, energy_edges)
        t_idx = _histogram_index(
            _vincenty_offset(ra_pnt, dec_pnt, events.ra, events.dec), offset_edges
        )
    else:
        e_idx = bin_index(events.energy, energy_edges)
        # Bin in haversine space, a monotonic function of the offset: the same bins
        # without the arcsin and square root of every event's offset.
        t_idx = bin_index(
            _haversine(spec.ra_pnt, spec.dec_pnt, events.ra, events.dec),
            _haversine_edges(offset_edges),
        )
    inside = keep & (e_idx >= 0) & (t_idx >= 0)
    n_outside = int(np.count_nonzero(keep & ~((e_idx >= 0) & (t_idx >= 0))))
    counts = np.bincount(e_idx[inside] * n_t + t_idx[inside], minlength=n_e * n_t).reshape(n_e, n_t)

    energy_ok = np.ones(n_e, dtype=bool)
    if safe_energy:
        energy_ok = safe_energy_mask(energy_edges, spec.safe_energy_lo, spec.safe_energy_hi)
    n_unsafe = int(counts[~energy_ok].sum())
    counts[~energy_ok] = 0
    exposure = spec.time * np.outer(energy_ok.astype(np.float64), 1.0 - ring_fraction)
    fov_counts = fov_unexcluded = fov_rotation = None
    reversed_lon = False
    if fov is not None:
        reversed_lon = gammapy_reverses_lon(events.cards)
        fov_counts, fov_unexcluded, fov_rotation = _bin_fov(
            events, spec, fov, energy_edges, energy_ok, keep, regions
        )
    return RunHistogram(
        obs_id=spec.obs_id,
        counts=counts.astype(np.int64),
        exposure_time=exposure,
        excluded_fraction=ring_fraction,
        n_events=n_events,
        n_invalid=n_invalid,
        n_excluded=n_excluded,
        n_unsafe=n_unsafe,
        n_outside=n_outside,
        fov_counts=fov_counts,
        fov_unexcluded=fov_unexcluded,
        fov_rotation=fov_rotation,
        gammapy_reversed_lon=reversed_lon,
    )


def _bin_fov(
    events: EventList,
    spec: RunSpec,
    fov: FovSpec,
    energy_edges: NDArray[np.float64],
    energy_ok: NDArray[np.bool_],
    keep: NDArray[np.bool_],
    regions: xr.Dataset | None,
) -> tuple[NDArray[np.int32], NDArray[np.float64], NDArray[np.float64]]:
    """A run's field-of-view counts, each pixel's unexcluded time fraction, the rotation.

    The rotation from the RADEC to the ALTAZ frame is sampled at
    :data:`ROTATION_SAMPLES` times spread evenly over the run (zeros for
    RADEC binning): a RADEC model of the run turns an ALTAZ one by it.

    Events inside the exclusion regions (``keep`` false) are left out, as in
    the radial cube. In an ALTAZ-aligned field of view each event's position
    depends on its time, and the regions turn through the field during the
    run (:func:`xbkg.fov_model.unexcluded_fraction`).

    Raises
    ------
    DataStoreError
        If the header lacks what the ALTAZ frame needs (times, site); the
        message names the file.
    """
    from xbkg import fov as fov_frames
    from xbkg import fov_model

    lon_edges, lat_edges = np.asarray(fov.lon_edges), np.asarray(fov.lat_edges)
    ra, dec = events.ra[keep], events.dec[keep]
    radius = float(fov_model.pixel_offset(lon_edges, lat_edges).max()) + 0.5
    near = None
    if regions is not None and regions.sizes.get("source", 0) > 0:
        near = exclusion.regions_in_fov(
            _regions(_regions_key(regions)), spec.ra_pnt, spec.dec_pnt, radius
        )
    to_sky: Callable[[NDArray, NDArray, NDArray], tuple[NDArray, NDArray]]
    if fov.alignment == "RADEC":
        lon, lat = fov_frames.radec_to_fov(ra, dec, spec.ra_pnt, spec.dec_pnt)
        to_sky = functools.partial(_radec_sky, spec.ra_pnt, spec.dec_pnt)
        times, rotation = np.zeros(1), np.zeros(ROTATION_SAMPLES)
    else:
        source = str(events.path)
        if events.time is None:
            raise DataStoreError(f"{source}: no TIME column in EVENTS, which ALTAZ needs")
        track = spec.track
        if track is None:  # a header without what the frame needs: the error names the file
            track = fov_frames.track_from_header(events.cards, source)
        try:
            lon, lat = track.fov_coordinates(ra, dec, events.time[keep], "ALTAZ")
        except ValueError as exc:  # event times outside the run
            raise DataStoreError(f"{source}: {exc}; fix TSTART/TSTOP or the TIME column") from exc
        to_sky = functools.partial(track.sky_coordinates, alignment="ALTAZ")
        tstart, tstop = float(events.cards.get("TSTART")), float(events.cards.get("TSTOP"))
        times = fov_model.exclusion_times(track.rotation_angle, tstart, tstop)
        samples = tstart + (np.arange(ROTATION_SAMPLES) + 0.5) * (tstop - tstart) / ROTATION_SAMPLES
        rotation = track.rotation_angle(samples)
    counts = fov_model.bin_fov(
        events.energy[keep], lon, lat, energy_edges, lon_edges, lat_edges, energy_ok
    )
    unexcluded = fov_model.unexcluded_fraction(lon_edges, lat_edges, near, to_sky, times)
    return counts, unexcluded, rotation


def _radec_sky(
    ra_pnt: float, dec_pnt: float, lon: NDArray, lat: NDArray, time: NDArray
) -> tuple[NDArray, NDArray]:
    """RA/Dec of RADEC field-of-view coordinates (``time`` only broadcast)."""
    from xbkg.fov import fov_to_radec

    lon, lat, _ = np.broadcast_arrays(lon, lat, time)
    return fov_to_radec(lon, lat, ra_pnt, dec_pnt)


def run_specs(
    store: DataStore, runs: xr.Dataset, *, time: TimeConvention = DEFAULT_TIME_CONVENTION
) -> tuple[list[RunSpec], dict[int, str]]:
    """Per-run inputs of the binning pass, from the run table, and the runs that lack them.

    Returns
    -------
    specs, problems
        A :class:`RunSpec` for every usable run, in the order of ``runs``, and
        ``{obs_id: message}`` for the others: no (or several) events rows in
        the HDU index, an unreadable EVENTS header, no positive run duration,
        a negative ``LIVETIME``/``ONTIME``, no pointing.
    """
    if time not in TIME_CONVENTIONS:
        raise ConfigError(f"time must be one of {TIME_CONVENTIONS}, got {time!r}")
    n = runs.sizes[OBS_DIM]

    def column(name: str) -> NDArray[np.float64]:
        return runs[name].values.astype(np.float64) if name in runs else np.full(n, np.nan)

    duration, ra, dec = column(time), column("ra_pnt"), column("dec_pnt")
    livetime, ontime = column("livetime"), column("ontime")
    safe_lo, safe_hi = column("safe_energy_lo"), column("safe_energy_hi")
    locations = event_locations(store)
    index = index_problems(store)
    unreadable = {int(k): v for k, v in json.loads(runs.attrs.get(UNREADABLE_ATTR, "{}")).items()}
    where = f"{store.path / OBS_INDEX_FILE} and the EVENTS header"
    problems: dict[int, str] = {}
    specs = []
    for i, obs_id in enumerate(runs[OBS_DIM].values.tolist()):
        if obs_id in index or obs_id in unreadable:
            problems[obs_id] = index.get(obs_id) or unreadable[obs_id]
            continue
        lacks = []
        if not (np.isfinite(duration[i]) and duration[i] > 0):
            lacks.append(f"{time.upper()} is {duration[i]:g}, not a positive duration")
        for name, value in (("LIVETIME", livetime[i]), ("ONTIME", ontime[i])):
            if np.isfinite(value) and value <= 0 and name.lower() != time:
                lacks.append(f"{name} is {value:g}, not a positive duration")
        if not (np.isfinite(ra[i]) and np.isfinite(dec[i])):
            lacks.append("no pointing RA_PNT/DEC_PNT")
        if lacks:
            problems[obs_id] = (
                f"OBS_ID {obs_id}: " + "; ".join(lacks) + f" (in {where}); fix the obs-index"
            )
            continue
        path, hdu = locations[obs_id]
        specs.append(
            RunSpec(
                obs_id=int(obs_id),
                path=str(path),
                hdu=hdu,
                time=float(duration[i]),
                ra_pnt=float(ra[i]),
                dec_pnt=float(dec[i]),
                safe_energy_lo=float(safe_lo[i]),
                safe_energy_hi=float(safe_hi[i]),
            )
        )
    return specs, problems


@dataclass(frozen=True)
class RunFailure:
    """A run whose events could not be used (``--skip-bad-runs``)."""

    obs_id: int
    message: str


def bin_run(
    spec: RunSpec,
    energy_edges: NDArray[np.float64],
    offset_edges: NDArray[np.float64],
    regions: xr.Dataset | None,
    *,
    safe_energy: bool,
    method: ExclusionMethod,
    verify: bool = True,
    fov: FovSpec | None = None,
) -> RunHistogram:
    """Read one run's events and bin them (the unit of work of the run loop).

    Raises
    ------
    DataStoreError
        If the events cannot be read or there are none; the message starts
        with the OBS_ID and names the file.
    """
    try:
        with_time = fov is not None and fov.alignment == "ALTAZ"
        events = read_events(spec.path, spec.hdu, verify=verify, time=with_time)
    except DataStoreError as exc:
        raise DataStoreError(f"OBS_ID {spec.obs_id}: {exc}") from exc
    if events.energy.size == 0:
        raise DataStoreError(
            f"OBS_ID {spec.obs_id}: {spec.path}: no events (the EVENTS table is empty); fix the "
            "file or leave the run out (select_runs)"
        )
    return bin_events(
        events,
        spec,
        energy_edges,
        offset_edges,
        regions,
        safe_energy=safe_energy,
        method=method,
        fov=fov,
    )


def _bin_one(spec: RunSpec, *, skip_bad_runs: bool, **kwargs: Any) -> RunHistogram | RunFailure:
    """:func:`bin_run` in the run loop; with ``skip_bad_runs`` a bad run's error is returned."""
    try:
        return bin_run(spec, **kwargs)
    except DataStoreError as exc:
        if not skip_bad_runs:
            raise
        return RunFailure(spec.obs_id, str(exc))


def make_run_cube(
    store: DataStore,
    runs: xr.Dataset,
    *,
    energy_edges: ArrayLike | None = None,
    offset_edges: ArrayLike | None = None,
    regions: xr.Dataset | None = None,
    time: TimeConvention = DEFAULT_TIME_CONVENTION,
    safe_energy: bool = True,
    method: ExclusionMethod = "exact",
    workers: int = 1,
    scheduler: str | None = None,
    progress: Callable[[int, int, int], None] | None = None,
    skip_bad_runs: bool = False,
    verify: bool = True,
    fov: FovSpec | None = None,
) -> xr.Dataset:
    """Histogram the events of the given runs into the per-run cube.

    Runs are streamed: each run's events are read, binned and dropped, so
    memory holds one run's events (per worker) plus the cube itself.

    Parameters
    ----------
    store
        The data store holding the runs.
    runs
        Run table of the runs to use (:func:`xbkg.io.datastore.run_table`,
        possibly selected); its columns become run coordinates.
    energy_edges
        Energy bin edges in TeV; default 15 log bins 0.1-100 TeV.
    offset_edges
        Offset bin edges in deg; default 99 equal-area rings to 2.5 deg.
    regions
        Exclusion circles, or None for no exclusion.
    time
        Run duration that normalises the exposure: ``"ontime"`` (GADF, default)
        or ``"livetime"`` (Gammapy 0.6, H.E.S.S. DR1 templates).
    safe_energy
        Use only energy bins inside each run's safe range (SAFE_ENERGY_LO/HI).
    method
        Exclusion geometry, ``"exact"`` or ``"gammapy-0.6"``.
    workers
        Number of local processes binning runs in parallel.
    scheduler
        Address of a running dask.distributed scheduler (``"tcp://host:8786"``)
        to bin the runs on; the event files must be readable by its workers.
    progress
        Called as ``progress(i, n, obs_id)`` after each run.
    skip_bad_runs
        Leave out the runs that cannot be used (missing or damaged event file,
        no pointing, ...) and record them, with the reason, as JSON ``{obs_id:
        message}`` in ``attrs["skipped_runs"]``, instead of raising.
    verify
        Check the gzip checksum of every event file, which needs the whole
        file decompressed (:func:`xbkg.io.datastore.read_events`); about half of
        the reading time on H.E.S.S. DR1. The process that reads a run checks
        its file.
    fov
        Also bin in the field of view: ``fov_counts`` along ``(obs_id,
        energy, fov_lon, fov_lat)`` and ``fov_unexcluded`` (each pixel's
        time fraction outside the exclusion regions) along ``(obs_id,
        fov_lon, fov_lat)``; the alignment is in ``attrs["fov_alignment"]``.

    Raises
    ------
    RunsFailedError
        Without ``skip_bad_runs``: all runs whose index entries or conditions
        are unusable, found before any event is read. With it: if no run at
        all can be used.
    DataStoreError
        Without ``skip_bad_runs``: the first run whose events cannot be read.

    Returns
    -------
    xarray.Dataset
        ``counts`` and ``exposure_time`` along ``(obs_id, energy, offset)``,
        ``excluded_fraction`` along ``(obs_id, offset)``, per-run event tallies,
        and the run table columns as ``obs_id`` coordinates. The result does
        not depend on ``workers`` or ``scheduler``: runs are assembled in
        their given order.
    """
    if method not in EXCLUSION_METHODS:
        raise ConfigError(f"method must be one of {EXCLUSION_METHODS}, got {method!r}")
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    coords = binned_coords(energy_edges, offset_edges)
    e_edges = np.append(coords["energy_lo"].values, coords["energy_hi"].values[-1])
    t_edges = np.append(coords["offset_lo"].values, coords["offset_hi"].values[-1])
    specs, problems = run_specs(store, runs, time=time)
    if problems and not skip_bad_runs:
        raise RunsFailedError(problems)
    work = functools.partial(
        _bin_one,
        skip_bad_runs=skip_bad_runs,
        energy_edges=e_edges,
        offset_edges=t_edges,
        regions=regions,
        safe_energy=safe_energy,
        method=method,
        verify=verify,
        fov=fov,
    )
    n_runs, n_e, n_t = len(specs), len(e_edges) - 1, len(t_edges) - 1
    fov_shape = None if fov is None else (len(fov.lon_edges) - 1, len(fov.lat_edges) - 1)
    arrays = RunArrays.empty(n_runs, n_e, n_t, fov_shape)
    good = np.ones(n_runs, dtype=bool)
    if fov is not None and fov.alignment == "ALTAZ" and workers == 1 and scheduler is None:
        # One process binning the runs: it builds their tracks a few runs at a time.
        results: Iterator[RunHistogram | RunFailure] = map(work, _with_tracks(specs))
    else:
        results = _map_runs(work, specs, workers=workers, scheduler=scheduler)
    for i, hist in enumerate(results):
        if isinstance(hist, RunFailure):
            problems[hist.obs_id] = hist.message
            good[i] = False
        else:
            arrays.fill(i, hist)
        if progress is not None:
            progress(i + 1, n_runs, hist.obs_id)
    if problems and not good.any():
        raise RunsFailedError(problems, skipping=True)
    if not good.all():
        arrays = arrays.select(good)
    if fov is not None:
        coords.update(fov_coords(fov.lon_edges, fov.lat_edges))
    cube = assemble_run_cube(
        arrays, runs, coords, time=time, safe_energy=safe_energy, method=method
    )
    if fov is not None:
        cube.attrs["fov_alignment"] = fov.alignment
    if problems:
        ordered = {int(o): problems[int(o)] for o in runs[OBS_DIM].values if int(o) in problems}
        cube.attrs[SKIPPED_ATTR] = json.dumps(ordered)
    return cube


#: Runs whose pointing tracks are built in one astropy call (bounds its memory: about
#: 10 kB per node, and a run near the zenith needs some 200 nodes).
_TRACK_CHUNK = 32


def _with_tracks(specs: Sequence[RunSpec]) -> Iterator[RunSpec]:
    """``specs`` with their pointing tracks, built a chunk of runs at a time from their headers.

    An astropy AltAz transformation costs partly per call: one call per 32
    runs takes half the time of one call per run on H.E.S.S. DR1 (0.45 s
    against 0.9 s for its 105 runs), reading each header (the first block of
    the file) once more included. This pays where one process bins all
    runs; with several, each builds the tracks of its own runs in parallel.
    Each track is identical to the one built from its run's header alone
    (:func:`xbkg.fov.tracks_from_headers`), so the cube does not depend on
    where it was built. If a header of a chunk cannot be read or lacks what a
    track needs, the runs of that chunk get none here: each run then builds
    its own and reports its own error, naming the file.
    """
    from xbkg.fov import tracks_from_headers
    from xbkg.io.fitsread import DamagedFile, read_table

    for start in range(0, len(specs), _TRACK_CHUNK):
        chunk = specs[start : start + _TRACK_CHUNK]
        try:
            headers = [read_table(s.path, s.hdu, (), verify=False)[0] for s in chunk]
            tracks = tracks_from_headers(headers, [s.path for s in chunk])
        except (OSError, DamagedFile, DataStoreError, ValueError):
            yield from chunk
            continue
        yield from (dataclasses.replace(s, track=t) for s, t in zip(chunk, tracks, strict=True))


def _map_runs(
    work: Callable[[RunSpec], RunHistogram | RunFailure],
    specs: Sequence[RunSpec],
    *,
    workers: int,
    scheduler: str | None,
) -> Iterator[RunHistogram | RunFailure]:
    """``work(spec)`` for every run, yielding results in the order of ``specs``.

    The one place where xbkg starts processes: a local process pool, or the
    workers of a dask.distributed scheduler.
    """
    if scheduler is not None:
        yield from _map_runs_dask(work, specs, scheduler)
    elif workers == 1 or len(specs) < 2:
        yield from map(work, specs)
    else:
        # fork (where available) starts workers without re-importing anything.
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else None)
        # Small chunks keep both workers busy to the end; map keeps the order.
        chunk = max(1, min(8, len(specs) // (4 * workers)))
        pool = None
        try:
            with _interrupts_held():
                pool = ProcessPoolExecutor(
                    max_workers=workers,
                    mp_context=context,
                    initializer=_start_worker,
                    initargs=(os.getpid(),),
                )
                results = pool.map(work, specs, chunksize=chunk)  # starts the workers
            yield from results
        except BaseException:
            # A bad run, Ctrl-C or SIGTERM: drop the queued runs instead of finishing them.
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back while the body runs; they take effect when it is done.

    A pool interrupted while it starts cannot be shut down: workers already
    started but not yet known to the pool's manager thread would wait for
    runs forever, and the program with them, at exit. An interrupt arriving
    just after a fork would even be lost (Python ignores exceptions raised by
    its at-fork hooks). So while the pool starts, the two signals are only
    noted, and then raised again. Their handlers run in the main thread
    whatever thread the signal reaches (blocking the signals instead would
    hold them back from this thread only); in another thread nothing needs
    holding, since the interrupt is raised in the main one.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: list[int] = []
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is not None:  # None: not set from Python, cannot be restored
            previous[sig] = signal.signal(sig, lambda signum, frame: noted.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in dict.fromkeys(noted):
            signal.raise_signal(signum)


#: ``PR_SET_PDEATHSIG`` of Linux's ``prctl``: the signal a process gets when its parent ends.
_PR_SET_PDEATHSIG = 1


def _start_worker(parent: int) -> None:
    """Set up a worker of the local pool started by the process ``parent``.

    Ctrl-C is left to the parent, which stops the pool and cleans up (a
    terminal sends it to every process of the job). SIGTERM ends a worker at
    once: a forked worker would otherwise inherit the command's handler, which
    turns SIGTERM into an exception that the pool catches and sends back.

    A worker dies with its parent. A parent killed outright (SIGKILL, as batch
    systems do) cannot stop its workers, and they would live on: waiting for
    runs that never come, or blocked writing a result into a full pipe (no
    EPIPE: the other workers hold its reading end). On Linux the kernel
    kills the worker the moment the parent ends (``PR_SET_PDEATHSIG``): that
    needs nothing from the worker, which may be stuck anywhere, even in C
    code holding the GIL. Elsewhere a thread of the worker ends it within a
    second of noticing it has a new parent (:func:`_watch_parent`): unlike a
    check between runs, it also ends a worker blocked on a pipe. A parent that
    died before either was in place is caught by the check at the end.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if not _killed_with_parent():
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if os.getppid() != parent:
        os._exit(1)


def _killed_with_parent() -> bool:
    """Have Linux send SIGKILL to this process when its parent ends; whether it will."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        done = libc.prctl(
            ctypes.c_int(_PR_SET_PDEATHSIG), ctypes.c_ulong(int(signal.SIGKILL)), 0, 0, 0
        )
    except (OSError, AttributeError):  # no prctl in this C library
        return False
    return done == 0


def _watch_parent(parent: int, interval: float = 0.5) -> None:
    """End this process as soon as its parent is no longer ``parent`` (it ended)."""
    while os.getppid() == parent:
        time.sleep(interval)
    os._exit(1)


def _map_runs_dask(
    work: Callable[[RunSpec], RunHistogram | RunFailure],
    specs: Sequence[RunSpec],
    scheduler: str,
) -> Iterator[RunHistogram | RunFailure]:
    try:
        from dask.distributed import Client
    except ImportError as exc:
        raise ImportError(
            "scheduler= needs dask.distributed: pip install 'xbkg[distributed]'"
        ) from exc
    with Client(scheduler, set_as_default=False) as client:
        futures = client.map(work, specs, pure=False)
        try:
            for future in futures:
                yield future.result()
        finally:
            client.cancel(futures)


@dataclass
class RunArrays:
    """Preallocated per-run arrays, filled run by run (the streaming accumulator)."""

    obs_id: NDArray[np.int64]
    counts: NDArray[np.int64]
    exposure_time: NDArray[np.float64]
    excluded_fraction: NDArray[np.float64]
    tallies: dict[str, NDArray[np.int64]]
    fov_counts: NDArray[np.int32] | None = None
    fov_unexcluded: NDArray[np.float64] | None = None
    fov_rotation: NDArray[np.float64] | None = None
    fov_reversed_lon: NDArray[np.bool_] | None = None

    @classmethod
    def empty(
        cls, n_runs: int, n_energy: int, n_offset: int, fov: tuple[int, int] | None = None
    ) -> RunArrays:
        """Zero arrays for ``n_runs`` runs (and ``fov`` pixels ``(n_lon, n_lat)``)."""
        return cls(
            obs_id=np.zeros(n_runs, np.int64),
            counts=np.zeros((n_runs, n_energy, n_offset), np.int64),
            exposure_time=np.zeros((n_runs, n_energy, n_offset)),
            excluded_fraction=np.zeros((n_runs, n_offset)),
            tallies={name: np.zeros(n_runs, np.int64) for name, _ in _TALLIES},
            fov_counts=None if fov is None else np.zeros((n_runs, n_energy, *fov), np.int32),
            fov_unexcluded=None if fov is None else np.zeros((n_runs, *fov)),
            fov_rotation=None if fov is None else np.zeros((n_runs, ROTATION_SAMPLES)),
            fov_reversed_lon=None if fov is None else np.zeros(n_runs, bool),
        )

    def select(self, keep: NDArray[np.bool_]) -> RunArrays:
        """The runs where ``keep`` is true."""
        return RunArrays(
            obs_id=self.obs_id[keep],
            counts=self.counts[keep],
            exposure_time=self.exposure_time[keep],
            excluded_fraction=self.excluded_fraction[keep],
            tallies={name: values[keep] for name, values in self.tallies.items()},
            fov_counts=None if self.fov_counts is None else self.fov_counts[keep],
            fov_unexcluded=None if self.fov_unexcluded is None else self.fov_unexcluded[keep],
            fov_rotation=None if self.fov_rotation is None else self.fov_rotation[keep],
            fov_reversed_lon=None if self.fov_reversed_lon is None else self.fov_reversed_lon[keep],
        )

    def fill(self, i: int, hist: RunHistogram) -> None:
        """Store run ``i``'s histogram."""
        self.obs_id[i] = hist.obs_id
        self.counts[i] = hist.counts
        self.exposure_time[i] = hist.exposure_time
        self.excluded_fraction[i] = hist.excluded_fraction
        if self.fov_counts is not None and self.fov_unexcluded is not None:
            assert hist.fov_counts is not None
            assert hist.fov_unexcluded is not None
            assert self.fov_rotation is not None
            assert self.fov_reversed_lon is not None
            self.fov_counts[i] = hist.fov_counts
            self.fov_unexcluded[i] = hist.fov_unexcluded
            self.fov_rotation[i] = hist.fov_rotation
            self.fov_reversed_lon[i] = hist.gammapy_reversed_lon
        for name, _ in _TALLIES:
            self.tallies[name][i] = getattr(hist, name)


_TALLIES = (
    ("n_events", "events in the run"),
    ("n_invalid", "events with NaN or infinite energy or direction (dropped)"),
    ("n_excluded", "events inside exclusion regions"),
    ("n_unsafe", "binned events outside the safe energy range"),
    ("n_outside", "events outside the energy/offset binning"),
)


def assemble_run_cube(
    arrays: RunArrays,
    runs: xr.Dataset,
    coords: dict[str, xr.Variable],
    *,
    time: TimeConvention,
    safe_energy: bool,
    method: ExclusionMethod,
) -> xr.Dataset:
    """Label the per-run arrays: the run cube Dataset."""
    obs_ids = arrays.obs_id
    dims3 = (OBS_DIM, ENERGY_DIM, OFFSET_DIM)
    counts, exposure, fraction = arrays.counts, arrays.exposure_time, arrays.excluded_fraction

    cube = xr.Dataset(
        {
            "counts": xr.Variable(dims3, counts, {"long_name": "background counts", "units": "1"}),
            "exposure_time": xr.Variable(
                dims3,
                exposure,
                {
                    "long_name": f"exposure time ({time.upper()} x unexcluded fraction x safe)",
                    "units": TIME_UNIT,
                },
            ),
            "excluded_fraction": xr.Variable(
                (OBS_DIM, OFFSET_DIM),
                fraction,
                {"long_name": "excluded solid-angle fraction of the ring", "units": "1"},
            ),
            **{
                name: xr.Variable(
                    OBS_DIM, arrays.tallies[name], {"long_name": long_name, "units": "1"}
                )
                for name, long_name in _TALLIES
            },
        },
        coords={**coords, OBS_DIM: obs_ids},
    )
    if arrays.fov_counts is not None and arrays.fov_unexcluded is not None:
        fov_dims = (FOV_LON_DIM, FOV_LAT_DIM)
        cube["fov_counts"] = xr.Variable(
            (OBS_DIM, ENERGY_DIM, *fov_dims),
            arrays.fov_counts,
            {"long_name": "background counts per field-of-view pixel", "units": "1"},
        )
        cube["fov_unexcluded"] = xr.Variable(
            (OBS_DIM, *fov_dims),
            arrays.fov_unexcluded,
            {"long_name": "time fraction of the pixel outside exclusion regions", "units": "1"},
        )
        cube["fov_rotation"] = xr.Variable(
            (OBS_DIM, "rotation_sample"),
            arrays.fov_rotation,
            {
                "long_name": "rotation from the RADEC to the ALTAZ field of view during the run",
                "units": "deg",
            },
        )
        cube["gammapy_reversed_lon"] = xr.Variable(
            OBS_DIM,
            arrays.fov_reversed_lon,
            {"long_name": "Gammapy 2.1 reads the run's models with fov_lon reversed"},
        )
    run_coords = runs.sel({OBS_DIM: obs_ids})
    cube = cube.assign_coords({name: run_coords[name] for name in run_coords.data_vars})
    cube[OBS_DIM].attrs = dict(runs[OBS_DIM].attrs)
    cube.attrs = {
        "time_convention": time,
        "safe_energy": int(safe_energy),
        "exclusion_method": method,
        "xbkg_version": __version__,
    }
    return cube

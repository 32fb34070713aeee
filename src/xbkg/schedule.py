"""The observing campaign of a simulated data store: sites, pointings, times and conditions.

:func:`plan_runs` chooses the runs of a simulated data store as a telescope
would have taken them: fields that culminate above the requested zenith
angles (Galactic and extragalactic ones, or wobble runs around injected
sources), observed on dark nights around local midnight at the site of one of
:data:`TELESCOPES`, with realistic dead times and muon efficiencies. Their
pointings are consistent with the site, the time and the zenith angle (mean
sidereal time, no refraction: good to a few tenths of a degree), ``ONTIME =
LIVETIME / DEADC``, ``TSTOP - TSTART = ONTIME``, and ``SAFE_ENERGY_LO`` is
1.2 x the energy where the true differential rate peaks
(:func:`xbkg.truth.peak_energy`). The result is a run table along ``obs_id``,
with the columns of an obs-index in lower case.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import xarray as xr
from astropy import units as u
from astropy.coordinates import SkyCoord
from numpy.typing import NDArray

from xbkg.conventions import OBS_DIM
from xbkg.truth import Source, background_rates, destination, peak_energy

__all__ = ["MJDREFF", "MJDREFI", "TELESCOPES", "Telescope", "plan_runs"]


@dataclass(frozen=True)
class Telescope:
    """Identity and site of an instrument, as written to the headers."""

    telescop: str
    instrume: str
    n_tels: int
    geolon: float  # deg, East positive
    geolat: float  # deg
    altitude: float  # m
    prefix: str  # file name prefix of the per-HDU layout


#: Instruments ``simulate_datastore`` can pretend to be (the rate model is the same for all).
TELESCOPES: Final[dict[str, Telescope]] = {
    "HESS": Telescope("HESS", "H.E.S.S.", 4, 16.5002222, -23.2717778, 1835.0, "hess"),
    "MAGIC": Telescope("MAGIC", "MAGIC", 2, -17.890278, 28.761944, 2200.0, "magic"),
    "VERITAS": Telescope("VERITAS", "VERITAS", 4, -110.952, 31.675, 1268.0, "veritas"),
    "CTA": Telescope("CTA", "CTAO-South", 51, -70.316345, -24.683429, 2147.0, "cta"),
}

#: Mission time reference (H.E.S.S.: 2001-01-01 00:00:00 TT): integer and fractional MJD.
MJDREFI: Final = 51910
MJDREFF: Final = 0.000742870370370241
# Campaign start (2004-01-12).
_CAMPAIGN_START_MJD: Final = 53016
# TT - UT1 in 2004-2010 (about 64-66 s): used to turn mission time into sidereal time.
_DELTA_T_DAYS: Final = 65.0 / 86400.0
_SIDEREAL_DEG_PER_DAY: Final = 360.98564736629
_DARK_HALF_WINDOW_DAYS: Final = 4.0 / 24.0  # runs lie within +-4 h of local midnight
_RUN_GAP_DAYS: Final = 120.0 / 86400.0

_WOBBLE_OFFSET: Final = 0.7  # deg, pointing offset of runs on an injected source
_SAFE_ENERGY_HI: Final = 100.0  # TeV
_SAFE_ENERGY_FACTOR: Final = 1.2  # SAFE_ENERGY_LO = factor x peak of the differential rate


# --------------------------------------------------------------------------------------
# Pointings and schedule
# --------------------------------------------------------------------------------------


def _local_sidereal_time(mjd_tt: NDArray[np.float64], lon: float) -> NDArray[np.float64]:
    """Mean local sidereal time in deg (linear GMST formula, TT - UT1 taken as 65 s)."""
    gmst = 280.46061837 + _SIDEREAL_DEG_PER_DAY * (mjd_tt - _DELTA_T_DAYS - 51544.5)
    return np.mod(gmst + lon, 360.0)


def _altaz(
    ra: NDArray[np.float64], dec: NDArray[np.float64], mjd_tt: NDArray[np.float64], site: Telescope
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Geometric altitude and azimuth (deg, azimuth East of North) of (ra, dec) at a time.

    Mean sidereal time, no precession, nutation, aberration or refraction: good
    to a few tenths of a degree, which is all a pointing header needs."""
    h = np.deg2rad(_local_sidereal_time(mjd_tt, site.geolon) - ra)
    d, lat = np.deg2rad(dec), np.deg2rad(site.geolat)
    sin_alt = np.sin(lat) * np.sin(d) + np.cos(lat) * np.cos(d) * np.cos(h)
    alt = np.arcsin(np.clip(sin_alt, -1.0, 1.0))
    az = np.arctan2(
        -np.cos(d) * np.sin(h), np.sin(d) * np.cos(lat) - np.cos(d) * np.sin(lat) * np.cos(h)
    )
    return np.rad2deg(alt), np.mod(np.rad2deg(az), 360.0)


def _hour_angle(
    zenith: NDArray[np.float64], dec: NDArray[np.float64], lat: float
) -> NDArray[np.float64]:
    """Absolute hour angle (deg) at which a declination is seen at a zenith angle."""
    z, d, phi = np.deg2rad(zenith), np.deg2rad(dec), np.deg2rad(lat)
    cos_h = (np.cos(z) - np.sin(phi) * np.sin(d)) / (np.cos(phi) * np.cos(d))
    return np.rad2deg(np.arccos(np.clip(cos_h, -1.0, 1.0)))


def _uniform_cos_zenith(
    rng: np.random.Generator, n: int, lo: float | NDArray[np.float64], hi: float
) -> NDArray[np.float64]:
    # Uniform in cos(z) is uniform in solid angle on the sky; stratified so that
    # even a dozen runs cover the whole range (both default zenith groups).
    strata = (rng.permutation(n) + rng.random(n)) / max(n, 1)
    c_lo, c_hi = np.cos(np.deg2rad(hi)), np.cos(np.deg2rad(lo))
    return np.rad2deg(np.arccos(c_hi - strata * (c_hi - c_lo)))


def _field_targets(
    rng: np.random.Generator, zenith: NDArray[np.float64], galactic: NDArray[np.bool_], lat: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Random fields that culminate above the requested zenith angle.

    Galactic fields lie within 2 deg of the plane, the others at |b| > 10 deg."""
    n = zenith.size
    ra, dec = np.full(n, np.nan), np.full(n, np.nan)
    todo = np.arange(n)
    while todo.size:
        k = 64  # candidates per run and round
        lon = rng.uniform(0.0, 360.0, (todo.size, k))
        sin_b = rng.uniform(-1.0, 1.0, (todo.size, k))
        lat_b = np.rad2deg(np.arcsin(sin_b))
        plane_b = rng.uniform(-2.0, 2.0, (todo.size, k))
        b = np.where(galactic[todo, None], plane_b, lat_b)
        ok_b = galactic[todo, None] | (np.abs(b) > 10.0)
        eq = SkyCoord(l=lon * u.deg, b=b * u.deg, frame="galactic").icrs
        c_ra, c_dec = eq.ra.deg, eq.dec.deg
        ok = ok_b & (np.abs(c_dec - lat) < zenith[todo, None] - 0.1)
        found = ok.any(axis=1)
        first = np.argmax(ok, axis=1)
        rows = todo[found]
        ra[rows] = c_ra[found, first[found]]
        dec[rows] = c_dec[found, first[found]]
        todo = todo[~found]
    return ra, dec


def _schedule(
    rng: np.random.Generator,
    lst_needed: NDArray[np.float64],
    site: Telescope,
    run_length_days: float,
) -> NDArray[np.float64]:
    """Mid-run times (MJD, TT) at which each run's local sidereal time is ``lst_needed``.

    Each run goes to a random night on which that sidereal time falls within
    the dark hours around local midnight, without overlapping any other run.
    Runs too long for a night (long test runs) may be centred at any hour.
    The campaign lasts whole years, long enough that runs fill at most a
    tenth of it, so that free slots are always found."""
    n = lst_needed.size
    spacing = run_length_days + _RUN_GAP_DAYS
    usable = _DARK_HALF_WINDOW_DAYS - 0.5 * run_length_days
    if usable <= 0:
        usable = 0.5
    n_nights = 365 * max(1, math.ceil(n * max(spacing, 1.0 / 24.0) / (0.1 * 365)))
    nights = np.arange(n_nights, dtype=np.float64)
    midnight = _CAMPAIGN_START_MJD + nights - site.geolon / 360.0 + _DELTA_T_DAYS
    lst_midnight = _local_sidereal_time(midnight, site.geolon)
    taken: list[float] = []  # mid-run times placed so far, sorted
    t_mid = np.empty(n)
    for i in range(n):
        shift = (
            np.mod(lst_needed[i] - lst_midnight + 180.0, 360.0) - 180.0
        ) / _SIDEREAL_DEG_PER_DAY
        candidates = midnight + shift
        for t in candidates[rng.permutation(np.flatnonzero(np.abs(shift) <= usable))]:
            k = bisect.bisect(taken, t)
            neighbours = taken[max(k - 1, 0) : k + 1]
            if all(abs(t - o) >= spacing for o in neighbours):
                taken.insert(k, float(t))
                t_mid[i] = t
                break
        else:  # pragma: no cover - the campaign length makes this practically impossible
            raise RuntimeError("could not schedule all runs; use fewer or shorter runs")
    return t_mid


def plan_runs(
    rng: np.random.Generator,
    *,
    n_runs: int,
    livetime: NDArray[np.float64] | None,
    events_per_run: NDArray[np.int64] | None,
    zenith_range: tuple[float, float],
    site: Telescope,
    sources: Sequence[Source],
    energy_range: tuple[float, float],
    offset_max: float,
) -> xr.Dataset:
    """The runs of a simulated data store, in time (OBS_ID) order.

    Parameters
    ----------
    rng
        Random generator (the plan uses it alone, in a fixed order).
    n_runs
        Number of runs.
    livetime, events_per_run
        One of them, per run: the live time (s; the number of background
        events is then Poisson-distributed) or the exact number of background
        events (the live time then follows from the expected rate).
    zenith_range
        Zenith angles of the runs, deg: field runs uniform in ``cos(zenith)``,
        stratified.
    site
        The telescope.
    sources
        Injected sources (:func:`xbkg.truth.check_sources`): every other run is
        then a wobble run (0.7 deg) on one of them.
    energy_range, offset_max
        The simulated range of the background events (TeV, deg).

    Returns
    -------
    xarray.Dataset
        Along ``obs_id``: ``ra_pnt``, ``dec_pnt``, ``glon_pnt``, ``glat_pnt``,
        ``zen_pnt``, ``alt_pnt``, ``az_pnt`` (deg, at mid-run), ``ontime``,
        ``livetime``, ``tstart``, ``tstop`` (s, mission time), ``deadc``,
        ``muoneff``, ``safe_energy_lo``, ``safe_energy_hi`` (TeV), ``object``
        and ``n_background``, the number of background events to draw.
    """
    # Which runs look at what: with sources, every other run is a wobble run on one
    # of them; of the other runs one in three is a Galactic-plane field.
    on_source = np.zeros(n_runs, dtype=bool)
    source_index = np.full(n_runs, -1)
    if sources:
        on_source[::2] = True
        source_index[::2] = np.arange(on_source.sum()) % len(sources)
    fields = np.flatnonzero(~on_source)
    galactic = np.zeros(n_runs, dtype=bool)
    galactic[fields[1::3]] = True

    zenith = np.empty(n_runs)
    ra, dec = np.empty(n_runs), np.empty(n_runs)
    lo, hi = zenith_range
    zenith[fields] = _uniform_cos_zenith(rng, fields.size, lo, hi)
    ra[fields], dec[fields] = _field_targets(rng, zenith[fields], galactic[fields], site.geolat)
    runs_on = np.flatnonzero(on_source)
    if runs_on.size:
        src = np.asarray([sources[k][:2] for k in source_index[runs_on]], dtype=np.float64)
        wobble = np.deg2rad(90.0 * (np.arange(runs_on.size) % 4))
        ra[runs_on], dec[runs_on] = destination(
            src[:, 0], src[:, 1], np.full(runs_on.size, _WOBBLE_OFFSET), wobble
        )
        culmination = np.abs(dec[runs_on] - site.geolat)
        if np.any(culmination >= hi):
            bad = sorted({tuple(sources[k][:2]) for k in source_index[runs_on][culmination >= hi]})
            raise ValueError(
                f"sources at (ra, dec) {bad} never rise to zenith angles below {hi} deg at "
                f"{site.telescop} (latitude {site.geolat:.2f} deg); widen zenith_range"
            )
        z_lo = np.maximum(lo, culmination + 0.1)
        zenith[runs_on] = _uniform_cos_zenith(rng, runs_on.size, z_lo, hi)
    # East or West of the meridian at random.
    hour_angle = _hour_angle(zenith, dec, site.geolat) * rng.choice([-1.0, 1.0], n_runs)

    deadc = rng.uniform(0.90, 0.95, n_runs)
    muoneff = rng.uniform(0.8, 1.0, n_runs)
    if events_per_run is None:
        assert livetime is not None
        longest_live = float(np.max(livetime))
    else:
        # Live time follows from the event count: bound it from the run conditions.
        totals = background_rates(zenith, muoneff, energy_range, offset_max)
        longest_live = float(np.max(events_per_run) / np.min(totals))
    run_length = longest_live / 0.9 / 86400.0
    t_mid = _schedule(rng, np.mod(ra + hour_angle, 360.0), site, run_length)

    order = np.argsort(t_mid, kind="stable")
    ra, dec, t_mid = ra[order], dec[order], t_mid[order]
    deadc, muoneff = deadc[order], muoneff[order]
    kind_on, kind_gal, src_idx = on_source[order], galactic[order], source_index[order]
    alt, az = _altaz(ra, dec, t_mid, site)
    zen = 90.0 - alt
    if events_per_run is None:
        assert livetime is not None
        live = np.broadcast_to(livetime, (n_runs,)).astype(np.float64)
        expected = background_rates(zen, muoneff, energy_range, offset_max)
        n_background = rng.poisson(expected * live).astype(np.int64)
    else:
        n_background = np.broadcast_to(events_per_run, (n_runs,)).astype(np.int64)
        expected = background_rates(zen, muoneff, energy_range, offset_max)
        live = n_background / expected
    ontime = live / deadc
    mjd_ref = MJDREFI + MJDREFF
    tstart = np.floor((t_mid - mjd_ref) * 86400.0 - 0.5 * ontime)
    obs_id = 33000 + np.cumsum(rng.integers(1, 4, n_runs))
    gal = SkyCoord(ra=ra * u.deg, dec=dec * u.deg, frame="icrs").galactic
    names = [
        f"Source {k + 1}" if on else ("Galactic plane" if g else "Off data")
        for on, g, k in zip(kind_on, kind_gal, src_idx, strict=True)
    ]
    return xr.Dataset(
        {
            "ra_pnt": (OBS_DIM, ra),
            "dec_pnt": (OBS_DIM, dec),
            "glon_pnt": (OBS_DIM, gal.l.deg),
            "glat_pnt": (OBS_DIM, gal.b.deg),
            "zen_pnt": (OBS_DIM, zen),
            "alt_pnt": (OBS_DIM, alt),
            "az_pnt": (OBS_DIM, az),
            "ontime": (OBS_DIM, ontime),
            "livetime": (OBS_DIM, live),
            "deadc": (OBS_DIM, deadc),
            "tstart": (OBS_DIM, tstart),
            "tstop": (OBS_DIM, tstart + ontime),
            "muoneff": (OBS_DIM, muoneff),
            "safe_energy_lo": (OBS_DIM, _SAFE_ENERGY_FACTOR * peak_energy(zen)),
            "safe_energy_hi": (OBS_DIM, np.full(n_runs, _SAFE_ENERGY_HI)),
            "object": (OBS_DIM, np.array(names, dtype=str)),
            "n_background": (OBS_DIM, n_background),
        },
        coords={OBS_DIM: obs_id.astype(np.int64)},
    )

"""Background models that depend continuously on the observing conditions of each run.

Grouping runs into zenith bands gives every run of a band the same rate,
although the cosmic-ray rate above the safe threshold changes smoothly and
strongly with the zenith angle and the optical (muon) efficiency. Instead, this
model fits the dependence, per energy bin, as a log-linear Poisson regression
on the run cube:

``counts[r, E, t] ~ Poisson(live exposure[r, E, t] x dOmega_t x dE x R[E, t] x F[r, E, t])``

``log F[r, E, t] = sum_k b[E, k] x[r, E, k] + sum_j c[E, j] x[r, E, j] s(t)``

- ``R[E, t]`` is the rate at the reference conditions (the training runs'
  mean condition values), one free value per bin, smoothed afterwards
  (:func:`xbkg.model.smooth`);
- ``x[r, E, k]`` are *standardised* condition variables (zero mean, unit
  spread over the training runs; :data:`CONDITIONS`). The default is
  ``log(1 / cos(zenith))`` and ``log(MUONEFF)`` (a power law in ``cos(zenith)``
  and in the efficiency for every energy bin, which follows the normalisation
  and, bin by bin, the rise of the energy threshold with zenith angle) and
  ``(SAFE_ENERGY_LO / E)^2``, how close the bin lies to the run's own safe
  threshold, where the rate still climbs out of the turn-on;
- ``b[E, k]`` their effect on the normalisation of energy bin ``E``, smooth
  along energy; ``c[E, j]`` optional effects on the radial shape, with
  ``s(t) = (offset / 2 deg)^2``.

For fixed coefficients the ``R[E, t]`` have a closed form (observed counts of
the bin over the exposure weighted with each run's condition factor), so the
likelihood is maximised over the few coefficients only (Newton's method on the
profile likelihood, with a weak Gaussian prior of unit width on the
standardised coefficients and a penalty on their second differences along
energy, so that bins with few events borrow from their neighbours). Like any
Poisson regression with a free value per bin, the fit predicts exactly the
observed counts of every bin summed over the training runs.

Runs with an anomalous normalisation (clouds, hardware) mostly also have an
anomalous spectrum; the fit is therefore repeated with Huber weights of the
training runs, ``min(1, s / |r - median(r)|)`` of their log(observed /
predicted) ``r`` with ``s =`` :data:`DEFAULT_ROBUST_SCALE` (the reference rate
and its smoothing use the same weights).

The rate is per *live* time (events are recorded only then), so the dead-time
spread between runs does not blur it; :func:`run_rate` gives it per ONTIME by
multiplying with each run's own ``LIVETIME / ONTIME``. Two corrections of each
run's overall normalisation follow, which leave its shape unchanged:

- run-level conditions (:data:`DEFAULT_RUN_CONDITIONS`): the training runs'
  log(observed / predicted) is regressed on them (:func:`run_condition_factor`).
  The default is ``geomagnetic``, the sine of the angle between the pointing
  and the geomagnetic field at the runs' site (:data:`SITES`, found from
  ``GEOLAT``/``GEOLON`` or ``TELESCOP``; :func:`runs_site`): pointed close to
  the field (north, at about 25 deg zenith angle at the H.E.S.S. site) the
  rate is lower. When the site is unknown, or the runs come from several
  sites, the term is left out with a :class:`ConditionsWarning` (and listed
  in ``dropped_conditions``);
- an observing-period correction scales each run by the shrunk mean of what
  remains of the log(observed / predicted) of the training runs taken within
  about :data:`DEFAULT_PERIOD_DAYS` days of it (:func:`period_correction`):
  the instrument and the atmosphere drift on such time scales, and ``TSTART``
  is in every obs-index.

Each run's rate is then ``R[E, t]`` times its own condition factor, with
condition values clipped to the range the training runs covered in each
energy bin, so that the model never extrapolates.

On H.E.S.S. DR1 (61 runs with ``|GLAT_PNT| > 10 deg``, 5-fold
cross-validation averaged over five fold seeds, ``benchmarks/crossval_dr1.py``)
this model brings the run-to-run scatter of obs/pred from 0.358 (two zenith
groups) to 0.131 and the mean shape chi2/dof from 1.27 to 1.08; the
geomagnetic term accounts for 0.015 of the scatter (0.146 without), the
period correction for 0.015, the robust weights for 0.028 of the chi2/dof
(1.10 without) and the threshold proximity for 0.06 (measured before the
model files held log-log energy nodes, which moved the others by 0.02 at
most). Other obs-index columns did not help out of sample: dead time (also as
a trigger-rate proxy log((1 - DEADC) / DEADC)), azimuth as such, time trends;
nor did the geomagnetic term as a condition per energy bin (it worsens the
chi2/dof). Measured again over fold seeds 0-9 (scatter 0.126 with the
default): the correlation of log((1 - DEADC) / DEADC) with the runs'
cross-validated log(observed / predicted) is 0.18 (p = 0.16); as a condition
per energy bin it gives 0.124 (fold seed 0: 0.153, unchanged) and worsens the
chi2/dof (1.064 -> 1.073), as a run-level term 0.126; ``N_TELS`` is 4 for all
these runs. Clipping the zenith term to the training runs' range over all
energy bins instead of per bin lowers the scatter of fold seed 0 (0.153 ->
0.132) but not the average (0.128), and raises that of the held-out runs
(0.096 -> 0.117). Fitted to all 61 runs and scored on the same runs, the model
leaves a scatter of 0.116 (0.113 with the dead time); the cross-validated
log(observed / predicted) of the runs spreads by 0.12 (1.4826 x median
absolute deviation), the scatter is 0.120 without each run's first energy bin
above its threshold, far above the 0.02 of counting statistics: what else changes the
cosmic-ray rate from run to run (most likely the atmosphere's transparency)
is not in the obs-index.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from xbkg.conventions import ENERGY_DIM, OBS_DIM, OFFSET_DIM, RATE_UNIT
from xbkg.errors import XbkgWarning
from xbkg.model import (
    DEFAULT_SMOOTHING,
    SmoothingMethod,
    SolidAngle,
    bin_volume,
    compute_rate,
    smooth,
)

__all__ = [
    "CONDITIONS",
    "DEFAULT_CONDITIONS",
    "DEFAULT_ROBUST_SCALE",
    "DEFAULT_RUN_CONDITIONS",
    "DEFAULT_SHAPE_CONDITIONS",
    "SITES",
    "ConditionsWarning",
    "Site",
    "condition_values",
    "fit_conditions",
    "period_correction",
    "run_condition_factor",
    "run_rate",
    "runs_site",
]

COVARIATE_DIM = "condition"
RUN_DIM = "run_condition"
SHAPE_DIM = "shape_condition"
TRAINING_DIM = "training_run"


def _column(runs: xr.Dataset, name: str) -> NDArray[np.float64]:
    return np.asarray(runs[name].values, dtype=np.float64)[:, None]


def _secz(runs: xr.Dataset, energy_lo: NDArray[np.float64]) -> NDArray[np.float64]:
    return 1.0 / np.cos(np.deg2rad(_column(runs, "zen_pnt")))


def _near_threshold(runs: xr.Dataset, energy_lo: NDArray[np.float64]) -> NDArray[np.float64]:
    # (threshold / E)^2 at the lower edge of the energy bin: 1 at the run's safe
    # threshold, fading away above it, where the rate has left the turn-on.
    return (_column(runs, "safe_energy_lo") / energy_lo[None, :]) ** 2


class ConditionsWarning(XbkgWarning):
    """A condition had to be left out of the model (e.g. the geomagnetic term: unknown site)."""


@dataclass(frozen=True)
class Site:
    """An observatory site and the direction of the geomagnetic field there.

    Attributes
    ----------
    name
        Name used in messages and in the model's ``geomagnetic_site``.
    latitude, longitude
        Geodetic position in deg (north and east positive), matched against
        the runs' ``GEOLAT``/``GEOLON``.
    altitude
        Height above sea level in m (documentation; not used for matching).
    declination, inclination
        Direction of the field in deg: the angle of its horizontal part east
        of geographic north, and its dip below the horizontal (negative where
        it points up, in the southern magnetic hemisphere).
    telescop
        ``TELESCOP`` values (upper case) that name this site.
    """

    name: str
    latitude: float
    longitude: float
    altitude: float
    declination: float
    inclination: float
    telescop: tuple[str, ...] = ()

    @property
    def field_direction(self) -> tuple[float, float]:
        """(azimuth, altitude) in deg of the direction the field points to."""
        return self.declination % 360.0, -self.inclination


#: Known sites. Positions: the sites' published coordinates (those that Gammapy's
#: ``observatory_locations`` and the H.E.S.S. DL3 DR1 headers give). Field
#: directions: the World Magnetic Model WMM2020 (NOAA NCEI and BGS) at epoch
#: 2020.0 at each position and altitude; IGRF-13 agrees within 0.05 deg. The
#: direction drifts by about 0.1-0.2 deg per year (at H.E.S.S. in 2006:
#: declination -14.2 deg, inclination -64.4 deg), which changes the term by far
#: less than the run-to-run spread of the pointings.
SITES: dict[str, Site] = {
    site.name: site
    for site in (
        Site("H.E.S.S.", -23.271778, 16.500222, 1835.0, -12.85, -64.49, ("HESS", "H.E.S.S.")),
        Site("MAGIC", 28.761944, -17.890000, 2200.0, -5.15, 37.49, ("MAGIC",)),
        Site("VERITAS", 31.675058, -110.952158, 1268.0, 9.54, 58.14, ("VERITAS",)),
        Site(
            "CTAO-North",
            28.762164,
            -17.892005,
            2147.0,
            -5.15,
            37.49,
            ("CTAO-NORTH", "CTAO-N", "CTA-NORTH", "CTA-N"),
        ),
        Site(
            "CTAO-South",
            -24.683428,
            -70.316344,
            2150.0,
            -3.53,
            -23.62,
            ("CTAO-SOUTH", "CTAO-S", "CTA-SOUTH", "CTA-S"),
        ),
    )
}
#: Runs whose GEOLAT/GEOLON lie within this distance (km) of a known site are
#: taken to be there (the field direction changes far less over it).
SITE_MATCH_KM = 20.0
_EARTH_RADIUS_KM = 6371.0
_ADD_SITE = (
    "add GEOLAT and GEOLON (deg) and ALTITUDE (m) of the site to the obs-index header (or "
    "the EVENTS headers), or a TELESCOP naming a known site ({known})"
)


def _run_sites(runs: xr.Dataset) -> tuple[list[Site | None], list[str]]:
    """The known site of every run (None if unknown) and, per run, why it is unknown.

    ``GEOLAT``/``GEOLON`` decide when present (both 0 is a placeholder some
    writers leave, and counts as absent); else ``TELESCOP``.
    """
    n = runs.sizes[OBS_DIM]
    lat = _optional(runs, "geolat", n)
    lon = _optional(runs, "geolon", n)
    placeholder = (lat == 0.0) & (lon == 0.0)
    located = np.isfinite(lat) & np.isfinite(lon) & ~placeholder
    sites = list(SITES.values())
    site_lat = np.deg2rad([s.latitude for s in sites])
    site_lon = np.deg2rad([s.longitude for s in sites])
    with np.errstate(invalid="ignore"):
        la, lo = np.deg2rad(lat)[:, None], np.deg2rad(lon)[:, None]
        h = (
            np.sin((la - site_lat) / 2) ** 2
            + np.cos(la) * np.cos(site_lat) * np.sin((lo - site_lon) / 2) ** 2
        )
        km = 2 * _EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))
    telescop = (
        [str(t).strip().upper() for t in runs["telescop"].values]
        if "telescop" in runs.variables
        else [""] * n
    )
    by_name = {name: s for s in sites for name in s.telescop}
    out: list[Site | None] = []
    why: list[str] = []
    for i in range(n):
        if located[i]:
            j = int(np.argmin(km[i]))
            near = km[i, j] <= SITE_MATCH_KM
            out.append(sites[j] if near else None)
            why.append("" if near else f"GEOLAT {lat[i]:g}, GEOLON {lon[i]:g} is no known site")
        elif telescop[i] in by_name:
            out.append(by_name[telescop[i]])
            why.append("")
        else:
            out.append(None)
            what = f"TELESCOP {telescop[i]!r} names no single known site" if telescop[i] else ""
            why.append(what or "no GEOLAT/GEOLON or TELESCOP")
    return out, why


def _optional(runs: xr.Dataset, name: str, n: int) -> NDArray[np.float64]:
    if name not in runs.variables:
        return np.full(n, np.nan)
    return np.asarray(runs[name].values, dtype=np.float64)


def runs_site(runs: xr.Dataset) -> tuple[Site | None, str]:
    """The one known site of all runs, or None and why not (naming what to add to the data).

    The site of a run comes from its ``GEOLAT``/``GEOLON`` (the nearest of
    :data:`SITES` within :data:`SITE_MATCH_KM`) or, without them, from its
    ``TELESCOP`` (:attr:`Site.telescop`); :func:`xbkg.io.datastore.run_table`
    reads both from the obs-index or the EVENTS headers.
    """
    sites, why = _run_sites(runs)
    obs_ids = runs[OBS_DIM].values.tolist()
    unknown = [o for o, s in zip(obs_ids, sites, strict=True) if s is None]
    if unknown:
        reasons = sorted({w for w in why if w})
        first = ", ".join(map(str, unknown[:5])) + (" ..." if len(unknown) > 5 else "")
        hint = _ADD_SITE.format(known=", ".join(SITES))
        return None, (
            f"the site of {len(unknown)} of {len(obs_ids)} runs is unknown "
            f"({'; '.join(reasons)}; OBS_IDs {first}): {hint}"
        )
    names = sorted({s.name for s in sites if s is not None})
    if len(names) > 1:
        counts = ", ".join(
            f"{name} ({sum(1 for s in sites if s is not None and s.name == name)} runs)"
            for name in names
        )
        return None, (
            f"the runs come from several sites: {counts}; the strength of the effect differs "
            "between sites: build a model per site (select the runs of one)"
        )
    return (sites[0] if sites else None), ""


def _geomagnetic(runs: xr.Dataset, energy_lo: NDArray[np.float64]) -> NDArray[np.float64]:
    # sin of the angle between the pointing direction and the geomagnetic field at
    # each run's site (|B_perp| / |B| of the showers); NaN where the site is unknown.
    alt = np.deg2rad(90.0 - _column(runs, "zen_pnt"))
    az = np.deg2rad(_column(runs, "az_pnt"))
    sites, _ = _run_sites(runs)
    direction = np.array(
        [s.field_direction if s is not None else (np.nan, np.nan) for s in sites],
        dtype=np.float64,
    ).reshape(-1, 2)
    field_az, field_alt = np.deg2rad(direction[:, :1]), np.deg2rad(direction[:, 1:])
    cos_angle = np.sin(alt) * np.sin(field_alt) + np.cos(alt) * np.cos(field_alt) * np.cos(
        az - field_az
    )
    return np.sqrt(np.clip(1.0 - cos_angle**2, 0.0, None))


def _above_threshold(runs: xr.Dataset, energy_lo: NDArray[np.float64]) -> NDArray[np.float64]:
    # How far (in ln E) the lower edge of the energy bin lies above the run's safe
    # threshold: the rate just above threshold still climbs with energy.
    return np.log(energy_lo[None, :] / _column(runs, "safe_energy_lo"))


ConditionFunction = Callable[[xr.Dataset, NDArray[np.float64]], NDArray[np.float64]]

#: Condition variables: name -> (run columns needed, function of the runs and of the
#: lower energy edges, giving values broadcastable to (run, energy)).
CONDITIONS: dict[str, tuple[tuple[str, ...], ConditionFunction]] = {
    "log_secz": (("zen_pnt",), lambda runs, e: np.log(_secz(runs, e))),
    "secz": (("zen_pnt",), _secz),
    "secz2": (("zen_pnt",), lambda runs, e: _secz(runs, e) ** 2),
    "log_muoneff": (("muoneff",), lambda runs, e: np.log(_column(runs, "muoneff"))),
    "deadtime": (("deadc",), lambda runs, e: 1.0 - _column(runs, "deadc")),
    "cos_az": (("az_pnt",), lambda runs, e: np.cos(np.deg2rad(_column(runs, "az_pnt")))),
    "sin_az": (("az_pnt",), lambda runs, e: np.sin(np.deg2rad(_column(runs, "az_pnt")))),
    "geomagnetic": (("zen_pnt", "az_pnt"), _geomagnetic),
    "above_threshold": (("safe_energy_lo",), _above_threshold),
    "near_threshold": (("safe_energy_lo",), _near_threshold),
}
DEFAULT_CONDITIONS: tuple[str, ...] = ("log_secz", "log_muoneff", "near_threshold")
DEFAULT_SHAPE_CONDITIONS: tuple[str, ...] = ()
DEFAULT_RUN_CONDITIONS: tuple[str, ...] = ("geomagnetic",)
#: Ridge weight (in training runs) of the run-level normalisation regression.
RUN_PRIOR_WEIGHT = 1.0
#: Radius (deg) that scales the radial shape term s(t) = (offset / radius)^2.
SHAPE_RADIUS = 2.0
#: Width of the Gaussian prior on the standardised coefficients.
PRIOR_WIDTH = 1.0
#: Weight of the squared second difference of the coefficients along energy.
DEFAULT_ENERGY_SMOOTHNESS = 100.0
#: Time scale (days) and prior weight of the observing-period correction.
DEFAULT_PERIOD_DAYS = 10.0
#: Scale (in log(observed / predicted)) beyond which a training run is down-weighted.
DEFAULT_ROBUST_SCALE = 0.05
_ROBUST_STEPS = 2
PERIOD_PRIOR_WEIGHT = 1.0
_NEWTON_STEPS = 50


def condition_values(runs: xr.Dataset, names: Sequence[str]) -> xr.DataArray:
    """The condition variables of every run and energy bin, along ``(obs_id, energy, condition)``.

    Parameters
    ----------
    runs
        Run cube (or any Dataset along ``obs_id`` with the run columns and the
        energy edges).
    names
        Names of :data:`CONDITIONS`.

    Raises
    ------
    KeyError
        Naming the condition and the run column it needs, if missing or not
        finite (for ``geomagnetic``: the runs whose site is unknown, and what to
        add to the data).
    """
    energy_lo = np.asarray(runs["energy_lo"].values, dtype=np.float64)
    shape = (runs.sizes[OBS_DIM], energy_lo.size)
    columns = []
    for name in names:
        if name not in CONDITIONS:
            raise KeyError(f"unknown condition {name!r}; known: {sorted(CONDITIONS)}")
        needs, func = CONDITIONS[name]
        missing = [c for c in needs if c not in runs.variables]
        if missing:
            raise KeyError(f"condition {name!r} needs the run column(s) {missing}")
        with np.errstate(invalid="ignore"):
            values = np.broadcast_to(np.asarray(func(runs, energy_lo), dtype=np.float64), shape)
        if not np.all(np.isfinite(values)):
            bad = runs[OBS_DIM].values[~np.isfinite(values).all(axis=1)].tolist()
            if name == "geomagnetic" and runs_site(runs)[1]:
                raise KeyError(f"condition {name!r}: {runs_site(runs)[1]}")
            raise KeyError(f"condition {name!r}: runs {bad} have no finite {needs}")
        columns.append(values)
    data = np.stack(columns, axis=-1) if columns else np.zeros((*shape, 0))
    return xr.DataArray(
        data,
        dims=(OBS_DIM, ENERGY_DIM, COVARIATE_DIM),
        coords={OBS_DIM: runs[OBS_DIM].values, COVARIATE_DIM: list(names)},
    )


def _available(runs: xr.Dataset, name: str) -> bool:
    """Whether condition ``name`` can be computed for every run."""
    if name not in CONDITIONS:
        return True  # let condition_values name the unknown condition
    for column in CONDITIONS[name][0]:
        if column not in runs.variables:
            return False
        values = np.asarray(runs[column].values, dtype=np.float64)
        if not np.all(np.isfinite(values)):
            return False
    return True


def _run_values(runs: xr.Dataset, names: Sequence[str]) -> NDArray[np.float64]:
    """Run-level conditions along (run, k); NaN for a run that lacks a column they need."""
    out = np.full((runs.sizes[OBS_DIM], len(names)), np.nan)
    energy_lo = np.asarray(runs["energy_lo"].values[:1], dtype=np.float64)
    for k, name in enumerate(names):
        needs, func = CONDITIONS[name]
        if not all(c in runs.variables for c in needs):
            continue
        with np.errstate(invalid="ignore"):
            values = np.broadcast_to(
                np.asarray(func(runs, energy_lo), dtype=np.float64), (out.shape[0], 1)
            )
        out[:, k] = values[:, 0]
    return out


def _fit_run_conditions(
    log_ratio: NDArray[np.float64],
    predicted: NDArray[np.float64],
    values: NDArray[np.float64],
    valid: NDArray[np.bool_],
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], float]:
    """Ridge regression of the training runs' log(observed / predicted) on run-level conditions.

    Returns the mean and scale that standardise ``values``, the coefficients of
    the standardised values (ridge weight :data:`RUN_PRIOR_WEIGHT`; every run
    counts the same, as the run-to-run scatter far exceeds the Poisson noise of
    a run's total) and the intercept that keeps the training runs' total
    predicted counts (``predicted``, per run) unchanged.
    """
    k = values.shape[1]
    if k == 0 or valid.sum() < 2:
        return np.zeros(k), np.ones(k), np.zeros(k), 0.0
    x, y = values[valid], log_ratio[valid]
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    z = (x - mean) / scale
    coef = np.linalg.solve(z.T @ z + RUN_PRIOR_WEIGHT * np.eye(k), z.T @ (y - y.mean()))
    total = predicted[valid]
    intercept = float(np.log(total.sum() / (total * np.exp(z @ coef)).sum()))
    return mean, scale, coef, intercept


def _robust_weights(
    counts: NDArray[np.float64],
    exposure: NDArray[np.float64],
    factor: NDArray[np.float64],
    robust_scale: float,
) -> NDArray[np.float64]:
    """Huber weights of the training runs from their log(observed / predicted).

    The prediction is the unsmoothed fit (reference rate in closed form times
    each run's condition factor); a run whose log ratio lies more than
    ``robust_scale`` from the median gets the weight ``robust_scale / |deviation|``.
    """
    weighted = (exposure * factor).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        reference = np.where(weighted > 0, counts.sum(axis=0) / weighted, 0.0)
    log_ratio = _run_log_ratios(counts, exposure, reference[None] * factor)
    deviation = np.abs(log_ratio - np.median(log_ratio))
    return np.where(deviation > robust_scale, robust_scale / np.maximum(deviation, 1e-300), 1.0)


def _shape_profile(cube: xr.Dataset) -> NDArray[np.float64]:
    centre = 0.5 * (cube["offset_lo"].values + cube["offset_hi"].values)
    return (centre / SHAPE_RADIUS) ** 2


class _ProfileLikelihood:
    """Profile log-likelihood of all energy bins, summed, with its derivatives.

    ``counts``, ``exposure``: (run, energy, offset); ``design``: (run, energy,
    offset, p), or (run, energy, 1, p) when it does not depend on the offset.
    Profiled over the free rate of each (energy, offset) bin, the log-likelihood
    of energy bin ``E`` is ``sum n x.b_E - sum_t N_t log(sum_r e exp(x.b_E))`` (up
    to a constant), summed over the bins with events and exposure.
    """

    def __init__(
        self,
        counts: NDArray[np.float64],
        exposure: NDArray[np.float64],
        design: NDArray[np.float64],
    ) -> None:
        total = counts.sum(axis=0)
        used = (total > 0) & (exposure.sum(axis=0) > 0)  # (energy, offset)
        self.big_n = np.where(used, total, 0.0)
        n = np.where(used[None], counts, 0.0)
        self.flat = design.shape[2] == 1 and counts.shape[2] != 1
        if self.flat:
            # The design does not depend on the offset: x.b is one number per
            # (run, energy), and sum_r e exp(x.b) a product with the exposure.
            self.z = design[:, :, 0, :]
            self.linear = np.einsum("re,rep->ep", n.sum(axis=2), self.z)
            # Exposure along (energy, offset, run); 1 in the bins left out (N = 0).
            self.e = np.ascontiguousarray(np.where(used[None], exposure, 1.0).transpose(1, 2, 0))
            self.zt = np.ascontiguousarray(self.z.transpose(1, 0, 2))  # (energy, run, p)
        else:
            self.x = np.broadcast_to(design, (*counts.shape, design.shape[-1]))
            self.linear = np.einsum("ret,retp->ep", n, self.x)
            # Bins left out get weight N = 0 (and a finite log exposure, so no NaN).
            with np.errstate(divide="ignore"):
                self.log_e = np.where(used[None], np.log(np.where(used[None], exposure, 1.0)), 0.0)
        self.w = np.empty(0)
        self.norm = np.empty(0)

    def value(self, beta: NDArray[np.float64]) -> float:
        """Log-likelihood at ``beta`` (energy, p); keeps what :meth:`derivatives` needs."""
        if self.flat:
            eta = np.einsum("erp,ep->er", self.zt, beta)
            # exp(x.b) relative to its largest value per energy bin (no overflow).
            peak = eta.max(axis=1, keepdims=True)
            w = np.exp(eta - peak)  # (energy, run)
            norm = np.matmul(self.e, w[:, :, None])[:, :, 0]  # (energy, offset)
        else:
            eta = np.einsum("retp,ep->ret", self.x, beta)
            # Weights e exp(x.beta), normalised per bin in log space (no under- or overflow).
            log_w = self.log_e + eta
            peak = log_w.max(axis=0)
            w = np.exp(log_w - peak)
            norm = w.sum(axis=0)
        self.w, self.norm = w, norm
        log_sum = np.log(norm) + peak
        return float((self.linear * beta).sum() - (self.big_n * log_sum).sum())

    def derivatives(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Gradient (energy, p) and Hessian blocks (energy, p, p) at the last :meth:`value`."""
        big_n = self.big_n
        if self.flat:
            # Normalised weights w[r, E, t] = e[r, E, t] u[E, r] / norm[E, t].
            u, ratio = self.w, big_n / self.norm
            expected = u * np.matmul(ratio[:, None, :], self.e)[:, 0, :]  # (energy, run)
            uz = u[:, :, None] * self.zt
            mean = np.matmul(self.e, uz) / self.norm[:, :, None]  # (energy, offset, p)
            grad = self.linear - np.einsum("er,erp->ep", expected, self.zt)
            second = np.matmul(self.zt.transpose(0, 2, 1), expected[:, :, None] * self.zt)
        else:
            w = self.w / self.norm
            x = self.x
            mean = np.einsum("ret,retp->etp", w, x)
            grad = self.linear - np.einsum("et,etp->ep", big_n, mean)
            second = np.einsum("ret,retp,retq->epq", w * big_n, x, x)
        second -= np.matmul((big_n[..., None] * mean).transpose(0, 2, 1), mean)
        return grad, -second


def _fit_coefficients(
    counts: NDArray[np.float64],
    exposure: NDArray[np.float64],
    design: NDArray[np.float64],
    smoothness: float,
) -> NDArray[np.float64]:
    """Coefficients of all energy bins, maximising the penalised profile likelihood.

    ``counts``, ``exposure``: (run, energy, offset); ``design``: (run, energy,
    offset or 1, p). The penalty is a Gaussian prior of width
    :data:`PRIOR_WIDTH` on every coefficient plus ``smoothness`` x the squared
    second difference of each coefficient along the energy bins, so that
    coefficients vary smoothly with energy and bins with few events borrow from
    their neighbours. The objective is concave; Newton steps are halved until
    the objective improves, so the fit converges even from far away (e.g. with
    strongly correlated conditions).
    """
    n_e, p = counts.shape[1], design.shape[-1]
    if p == 0:
        return np.zeros((n_e, 0))
    second_diff = np.diff(np.eye(n_e), n=2, axis=0)
    penalty = np.asarray(
        smoothness * np.kron(second_diff.T @ second_diff, np.eye(p)), dtype=np.float64
    )
    penalty += np.eye(n_e * p) / PRIOR_WIDTH**2
    likelihood = _ProfileLikelihood(counts, exposure, design)
    bins = np.arange(n_e)

    def value_at(b: NDArray[np.float64]) -> float:
        return -0.5 * float(b @ penalty @ b) + likelihood.value(b.reshape(n_e, p))

    def derivatives(b: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        g, h = likelihood.derivatives()
        grad = g.ravel() - penalty @ b
        hess = -penalty
        hess.reshape(n_e, p, n_e, p)[bins, :, bins, :] += h
        return grad, hess

    beta = np.zeros(n_e * p)
    value = value_at(beta)
    grad, hess = derivatives(beta)
    for _ in range(_NEWTON_STEPS):
        step = np.linalg.solve(hess, -grad)
        t = 1.0
        while True:
            trial = beta + t * step
            new_value = value_at(trial)
            if new_value >= value - 1e-12 * abs(value) or t < 1e-6:
                break
            t *= 0.5
        beta, value = trial, new_value
        grad, hess = derivatives(beta)
        if np.max(np.abs(t * step)) < 1e-8:
            break
    return beta.reshape(n_e, p)


def _design(
    cube: xr.Dataset,
    values: NDArray[np.float64],
    mean: NDArray[np.float64],
    scale: NDArray[np.float64],
    conditions: Sequence[str],
    shape_conditions: Sequence[str],
) -> NDArray[np.float64]:
    """Design array (run, energy, offset, p): standardised conditions, then their shape terms.

    Without shape terms it does not depend on the offset and has a single offset
    bin, (run, energy, 1, p), which broadcasts.
    """
    z = (values - mean) / scale  # (run, energy, k)
    if not shape_conditions:
        return z[:, :, None, :]
    n_t = cube.sizes[OFFSET_DIM]
    norm_part = np.broadcast_to(z[:, :, None, :], (*z.shape[:2], n_t, z.shape[2]))
    idx = [list(conditions).index(c) for c in shape_conditions]
    shape_part = z[:, :, None, idx] * _shape_profile(cube)[None, None, :, None]
    return np.concatenate([norm_part, shape_part], axis=-1)


def _to_livetime(cube: xr.Dataset) -> tuple[NDArray[np.float64], bool]:
    """Exposure of the cube per live time, and whether it was converted.

    Events are recorded during live time only, so a rate per live time does not
    carry the run-to-run spread of the dead time. A cube normalised by ONTIME
    is converted run by run when it has both durations.
    """
    exposure = cube["exposure_time"].transpose(OBS_DIM, ENERGY_DIM, OFFSET_DIM).values
    convention = cube.attrs.get("time_convention", "ontime")
    if convention == "livetime" or not {"livetime", "ontime"} <= set(cube.variables):
        return exposure, False
    factor = cube["livetime"].values / cube["ontime"].values
    return exposure * factor[:, None, None], True


def _run_log_ratios(
    counts: NDArray[np.float64], exposure: NDArray[np.float64], expected_rate: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Per run: log(observed / predicted) over all exposed bins (0 for a run without any)."""
    predicted = np.where(exposure > 0, exposure * expected_rate, 0.0).sum(axis=(1, 2))
    observed = np.where(exposure > 0, counts, 0.0).sum(axis=(1, 2))
    ok = (predicted > 0) & (observed > 0)
    out = np.zeros(counts.shape[0])
    out[ok] = np.log(observed[ok] / predicted[ok])
    return out


def fit_conditions(
    cube: xr.Dataset,
    *,
    conditions: Sequence[str] = DEFAULT_CONDITIONS,
    shape_conditions: Sequence[str] = DEFAULT_SHAPE_CONDITIONS,
    smoothing: SmoothingMethod = DEFAULT_SMOOTHING,
    solid_angle: SolidAngle = "exact",
    energy_smoothness: float = DEFAULT_ENERGY_SMOOTHNESS,
    period_days: float | None = DEFAULT_PERIOD_DAYS,
    skip_unavailable: bool = True,
    run_conditions: Sequence[str] = DEFAULT_RUN_CONDITIONS,
    robust_scale: float | None = DEFAULT_ROBUST_SCALE,
) -> xr.Dataset:
    """Fit the condition-dependent model to a run cube.

    Parameters
    ----------
    cube
        Run cube of the training runs (with the run columns the conditions need).
    conditions
        Names of :data:`CONDITIONS` acting on the normalisation of each energy bin.
    shape_conditions
        Subset of ``conditions`` that also change the radial shape.
    smoothing
        Smoothing of the reference rate (:func:`xbkg.model.smooth`).
    solid_angle
        Ring solid angle, ``"exact"`` or ``"flat"``.
    energy_smoothness
        Weight of the squared second differences of the coefficients along energy.
    period_days
        Time scale (days) of the observing-period correction; None for none.
    skip_unavailable
        Leave out the conditions that some training run lacks (a data store
        without ``SAFE_ENERGY_LO`` or ``MUONEFF``), recording them in
        ``attrs["dropped_conditions"]``, instead of raising ``KeyError``.
    run_conditions
        Names of energy-independent :data:`CONDITIONS` acting on each run's
        overall normalisation only: after the fit per energy bin, the training
        runs' log(observed / predicted) is regressed on them (ridge weight
        :data:`RUN_PRIOR_WEIGHT`), and the period correction averages what
        remains. Being one factor per run, they leave the spectral and radial
        shape of every run unchanged.
    robust_scale
        Down-weighting of outlying training runs: the fit is repeated with
        Huber weights ``min(1, robust_scale / |r - median(r)|)`` of the runs'
        log(observed / predicted) ``r`` (twice), so that runs with an anomalous
        normalisation (clouds, hardware) and, mostly, an anomalous spectrum
        weigh less in the coefficients and the reference rate. None for a
        plain Poisson fit.

    Returns
    -------
    xarray.Dataset
        Along ``(energy, offset)``: ``counts``, ``exposure_time`` (per live
        time, weighted with each run's condition factor: the exposure at
        reference conditions), ``rate`` (smoothed reference rate per live
        time), ``rate_raw``, ``rate_error``; ``coefficient`` along ``(energy,
        condition)`` and ``shape_coefficient`` along ``(energy,
        shape_condition)``; ``condition_mean``, ``condition_scale`` along
        ``condition`` and ``condition_min``, ``condition_max`` along
        ``(energy, condition)``; ``run_coefficient``, ``run_condition_mean``,
        ``run_condition_scale``, ``run_condition_min``, ``run_condition_max``
        along ``run_condition``; the training runs' ``run_weight``,
        ``period_tstart`` and ``period_log_ratio`` along ``training_run``; ``attrs`` with the time
        conventions, smoothing and ``model = "conditions"``.
    """
    unknown = [c for c in shape_conditions if c not in conditions]
    if unknown:
        raise ValueError(f"shape conditions {unknown} must also be in conditions {conditions}")
    if cube.sizes[OBS_DIM] == 0:
        raise ValueError("fit_conditions needs at least one run")
    site, site_problem = None, ""
    if "geomagnetic" in (*conditions, *run_conditions):
        site, site_problem = runs_site(cube)
    if site_problem and not skip_unavailable:
        raise KeyError(f"condition 'geomagnetic': {site_problem}")
    if skip_unavailable:
        dropped = [c for c in (*conditions, *run_conditions) if not _available(cube, c)]
        if site_problem and "geomagnetic" not in dropped:
            dropped.append("geomagnetic")
        conditions = [c for c in conditions if c not in dropped]
        shape_conditions = [c for c in shape_conditions if c not in dropped]
        run_conditions = [c for c in run_conditions if c not in dropped]
        if site_problem:
            warnings.warn(
                f"the condition model leaves out the geomagnetic term: {site_problem}",
                ConditionsWarning,
                stacklevel=2,
            )
    else:
        dropped = []
    values = condition_values(cube, conditions).values  # (run, energy, k)
    run_values = condition_values(cube, run_conditions).values  # (run, energy, k)
    if np.any(np.ptp(run_values, axis=1) > 0):
        raise ValueError(f"run conditions {list(run_conditions)} must not depend on energy")
    run_values = run_values[:, 0, :]
    counts = cube["counts"].transpose(OBS_DIM, ENERGY_DIM, OFFSET_DIM).values.astype(np.float64)
    exposure, converted = _to_livetime(cube)
    # Standardise over the (run, energy) pairs that were exposed: the coefficients
    # then have comparable scales and the prior means the same for all.
    seen = exposure.sum(axis=2) > 0  # (run, energy)
    pairs = values[seen] if seen.any() else values.reshape(-1, values.shape[-1])
    mean = pairs.mean(axis=0)
    scale = pairs.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    # Range of the conditions of the runs that saw each energy bin: a run is never
    # given a factor extrapolated beyond what the fit of that bin saw.
    low = np.where(seen[..., None], values, np.inf).min(axis=0)
    high = np.where(seen[..., None], values, -np.inf).max(axis=0)
    unseen = ~seen.any(axis=0)
    low[unseen], high[unseen] = pairs.min(axis=0), pairs.max(axis=0)
    # Unexposed pairs weigh nothing, but a steep condition far below a run's threshold
    # (e.g. (threshold / E)^4 at 0.1 TeV) would overflow exp() there: clipped like
    # any prediction, which leaves the exposed pairs as they are.
    values = np.clip(values, low[None], high[None])
    design = _design(cube, values, mean, scale, conditions, shape_conditions)
    beta = _fit_coefficients(counts, exposure, design, energy_smoothness)
    factor = np.exp(np.einsum("retk,ek->ret", design, beta))
    run_weight = np.ones(counts.shape[0])
    if robust_scale is not None:
        for _ in range(_ROBUST_STEPS):
            run_weight = _robust_weights(counts, exposure, factor, robust_scale)
            w = run_weight[:, None, None]
            beta = _fit_coefficients(counts * w, exposure * w, design, energy_smoothness)
            factor = np.exp(np.einsum("retk,ek->ret", design, beta))
    w = run_weight[:, None, None]
    weighted = (exposure * w * factor).sum(axis=0)
    weighted_counts = (counts * w).sum(axis=0)

    coords = {
        k: v.variable for k, v in cube.coords.items() if set(v.dims) <= {ENERGY_DIM, OFFSET_DIM}
    }
    dims = (ENERGY_DIM, OFFSET_DIM)
    # The reference rate and its smoothing maximise the same (run-weighted) likelihood
    # as the coefficients: weighted counts over weighted exposure.
    model = xr.Dataset(
        {"counts": (dims, weighted_counts), "exposure_time": (dims, weighted)}, coords=coords
    )
    model.attrs = {"time_convention": "livetime", "solid_angle": solid_angle}
    model = compute_rate(model, solid_angle=solid_angle)
    raw = model["rate"]
    model = smooth(model, smoothing)
    # Reported: the (integer) counts, and the live time at reference conditions
    # that gives the weighted rate with them.
    total = counts.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        reference_time = np.where(weighted_counts > 0, weighted * total / weighted_counts, weighted)
    model = model.assign(
        counts=(dims, total.astype(np.int64), {"units": "1"}),
        exposure_time=(
            dims,
            reference_time,
            {"units": "s", "long_name": "live time at reference conditions"},
        ),
    )

    # Observing-period correction: how far each training run lies above or below
    # the model, to be averaged over the runs taken close in time to a new run.
    volume = bin_volume(model, solid_angle=solid_angle).transpose(ENERGY_DIM, OFFSET_DIM).values
    expected = model["rate"].transpose(*dims).fillna(0.0).values[None] * factor * volume[None]
    log_ratio = _run_log_ratios(counts, exposure, expected)
    # Run-level conditions: regressed on the training runs' normalisation residuals;
    # the period correction then averages what they leave.
    predicted = np.where(exposure > 0, exposure * expected, 0.0).sum(axis=(1, 2))
    valid = (predicted > 0) & (log_ratio != 0)
    run_mean, run_scale, run_coef, run_intercept = _fit_run_conditions(
        log_ratio, predicted, run_values, valid
    )
    run_log_factor = run_intercept + (run_values - run_mean) / run_scale @ run_coef
    log_ratio = np.where(valid, log_ratio - run_log_factor, log_ratio)
    tstart = (
        cube["tstart"].values.astype(np.float64)
        if "tstart" in cube.variables
        else np.full(cube.sizes[OBS_DIM], np.nan)
    )

    k = len(conditions)
    model = model.assign(
        rate_raw=raw,
        coefficient=(
            (ENERGY_DIM, COVARIATE_DIM),
            beta[:, :k],
            {"long_name": "log-rate slope per standardised condition"},
        ),
        shape_coefficient=(
            (ENERGY_DIM, SHAPE_DIM),
            beta[:, k:],
            {"long_name": "log-rate slope x (offset / 2 deg)^2 per standardised condition"},
        ),
        run_coefficient=(
            RUN_DIM,
            run_coef,
            {"long_name": "log-normalisation slope per standardised run condition"},
        ),
        run_intercept=(
            (),
            run_intercept,
            {"long_name": "log-normalisation of the run conditions at their mean"},
        ),
        run_weight=(TRAINING_DIM, run_weight, {"long_name": "weight of the run in the fit"}),
        period_tstart=(TRAINING_DIM, tstart, {"units": "s", "long_name": "TSTART of the run"}),
        period_log_ratio=(
            TRAINING_DIM,
            log_ratio,
            {"long_name": "log(observed / predicted) of the training run"},
        ),
    )
    model = model.assign_coords(
        {
            COVARIATE_DIM: list(conditions),
            SHAPE_DIM: list(shape_conditions),
            TRAINING_DIM: cube[OBS_DIM].values,
            "condition_mean": (COVARIATE_DIM, mean),
            "condition_scale": (COVARIATE_DIM, scale),
            "condition_min": ((ENERGY_DIM, COVARIATE_DIM), low),
            "condition_max": ((ENERGY_DIM, COVARIATE_DIM), high),
            RUN_DIM: list(run_conditions),
            "run_condition_mean": (RUN_DIM, run_mean),
            "run_condition_scale": (RUN_DIM, run_scale),
            "run_condition_min": (RUN_DIM, run_values.min(axis=0, initial=np.inf)),
            "run_condition_max": (RUN_DIM, run_values.max(axis=0, initial=-np.inf)),
        }
    )
    model.attrs.update(
        {
            "model": "conditions",
            "n_runs": int(cube.sizes[OBS_DIM]),
            "smoothing": smoothing,
            "input_time_convention": str(cube.attrs.get("time_convention", "ontime")),
            "converted_to_livetime": int(converted),
            "energy_smoothness": float(energy_smoothness),
            "period_days": float(period_days) if period_days is not None else np.nan,
            "period_prior_weight": PERIOD_PRIOR_WEIGHT,
            "robust_scale": float(robust_scale) if robust_scale is not None else np.nan,
            "dropped_conditions": ", ".join(dropped),
        }
    )
    if site is not None and "geomagnetic" not in dropped:
        field_az, field_alt = site.field_direction
        model.attrs.update(
            {
                "geomagnetic_site": site.name,
                "geomagnetic_field_az": field_az,
                "geomagnetic_field_alt": field_alt,
            }
        )
    return model


def period_correction(model: xr.Dataset, runs: xr.Dataset) -> xr.DataArray:
    """Observing-period factor of every run, from the training runs taken close in time.

    ``exp(sum_i w_i r_i / (sum_i w_i + w0))`` with ``r_i`` the log(observed /
    predicted) of training run ``i``, ``w_i = exp(-|TSTART - TSTART_i| /
    period_days)`` and the prior weight ``w0`` (:data:`PERIOD_PRIOR_WEIGHT`), so
    that a run far in time from every training run gets no correction. A run
    never informs its own correction (it is left out when it is a training run).
    """
    ones = xr.DataArray(np.ones(runs.sizes[OBS_DIM]), dims=OBS_DIM)
    days = float(model.attrs.get("period_days", np.nan))
    if not np.isfinite(days) or "tstart" not in runs.variables or TRAINING_DIM not in model.dims:
        return ones
    t_train = model["period_tstart"].values / 86400.0
    r_train = model["period_log_ratio"].values
    t_runs = runs["tstart"].values.astype(np.float64) / 86400.0
    with np.errstate(invalid="ignore"):
        w = np.exp(-np.abs(t_runs[:, None] - t_train[None, :]) / days)
    w = np.where(np.isfinite(w), w, 0.0)
    w[runs[OBS_DIM].values[:, None] == model[TRAINING_DIM].values[None, :]] = 0.0
    prior = float(model.attrs.get("period_prior_weight", PERIOD_PRIOR_WEIGHT))
    correction = np.exp((w * r_train[None, :]).sum(axis=1) / (w.sum(axis=1) + prior))
    return ones.copy(data=correction)


def run_condition_factor(model: xr.Dataset, runs: xr.Dataset) -> xr.DataArray:
    """Normalisation factor of every run from the model's run-level conditions.

    ``exp(a + sum_k g_k z_k)`` with the standardised run conditions ``z_k``,
    clipped to the training range, and the intercept ``a`` that keeps the
    training runs' total; a run lacking a column they need gets no factor from
    that condition (it is taken at the training mean), and so does a run at
    another site than the training runs for the geomagnetic term.
    """
    ones = xr.DataArray(np.ones(runs.sizes[OBS_DIM]), dims=OBS_DIM)
    if "run_coefficient" not in model.variables or model.sizes.get(RUN_DIM, 0) == 0:
        return ones
    names = [str(c) for c in model[RUN_DIM].values]
    values = _run_values(runs.assign_coords(energy_lo=model["energy_lo"]), names)
    if "geomagnetic" in names:
        trained_at = str(model.attrs.get("geomagnetic_site", ""))
        here = [s.name if s is not None else "" for s in _run_sites(runs)[0]]
        other = np.array([name != trained_at for name in here], dtype=bool)
        values[other, names.index("geomagnetic")] = np.nan
    values = np.clip(values, model["run_condition_min"].values, model["run_condition_max"].values)
    z = (values - model["run_condition_mean"].values) / model["run_condition_scale"].values
    z = np.where(np.isfinite(z), z, 0.0)
    intercept = float(model["run_intercept"]) if "run_intercept" in model.variables else 0.0
    return ones.copy(data=np.exp(intercept + z @ model["run_coefficient"].values))


def run_rate(model: xr.Dataset, runs: xr.Dataset, *, time: str | None = None) -> xr.DataArray:
    """Rate of every run for its own conditions, along ``(obs_id, energy, offset)``.

    Parameters
    ----------
    model
        Output of :func:`fit_conditions`.
    runs
        Runs (run table or cube) with the columns the conditions need.
    time
        Time convention of the returned rate: ``"livetime"`` (the model's own)
        or ``"ontime"`` (the live-time rate times each run's ``LIVETIME /
        ONTIME``, exact for that run). Default: the convention of the cube the
        model was fitted on.

    Returns
    -------
    xarray.DataArray
        Rate in s-1 MeV-1 sr-1 with ``attrs["time_convention"]``, including the
        period correction and the run-level factor (:func:`run_condition_factor`).
        Condition values outside the range the training runs covered in an
        energy bin are clipped to that range; bins without a reference rate
        stay NaN.
    """
    convention = time or str(model.attrs.get("input_time_convention", "livetime"))
    conditions = [str(c) for c in model[COVARIATE_DIM].values]
    shape_conditions = [str(c) for c in model[SHAPE_DIM].values]
    values = condition_values(runs.assign_coords(energy_lo=model["energy_lo"]), conditions)
    beta = np.concatenate([model["coefficient"].values, model["shape_coefficient"].values], axis=1)
    low, high = model["condition_min"].values, model["condition_max"].values
    clipped = np.clip(values.values, low[None], high[None])
    design = _design(
        model,
        clipped,
        model["condition_mean"].values,
        model["condition_scale"].values,
        conditions,
        shape_conditions,
    )
    factor = np.exp(np.einsum("retk,ek->ret", design, beta))
    factor *= period_correction(model, runs).values[:, None, None]
    factor *= run_condition_factor(model, runs).values[:, None, None]
    if convention == "ontime":
        missing = [c for c in ("livetime", "ontime") if c not in runs.variables]
        if missing:
            raise KeyError(f"a rate per ONTIME needs the run columns {missing}")
        factor *= (runs["livetime"].values / runs["ontime"].values)[:, None, None]
    elif convention != "livetime":
        raise ValueError(f"time must be 'ontime' or 'livetime', got {convention!r}")
    rate = model["rate"].transpose(ENERGY_DIM, OFFSET_DIM).values[None] * factor
    coords: dict[str, Any] = {OBS_DIM: runs[OBS_DIM].values}
    coords.update(
        {
            str(k): v.variable
            for k, v in model.coords.items()
            if set(v.dims) <= {ENERGY_DIM, OFFSET_DIM}
        }
    )
    return xr.DataArray(
        rate,
        dims=(OBS_DIM, ENERGY_DIM, OFFSET_DIM),
        coords=coords,
        name="rate",
        attrs={
            "units": RATE_UNIT,
            "long_name": "background rate for the run's conditions",
            "time_convention": convention,
        },
    )

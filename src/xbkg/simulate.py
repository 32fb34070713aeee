"""Synthetic GADF data stores drawn from a known background model.

The truth is a smooth, H.E.S.S.-like cosmic-ray background rate (per live time)

.. math::

    R(E, \\theta; z, m) = R_0 \\, m \\, (\\cos z)^{-p_z}
        \\left(\\frac{E}{E_0}\\right)^{-\\Gamma}
        \\left[1 + \\left(\\frac{E_t(z)}{E}\\right)^{a}\\right]^{-1}
        \\exp\\left(-\\frac{1 - \\cos\\theta}{\\sigma(E)^2}\\right)

with :math:`E_t(z) = E_{t0} (\\cos z)^{-k}` (the threshold rises with zenith
angle :math:`z`), :math:`\\sigma(E) = \\sigma_0 (E / E_0)^{\\beta}` in radians
(the field of view widens slowly with energy) and :math:`m` the muon
efficiency. The radial factor is a Gaussian in offset for small angles, and
being a function of :math:`1 - \\cos\\theta` it integrates exactly over rings
of the sphere (:math:`d\\Omega = 2\\pi \\, d(1 - \\cos\\theta)`). Only the energy
integral is numerical (composite Gauss-Legendre in :math:`\\ln E`, accurate to
about 1e-12), so :func:`expected_counts` is exact for any binning, and events
are drawn from the same expressions: energies from a finely tabulated inverse
CDF, offsets given the energy by exact inversion.

The parameters (:data:`TRUTH_VERSION` names them) were chosen against the
H.E.S.S. DL3 DR1 ``bkg_3d`` templates: a few 1e-4 s-1 MeV-1 sr-1 at 1 TeV
near the centre, a turn-on near 0.3-0.4 TeV at 30-40 deg zenith and near
1 TeV at 55 deg, and acceptance widths of 1.3-1.8 deg.

:func:`simulate_datastore` writes event lists drawn from this model, with
indexes and headers that look like real data (pointings that are consistent
with the site, the time and the zenith angle, realistic dead times), so the
whole pipeline can be run on it and checked against the truth.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import xarray as xr
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from numpy.typing import ArrayLike, NDArray

from xbkg.axes import binned_coords, energy_width_mev, ring_solid_angle, validate_edges
from xbkg.conventions import (
    ENERGY_DIM,
    GADF_HDUDOC,
    GADF_HDUVERS,
    HDU_INDEX_FILE,
    MEV_PER_TEV,
    OBS_INDEX_FILE,
    OFFSET_DIM,
    RATE_UNIT,
)
from xbkg.errors import OutputError, OutputExistsError
from xbkg.io.fitsfile import write_fits

__all__ = [
    "TELESCOPES",
    "TRUTH_VERSION",
    "Telescope",
    "expected_counts",
    "simulate_datastore",
    "true_binned_rate",
    "true_rate",
]

#: Name of the truth model; written to every simulated file as ``SIMTRUTH``.
TRUTH_VERSION: Final = "xbkg-bkg-truth-1"

Layout = Literal["dr1", "per-hdu"]
# Numbers, arrays or DataArrays: the model's formulas are written once for all three.
_Values = Any
Source = tuple[float, float, float, int]


@dataclass(frozen=True)
class _Truth:
    """Parameters of the truth model (see the module docstring for the formula)."""

    norm: float = 2.0e-4  # R0, s-1 MeV-1 sr-1 at E0, zenith 0, muon efficiency 1, centre
    e_ref: float = 1.0  # E0, TeV
    index: float = 2.7  # Gamma
    zenith_power: float = 2.5  # p_z: more background per unit energy at large zenith
    threshold: float = 0.2  # E_t0, TeV at zenith 0
    threshold_power: float = 3.0  # k: E_t grows as cos(z)**-k
    sharpness: float = 6.0  # a: steepness of the low-energy turn-on
    width: float = 1.5  # sigma_0, deg at E0
    width_index: float = 0.1  # beta

    def header_cards(self) -> list[tuple[str, object, str]]:
        """FITS cards recording the truth, so every file says it is simulated."""
        return [
            ("SIMTRUTH", TRUTH_VERSION, "simulated data: xbkg.simulate truth model"),
            ("SIMNORM", self.norm, "[s-1 MeV-1 sr-1] truth rate norm at SIMEREF"),
            ("SIMEREF", self.e_ref, "[TeV] truth reference energy"),
            ("SIMINDEX", self.index, "truth spectral index"),
            ("SIMZPOW", self.zenith_power, "truth norm ~ cos(zen)**-SIMZPOW"),
            ("SIMETHR", self.threshold, "[TeV] truth turn-on energy at zenith 0"),
            ("SIMETHP", self.threshold_power, "truth turn-on ~ cos(zen)**-SIMETHP"),
            ("SIMSHARP", self.sharpness, "truth turn-on sharpness"),
            ("SIMWIDTH", self.width, "[deg] truth acceptance width at SIMEREF"),
            ("SIMWIDIX", self.width_index, "truth acceptance width ~ E**SIMWIDIX"),
        ]


_TRUTH: Final = _Truth()


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

# Mission time reference (H.E.S.S.: 2001-01-01 00:00:00 TT) and campaign start (2004-01-12).
_MJDREFI: Final = 51910
_MJDREFF: Final = 0.000742870370370241
_CAMPAIGN_START_MJD: Final = 53016
# TT - UT1 in 2004-2010 (about 64-66 s): used to turn mission time into sidereal time.
_DELTA_T_DAYS: Final = 65.0 / 86400.0
_SIDEREAL_DEG_PER_DAY: Final = 360.98564736629
_DARK_HALF_WINDOW_DAYS: Final = 4.0 / 24.0  # runs lie within +-4 h of local midnight
_RUN_GAP_DAYS: Final = 120.0 / 86400.0

# Quadrature: Gauss-Legendre of this order on pieces of at most this width in ln(E).
_GL_ORDER: Final = 12
_MAX_LOG_STEP: Final = 0.1
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(_GL_ORDER)
# Cells of the tabulated energy CDF used for sampling.
_SAMPLING_CELLS: Final = 2048

_WOBBLE_OFFSET: Final = 0.7  # deg, pointing offset of runs on an injected source
_PSF_SIGMA: Final = 0.07  # deg, added in quadrature to the width of injected sources
_SAFE_ENERGY_HI: Final = 100.0  # TeV
_SAFE_ENERGY_FACTOR: Final = 1.2  # SAFE_ENERGY_LO = factor x peak of the differential rate

#: obs-index columns in the order written, with FITS format and unit.
_OBS_COLUMNS: Final[dict[str, tuple[str, str | None]]] = {
    "OBS_ID": ("K", None),
    "RA_PNT": ("D", "deg"),
    "DEC_PNT": ("D", "deg"),
    "GLON_PNT": ("D", "deg"),
    "GLAT_PNT": ("D", "deg"),
    "ZEN_PNT": ("D", "deg"),
    "ALT_PNT": ("D", "deg"),
    "AZ_PNT": ("D", "deg"),
    "ONTIME": ("D", "s"),
    "LIVETIME": ("D", "s"),
    "DEADC": ("D", None),
    "TSTART": ("D", "s"),
    "TSTOP": ("D", "s"),
    "N_TELS": ("K", None),
    "MUONEFF": ("D", None),
    "EVENT_COUNT": ("K", None),
    "SAFE_ENERGY_LO": ("D", "TeV"),
    "SAFE_ENERGY_HI": ("D", "TeV"),
    "OBJECT": ("A", None),
}


# --------------------------------------------------------------------------------------
# Truth model
# --------------------------------------------------------------------------------------


def _as_float(x: ArrayLike | xr.DataArray) -> NDArray[np.float64] | xr.DataArray:
    # DataArrays pass through untouched so that numpy ufuncs broadcast them by dimension name.
    return x if isinstance(x, xr.DataArray) else np.asarray(x, dtype=np.float64)


def _check_conditions(zenith: object, muoneff: object) -> None:
    if not bool(np.all((np.asarray(zenith) >= 0) & (np.asarray(zenith) < 90))):
        raise ValueError(f"zenith angles must be in [0, 90) deg, got {zenith!r}")
    if not bool(np.all(np.asarray(muoneff) > 0)):
        raise ValueError(f"muon efficiencies must be positive, got {muoneff!r}")


def _norm_and_threshold(zenith: _Values, muoneff: _Values) -> tuple[_Values, _Values]:
    """Normalisation (s-1 MeV-1 sr-1) and turn-on energy (TeV) for given conditions."""
    cos_z = np.cos(np.deg2rad(zenith))
    norm = _TRUTH.norm * muoneff * cos_z ** (-_TRUTH.zenith_power)
    threshold = _TRUTH.threshold * cos_z ** (-_TRUTH.threshold_power)
    return norm, threshold


def _spectral_shape(energy: _Values, threshold: _Values) -> _Values:
    """Power law times the turn-on; 1 at E0 far above threshold."""
    x = energy / _TRUTH.e_ref
    return x ** (-_TRUTH.index) / (1.0 + (threshold / energy) ** _TRUTH.sharpness)


def _width_sq(energy: _Values) -> _Values:
    """Squared acceptance width sigma(E)**2 in rad**2."""
    sigma = np.deg2rad(_TRUTH.width) * (energy / _TRUTH.e_ref) ** _TRUTH.width_index
    return sigma**2


def _one_minus_cos(theta_deg: _Values) -> _Values:
    # 1 - cos(t) = 2 sin(t/2)**2 keeps full precision near the centre.
    return 2.0 * np.sin(0.5 * np.deg2rad(theta_deg)) ** 2


def true_rate(
    energy: ArrayLike | xr.DataArray,
    offset: ArrayLike | xr.DataArray,
    zenith: ArrayLike | xr.DataArray,
    muoneff: ArrayLike | xr.DataArray = 1.0,
) -> NDArray[np.float64] | xr.DataArray:
    """The known background rate of the simulation, per live time.

    Parameters
    ----------
    energy
        Reconstructed energy in TeV.
    offset
        Field-of-view offset in deg.
    zenith
        Zenith angle of the pointing in deg, in ``[0, 90)``.
    muoneff
        Muon efficiency (relative optical efficiency); the rate is proportional to it.

    Returns
    -------
    numpy.ndarray or xarray.DataArray
        Rate in s-1 MeV-1 sr-1 (:data:`xbkg.conventions.RATE_UNIT`) per second of
        *live* time. Arrays broadcast as in numpy; DataArrays broadcast by
        dimension name, and the result is then a DataArray.

    Notes
    -----
    The formula is given in the module docstring; its parameters are recorded
    in the ``SIM*`` header keywords of every simulated file.
    """
    energy, offset = _as_float(energy), _as_float(offset)
    zenith, muoneff = _as_float(zenith), _as_float(muoneff)
    if not bool(np.all(np.asarray(energy) > 0)):
        raise ValueError("energies must be positive (TeV)")
    if not bool(np.all(np.asarray(offset) >= 0)):
        raise ValueError("offsets must not be negative (deg)")
    _check_conditions(zenith, muoneff)
    norm, threshold = _norm_and_threshold(zenith, muoneff)
    acceptance = np.exp(-_one_minus_cos(offset) / _width_sq(energy))
    rate = norm * _spectral_shape(energy, threshold) * acceptance
    if isinstance(rate, xr.DataArray):
        rate = rate.rename("rate")
        rate.attrs = {"units": RATE_UNIT, "long_name": "true background rate per live time"}
    return rate


def _log_energy_nodes(
    energy_edges: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Quadrature nodes (TeV) and weights (MeV) for integrals over each energy bin.

    Each bin is cut in ln(E) into equal pieces no wider than ``_MAX_LOG_STEP``
    with a Gauss-Legendre rule on each; the integrand is analytic with its
    nearest complex singularity (the turn-on) about pi / sharpness from the
    real axis, far outside these pieces, so the rule converges to round-off.
    Returns arrays of shape ``(n_bins, n_nodes)``.
    """
    x = np.log(energy_edges)
    n_pieces = max(1, math.ceil(float(np.max(np.diff(x))) / _MAX_LOG_STEP))
    cuts = x[:-1, None] + np.diff(x)[:, None] * np.linspace(0.0, 1.0, n_pieces + 1)
    mid = 0.5 * (cuts[:, 1:] + cuts[:, :-1])
    half = 0.5 * (cuts[:, 1:] - cuts[:, :-1])
    nodes_x = mid[..., None] + half[..., None] * _GL_NODES
    energy = np.exp(nodes_x)
    # dE = E d(ln E); the rate is per MeV while energies are in TeV.
    weights = half[..., None] * _GL_WEIGHTS * energy * MEV_PER_TEV
    n_bins = energy_edges.size - 1
    return energy.reshape(n_bins, -1), weights.reshape(n_bins, -1)


def _ring_integral(
    energy: NDArray[np.float64], offset_edges: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Exact integral of the radial acceptance over each ring, in sr.

    With u = 1 - cos(theta), dOmega = 2 pi du and the acceptance is exp(-u / s2),
    so the ring integral is 2 pi s2 exp(-u_lo / s2) (1 - exp(-(u_hi - u_lo) / s2)).
    Output shape ``energy.shape + (n_rings,)``.
    """
    s2 = _width_sq(energy)[..., None]
    t = np.deg2rad(offset_edges)
    u_lo = _one_minus_cos(offset_edges[:-1])
    # cos(t1) - cos(t2) without cancellation for thin rings.
    du = 2.0 * np.sin(0.5 * (t[1:] + t[:-1])) * np.sin(0.5 * np.diff(t))
    return 2.0 * np.pi * s2 * np.exp(-u_lo / s2) * -np.expm1(-du / s2)


def _counts_per_second(
    energy_edges: NDArray[np.float64],
    offset_edges: NDArray[np.float64],
    zenith: float,
    muoneff: float,
) -> NDArray[np.float64]:
    """Expected events per second of live time in each (energy, offset) bin."""
    norm, threshold = _norm_and_threshold(zenith, muoneff)
    energy, weights = _log_energy_nodes(energy_edges)
    spectral = norm * _spectral_shape(energy, threshold) * weights
    return np.einsum("ek,eko->eo", spectral, _ring_integral(energy, offset_edges))


def expected_counts(
    energy_edges: ArrayLike,
    offset_edges: ArrayLike,
    zenith: float | xr.DataArray,
    livetime: float | xr.DataArray,
    muoneff: float | xr.DataArray = 1.0,
) -> xr.DataArray:
    """Exact expected number of background events per (energy, offset) bin.

    The integral of :func:`true_rate` over each energy bin (in MeV) and ring
    (exact solid angle on the sphere), times the live time. The relative
    accuracy is better than 1e-10.

    Parameters
    ----------
    energy_edges
        Energy bin edges in TeV.
    offset_edges
        Offset bin edges in deg.
    zenith
        Zenith angle in deg; a DataArray (for example along ``obs_id``) gives
        one set of counts per element.
    livetime
        Live time in s; scalar or DataArray, broadcast against ``zenith``.
    muoneff
        Muon efficiency; scalar or DataArray, broadcast likewise.

    Returns
    -------
    xarray.DataArray
        Dims ``(..., energy, offset)`` with bin edges as coordinates
        (:func:`xbkg.axes.binned_coords`), ``units`` ``"1"``. A simulated run
        only contains events inside its ``energy_range`` and ``offset_max``:
        compare with bins inside those limits.
    """
    e_edges = validate_edges(energy_edges, "energy", positive=True)
    o_edges = validate_edges(offset_edges, "offset")
    if o_edges[-1] > 180:
        raise ValueError(f"offset edges must not exceed 180 deg, got {o_edges[-1]}")
    zen, live, muon = xr.broadcast(
        xr.DataArray(zenith), xr.DataArray(livetime), xr.DataArray(muoneff)
    )
    _check_conditions(zen.values, muon.values)
    if not bool(np.all(live.values >= 0)):
        raise ValueError(f"live times must not be negative, got {livetime!r}")
    out = np.empty((*zen.shape, e_edges.size - 1, o_edges.size - 1))
    for idx in np.ndindex(zen.shape):
        per_second = _counts_per_second(
            e_edges, o_edges, float(zen.values[idx]), float(muon.values[idx])
        )
        out[idx] = per_second * float(live.values[idx])
    coords = dict(zen.coords)
    coords.update(binned_coords(e_edges, o_edges))
    return xr.DataArray(
        out,
        dims=(*zen.dims, ENERGY_DIM, OFFSET_DIM),
        coords=coords,
        name="counts",
        attrs={"units": "1", "long_name": "expected background counts", "truth": TRUTH_VERSION},
    )


def true_binned_rate(
    energy_edges: ArrayLike,
    offset_edges: ArrayLike,
    zenith: float | xr.DataArray,
    muoneff: float | xr.DataArray = 1.0,
) -> xr.DataArray:
    """Bin average of :func:`true_rate`: what a perfect background model would contain.

    Equal to ``expected_counts / (livetime * dE_MeV * dOmega)`` with the exact
    ring solid angle, in s-1 MeV-1 sr-1 per live time.

    Parameters
    ----------
    energy_edges, offset_edges, zenith, muoneff
        As for :func:`expected_counts`.
    """
    counts = expected_counts(energy_edges, offset_edges, zenith, 1.0, muoneff)
    rate = counts / (energy_width_mev(counts) * ring_solid_angle(counts))
    rate.name = "rate"
    rate.attrs = {
        "units": RATE_UNIT,
        "long_name": "true background rate per live time, bin average",
        "truth": TRUTH_VERSION,
    }
    return rate


def _peak_energy(zenith: NDArray[np.float64]) -> NDArray[np.float64]:
    """Energy (TeV) where the differential rate at the centre peaks.

    d ln R / d ln E = 0 for E**-g / (1 + (Et/E)**a) gives E = Et ((a - g) / g)**(1/a).
    """
    _, threshold = _norm_and_threshold(zenith, 1.0)
    a, g = _TRUTH.sharpness, _TRUTH.index
    return threshold * ((a - g) / g) ** (1.0 / a)


# --------------------------------------------------------------------------------------
# Event sampling
# --------------------------------------------------------------------------------------


def _energy_density(energy: _Values, zenith: float, u_max: float) -> _Values:
    """Rate in s-1 MeV-1 integrated over the field of view out to u_max (muon efficiency 1)."""
    norm, threshold = _norm_and_threshold(zenith, 1.0)
    s2 = _width_sq(energy)
    solid_angle = 2.0 * np.pi * s2 * -np.expm1(-u_max / s2)
    return norm * _spectral_shape(energy, threshold) * solid_angle


@dataclass(frozen=True)
class _EnergyTable:
    """Inverse-CDF table of the energy distribution of one run's events."""

    log_edges: NDArray[np.float64]  # cell edges in ln(E / TeV)
    cumulative: NDArray[np.float64]  # exact cumulative rate at the edges, s-1 (muoneff 1)
    slope: NDArray[np.float64]  # d ln(E g(E)) / d ln E across each cell

    @property
    def total(self) -> float:
        """Events per live second in the whole range (muon efficiency 1)."""
        return float(self.cumulative[-1])


def _energy_table(zenith: float, energy_range: tuple[float, float], u_max: float) -> _EnergyTable:
    edges = np.geomspace(energy_range[0], energy_range[1], _SAMPLING_CELLS + 1)
    nodes, weights = _log_energy_nodes(edges)
    masses = np.sum(_energy_density(nodes, zenith, u_max) * weights, axis=1)
    cumulative = np.concatenate([[0.0], np.cumsum(masses)])
    log_edges = np.log(edges)
    per_log_e = _energy_density(edges, zenith, u_max) * edges
    slope = np.diff(np.log(per_log_e)) / np.diff(log_edges)
    return _EnergyTable(log_edges, cumulative, slope)


def _sample_energy(rng: np.random.Generator, n: int, table: _EnergyTable) -> NDArray[np.float64]:
    """Draw energies (TeV): the cell from the exact cumulative rate, the position
    inside it from an exponential in ln(E) matching the density at both ends
    (exact up to the third order in the cell width of ~0.004)."""
    target = rng.random(n) * table.total
    cell = np.searchsorted(table.cumulative, target, side="right") - 1
    cell = np.clip(cell, 0, table.slope.size - 1)
    width = table.log_edges[cell + 1] - table.log_edges[cell]
    c = table.slope[cell]
    r = rng.random(n)
    flat = np.abs(c * width) < 1e-9
    c_safe = np.where(flat, 1.0, c)
    step = np.where(flat, r * width, np.log1p(r * np.expm1(c_safe * width)) / c_safe)
    return np.exp(table.log_edges[cell] + step)


def _sample_offset(
    rng: np.random.Generator, energy: NDArray[np.float64], u_max: float
) -> NDArray[np.float64]:
    """Offsets (deg) given energies: u = 1 - cos(theta) is exponential, truncated at u_max."""
    s2 = _width_sq(energy)
    r = rng.random(energy.size)
    u_draw = -s2 * np.log1p(r * np.expm1(-u_max / s2))
    return np.rad2deg(2.0 * np.arcsin(np.sqrt(0.5 * u_draw)))


def _destination(
    ra0: float | NDArray[np.float64],
    dec0: float | NDArray[np.float64],
    offset: NDArray[np.float64],
    position_angle: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Point at ``offset`` deg from (ra0, dec0) in direction ``position_angle`` (rad, East of
    North): exact rotation on the sphere. Returns (ra, dec) in deg, ra in [0, 360)."""
    d0, a0 = np.deg2rad(dec0), np.deg2rad(ra0)
    t = np.deg2rad(offset)
    sin_dec = np.sin(d0) * np.cos(t) + np.cos(d0) * np.sin(t) * np.cos(position_angle)
    dec = np.arcsin(np.clip(sin_dec, -1.0, 1.0))
    dra = np.arctan2(
        np.sin(position_angle) * np.sin(t) * np.cos(d0), np.cos(t) - np.sin(d0) * sin_dec
    )
    return np.mod(np.rad2deg(a0 + dra), 360.0), np.rad2deg(dec)


def _separation(ra1: _Values, dec1: _Values, ra2: _Values, dec2: _Values) -> _Values:
    """Great-circle distance in deg (haversine, accurate at small angles)."""
    r1, d1, r2, d2 = (np.deg2rad(v) for v in (ra1, dec1, ra2, dec2))
    h = np.sin(0.5 * (d2 - d1)) ** 2 + np.cos(d1) * np.cos(d2) * np.sin(0.5 * (r2 - r1)) ** 2
    return np.rad2deg(2.0 * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0))))


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


def _total_rates(
    zenith: NDArray[np.float64],
    muoneff: NDArray[np.float64],
    energy_range: tuple[float, float],
    u_max: float,
) -> NDArray[np.float64]:
    """Background events per live second of each run, in the simulated range."""
    return np.array(
        [
            _energy_table(z, energy_range, u_max).total * m
            for z, m in zip(zenith, muoneff, strict=True)
        ]
    )


@dataclass(frozen=True)
class _Runs:
    """Per-run parameters, sorted by time (OBS_ID order)."""

    obs_id: NDArray[np.int64]
    ra: NDArray[np.float64]
    dec: NDArray[np.float64]
    glon: NDArray[np.float64]
    glat: NDArray[np.float64]
    alt: NDArray[np.float64]
    az: NDArray[np.float64]
    zenith: NDArray[np.float64]
    tstart: NDArray[np.float64]
    tstop: NDArray[np.float64]
    ontime: NDArray[np.float64]
    livetime: NDArray[np.float64]
    deadc: NDArray[np.float64]
    muoneff: NDArray[np.float64]
    safe_lo: NDArray[np.float64]
    n_background: NDArray[np.int64]
    object_name: list[str]


def _plan_runs(
    rng: np.random.Generator,
    *,
    n_runs: int,
    livetime: NDArray[np.float64] | None,
    events_per_run: NDArray[np.int64] | None,
    zenith_range: tuple[float, float],
    site: Telescope,
    sources: Sequence[Source],
    energy_range: tuple[float, float],
    u_max: float,
) -> _Runs:
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
        ra[runs_on], dec[runs_on] = _destination(
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
        totals = _total_rates(zenith, muoneff, energy_range, u_max)
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
        expected = _total_rates(zen, muoneff, energy_range, u_max)
        n_background = rng.poisson(expected * live).astype(np.int64)
    else:
        n_background = np.broadcast_to(events_per_run, (n_runs,)).astype(np.int64)
        expected = _total_rates(zen, muoneff, energy_range, u_max)
        live = n_background / expected
    ontime = live / deadc
    mjd_ref = _MJDREFI + _MJDREFF
    tstart = np.floor((t_mid - mjd_ref) * 86400.0 - 0.5 * ontime)
    obs_id = 33000 + np.cumsum(rng.integers(1, 4, n_runs))
    gal = SkyCoord(ra=ra * u.deg, dec=dec * u.deg, frame="icrs").galactic
    names = [
        f"Source {k + 1}" if on else ("Galactic plane" if g else "Off data")
        for on, g, k in zip(kind_on, kind_gal, src_idx, strict=True)
    ]
    return _Runs(
        obs_id=obs_id.astype(np.int64),
        ra=ra,
        dec=dec,
        glon=gal.l.deg,
        glat=gal.b.deg,
        alt=alt,
        az=az,
        zenith=zen,
        tstart=tstart,
        tstop=tstart + ontime,
        ontime=ontime,
        livetime=live,
        deadc=deadc,
        muoneff=muoneff,
        safe_lo=_SAFE_ENERGY_FACTOR * _peak_energy(zen),
        n_background=n_background,
        object_name=names,
    )


# --------------------------------------------------------------------------------------
# FITS writing
# --------------------------------------------------------------------------------------


def _gadf_cards(hduclas: dict[str, str], old: bool) -> list[tuple[str, object]]:
    if old:  # files of the GADF v0.1 era carry no HDUCLAS keywords
        return []
    cards: list[tuple[str, object]] = [
        ("HDUCLASS", "GADF"),
        ("HDUDOC", GADF_HDUDOC),
        ("HDUVERS", GADF_HDUVERS),
    ]
    return cards + list(hduclas.items())


def _time_cards() -> list[tuple[str, object, str]]:
    return [
        ("MJDREFI", _MJDREFI, "int part of reference MJD for times"),
        ("MJDREFF", _MJDREFF, "fractional part of reference MJD"),
        ("TIMEUNIT", "s", "time unit"),
        ("TIMESYS", "TT", "time system"),
        ("TIMEREF", "LOCAL", "time reference"),
    ]


def _site_cards(site: Telescope) -> list[tuple[str, object, str]]:
    return [
        ("TELESCOP", site.telescop, "telescope (simulated)"),
        ("INSTRUME", site.instrume, "instrument (simulated)"),
        ("GEOLON", site.geolon, "[deg] longitude of observatory"),
        ("GEOLAT", site.geolat, "[deg] latitude of observatory"),
        ("ALTITUDE", site.altitude, "[m] altitude of observatory"),
    ]


def _header(cards: Sequence[tuple[Any, ...]]) -> fits.Header:
    header = fits.Header()
    for card in cards:
        header.append(card)
    return header


def _column(name: str, fmt: str, values: ArrayLike, unit: str | None) -> fits.Column:
    return fits.Column(name=name, format=fmt, unit=unit, array=values)


def _events_hdus(
    runs: _Runs,
    i: int,
    events: dict[str, NDArray[Any]],
    n_source: int,
    *,
    site: Telescope,
    seed: int,
    old: bool,
) -> list[fits.BinTableHDU]:
    def unit(value: str) -> str | None:
        return None if old else value  # the old layout has no TUNIT on event columns

    columns = [
        _column("EVENT_ID", "K", events["EVENT_ID"], None),
        _column("TIME", "D", events["TIME"], unit("s")),
        _column("RA", "E", events["RA"], unit("deg")),
        _column("DEC", "E", events["DEC"], unit("deg")),
        _column("ENERGY", "E", events["ENERGY"], unit("TeV")),
    ]
    cards: list[tuple[Any, ...]] = [
        ("EXTNAME", "EVENTS"),
        *_gadf_cards({"HDUCLAS1": "EVENTS"}, old),
        ("CREATOR", "xbkg.simulate", "program that created this file"),
        ("OBS_ID", int(runs.obs_id[i]), "observation number"),
        ("OBJECT", runs.object_name[i], "observed field"),
        ("TSTART", runs.tstart[i], "[s] mission time of start of observation"),
        ("TSTOP", runs.tstop[i], "[s] mission time of end of observation"),
        *_time_cards(),
        ("TELAPSE", runs.tstop[i] - runs.tstart[i], "[s] TSTOP - TSTART"),
        ("ONTIME", runs.ontime[i], "[s] total good time including dead time"),
        ("LIVETIME", runs.livetime[i], "[s] total live time"),
        ("DEADC", runs.deadc[i], "dead time correction, LIVETIME / ONTIME"),
        ("RA_PNT", runs.ra[i], "[deg] pointing right ascension"),
        ("DEC_PNT", runs.dec[i], "[deg] pointing declination"),
        ("ALT_PNT", runs.alt[i], "[deg] altitude of pointing at mid-run"),
        ("AZ_PNT", runs.az[i], "[deg] azimuth of pointing at mid-run"),
        ("RADESYS", "ICRS", "equatorial system"),
        ("EQUINOX", 2000.0, "base equinox"),
        ("OBS_MODE", "POINTING", "observation mode"),
        ("N_TELS", site.n_tels, "number of telescopes"),
        *_site_cards(site),
        ("MUONEFF", runs.muoneff[i], "muon efficiency"),
        ("EUNIT", "TeV", "energy unit"),
        *_TRUTH.header_cards(),
        ("SIMSEED", seed, "simulation seed"),
        ("SIMZEN", runs.zenith[i], "[deg] zenith angle used for the truth rate"),
        ("SIMNBKG", int(runs.n_background[i]), "number of simulated background events"),
        ("SIMNSRC", n_source, "number of injected source events"),
    ]
    hdu_events = fits.BinTableHDU.from_columns(columns, header=_header(cards))
    gti_cards = [
        ("EXTNAME", "GTI"),
        *_gadf_cards({"HDUCLAS1": "GTI"}, old),
        ("OBS_ID", int(runs.obs_id[i]), "observation number"),
        ("TSTART", runs.tstart[i], "[s] start of the GTI table"),
        ("TSTOP", runs.tstop[i], "[s] end of the GTI table"),
        *_time_cards(),
    ]
    hdu_gti = fits.BinTableHDU.from_columns(
        [
            _column("START", "D", runs.tstart[i : i + 1], unit("s")),
            _column("STOP", "D", runs.tstop[i : i + 1], unit("s")),
        ],
        header=_header(gti_cards),
    )
    return [hdu_events, hdu_gti]


def _irf_axes(offset_max: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    energy = np.geomspace(0.01, 300.0, 37)  # 8 bins per decade
    theta = np.linspace(0.0, max(3.0, math.ceil(offset_max)), 7)  # the whole field of view
    return energy, theta


def _irf_columns(
    values: NDArray[np.float64], name: str, unit: str, offset_max: float
) -> list[fits.Column]:
    energy, theta = _irf_axes(offset_max)
    n_e, n_t = energy.size - 1, theta.size - 1
    return [
        _column("ENERG_LO", f"{n_e}E", energy[None, :-1], "TeV"),
        _column("ENERG_HI", f"{n_e}E", energy[None, 1:], "TeV"),
        _column("THETA_LO", f"{n_t}E", theta[None, :-1], "deg"),
        _column("THETA_HI", f"{n_t}E", theta[None, 1:], "deg"),
        fits.Column(
            name=name, format=f"{n_e * n_t}E", unit=unit, dim=f"({n_e},{n_t})", array=values[None]
        ),
    ]


def _aeff_hdu(
    runs: _Runs, i: int, *, extname: str, point_like: bool, site: Telescope, offset_max: float
) -> fits.BinTableHDU:
    """A plausible gamma-ray effective area (it plays no part in the background truth)."""
    energy, theta = _irf_axes(offset_max)
    e = np.sqrt(energy[:-1] * energy[1:])
    t = 0.5 * (theta[:-1] + theta[1:])
    _, threshold = _norm_and_threshold(runs.zenith[i], 1.0)
    area = 1.2e5 / (1.0 + (0.6 * threshold / e) ** 4)  # m2, plateau near 1e5 m2
    values = area[None, :] * np.exp(-0.5 * (t[:, None] / 1.5) ** 2)
    cards = [
        ("EXTNAME", extname),
        *_gadf_cards(
            {
                "HDUCLAS1": "RESPONSE",
                "HDUCLAS2": "EFF_AREA",
                "HDUCLAS3": "POINT-LIKE" if point_like else "FULL-ENCLOSURE",
                "HDUCLAS4": "AEFF_2D",
            },
            False,
        ),
        ("TELESCOP", site.telescop),
        ("OBS_ID", int(runs.obs_id[i]), "observation number"),
        ("LO_THRES", runs.safe_lo[i], "[TeV] safe energy threshold"),
        ("HI_THRES", _SAFE_ENERGY_HI, "[TeV] upper safe energy limit"),
        ("SIMTRUTH", TRUTH_VERSION, "simulated data: xbkg.simulate truth model"),
    ]
    return fits.BinTableHDU.from_columns(
        _irf_columns(values, "EFFAREA", "m2", offset_max), header=_header(cards)
    )


def _rad_max_hdu(
    runs: _Runs, i: int, *, extname: str, site: Telescope, offset_max: float
) -> fits.BinTableHDU:
    """Direction cut of a point-like analysis: wider at low energy, as real cuts are."""
    energy, theta = _irf_axes(offset_max)
    e = np.sqrt(energy[:-1] * energy[1:])
    rad = np.clip(0.25 * (e / 0.1) ** -0.25, 0.08, 0.25)
    values = np.broadcast_to(rad, (theta.size - 1, e.size)).astype(np.float64)
    cards = [
        ("EXTNAME", extname),
        *_gadf_cards(
            {
                "HDUCLAS1": "RESPONSE",
                "HDUCLAS2": "RAD_MAX",
                "HDUCLAS3": "POINT-LIKE",
                "HDUCLAS4": "RAD_MAX_2D",
            },
            False,
        ),
        ("TELESCOP", site.telescop),
        ("OBS_ID", int(runs.obs_id[i]), "observation number"),
        ("SIMTRUTH", TRUTH_VERSION, "simulated data: xbkg.simulate truth model"),
    ]
    return fits.BinTableHDU.from_columns(
        _irf_columns(values, "RAD_MAX", "deg", offset_max), header=_header(cards)
    )


def _string_column(name: str, values: Sequence[str], min_width: int) -> fits.Column:
    # numpy byte strings are NUL-padded, and astropy writes them as they are: a
    # column wider than its longest entry gives the trailing NULs of old indexes.
    width = max(min_width, max((len(v) for v in values), default=1))
    return fits.Column(name=name, format=f"{width}A", array=np.array(values, dtype=f"S{width}"))


def _primary(site: Telescope) -> fits.PrimaryHDU:
    return fits.PrimaryHDU(
        header=_header(
            [
                ("TELESCOP", site.telescop, "telescope (simulated)"),
                ("SIMTRUTH", TRUTH_VERSION, "simulated data: xbkg.simulate truth model"),
            ]
        )
    )


# --------------------------------------------------------------------------------------
# Store
# --------------------------------------------------------------------------------------


def _validate_sources(sources: Sequence[Sequence[float]]) -> list[Source]:
    checked: list[Source] = []
    for src in sources:
        if len(src) != 4:
            raise ValueError(f"each source must be (ra, dec, sigma_deg, n_events), got {src!r}")
        ra, dec, sigma, n = (float(v) for v in src)
        if not (-90 <= dec <= 90) or sigma < 0 or n < 0 or n != int(n):
            raise ValueError(
                f"bad source {src!r}: need -90 <= dec <= 90, sigma_deg >= 0 and a whole "
                "number n_events >= 0"
            )
        checked.append((ra % 360.0, dec, sigma, int(n)))
    return checked


def _source_events(
    rng: np.random.Generator,
    sources: Sequence[Source],
    ra_pnt: float,
    dec_pnt: float,
    offset_max: float,
    energy_range: tuple[float, float],
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Gamma-ray events of every source within ``offset_max`` of the pointing.

    Positions follow a symmetric 2-D Gaussian of width sqrt(sigma**2 + PSF**2)
    around the source; energies a power law of index 2.5 above 0.3 TeV (inside
    ``energy_range``). Events falling outside the field of view are dropped."""
    ras, decs, energies = [], [], []
    for ra, dec, sigma, n in sources:
        if n == 0 or _separation(ra, dec, ra_pnt, dec_pnt) > offset_max:
            continue
        width = math.hypot(sigma, _PSF_SIGMA)
        radius = width * np.sqrt(-2.0 * np.log1p(-rng.random(n)))
        ev_ra, ev_dec = _destination(ra, dec, radius, rng.uniform(0.0, 2.0 * np.pi, n))
        keep = _separation(ev_ra, ev_dec, ra_pnt, dec_pnt) <= offset_max
        e_lo, e_hi = energy_range
        e_lo = max(0.3, e_lo) if e_hi > 0.3 else e_lo
        g = 1.0 - 2.5  # inverse CDF of E**-2.5 between e_lo and e_hi
        r = rng.random(n)
        energy = (e_lo**g + r * (e_hi**g - e_lo**g)) ** (1.0 / g)
        ras.append(ev_ra[keep])
        decs.append(ev_dec[keep])
        energies.append(energy[keep])
    if not ras:
        return np.empty(0), np.empty(0), np.empty(0)
    return np.concatenate(ras), np.concatenate(decs), np.concatenate(energies)


def _run_events(
    rng: np.random.Generator,
    runs: _Runs,
    i: int,
    *,
    sources: Sequence[Source],
    offset_max: float,
    energy_range: tuple[float, float],
    u_max: float,
) -> tuple[dict[str, NDArray[Any]], int]:
    n_bkg = int(runs.n_background[i])
    table = _energy_table(float(runs.zenith[i]), energy_range, u_max)
    energy = _sample_energy(rng, n_bkg, table)
    offset = _sample_offset(rng, energy, u_max)
    ra, dec = _destination(runs.ra[i], runs.dec[i], offset, rng.uniform(0.0, 2.0 * np.pi, n_bkg))
    src_ra, src_dec, src_energy = _source_events(
        rng, sources, runs.ra[i], runs.dec[i], offset_max, energy_range
    )
    ra, dec = np.concatenate([ra, src_ra]), np.concatenate([dec, src_dec])
    energy = np.concatenate([energy, src_energy])
    n = energy.size
    time = runs.tstart[i] + rng.random(n) * (runs.tstop[i] - runs.tstart[i])
    order = np.argsort(time, kind="stable")  # event lists are in time order
    events = {
        "EVENT_ID": np.arange(1, n + 1, dtype=np.int64),
        "TIME": time[order],
        "RA": ra[order].astype(np.float32),
        "DEC": dec[order].astype(np.float32),
        "ENERGY": energy[order].astype(np.float32),
    }
    return events, int(src_energy.size)


def _obs_index_hdu(
    runs: _Runs,
    event_count: NDArray[np.int64],
    *,
    missing: set[str],
    site: Telescope,
    seed: int,
    old: bool,
) -> fits.BinTableHDU:
    values: dict[str, Any] = {
        "OBS_ID": runs.obs_id,
        "RA_PNT": runs.ra,
        "DEC_PNT": runs.dec,
        "GLON_PNT": runs.glon,
        "GLAT_PNT": runs.glat,
        "ZEN_PNT": runs.zenith,
        "ALT_PNT": runs.alt,
        "AZ_PNT": runs.az,
        "ONTIME": runs.ontime,
        "LIVETIME": runs.livetime,
        "DEADC": runs.deadc,
        "TSTART": runs.tstart,
        "TSTOP": runs.tstop,
        "N_TELS": np.full(runs.obs_id.size, site.n_tels, dtype=np.int64),
        "MUONEFF": runs.muoneff,
        "EVENT_COUNT": event_count,
        "SAFE_ENERGY_LO": runs.safe_lo,
        "SAFE_ENERGY_HI": np.full(runs.obs_id.size, _SAFE_ENERGY_HI),
        "OBJECT": runs.object_name,
    }
    columns = []
    for name, (fmt, unit) in _OBS_COLUMNS.items():
        if name in missing:
            continue
        if fmt == "A":
            columns.append(_string_column(name, values[name], 16 if old else 1))
        else:
            columns.append(_column(name, fmt, values[name], None if old else unit))
    cards: list[tuple[Any, ...]] = []
    if not old:  # the old tutorial store's indexes have no EXTNAME or HDUCLAS keywords
        cards += [
            ("EXTNAME", "OBS_INDEX"),
            *_gadf_cards({"HDUCLAS1": "INDEX", "HDUCLAS2": "OBS"}, False),
        ]
    cards += [*_time_cards(), *_site_cards(site), *_TRUTH.header_cards(), ("SIMSEED", seed)]
    return fits.BinTableHDU.from_columns(columns, header=_header(cards))


def _hdu_index_hdu(rows: list[dict[str, object]], *, old: bool) -> fits.BinTableHDU:
    def col(key: str) -> list[Any]:
        return [r[key] for r in rows]

    # The old layout's fixed, generous widths leave trailing NULs, as in the tutorial store.
    widths = {"HDU_TYPE": 6, "HDU_CLASS": 10, "FILE_DIR": 26, "FILE_NAME": 30, "HDU_NAME": 12}
    columns = [_column("OBS_ID", "K", np.array(col("OBS_ID"), dtype=np.int64), None)]
    for name, width in widths.items():
        columns.append(_string_column(name, col(name), width if old else 1))
    columns.append(_column("SIZE", "K", np.array(col("SIZE"), dtype=np.int64), None))
    if old:
        columns.append(_string_column("MD5", col("MD5"), 32))
    cards: list[tuple[Any, ...]] = []
    if not old:
        cards += [
            ("EXTNAME", "HDU_INDEX"),
            *_gadf_cards({"HDUCLAS1": "INDEX", "HDUCLAS2": "HDU"}, False),
        ]
    cards += [("SIMTRUTH", TRUTH_VERSION, "simulated data: xbkg.simulate truth model")]
    return fits.BinTableHDU.from_columns(columns, header=_header(cards))


def _write_run(
    tmp: Path,
    runs: _Runs,
    i: int,
    events: dict[str, NDArray[Any]],
    n_source: int,
    *,
    layout: Layout,
    point_like: bool,
    site: Telescope,
    seed: int,
    offset_max: float,
) -> list[dict[str, object]]:
    """Write one run's files; return its hdu-index rows."""
    obs_id = int(runs.obs_id[i])
    old = layout == "per-hdu"
    ev_hdus = _events_hdus(runs, i, events, n_source, site=site, seed=seed, old=old)
    rows: list[dict[str, object]] = []
    if not old:
        # One file per run, as H.E.S.S. DR1; index names in lower case, sizes of the HDUs.
        irfs = [
            _aeff_hdu(
                runs, i, extname="AEFF", point_like=point_like, site=site, offset_max=offset_max
            )
        ]
        types = [("events", "events"), ("gti", "gti"), ("aeff", "aeff_2d")]
        if point_like:
            irfs.append(_rad_max_hdu(runs, i, extname="RAD_MAX", site=site, offset_max=offset_max))
            types.append(("rad_max", "rad_max_2d"))
        hdus = [*ev_hdus, *irfs]
        name = f"obs_{obs_id:06d}.fits.gz"
        write_fits(fits.HDUList([_primary(site), *hdus]), tmp / "data" / name)
        for hdu, (hdu_type, hdu_class) in zip(hdus, types, strict=True):
            rows.append(
                {
                    "OBS_ID": obs_id,
                    "HDU_TYPE": hdu_type,
                    "HDU_CLASS": hdu_class,
                    "FILE_DIR": "data",
                    "FILE_NAME": name,
                    "HDU_NAME": hdu.name.lower(),
                    "SIZE": hdu.filebytes(),
                }
            )
        return rows
    # Gammapy 0.6 tutorial layout: folders of 200 runs, one file per HDU (GTI beside
    # the events), upper-case HDU names, file sizes and MD5 sums in the index.
    first = obs_id // 200 * 200
    file_dir = f"run{first:06d}-{first + 199:06d}/run{obs_id:06d}"
    files: list[tuple[str, list[fits.BinTableHDU], list[tuple[str, str]]]] = [
        (
            f"{site.prefix}_events_{obs_id:06d}.fits.gz",
            ev_hdus,
            [("gti", "gti"), ("events", "events")],
        ),
        (
            f"{site.prefix}_aeff_2d_{obs_id:06d}.fits.gz",
            [
                _aeff_hdu(
                    runs,
                    i,
                    extname="AEFF_2D",
                    point_like=point_like,
                    site=site,
                    offset_max=offset_max,
                )
            ],
            [("aeff", "aeff_2d")],
        ),
    ]
    if point_like:
        files.append(
            (
                f"{site.prefix}_rad_max_2d_{obs_id:06d}.fits.gz",
                [_rad_max_hdu(runs, i, extname="RAD_MAX_2D", site=site, offset_max=offset_max)],
                [("rad_max", "rad_max_2d")],
            )
        )
    for name, hdus, types in files:
        path = write_fits(fits.HDUList([_primary(site), *hdus]), tmp / file_dir / name)
        data = path.read_bytes()
        by_type = {h.name.lower(): h for h in hdus}
        for hdu_type, hdu_class in types:
            hdu = by_type[hdu_type] if hdu_type in by_type else hdus[0]
            rows.append(
                {
                    "OBS_ID": obs_id,
                    "HDU_TYPE": hdu_type,
                    "HDU_CLASS": hdu_class,
                    "FILE_DIR": file_dir,
                    "FILE_NAME": name,
                    "HDU_NAME": hdu.name.upper(),
                    "SIZE": len(data),
                    "MD5": hashlib.md5(data).hexdigest(),
                }
            )
    return rows


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: exists and is not a folder; choose another folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise OutputExistsError(
                f"{out_dir}: folder exists and is not empty; choose another folder or pass "
                "overwrite=True to replace the data store in it"
            )
        if not (out_dir / HDU_INDEX_FILE).exists():
            # Refuse to wipe a folder that does not hold a data store, even when asked to.
            raise OutputExistsError(
                f"{out_dir}: folder is not empty and holds no {HDU_INDEX_FILE}, so it is not "
                "a data store that overwrite=True may replace; choose another folder"
            )


def _install(tmp: Path, out_dir: Path) -> None:
    """Move the finished store into place; an earlier store there is removed only after."""
    old: Path | None = None
    if out_dir.is_dir():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, old / "store")
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        if old is not None:
            os.replace(old / "store", out_dir)
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def simulate_datastore(
    out_dir: str | os.PathLike[str],
    *,
    n_runs: int = 12,
    events_per_run: int | ArrayLike | None = None,
    livetime: float | ArrayLike | None = None,
    seed: int = 0,
    zenith_range: tuple[float, float] = (10.0, 60.0),
    offset_max: float = 3.0,
    energy_range: tuple[float, float] = (0.05, 200.0),
    layout: Layout = "dr1",
    missing_columns: Sequence[str] = (),
    telescope: str = "HESS",
    point_like: bool = False,
    sources: Sequence[Sequence[float]] = (),
    overwrite: bool = False,
) -> Path:
    """Write a GADF data store of simulated runs drawn from the known background model.

    Background events follow :func:`true_rate` times each run's live time, in
    energy over ``energy_range`` and offset over ``[0, offset_max]``, so
    :func:`expected_counts` with the run's ``ZEN_PNT``, ``LIVETIME`` and
    ``MUONEFF`` is their exact expectation. The same arguments always give the
    same bytes.

    Parameters
    ----------
    out_dir
        Folder to create. It must not exist or be empty, unless ``overwrite``.
    n_runs
        Number of runs (observations).
    events_per_run
        Exact number of background events per run (int, or one per run in
        OBS_ID order). The run's live time is then set so that the expectation
        matches (``LIVETIME = n / integrated rate``). Default: the number is
        Poisson-distributed with mean rate x ``livetime``.
    livetime
        Live time per run in s (scalar or one per run in OBS_ID order);
        default 1500 s. Cannot be combined with ``events_per_run``.
    seed
        Seed of the random generator.
    zenith_range
        Zenith angles of the runs, deg. Field runs are spread uniformly in
        ``cos(zenith)`` (uniform on the sky), stratified so that every part of
        the range gets its share.
    offset_max
        Events are simulated out to this offset from the pointing, deg.
    energy_range
        Events are simulated in this energy range, TeV.
    layout
        ``"dr1"``: one file per run ``data/obs_NNNNNN.fits.gz`` as H.E.S.S.
        DL3 DR1. ``"per-hdu"``: the Gammapy 0.6 tutorial layout, one file per
        HDU in ``runNNNNNN-NNNNNN/runNNNNNN/``, NUL-padded index strings,
        upper-case HDU names, no units on event columns or in the obs-index.
    missing_columns
        obs-index columns to leave out (the event headers keep the values),
        e.g. ``("ZEN_PNT", "SAFE_ENERGY_LO", "MUONEFF", "LIVETIME")``.
    telescope
        One of :data:`TELESCOPES` (``HESS``, ``MAGIC``, ``VERITAS``, ``CTA``):
        sets ``TELESCOP``, ``INSTRUME``, ``N_TELS`` and the site. The
        background model is the same for all.
    point_like
        Write point-like IRFs: ``AEFF`` with ``HDUCLAS3 = POINT-LIKE`` and a
        ``RAD_MAX`` (``rad_max_2d``) HDU per run.
    sources
        Gamma-ray sources ``(ra, dec, sigma_deg, n_events)`` injected on top of
        the background. Every other run is then a wobble run (0.7 deg) on one
        of them. Each run whose pointing lies within ``offset_max`` of a
        source gets ``n_events`` events from it, spread by a Gaussian of width
        ``hypot(sigma_deg, 0.07)`` deg, minus those falling outside the field of
        view; the header keyword ``SIMNSRC`` gives the number kept.
    overwrite
        Replace ``out_dir`` if it already holds a data store.

    Returns
    -------
    pathlib.Path
        ``out_dir``.

    Raises
    ------
    OutputExistsError
        If ``out_dir`` is not empty and ``overwrite`` is false, or if it is not
        empty and not a data store.
    ValueError
        For inconsistent arguments, naming the argument.

    Notes
    -----
    The store is written to a hidden temporary folder beside ``out_dir`` and
    renamed at the end, so an error never leaves a partial store behind.
    Pointings are consistent with the site, the time and the zenith angle
    (mean sidereal time, no refraction: good to a few tenths of a degree),
    ``ONTIME = LIVETIME / DEADC`` and ``TSTOP - TSTART = ONTIME``, and
    ``SAFE_ENERGY_LO`` is 1.2 x the energy where the true differential rate
    peaks. The truth assumes the zenith angle constant (``ZEN_PNT``) during
    a run.
    """
    # Absolute without resolving symlinks: the temporary sibling must be a real sibling.
    out_dir = Path(os.path.abspath(out_dir))
    if not out_dir.name:
        raise ValueError(f"out_dir must name a folder below a parent folder, got {out_dir}")
    if isinstance(n_runs, bool) or int(n_runs) != n_runs or n_runs < 1:
        raise ValueError(f"n_runs must be a positive integer, got {n_runs!r}")
    n_runs = int(n_runs)
    if layout not in ("dr1", "per-hdu"):
        raise ValueError(f"layout must be 'dr1' or 'per-hdu', got {layout!r}")
    key = telescope.upper()
    if key not in TELESCOPES:
        raise ValueError(f"unknown telescope {telescope!r}; choose from {sorted(TELESCOPES)}")
    site = TELESCOPES[key]
    lo_z, hi_z = (float(v) for v in zenith_range)
    if not (0 <= lo_z < hi_z < 90):
        raise ValueError(f"zenith_range must satisfy 0 <= lo < hi < 90 deg, got {zenith_range}")
    e_lo, e_hi = (float(v) for v in energy_range)
    if not (0 < e_lo < e_hi):
        raise ValueError(f"energy_range must satisfy 0 < lo < hi (TeV), got {energy_range}")
    if not (0 < offset_max <= 10):
        raise ValueError(f"offset_max must be in (0, 10] deg, got {offset_max}")
    missing = {c.strip().upper() for c in missing_columns}
    unknown = missing - set(_OBS_COLUMNS)
    if unknown or "OBS_ID" in missing:
        allowed = sorted(set(_OBS_COLUMNS) - {"OBS_ID"})
        raise ValueError(
            f"missing_columns: cannot leave out {sorted(unknown or {'OBS_ID'})}; "
            f"choose from {allowed}"
        )
    live: NDArray[np.float64] | None = None
    counts: NDArray[np.int64] | None = None
    if events_per_run is not None:
        if livetime is not None:
            raise ValueError("give events_per_run or livetime, not both (one sets the other)")
        counts = np.asarray(events_per_run)
        if (
            counts.ndim > 1
            or counts.size not in (1, n_runs)
            or np.any(counts < 1)
            or np.any(counts != np.round(counts))
        ):
            raise ValueError(
                f"events_per_run must be a positive integer or {n_runs} of them, got "
                f"{events_per_run!r}"
            )
        counts = np.broadcast_to(counts.astype(np.int64).ravel(), (n_runs,))
    else:
        live = np.asarray(1500.0 if livetime is None else livetime, dtype=np.float64)
        if live.ndim > 1 or live.size not in (1, n_runs) or np.any(~(live > 0)):
            raise ValueError(
                f"livetime must be a positive number or {n_runs} of them (s), got {livetime!r}"
            )
        live = np.broadcast_to(live.ravel(), (n_runs,))
    checked_sources = _validate_sources(sources)
    _prepare_out_dir(out_dir, overwrite)

    u_max = float(_one_minus_cos(offset_max))
    seeds = np.random.SeedSequence(seed).spawn(n_runs + 1)
    runs = _plan_runs(
        np.random.default_rng(seeds[0]),
        n_runs=n_runs,
        livetime=live,
        events_per_run=counts,
        zenith_range=(lo_z, hi_z),
        site=site,
        sources=checked_sources,
        energy_range=(e_lo, e_hi),
        u_max=u_max,
    )

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        rows: list[dict[str, object]] = []
        event_count = np.empty(n_runs, dtype=np.int64)
        for i in range(n_runs):
            events, n_source = _run_events(
                np.random.default_rng(seeds[i + 1]),
                runs,
                i,
                sources=checked_sources,
                offset_max=offset_max,
                energy_range=(e_lo, e_hi),
                u_max=u_max,
            )
            event_count[i] = events["ENERGY"].size
            rows += _write_run(
                tmp,
                runs,
                i,
                events,
                n_source,
                layout=layout,
                point_like=point_like,
                site=site,
                seed=seed,
                offset_max=offset_max,
            )
        old = layout == "per-hdu"
        obs_index = _obs_index_hdu(
            runs, event_count, missing=missing, site=site, seed=seed, old=old
        )
        write_fits(fits.HDUList([_primary(site), obs_index]), tmp / OBS_INDEX_FILE)
        hdu_index = _hdu_index_hdu(rows, old=old)
        write_fits(fits.HDUList([_primary(site), hdu_index]), tmp / HDU_INDEX_FILE)
        _install(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir

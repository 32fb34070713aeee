"""The known background model of the simulated data stores, its expected counts and its events.

The truth, whose recovery the tests check, is a smooth, H.E.S.S.-like
cosmic-ray background rate (per live time)

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

A known field-of-view asymmetry can be added (:class:`FovAsymmetry`): the rate
at field-of-view coordinates :math:`(l, b)` of the ``ALTAZ`` frame (deg, GADF
and Gammapy 2.1 sign: :math:`l` grows towards lower azimuth, :math:`b` towards
higher altitude, :mod:`xbkg.fov`) is the radial rate above, with :math:`\\theta`
the distance from the pointing, times

.. math::

    a(l, b; z) = 1 + G \\tan(z) \\, b + C \\, l,

a gradient along altitude that grows with the zenith angle (:math:`G`) and a
camera-fixed gradient across it (:math:`C`), both per deg. The linear factor
averages to exactly 1 on every ring around the pointing, so the radial truth
(:func:`expected_counts`, the run's event count and live time) is unchanged;
parameters that would make it negative within the simulated field of view are
refused rather than clipped. As the factor is fixed in the ``ALTAZ`` frame, the
field of view aligned with RA/Dec sees it turn with the parallactic angle during
a run: :func:`true_fov_counts`, :func:`true_fov_rate` and
:func:`true_sky_counts` give the exact expectation of a run (:class:`RunTruth`)
in either frame and on a sky map, averaged over the run's rotation.

:func:`run_events` draws the events of one run from the same expressions, with
gamma-ray sources injected on top if asked (:func:`check_sources`), and
:func:`effective_area` and :func:`rad_max` give the plausible instrument
responses written beside them (they play no part in the background truth).
:mod:`xbkg.simulate` writes data stores of such runs
(:func:`xbkg.simulate.simulate_datastore`), so that the whole pipeline can be
run on them and checked against this truth.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import xarray as xr
from numpy.typing import ArrayLike, NDArray

from xbkg.axes import (
    binned_coords,
    energy_width_mev,
    fov_coords,
    ring_solid_angle,
    validate_edges,
)
from xbkg.conventions import (
    ENERGY_DIM,
    FOV_LAT_DIM,
    FOV_LON_DIM,
    MEV_PER_TEV,
    OFFSET_DIM,
    RATE_UNIT,
)
from xbkg.errors import DataStoreError
from xbkg.fov import FOV_ALIGNMENTS, FovAlignment, HeaderLike, PointingTrack, track_from_header

__all__ = [
    "DEFAULT_CAMERA_ASYMMETRY",
    "DEFAULT_FOV_GRADIENT",
    "TRUTH_VERSION",
    "FovAsymmetry",
    "RunTruth",
    "Source",
    "background_rates",
    "check_sources",
    "destination",
    "effective_area",
    "expected_counts",
    "header_cards",
    "irf_axes",
    "peak_energy",
    "rad_max",
    "run_events",
    "separation",
    "true_altaz_rate",
    "true_binned_rate",
    "true_fov_counts",
    "true_fov_rate",
    "true_rate",
    "true_sky_counts",
]

#: Name of the truth model; written to every simulated file as ``SIMTRUTH``.
TRUTH_VERSION: Final = "xbkg-bkg-truth-1"

# Numbers, arrays or DataArrays: the model's formulas are written once for all three.
_Values = Any
#: An injected gamma-ray source: ``(ra, dec, sigma_deg, n_events)``.
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


def header_cards() -> list[tuple[str, object, str]]:
    """FITS cards recording the truth (``SIMTRUTH``, ``SIMNORM``, ...), so every file says it is
    simulated; the first is the ``SIMTRUTH`` card."""
    return _TRUTH.header_cards()


# Quadrature: Gauss-Legendre of this order on pieces of at most this width in ln(E).
_GL_ORDER: Final = 12
_MAX_LOG_STEP: Final = 0.1
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(_GL_ORDER)
# Cells of the tabulated energy CDF used for sampling.
_SAMPLING_CELLS: Final = 2048

_PSF_SIGMA: Final = 0.07  # deg, added in quadrature to the width of injected sources


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


def peak_energy(zenith: NDArray[np.float64]) -> NDArray[np.float64]:
    """Energy (TeV) where the differential rate at the centre peaks.

    d ln R / d ln E = 0 for E**-g / (1 + (Et/E)**a) gives E = Et ((a - g) / g)**(1/a).
    """
    _, threshold = _norm_and_threshold(zenith, 1.0)
    a, g = _TRUTH.sharpness, _TRUTH.index
    return threshold * ((a - g) / g) ** (1.0 / a)


# --------------------------------------------------------------------------------------
# Field-of-view asymmetry: the truth in three dimensions
# --------------------------------------------------------------------------------------

#: Default altitude gradient coefficient ``G`` (per deg at 45 deg zenith): none.
DEFAULT_FOV_GRADIENT: Final = 0.0
#: Default camera-fixed gradient ``C`` along ``fov_lon`` of the ALTAZ frame (per deg): none.
DEFAULT_CAMERA_ASYMMETRY: Final = 0.0

# Spatial quadrature of field-of-view bins: Gauss-Legendre of this order on pieces
# of at most this width (deg); the radial acceptance is at least 1.2 deg wide.
_FOV_GL_ORDER: Final = 3
_MAX_FOV_STEP: Final = 0.2
_FOV_GL_NODES, _FOV_GL_WEIGHTS = np.polynomial.legendre.leggauss(_FOV_GL_ORDER)
# Largest rotation of the field (deg) across a piece of a run in the time average of
# the asymmetry (midpoint rule: relative error of a turned gradient ~ step**2 / 24).
_MAX_ROTATION_STEP: Final = 1.0
# Bound on (quadrature nodes x points) held in memory at once.
_CHUNK: Final = 2_000_000


@dataclass(frozen=True)
class FovAsymmetry:
    """A known asymmetry of the background across the field of view, fixed in the ALTAZ frame.

    The rate at field-of-view coordinates ``(fov_lon, fov_lat)`` (deg) of the
    ``ALTAZ`` frame, GADF and Gammapy 2.1 sign (``fov_lon`` grows towards lower
    azimuth, ``fov_lat`` towards higher altitude), is the radial truth
    (:func:`true_rate`) times::

        1 + gradient * tan(zenith) * fov_lat + camera * fov_lon

    with ``zenith`` that of the run (``ZEN_PNT``, ``SIMZEN``): a gradient along
    altitude that grows with the zenith angle and vanishes at the zenith, and a
    camera-fixed gradient across the altitude direction, which breaks the
    mirror symmetry of the field of view. The truth's own zenith dependence of
    the rate, ``cos(z)**-SIMZPOW``, would give ``gradient = -SIMZPOW * pi / 180``
    (about -0.044 per deg): a negative ``gradient`` makes the rate fall towards
    higher altitude, as the H.E.S.S. DR1 data do relative to a radial model.

    Attributes
    ----------
    gradient
        ``G``: the gradient along ``fov_lat`` is ``G tan(zenith)`` per deg.
    camera
        ``C``: the gradient along ``fov_lon``, per deg, the same for every run.
    """

    gradient: float = DEFAULT_FOV_GRADIENT
    camera: float = DEFAULT_CAMERA_ASYMMETRY

    def __post_init__(self) -> None:
        for name, argument in (("gradient", "fov_gradient"), ("camera", "camera_asymmetry")):
            value = getattr(self, name)
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = math.nan
            if isinstance(value, bool) or not math.isfinite(number):
                raise ValueError(
                    f"{argument} (FovAsymmetry.{name}) must be a finite number, got {value!r}"
                )
            object.__setattr__(self, name, number)

    @property
    def symmetric(self) -> bool:
        """True if there is no asymmetry (the truth is radial)."""
        return self.gradient == 0.0 and self.camera == 0.0

    def altitude_gradient(self, zenith: ArrayLike) -> NDArray[np.float64]:
        """The gradient ``G tan(zenith)`` (per deg) along ``fov_lat`` at zenith angles (deg)."""
        return self.gradient * np.tan(np.deg2rad(np.asarray(zenith, dtype=np.float64)))

    def factor(self, fov_lon: ArrayLike, fov_lat: ArrayLike, zenith: float) -> NDArray[np.float64]:
        """The factor ``1 + G tan(zenith) fov_lat + C fov_lon`` at ALTAZ coordinates (deg)."""
        lon = np.asarray(fov_lon, dtype=np.float64)
        lat = np.asarray(fov_lat, dtype=np.float64)
        return 1.0 + self.altitude_gradient(zenith) * lat + self.camera * lon

    def check(self, zenith_max: float, offset_max: float) -> None:
        """Refuse an asymmetry that would make the rate negative within ``offset_max`` (deg).

        Within ``offset_max`` of the pointing ``|fov_lon|`` and ``|fov_lat|`` are at
        most ``offset_max``, so the factor stays positive for zenith angles up to
        ``zenith_max`` (deg) if ``offset_max (|G| tan(zenith_max) + |C|) < 1``.

        Raises
        ------
        ValueError
            Naming the parameters and the bound.
        """
        reach = offset_max * (float(np.abs(self.altitude_gradient(zenith_max))) + abs(self.camera))
        if not reach < 1.0:
            raise ValueError(
                f"fov_gradient {self.gradient:g} and camera_asymmetry {self.camera:g} would make "
                f"the true rate negative: 1 + G tan(zenith) fov_lat + C fov_lon drops to "
                f"{1.0 - reach:.3g} within offset_max {offset_max:g} deg at zenith "
                f"{zenith_max:g} deg; need offset_max * (|G| tan(zenith) + |C|) < 1: lower them, "
                "offset_max or the zenith range"
            )

    def header_cards(self) -> list[tuple[str, object, str]]:
        """FITS cards recording the asymmetry (``SIMFOVG``, ``SIMFOVC``, ``SIMFOVAL``)."""
        return [
            ("SIMFOVG", self.gradient, "[1/deg] rate x 1+G tan(zen) lat+C lon: G"),
            ("SIMFOVC", self.camera, "[1/deg] C of the SIMFOVG formula"),
            ("SIMFOVAL", "ALTAZ", "frame of lat, lon in the SIMFOVG formula"),
        ]

    @classmethod
    def from_header(cls, header: HeaderLike) -> FovAsymmetry:
        """The asymmetry recorded in a header (:meth:`header_cards`); none if absent."""
        return cls(
            gradient=float(header.get("SIMFOVG", DEFAULT_FOV_GRADIENT)),
            camera=float(header.get("SIMFOVC", DEFAULT_CAMERA_ASYMMETRY)),
        )


def true_altaz_rate(
    energy: ArrayLike,
    fov_lon: ArrayLike,
    fov_lat: ArrayLike,
    zenith: float,
    muoneff: float = 1.0,
    asymmetry: FovAsymmetry | None = None,
) -> NDArray[np.float64]:
    """The known background rate per live time at ALTAZ field-of-view coordinates.

    :func:`true_rate` at the distance from the pointing times
    :meth:`FovAsymmetry.factor`.

    Parameters
    ----------
    energy
        Reconstructed energy in TeV.
    fov_lon, fov_lat
        Field-of-view coordinates of the ``ALTAZ`` frame in deg (GADF sign).
    zenith, muoneff
        Zenith angle (deg) and muon efficiency of the run.
    asymmetry
        The asymmetry; default none.

    Returns
    -------
    numpy.ndarray
        Rate in s-1 MeV-1 sr-1, the arguments broadcast together.
    """
    asym = FovAsymmetry() if asymmetry is None else asymmetry
    lon = np.asarray(fov_lon, dtype=np.float64)
    lat = np.asarray(fov_lat, dtype=np.float64)
    offset = np.rad2deg(2.0 * np.arcsin(np.sqrt(0.5 * _fov_one_minus_cos(lon, lat))))
    radial = np.asarray(true_rate(energy, offset, zenith, muoneff))
    return radial * asym.factor(lon, lat, zenith)


def _fov_one_minus_cos(lon: NDArray[np.float64], lat: NDArray[np.float64]) -> NDArray[np.float64]:
    """1 - cos(theta) of the point (lon, lat) deg from the centre: cos(theta) = cos lon cos lat.

    1 - cos a cos b = (1 - cos b) + cos b (1 - cos a), each term without cancellation."""
    return _one_minus_cos(lat) + np.cos(np.deg2rad(lat)) * _one_minus_cos(lon)


@dataclass(frozen=True, eq=False)
class RunTruth:
    """What the true background of one simulated run depends on.

    Build it from the run's EVENTS header with :meth:`from_header`; give it to
    :func:`true_fov_counts`, :func:`true_fov_rate` or :func:`true_sky_counts`.

    Attributes
    ----------
    zenith
        Zenith angle of the truth (``SIMZEN``), deg, constant during the run.
    muoneff
        Muon efficiency (``MUONEFF``).
    livetime
        Live time (``LIVETIME``), s.
    tstart, tstop
        Start and end of the run (``TSTART``, ``TSTOP``), s since the time
        reference; the events are spread uniformly between them.
    track
        The pointing followed across the sky (:func:`xbkg.fov.track_from_header`).
    asymmetry
        The field-of-view asymmetry (``SIMFOVG``, ``SIMFOVC``).
    offset_max, energy_range
        The simulated events lie within ``offset_max`` deg of the pointing and
        in ``energy_range`` (TeV) (``SIMOMAX``, ``SIMELO``, ``SIMEHI``); None if
        the header does not say.
    """

    zenith: float
    muoneff: float
    livetime: float
    tstart: float
    tstop: float
    track: PointingTrack
    asymmetry: FovAsymmetry = FovAsymmetry()
    offset_max: float | None = None
    energy_range: tuple[float, float] | None = None

    @classmethod
    def from_header(cls, header: HeaderLike, source: str = "") -> RunTruth:
        """The truth of a run from its EVENTS header (written by :mod:`xbkg.simulate`).

        Parameters
        ----------
        header
            The EVENTS header (:class:`astropy.io.fits.Header` or a mapping).
        source
            File named in error messages.

        Raises
        ------
        DataStoreError
            If the header is not that of a run simulated with this truth model,
            or lacks what the pointing track needs.
        """
        where = f"{source}: " if source else ""
        if header.get("SIMTRUTH") != TRUTH_VERSION:
            raise DataStoreError(
                f"{where}SIMTRUTH = {header.get('SIMTRUTH')!r}: not a run simulated by "
                f"xbkg.simulate with the truth model {TRUTH_VERSION!r}; the truth of real data "
                "is unknown"
            )
        missing = [k for k in ("SIMZEN", "LIVETIME", "TSTART", "TSTOP") if header.get(k) is None]
        if missing:
            raise DataStoreError(f"{where}the header lacks {missing}; write the store again")
        e_lo, e_hi = header.get("SIMELO"), header.get("SIMEHI")
        o_max = header.get("SIMOMAX")
        return cls(
            zenith=float(header.get("SIMZEN")),
            muoneff=float(header.get("MUONEFF", 1.0)),
            livetime=float(header.get("LIVETIME")),
            tstart=float(header.get("TSTART")),
            tstop=float(header.get("TSTOP")),
            track=track_from_header(header, source),
            asymmetry=FovAsymmetry.from_header(header),
            offset_max=None if o_max is None else float(o_max),
            energy_range=None if e_lo is None or e_hi is None else (float(e_lo), float(e_hi)),
        )

    def time_nodes(
        self, times: ArrayLike | None = None
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Times (s) and weights (summing to 1) of the average over the run.

        By default the midpoints of pieces of the run, weighted by their
        length, across each of which the field turns by about 1 deg at most
        (pieces between the nodes of the track, merged): the average of a
        gradient is then exact to ~1e-4 of it.
        Given ``times``, equal weights on those.
        """
        if times is not None:
            t = np.atleast_1d(np.asarray(times, dtype=np.float64)).ravel()
            if t.size == 0 or not np.all(np.isfinite(t)):
                raise ValueError("times must be a non-empty sequence of finite numbers (s)")
            return t, np.full(t.size, 1.0 / t.size)
        if not self.tstop > self.tstart:
            return np.array([self.tstart]), np.array([1.0])
        inner = self.track.times[(self.track.times > self.tstart) & (self.track.times < self.tstop)]
        edges = np.concatenate([[self.tstart], inner, [self.tstop]])
        psi = np.unwrap(np.deg2rad(self.track.rotation_angle(edges)))
        turned = np.concatenate([[0.0], np.cumsum(np.abs(np.diff(np.rad2deg(psi))))])
        keep = [0]
        for k in range(1, edges.size - 1):
            if turned[k + 1] - turned[keep[-1]] > _MAX_ROTATION_STEP:
                keep.append(k)
        edges = edges[[*keep, edges.size - 1]]
        return 0.5 * (edges[1:] + edges[:-1]), np.diff(edges) / (self.tstop - self.tstart)

    def mean_factor(
        self, ra: ArrayLike, dec: ArrayLike, times: ArrayLike | None = None
    ) -> NDArray[np.float64]:
        """The asymmetry factor at sky directions (deg, ICRS), averaged over the run.

        Each direction is seen at the ALTAZ coordinates of each time of
        :meth:`time_nodes` (``times``: see there).
        """
        ra64, dec64 = np.broadcast_arrays(
            np.asarray(ra, dtype=np.float64), np.asarray(dec, dtype=np.float64)
        )
        if self.asymmetry.symmetric:
            return np.ones(ra64.shape)
        t, w = self.time_nodes(times)
        total = np.zeros(ra64.shape)
        for k in range(t.size):
            lon, lat = self.track.fov_coordinates(ra64, dec64, t[k], "ALTAZ")
            total += w[k] * self.asymmetry.factor(lon, lat, self.zenith)
        return total


def _checked_alignment(alignment: str) -> FovAlignment:
    name = str(alignment).strip().upper()
    if name == "ALTAZ":
        return "ALTAZ"
    if name == "RADEC":
        return "RADEC"
    raise ValueError(f"alignment must be one of {FOV_ALIGNMENTS}, got {alignment!r}")


def _fov_axis_nodes(
    edges: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Gauss-Legendre nodes and weights (deg) of each field-of-view bin, shape (n_bins, n)."""
    n_pieces = max(1, math.ceil(float(np.max(np.diff(edges))) / _MAX_FOV_STEP))
    cuts = edges[:-1, None] + np.diff(edges)[:, None] * np.linspace(0.0, 1.0, n_pieces + 1)
    mid = 0.5 * (cuts[:, 1:] + cuts[:, :-1])
    half = 0.5 * (cuts[:, 1:] - cuts[:, :-1])
    nodes = mid[..., None] + half[..., None] * _FOV_GL_NODES
    weights = half[..., None] * _FOV_GL_WEIGHTS
    n_bins = edges.size - 1
    return nodes.reshape(n_bins, -1), weights.reshape(n_bins, -1)


def _energy_integrals(
    energy_edges: NDArray[np.float64], u: NDArray[np.float64], zenith: float, muoneff: float
) -> NDArray[np.float64]:
    """Integral over each energy bin (MeV) of the radial rate at points with 1 - cos(theta) = u.

    Shape ``(n_energy, u.size)``, in s-1 sr-1."""
    norm, threshold = _norm_and_threshold(zenith, muoneff)
    energy, weights = _log_energy_nodes(energy_edges)
    spectral = norm * _spectral_shape(energy, threshold) * weights
    inv_s2 = 1.0 / _width_sq(energy)
    flat = u.ravel()
    out = np.empty((energy_edges.size - 1, flat.size))
    step = max(1, _CHUNK // energy.shape[1])
    for i in range(out.shape[0]):
        for j in range(0, flat.size, step):
            block = np.exp(-np.multiply.outer(inv_s2[i], flat[j : j + step]))
            out[i, j : j + step] = spectral[i] @ block
    return out


def true_fov_counts(
    run: RunTruth,
    energy_edges: ArrayLike,
    fov_lon_edges: ArrayLike,
    fov_lat_edges: ArrayLike,
    alignment: FovAlignment = "ALTAZ",
    *,
    times: ArrayLike | None = None,
) -> xr.DataArray:
    """Expected background counts of a run per field-of-view bin, in either alignment.

    The truth (:func:`true_altaz_rate`) integrated over each energy bin and each
    ``(fov_lon, fov_lat)`` bin of the sphere (Gauss-Legendre, relative accuracy
    ~1e-9), times the live time. For ``RADEC`` the asymmetry, fixed in the
    ALTAZ frame, is averaged over the rotation of the field during the run
    (:meth:`RunTruth.mean_factor`); the radial part is the same in both frames
    (to ~1e-4 relative: the ALTAZ frame's offsets differ from those of the
    RADEC frame by the differential aberration).

    Parameters
    ----------
    run
        The run (:meth:`RunTruth.from_header`).
    energy_edges
        Energy bin edges in TeV.
    fov_lon_edges, fov_lat_edges
        Field-of-view bin edges in deg, GADF sign (:mod:`xbkg.fov`).
    alignment
        ``"ALTAZ"`` or ``"RADEC"`` (GADF ``FOVALIGN``).
    times
        For ``RADEC``: times (s) to average the rotation over with equal
        weights, instead of the default nodes (:meth:`RunTruth.time_nodes`).

    Returns
    -------
    xarray.DataArray
        Dims ``(energy, fov_lon, fov_lat)`` with bin edges as coordinates
        (:func:`xbkg.axes.fov_coords`), ``units`` ``"1"``, attribute
        ``fov_alignment``. The run only holds events within its
        ``offset_max`` and ``energy_range``: compare with bins inside them.
    """
    frame = _checked_alignment(alignment)
    e_edges = validate_edges(energy_edges, "energy", positive=True)
    coords = {k: v for k, v in binned_coords(e_edges).items() if v.dims == (ENERGY_DIM,)}
    coords.update(fov_coords(fov_lon_edges, fov_lat_edges))
    lon_edges = np.concatenate(
        [coords[f"{FOV_LON_DIM}_lo"].values, coords[f"{FOV_LON_DIM}_hi"].values[-1:]]
    )
    lat_edges = np.concatenate(
        [coords[f"{FOV_LAT_DIM}_lo"].values, coords[f"{FOV_LAT_DIM}_hi"].values[-1:]]
    )
    if np.any(np.abs(lat_edges) > 90.0) or np.any(np.abs(lon_edges) > 180.0):
        raise ValueError("fov_lat edges must lie in [-90, 90] and fov_lon edges in [-180, 180] deg")
    lon, w_lon = _fov_axis_nodes(lon_edges)  # (n_lon, m)
    lat, w_lat = _fov_axis_nodes(lat_edges)
    grid_lon, grid_lat = np.meshgrid(lon.ravel(), lat.ravel(), indexing="ij")
    # dOmega = cos(lat) dlon dlat on the sphere (the frames are rotations of it).
    weight = np.multiply.outer(w_lon.ravel(), w_lat.ravel()) * np.cos(np.deg2rad(grid_lat))
    weight *= np.deg2rad(1.0) ** 2
    if frame == "ALTAZ":
        factor = run.asymmetry.factor(grid_lon, grid_lat, run.zenith)
    else:
        from xbkg.fov import fov_to_radec

        ra, dec = fov_to_radec(grid_lon, grid_lat, run.track.ra_pnt, run.track.dec_pnt)
        factor = run.mean_factor(ra, dec, times)
    radial = _energy_integrals(e_edges, _fov_one_minus_cos(grid_lon, grid_lat), run.zenith, 1.0)
    per_node = radial * (weight * factor).ravel() * (run.muoneff * run.livetime)
    n_lon, n_lat, m = lon.shape[0], lat.shape[0], lon.shape[1]
    counts = per_node.reshape(-1, n_lon, m, n_lat, m).sum(axis=(2, 4))
    return xr.DataArray(
        counts,
        dims=(ENERGY_DIM, FOV_LON_DIM, FOV_LAT_DIM),
        coords=coords,
        name="counts",
        attrs={
            "units": "1",
            "long_name": "expected background counts",
            "truth": TRUTH_VERSION,
            "fov_alignment": frame,
        },
    )


def true_fov_rate(
    run: RunTruth,
    energy_edges: ArrayLike,
    fov_lon_edges: ArrayLike,
    fov_lat_edges: ArrayLike,
    alignment: FovAlignment = "ALTAZ",
    *,
    times: ArrayLike | None = None,
) -> xr.DataArray:
    """Bin average of a run's true rate per live time: what a perfect ``bkg_3d`` model holds.

    :func:`true_fov_counts` divided by the live time, the energy width (MeV)
    and the exact solid angle of each bin (``dlon (sin lat_hi - sin lat_lo)``);
    in s-1 MeV-1 sr-1. The arguments are those of :func:`true_fov_counts`.
    """
    counts = true_fov_counts(
        run, energy_edges, fov_lon_edges, fov_lat_edges, alignment, times=times
    )
    lon_w = np.deg2rad(counts[f"{FOV_LON_DIM}_hi"] - counts[f"{FOV_LON_DIM}_lo"])
    sin_lat = np.sin(np.deg2rad(counts[f"{FOV_LAT_DIM}_hi"])) - np.sin(
        np.deg2rad(counts[f"{FOV_LAT_DIM}_lo"])
    )
    rate = counts / (run.livetime * energy_width_mev(counts) * lon_w * sin_lat)
    rate.name = "rate"
    rate.attrs = {
        "units": RATE_UNIT,
        "long_name": "true background rate per live time, bin average",
        "truth": TRUTH_VERSION,
        "fov_alignment": counts.attrs["fov_alignment"],
    }
    return rate


def true_sky_counts(
    run: RunTruth,
    energy_edges: ArrayLike,
    ra: ArrayLike,
    dec: ArrayLike,
    solid_angle: ArrayLike,
    *,
    times: ArrayLike | None = None,
) -> NDArray[np.float64]:
    """Expected background counts of a run in the pixels of a sky map.

    The truth at each pixel centre, averaged over the run (the asymmetry turns
    with the field, :meth:`RunTruth.mean_factor`), integrated exactly over each
    energy bin, times the pixel's solid angle and the live time: the midpoint
    rule in space, as Gammapy's ``MapDatasetMaker`` evaluates a model, within
    1e-3 (3e-3 below 0.1 TeV) of the pixel integral for pixels of 0.1 deg
    within 2.5 deg of the pointing.

    Parameters
    ----------
    run
        The run (:meth:`RunTruth.from_header`).
    energy_edges
        Energy bin edges in TeV.
    ra, dec
        Pixel centres in deg (ICRS), any shape, broadcast together.
    solid_angle
        Solid angle of each pixel in sr, broadcast with ``ra``.
    times
        Times (s) to average the rotation over, see :meth:`RunTruth.time_nodes`.

    Returns
    -------
    numpy.ndarray
        Shape ``(n_energy, *ra.shape)``, as a Gammapy map's data. The run only
        holds events within its ``offset_max`` and ``energy_range``.
    """
    e_edges = validate_edges(energy_edges, "energy", positive=True)
    ra64, dec64, omega = np.broadcast_arrays(
        np.asarray(ra, dtype=np.float64),
        np.asarray(dec, dtype=np.float64),
        np.asarray(solid_angle, dtype=np.float64),
    )
    offset = separation(ra64, dec64, run.track.ra_pnt, run.track.dec_pnt)
    radial = _energy_integrals(e_edges, _one_minus_cos(offset), run.zenith, 1.0)
    factor = run.mean_factor(ra64, dec64, times)
    counts = radial * (omega * factor).ravel() * (run.muoneff * run.livetime)
    return counts.reshape(e_edges.size - 1, *ra64.shape)


def _fov_lon_lat(
    offset: NDArray[np.float64], position_angle: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Field-of-view (lon, lat) in deg of the point ``offset`` deg from the centre in direction
    ``position_angle`` (rad, from +fov_lat towards +fov_lon), exact on the sphere."""
    t = np.deg2rad(offset)
    lat = np.arcsin(np.clip(np.sin(t) * np.cos(position_angle), -1.0, 1.0))
    lon = np.arctan2(np.sin(t) * np.sin(position_angle), np.cos(t))
    return np.rad2deg(lon), np.rad2deg(lat)


def _sample_fov_position(
    rng: np.random.Generator,
    offset: NDArray[np.float64],
    zenith: float,
    asymmetry: FovAsymmetry,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """ALTAZ (lon, lat) in deg of events at given offsets, their position angles following
    the asymmetry factor (rejection: on a ring of radius theta the factor lies within
    1 +- theta (|g| + |C|), and its mean on the ring is exactly 1, so the offsets keep
    the radial distribution they were drawn from)."""
    g = float(asymmetry.altitude_gradient(zenith))
    bound = 1.0 + offset * (abs(g) + abs(asymmetry.camera))
    lon, lat = np.empty(offset.size), np.empty(offset.size)
    todo = np.arange(offset.size)
    while todo.size:
        angle = rng.uniform(0.0, 2.0 * np.pi, todo.size)
        trial_lon, trial_lat = _fov_lon_lat(offset[todo], angle)
        accept = rng.random(todo.size) * bound[todo] < asymmetry.factor(
            trial_lon, trial_lat, zenith
        )
        lon[todo[accept]], lat[todo[accept]] = trial_lon[accept], trial_lat[accept]
        todo = todo[~accept]
    return lon, lat


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


def background_rates(
    zenith: NDArray[np.float64],
    muoneff: NDArray[np.float64],
    energy_range: tuple[float, float],
    offset_max: float,
) -> NDArray[np.float64]:
    """Background events per live second of each run, in ``energy_range`` and out to
    ``offset_max`` (deg)."""
    u_max = float(_one_minus_cos(offset_max))
    return np.array(
        [
            _energy_table(z, energy_range, u_max).total * m
            for z, m in zip(zenith, muoneff, strict=True)
        ]
    )


# --------------------------------------------------------------------------------------
# Positions on the sky
# --------------------------------------------------------------------------------------


def destination(
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


def separation(ra1: _Values, dec1: _Values, ra2: _Values, dec2: _Values) -> _Values:
    """Great-circle distance in deg (haversine, accurate at small angles)."""
    r1, d1, r2, d2 = (np.deg2rad(v) for v in (ra1, dec1, ra2, dec2))
    h = np.sin(0.5 * (d2 - d1)) ** 2 + np.cos(d1) * np.cos(d2) * np.sin(0.5 * (r2 - r1)) ** 2
    return np.rad2deg(2.0 * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0))))


# --------------------------------------------------------------------------------------
# Events of a run
# --------------------------------------------------------------------------------------


def check_sources(sources: Sequence[Sequence[float]]) -> list[Source]:
    """The sources ``(ra, dec, sigma_deg, n_events)`` checked, RA in [0, 360) and n an int."""
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
        if n == 0 or separation(ra, dec, ra_pnt, dec_pnt) > offset_max:
            continue
        width = math.hypot(sigma, _PSF_SIGMA)
        radius = width * np.sqrt(-2.0 * np.log1p(-rng.random(n)))
        ev_ra, ev_dec = destination(ra, dec, radius, rng.uniform(0.0, 2.0 * np.pi, n))
        keep = separation(ev_ra, ev_dec, ra_pnt, dec_pnt) <= offset_max
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


def run_events(
    rng: np.random.Generator,
    *,
    ra_pnt: float,
    dec_pnt: float,
    zenith: float,
    tstart: float,
    tstop: float,
    n_background: int,
    sources: Sequence[Source],
    offset_max: float,
    energy_range: tuple[float, float],
    asymmetry: FovAsymmetry | None = None,
    track: PointingTrack | None = None,
) -> tuple[dict[str, NDArray[Any]], int]:
    """The events of one run pointed at (``ra_pnt``, ``dec_pnt``), in time order.

    ``n_background`` background events drawn from :func:`true_rate` at the
    run's zenith angle, in ``energy_range`` and out to ``offset_max``, and the
    events of the ``sources`` (checked by :func:`check_sources`) that fall in
    the field of view, at times uniform between ``tstart`` and ``tstop``.

    With an ``asymmetry`` (:class:`FovAsymmetry`), the background events are
    drawn in the ALTAZ field of view from :func:`true_altaz_rate` and placed on
    the sky at their times through ``track`` (the run's
    :class:`xbkg.fov.PointingTrack`, which must then be given and cover the run).

    Returns
    -------
    tuple
        The event columns ``EVENT_ID``, ``TIME``, ``RA``, ``DEC``, ``ENERGY``
        (as written: RA, DEC, ENERGY in float32) and the number of source events.
    """
    u_max = float(_one_minus_cos(offset_max))
    n_bkg = int(n_background)
    table = _energy_table(float(zenith), energy_range, u_max)
    energy = _sample_energy(rng, n_bkg, table)
    offset = _sample_offset(rng, energy, u_max)
    in_fov = asymmetry is not None and not asymmetry.symmetric
    if in_fov:
        assert asymmetry is not None
        if track is None:
            raise ValueError("run_events: an asymmetric truth needs the run's pointing track")
        fov_lon, fov_lat = _sample_fov_position(rng, offset, float(zenith), asymmetry)
        ra = dec = np.empty(0)  # placed on the sky once the times are drawn
    else:
        ra, dec = destination(ra_pnt, dec_pnt, offset, rng.uniform(0.0, 2.0 * np.pi, n_bkg))
    src_ra, src_dec, src_energy = _source_events(
        rng, sources, ra_pnt, dec_pnt, offset_max, energy_range
    )
    energy = np.concatenate([energy, src_energy])
    n = energy.size
    time = tstart + rng.random(n) * (tstop - tstart)
    if in_fov:
        assert track is not None
        ra, dec = track.sky_coordinates(fov_lon, fov_lat, time[:n_bkg], "ALTAZ")
    ra, dec = np.concatenate([ra, src_ra]), np.concatenate([dec, src_dec])
    order = np.argsort(time, kind="stable")  # event lists are in time order
    events: dict[str, NDArray[Any]] = {
        "EVENT_ID": np.arange(1, n + 1, dtype=np.int64),
        "TIME": time[order],
        "RA": ra[order].astype(np.float32),
        "DEC": dec[order].astype(np.float32),
        "ENERGY": energy[order].astype(np.float32),
    }
    return events, int(src_energy.size)


# --------------------------------------------------------------------------------------
# Instrument responses written with the runs
# --------------------------------------------------------------------------------------


def irf_axes(offset_max: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Energy (TeV) and offset (deg) edges of the simulated IRFs: the whole field of view."""
    energy = np.geomspace(0.01, 300.0, 37)  # 8 bins per decade
    theta = np.linspace(0.0, max(3.0, math.ceil(offset_max)), 7)  # the whole field of view
    return energy, theta


def effective_area(zenith: float, offset_max: float) -> NDArray[np.float64]:
    """A plausible gamma-ray effective area in m2 along ``(offset, energy)`` (:func:`irf_axes`).

    It plays no part in the background truth."""
    energy, theta = irf_axes(offset_max)
    e = np.sqrt(energy[:-1] * energy[1:])
    t = 0.5 * (theta[:-1] + theta[1:])
    _, threshold = _norm_and_threshold(zenith, 1.0)
    area = 1.2e5 / (1.0 + (0.6 * threshold / e) ** 4)  # m2, plateau near 1e5 m2
    return area[None, :] * np.exp(-0.5 * (t[:, None] / 1.5) ** 2)


def rad_max(offset_max: float) -> NDArray[np.float64]:
    """Direction cut (deg) of a point-like analysis along ``(offset, energy)`` (:func:`irf_axes`):
    wider at low energy, as real cuts are."""
    energy, theta = irf_axes(offset_max)
    e = np.sqrt(energy[:-1] * energy[1:])
    rad = np.clip(0.25 * (e / 0.1) ** -0.25, 0.08, 0.25)
    return np.broadcast_to(rad, (theta.size - 1, e.size)).astype(np.float64)

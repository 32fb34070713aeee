"""Exclusion regions: known gamma-ray sources left out of the background model.

The geometry of exclusion: region lists (:mod:`xbkg.regions`, read from
catalogues by :mod:`xbkg.io.catalog`) against events and offset rings.

Two per-run operations use it, both on plain numpy arrays because they sit in
the loop over runs:

* :func:`outside_regions` masks the events that fall inside any circle;
* :func:`ring_excluded_fraction` gives, for every offset ring around the
  pointing, the exact fraction of its solid angle covered by the union of the
  circles, by which the exposure of that ring is reduced.

The Gammapy 0.6 "pie" exclusion (only the nearest source, a wedge from the
pointing out to infinity, one run-wide exposure factor) is kept as a preset
for reproducing old results: :func:`nearest_source_wedge`, :func:`wedge_keep`
and :func:`wedge_fraction`.

All angles are in degrees at the interface and float64 inside.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import xarray as xr
from numpy.typing import ArrayLike, NDArray

from xbkg.axes import validate_edges
from xbkg.errors import ConfigError
from xbkg.regions import SOURCE_DIM, region_arrays

__all__ = [
    "DEFAULT_QUADRATURE_NODES",
    "nearest_source_wedge",
    "outside_regions",
    "position_angle",
    "regions_in_fov",
    "ring_excluded_fraction",
    "separation",
    "wedge_fraction",
    "wedge_keep",
]

#: Gauss-Legendre nodes per integration segment of :func:`ring_excluded_fraction`.
DEFAULT_QUADRATURE_NODES = 8

# Accepted catalogue columns, matched case-insensitively, in order of preference.
_POSITION_COLUMNS: tuple[tuple[str, str], ...] = (("RAJ2000", "DEJ2000"), ("RA", "DEC"))
_SIZE_COLUMNS: tuple[str, ...] = ("Radius", "Size", "morph_sigma")
_NAME_COLUMNS: tuple[str, ...] = ("Source_Name", "common_name", "Name")
# The HGPS catalogue file holds several tables; the sources are in this one.
_PREFERRED_HDU = "HGPS_SOURCES"
_FITS_SUFFIXES = (".fits", ".fit", ".fts")
_ANGLE_ATTRS = {"units": "deg"}


# ---------------------------------------------------------------------------
# Spherical geometry
# ---------------------------------------------------------------------------


def separation(ra1: ArrayLike, dec1: ArrayLike, ra2: ArrayLike, dec2: ArrayLike) -> NDArray:
    """Great-circle distance in deg between two sets of positions (broadcast).

    Uses the Vincenty form (``atan2`` of sine and cosine parts), accurate for
    all distances including tiny and near-antipodal ones; this is also the
    formula of :meth:`astropy.coordinates.BaseCoordinateFrame.separation`.
    """
    lon1, lat1, lon2, lat2 = (
        np.deg2rad(np.asarray(x, dtype=np.float64)) for x in (ra1, dec1, ra2, dec2)
    )
    dlon = lon2 - lon1
    sin_dlon, cos_dlon = np.sin(dlon), np.cos(dlon)
    sin1, cos1 = np.sin(lat1), np.cos(lat1)
    sin2, cos2 = np.sin(lat2), np.cos(lat2)
    num1 = cos2 * sin_dlon
    num2 = cos1 * sin2 - sin1 * cos2 * cos_dlon
    denominator = sin1 * sin2 + cos1 * cos2 * cos_dlon
    return np.rad2deg(np.arctan2(np.hypot(num1, num2), denominator))


def position_angle(ra1: ArrayLike, dec1: ArrayLike, ra2: ArrayLike, dec2: ArrayLike) -> NDArray:
    """Position angle in deg of position 2 seen from position 1, East of North, in [0, 360).

    Same definition and wrapping as
    :meth:`astropy.coordinates.BaseCoordinateFrame.position_angle`.
    """
    lon1, lat1, lon2, lat2 = (
        np.deg2rad(np.asarray(x, dtype=np.float64)) for x in (ra1, dec1, ra2, dec2)
    )
    dlon = lon2 - lon1
    cos2 = np.cos(lat2)
    x = np.sin(lat2) * np.cos(lat1) - cos2 * np.sin(lat1) * np.cos(dlon)
    y = np.sin(dlon) * cos2
    return _wrap_360(np.rad2deg(np.arctan2(y, x)))


def _wrap_360(angle: NDArray) -> NDArray:
    """Wrap ``(-360, 360)`` into ``[0, 360)``; -1e-17 must give 0, not 360.0 after rounding."""
    out = np.where(angle < 0, angle + 360.0, angle)
    return np.where(out >= 360.0, out - 360.0, out)


def regions_in_fov(
    regions: xr.Dataset, ra_pnt: float, dec_pnt: float, fov_radius: float
) -> xr.Dataset:
    """The circles that reach into the field of view.

    A circle is kept if ``separation(pointing, centre) - radius < fov_radius``
    (strict), i.e. if some of it lies closer than ``fov_radius`` to the pointing.
    All angles in deg.
    """
    ra, dec, radius = region_arrays(regions)
    sep = separation(ra_pnt, dec_pnt, ra, dec)
    return regions.isel({SOURCE_DIM: np.flatnonzero(sep - radius < fov_radius)})


# ---------------------------------------------------------------------------
# Per-run exclusion (hot loop)
# ---------------------------------------------------------------------------


def outside_regions(ra: ArrayLike, dec: ArrayLike, regions: xr.Dataset) -> NDArray[np.bool_]:
    """Mask of the events to keep: True outside every exclusion circle.

    An event exactly on a circle's edge (distance == radius) counts as inside
    and is removed. Events with non-finite positions are kept (they are in no
    circle); the caller decides what to do with them.

    Parameters
    ----------
    ra, dec
        Event positions in deg, any float dtype (computed in float64).
    regions
        Region list. Passing only the circles near the run
        (:func:`regions_in_fov`) saves time with large catalogues.

    Returns
    -------
    numpy.ndarray of bool
        Same shape as ``ra``.

    Notes
    -----
    The distance test uses the haversine, which is accurate for small
    distances: ``sin²(Δdec/2) + cos dec1 cos dec2 sin²(Δra/2) <= sin²(R/2)``.
    Only events in a circle's declination band (a necessary condition) are
    tested, so the cost scales with the events near the circles.
    """
    ra_a = np.asarray(ra, dtype=np.float64)
    dec_a = np.asarray(dec, dtype=np.float64)
    if ra_a.shape != dec_a.shape:
        raise ValueError(f"ra and dec must have the same shape, got {ra_a.shape}, {dec_a.shape}")
    ra_c, dec_c, rad_c = region_arrays(regions)
    keep = np.ones(ra_a.shape, dtype=bool)
    if ra_a.size == 0 or ra_c.size == 0:
        return keep
    flat_keep = keep.reshape(-1)
    ra_f, dec_f = ra_a.reshape(-1), dec_a.reshape(-1)
    finite = np.isfinite(dec_f)
    if not finite.any():
        return keep
    dec_min, dec_max = dec_f[finite].min(), dec_f[finite].max()
    for k in np.flatnonzero((dec_c + rad_c >= dec_min) & (dec_c - rad_c <= dec_max)):
        # The great-circle distance is at least |delta dec|: a cheap preselection.
        idx = np.flatnonzero(flat_keep & (np.abs(dec_f - dec_c[k]) <= rad_c[k]))
        if idx.size == 0:
            continue
        lat = np.deg2rad(dec_f[idx])
        lat_c = math.radians(dec_c[k])
        hav = (
            np.sin(0.5 * (lat - lat_c)) ** 2
            + np.cos(lat)
            * math.cos(lat_c)
            * np.sin(0.5 * (np.deg2rad(ra_f[idx]) - math.radians(ra_c[k]))) ** 2
        )
        inside = hav <= math.sin(0.5 * math.radians(rad_c[k])) ** 2
        flat_keep[idx[inside]] = False
    return keep


def _half_widths(
    r: NDArray[np.float64], d: NDArray[np.float64], radius: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Half-width (rad, in [0, pi]) of the azimuth arc of each circle at offsets ``r``.

    ``r`` has shape (M, 1), ``d`` (separation of the centre) and ``radius``
    shape (K,). With c = (cos R - cos r cos d) / (sin r sin d) the half-width
    is arccos(c). Written through half-angle products,

        (1 - c) / 2 = sin((R + r - d)/2) sin((R - r + d)/2) / (sin r sin d)
        (1 + c) / 2 = sin((r + d + R)/2) sin((r + d - R)/2) / (sin r sin d)

    and w = 2 atan2(sqrt((1 - c)/2), sqrt((1 + c)/2)): no division (d = 0 and
    r = 0 are fine), no cancellation near the tangent points, and clipping the
    products at 0 gives exactly w = 0 (no overlap) and w = pi (full circle).
    """
    s_minus = np.sin(0.5 * (radius + r - d)) * np.sin(0.5 * (radius - r + d))
    s_plus = np.sin(0.5 * (r + d + radius)) * np.sin(0.5 * (r + d - radius))
    return 2.0 * np.arctan2(np.sqrt(np.maximum(s_minus, 0.0)), np.sqrt(np.maximum(s_plus, 0.0)))


def _covered_azimuth(
    r: NDArray[np.float64],
    d: NDArray[np.float64],
    phi: NDArray[np.float64],
    radius: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Length (rad, in [0, 2 pi]) of the union of the circles' arcs at each offset in ``r``."""
    two_pi = 2.0 * np.pi
    w = _half_widths(r[:, None], d, radius)
    if d.size == 1:
        return 2.0 * w[:, 0]
    start = np.mod(phi - w, two_pi)
    end = start + 2.0 * w
    # Arcs crossing azimuth 2 pi are split into [start, 2 pi] and [0, end - 2 pi]
    # (the second is empty otherwise), so the union is taken on a line.
    starts = np.concatenate([start, np.zeros_like(start)], axis=1)
    ends = np.concatenate([np.minimum(end, two_pi), np.maximum(end - two_pi, 0.0)], axis=1)
    order = np.argsort(starts, axis=1)
    starts = np.take_along_axis(starts, order, axis=1)
    ends = np.take_along_axis(ends, order, axis=1)
    # Sweep: an arc adds what sticks out beyond the furthest end seen so far.
    reach = np.maximum.accumulate(ends, axis=1)
    previous = np.concatenate([np.full((r.size, 1), -np.inf), reach[:, :-1]], axis=1)
    covered = np.maximum(ends - np.maximum(starts, previous), 0.0).sum(axis=1)
    return np.minimum(covered, two_pi)


def _pair_crossings(
    d: NDArray[np.float64], phi: NDArray[np.float64], radius: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Offsets (rad) from the pointing of the points where two circle edges cross.

    There the union's arc length has a kink, so the quadrature splits there.
    Works in a frame with the pointing at the pole: X . c_i = cos R_i for both
    circles, X = a c_i + b c_j + t (c_i x c_j).
    """
    k = d.size
    if k < 2:
        return np.empty(0)
    i, j = np.triu_indices(k, 1)
    c = np.stack([np.sin(d) * np.cos(phi), np.sin(d) * np.sin(phi), np.cos(d)], axis=1)
    ci, cj = c[i], c[j]
    normal = np.cross(ci, cj)
    n2 = np.einsum("ij,ij->i", normal, normal)
    # Concentric circles: the edges do not cross (or coincide, which is no kink).
    keep = n2 > 1e-24
    ci, cj, normal, n2 = ci[keep], cj[keep], normal[keep], n2[keep]
    gamma = np.einsum("ij,ij->i", ci, cj)
    cos_i, cos_j = np.cos(radius[i[keep]]), np.cos(radius[j[keep]])
    a = (cos_i - gamma * cos_j) / n2
    b = (cos_j - gamma * cos_i) / n2
    x0 = a[:, None] * ci + b[:, None] * cj
    t2 = (1.0 - np.einsum("ij,ij->i", x0, x0)) / n2
    ok = t2 >= 0  # otherwise the circles are apart or nested
    if not ok.any():
        return np.empty(0)
    t = np.sqrt(t2[ok])[:, None]
    points = np.concatenate([x0[ok] + t * normal[ok], x0[ok] - t * normal[ok]])
    return np.arctan2(np.hypot(points[:, 0], points[:, 1]), points[:, 2])


@functools.lru_cache(maxsize=8)
def _gauss_legendre(n: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Gauss-Legendre nodes and weights on [-1, 1].

    Cached: computing them costs more than a whole call using them.
    """
    return np.polynomial.legendre.leggauss(n)


def _graded_cuts(singular: NDArray[np.float64], lo: float, hi: float) -> NDArray[np.float64]:
    """Extra cuts that keep every segment away from singular points it does not end on.

    A singular point at distance g just outside a segment much longer than g
    (two tangent points close together, or a tangent point close to the pole
    r = 0 of the azimuth formula) spoils Gauss-Legendre convergence. Around
    each singular point s whose nearest neighbour is at distance g, cuts at
    s ± g 2^j (up to the next singular point on that side) make every segment
    at most as long as its distance to the neighbour.
    """
    points = np.unique(np.concatenate([[0.0], singular]))
    if points.size < 2:
        return np.empty(0)
    gap = np.diff(points)
    gap_left = np.concatenate([[np.inf], gap])
    gap_right = np.concatenate([gap, [np.inf]])
    scale = 2.0 ** np.arange(-1, 60)
    right = points[:, None] + gap_left[:, None] * scale
    right = right[right < (points + gap_right)[:, None]]
    left = points[:, None] - gap_right[:, None] * scale
    left = left[left > (points - gap_left)[:, None]]
    cuts = np.concatenate([right, left])
    return cuts[(cuts > lo) & (cuts < hi)]


def _theta(r: NDArray[np.float64], a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray:
    """Inverse of r = a + (b - a) sin^2(theta/2), accurate near both ends."""
    q = np.clip((r - a) / (b - a), 0.0, 1.0)
    return np.where(q < 0.5, 2.0 * np.arcsin(np.sqrt(q)), np.pi - 2.0 * np.arcsin(np.sqrt(1.0 - q)))


def ring_excluded_fraction(
    offset_edges: ArrayLike,
    regions: xr.Dataset,
    ra_pnt: float,
    dec_pnt: float,
    *,
    n_nodes: int = DEFAULT_QUADRATURE_NODES,
) -> NDArray[np.float64]:
    """Fraction of each offset ring's solid angle inside the union of the circles.

    Exact spherical geometry: a ring between offsets ``t1 < t2`` around the
    pointing has solid angle ``2 pi (cos t1 - cos t2)``; the excluded part is
    ``∫ L(r) sin r dr`` over the ring, with ``L(r)`` the azimuth length covered by
    the union of all circles on the small circle of offset ``r``. Every circle
    in ``regions`` counts (not only the nearest); circles that do not reach
    the rings are skipped.

    Parameters
    ----------
    offset_edges
        Ring edges in deg (increasing, ``>= 0``).
    regions
        Region list.
    ra_pnt, dec_pnt
        Pointing position in deg.
    n_nodes
        Gauss-Legendre nodes per integration segment.

    Returns
    -------
    numpy.ndarray
        Shape ``(len(offset_edges) - 1,)``, values in [0, 1].

    Notes
    -----
    ``L(r)`` is smooth except at the offsets where a circle touches the small
    circle of offset ``r`` (``|d - R|`` and ``d + R``, square-root behaviour),
    where two circle edges cross (kinks) and at ``r = R`` for a circle centred
    on the pointing (a step). Between two consecutive such offsets ``A < B``
    the substitution ``r = A + (B - A) sin²(θ/2)``, θ in [0, π], turns the
    square-root ends into smooth ones; ring edges only cut the θ range, and
    Gauss-Legendre in θ is then exponentially convergent on every piece. Where
    two singular offsets lie close together (or one lies close to the
    pointing, a pole of the azimuth formula), geometrically graded extra cuts
    keep that convergence.

    Accuracy, measured against 48 and 64 nodes, against the closed-form cap
    area and union-of-two-caps area, and against brute-force sky grids: with
    the default 8 nodes the absolute error of a ring fraction was below 1e-10
    in ordinary geometries and below 5e-9 in random and deliberately
    near-degenerate ones (nearly coincident tangent offsets, circle edge
    within 1e-10 deg of the pointing). Cost: about 0.4 ms for 99 rings and
    one circle, 1-2 ms for a few circles.
    """
    t = np.deg2rad(validate_edges(offset_edges, "offset"))
    if t[-1] > np.pi:
        raise ConfigError(f"offset edges must not exceed 180 deg, got {np.rad2deg(t[-1])}")
    if n_nodes < 1:
        raise ConfigError(f"n_nodes must be >= 1, got {n_nodes}")
    n_rings = t.size - 1
    ra_c, dec_c, rad_c = region_arrays(regions)
    d = np.deg2rad(separation(ra_pnt, dec_pnt, ra_c, dec_c))
    radius = np.deg2rad(rad_c)
    near = (d - radius < t[-1]) & (d + radius > t[0])
    if not near.any():
        return np.zeros(n_rings)
    d, radius = d[near], radius[near]
    phi = np.deg2rad(position_angle(ra_pnt, dec_pnt, ra_c[near], dec_c[near]))

    # Between consecutive "special" offsets (where L(r) is not smooth, plus the
    # outer edges) the map r = A + (B - A) sin^2(theta/2), theta in [0, pi],
    # makes the integrand smooth in theta even at square-root ends. Ring edges
    # inside such an interval only cut the theta range, so no quadrature
    # segment ever ends near a singularity it does not resolve.
    # A circle reaching past the antipode of the pointing touches the offset circles
    # at 2 pi - d - R instead of d + R.
    far = np.minimum(d + radius, 2.0 * np.pi - d - radius)
    singular = np.concatenate([np.abs(d - radius), far, _pair_crossings(d, phi, radius)])
    inside = singular[(singular > t[0]) & (singular < t[-1])]
    special = np.unique(np.concatenate([t[[0, -1]], inside]))
    cuts = np.unique(np.concatenate([t, special, _graded_cuts(singular, t[0], t[-1])]))
    lo, hi = cuts[:-1], cuts[1:]
    # Only offsets some circle reaches need integrating; the rest contribute 0.
    reached = ((lo[:, None] < d + radius) & (hi[:, None] > d - radius)).any(axis=1)
    lo, hi = lo[reached], hi[reached]
    ring = np.searchsorted(t, lo, side="right") - 1
    interval = np.searchsorted(special, lo, side="right") - 1
    a, b = special[interval], special[interval + 1]
    theta_lo, theta_hi = _theta(lo, a, b), _theta(hi, a, b)

    x, weights = _gauss_legendre(n_nodes)
    theta = theta_lo[:, None] + (theta_hi - theta_lo)[:, None] * (0.5 * (x + 1.0))
    width = (b - a)[:, None]
    r = np.where(
        theta < 0.5 * np.pi,
        a[:, None] + width * np.sin(0.5 * theta) ** 2,
        b[:, None] - width * np.cos(0.5 * theta) ** 2,
    )
    jacobian = 0.5 * width * np.sin(theta) * (0.5 * (theta_hi - theta_lo))[:, None]
    covered = _covered_azimuth(r.reshape(-1), d, phi, radius).reshape(r.shape)
    segment = (covered * np.sin(r) * jacobian) @ weights
    excluded = np.bincount(ring, weights=segment, minlength=n_rings)
    # cos t1 - cos t2 without cancellation for thin rings.
    ring_area = 4.0 * np.pi * np.sin(0.5 * (t[1:] + t[:-1])) * np.sin(0.5 * np.diff(t))
    return np.clip(excluded / ring_area, 0.0, 1.0)


# ---------------------------------------------------------------------------
# Gammapy 0.6 preset: the nearest-source wedge ("pie")
# ---------------------------------------------------------------------------


def nearest_source_wedge(
    regions: xr.Dataset, ra_pnt: float, dec_pnt: float, fov_radius: float = 2.5
) -> tuple[float, float] | None:
    """The Gammapy 0.6 exclusion wedge of one run, from the nearest source only.

    Parameters
    ----------
    regions
        Region list (Gammapy 0.6 used gamma-cat with ``min_radius=0``).
    ra_pnt, dec_pnt
        Pointing in deg.
    fov_radius
        The nearest source is ignored if its separation is ``> fov_radius`` (strict).

    Returns
    -------
    tuple of float or None
        ``(phi, half)`` in deg: position angle of the source from the pointing
        (East of North, [0, 360)) and the wedge half-opening ``arctan(R / d)``
        (a flat-sky ratio of angles, smaller than the true ``arcsin(R / d)``;
        90 deg if ``d == 0``). None if there is no source within ``fov_radius``.
        Other sources in the field of view are ignored, as in Gammapy 0.6.
    """
    ra_c, dec_c, rad_c = region_arrays(regions)
    if ra_c.size == 0:
        return None
    sep = separation(ra_pnt, dec_pnt, ra_c, dec_c)
    k = int(np.argmin(sep))
    if sep[k] > fov_radius:
        return None
    phi = float(position_angle(ra_pnt, dec_pnt, ra_c[k], dec_c[k]))
    half = 90.0 if sep[k] == 0 else math.degrees(math.atan(rad_c[k] / sep[k]))
    return phi, half


def wedge_keep(
    ra: ArrayLike,
    dec: ArrayLike,
    ra_pnt: float,
    dec_pnt: float,
    wedge: tuple[float, float] | None,
) -> NDArray[np.bool_]:
    """Gammapy 0.6 event selection: True for events outside the wedge.

    With ``pa`` the position angle pointing → event in [0, 360) and
    ``(phi, half) = wedge``: if ``phi + half > 360`` keep
    ``phi + half - 360 < pa < phi - half``, else keep
    ``pa > phi + half or pa < phi - half`` (strict comparisons).

    Reproduces a Gammapy 0.6 bug: when ``phi - half < 0`` (source just East of
    North) there is no wrap, so events with ``pa`` in ``[360 + phi - half, 360)``
    are kept although they lie in the wedge (and its area was still taken off
    the exposure by :func:`wedge_fraction`).

    Returns
    -------
    numpy.ndarray of bool
        Same shape as ``ra``; all True if ``wedge`` is None.
    """
    ra_a = np.asarray(ra, dtype=np.float64)
    if wedge is None:
        return np.ones(ra_a.shape, dtype=bool)
    phi, half = wedge
    pa = position_angle(ra_pnt, dec_pnt, ra_a, dec)
    upper, lower = phi + half, phi - half
    if upper > 360.0:
        return (pa > upper - 360.0) & (pa < lower)
    return (pa > upper) | (pa < lower)


def wedge_fraction(wedge: tuple[float, float] | None) -> float:
    """Gammapy 0.6 run-wide excluded fraction of a wedge: ``2 half / 360`` (0 for None).

    It is applied to every offset ring alike.
    """
    if wedge is None:
        return 0.0
    return 2.0 * wedge[1] / 360.0

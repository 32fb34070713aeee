"""Field-of-view coordinates of events, aligned with RA/Dec or with Alt/Az.

Conventions (GADF ``bkg_3d`` ``FOVALIGN`` and Gammapy 2.1's ``FoVICRSFrame`` /
``FoVAltAzFrame``): spherical coordinates ``(fov_lon, fov_lat)`` in deg with the
pointing at ``(0, 0)``, obtained by a rotation of the sphere only (no
projection), with the *longitude reversed* with respect to astropy's
``SkyOffsetFrame``:

- ``RADEC``: centred on the pointing (``RA_PNT``, ``DEC_PNT``, taken as ICRS);
  ``fov_lat`` grows towards north, ``fov_lon`` towards *decreasing* RA (west);
- ``ALTAZ``: centred on the pointing's horizontal position at the time of the
  event; ``fov_lat`` grows towards higher altitude, ``fov_lon`` towards
  *decreasing* azimuth (azimuth east of north). The horizontal frame is
  astropy's ``AltAz`` at the observatory's geodetic position, at the event's
  time, with pressure 0 (no refraction), as GADF prescribes and Gammapy uses
  when it evaluates a model (``make_map_background_irf``).

Azimuth runs clockwise on the sky where right ascension runs anticlockwise:
the ``ALTAZ`` frame is the ``RADEC`` frame mirrored (``fov_lon`` negated) and
turned by the parallactic angle (:meth:`PointingTrack.rotation_angle`).

The ``ALTAZ`` transformation of each event is exact but fast. Astropy computes
the full ICRS -> AltAz transformation at a grid of times (nodes) spaced so that
the field turns by at most :data:`DEFAULT_MAX_ROTATION` between neighbours; at
each node, the map from ICRS unit vectors to the ``ALTAZ`` field-of-view frame
is the projective map (affine, then normalised) through a few reference
directions: this form holds aberration to second order in v/c, so the fitted
map reproduces astropy to ~1e-8 deg near the pointing. The map is split into
the turn by the parallactic angle, which changes along the run and is
interpolated by a cubic spline, and the rest, which barely changes and is
interpolated linearly; both are applied to the events in numpy. Each event is
transformed on its own, so the result does not depend on the order of the
events or on how they are split into chunks.

Times are seconds since the GADF time reference of the EVENTS header
(``MJDREFI``, ``MJDREFF``, ``TIMESYS``, ``TIMEUNIT``, ``TIMEREF``), read by
:func:`time_reference`; the site comes from ``GEOLAT``/``GEOLON``/``ALTITUDE``
or a known ``TELESCOP`` (:func:`observatory_location`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

# The alignments (GADF FOVALIGN) are conventions; imported here for the users of this module.
from xbkg.conventions import FOV_ALIGNMENTS, FovAlignment
from xbkg.errors import DataStoreError

__all__ = [
    "DEFAULT_MAX_ROTATION",
    "DEFAULT_MAX_STEP",
    "DEFAULT_TIME_MARGIN",
    "FOV_ALIGNMENTS",
    "FovAlignment",
    "HeaderLike",
    "PointingTrack",
    "fov_to_radec",
    "observatory_location",
    "pointing_track",
    "pointing_tracks",
    "radec_to_fov",
    "time_reference",
    "track_from_header",
    "tracks_from_headers",
]

#: Largest rotation of the field (deg) between two nodes of a track, and longest
#: time (s) between two nodes. On H.E.S.S. DR1 the coordinates then agree with
#: astropy's to 1e-5 deg (halving both: 1e-6 deg, for twice the nodes).
DEFAULT_MAX_ROTATION: Final = 2.0
DEFAULT_MAX_STEP: Final = 120.0
#: Nodes never closer than this (s): only within ~0.1 deg of the zenith would
#: the field turn by more than DEFAULT_MAX_ROTATION in that time.
MIN_STEP: Final = 1.0
#: A track built from a header covers TSTART - margin to TSTOP + margin (s):
#: events are time-stamped slightly outside the run's nominal interval (up to
#: 1 s after TSTOP in H.E.S.S. DR1).
DEFAULT_TIME_MARGIN: Final = 60.0

# Time systems (FITS TIMESYS) and their astropy scale; TDT and ET are old names of TT.
_TIME_SCALES: Final = {
    "TT": "tt",
    "TDT": "tt",
    "ET": "tt",
    "TAI": "tai",
    "IAT": "tai",
    "UTC": "utc",
    "UT1": "ut1",
    "TCG": "tcg",
    "TCB": "tcb",
    "TDB": "tdb",
}
# TIMEREF values for times of arrival at the telescope (geocentre: within 21 ms of it).
_LOCAL_TIMEREFS: Final = ("LOCAL", "TOPOCENTER", "GEOCENTER")
# Reference directions for the fit of a node's map: the pointing and rings at
# these offsets (deg), 4 directions each. The far rings pin down the affine
# part (aberration) that the near directions cannot tell from the linear one.
_REFERENCE_OFFSETS: Final = (3.0, 30.0, 90.0)
# Site keywords of GADF and of Gammapy (GEOALT) for the height above sea level (m).
_HEIGHT_KEYS: Final = ("ALTITUDE", "GEOALT")
_EARTH_RADIUS_KM: Final = 6371.0


class HeaderLike(Protocol):
    """What is read from a header: ``get`` as :class:`astropy.io.fits.Header` has it."""

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default``."""


# ---------------------------------------------------------------------------
# Header values: time reference, site, pointing


def _where(source: str) -> str:
    return f"{source}: " if source else ""


def _number(header: HeaderLike, key: str, source: str) -> float | None:
    """A numeric header value, None if absent; a clear error if it is not a number."""
    value = header.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number):
        raise DataStoreError(
            f"{_where(source)}header keyword {key} = {value!r} is not a finite number; fix it"
        )
    return number


def _text(header: HeaderLike, key: str) -> str:
    value = header.get(key)
    return "" if value is None else str(value).strip().upper()


def time_reference(header: HeaderLike, source: str = "") -> Any:
    """The time that event and header times (s) count from: ``MJDREFI + MJDREFF`` in ``TIMESYS``.

    GADF rules: ``MJDREFI``, ``MJDREFF`` and ``TIMESYS`` are required;
    ``TIMEUNIT`` defaults to ``s`` and ``TIMEREF`` to ``LOCAL``. Only seconds and
    times of arrival at the telescope (``LOCAL``, ``TOPOCENTER``, ``GEOCENTER``)
    can place events on the horizon; barycentred times cannot.

    Parameters
    ----------
    header
        An EVENTS header (or anything with ``get``).
    source
        File (and HDU) named in error messages.

    Returns
    -------
    astropy.time.Time
        The reference time, in the scale of ``TIMESYS``.

    Raises
    ------
    DataStoreError
        If a keyword is missing or has a value that cannot be used; the message
        names ``source``, the keyword and what to write.
    """
    from astropy.time import Time

    mjdrefi = _number(header, "MJDREFI", source)
    mjdreff = _number(header, "MJDREFF", source)
    present = {"MJDREFI": mjdrefi, "MJDREFF": mjdreff, "TIMESYS": _text(header, "TIMESYS") or None}
    missing = [key for key, value in present.items() if value is None]
    if mjdrefi is None or mjdreff is None or missing:
        raise DataStoreError(
            f"{_where(source)}the header lacks the time reference keywords {missing} "
            "(GADF: MJDREFI, MJDREFF, TIMESYS are required; e.g. MJDREFI = 51910, "
            "MJDREFF = 7.428703703703703e-4, TIMESYS = 'TT'): add them"
        )
    timesys = _text(header, "TIMESYS")
    if timesys not in _TIME_SCALES:
        raise DataStoreError(
            f"{_where(source)}TIMESYS = {header.get('TIMESYS')!r} is not a time system "
            f"xbkg knows ({', '.join(_TIME_SCALES)}); fix the keyword"
        )
    unit = _text(header, "TIMEUNIT") or "S"
    if unit not in ("S", "SEC", "SECOND", "SECONDS"):
        raise DataStoreError(
            f"{_where(source)}TIMEUNIT = {header.get('TIMEUNIT')!r}: GADF times are "
            "seconds since the reference (TIMEUNIT = 's'); convert the times"
        )
    timeref = _text(header, "TIMEREF") or "LOCAL"
    if timeref not in _LOCAL_TIMEREFS:
        raise DataStoreError(
            f"{_where(source)}TIMEREF = {header.get('TIMEREF')!r}: the times are not times of "
            "arrival at the telescope, which the horizontal (ALTAZ) coordinates of the "
            f"events need ({', '.join(_LOCAL_TIMEREFS)}); use the local event times"
        )
    return Time(mjdrefi, mjdreff, format="mjd", scale=_TIME_SCALES[timesys])


def _nearest_site_height(lat: float, lon: float) -> float | None:
    """Height (m) of the known site within its match distance of (lat, lon), or None."""
    from xbkg.conditions import SITE_MATCH_KM, SITES

    best, height = SITE_MATCH_KM, None
    for site in SITES.values():
        la1, la2 = math.radians(lat), math.radians(site.latitude)
        dlon = math.radians(lon - site.longitude)
        h = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin(dlon / 2) ** 2
        km = 2 * _EARTH_RADIUS_KM * math.asin(math.sqrt(min(h, 1.0)))
        if km <= best:
            best, height = km, site.altitude
    return height


def observatory_location(header: HeaderLike, source: str = "") -> Any:
    """The observatory's position: ``GEOLAT``/``GEOLON``/``ALTITUDE``, else a known ``TELESCOP``.

    As Gammapy (``earth_location_from_dict``): geodetic WGS84 longitude and
    latitude in deg and height in m (``ALTITUDE``, or Gammapy's ``GEOALT``).
    ``GEOLAT = GEOLON = 0`` is a placeholder some writers leave and counts as
    absent. Without a height, that of the known site at that position is taken
    (:data:`xbkg.conditions.SITES`); without a position, that of the site that
    ``TELESCOP`` names.

    Returns
    -------
    astropy.coordinates.EarthLocation

    Raises
    ------
    DataStoreError
        If the header gives no usable position and ``TELESCOP`` names no known site.
    """
    from astropy import units as u
    from astropy.coordinates import EarthLocation

    from xbkg.conditions import SITES

    lat = _number(header, "GEOLAT", source)
    lon = _number(header, "GEOLON", source)
    height = next(
        (h for key in _HEIGHT_KEYS if (h := _number(header, key, source)) is not None), None
    )
    fix = (
        "add GEOLAT and GEOLON (deg) and ALTITUDE (m) of the site to the EVENTS header, or a "
        f"TELESCOP naming a known site ({', '.join(SITES)})"
    )
    if lat is not None and lon is not None and (lat, lon) != (0.0, 0.0):
        if not (-90.0 <= lat <= 90.0):
            raise DataStoreError(f"{_where(source)}GEOLAT = {lat:g} is no latitude; fix it")
        if height is None:
            height = _nearest_site_height(lat, lon)
        if height is None:
            raise DataStoreError(
                f"{_where(source)}GEOLAT {lat:g}, GEOLON {lon:g} is no known site and the "
                "header gives no ALTITUDE: add ALTITUDE (m) to the EVENTS header"
            )
        return EarthLocation.from_geodetic(lon * u.deg, lat * u.deg, height * u.m)
    telescop = _text(header, "TELESCOP")
    for site in SITES.values():
        if telescop and telescop in site.telescop:
            return EarthLocation.from_geodetic(
                site.longitude * u.deg, site.latitude * u.deg, site.altitude * u.m
            )
    what = f"TELESCOP {header.get('TELESCOP')!r} names no known site" if telescop else "no TELESCOP"
    raise DataStoreError(
        f"{_where(source)}the site of the run is unknown (no GEOLAT/GEOLON, {what}): {fix}"
    )


def track_from_header(
    header: HeaderLike,
    source: str = "",
    *,
    max_rotation: float = DEFAULT_MAX_ROTATION,
    max_step: float = DEFAULT_MAX_STEP,
    margin: float = DEFAULT_TIME_MARGIN,
) -> PointingTrack:
    """The :class:`PointingTrack` of a run, from its EVENTS header.

    Uses ``RA_PNT``, ``DEC_PNT`` (ICRS, as Gammapy takes them), ``TSTART``,
    ``TSTOP``, the time reference (:func:`time_reference`) and the site
    (:func:`observatory_location`). The track covers ``TSTART - margin`` to
    ``TSTOP + margin``.

    Raises
    ------
    DataStoreError
        If a keyword is missing or unusable, or the run is a drift scan
        (``OBS_MODE = 'DRIFT'``: no fixed RA/Dec pointing).
    """
    return tracks_from_headers(
        [header], [source], max_rotation=max_rotation, max_step=max_step, margin=margin
    )[0]


def tracks_from_headers(
    headers: Sequence[HeaderLike],
    sources: Sequence[str] | None = None,
    *,
    max_rotation: float = DEFAULT_MAX_ROTATION,
    max_step: float = DEFAULT_MAX_STEP,
    margin: float = DEFAULT_TIME_MARGIN,
) -> list[PointingTrack]:
    """The tracks of many runs at once, from their EVENTS headers (:func:`pointing_tracks`).

    Each track is identical to the one :func:`track_from_header` builds from
    its header alone; runs with the same time reference and site share the
    astropy calls, which makes building the tracks of a data store about three
    times quicker (0.5 s for the 105 runs of H.E.S.S. DR1).

    Parameters
    ----------
    headers
        One EVENTS header per run.
    sources
        File (and HDU) of each header, named in error messages.
    max_rotation, max_step, margin
        As for :func:`track_from_header`.
    """
    names = list(sources) if sources is not None else [""] * len(headers)
    if len(names) != len(headers):
        raise ValueError(f"{len(headers)} headers but {len(names)} sources")
    runs = [_run_values(h, name, margin) for h, name in zip(headers, names, strict=True)]
    # Runs that share the time reference and the site share the astropy calls.
    groups: dict[tuple[object, ...], list[int]] = {}
    for i, (_, time_ref, location) in enumerate(runs):
        x, y, z = (float(c.to_value("m")) for c in location.geocentric)
        key = (str(time_ref.scale), float(time_ref.jd1), float(time_ref.jd2), x, y, z)
        groups.setdefault(key, []).append(i)
    tracks: list[PointingTrack | None] = [None] * len(runs)
    for members in groups.values():
        ra, dec, start, stop = np.array([runs[i][0] for i in members]).T
        _, time_ref, location = runs[members[0]]
        built = pointing_tracks(
            ra, dec, start, stop, time_ref, location, max_rotation=max_rotation, max_step=max_step
        )
        for i, track in zip(members, built, strict=True):
            tracks[i] = track
    return [track for track in tracks if track is not None]


def _run_values(
    header: HeaderLike, source: str, margin: float
) -> tuple[tuple[float, float, float, float], Any, Any]:
    """(RA_PNT, DEC_PNT, TSTART - margin, TSTOP + margin), time reference and site of a run."""
    if _text(header, "OBS_MODE") == "DRIFT":
        raise DataStoreError(
            f"{_where(source)}OBS_MODE = 'DRIFT': the field of view of a drift scan does "
            "not follow a fixed RA/Dec pointing; leave the run out"
        )
    values = {key: _number(header, key, source) for key in ("RA_PNT", "DEC_PNT", "TSTART", "TSTOP")}
    missing = [key for key, value in values.items() if value is None]
    if missing:
        raise DataStoreError(
            f"{_where(source)}the header lacks {missing}, which the field-of-view coordinates "
            "need: add them (deg for the pointing, s since the time reference for the times)"
        )
    ra_pnt, dec_pnt, tstart, tstop = (float(v) for v in values.values() if v is not None)
    if tstop < tstart:
        raise DataStoreError(f"{_where(source)}TSTOP {tstop} is before TSTART {tstart}; fix them")
    return (
        (ra_pnt, dec_pnt, tstart - margin, tstop + margin),
        time_reference(header, source),
        observatory_location(header, source),
    )


# ---------------------------------------------------------------------------
# RADEC alignment: one rotation of the sphere


def _unit_vectors(lon: NDArray[np.float64], lat: NDArray[np.float64]) -> list[NDArray]:
    lon, lat = np.deg2rad(lon), np.deg2rad(lat)
    cos_lat = np.cos(lat)
    return [cos_lat * np.cos(lon), cos_lat * np.sin(lon), np.sin(lat)]


def _lon_lat(x: NDArray, y: NDArray, z: NDArray) -> tuple[NDArray, NDArray]:
    # atan2 of both: exact at the poles and for vectors that are not normalised.
    return np.rad2deg(np.arctan2(y, x)), np.rad2deg(np.arctan2(z, np.hypot(x, y)))


def _fov_matrix(lon: float | NDArray, lat: float | NDArray) -> NDArray[np.float64]:
    """Rotation(s) taking a direction to the GADF field-of-view frame centred on (lon, lat).

    ``S @ Ry(-lat) @ Rz(lon)`` (the matrices of astropy's ``SkyOffsetFrame``
    and Gammapy's FoV frames) with ``S = diag(1, -1, 1)`` reversing the
    longitude. Rows: the centre, minus the direction of increasing lon, and
    the direction of increasing lat there. Shape ``(..., 3, 3)``.
    """
    lon, lat = np.deg2rad(lon), np.deg2rad(lat)
    cl, sl, cb, sb = np.cos(lon), np.sin(lon), np.cos(lat), np.sin(lat)
    zero = np.zeros_like(cl)
    rows = [[cb * cl, cb * sl, sb], [sl, -cl, zero], [-sb * cl, -sb * sl, cb]]
    return np.moveaxis(np.array(rows, dtype=np.float64), (0, 1), (-2, -1))


def radec_to_fov(
    ra: ArrayLike, dec: ArrayLike, ra_pnt: float, dec_pnt: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Field-of-view coordinates aligned with RA/Dec (GADF ``FOVALIGN = 'RADEC'``).

    Equal to Gammapy 2.1's ``FoVICRSFrame`` (and ``sky_to_fov``): astropy's
    ``SkyOffsetFrame`` centred on the pointing, longitude reversed.

    Parameters
    ----------
    ra, dec
        Directions in deg (ICRS), any broadcastable shapes.
    ra_pnt, dec_pnt
        Pointing in deg (ICRS).

    Returns
    -------
    fov_lon, fov_lat
        In deg; ``fov_lon`` in [-180, 180] grows towards decreasing RA,
        ``fov_lat`` towards north.
    """
    ra64, dec64 = np.broadcast_arrays(np.asarray(ra, np.float64), np.asarray(dec, np.float64))
    u = _unit_vectors(ra64, dec64)
    m = _fov_matrix(ra_pnt, dec_pnt)
    return _lon_lat(*(m[i, 0] * u[0] + m[i, 1] * u[1] + m[i, 2] * u[2] for i in range(3)))


def fov_to_radec(
    fov_lon: ArrayLike, fov_lat: ArrayLike, ra_pnt: float, dec_pnt: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """RA/Dec (deg, ICRS) of RADEC field-of-view coordinates: inverse of :func:`radec_to_fov`.

    Returns
    -------
    ra, dec
        In deg, ``ra`` in [0, 360).
    """
    lon, lat = np.broadcast_arrays(np.asarray(fov_lon, np.float64), np.asarray(fov_lat, np.float64))
    v = _unit_vectors(lon, lat)
    m = _fov_matrix(ra_pnt, dec_pnt)
    ra, dec = _lon_lat(*(m[0, i] * v[0] + m[1, i] * v[1] + m[2, i] * v[2] for i in range(3)))
    return np.mod(ra, 360.0), dec


# ---------------------------------------------------------------------------
# ALTAZ alignment: the pointing track of a run


#: Reverses the longitude of a field-of-view frame.
_MIRROR: Final = np.diag([1.0, -1.0, 1.0])


def _rotation_x(angle: NDArray[np.float64]) -> NDArray[np.float64]:
    """Matrices turning (y, z) = (fov_lon, fov_lat) counter-clockwise by ``angle`` (rad)."""
    c, s = np.cos(angle), np.sin(angle)
    one, zero = np.ones_like(c), np.zeros_like(c)
    rows = [[one, zero, zero], [zero, c, -s], [zero, s, c]]
    return np.moveaxis(np.array(rows, dtype=np.float64), (0, 1), (-2, -1))


def _reference_directions(ra_pnt: NDArray, dec_pnt: NDArray) -> NDArray[np.float64]:
    """ICRS unit vectors of each pointing and of rings around it, shape (N, K, 3)."""
    points = [(0.0, 0.0)]
    for k, offset in enumerate(_REFERENCE_OFFSETS):
        points += [(offset, 90.0 * j + 30.0 * k) for j in range(4)]
    offset, angle = np.deg2rad(np.array(points)).T
    # Directions at (offset, position angle) in the RADEC frame, then to ICRS.
    fov = np.stack(
        [np.cos(offset), -np.sin(offset) * np.sin(angle), np.sin(offset) * np.cos(angle)]
    )
    return np.swapaxes(np.swapaxes(_fov_matrix(ra_pnt, dec_pnt), -1, -2) @ fov, -1, -2)


def _fit_projective(u: NDArray[np.float64], v: NDArray[np.float64]) -> NDArray[np.float64]:
    """The 3x4 map ``B`` with ``v ~ B @ (u, 1)`` up to a positive factor, for each node.

    ``u`` and ``v`` (N, K, 3) unit vectors. Solved as the null vector of the
    linear equations ``v x (B @ (u, 1)) = 0`` (direct linear transform),
    scaled to ``|det B[:, :3]| = 1`` and signed so that ``B`` maps ``u`` onto
    ``v`` rather than onto ``-v``.
    """
    n, k = v.shape[:2]
    uh = np.concatenate([u, np.ones((n, k, 1))], axis=-1)  # (N, K, 4)
    zero = np.zeros((n, k, 4))
    # Rows of the cross product v x w with w = B @ uh, B flattened row by row.
    rows = np.stack(
        [
            np.concatenate([zero, -v[..., 2:3] * uh, v[..., 1:2] * uh], axis=-1),
            np.concatenate([v[..., 2:3] * uh, zero, -v[..., 0:1] * uh], axis=-1),
            np.concatenate([-v[..., 1:2] * uh, v[..., 0:1] * uh, zero], axis=-1),
        ],
        axis=2,
    ).reshape(n, 3 * k, 12)
    # The null vector: the eigenvector of the smallest eigenvalue of rows^T rows
    # (quicker than an SVD of rows; the other eigenvalues are > 0.1, the null
    # one ~1e-17, so the vector is exact to ~1e-15).
    b = np.linalg.eigh(np.swapaxes(rows, 1, 2) @ rows)[1][:, :, 0].reshape(n, 3, 4)
    b /= np.cbrt(np.abs(np.linalg.det(b[:, :, :3])))[:, None, None]
    sign = np.sign(np.einsum("nij,nj,ni->n", b, uh[:, 0], v[:, 0]))
    return b * sign[:, None, None]


@dataclass(frozen=True)
class _Nodes:
    """The astropy transformation at node times, reduced to what is interpolated."""

    alt: NDArray[np.float64]  # pointing, deg
    az: NDArray[np.float64]
    rotation: NDArray[np.float64]  # deg, wrapped to (-180, 180]
    maps: NDArray[np.float64]  # (N, 3, 4): ICRS (u, 1) -> ALTAZ frame turned back by -rotation


def _nodes(
    ra_pnt: NDArray, dec_pnt: NDArray, times: NDArray[np.float64], time_ref: Any, location: Any
) -> _Nodes:
    """Astropy's ICRS -> AltAz of pointing ``n`` at ``times[n]`` (s since ``time_ref``)."""
    from astropy import units as u
    from astropy.coordinates import ICRS, AltAz, SkyCoord
    from astropy.time import TimeDelta

    directions = _reference_directions(ra_pnt, dec_pnt)  # (N, K, 3)
    ra, dec = _lon_lat(*np.moveaxis(directions, -1, 0))
    obstime = time_ref + TimeDelta(times[:, None], format="sec")
    sky = SkyCoord(ra * u.deg, dec * u.deg, frame=ICRS())
    # Pressure 0: no refraction (GADF, Gammapy). One call for all nodes: the
    # cost of an astropy transformation is mostly per call.
    altaz = sky.transform_to(AltAz(obstime=obstime, location=location))
    az, alt = altaz.az.to_value(u.deg), altaz.alt.to_value(u.deg)  # (N, K)
    horizontal = np.stack(_unit_vectors(az, alt), axis=-1)  # (N, K, 3)
    # ICRS -> AltAz cartesian (improper: azimuth east of north), then the GADF
    # field-of-view frame centred on the pointing's AltAz position, as
    # Gammapy's FoVAltAzFrame does.
    forward = _fov_matrix(az[:, 0], alt[:, 0]) @ _fit_projective(directions, horizontal)
    # Azimuth runs clockwise on the sky where RA runs anticlockwise: the ALTAZ
    # frame is the RADEC frame mirrored (fov_lon -> -fov_lon, i.e. astropy's
    # SkyOffsetFrame) and then turned by psi about the pointing. The linear
    # part of the map is close to that turn: psi is its angle in the (y, z) plane.
    turn = forward[:, :, :3] @ np.swapaxes(_MIRROR @ _fov_matrix(ra_pnt, dec_pnt), -1, -2)
    psi = np.arctan2(turn[:, 2, 1] - turn[:, 1, 2], turn[:, 1, 1] + turn[:, 2, 2])
    return _Nodes(
        alt=alt[:, 0],
        az=np.mod(az[:, 0], 360.0),
        rotation=np.rad2deg(psi),
        maps=_rotation_x(-psi) @ forward,
    )


def _wrap_180(angle: NDArray[np.float64]) -> NDArray[np.float64]:
    return 180.0 - np.mod(180.0 - angle, 360.0)


def pointing_track(
    ra_pnt: float,
    dec_pnt: float,
    tstart: float,
    tstop: float,
    time_ref: Any,
    location: Any,
    *,
    max_rotation: float = DEFAULT_MAX_ROTATION,
    max_step: float = DEFAULT_MAX_STEP,
) -> PointingTrack:
    """The track of a fixed RA/Dec pointing across the sky between two times.

    Nodes are spaced evenly by at most ``max_step`` seconds, then, where the
    field turns by more than ``max_rotation`` deg between two nodes (high
    altitude), subdivided until it does not (down to :data:`MIN_STEP`). The
    nodes depend only on the arguments, so that every chunk of a run's events
    is transformed alike.

    Parameters
    ----------
    ra_pnt, dec_pnt
        Pointing in deg (ICRS).
    tstart, tstop
        Interval covered, in s since ``time_ref``.
    time_ref
        :class:`astropy.time.Time` that times count from (:func:`time_reference`).
    location
        :class:`astropy.coordinates.EarthLocation` of the observatory
        (:func:`observatory_location`).
    max_rotation, max_step
        Node spacing, see above.

    Returns
    -------
    PointingTrack
    """
    return pointing_tracks(
        [ra_pnt],
        [dec_pnt],
        [tstart],
        [tstop],
        time_ref,
        location,
        max_rotation=max_rotation,
        max_step=max_step,
    )[0]


def pointing_tracks(
    ra_pnt: ArrayLike,
    dec_pnt: ArrayLike,
    tstart: ArrayLike,
    tstop: ArrayLike,
    time_ref: Any,
    location: Any,
    *,
    max_rotation: float = DEFAULT_MAX_ROTATION,
    max_step: float = DEFAULT_MAX_STEP,
) -> list[PointingTrack]:
    """The tracks of several runs (same time reference and site), as :func:`pointing_track`.

    One astropy call serves all runs (and one more per refinement of the
    nodes): on H.E.S.S. DR1 about three times quicker than a call per run. Each track is
    identical to the one :func:`pointing_track` builds for its run alone.

    Parameters
    ----------
    ra_pnt, dec_pnt, tstart, tstop
        One value per run (1-d, same length).
    time_ref, location, max_rotation, max_step
        As for :func:`pointing_track`.
    """
    ra = np.atleast_1d(np.asarray(ra_pnt, np.float64))
    dec = np.atleast_1d(np.asarray(dec_pnt, np.float64))
    start = np.atleast_1d(np.asarray(tstart, np.float64))
    stop = np.atleast_1d(np.asarray(tstop, np.float64))
    if not (ra.ndim == 1 and ra.shape == dec.shape == start.shape == stop.shape):
        raise ValueError(
            "ra_pnt, dec_pnt, tstart and tstop need one value per run (1-d, same size)"
        )
    bad = ~(np.isfinite(start) & np.isfinite(stop) & (stop >= start))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"a track needs finite times with tstart <= tstop, not {start[i], stop[i]}"
        )
    if not (max_rotation > 0 and max_step >= MIN_STEP):
        raise ValueError(
            f"max_rotation must be > 0 and max_step >= {MIN_STEP} s, not {max_rotation, max_step}"
        )
    times = []
    for t0, t1 in zip(start.tolist(), stop.tolist(), strict=True):
        count = math.ceil((t1 - t0) / max_step)
        times.append(np.linspace(t0, t1, count + 1) if count else np.array([t0]))
    nodes = _nodes_of_runs(ra, dec, times, time_ref, location)
    for _ in range(64):  # each pass at least halves the steps that are too long
        extra = [
            _refinement(t, n.rotation, max_rotation) for t, n in zip(times, nodes, strict=True)
        ]
        if not any(e.size for e in extra):
            break
        more = _nodes_of_runs(ra, dec, extra, time_ref, location)
        for i, (new, new_nodes) in enumerate(zip(extra, more, strict=True)):
            order = np.argsort(np.concatenate([times[i], new]), kind="stable")
            times[i] = np.concatenate([times[i], new])[order]
            nodes[i] = _Nodes(
                *(
                    np.concatenate([a, b])[order]
                    for a, b in zip(_fields(nodes[i]), _fields(new_nodes), strict=True)
                )
            )
    return [
        PointingTrack(
            ra_pnt=float(ra[i]),
            dec_pnt=float(dec[i]),
            time_ref=time_ref,
            location=location,
            times=times[i],
            alt=nodes[i].alt,
            az=nodes[i].az,
            rotation=np.rad2deg(np.unwrap(np.deg2rad(nodes[i].rotation))),
            maps=nodes[i].maps,
        )
        for i in range(ra.size)
    ]


def _refinement(
    times: NDArray[np.float64], rotation: NDArray[np.float64], max_rotation: float
) -> NDArray[np.float64]:
    """Nodes to add where the field turns by more than ``max_rotation`` between two nodes."""
    turn = np.abs(_wrap_180(np.diff(rotation)))
    split = np.ceil(turn / max_rotation).astype(np.int64)
    split = np.minimum(split, np.maximum(1, np.floor(np.diff(times) / MIN_STEP)).astype(np.int64))
    # Twice as many pieces as the rotation asks for: the rate grows towards the zenith.
    new = [
        np.linspace(times[i], times[i + 1], 2 * n + 1)[1:-1]
        for i, n in enumerate(split.tolist())
        if n > 1
    ]
    return np.concatenate(new) if new else np.zeros(0)


def _nodes_of_runs(
    ra: NDArray, dec: NDArray, times: list[NDArray[np.float64]], time_ref: Any, location: Any
) -> list[_Nodes]:
    """:func:`_nodes` of several runs in one astropy call, split back per run."""
    counts = [t.size for t in times]
    if not sum(counts):
        empty = np.zeros(0)
        return [_Nodes(empty, empty, empty, np.zeros((0, 3, 4))) for _ in times]
    nodes = _nodes(
        np.repeat(ra, counts), np.repeat(dec, counts), np.concatenate(times), time_ref, location
    )
    cuts = np.cumsum(counts)[:-1]
    parts = [np.split(field, cuts) for field in _fields(nodes)]
    return [_Nodes(*fields) for fields in zip(*parts, strict=True)]


def _fields(nodes: _Nodes) -> tuple[NDArray[np.float64], ...]:
    return nodes.alt, nodes.az, nodes.rotation, nodes.maps


@dataclass(frozen=True, eq=False)
class PointingTrack:
    """A fixed RA/Dec pointing followed across the sky during a run.

    Built by :func:`pointing_track` or :func:`track_from_header`; holds the
    astropy transformation at node times (:attr:`times`) and interpolates it
    linearly in time. Times are in s since :attr:`time_ref` (the EVENTS
    ``TIME`` column, ``TSTART``, GTI ``START``/``STOP``); a time outside the
    nodes is an error, never an extrapolation.

    Attributes
    ----------
    ra_pnt, dec_pnt
        Pointing, deg (ICRS).
    time_ref
        :class:`astropy.time.Time` the times count from.
    location
        :class:`astropy.coordinates.EarthLocation` of the observatory.
    times
        Node times, s, increasing.
    alt, az
        The pointing's altitude and azimuth (deg, east of north, no
        refraction) at the nodes.
    rotation
        :meth:`rotation_angle` at the nodes, deg, unwrapped along the run.
    maps
        Per node, the 3x4 map of ICRS ``(u, 1)`` to the ALTAZ frame turned
        back by ``rotation``, up to a positive factor.
    """

    ra_pnt: float
    dec_pnt: float
    time_ref: Any
    location: Any
    times: NDArray[np.float64]
    alt: NDArray[np.float64]
    az: NDArray[np.float64]
    rotation: NDArray[np.float64]
    maps: NDArray[np.float64]

    def _interval(self, time: NDArray[np.float64]) -> tuple[NDArray[np.intp], NDArray]:
        """Index of the node interval of each time and the weight of its upper node."""
        times = self.times
        outside = ~((time >= times[0]) & (time <= times[-1]))
        if outside.any():
            bad = time[outside]
            raise ValueError(
                f"{bad.size} times (e.g. {bad.flat[0]!r} s) lie outside the track "
                f"{times[0]:.3f} s to {times[-1]:.3f} s of the pointing "
                f"({self.ra_pnt:.4f}, {self.dec_pnt:.4f}): build the track over the "
                "whole run (track_from_header covers TSTART to TSTOP with a margin)"
            )
        if times.size == 1:
            return np.zeros(time.shape, np.intp), np.zeros(time.shape)
        index = np.clip(np.searchsorted(times, time, side="right") - 1, 0, times.size - 2)
        weight = (time - times[index]) / (times[index + 1] - times[index])
        return index, weight

    @functools.cached_property
    def _splines(self) -> NDArray[np.float64]:
        """Cubic spline coefficients (4, N - 1, 4) of the rotation (rad) and the pointing vector.

        The rotation rate changes along a run: the cubic spline through the
        nodes follows it to ~1e-8 rad where linear interpolation would be off
        by ~1e-5 rad between nodes a minute apart.
        """
        from scipy.interpolate import CubicSpline

        values = np.column_stack([np.deg2rad(self.rotation), *_unit_vectors(self.az, self.alt)])
        if self.times.size < 3:  # a straight line through one or two nodes
            slope = np.diff(values, axis=0) / np.diff(self.times)[:, None]
            zero = np.zeros_like(slope)
            return np.stack([zero, zero, slope, values[:-1]])
        return np.asarray(CubicSpline(self.times, values, bc_type="not-a-knot").c)

    def _smooth(
        self, index: NDArray[np.intp], time: NDArray[np.float64], column: int
    ) -> NDArray[np.float64]:
        """Spline ``column`` of :attr:`_splines` at ``time`` (in node interval ``index``)."""
        if self.times.size == 1:
            values = [np.deg2rad(self.rotation), *_unit_vectors(self.az, self.alt)]
            return np.broadcast_to(values[column][0], time.shape).astype(np.float64)
        c = self._splines[:, :, column]
        dt = time - self.times[index]
        return ((c[0][index] * dt + c[1][index]) * dt + c[2][index]) * dt + c[3][index]

    def _lerp(self, values: NDArray[Any], index: NDArray[np.intp], weight: NDArray) -> Any:
        if values.shape[0] == 1:
            return values[index]
        return values[index] + weight * (values[index + 1] - values[index])

    def _time(self, time: ArrayLike, shape: tuple[int, ...] | None = None) -> NDArray:
        time64 = np.asarray(time, dtype=np.float64)
        return time64 if shape is None else np.broadcast_to(time64, shape)

    def rotation_angle(self, time: ArrayLike) -> NDArray[np.float64]:
        """Angle ``psi`` (deg) that turns the RADEC into the ALTAZ field-of-view frame at ``time``.

        Azimuth runs clockwise on the sky where right ascension runs
        anticlockwise, so (with the GADF longitude reversed in both) the ALTAZ
        frame is the RADEC frame *mirrored* and turned: the ALTAZ coordinates of
        a direction are its RADEC coordinates with ``fov_lon`` negated, turned
        counter-clockwise by ``psi`` about the pointing in the
        ``(fov_lon, fov_lat)`` plane (exact up to aberration, 1e-4 relative)::

            fov_lon_altaz = -cos(psi) fov_lon_radec - sin(psi) fov_lat_radec
            fov_lat_altaz = -sin(psi) fov_lon_radec + cos(psi) fov_lat_radec

        North lies at ``(-sin psi, cos psi)`` in the ALTAZ frame: ``psi`` is the
        parallactic angle of the pointing (angle from north to the zenith,
        positive west of the meridian; within ~0.05 deg, as the RADEC frame's
        north is that of ICRS, not that of the date). Wrapped to (-180, 180].
        :meth:`PointingTrack.sky_coordinates` gives the exact inverse.
        """
        t = self._time(time)
        index, _ = self._interval(t)
        return _wrap_180(np.rad2deg(self._smooth(index, t, 0)))

    def pointing_altaz(self, time: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """The pointing's altitude and azimuth (deg; east of north, in [0, 360)) at ``time``.

        AltAz without refraction: a cubic spline through the nodes of each
        component of the unit vector (no trouble with the azimuth wrapping at north).
        """
        t = self._time(time)
        index, _ = self._interval(t)
        vector = [self._smooth(index, t, 1 + i) for i in range(3)]
        az, alt = _lon_lat(*vector)
        return alt, np.mod(az, 360.0)

    def fov_coordinates(
        self, ra: ArrayLike, dec: ArrayLike, time: ArrayLike, alignment: FovAlignment
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Field-of-view coordinates (deg) of directions seen at given times.

        Parameters
        ----------
        ra, dec
            Event directions, deg (ICRS).
        time
            Event times, s since :attr:`time_ref`; broadcast with ``ra`` and
            ``dec`` (e.g. one direction at many times). Not used for RADEC.
        alignment
            ``"ALTAZ"`` or ``"RADEC"`` (GADF ``FOVALIGN``).

        Returns
        -------
        fov_lon, fov_lat
            In deg, ``fov_lon`` in [-180, 180], GADF / Gammapy 2.1 sign (see the module).

        Raises
        ------
        ValueError
            For an unknown alignment or a time outside the track.
        """
        alignment = _alignment(alignment)
        ra64, dec64, t = np.broadcast_arrays(
            np.asarray(ra, np.float64), np.asarray(dec, np.float64), self._time(time)
        )
        if alignment == "RADEC":
            return radec_to_fov(ra64, dec64, self.ra_pnt, self.dec_pnt)
        index, weight = self._interval(t)
        u = _unit_vectors(ra64, dec64)
        # The node maps barely change along a run: interpolate them, then turn
        # by the interpolated rotation angle, which does change.
        v = []
        for i in range(3):
            row = [self._lerp(self.maps[:, i, j], index, weight) for j in range(4)]
            v.append(row[0] * u[0] + row[1] * u[1] + row[2] * u[2] + row[3])
        psi = self._smooth(index, t, 0)
        c, s = np.cos(psi), np.sin(psi)
        return _lon_lat(v[0], c * v[1] - s * v[2], s * v[1] + c * v[2])

    def sky_coordinates(
        self, fov_lon: ArrayLike, fov_lat: ArrayLike, time: ArrayLike, alignment: FovAlignment
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """RA/Dec (deg, ICRS) of field-of-view coordinates at given times.

        The inverse of :meth:`fov_coordinates` (to ~1e-8 deg near the pointing).

        ``fov_lon``, ``fov_lat`` and ``time`` are broadcast together, e.g. the
        pixel centres of a field-of-view grid with shape ``(ny, nx, 1)`` and a
        time grid of shape ``(nt,)`` give ``(ny, nx, nt)`` sky positions.

        Returns
        -------
        ra, dec
            In deg, ``ra`` in [0, 360).
        """
        alignment = _alignment(alignment)
        lon, lat, t = np.broadcast_arrays(
            np.asarray(fov_lon, np.float64), np.asarray(fov_lat, np.float64), self._time(time)
        )
        if alignment == "RADEC":
            return fov_to_radec(lon, lat, self.ra_pnt, self.dec_pnt)
        index, weight = self._interval(t)
        x, y, z = _unit_vectors(lon, lat)
        psi = self._smooth(index, t, 0)
        c, s = np.cos(psi), np.sin(psi)
        v = [x, c * y + s * z, -s * y + c * z]
        # s v = A u + b for the unit vector u and some s > 0 (the forward map is
        # A u + b normalised): u = s p - q with p = A^-1 v, q = A^-1 b, and s
        # the positive root of |s p - q| = 1.
        inverse = np.linalg.inv(self.maps[:, :, :3])
        offset = np.einsum("nij,nj->ni", inverse, self.maps[:, :, 3])
        p, q = [], []
        for i in range(3):
            row = [self._lerp(inverse[:, i, j], index, weight) for j in range(3)]
            p.append(row[0] * v[0] + row[1] * v[1] + row[2] * v[2])
            q.append(self._lerp(offset[:, i], index, weight))
        pp = p[0] * p[0] + p[1] * p[1] + p[2] * p[2]
        pq = p[0] * q[0] + p[1] * q[1] + p[2] * q[2]
        qq = q[0] * q[0] + q[1] * q[1] + q[2] * q[2]
        scale = (pq + np.sqrt(pq * pq - pp * (qq - 1.0))) / pp
        u = [scale * p[i] - q[i] for i in range(3)]
        ra, dec = _lon_lat(*u)
        return np.mod(ra, 360.0), dec


def _alignment(alignment: str) -> FovAlignment:
    name = str(alignment).strip().upper()
    if name == "ALTAZ":
        return "ALTAZ"
    if name == "RADEC":
        return "RADEC"
    raise ValueError(
        f"unknown field-of-view alignment {alignment!r}: use one of {', '.join(FOV_ALIGNMENTS)}"
    )

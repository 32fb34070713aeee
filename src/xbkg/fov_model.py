"""Field-of-view (``bkg_3d``) models: per-run binning and the shape of the acceptance.

A 3D model is the radial (``bkg_2d``) model of the same runs times a
field-of-view shape factor:

``rate(E, fov_lon, fov_lat) = rate_2d(E, offset(fov_lon, fov_lat)) x shape(E, fov_lon, fov_lat)``

The radial part keeps everything the 2D path does (condition model, per-run
models, smoothing, the fill of unconstrained bins); the shape factor carries
what a radial model cannot: the acceptance changing across the field of view
along the altitude direction and with the camera's geometry. It is estimated
in the frame where those effects are fixed (``ALTAZ``) as the ratio of the
observed counts to the counts the radial model predicts, both summed over
runs and smoothed with the same kernel: the maximum-likelihood estimate of a
locally constant factor for Poisson counts, pulled towards 1 (the radial
model) where the data are few (:func:`fov_shape`).

A model aligned with RA/Dec for one run is the ALTAZ shape turned by the
run's field-of-view rotation and averaged over the run
(:func:`rotated_shape`), so that each run keeps its own altitude gradient.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, Final

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from xbkg import exclusion
from xbkg.axes import bin_index, edges
from xbkg.conventions import (
    ENERGY_DIM,
    FOV_LAT_DIM,
    FOV_LON_DIM,
    OBS_DIM,
    OFFSET_DIM,
    FovAlignment,
)
from xbkg.regions import region_arrays

__all__ = [
    "DEFAULT_SHAPE_PRIOR_COUNTS",
    "DEFAULT_SHAPE_SIGMA",
    "altitude_gradient",
    "bin_fov",
    "exclusion_times",
    "fov_rates",
    "fov_shape",
    "pixel_offset",
    "pixel_solid_angle",
    "predicted_fov_counts",
    "radial_on_fov",
    "rotated_shape",
    "run_fov_rate",
    "run_shape",
    "unexcluded_fraction",
]

#: Width (deg) of the Gaussian kernel smoothing the shape factor across the field of view.
DEFAULT_SHAPE_SIGMA: Final = 0.3
#: Width (energy bins) of the Gaussian kernel smoothing the shape factor along energy.
DEFAULT_SHAPE_ENERGY_SIGMA: Final = 1.0
#: Predicted counts (under the kernel) of a prior pulling the shape factor to 1.
DEFAULT_SHAPE_PRIOR_COUNTS: Final = 20.0
#: Sub-pixels per side when measuring the excluded fraction of a pixel.
_SUBPIXELS: Final = 3
#: Largest field-of-view rotation (deg) between two time samples of the exclusion.
_ROTATION_STEP: Final = 2.0


def pixel_offset(lon_edges: NDArray[np.float64], lat_edges: NDArray[np.float64]) -> NDArray:
    """Angular distance (deg) of each pixel centre from the pointing, shape ``(lon, lat)``.

    Field-of-view coordinates are spherical, with the pointing at (0, 0).
    """
    lon = np.deg2rad(0.5 * (lon_edges[:-1] + lon_edges[1:]))[:, None]
    lat = np.deg2rad(0.5 * (lat_edges[:-1] + lat_edges[1:]))[None, :]
    return np.rad2deg(np.arccos(np.clip(np.cos(lon) * np.cos(lat), -1.0, 1.0)))


def pixel_solid_angle(lon_edges: NDArray[np.float64], lat_edges: NDArray[np.float64]) -> NDArray:
    """Exact solid angle (sr) of each field-of-view pixel, shape ``(lon, lat)``."""
    dlon = np.diff(np.deg2rad(lon_edges))[:, None]
    dsin = np.diff(np.sin(np.deg2rad(lat_edges)))[None, :]
    return dlon * dsin


def unexcluded_fraction(
    lon_edges: NDArray[np.float64],
    lat_edges: NDArray[np.float64],
    regions: Any,
    to_sky: Callable[[NDArray, NDArray, NDArray], tuple[NDArray, NDArray]],
    times: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Fraction of a run's time that each pixel spent outside the exclusion regions.

    Each pixel is sampled at :data:`_SUBPIXELS` x :data:`_SUBPIXELS` points at
    each of ``times``: in an ALTAZ-aligned field of view the regions turn
    during the run. Only the points near a region's edge at some time
    (:func:`_region_bounds`) are taken to the sky and tested; the others are
    outside (or inside) at all times, which gives the same fractions.

    Parameters
    ----------
    lon_edges, lat_edges
        Pixel edges, deg.
    regions
        Exclusion circles near the run (:func:`xbkg.exclusion.regions_in_fov`).
    to_sky
        ``(fov_lon, fov_lat, time) -> (ra, dec)``, broadcasting its arguments
        (:meth:`xbkg.fov.PointingTrack.sky_coordinates` for one alignment).
    times
        Times spread evenly over the run (one is enough for RADEC).
    """
    shape = (lon_edges.size - 1, lat_edges.size - 1)
    if regions is None or regions.sizes.get("source", 0) == 0:
        return np.ones(shape)
    step = (np.arange(_SUBPIXELS) + 0.5) / _SUBPIXELS
    lon = (lon_edges[:-1, None] + np.diff(lon_edges)[:, None] * step).ravel()
    lat = (lat_edges[:-1, None] + np.diff(lat_edges)[:, None] * step).ravel()
    times = np.asarray(times, dtype=np.float64)
    maybe_inside, inside = _region_bounds(lon, lat, regions, to_sky, times)
    # Mean over the times of "outside" at each point: 1 or 0 where it never changes.
    outside = np.where(inside, 0.0, 1.0)
    i, j = np.nonzero(maybe_inside & ~inside)
    if i.size:
        ra, dec = to_sky(lon[i, None], lat[j, None], times[None, :])
        outside[i, j] = exclusion.outside_regions(ra, dec, regions).mean(axis=-1)
    n = _SUBPIXELS
    return outside.reshape(shape[0], n, shape[1], n).mean(axis=(1, 3))


#: Points per side of the grid on which :func:`_region_bounds` measures the frame's distortion.
_DISTORTION_SAMPLES: Final = 9
#: Added to the margin of :func:`_region_bounds` (deg): far above the rounding of the distances.
_BOUNDS_PAD: Final = 1e-3


def _region_bounds(
    lon: NDArray[np.float64],
    lat: NDArray[np.float64],
    regions: Any,
    to_sky: Callable[[NDArray, NDArray, NDArray], tuple[NDArray, NDArray]],
    times: NDArray[np.float64],
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Points of the grid ``lon x lat`` (deg) that may be in a region, and those surely in one.

    Returns two masks of shape ``(lon.size, lat.size)``: True where the point
    may be inside some region at one of ``times``, and True where it is
    inside the same region at all of them. Everything else is outside at
    all times.

    In polar coordinates about the pointing (distance ``r``, position angle
    ``phi``), ``to_sky`` at time ``t`` is close to a turn (and mirror) of
    the field: ``(r, phi) -> (r, beta(t) + h phi)``, with the pointing
    ``to_sky(0, 0, t)``, ``beta`` and ``h = +-1`` read from two probes. Seen
    in the field, circle ``j`` then lies at distance ``d_j`` from the
    pointing and position angles ``psi_j(t)``: at distance ``r``, a point
    is inside at time ``t`` if ``|phi - psi_j(t)| < w(r, d_j, R_j)``, the
    half-width of the circle's arc at ``r``, and outside at all times if
    ``phi`` is beyond the range of ``psi_j`` widened by that. The margin
    ``M`` (added to and taken from each radius ``R_j``) bounds what the
    turn misses: twice the largest distance between ``to_sky`` and the turn
    on a grid across the field (aberration: about 1e-4 of the offset; or a
    pointing that moves), the change of ``d_j`` along the run, and
    :data:`_BOUNDS_PAD`. A frame that is no such turn gives no bounds: every
    point may be inside, none surely is.
    """
    shape = (lon.size, lat.size)
    everywhere = np.ones(shape, dtype=bool), np.zeros(shape, dtype=bool)
    ra_c, dec_c, radius = region_arrays(regions)
    frame = _frame_turn(lon, lat, to_sky, times)
    if frame is None:
        return everywhere
    ra_pnt, dec_pnt, beta, hand, distortion = frame
    distance = exclusion.separation(ra_pnt[:, None], dec_pnt[:, None], ra_c, dec_c)
    angle = hand * (
        exclusion.position_angle(ra_pnt[:, None], dec_pnt[:, None], ra_c, dec_c) - beta[:, None]
    )
    # Position angles of each circle along the run, on one branch: their range.
    angle = np.rad2deg(np.unwrap(np.deg2rad(angle), axis=0))
    low, high = angle.min(axis=0), angle.max(axis=0)
    centre, half_span = 0.5 * (low + high), 0.5 * (high - low)
    d_low, d_high = distance.min(axis=0), distance.max(axis=0)
    d_mid = 0.5 * (d_low + d_high)
    margin = 2.0 * distortion + 0.5 * (d_high - d_low) + _BOUNDS_PAD
    r = exclusion.separation(lon[:, None], lat[None, :], 0.0, 0.0).ravel()
    phi = exclusion.position_angle(0.0, 0.0, lon[:, None], lat[None, :]).ravel()
    cos_r, sin_r = np.cos(np.deg2rad(r)), np.sin(np.deg2rad(r))
    maybe_inside, inside = np.zeros(r.size, dtype=bool), np.zeros(r.size, dtype=bool)
    for k in range(radius.size):
        # Only the ring |r - d| <= R + M can reach the circle.
        ring = np.flatnonzero(np.abs(r - d_mid[k]) <= radius[k] + margin[k])
        if ring.size == 0:
            continue
        off = np.abs(_wrap_180(phi[ring] - centre[k]))
        wide = _half_width(cos_r[ring], sin_r[ring], d_mid[k], radius[k] + margin[k])
        # Written so that a NaN half-width never rules a point out.
        maybe_inside[ring] |= ~(off > half_span[k] + wide)
        if radius[k] > margin[k]:
            narrow = _half_width(cos_r[ring], sin_r[ring], d_mid[k], radius[k] - margin[k])
            # Close enough to the pointing: inside whatever the angles (their range is
            # wide when the circle holds the pointing).
            inside[ring] |= (off < narrow - half_span[k]) | (
                r[ring] + d_mid[k] < radius[k] - margin[k]
            )
    return maybe_inside.reshape(shape), inside.reshape(shape)


def _frame_turn(
    lon: NDArray[np.float64],
    lat: NDArray[np.float64],
    to_sky: Callable[[NDArray, NDArray, NDArray], tuple[NDArray, NDArray]],
    times: NDArray[np.float64],
) -> tuple[NDArray, NDArray, NDArray, float, float] | None:
    """The turn of the field closest to ``to_sky`` at each time (:func:`_region_bounds`).

    Returns the pointing ``(ra, dec)`` and ``beta`` (deg) at each time, the
    handedness ``h`` and the largest distance (deg) between ``to_sky`` and
    the turn on a grid spanning ``lon x lat``; None if ``to_sky`` is not
    close to a turn with one handedness.
    """
    ra_pnt, dec_pnt = to_sky(np.zeros(1), np.zeros(1), times)
    # Position angles on the sky of the field's +fov_lat and +fov_lon directions.
    ra_axes, dec_axes = to_sky(np.array([[0.0], [1.0]]), np.array([[1.0], [0.0]]), times[None, :])
    beta, alpha = exclusion.position_angle(ra_pnt, dec_pnt, ra_axes, dec_axes)
    turn = np.sin(np.deg2rad(alpha - beta))
    if not (np.all(np.abs(turn) > 0.99) and (np.all(turn > 0) or np.all(turn < 0))):
        return None
    hand = 1.0 if turn[0] > 0 else -1.0
    grid = np.linspace(0.0, 1.0, _DISTORTION_SAMPLES)
    probe_lon = (lon.min() + (lon.max() - lon.min()) * grid)[:, None, None]
    probe_lat = (lat.min() + (lat.max() - lat.min()) * grid)[None, :, None]
    ra, dec = to_sky(probe_lon, probe_lat, times[None, None, :])
    # Both in polar coordinates about the pointing, written as (longitude, 90 - distance).
    sky_r = exclusion.separation(ra_pnt, dec_pnt, ra, dec)
    sky_angle = exclusion.position_angle(ra_pnt, dec_pnt, ra, dec)
    r = exclusion.separation(probe_lon, probe_lat, 0.0, 0.0)
    angle = beta + hand * exclusion.position_angle(0.0, 0.0, probe_lon, probe_lat)
    distortion = float(np.max(exclusion.separation(sky_angle, 90.0 - sky_r, angle, 90.0 - r)))
    if not np.isfinite(distortion):
        return None
    return ra_pnt, dec_pnt, beta, hand, distortion


def _half_width(
    cos_r: NDArray[np.float64], sin_r: NDArray[np.float64], d: float, radius: float
) -> NDArray[np.float64]:
    """Half-width (deg) of the arc at distance ``r`` from the pointing inside a circle.

    The circle (``radius``, deg) is centred at distance ``d`` (deg); ``r`` is
    given by its cosine and sine. 0 where no point at ``r`` is inside, 180
    where all are; NaN in the degenerate case ``r = 0``, ``d = radius``.
    """
    d_rad = np.deg2rad(d)
    with np.errstate(divide="ignore", invalid="ignore"):
        cosine = (np.cos(np.deg2rad(radius)) - cos_r * np.cos(d_rad)) / (sin_r * np.sin(d_rad))
    return np.rad2deg(np.arccos(np.clip(cosine, -1.0, 1.0)))


def _wrap_180(angle: NDArray[np.float64]) -> NDArray[np.float64]:
    """Angles (deg) wrapped into [-180, 180)."""
    return np.mod(angle + 180.0, 360.0) - 180.0


def exclusion_times(rotation: Callable[[NDArray], NDArray], tstart: float, tstop: float) -> NDArray:
    """Times over a run spaced so that the field turns by at most :data:`_ROTATION_STEP` deg."""
    turn = float(np.ptp(np.unwrap(np.deg2rad(rotation(np.linspace(tstart, tstop, 17))))))
    n_times = max(1, int(np.ceil(np.rad2deg(turn) / _ROTATION_STEP)))
    return tstart + (np.arange(n_times) + 0.5) * (tstop - tstart) / n_times


def bin_fov(
    energy: NDArray[np.float64],
    fov_lon: NDArray[np.float64],
    fov_lat: NDArray[np.float64],
    energy_edges: NDArray[np.float64],
    lon_edges: NDArray[np.float64],
    lat_edges: NDArray[np.float64],
    energy_ok: NDArray[np.bool_],
) -> NDArray[np.int32]:
    """Counts per (energy, fov_lon, fov_lat) of the events, zero outside ``energy_ok``."""
    e_idx, x_idx, y_idx = (
        bin_index(energy, energy_edges),
        bin_index(fov_lon, lon_edges),
        bin_index(fov_lat, lat_edges),
    )
    n_e, n_x, n_y = energy_edges.size - 1, lon_edges.size - 1, lat_edges.size - 1
    inside = (e_idx >= 0) & (x_idx >= 0) & (y_idx >= 0)
    flat = (e_idx[inside] * n_x + x_idx[inside]) * n_y + y_idx[inside]
    counts = np.bincount(flat, minlength=n_e * n_x * n_y).reshape(n_e, n_x, n_y)
    counts[~energy_ok] = 0
    return counts.astype(np.int32)


def radial_on_fov(rate: xr.DataArray, fov: xr.Dataset | xr.DataArray) -> xr.DataArray:
    """A radial rate (``offset`` dimension) on the field-of-view pixels of ``fov``.

    Linear interpolation in offset between bin centres, constant beyond the
    first and last centre; the other dimensions are kept.
    """
    offset = pixel_offset(edges(fov, FOV_LON_DIM), edges(fov, FOV_LAT_DIM))
    centres = rate[OFFSET_DIM].values
    clipped = np.clip(offset, centres[0], centres[-1])
    target = xr.DataArray(clipped, dims=(FOV_LON_DIM, FOV_LAT_DIM))
    values = np.moveaxis(rate.values, rate.get_axis_num(OFFSET_DIM), -1)
    upper = np.clip(np.searchsorted(centres, clipped, side="right"), 1, centres.size - 1)
    lower = upper - 1
    span = centres[upper] - centres[lower]
    weight = np.where(span > 0, (clipped - centres[lower]) / np.where(span > 0, span, 1.0), 0.0)
    result = values[..., lower] * (1 - weight) + values[..., upper] * weight
    dims = [d for d in rate.dims if d != OFFSET_DIM] + [FOV_LON_DIM, FOV_LAT_DIM]
    coords = {k: v for k, v in rate.coords.items() if OFFSET_DIM not in v.dims}
    coords.update({k: v for k, v in fov.coords.items() if set(v.dims) <= set(target.dims)})
    return xr.DataArray(result, dims=dims, coords=coords, attrs=dict(rate.attrs))


def fov_shape(
    counts: xr.DataArray,
    predicted: xr.DataArray,
    *,
    sigma: float = DEFAULT_SHAPE_SIGMA,
    energy_sigma: float = DEFAULT_SHAPE_ENERGY_SIGMA,
    prior_counts: float = DEFAULT_SHAPE_PRIOR_COUNTS,
) -> xr.DataArray:
    """The field-of-view shape factor: smoothed observed over smoothed predicted counts.

    Parameters
    ----------
    counts, predicted
        Observed counts and the counts the radial model predicts, along
        ``(energy, fov_lon, fov_lat)`` (summed over runs).
    sigma
        Gaussian kernel width across the field of view, deg.
    energy_sigma
        Gaussian kernel width along energy, bins.
    prior_counts
        The factor is ``(K*counts + p) / (K*predicted + p)`` with the
        normalised kernel ``K`` and ``p`` the weight of ``prior_counts``
        pseudo-counts spread over the kernel: where the kernel holds few
        predicted counts the factor stays near 1 (the radial model), where it
        holds many the data decide.

    Returns
    -------
    xarray.DataArray
        Along ``(energy, fov_lon, fov_lat)``, positive, 1 where nothing is predicted.
    """
    from scipy.ndimage import gaussian_filter

    dims = (ENERGY_DIM, FOV_LON_DIM, FOV_LAT_DIM)
    observed = counts.transpose(*dims).values.astype(np.float64)
    expected = predicted.transpose(*dims).values.astype(np.float64)
    width = np.diff(edges(counts, FOV_LON_DIM)).mean(), np.diff(edges(counts, FOV_LAT_DIM)).mean()
    kernel = (energy_sigma, sigma / width[0], sigma / width[1])
    smooth_observed = gaussian_filter(observed, kernel, mode="constant")
    smooth_expected = gaussian_filter(expected, kernel, mode="constant")
    # The smoothed counts are kernel-weighted means, on the scale of one bin: the
    # prior's pseudo-counts, spread over the kernel, weigh in at its central weight.
    prior = prior_counts * _kernel_peak(kernel)
    factor = (smooth_observed + prior) / (smooth_expected + prior)
    return xr.DataArray(
        factor,
        dims=dims,
        coords={k: v for k, v in counts.coords.items() if set(v.dims) <= set(dims)},
        attrs={
            "long_name": "field-of-view shape factor (observed / radial model)",
            "units": "1",
            "sigma_deg": float(sigma),
            "energy_sigma_bins": float(energy_sigma),
            "prior_counts": float(prior_counts),
        },
    )


def _kernel_peak(kernel: tuple[float, ...]) -> float:
    """Weight of the central bin of a normalised Gaussian kernel of these widths (bins)."""
    peak = 1.0
    for s in kernel:
        peak *= 1.0 / (np.sqrt(2 * np.pi) * s) if s > 0 else 1.0
    return peak


def rotated_shape(shape: xr.DataArray, angles: NDArray[np.float64]) -> xr.DataArray:
    """An ALTAZ shape factor seen in the RADEC frame, averaged over rotation ``angles`` (deg).

    ``angles`` are :meth:`xbkg.fov.PointingTrack.rotation_angle` at times
    spread evenly over the run. The two frames are mirror images of each
    other (azimuth turns clockwise on the sky, right ascension
    anticlockwise): the ALTAZ coordinates of a RADEC pixel are
    ``(-cos(psi) lon - sin(psi) lat, -sin(psi) lon + cos(psi) lat)``. The
    shape is interpolated bilinearly (nearest value beyond the grid), as
    ``scipy.ndimage.map_coordinates(order=1, mode="nearest")`` does.
    """
    dims = (ENERGY_DIM, FOV_LON_DIM, FOV_LAT_DIM)
    ordered = shape.transpose(*dims)
    operator = _rotation_operator(edges(shape, FOV_LON_DIM), edges(shape, FOV_LAT_DIM), angles)
    return ordered.copy(data=_apply_pixels(operator, ordered.values))


def _rotation_operator(
    lon_edges: NDArray[np.float64], lat_edges: NDArray[np.float64], angles: NDArray[np.float64]
) -> Any:
    """The rotation average of :func:`rotated_shape` as a sparse (pixels x pixels) matrix.

    Row ``p`` holds the bilinear weights of the ALTAZ pixels around each turned
    centre of RADEC pixel ``p`` (pixels flattened in ``(fov_lon, fov_lat)``
    order), divided by the number of angles. The operator is the same for all
    energies: one matrix product turns a whole cube.
    """
    from scipy.sparse import csr_array

    lon = 0.5 * (lon_edges[:-1] + lon_edges[1:])
    lat = 0.5 * (lat_edges[:-1] + lat_edges[1:])
    n_lon, n_lat = lon.size, lat.size
    # Along (lon, lat, angle): each pixel's entries come out contiguous, as CSR rows.
    psi = np.deg2rad(np.asarray(angles, dtype=np.float64))[None, None, :]
    x, y = lon[:, None, None], lat[None, :, None]
    c, s = np.cos(psi), np.sin(psi)
    # Fractional pixel indices of the turned centres (uniform grids).
    ix = ((-c * x - s * y) - lon[0]) / (lon[1] - lon[0])
    iy = ((-s * x + c * y) - lat[0]) / (lat[1] - lat[0])
    corners = []
    for index, size in ((ix, n_lon), (iy, n_lat)):
        # map_coordinates' "nearest": the coordinate is clipped to the grid first,
        # so a centre beyond the edge takes the edge value with weight exactly 1.
        clipped = np.clip(index, 0.0, size - 1.0)
        low = np.floor(clipped)
        frac = clipped - low
        low_i = low.astype(np.intp)
        corners.append(((low_i, 1.0 - frac), (np.minimum(low_i + 1, size - 1), frac)))
    n_pixels, n_angles = n_lon * n_lat, psi.size
    column = np.empty((n_lon, n_lat, n_angles, 4), dtype=np.intp)
    weight = np.empty((n_lon, n_lat, n_angles, 4))
    for k, ((i_lon, w_lon), (i_lat, w_lat)) in enumerate(itertools.product(*corners)):
        column[..., k] = i_lon * n_lat + i_lat
        weight[..., k] = w_lon * w_lat
    weight /= max(n_angles, 1)
    # Repeated columns in a row are allowed in CSR and add up in the product.
    per_row = 4 * n_angles
    indptr = np.arange(n_pixels + 1) * per_row
    return csr_array((weight.reshape(-1), column.reshape(-1), indptr), shape=(n_pixels, n_pixels))


def _apply_pixels(operator: Any, values: NDArray[np.float64]) -> NDArray[np.float64]:
    """``operator`` (pixels x pixels) applied to the last two axes of ``values``."""
    lead = values.shape[:-2]
    flat = values.reshape(-1, values.shape[-2] * values.shape[-1])
    return np.asarray(operator @ flat.T).T.reshape(*lead, *values.shape[-2:])


def fov_rates(
    shape: xr.DataArray,
    radial: xr.DataArray,
    *,
    alignment: FovAlignment,
    tan_zenith: NDArray[np.float64] | None = None,
    rotation: NDArray[np.float64] | None = None,
) -> xr.DataArray:
    """The ``bkg_3d`` rates of runs: each run's radial rate times its shape factor.

    The same as :func:`run_fov_rate` of :func:`run_shape` (and, for RADEC,
    :func:`rotated_shape`) run by run, computed for all runs at once.

    Parameters
    ----------
    shape
        The build's ALTAZ shape factor (:func:`fov_shape`, with its
        ``altitude_gradient``: :func:`run_shape`).
    radial
        Each run's radial rate along ``(obs_id, energy, offset)``.
    alignment
        ``"ALTAZ"``: the run's shape as it is; ``"RADEC"``: turned with the
        run's field of view (:func:`rotated_shape`).
    tan_zenith
        ``tan(zenith)`` of each run (None: the shape of the average run).
    rotation
        For RADEC, each run's rotation angles, shape ``(obs_id, samples)``.

    Returns
    -------
    xarray.DataArray
        Along ``(obs_id, energy, fov_lon, fov_lat)``, in the GADF orientation,
        with ``attrs["FOVALIGN"]``.
    """
    if alignment == "RADEC" and rotation is None:
        raise ValueError("RADEC rates need each run's field-of-view rotation")
    dims = (ENERGY_DIM, FOV_LON_DIM, FOV_LAT_DIM)
    ordered = shape.transpose(*dims)
    n_runs = radial.sizes[OBS_DIM]
    values = np.broadcast_to(ordered.values, (n_runs, *ordered.shape))
    if tan_zenith is not None:
        reference = float(shape.attrs.get("tan_zenith_ref", 0.0))
        tilt = np.asarray(tan_zenith, dtype=np.float64) - reference
        values = values * _altitude_factors(ordered, tilt)[:, :, None, :]
    if alignment == "RADEC":
        assert rotation is not None
        lon_edges, lat_edges = edges(shape, FOV_LON_DIM), edges(shape, FOV_LAT_DIM)
        turned = np.empty(values.shape)
        for i in range(n_runs):
            operator = _rotation_operator(lon_edges, lat_edges, rotation[i])
            turned[i] = _apply_pixels(operator, values[i])
        values = turned
    on_fov = radial_on_fov(radial, ordered).transpose(OBS_DIM, ..., *dims)
    run_shapes = xr.DataArray(
        values,
        dims=(OBS_DIM, *dims),
        coords={k: v for k, v in ordered.coords.items() if set(v.dims) <= set(dims)},
    )
    rate = on_fov * run_shapes
    rate.attrs = {**radial.attrs, "FOVALIGN": alignment}
    return rate


def _altitude_factors(shape: xr.DataArray, tilt: NDArray[np.float64]) -> NDArray[np.float64]:
    """``exp(g * tilt * fov_lat)`` of :func:`run_shape` per tilt, along ``(tilt, energy, fov_lat)``.

    1 where :func:`run_shape` leaves the shape as it is (no gradient, tilt not finite).
    """
    n_energy, n_lat = shape.sizes[ENERGY_DIM], shape.sizes[FOV_LAT_DIM]
    factors = np.ones((tilt.size, n_energy, n_lat))
    if "altitude_gradient" not in shape.coords:
        return factors
    lat_edges = edges(shape, FOV_LAT_DIM)
    lat = 0.5 * (lat_edges[:-1] + lat_edges[1:])
    gradient = shape["altitude_gradient"].transpose(ENERGY_DIM).values
    finite = np.isfinite(tilt)
    factors[finite] = np.exp((gradient[None, :] * tilt[finite, None])[:, :, None] * lat)
    return factors


def run_fov_rate(radial: xr.DataArray, shape: xr.DataArray) -> xr.DataArray:
    """A run's 3D rate: its radial rate on the pixels of ``shape`` times ``shape``."""
    rate = radial_on_fov(radial, shape) * shape
    rate.attrs = dict(radial.attrs)
    return rate.transpose(..., ENERGY_DIM, FOV_LON_DIM, FOV_LAT_DIM)


#: Runs whose field-of-view predictions are computed at a time (bounds the memory).
_RUN_CHUNK: Final = 64


def predicted_fov_counts(
    radial: xr.DataArray,
    cube: xr.Dataset,
    *,
    time: NDArray[np.float64],
    energy_ok: NDArray,
    tilt: NDArray[np.float64] | None = None,
) -> xr.Dataset:
    """Counts the per-run radial rates predict in each field-of-view pixel, summed over runs.

    ``radial`` is along ``(obs_id, energy, offset)`` in s-1 MeV-1 sr-1; the
    exposure of run ``r`` in pixel ``p`` and energy bin ``e`` is
    ``time[r] * energy_ok[r, e] * fov_unexcluded[r, p]``. Runs are taken a
    chunk at a time, so memory does not grow with their number.

    Returns
    -------
    xarray.Dataset
        ``predicted`` along ``(energy, fov_lon, fov_lat)``; with ``tilt`` (one
        number per run, e.g. ``tan(zenith) - reference``) also
        ``predicted_tilt`` and ``predicted_tilt2``, the sums weighted by
        ``tilt`` and ``tilt**2``, and ``counts_tilt``, the cube's counts
        weighted by ``tilt`` (what :func:`altitude_gradient` needs).
    """
    from xbkg.axes import energy_width_mev

    omega = pixel_solid_angle(edges(cube, FOV_LON_DIM), edges(cube, FOV_LAT_DIM))
    width = np.asarray(energy_width_mev(cube))[:, None, None] * omega[None]
    unexcluded = cube["fov_unexcluded"].transpose(OBS_DIM, FOV_LON_DIM, FOV_LAT_DIM).values
    radial = radial.transpose(OBS_DIM, ENERGY_DIM, OFFSET_DIM)
    n_runs = radial.sizes[OBS_DIM]
    weights = np.ones((1, n_runs)) if tilt is None else np.vstack([np.ones(n_runs), tilt, tilt**2])
    sums = np.zeros((weights.shape[0], *width.shape))
    for start in range(0, n_runs, _RUN_CHUNK):
        chunk = slice(start, start + _RUN_CHUNK)
        on_fov = radial_on_fov(radial.isel({OBS_DIM: chunk}), cube).values
        exposure = (time[chunk, None] * energy_ok[chunk])[:, :, None, None]
        counts = on_fov * exposure * unexcluded[chunk, None] * width[None]
        sums += np.einsum("wr,rexy->wexy", weights[:, chunk], counts)
    dims = (ENERGY_DIM, FOV_LON_DIM, FOV_LAT_DIM)
    coords = {k: v for k, v in cube.coords.items() if set(v.dims) <= set(dims)}
    result = xr.Dataset({"predicted": (dims, sums[0])}, coords=coords)
    if tilt is not None:
        fov_counts = cube["fov_counts"].transpose(OBS_DIM, *dims).values
        result["predicted_tilt"] = (dims, sums[1])
        result["predicted_tilt2"] = (dims, sums[2])
        result["counts_tilt"] = (dims, np.einsum("r,rexy->exy", tilt, fov_counts))
    return result


def altitude_gradient(
    sums: xr.Dataset,
    shape: xr.DataArray,
    *,
    energy_sigma: float = DEFAULT_SHAPE_ENERGY_SIGMA,
    prior_counts: float = DEFAULT_SHAPE_PRIOR_COUNTS,
) -> xr.DataArray:
    """How the shape's gradient along ``fov_lat`` changes with the runs' tilt (per deg).

    The model of run ``r`` is ``shape * exp(g[E] * tilt[r] * fov_lat)``: a
    gradient along altitude growing with ``tilt`` (``tan(zenith)`` minus its
    mean), as the acceptance of a camera tilted through the atmosphere does.
    ``g`` is one Poisson-likelihood Newton step from 0 (score over Fisher
    information) with the sums of :func:`predicted_fov_counts`, smoothed
    along energy with the shape's kernel; ``prior_counts`` keeps it near 0
    where the data are few.
    """
    from scipy.ndimage import gaussian_filter1d

    dims = (ENERGY_DIM, FOV_LON_DIM, FOV_LAT_DIM)
    lat_edges = edges(sums, FOV_LAT_DIM)
    lat = 0.5 * (lat_edges[:-1] + lat_edges[1:])[None, None, :]
    factor = shape.transpose(*dims).values
    counts = sums["counts_tilt"].transpose(*dims).values
    predicted = sums["predicted_tilt"].transpose(*dims).values * factor
    predicted2 = sums["predicted_tilt2"].transpose(*dims).values * factor
    score = ((counts - predicted) * lat).sum(axis=(1, 2))
    fisher = (predicted2 * lat**2).sum(axis=(1, 2))
    if energy_sigma > 0:
        score = gaussian_filter1d(score, energy_sigma, mode="nearest")
        fisher = gaussian_filter1d(fisher, energy_sigma, mode="nearest")
    gradient = score / (fisher + prior_counts)
    return xr.DataArray(
        gradient,
        dims=ENERGY_DIM,
        coords={k: v for k, v in shape.coords.items() if v.dims == (ENERGY_DIM,)},
        attrs={"long_name": "growth of the fov_lat gradient with tan(zenith)", "units": "deg-1"},
    )


def run_shape(shape: xr.DataArray, tilt: float) -> xr.DataArray:
    """The shape factor of one run: ``shape * exp(g * tilt * fov_lat)``.

    ``g`` is the shape's ``altitude_gradient`` coordinate (:func:`altitude_gradient`;
    a shape without one is returned as it is) and ``tilt`` the run's
    ``tan(zenith)`` minus the shape's ``tan_zenith_ref`` attribute.
    """
    if "altitude_gradient" not in shape.coords or not np.isfinite(tilt):
        return shape
    factors = _altitude_factors(shape, np.array([tilt], dtype=np.float64))[0]
    return shape * xr.DataArray(factors, dims=(ENERGY_DIM, FOV_LAT_DIM))

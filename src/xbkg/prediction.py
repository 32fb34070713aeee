"""Counts a ``bkg_2d`` model predicts, computed the way Gammapy's 3D analysis computes them.

A validation that integrates a model differently from the analysis that will
use it can hide the model's defects. Gammapy (``MapDatasetMaker`` with its
defaults, version 2.1) does not treat a ``bkg_2d`` rate as constant inside
each bin. For every map pixel and every map energy bin it

1. fills the model's missing values (exact zeros and NaN) that lie *between*
   populated energy bins, by interpolating the log of the rate linearly in
   bin index along energy, separately for every offset bin; leading and
   trailing zeros stay zero (``background_interp_missing_data=True``);
2. pads the offset axis by one bin at each end, repeating the edge values
   (``background_pad_offset=True``): the rate is flat between 0 and the first
   node and beyond the last node, up to one bin width past the last edge;
3. evaluates the rate at the map's energy *edges* and the pixel's offset by
   linear interpolation of the log of the rate between the bin centres (the
   nodes), in log energy and linear offset, extrapolating the end cells
   linearly (in these scales) out to the axis edges and returning 0 beyond
   them. Rates are clipped from below at the smallest normal number of their
   floating type before the log is taken, so an exact zero becomes a very
   negative log value, and interpolated values below twice the smallest
   normal float64 come back as exact zeros;
4. integrates each map energy bin with the log-log trapezoidal rule: a power
   law through the values at the bin's two edges, integrated exactly. A bin
   with a zero at either edge integrates to zero;
5. multiplies by the pixel's solid angle and the run's observation time
   (ONTIME: the sum of its good time intervals).

So a model with an exact zero next to a populated bin predicts almost nothing
in the energy bin whose edge is interpolated towards the zero, and any
validation that sums rate x bin width hides that. :func:`evaluate_rate` and
:func:`integrate_log_log` are steps 3 and 4 in numpy, :func:`consumer_model`
is steps 1 and 2, and :func:`rate_integrals` integrates the result over the
energy x offset-ring bins of a run cube: exactly in energy (the same rule at
the same edges) and, in offset, over the solid angle of each ring, where the
pixel sum of the analysis is replaced by the integral it approximates.
:func:`consumer_counts` turns that into predicted counts with the cube's
exposure time, as :func:`xbkg.validation.predict_counts` does by default.

On the models ``xbkg make`` writes for H.E.S.S. DR1 runs, the counts per
energy bin of :func:`rate_integrals` agree with ``MapDatasetMaker`` on a map
of 0.02 deg pixels to 1.2e-4 within 2.5 deg, the difference being the
pixel sum's (tested, also with zeros put into the model).

The analysis takes the stored rates as values *at* the bin centres, while
xbkg's models hold bin averages. For a spectrum falling as E**-2.7 in bins of
a fifth of a decade that alone makes the analysis predict 1.5 % more than the
model's own bin integrals; near the spectral turn-over at the safe threshold
the curvature changes the prediction by several % either way (up to 8 % less
for the perfect model of xbkg's simulation, up to 7 % more for the
cross-validated DR1 condition model). A validation with
``prediction="consumer"`` includes these effects, as the analysis will.

Where this module deliberately departs from Gammapy:

- a NaN rate means "no model here" and makes every prediction it takes part
  in NaN (unpredicted); Gammapy turns non-finite evaluations into 0. Internal
  NaN gaps along energy are filled in step 1 as Gammapy fills them; leading
  and trailing ones (e.g. below every training run's threshold) make the
  neighbouring energy bin unpredicted, since the analysis would see whatever
  the file holds there;
- a bin with a zero value at its lower edge integrates to 0; Gammapy 2.1
  returns NaN there when the bin is wider than a factor 4 in energy (its
  power of the energy ratio overflows), 0 otherwise.

Energy edges go through log and back before use, as Gammapy's log axes hold
them (0.1 becomes 0.10000000000000002): whether a point on a model's outer
edge is inside the model depends on it, and a rate of 0 at a bin edge
empties the bin.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import xarray as xr
from numpy.typing import ArrayLike, NDArray

from xbkg.axes import binned_coords, edges
from xbkg.conventions import ENERGY_DIM, MEV_PER_TEV, OBS_DIM, OFFSET_DIM, TIME_CONVENTIONS

__all__ = [
    "DEFAULT_FOV_ROTATION_STEP",
    "DEFAULT_SUBSTEPS",
    "ConsumerAlignment",
    "FovPrediction",
    "PredictionMethod",
    "consumer_alignment",
    "consumer_counts",
    "consumer_model",
    "evaluate_fov_rate",
    "evaluate_rate",
    "fov_consumer_counts",
    "integrate_log_log",
    "loglog_nodes",
    "rate_integrals",
    "rotation_time_steps",
    "sky_grid",
    "sky_pixel_index",
    "time_scale",
]

#: How predicted counts are computed: as Gammapy does (``"consumer"``) or as
#: rate x bin width x ring solid angle (``"step"``).
PredictionMethod = Literal["consumer", "step"]

#: Sub-intervals per smooth piece of an offset ring in :func:`rate_integrals`.
DEFAULT_SUBSTEPS = 4

# Interpolated values at or below twice this come back as 0 (Gammapy evaluates in float64).
_OUTPUT_TINY = float(np.finfo(np.float64).tiny)
# Gammapy switches to the logarithmic integral where np.isclose(1 - index, 0), i.e. within
# numpy's default absolute tolerance.
_LOG_FORM_ATOL = 1e-8
# Cube edges this close to the model's outer edges are taken as equal (rounding only).
_EDGE_RTOL = 1e-7
_OFFSET_ATOL = 1e-9
# Leading rows evaluated at once in rate_integrals (bounds the memory of the sampled grid).
_CHUNK_ROWS = 16
# Where the log of the rate changes fast along offset (next to an exact zero it drops by
# some 700 across a cell), a ring piece gets parts over which it changes by at most this
# much, up to _MAX_PARTS parts.
_MAX_LOG_STEP = 0.5
_MAX_PARTS = 1024


# --------------------------------------------------------------------------- time conventions


def time_scale(cube: xr.Dataset, convention: str) -> xr.DataArray:
    """Per run, the factor turning the cube's exposure time into ``convention`` time.

    The cube's ``exposure_time`` is measured in its ``attrs["time_convention"]``
    (ONTIME or LIVETIME); a model normalised per the other duration must be
    multiplied by the run's other duration. The factor is e.g.
    ``livetime / ontime`` of each run (its dead-time fraction).
    """
    own = str(cube.attrs.get("time_convention", "ontime"))
    for name in (own, convention):
        if name not in TIME_CONVENTIONS:
            raise ValueError(f"time convention must be one of {TIME_CONVENTIONS}, got {name!r}")
    if own == convention:
        return xr.DataArray(np.ones(cube.sizes[OBS_DIM]), dims=OBS_DIM)
    for name in (own, convention):
        if name not in cube.coords:
            raise KeyError(
                f"the run cube has no {name!r} run coordinate, needed to convert its "
                f"{own.upper()} exposure to the model's {convention.upper()}"
            )
    return (cube[convention] / cube[own]).drop_vars(
        [c for c in cube[convention].coords if c != OBS_DIM]
    )


# --------------------------------------------------------------------------- evaluation


def _log_axis_edges(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """Energy edges as Gammapy's log axes hold them: through log and back.

    The round trip moves e.g. 0.1 to 0.10000000000000002 and 100 to
    100.00000000000004. It decides whether a point on a model's outer edge is
    inside it (a rate of 0 there empties the whole bin), so the model's range
    and the points evaluated both go through it, as in the analysis, where the
    map's energy axis is made the same way.
    """
    return np.exp(np.log(values))


def _snap(values: NDArray[np.float64], lo: float, hi: float, atol: float) -> NDArray[np.float64]:
    """Move values that lie outside [lo, hi] by rounding only onto the range's edges."""
    out = np.array(values, dtype=np.float64)
    below = (out < lo) & (out >= lo - abs(lo) * _EDGE_RTOL - atol)
    above = (out > hi) & (out <= hi + abs(hi) * _EDGE_RTOL + atol)
    out[below], out[above] = lo, hi
    return out


def _map_energy_edges(
    values: NDArray[np.float64], model_edges: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Energy edges of the bins to predict, as a map axis of the analysis would hold them.

    Rounded through log like the model's (:func:`_log_axis_edges`). An outer
    edge that then lies outside the model's range by rounding only (the round
    trip is not always idempotent, and edges computed in different ways differ
    in the last digits) is put on the range's edge: otherwise the rate would be
    0 there, and the whole bin with it, for a difference of 1e-16.
    """
    model = _log_axis_edges(model_edges)
    return _snap(_log_axis_edges(values), model[0], model[-1], 0.0)


def _tiny_for(values: NDArray[Any]) -> float:
    """Smallest normal number of the values' floating type (float32's for other types)."""
    dtype = values.dtype if np.issubdtype(values.dtype, np.floating) else np.dtype(np.float32)
    return float(np.finfo(dtype).tiny)


def _log_values(values: NDArray[Any]) -> NDArray[np.float64]:
    """Log of the rate as Gammapy takes it: clipped at the tiny of its own type, in that type.

    The clipping level decides how small the rate next to an exact zero becomes
    (about 1e-38 for float32 files, 1e-308 for float64 ones), and with it the
    integral of the bin beside the zero, so it follows the stored type; the log
    is taken in that type too, as Gammapy does, before interpolating in float64.
    """
    tiny = _tiny_for(values)
    with np.errstate(invalid="ignore"):
        clipped = np.clip(values, values.dtype.type(tiny), np.inf)
        return np.log(clipped).astype(np.float64)


def _cells(
    nodes: NDArray[np.float64], x: NDArray[np.float64]
) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.float64]]:
    """Interpolation cell (two node indices) and fraction of ``x`` along one axis.

    Points beyond the end nodes use the end cell with a fraction outside
    [0, 1]: linear extrapolation. An axis of one node is constant along it.
    """
    n = nodes.size
    if n == 1:
        zero = np.zeros(x.shape, dtype=np.intp)
        return zero, zero, np.zeros(x.shape)
    with np.errstate(invalid="ignore"):
        i0 = np.clip(np.searchsorted(nodes, x, side="right") - 1, 0, n - 2)
        frac = (x - nodes[i0]) / (nodes[i0 + 1] - nodes[i0])
    return i0, i0 + 1, frac


@dataclass(frozen=True)
class _Grid:
    """A rate as arrays: values along ``(*lead, energy, offset)`` and the two edge arrays."""

    values: NDArray[Any]
    energy_edges: NDArray[np.float64]
    offset_edges: NDArray[np.float64]
    lead_dims: tuple[str, ...]
    lead_coords: dict[str, Any]

    @property
    def energy_nodes(self) -> NDArray[np.float64]:
        """Log of the energy nodes: the log centres of the bins (Gammapy's ``center``)."""
        e = self.energy_edges
        return np.log(np.sqrt(e[:-1] * e[1:]))

    @property
    def offset_nodes(self) -> NDArray[np.float64]:
        """Offset nodes: the linear centres of the bins."""
        t = self.offset_edges
        return 0.5 * (t[:-1] + t[1:])


def _grid(rate: xr.DataArray) -> _Grid:
    if ENERGY_DIM not in rate.dims or OFFSET_DIM not in rate.dims:
        raise ValueError(f"rate must have 'energy' and 'offset' dimensions, got {rate.dims}")
    ordered = rate.transpose(..., ENERGY_DIM, OFFSET_DIM)
    lead = tuple(str(d) for d in ordered.dims[:-2])
    coords = {
        str(k): v.variable for k, v in ordered.coords.items() if set(v.dims) <= set(lead) and v.dims
    }
    values = np.asarray(ordered.values)
    if not np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float64)
    return _Grid(values, edges(rate, ENERGY_DIM), edges(rate, OFFSET_DIM), lead, coords)


def _evaluate_log(
    log_values: NDArray[np.float64],
    grid: _Grid,
    energy: NDArray[np.float64],
    offset: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Gammapy's evaluation of log values at broadcast (energy, offset) points, NaN kept."""
    energy, offset = np.broadcast_arrays(energy, offset)
    with np.errstate(invalid="ignore", divide="ignore"):
        # Energies are interpolated in log; non-positive ones lie outside the axis anyway.
        log_e = np.log(np.clip(energy, _OUTPUT_TINY, np.inf))
    ie0, ie1, fe = _cells(grid.energy_nodes, log_e)
    it0, it1, ft = _cells(grid.offset_nodes, offset)
    scaled = (
        (1 - fe) * (1 - ft) * log_values[..., ie0, it0]
        + fe * (1 - ft) * log_values[..., ie1, it0]
        + (1 - fe) * ft * log_values[..., ie0, it1]
        + fe * ft * log_values[..., ie1, it1]
    )
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.exp(scaled)
        # Back from the log scale, values indistinguishable from the clipping level are 0;
        # so are overflows (extrapolating away from a zero node can exceed the float range).
        out = np.where((out <= 2 * _OUTPUT_TINY) | np.isinf(out), 0.0, out)
        # Beyond the axis edges (both included) the model is 0, as are non-finite coordinates.
        e, t = _log_axis_edges(grid.energy_edges), grid.offset_edges
        inside = (energy >= e[0]) & (energy <= e[-1]) & (offset >= t[0]) & (offset <= t[-1])
    return np.where(inside, out, 0.0)


def evaluate_rate(rate: xr.DataArray, energy: ArrayLike, offset: ArrayLike) -> NDArray[np.float64]:
    """The rate at given energies and offsets, interpolated as Gammapy's ``Background2D``.

    Linear interpolation of the log of the rate between the bin centres, in
    log energy and linear offset; the end cells are extrapolated linearly (in
    those scales) up to the outer bin edges, and the rate is 0 beyond them
    (edges included in the model's range). Before the log, rates are clipped
    at the smallest normal number of their floating type (so a float32 rate
    and the same rate in float64 differ next to exact zeros, as in Gammapy);
    results at or below twice the smallest normal float64 are 0, and so are
    results that overflow. Unlike Gammapy, a point whose interpolation cell
    has a NaN node is NaN, not 0.

    Extrapolating a cell with a zero node away from it (between the last node
    and the outer edge) makes the rate rise steeply, up to absurd values: the
    analysis does this too, and so does this function.

    Parameters
    ----------
    rate
        Rate along ``(energy, offset)``, possibly with leading dimensions such
        as ``obs_id``, with energy (TeV) and offset (deg) bin edges.
    energy
        Energies in TeV.
    offset
        Offsets in deg, broadcast against ``energy``.

    Returns
    -------
    numpy.ndarray
        Shape ``lead + broadcast(energy, offset).shape``, where ``lead`` are
        the sizes of the rate's dimensions other than energy and offset, in
        the rate's order; in the rate's units.
    """
    grid = _grid(rate)
    e = np.asarray(energy, dtype=np.float64)
    t = np.asarray(offset, dtype=np.float64)
    return _evaluate_log(_log_values(grid.values), grid, e, t)


# --------------------------------------------------------------------------- energy integral


def integrate_log_log(values: ArrayLike, energy: ArrayLike, axis: int = 0) -> NDArray[np.float64]:
    """Integral between consecutive energies of the power law through the values there.

    The log-log trapezoidal rule, as Gammapy's ``trapz_loglog``: in each
    interval the integrand is taken as the power law through its two end
    values and integrated exactly, so the result is exact for a power law.
    An interval with a zero at either end integrates to 0, one with a NaN to
    NaN.

    Parameters
    ----------
    values
        Integrand at ``energy`` along ``axis``.
    energy
        1-D increasing positive energies, as many as ``values`` has along ``axis``.
    axis
        Axis of ``values`` along energy.

    Returns
    -------
    numpy.ndarray
        ``values`` with ``axis`` one shorter, in units of values x energy.
    """
    y = np.moveaxis(np.asarray(values, dtype=np.float64), axis, 0)
    x = np.asarray(energy, dtype=np.float64)
    if x.ndim != 1 or x.size != y.shape[0]:
        raise ValueError(f"energy must be 1-D with {y.shape[0]} values, got shape {x.shape}")
    shape = (-1,) + (1,) * (y.ndim - 1)
    e0, e1 = x[:-1].reshape(shape), x[1:].reshape(shape)
    y0, y1 = y[:-1], y[1:]
    log_r = np.log(e1 / e0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # Slope + 1 of the power law; the ratio is clipped like Gammapy's log scale.
        ratio = np.clip(y0 / y1, _OUTPUT_TINY, np.inf)
        exponent = 1.0 - np.log(ratio) / log_r
        power = y0 * e0 * np.expm1(exponent * log_r) / exponent
        flat = y0 * e0 * log_r  # the E**-1 case, where the power form is 0 / 0
        out = np.where(np.abs(exponent) <= _LOG_FORM_ATOL, flat, power)
    out = np.where((y0 == 0) | (y1 == 0), 0.0, out)
    out = np.where(np.isnan(y0) | np.isnan(y1), np.nan, out)
    return np.moveaxis(out, 0, axis)


#: Newton steps of :func:`loglog_nodes` at most and their tolerance (relative, on the bin
#: means). 3 steps reach it on the models made from H.E.S.S. DR1, 3 to 5 on the bkg_3d
#: templates it ships (whose means change by up to 10 decades from one bin to the next).
_NODE_ITERATIONS = 50
_NODE_RTOL = 1e-10
# Spectra solved together: the temporaries of a step (some 20 arrays of energies x
# spectra) then stay in the CPU cache, which makes a step 1.4 times faster.
_NODE_COLUMNS = 4096
# Below this |z|, expm1(z) / z and its derivative come from their series: the closed
# forms divide by z (0 / 0 at z = 0) and the derivative's cancels (error 1e-16 / z).
_SERIES_BELOW = 1e-4


def _expm1_ratio(z: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``expm1(z) / z`` and its derivative ``(exp(z) - expm1(z) / z) / z``."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        e = np.expm1(z)
        ratio = e / z
        derivative = (e + 1.0 - ratio) / z
    small = np.abs(z) < _SERIES_BELOW
    if small.any():  # rare (a slope within 1e-4 of -1): fixed up where it occurs
        zs = z[small]
        ratio[small] = 1.0 + zs * (1.0 / 2.0 + zs * (1.0 / 6.0 + zs / 24.0))
        derivative[small] = 1.0 / 2.0 + zs * (1.0 / 3.0 + zs / 8.0)
    return ratio, derivative


def _solve_tridiagonal(
    lower: NDArray[np.float64],
    diag: NDArray[np.float64],
    upper: NDArray[np.float64],
    rhs: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Solve one tridiagonal system per column (Thomas algorithm, equations along axis 0).

    ``lower[i]`` and ``upper[i]`` multiply the unknowns ``i - 1`` and ``i + 1`` in
    equation ``i`` (``lower[0]`` and ``upper[-1]`` are not used). No pivoting: the
    systems of :func:`loglog_nodes` are diagonally dominant (the off-diagonal terms of
    a row add up to less than 1/2 where neighbouring bins have similar log widths).
    """
    factor = np.empty_like(diag)
    out = np.empty_like(rhs)
    factor[0] = upper[0] / diag[0]
    out[0] = rhs[0] / diag[0]
    for i in range(1, diag.shape[0]):
        pivot = diag[i] - lower[i] * factor[i - 1]
        factor[i] = upper[i] / pivot
        out[i] = (rhs[i] - lower[i] * out[i - 1]) / pivot
    for i in range(diag.shape[0] - 2, -1, -1):
        out[i] -= factor[i] * out[i + 1]
    return out


def _log_nodes(
    means: NDArray[np.float64], bin_edges: NDArray[np.float64], centres: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Log of the nodes of bin means, energy along axis 0 and one spectrum per column.

    In each bin the interpolant is the power law through the node at the centre with
    the slope (in log-log) of the segment to the node below, left of the centre, and
    of the segment to the node above, right of it; a segment to a node that is not
    usable takes the other side's slope, and a node with neither is constant (so the
    first and last nodes continue their only segment). With ``k`` the slope + 1,
    ``a = log(centre / lo)`` and ``b = log(hi / centre)``, the bin mean is exactly
    ``node * centre / (hi - lo) * (a * f(-k_left * a) + b * f(k_right * b))``,
    ``f(z) = expm1(z) / z``: Gammapy's integral of the power laws between the nodes.
    Usable are the positive finite means; the others get log nodes 0.
    """
    usable = np.isfinite(means) & (means > 0)
    # Segment i joins the nodes i - 1 and i; segments 0 and n lie beyond the end nodes.
    # A segment without two usable nodes has slope 0 (weight 0); the others have
    # slope = weight x the difference of their log nodes.
    linked = np.zeros((means.shape[0] + 1, means.shape[1]), dtype=bool)
    linked[1:-1] = usable[:-1] & usable[1:]
    below_ok, above_ok = linked[:-1], linked[1:]
    weights = np.zeros(linked.shape)
    weights[1:-1] = linked[1:-1] / np.diff(np.log(centres))[:, None]
    a = np.log(centres / bin_edges[:-1])[:, None]
    b = np.log(bin_edges[1:] / centres)[:, None]
    log_nodes = np.log(np.where(usable, means, 1.0))  # the means are the first guess
    log_targets = log_nodes - np.log(centres / np.diff(bin_edges))[:, None]
    slopes = np.zeros(linked.shape)
    for _ in range(_NODE_ITERATIONS):
        np.multiply(np.diff(log_nodes, axis=0), weights[1:-1], out=slopes[1:-1])
        left = np.where(below_ok, slopes[:-1], slopes[1:])
        right = np.where(above_ok, slopes[1:], slopes[:-1])
        f_left, df_left = _expm1_ratio((left + 1.0) * -a)
        f_right, df_right = _expm1_ratio((right + 1.0) * b)
        total = a * f_left + b * f_right
        residual = np.where(usable, log_nodes + np.log(total) - log_targets, 0.0)
        converged = np.all(np.abs(residual) < _NODE_RTOL, axis=0)
        if converged.all():
            break
        # A converged spectrum takes no further step (a zero right-hand side gives a
        # zero step), so its nodes do not depend on the other spectra of the block.
        residual[:, converged] = 0.0
        # Newton step. A bin mean depends on its node and the two neighbours only, so
        # the Jacobian of the log means by the log nodes is tridiagonal. Derivatives of
        # log(total) by the slope left and right of the centre, then by the slopes of the
        # segments below and above (a node with one segment uses it on both sides).
        d_left = -(a * a) * df_left / total
        d_right = (b * b) * df_right / total
        both = d_left + d_right
        d_below = weights[:-1] * np.where(above_ok, d_left, both)
        d_above = weights[1:] * np.where(below_ok, d_right, both)
        log_nodes -= _solve_tridiagonal(-d_below, 1.0 + d_below - d_above, d_above, residual)
    return log_nodes


def loglog_nodes(rate: xr.DataArray) -> xr.DataArray:
    """Node values of a binned rate for a science tool that interpolates log-log in energy.

    Gammapy reads the rate of a ``bkg_2d``/``bkg_3d`` file as values at the
    energy bin centres and integrates the power law between them (log-log).
    For a falling spectrum, bin means placed at the centres make that
    integral too large: by 1.7 % in every bin for E^-2.7 and 0.2 decade bins,
    more where the spectrum bends. These nodes are the values whose log-log
    interpolant has, over every bin, the mean of ``rate`` (to 1e-10 relative,
    by Newton's method); bins that are not positive (or not finite) keep their
    value.

    Parameters
    ----------
    rate
        Bin means along ``energy`` (with edges), any other dimensions.

    Returns
    -------
    xarray.DataArray
        ``rate`` with node values, attribute ``energy_nodes = "loglog"``.
    """
    bin_edges = edges(rate, ENERGY_DIM)
    centres = np.asarray(rate[ENERGY_DIM].values, dtype=np.float64)
    axis = rate.get_axis_num(ENERGY_DIM)
    # Energy first, one column per spectrum: each energy is one contiguous row.
    means = np.moveaxis(np.asarray(rate.values, dtype=np.float64), axis, 0)
    flat = means.reshape(means.shape[0], -1)
    log_nodes = np.empty(flat.shape)
    for start in range(0, flat.shape[1], _NODE_COLUMNS):
        block = slice(start, start + _NODE_COLUMNS)
        log_nodes[:, block] = _log_nodes(flat[:, block], bin_edges, centres)
    usable = np.isfinite(flat) & (flat > 0)
    nodes = np.where(usable, np.exp(log_nodes), flat).reshape(means.shape)
    result = rate.copy(data=np.moveaxis(nodes, 0, axis))
    result.attrs["energy_nodes"] = "loglog"
    return result


# --------------------------------------------------------------------------- the analysis' model


def _fill_missing(values: NDArray[Any]) -> NDArray[Any]:
    """Fill zeros and NaN between populated energy bins, log-linearly in bin index.

    Along the second-last axis (energy) of every row; values before the first
    and after the last populated bin are left as they are.
    """
    out = values.copy()
    rows = np.moveaxis(out, -2, -1).reshape(-1, values.shape[-2])
    filled = rows.copy()
    missing = ~np.isfinite(rows) | (rows == 0)
    index = np.arange(rows.shape[1])
    for r in np.flatnonzero(missing.any(axis=1) & (~missing).any(axis=1)):
        valid = ~missing[r]
        known = index[valid]
        inner = missing[r] & (index > known[0]) & (index < known[-1])
        if not inner.any():
            continue
        logs = _log_values(rows[r, valid])
        fill = np.exp(np.interp(index[inner], known, logs))
        filled[r, inner] = np.where(fill <= 2 * _OUTPUT_TINY, 0.0, fill)
    shaped = filled.reshape(*values.shape[:-2], values.shape[-1], values.shape[-2])
    return np.ascontiguousarray(np.moveaxis(shaped, -1, -2)).astype(values.dtype)


def _consumer_grid(rate: xr.DataArray, interp_missing_data: bool, pad_offset: bool) -> _Grid:
    grid = _grid(rate)
    values, t = grid.values, grid.offset_edges
    if interp_missing_data:
        values = _fill_missing(values)
    if pad_offset:
        # One more bin at each end, as wide as the end bin, holding the end values.
        values = np.concatenate([values[..., :1], values, values[..., -1:]], axis=-1)
        t = np.concatenate([[2 * t[0] - t[1]], t, [2 * t[-1] - t[-2]]])
    return _Grid(values, grid.energy_edges, t, grid.lead_dims, grid.lead_coords)


def consumer_model(
    rate: xr.DataArray, *, interp_missing_data: bool = True, pad_offset: bool = True
) -> xr.DataArray:
    """The model as Gammapy's ``MapDatasetMaker`` prepares it before evaluating it.

    Parameters
    ----------
    rate
        Rate along ``(energy, offset)``, possibly with leading dimensions, with edges.
    interp_missing_data
        Fill zeros and NaN lying between populated energy bins by linear
        interpolation of the log of the rate in bin index, per offset bin
        (``background_interp_missing_data``).
    pad_offset
        Add one offset bin at each end, as wide as the end bin, repeating the
        end values (``background_pad_offset``); the first padded bin reaches
        negative offsets.

    Returns
    -------
    xarray.DataArray
        The prepared rate along ``(*lead, energy, offset)``, in the rate's
        type, with offset coordinates ``offset``, ``offset_lo``, ``offset_hi``.
    """
    grid = _consumer_grid(rate, interp_missing_data, pad_offset)
    t = grid.offset_edges
    coords: dict[str, Any] = {
        k: v for k, v in binned_coords(energy=grid.energy_edges).items() if k.startswith("energy")
    }
    # Padded offset edges can be negative, which binned_coords (rightly) refuses for data.
    units = {"units": "deg"}
    coords[OFFSET_DIM] = xr.Variable(OFFSET_DIM, 0.5 * (t[:-1] + t[1:]), units)
    coords[f"{OFFSET_DIM}_lo"] = xr.Variable(OFFSET_DIM, t[:-1], units)
    coords[f"{OFFSET_DIM}_hi"] = xr.Variable(OFFSET_DIM, t[1:], units)
    coords.update(grid.lead_coords)
    return xr.DataArray(
        grid.values,
        dims=(*grid.lead_dims, ENERGY_DIM, OFFSET_DIM),
        coords=coords,
        attrs=dict(rate.attrs),
        name=rate.name,
    )


# --------------------------------------------------------------------------- ring integrals


def _subintervals(
    offset_edges: NDArray[np.float64], grid: _Grid, log_values: NDArray[np.float64], n_sub: int
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.intp]]:
    """Sub-intervals of every ring: lower and upper offsets (deg) and the first of each ring.

    Each ring is cut at the model's offset nodes and outer edges inside it
    (where the interpolated rate has kinks or ends), and each piece into
    ``n_sub`` equal parts, or more where the rate changes fast along offset:
    the closed form of :func:`_solid_angle_integral` is exact for each energy
    edge's rate, but the energy integral between two edges whose rates fall
    at different speeds is not log-linear, and needs finer parts there.
    """
    nodes = grid.offset_nodes
    breaks = np.concatenate([nodes, grid.offset_edges[[0, -1]]])
    if nodes.size > 1:
        # Largest change of the log rate across each offset cell, over energies and runs.
        step = np.abs(np.diff(log_values, axis=-1)).reshape(-1, nodes.size - 1)
        with np.errstate(invalid="ignore"):
            finite = np.where(np.isfinite(step), step, 0.0)
        change = finite.max(axis=0) / np.diff(nodes)  # per deg
    else:
        change = np.zeros(1)
    lows, highs, starts = [], [], []
    count = 0
    for a, b in itertools.pairwise(offset_edges):
        tol = 1e-12 * (b - a)
        inner = breaks[(breaks > a + tol) & (breaks < b - tol)]
        cuts = np.concatenate([[a], np.unique(inner), [b]])
        starts.append(count)
        for p0, p1 in itertools.pairwise(cuts):
            cell = np.clip(np.searchsorted(nodes, 0.5 * (p0 + p1)) - 1, 0, change.size - 1)
            needed = int(np.ceil(change[cell] * (p1 - p0) / _MAX_LOG_STEP))
            parts = min(max(n_sub, needed), max(n_sub, _MAX_PARTS))
            points = np.linspace(p0, p1, parts + 1)
            lows.append(points[:-1])
            highs.append(points[1:])
            count += parts
    return np.concatenate(lows), np.concatenate(highs), np.asarray(starts, dtype=np.intp)


def _solid_angle_integral(
    f0: NDArray[np.float64],
    f1: NDArray[np.float64],
    t0: NDArray[np.float64],
    t1: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Integral of f over the solid angle between offsets t0 < t1 (rad), f log-linear in t.

    With f = f0 exp(b (t - t0)), the integral of ``2 pi f sin t dt`` has a
    closed form: exact where the rate falls exponentially (next to a zero,
    where a plain quadrature would need thousands of points), second order
    elsewhere. Written with half-angle sines so that thin rings near the
    centre lose no precision. Where f is 0 at an end the trapezoid rule is
    used instead (the log is undefined).
    """
    dt = t1 - t0
    mid = 0.5 * (t0 + t1)
    s = 2.0 * np.sin(0.5 * dt)
    positive = (f0 > 0) & (f1 > 0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        b = np.where(positive, np.log(f1 / f0) / dt, 0.0)
        numerator = f0 * s * (np.sin(mid) + b * np.cos(mid)) + (f1 - f0) * (
            b * np.sin(t1) - np.cos(t1)
        )
        exact = numerator / (1.0 + b * b)
    trapezoid = 0.5 * (f0 + f1) * s * np.sin(mid)
    return 2.0 * np.pi * np.where(positive, exact, trapezoid)


def rate_integrals(
    rate: xr.DataArray,
    energy_edges: ArrayLike,
    offset_edges: ArrayLike,
    *,
    interp_missing_data: bool = True,
    pad_offset: bool = True,
    n_sub: int = DEFAULT_SUBSTEPS,
) -> xr.DataArray:
    """The rate integrated over energy bins and offset rings as the analysis integrates it.

    The rate is prepared as ``MapDatasetMaker`` prepares it
    (:func:`consumer_model`), evaluated at the energy edges
    (:func:`evaluate_rate`) and integrated over each energy bin with the
    log-log rule (:func:`integrate_log_log`): exactly what Gammapy computes in
    each pixel of a map with these energy edges. The analysis then sums
    pixels, value at the centre x solid angle; here each ring is integrated
    over its solid angle instead. The integrand has kinks at the model's
    offset nodes and ends at its outer edge: each ring is cut there, each
    piece into ``n_sub`` parts, and each part integrated in closed form with
    the rate log-linear in offset between the part's ends (exact in the
    model's own offset cells when the energy slope does not change with
    offset, and exact for the steep fall next to an exact zero). With the
    default 4 parts the H.E.S.S. DR1 models agree with 64 parts to 1e-6.

    Parameters
    ----------
    rate
        Rate in s-1 MeV-1 sr-1 along ``(energy, offset)``, possibly with
        leading dimensions (``obs_id``), with edges in TeV and deg.
    energy_edges
        Energy edges of the bins to predict, TeV.
    offset_edges
        Offset edges of the rings to predict, deg.
    interp_missing_data, pad_offset
        ``MapDatasetMaker`` options (:func:`consumer_model`); their defaults are its defaults.
    n_sub
        Parts per smooth piece of a ring.

    Returns
    -------
    xarray.DataArray
        Along ``(*lead, energy, offset)``: events per second of the rate's
        time convention in each bin. 0 where the analysis evaluates the rate
        outside the model's (padded) range, NaN where the integral involves a
        NaN rate.
    """
    if int(n_sub) < 1:
        raise ValueError(f"n_sub must be >= 1, got {n_sub}")
    coords = binned_coords(energy=energy_edges, offset=offset_edges)
    grid = _consumer_grid(rate, interp_missing_data, pad_offset)
    e_edges = _map_energy_edges(edges(xr.Dataset(coords=coords), ENERGY_DIM), grid.energy_edges)
    t_edges = edges(xr.Dataset(coords=coords), OFFSET_DIM)
    log_values = _log_values(grid.values)
    lo, hi, starts = _subintervals(t_edges, grid, log_values, int(n_sub))
    points, where = np.unique(np.concatenate([lo, hi]), return_inverse=True)
    i_lo, i_hi = where[: lo.size], where[lo.size :]
    # Parts outside the model's (padded) offset range have no rate; their ends may
    # still be on the range's edge, where the rate is the edge value.
    beyond = (0.5 * (lo + hi) < grid.offset_edges[0]) | (0.5 * (lo + hi) > grid.offset_edges[-1])
    t_lo, t_hi = np.deg2rad(lo), np.deg2rad(hi)

    lead_shape = grid.values.shape[:-2]
    flat = log_values.reshape(-1, *log_values.shape[-2:])
    out = np.empty((flat.shape[0], e_edges.size - 1, t_edges.size - 1))
    for start in range(0, flat.shape[0], _CHUNK_ROWS):
        chunk = flat[start : start + _CHUNK_ROWS]
        at_edges = _evaluate_log(chunk, grid, e_edges[:, None], points[None, :])
        per_bin = integrate_log_log(at_edges, e_edges, axis=-2)  # (rows, energy, points)
        parts = _solid_angle_integral(per_bin[..., i_lo], per_bin[..., i_hi], t_lo, t_hi)
        parts = np.where(beyond, 0.0, parts)
        out[start : start + _CHUNK_ROWS] = np.add.reduceat(parts, starts, axis=-1)
    values = out.reshape(*lead_shape, e_edges.size - 1, t_edges.size - 1) * MEV_PER_TEV
    return xr.DataArray(
        values,
        dims=(*grid.lead_dims, ENERGY_DIM, OFFSET_DIM),
        coords={**coords, **grid.lead_coords},
        name="rate_integral",
        attrs={"units": "s-1", "long_name": "events per second in the bin"},
    )


# --------------------------------------------------------------------------- run cube


def consumer_counts(
    rate: xr.DataArray,
    cube: xr.Dataset,
    *,
    time: str | None = None,
    interp_missing_data: bool = True,
    pad_offset: bool = True,
    n_sub: int = DEFAULT_SUBSTEPS,
) -> xr.DataArray:
    """Predicted counts of a model rate in every bin of the run cube, as the analysis predicts them.

    Every run's rate is integrated over the cube's energy bins and offset
    rings with :func:`rate_integrals` and multiplied by the cube's
    ``exposure_time`` (run time x unexcluded fraction of the ring x safe-energy
    mask), converted to the rate's time convention (:func:`time_scale`).
    Taking the unexcluded fraction of a ring as a factor on the ring's integral
    assumes the rate does not vary across the excluded part of the ring; the
    cube keeps no more than that fraction.

    Parameters
    ----------
    rate
        Rate in s-1 MeV-1 sr-1 along ``(energy, offset)`` (the same for every
        run) or ``(obs_id, energy, offset)`` (covering the cube's runs), with
        edges. Its bins may differ from the cube's in energy and offset.
    cube
        Run cube with ``exposure_time``.
    time
        Time convention of the rate; default ``rate.attrs["time_convention"]``,
        else the cube's.
    interp_missing_data, pad_offset, n_sub
        As for :func:`rate_integrals`.

    Returns
    -------
    xarray.DataArray
        Predicted counts along ``(obs_id, energy, offset)``, ``attrs["prediction"]
        == "consumer"``. Zero where the cube has no exposure (below the safe
        threshold, excluded rings); NaN in exposed bins that reach beyond the
        model's energy or offset edges (the analysis would predict 0 there:
        the model does not say) or whose integral involves a NaN rate.
        Cube edges within rounding of the model's outer edges are taken as
        equal to them.
    """
    convention = time or str(
        rate.attrs.get("time_convention", cube.attrs.get("time_convention", "ontime"))
    )
    if OBS_DIM in rate.dims:
        missing = np.setdiff1d(cube[OBS_DIM].values, rate[OBS_DIM].values)
        if missing.size:
            raise ValueError(f"the rate has no model for runs {missing.tolist()} of the cube")
        rate = rate.sel({OBS_DIM: cube[OBS_DIM].values})
    e_model, t_model = edges(rate, ENERGY_DIM), edges(rate, OFFSET_DIM)
    e_cube, t_cube = edges(cube, ENERGY_DIM), edges(cube, OFFSET_DIM)
    t_eval = _snap(t_cube, t_model[0], t_model[-1], _OFFSET_ATOL)
    per_second = rate_integrals(
        rate,
        e_cube,
        t_eval,
        interp_missing_data=interp_missing_data,
        pad_offset=pad_offset,
        n_sub=n_sub,
    ).values
    # Covered: inside the model's range as the analysis sees both (see _map_energy_edges).
    e_map, e_range = _map_energy_edges(e_cube, e_model), _log_axis_edges(e_model[[0, -1]])
    covered_e = (e_map[:-1] >= e_range[0]) & (e_map[1:] <= e_range[1])
    covered_t = (t_eval[:-1] >= t_model[0]) & (t_eval[1:] <= t_model[-1])
    per_second = np.where(covered_e[:, None] & covered_t[None, :], per_second, np.nan)
    if per_second.ndim == 2:
        per_second = np.broadcast_to(per_second, (cube.sizes[OBS_DIM], *per_second.shape))
    exposure = (cube["exposure_time"] * time_scale(cube, convention)).transpose(
        OBS_DIM, ENERGY_DIM, OFFSET_DIM
    )
    predicted = np.where(exposure.values > 0, per_second * exposure.values, 0.0)
    dims = (OBS_DIM, ENERGY_DIM, OFFSET_DIM)
    keep = {k: v.variable for k, v in cube.coords.items() if set(v.dims) <= set(dims)}
    return xr.DataArray(
        predicted,
        dims=dims,
        coords=keep,
        name="predicted",
        attrs={"units": "1", "long_name": "predicted counts", "prediction": "consumer"},
    )


# --------------------------------------------------------------------------- bkg_3d models

#: How Gammapy 2.1 orients a ``bkg_3d`` model: its ``FOVALIGN``, or ``REVERSE_LON_RADEC``
#: for every model of a run flagged like H.E.S.S. DR1 (:func:`consumer_alignment`).
ConsumerAlignment = Literal["ALTAZ", "RADEC", "REVERSE_LON_RADEC"]

#: ``MapDatasetMaker``'s default largest field-of-view rotation (deg) per time step of the
#: integration of an ALTAZ model over a run.
DEFAULT_FOV_ROTATION_STEP = 1.0
# Gammapy's constants of that time integration: the Earth turns 360 deg per (solar) day,
# and no time step is shorter than 1 s.
_EARTH_DEG_PER_S = 360.0 / 86400.0
_MIN_TIME_STEP = 1.0
_FOV_DIMS = ("energy", "fov_lon", "fov_lat")


def consumer_alignment(fovalign: str, reversed_lon: bool) -> ConsumerAlignment:
    """The orientation Gammapy 2.1 gives a ``bkg_3d`` model of a run.

    Parameters
    ----------
    fovalign
        The model file's ``FOVALIGN`` (``ALTAZ`` or ``RADEC``).
    reversed_lon
        Whether the run's EVENTS header is flagged like H.E.S.S. DR1
        (:func:`xbkg.io.datastore.gammapy_reversed_lon`): ``Observation.bkg``
        then sets ``REVERSE_LON_RADEC`` whatever ``FOVALIGN`` says.
    """
    if reversed_lon:
        return "REVERSE_LON_RADEC"
    name = str(fovalign).strip().upper()
    if name not in ("ALTAZ", "RADEC"):
        raise ValueError(f"FOVALIGN must be 'ALTAZ' or 'RADEC', got {fovalign!r}")
    return "ALTAZ" if name == "ALTAZ" else "RADEC"


def rotation_time_steps(
    track: Any, tstart: float, tstop: float, step: float = DEFAULT_FOV_ROTATION_STEP
) -> NDArray[np.float64]:
    """Times (s) at which Gammapy 2.1 evaluates an ALTAZ model during a run.

    ``_compute_rotation_time_steps`` of ``gammapy.makers.utils``: from
    ``tstart``, each step lasts ``step x cos(alt) / (360 deg/day x cos(lat) x
    |cos(az)|)`` (the field's rotation rate at the pointing's current altitude
    and azimuth, ``lat`` the site's latitude), at least 1 s, and the last one
    ends at ``tstop``.

    Parameters
    ----------
    track
        The run's :class:`xbkg.fov.PointingTrack` (covering ``tstart`` to ``tstop``).
    tstart, tstop
        Start and end of the integration, s in the track's time reference.
    step
        Largest rotation per step, deg (``MapDatasetMaker(fov_rotation_step=...)``).
    """
    if not step > 0:
        raise ValueError(f"the rotation step must be > 0 deg, got {step}")
    cos_lat = abs(float(np.cos(track.location.lat.to_value("rad"))))
    times = [float(tstart)]
    now = float(tstart)
    while now < tstop:
        alt, az = (float(v) for v in track.pointing_altaz(now))
        rate = _EARTH_DEG_PER_S * cos_lat * abs(np.cos(np.deg2rad(az)))
        with np.errstate(divide="ignore"):
            length = step * np.cos(np.deg2rad(alt)) / rate if rate > 0 else np.inf
        now = min(now + max(float(length), _MIN_TIME_STEP), float(tstop))
        times.append(now)
    return np.asarray(times)


def _fov_grid(rate: xr.DataArray) -> tuple[NDArray[Any], tuple[NDArray[np.float64], ...]]:
    """Values along (energy, fov_lon, fov_lat) in their stored type, and the three edge arrays."""
    missing = [d for d in _FOV_DIMS if d not in rate.dims]
    if missing or rate.ndim != 3:
        raise ValueError(f"a bkg_3d rate needs exactly the dimensions {_FOV_DIMS}, got {rate.dims}")
    values = np.asarray(rate.transpose(*_FOV_DIMS).values)
    if not np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float64)
    return values, tuple(edges(rate, d) for d in _FOV_DIMS)


def _fov_log_values(values: NDArray[Any], interp_missing_data: bool) -> NDArray[np.float64]:
    """Log of a (energy, lon, lat) rate as the analysis interpolates it (missing data filled)."""
    if interp_missing_data:
        flat = values.reshape(values.shape[0], -1)  # (energy, pixel): energy second to last
        values = _fill_missing(flat).reshape(values.shape)
    return _log_values(values)


def _evaluate_fov_log(
    log_values: NDArray[np.float64],
    bin_edges: tuple[NDArray[np.float64], ...],
    energy: NDArray[np.float64],
    lon: NDArray[np.float64],
    lat: NDArray[np.float64],
) -> NDArray[np.float64]:
    """The rate at energies (axis 0) x positions (``lon``, ``lat``, any shape), as Gammapy.

    Trilinear interpolation of the log rate between bin centres, in log
    energy and linear fov_lon and fov_lat, extrapolated linearly out to the
    axis edges and 0 beyond them (edges included); NaN nodes give NaN.
    Returns shape ``(energy.size, *lon.shape)``.
    """
    e_edges, x_edges, y_edges = bin_edges
    log_e = np.log(np.clip(energy, _OUTPUT_TINY, np.inf))
    ie0, ie1, fe = _cells(np.log(np.sqrt(e_edges[:-1] * e_edges[1:])), log_e)
    ix0, ix1, fx = _cells(0.5 * (x_edges[:-1] + x_edges[1:]), lon.ravel())
    iy0, iy1, fy = _cells(0.5 * (y_edges[:-1] + y_edges[1:]), lat.ravel())
    fe = fe[:, None]
    out = np.zeros((energy.size, lon.size))
    for ie, we in ((ie0, 1 - fe), (ie1, fe)):
        for ix, wx in ((ix0, 1 - fx), (ix1, fx)):
            for iy, wy in ((iy0, 1 - fy), (iy1, fy)):
                out += we * (wx * wy) * log_values[ie[:, None], ix[None, :], iy[None, :]]
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.exp(out)
        out = np.where((out <= 2 * _OUTPUT_TINY) | np.isinf(out), 0.0, out)
        e = _log_axis_edges(e_edges)
        flat_lon, flat_lat = lon.ravel(), lat.ravel()
        inside_e = (energy >= e[0]) & (energy <= e[-1])
        inside_p = (
            (flat_lon >= x_edges[0])
            & (flat_lon <= x_edges[-1])
            & (flat_lat >= y_edges[0])
            & (flat_lat <= y_edges[-1])
        )
    out = np.where(inside_e[:, None] & inside_p[None, :], out, 0.0)
    return out.reshape(energy.size, *lon.shape)


def evaluate_fov_rate(
    rate: xr.DataArray,
    energy: ArrayLike,
    fov_lon: ArrayLike,
    fov_lat: ArrayLike,
    *,
    interp_missing_data: bool = True,
) -> NDArray[np.float64]:
    """A ``bkg_3d`` rate at energies and field-of-view positions, as Gammapy's ``Background3D``.

    Linear interpolation of the log of the rate between bin centres, in log
    energy and linear ``fov_lon`` and ``fov_lat``; the end cells extrapolated
    linearly out to the axis edges, 0 beyond them (edges included). Rates
    are clipped from below at the smallest normal number of their floating
    type before the log (see :func:`evaluate_rate`). With
    ``interp_missing_data`` (``MapDatasetMaker``'s default) zeros and NaN
    between populated energy bins of each pixel are first filled as the
    analysis fills them (:func:`consumer_model`). Unlike Gammapy, a NaN node
    makes the result NaN, not 0.

    Parameters
    ----------
    rate
        Rate along ``(energy, fov_lon, fov_lat)`` with edges (TeV, deg), in
        the orientation in which it is evaluated (as stored in its file).
    energy
        1-D energies, TeV.
    fov_lon, fov_lat
        Positions in the model's frame, deg (any shape, broadcast together).

    Returns
    -------
    numpy.ndarray
        Shape ``(energy.size, *broadcast(fov_lon, fov_lat).shape)``, in the rate's units.
    """
    values, bin_edges = _fov_grid(rate)
    lon, lat = np.broadcast_arrays(
        np.asarray(fov_lon, dtype=np.float64), np.asarray(fov_lat, dtype=np.float64)
    )
    e = np.atleast_1d(np.asarray(energy, dtype=np.float64))
    return _evaluate_fov_log(_fov_log_values(values, interp_missing_data), bin_edges, e, lon, lat)


def _sky_wcs(ra: float, dec: float, width: float, binsz: float) -> tuple[Any, int]:
    """The WCS of Gammapy's ``WcsGeom.create(skydir=(ra, dec), width, binsz)`` and its size."""
    from astropy.wcs import WCS

    npix = int(np.rint(width / binsz))
    if npix < 1:
        raise ValueError(f"a sky grid of width {width} deg and {binsz} deg pixels has no pixel")
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---CAR", "DEC--CAR"]
    wcs.wcs.crpix = [(npix + 1) / 2.0, (npix + 1) / 2.0]
    wcs.wcs.crval = [float(ra), float(dec)]
    wcs.wcs.cdelt = [-float(binsz), float(binsz)]
    wcs.wcs.radesys = "ICRS"
    wcs.wcs.set()
    return wcs, npix


def sky_pixel_index(
    ra_grid: float, dec_grid: float, width: float, binsz: float, ra: ArrayLike, dec: ArrayLike
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Row (lat) and column (lon) of the :func:`sky_grid` pixel of each direction; -1 outside."""
    wcs, npix = _sky_wcs(ra_grid, dec_grid, width, binsz)
    ra64, dec64 = np.broadcast_arrays(np.asarray(ra, np.float64), np.asarray(dec, np.float64))
    x, y = wcs.wcs_world2pix(ra64, dec64, 0)
    with np.errstate(invalid="ignore"):
        ix = np.floor(np.asarray(x) + 0.5)
        iy = np.floor(np.asarray(y) + 0.5)
        outside = ~((ix >= 0) & (ix < npix) & (iy >= 0) & (iy < npix))
    ix = np.where(outside, -1, ix).astype(np.intp)
    iy = np.where(outside, -1, iy).astype(np.intp)
    return iy, ix


def sky_grid(
    ra: float, dec: float, width: float, binsz: float
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Pixel centres and solid angles of Gammapy's ``WcsGeom.create(skydir, width, binsz)``.

    The default geometry of a Gammapy map around a pointing: ICRS, plate
    carrée (CAR) projection with the reference point at (``ra``, ``dec``) in
    the centre of the map, ``round(width / binsz)`` pixels a side, RA
    increasing to the left. Solid angles as Gammapy computes them: each
    pixel as two planar triangles between its corners, with great-circle
    side lengths.

    Returns
    -------
    ra, dec, solid_angle
        Arrays of shape ``(n_lat, n_lon)`` (Gammapy's image order): deg, deg, sr.
    """
    from xbkg.exclusion import position_angle, separation

    wcs, npix = _sky_wcs(ra, dec, width, binsz)
    centre = np.arange(npix, dtype=np.float64)
    corner = np.arange(-0.5, npix, dtype=np.float64)
    x, y = np.meshgrid(centre, centre)
    ra_c, dec_c = wcs.wcs_pix2world(x, y, 0)
    xe, ye = np.meshgrid(corner, corner)
    ra_e, dec_e = wcs.wcs_pix2world(xe, ye, 0)

    def corner_of(dy: int, dx: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        rows = slice(dy, npix + dy)
        cols = slice(dx, npix + dx)
        return ra_e[rows, cols], dec_e[rows, cols]

    # Gammapy's corners: "low"/"up" along the map's first (lon) index, "left"/"right" along lat.
    low_left, low_right, up_left, up_right = (
        corner_of(0, 0),
        corner_of(0, 1),
        corner_of(1, 0),
        corner_of(1, 1),
    )
    low = np.deg2rad(separation(*low_left, *low_right))
    left = np.deg2rad(separation(*low_left, *up_left))
    up = np.deg2rad(separation(*up_left, *up_right))
    right = np.deg2rad(separation(*low_right, *up_right))
    angle_lr = np.deg2rad(
        position_angle(*low_right, *up_right) - position_angle(*low_right, *low_left)
    )
    angle_ul = np.deg2rad(position_angle(*up_left, *up_right) - position_angle(*low_left, *up_left))
    omega = np.abs(0.5 * low * right * np.sin(angle_lr) + 0.5 * up * left * np.sin(angle_ul))
    return np.mod(ra_c, 360.0), dec_c, omega


@dataclass(frozen=True)
class FovPrediction:
    """Counts a ``bkg_3d`` model predicts on sky pixels of one run, and where the pixels were.

    Attributes
    ----------
    counts
        Predicted counts, shape ``(n_energy, *pixels)``: rate integrated over
        each energy bin and the run, times the pixel's solid angle.
    altaz_lon, altaz_lat
        Mean ALTAZ field-of-view position (deg, GADF sign) of each pixel
        during the run, weighted by its predicted counts at each time;
        shape ``pixels``.
    times
        Times (s) at which the model was evaluated (ALTAZ) or the pixels'
        ALTAZ positions were taken (all alignments).
    alignment
        The orientation the model was evaluated in.
    """

    counts: NDArray[np.float64]
    altaz_lon: NDArray[np.float64]
    altaz_lat: NDArray[np.float64]
    times: NDArray[np.float64]
    alignment: ConsumerAlignment


def _trapezoid_weights(times: NDArray[np.float64]) -> NDArray[np.float64]:
    """Weights of the trapezoid rule over ``times``, summing to 1 (one time: weight 1)."""
    if times.size == 1:
        return np.ones(1)
    dt = np.diff(times)
    w = np.zeros(times.size)
    w[:-1] += 0.5 * dt
    w[1:] += 0.5 * dt
    return w / dt.sum()


def fov_consumer_counts(
    rate: xr.DataArray,
    alignment: ConsumerAlignment,
    track: Any,
    ra: ArrayLike,
    dec: ArrayLike,
    solid_angle: ArrayLike,
    energy_edges: ArrayLike,
    tstart: float,
    ontime: float,
    *,
    interp_missing_data: bool = True,
    fov_rotation_step: float = DEFAULT_FOV_ROTATION_STEP,
) -> FovPrediction:
    """Counts of a ``bkg_3d`` model on sky pixels, as Gammapy 2.1's ``MapDatasetMaker`` makes them.

    ``make_map_background_irf`` in numpy, for one run with a fixed RA/Dec
    pointing:

    1. zeros and NaN between populated energy bins of each pixel are filled
       (``background_interp_missing_data``); no padding (that is for offset axes);
    2. each sky pixel centre is put in the model's frame: ``RADEC`` (GADF
       sign: ``fov_lon`` towards lower RA), ``REVERSE_LON_RADEC`` (the same,
       ``fov_lon`` negated), or ``ALTAZ`` at each of the times of
       :func:`rotation_time_steps` from ``tstart`` to ``tstart + ontime``;
    3. the rate is evaluated there at the map's energy edges
       (:func:`evaluate_fov_rate`) and integrated over each energy bin with the
       log-log rule (:func:`integrate_log_log`);
    4. for ALTAZ the integrals at the times are averaged over the run with the
       trapezoid rule (Gammapy's ``trapezoid(data, times) / duration``);
    5. the result is multiplied by the pixel's solid angle and by ``ontime``
       (Gammapy multiplies by the observation's duration, the sum of its good
       time intervals, whatever time the model is normalised to).

    The field-of-view coordinates come from :class:`xbkg.fov.PointingTrack`
    (exact to ~1e-8 deg against astropy); Gammapy interpolates astropy's
    ICRS-to-AltAz terms over 1000 s, which moves positions by far less than
    the 1e-3 relative agreement the tests require.

    Parameters
    ----------
    rate
        The model as stored in its file (``xbkg.io.gadf.read_bkg(...,
        reverse_lon=False)``), along ``(energy, fov_lon, fov_lat)``, s-1 MeV-1 sr-1.
    alignment
        How Gammapy orients it for this run (:func:`consumer_alignment`).
    track
        The run's :class:`xbkg.fov.PointingTrack` (:func:`xbkg.fov.track_from_header`).
    ra, dec, solid_angle
        Sky pixel centres (deg, ICRS) and solid angles (sr), any shape (e.g.
        :func:`sky_grid`).
    energy_edges
        Energy bins of the map, TeV.
    tstart, ontime
        Start of the run's first good time interval (s in the track's time
        reference) and the sum of its good time intervals (s).
    interp_missing_data
        ``MapDatasetMaker(background_interp_missing_data=...)``.
    fov_rotation_step
        ``MapDatasetMaker(fov_rotation_step=...)``, deg.

    Returns
    -------
    FovPrediction
        Counts of shape ``(n_energy, *ra.shape)`` and the pixels' mean ALTAZ positions.
    """
    values, bin_edges = _fov_grid(rate)
    log_values = _fov_log_values(values, interp_missing_data)
    ra64, dec64 = np.broadcast_arrays(np.asarray(ra, np.float64), np.asarray(dec, np.float64))
    omega = np.broadcast_to(np.asarray(solid_angle, dtype=np.float64), ra64.shape)
    e_edges = _map_energy_edges(np.asarray(energy_edges, dtype=np.float64), bin_edges[0])
    times = rotation_time_steps(track, tstart, tstart + ontime, fov_rotation_step)
    weights = _trapezoid_weights(times)

    def integrals(lon: NDArray[np.float64], lat: NDArray[np.float64]) -> NDArray[np.float64]:
        at_edges = _evaluate_fov_log(log_values, bin_edges, e_edges, lon, lat)
        return integrate_log_log(at_edges, e_edges, axis=0) * MEV_PER_TEV

    if alignment not in ("ALTAZ", "RADEC", "REVERSE_LON_RADEC"):
        raise ValueError(
            f"alignment must be 'ALTAZ', 'RADEC' or 'REVERSE_LON_RADEC', got {alignment!r}"
        )
    align: ConsumerAlignment = alignment
    fixed = None
    if align != "ALTAZ":
        lon, lat = track.fov_coordinates(ra64, dec64, tstart, "RADEC")
        fixed = integrals(-lon if align == "REVERSE_LON_RADEC" else lon, lat)
    per_second = np.zeros((e_edges.size - 1, *ra64.shape))
    sum_w = np.zeros(ra64.shape)
    sum_lon, sum_lat = np.zeros(ra64.shape), np.zeros(ra64.shape)
    for t, w in zip(times, weights, strict=True):
        lon, lat = track.fov_coordinates(ra64, dec64, t, "ALTAZ")
        now = integrals(lon, lat) if fixed is None else fixed
        per_second += w * now
        # Pixel positions weighted by what the pixel receives at that time.
        pw = w * np.nan_to_num(now).sum(axis=0)
        sum_w += pw
        sum_lon += pw * lon
        sum_lat += pw * lat
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_lon = np.where(sum_w > 0, sum_lon / sum_w, np.nan)
        mean_lat = np.where(sum_w > 0, sum_lat / sum_w, np.nan)
    return FovPrediction(
        counts=per_second * omega[None] * float(ontime),
        altaz_lon=mean_lon,
        altaz_lat=mean_lat,
        times=times,
        alignment=align,
    )

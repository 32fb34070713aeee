"""Grouped background models: sums, rate, errors and smoothing.

A *model* is a Dataset along ``(group, energy, offset)`` with the summed
``counts`` and ``exposure_time`` of the runs of each group, and the ``rate``
and ``rate_error`` derived from them:

``rate = counts / (exposure_time x solid angle x energy width)`` in s-1 MeV-1 sr-1.

Bins that no run exposed have ``exposure_time == 0`` and a NaN rate; bins that
were exposed but saw no event have rate 0. Smoothing returns a new model and
never modifies its input.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from xbkg.axes import energy_width_mev, ring_solid_angle
from xbkg.conventions import (
    DEFAULT_SMOOTHING,
    ENERGY_DIM,
    GROUP_DIM,
    OBS_DIM,
    OFFSET_DIM,
    RATE_UNIT,
    SMOOTHING_METHODS,
    SmoothingMethod,
    SolidAngle,
)
from xbkg.grouping import assign_groups

__all__ = [
    "DEFAULT_SMOOTHING",
    "SmoothingMethod",
    "SolidAngle",
    "bin_volume",
    "compute_rate",
    "fill_unconstrained",
    "smooth",
    "stack_groups",
]


#: Penalty weights of the "poisson" smoothing: squared second differences of the
#: log rate along offset bins and along energy bins (see :func:`smooth`).
POISSON_OFFSET_PENALTY = 1000.0
POISSON_ENERGY_PENALTY = 100.0
_POISSON_MAX_ITER = 100

#: Gammapy 0.6 smoothing: about this many events per kernel sigma.
_EVENTS_PER_SIGMA = 150.0
_MIN_SIGMA_BINS = 4.0


def stack_groups(cube: xr.Dataset, groups: xr.Dataset) -> xr.Dataset:
    """Sum the run cube over the runs of each group.

    Parameters
    ----------
    cube
        Per-run cube (:func:`xbkg.cube.make_run_cube`).
    groups
        Group definitions (:func:`xbkg.grouping.group_definitions`).

    Returns
    -------
    xarray.Dataset
        ``counts`` and ``exposure_time`` along ``(group, energy, offset)``, the
        number of runs per group ``n_runs`` and the group definition coordinates.
    """
    gid = assign_groups(cube, groups)
    membership = xr.DataArray(
        gid.values[None, :] == groups[GROUP_DIM].values[:, None],
        dims=(GROUP_DIM, OBS_DIM),
        coords={GROUP_DIM: groups[GROUP_DIM], OBS_DIM: cube[OBS_DIM]},
    )
    counts = xr.dot(membership.astype(np.int64), cube["counts"], dim=OBS_DIM)
    exposure = xr.dot(membership.astype(np.float64), cube["exposure_time"], dim=OBS_DIM)
    model = xr.Dataset(
        {
            "counts": counts.transpose(GROUP_DIM, ENERGY_DIM, OFFSET_DIM).assign_attrs(
                cube["counts"].attrs
            ),
            "exposure_time": exposure.transpose(GROUP_DIM, ENERGY_DIM, OFFSET_DIM).assign_attrs(
                cube["exposure_time"].attrs
            ),
        },
        coords=groups.coords,
    )
    model = model.assign_coords(
        n_runs=(GROUP_DIM, membership.sum(OBS_DIM).values, {"long_name": "runs in the group"})
    )
    # Keep the binned coordinates (centres and edges) exactly as in the cube.
    model = model.assign_coords(
        {k: v for k, v in cube.coords.items() if set(v.dims) <= {ENERGY_DIM, OFFSET_DIM}}
    )
    model.attrs = dict(cube.attrs)
    model.attrs["grouping"] = groups.attrs.get("grouping", "")
    return model


def bin_volume(model: xr.Dataset, *, solid_angle: SolidAngle = "exact") -> xr.DataArray:
    """Solid angle x energy width of each bin, in sr MeV."""
    volume = ring_solid_angle(model, flat=solid_angle == "flat") * energy_width_mev(model)
    return volume.assign_attrs(units="sr MeV", long_name="bin solid angle x energy width")


def compute_rate(model: xr.Dataset, *, solid_angle: SolidAngle | None = None) -> xr.Dataset:
    """Add ``rate`` and ``rate_error`` (Poisson, ``sqrt(counts)``) to a model.

    Parameters
    ----------
    model
        Output of :func:`stack_groups` (or a single run's slice of the cube).
    solid_angle
        ``"exact"`` ring area ``2 pi (cos t1 - cos t2)`` or Gammapy 0.6's
        ``"flat"`` ``pi (t2**2 - t1**2)``; default: the model's
        ``attrs["solid_angle"]``, else exact.

    Returns
    -------
    xarray.Dataset
        A new model; the rate is NaN where the exposure time is zero.
    """
    mode: SolidAngle = solid_angle or model.attrs.get("solid_angle", "exact")
    if mode not in ("exact", "flat"):
        raise ValueError(f"solid_angle must be 'exact' or 'flat', got {mode!r}")
    denominator = model["exposure_time"] * bin_volume(model, solid_angle=mode)
    exposed = model["exposure_time"] > 0
    safe = denominator.where(exposed)
    rate = (model["counts"] / safe).assign_attrs(units=RATE_UNIT, long_name="background rate")
    error = (model["counts"] ** 0.5 / safe).assign_attrs(
        units=RATE_UNIT, long_name="background rate statistical error (Poisson)"
    )
    out = model.assign(rate=rate, rate_error=error)
    out.attrs["solid_angle"] = mode
    out.attrs.setdefault("smoothing", "none")
    return out


def smooth(model: xr.Dataset, method: SmoothingMethod = DEFAULT_SMOOTHING) -> xr.Dataset:
    """Smooth the rate of a model; returns a new model.

    Parameters
    ----------
    model
        A model with ``rate`` (:func:`compute_rate`), along ``(..., energy, offset)``.
    method
        ``"poisson"`` (default): a penalised Poisson fit of the log rate over the
        energy x offset plane of each group. It maximises the Poisson
        likelihood of the observed counts given the exposure, minus
        :data:`POISSON_OFFSET_PENALTY` x the squared second differences of the
        log rate along offset and :data:`POISSON_ENERGY_PENALTY` x those along
        energy. Where a bin holds many events the likelihood dominates and the
        rate follows the data; where it holds few the penalty dominates and
        the rate follows its neighbours (a straight line in log rate, i.e. a
        power law along energy): the smoothing adapts to the statistics by
        itself. Working on the log rate, the result is positive everywhere
        inside the exposed range (never negative, no exact zeros that would
        break log interpolation in science tools); second differences have no
        edge effects (no reflection, no padding). Each energy row with events
        is finally scaled to predict exactly its observed counts; a row without
        events keeps the value its neighbours give it instead of zero.
        ``"adaptive"``: per energy row, a Gaussian along the offset bins whose
        width adapts to the row's counts (as Gammapy 0.6), applied to the
        counts and to the exposure separately (a normalised convolution, zero
        outside the axis) before dividing, then scaled so that the row
        predicts exactly its observed counts. Never negative, conserves
        counts, no reflection artefacts; rows without events stay 0.
        ``"gammapy-0.6"``: Gammapy 0.6's algorithm exactly (on the rate, with
        ``mode="reflect"``, even-length kernels and all).

        With every method, bins without exposure stay NaN.

    Returns
    -------
    xarray.Dataset
        Same variables as ``model``; ``rate`` smoothed, ``rate_error`` scaled
        with it, ``attrs["smoothing"]`` set.
    """
    if "rate" not in model:
        raise ValueError("smooth() needs a model with a rate; call compute_rate() first")
    if method not in SMOOTHING_METHODS:
        raise ValueError(f"method must be one of {SMOOTHING_METHODS}, got {method!r}")
    volume = bin_volume(model, solid_angle=model.attrs.get("solid_angle", "exact"))
    denominator = (model["exposure_time"] * volume).transpose(..., ENERGY_DIM, OFFSET_DIM)
    counts = model["counts"].transpose(..., ENERGY_DIM, OFFSET_DIM)
    rate = model["rate"].transpose(..., ENERGY_DIM, OFFSET_DIM)
    if method == "poisson":
        smoothed = _smooth_planes_poisson(counts.values, denominator.values)
    elif method == "adaptive":
        smoothed = _smooth_rows_adaptive(counts.values, denominator.values)
    else:
        smoothed = _smooth_rows_gammapy06(counts.values, rate.values)
    new_rate = rate.copy(data=smoothed).transpose(*model["rate"].dims)
    # The relative statistical error of a smoothed bin is not that of the raw bin;
    # keep the raw relative error as a conservative, documented choice.
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = model["rate_error"] / model["rate"]
    out = model.assign(
        rate=new_rate.assign_attrs(model["rate"].attrs),
        rate_error=(rel.fillna(0) * new_rate).assign_attrs(model["rate_error"].attrs),
    )
    out.attrs["smoothing"] = method
    return out


def _second_difference_penalty(n: int) -> NDArray[np.float64]:
    """``D.T @ D`` for the second-difference operator ``D`` on ``n`` points (0 if n < 3)."""
    return _apply_second_difference_penalty(np.eye(n), 0)


def _apply_second_difference_penalty(x: NDArray[np.float64], axis: int) -> NDArray[np.float64]:
    """``D.T @ D`` applied along ``axis`` of ``x`` (0 if that axis has fewer than 3 points)."""
    n = x.shape[axis]
    out = np.zeros_like(x)
    if n < 3:
        return out
    d = np.diff(x, n=2, axis=axis)  # D x
    # D.T y: each second difference y_i goes to points i, i + 1, i + 2 with 1, -2, 1.
    lead = [slice(None)] * x.ndim

    def part(lo: int) -> tuple[slice, ...]:
        lead[axis] = slice(lo, lo + n - 2)
        return tuple(lead)

    out[part(0)] += d
    out[part(1)] -= 2.0 * d
    out[part(2)] += d
    return out


def _solve_block_tridiagonal(
    diagonal: NDArray[np.float64],
    lower: NDArray[np.float64],
    upper: NDArray[np.float64],
    rhs: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Solve a block-tridiagonal symmetric positive-definite system by cyclic reduction.

    ``diagonal[k]`` is block (k, k), ``lower[k]`` block (k, k - 1) (zero for k = 0),
    ``upper[k]`` block (k, k + 1) (zero for the last k), ``rhs[k]`` the right-hand
    side, all along the K blocks. The odd blocks are eliminated all at once (their
    Schur complement is again block tridiagonal, symmetric and positive definite,
    so no pivoting between blocks is needed), recursively, in log2(K) batched steps.
    """
    n_blocks, m = rhs.shape
    if n_blocks == 1:
        return np.linalg.solve(diagonal[0], rhs[0])[None]
    if n_blocks % 2:
        # One more, decoupled block with an identity diagonal and no right-hand side.
        diagonal = np.concatenate([diagonal, np.eye(m)[None]])
        lower = np.concatenate([lower, np.zeros((1, m, m))])
        upper = np.concatenate([upper, np.zeros((1, m, m))])
        rhs = np.concatenate([rhs, np.zeros((1, m))])
    # Odd block o: x_o = v_o - P_o x_(o-1) - Q_o x_(o+1), [P_o Q_o v_o] in one product.
    pqv = np.linalg.inv(diagonal[1::2]) @ np.concatenate(
        [lower[1::2], upper[1::2], rhs[1::2, :, None]], axis=2
    )
    # Even block j = 2i: its neighbours are the odd blocks i - 1 (through low) and i (up).
    low, up = lower[0::2], upper[0::2]
    from_up = up @ pqv  # [up P, up Q, up v] of odd block i
    from_low = low[1:] @ pqv[:-1]  # [low P, low Q, low v] of odd block i - 1
    new_diagonal = diagonal[0::2] - from_up[..., :m]
    new_diagonal[1:] -= from_low[..., m : 2 * m]
    new_rhs = rhs[0::2] - from_up[..., 2 * m]
    new_rhs[1:] -= from_low[..., 2 * m]
    new_lower = np.zeros_like(low)
    new_lower[1:] = -from_low[..., :m]
    new_upper = -from_up[..., m : 2 * m]
    even = _solve_block_tridiagonal(new_diagonal, new_lower, new_upper, new_rhs)
    # Back substitution: [P_o Q_o] @ [x_(o-1); x_(o+1)] (x beyond the last block is 0).
    beyond = np.concatenate([even[1:], np.zeros((1, m))])
    neighbours = np.concatenate([even, beyond], axis=1)[..., None]
    odd = pqv[..., 2 * m] - (pqv[..., : 2 * m] @ neighbours)[..., 0]
    out = np.empty((even.shape[0] + odd.shape[0], m))
    out[0::2], out[1::2] = even, odd
    return out[:n_blocks]


class _PlanePenalty:
    """The penalty of the "poisson" smoothing on an (energy, offset) plane, and solves with it.

    ``P = POISSON_OFFSET_PENALTY x D_t.T D_t (along offset) + POISSON_ENERGY_PENALTY
    x D_e.T D_e (along energy) + RIDGE``. A system ``(diag(mu) + P) x = b`` is
    banded: ordered with the longer axis outside, only bins up to two apart along
    it are coupled, so pairs of outer bins make it block tridiagonal
    (:func:`_solve_block_tridiagonal`).
    """

    RIDGE = 1e-9

    def __init__(self, n_e: int, n_t: int) -> None:
        self.shape = (n_e, n_t)
        # The outer axis is the longer one.
        self.transposed = n_e > n_t
        n_out, n_in = (n_e, n_t) if self.transposed else (n_t, n_e)
        w_out, w_in = (
            (POISSON_ENERGY_PENALTY, POISSON_OFFSET_PENALTY)
            if self.transposed
            else (POISSON_OFFSET_PENALTY, POISSON_ENERGY_PENALTY)
        )
        chunk = 2
        n_blocks = -(-n_out // chunk)
        padded = n_blocks * chunk
        outer = np.zeros((padded, padded))
        outer[:n_out, :n_out] = w_out * _second_difference_penalty(n_out)
        # Padding bin: decoupled, with unit diagonal and zero right-hand side.
        outer[n_out:, n_out:] = np.eye(padded - n_out)
        blocks = outer.reshape(n_blocks, chunk, n_blocks, chunk)
        idx = np.arange(n_blocks)
        eye_in = np.eye(n_in)
        m = chunk * n_in

        def kron(a: NDArray[np.float64]) -> NDArray[np.float64]:
            return np.einsum("kij,ab->kiajb", a, eye_in).reshape(a.shape[0], m, m)

        # The inner penalty (and the ridge) on every real outer bin of a block.
        inner = w_in * _second_difference_penalty(n_in) + self.RIDGE * eye_in
        real = (np.arange(padded) < n_out).reshape(n_blocks, chunk)
        within = np.zeros((n_blocks, chunk, n_in, chunk, n_in))
        for j in range(chunk):
            within[:, j, :, j, :] = real[:, j, None, None] * inner
        self.diagonal = kron(blocks[idx, :, idx, :]) + within.reshape(n_blocks, m, m)
        self.lower = np.zeros((n_blocks, m, m))
        self.lower[1:] = kron(blocks[idx[1:], :, idx[:-1], :])  # block (k, k - 1)
        self.upper = np.zeros((n_blocks, m, m))
        self.upper[:-1] = self.lower[1:].transpose(0, 2, 1)
        self.n_out, self.n_in, self.chunk, self.n_blocks = n_out, n_in, chunk, n_blocks

    def _to_blocks(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        grid = x.reshape(self.shape)
        grid = grid if self.transposed else grid.T  # (outer, inner)
        out = np.zeros((self.n_blocks * self.chunk, self.n_in))
        out[: self.n_out] = grid
        return out.reshape(self.n_blocks, self.chunk * self.n_in)

    def _from_blocks(self, blocks: NDArray[np.float64]) -> NDArray[np.float64]:
        grid = blocks.reshape(-1, self.n_in)[: self.n_out]
        return (grid if self.transposed else grid.T).ravel()

    def apply(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """``P @ x`` for ``x`` flattened from (energy, offset)."""
        grid = x.reshape(self.shape)
        out = POISSON_OFFSET_PENALTY * _apply_second_difference_penalty(grid, 1)
        out += POISSON_ENERGY_PENALTY * _apply_second_difference_penalty(grid, 0)
        out += self.RIDGE * grid
        return out.ravel()

    def solve(self, mu: NDArray[np.float64], rhs: NDArray[np.float64]) -> NDArray[np.float64]:
        """``(diag(mu) + P)^-1 rhs`` (both flattened from (energy, offset))."""
        diagonal = self.diagonal.copy()
        m = diagonal.shape[-1]
        diagonal.reshape(self.n_blocks, m * m)[:, :: m + 1] += self._to_blocks(mu)
        x = _solve_block_tridiagonal(diagonal, self.lower, self.upper, self._to_blocks(rhs))
        return self._from_blocks(x)


def _smooth_plane_poisson(
    counts: NDArray[np.float64], denominator: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Penalised Poisson fit of one (energy, offset) plane; see :func:`smooth`."""
    n_e, n_t = counts.shape
    exposed = denominator > 0
    out = np.full(counts.shape, np.nan)
    if not exposed.any():
        return out
    n = np.where(exposed, counts, 0.0).ravel()
    d = np.where(exposed, denominator, 0.0).ravel()
    row_total = n.reshape(n_e, n_t).sum(axis=1)
    if row_total.sum() == 0:
        out[exposed] = 0.0  # no event anywhere: nothing to smooth towards
        return out
    # A tiny ridge in the penalty pins the directions that neither data nor penalty
    # fix (bins far from any exposure), without pulling on anything else.
    penalty = _PlanePenalty(n_e, n_t)
    # Start from each row's mean rate (with half an event so empty rows have a log),
    # rows without exposure from the overall mean.
    row_exposure = d.reshape(n_e, n_t).sum(axis=1)
    overall = np.log((row_total.sum() + 0.5) / row_exposure.sum())
    safe_exposure = np.where(row_exposure > 0, row_exposure, 1.0)
    start = np.where(row_exposure > 0, np.log((row_total + 0.5) / safe_exposure), overall)
    x = np.repeat(start, n_t)

    def objective(v: NDArray[np.float64]) -> float:
        return float(n @ v - d @ np.exp(v) - 0.5 * v @ penalty.apply(v))

    value = objective(x)
    for _ in range(_POISSON_MAX_ITER):
        mu = d * np.exp(x)
        grad = n - mu - penalty.apply(x)
        step = penalty.solve(mu, grad)
        # Damped Newton: the objective is concave, halve the step until it improves.
        t = 1.0
        while t > 1e-6:
            trial = x + t * step
            new_value = objective(trial)
            if new_value >= value - 1e-12 * abs(value):
                break
            t *= 0.5
        x, value = trial, new_value
        if np.max(np.abs(t * step)) < 1e-7:
            break
    rate = np.exp(x).reshape(n_e, n_t)
    predicted = (rate * np.where(exposed, denominator, 0.0)).sum(axis=1)
    scale = np.where(row_total > 0, row_total / np.where(predicted > 0, predicted, 1.0), 1.0)
    rate *= scale[:, None]
    out[exposed] = rate[exposed]
    return out


def _smooth_planes_poisson(
    counts: NDArray[np.int64], denominator: NDArray[np.float64]
) -> NDArray[np.float64]:
    n_e, n_t = counts.shape[-2:]
    c3 = counts.reshape(-1, n_e, n_t).astype(np.float64)
    d3 = denominator.reshape(-1, n_e, n_t)
    out = np.stack([_smooth_plane_poisson(c, d) for c, d in zip(c3, d3, strict=True)])
    return out.reshape(counts.shape)


def _sigma_bins(row_counts: float, n_bins: int) -> float:
    """Kernel width in bins for a row with ``row_counts`` events (Gammapy 0.6 rule)."""
    sigma = _EVENTS_PER_SIGMA * n_bins / row_counts
    return float(min(max(sigma, _MIN_SIGMA_BINS), n_bins / 6.0))


def _gaussian_kernel(sigma: float) -> NDArray[np.float64]:
    """Odd-length, normalised Gaussian truncated at 3 sigma (no half-bin shift)."""
    half = max(1, int(np.ceil(3 * sigma)))
    x = np.arange(-half, half + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _convolve_zero_padded(
    values: NDArray[np.float64], kernel: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Centred convolution with zeros outside the axis (any kernel length, odd kernel)."""
    full = np.convolve(values, kernel)
    start = (len(kernel) - 1) // 2
    return full[start : start + len(values)]


def _smooth_rows_adaptive(
    counts: NDArray[np.int64], denominator: NDArray[np.float64]
) -> NDArray[np.float64]:
    n_bins = counts.shape[-1]
    c2 = counts.reshape(-1, n_bins).astype(np.float64)
    d2 = denominator.reshape(-1, n_bins)
    out = np.full(c2.shape, np.nan)
    for i in range(c2.shape[0]):
        c, d = c2[i], d2[i]
        exposed = d > 0
        total = c.sum()
        if not exposed.any():
            continue
        if total == 0:
            out[i, exposed] = 0.0
            continue
        k = _gaussian_kernel(_sigma_bins(total, n_bins))
        sc = _convolve_zero_padded(c, k)
        sd = _convolve_zero_padded(np.where(exposed, d, 0.0), k)
        r = np.zeros(n_bins)
        np.divide(sc, sd, out=r, where=sd > 0)
        predicted = (r * np.where(exposed, d, 0.0)).sum()
        r *= total / predicted
        out[i] = np.where(exposed, r, np.nan)
    return out.reshape(counts.shape)


def _smooth_rows_gammapy06(
    counts: NDArray[np.int64], rate: NDArray[np.float64]
) -> NDArray[np.float64]:
    # scipy only here: the preset must match Gammapy 0.6 to the last bit, and the
    # default path should not pay for importing scipy.
    from scipy import ndimage

    n_bins = counts.shape[-1]
    c2 = counts.reshape(-1, n_bins).astype(np.float64)
    r2 = rate.reshape(-1, n_bins)
    out = r2.copy()
    for i in range(c2.shape[0]):
        total = c2[i].sum()
        if total == 0:
            continue
        n = int(6 * _sigma_bins(total, n_bins))
        x = np.linspace(-3, 3, n)
        k = np.exp(-(x**2) / 2)
        k /= k.sum()
        out[i] = ndimage.convolve(r2[i], k, mode="reflect")  # exactly as Gammapy 0.6
    return out.reshape(counts.shape)


#: Spectral index of the continuation along energy when a model has a single
#: constrained energy row (about that of the cosmic-ray background).
DEFAULT_CONTINUATION_INDEX = -2.7
#: Bounds of the continuation slopes d log(rate) / d log(E): below the
#: constrained range anything the data show (a steep fall or the turn-on at
#: threshold), above it always falling, as a background spectrum does.
_LOW_SLOPE_RANGE = (-8.0, 8.0)
_HIGH_SLOPE_RANGE = (-8.0, -1.0)


def fill_unconstrained(
    rate: xr.DataArray,
    constrained: xr.DataArray | None = None,
    *,
    solid_angle: SolidAngle = "exact",
) -> tuple[xr.DataArray, xr.DataArray]:
    """Replace the bins that the data do not constrain by a smooth, positive continuation.

    Science tools do not read a ``bkg_2d`` model as steps: Gammapy integrates
    each energy bin log-log between values interpolated from the model's
    nodes, and interpolates along offset. An exact zero (or NaN written as
    zero) next to a populated bin therefore takes almost all of the lower or
    upper half of that bin with it. This function gives every such bin a
    value that continues the model smoothly, so that the consumer's
    interpolation between a filled and a constrained node follows the
    constrained model:

    - inside an energy row that has constrained bins, missing offsets are
      interpolated linearly in log(rate) along offset, and continued with the
      nearest constrained value beyond them;
    - energy rows without any constrained bin between two constrained rows
      are interpolated log-log per offset; rows below (above) the constrained
      range continue the nearest constrained row's radial shape with a power
      law whose index is the slope between the two nearest constrained rows
      (their solid-angle weighted mean rates), clipped to
      [-8, 8] below and to [-8, -1] above (a background spectrum falls at high
      energies); with a single constrained row the index is
      :data:`DEFAULT_CONTINUATION_INDEX`.

    Constrained bins keep their value exactly.

    Parameters
    ----------
    rate
        Rate along ``(..., energy, offset)`` with edge coordinates; other
        dimensions (``group``, ``obs_id``) are filled plane by plane.
    constrained
        Boolean mask of the bins the data constrain, broadcastable to
        ``rate``; default: bins with a finite, positive rate. Bins outside the
        mask, or whose rate is not finite and positive, are filled.
    solid_angle
        Ring solid angle used to weight offsets in the mean rates.

    Returns
    -------
    rate, filled : xarray.DataArray
        The filled rate (same dims, coords and attrs) and the boolean mask of
        the bins filled (``long_name`` says so). A plane with no constrained
        bin at all is returned unchanged and not marked as filled.
    """
    ok = xr.apply_ufunc(np.isfinite, rate) & (rate > 0)
    if constrained is not None:
        ok = ok & constrained.astype(bool)
    ok = ok.broadcast_like(rate).transpose(*rate.dims)
    order = (*[d for d in rate.dims if d not in (ENERGY_DIM, OFFSET_DIM)], ENERGY_DIM, OFFSET_DIM)
    values = rate.transpose(*order).values.astype(np.float64)
    mask = ok.transpose(*order).values
    log_energy = np.log(np.sqrt(_edges_of(rate, ENERGY_DIM)[:-1] * _edges_of(rate, ENERGY_DIM)[1:]))
    offset_edges = _edges_of(rate, OFFSET_DIM)
    offset_centres = 0.5 * (offset_edges[:-1] + offset_edges[1:])
    weights = ring_solid_angle(rate, flat=solid_angle == "flat").values
    planes = values.reshape(-1, *values.shape[-2:])
    masks = mask.reshape(-1, *mask.shape[-2:])
    filled_values = np.empty_like(planes)
    filled_mask = np.zeros(planes.shape, dtype=bool)
    for i, (plane, plane_ok) in enumerate(zip(planes, masks, strict=True)):
        if plane_ok.any():
            log_plane = _fill_log_plane(plane, plane_ok, log_energy, offset_centres, weights)
            filled_values[i] = np.where(plane_ok, plane, np.exp(log_plane))
            filled_mask[i] = ~plane_ok
        else:
            filled_values[i] = plane
    out = rate.transpose(*order).copy(data=filled_values.reshape(values.shape))
    filled = xr.DataArray(
        filled_mask.reshape(values.shape),
        dims=order,
        coords=out.coords,
        name="filled",
        attrs={
            "long_name": "bin not constrained by the data: rate filled by a smooth continuation",
        },
    )
    return out.transpose(*rate.dims), filled.transpose(*rate.dims)


def _edges_of(obj: xr.DataArray, dim: str) -> NDArray[np.float64]:
    from xbkg.axes import edges

    return edges(obj, dim)


def _fill_log_plane(
    rate: NDArray[np.float64],
    ok: NDArray[np.bool_],
    log_energy: NDArray[np.float64],
    offset: NDArray[np.float64],
    weights: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Log of one (energy, offset) plane with its unconstrained bins filled."""
    log_rate = np.full(rate.shape, np.nan)
    rows = np.flatnonzero(ok.any(axis=1))
    # Along offset, within each row that has constrained bins.
    for e in rows:
        good = ok[e]
        log_rate[e] = np.interp(offset, offset[good], np.log(rate[e, good]))
    # Along energy: rows between constrained rows, per offset, log-log.
    first, last = rows[0], rows[-1]
    inner = np.arange(first, last + 1)
    missing = np.setdiff1d(inner, rows)
    for t in range(rate.shape[1]):
        log_rate[missing, t] = np.interp(log_energy[missing], log_energy[rows], log_rate[rows, t])
    # Beyond the constrained rows: the nearest row's radial shape times a power law.
    mean_log = np.log(np.exp(log_rate[rows]) @ weights / weights.sum())
    for edge, neighbour, beyond, (low, high) in (
        (first, rows[1] if rows.size > 1 else None, np.arange(first), _LOW_SLOPE_RANGE),
        (
            last,
            rows[-2] if rows.size > 1 else None,
            np.arange(last + 1, rate.shape[0]),
            _HIGH_SLOPE_RANGE,
        ),
    ):
        if beyond.size == 0:
            continue
        if neighbour is None:
            slope = DEFAULT_CONTINUATION_INDEX
        else:
            i, j = np.searchsorted(rows, [edge, neighbour])
            slope = (mean_log[j] - mean_log[i]) / (log_energy[neighbour] - log_energy[edge])
        slope = float(np.clip(slope, low, high))
        log_rate[beyond] = log_rate[edge] + slope * (log_energy[beyond] - log_energy[edge])[:, None]
    return log_rate

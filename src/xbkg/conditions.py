"""Background models that depend continuously on the observing conditions of each run.

Grouping runs into zenith bands gives every run of a band the same rate,
although the cosmic-ray rate above the safe threshold changes smoothly and
strongly with the zenith angle, the optical (muon) efficiency and the
atmosphere. Instead, this model fits the dependence, per energy bin, as a
log-linear Poisson regression on the run cube:

``counts[r, E, t] ~ Poisson(exposure[r, E, t] x dOmega_t x dE x R[E, t] x F[r, E, t])``

``log F[r, E, t] = sum_k b[E, k] x[r, k] + sum_j c[E, j] x[r, j] s(t)``

- ``R[E, t]`` is the rate at the reference conditions (the training runs'
  mean condition values), one free value per bin, smoothed afterwards;
- ``x[r, k]`` are *standardised* condition variables of the run (zero mean,
  unit spread over the training runs): by default ``1/cos(zenith)`` and its
  square, ``log(MUONEFF)`` and the dead-time fraction ``1 - DEADC`` (a
  measure of the system's trigger rate, i.e. of how many air showers the
  atmosphere lets through);
- ``b[E, k]`` their effect on the normalisation of energy bin ``E``; ``c[E, j]``
  their effect on the radial shape, with ``s(t) = (offset / 2 deg)^2``.

For fixed coefficients the ``R[E, t]`` have a closed form (observed counts of
the bin over the exposure weighted with each run's condition factor), so the
likelihood is maximised over the few coefficients of each energy bin only
(Newton's method on the profile likelihood, with a weak Gaussian prior of
unit width on the standardised coefficients so that bins with few events fall
back to no dependence). Like any Poisson regression with a free value per
bin, the fit predicts exactly the observed counts of every bin summed over the
training runs.

Each run's rate is then ``R[E, t]`` (smoothed, :func:`xbkg.model.smooth`)
times its own condition factor, with condition values clipped to the range
seen in training so that the model never extrapolates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from xbkg.conventions import ENERGY_DIM, OBS_DIM, OFFSET_DIM, RATE_UNIT

__all__ = [
    "CONDITIONS",
    "DEFAULT_CONDITIONS",
    "DEFAULT_SHAPE_CONDITIONS",
    "condition_values",
    "conditions_builder",
    "fit_conditions",
    "run_rate",
]

COVARIATE_DIM = "condition"
SHAPE_DIM = "shape_condition"


def _secz(runs: xr.Dataset) -> NDArray[np.float64]:
    return 1.0 / np.cos(np.deg2rad(runs["zen_pnt"].values.astype(np.float64)))


#: Condition variables: name -> (run columns needed, function of the runs).
CONDITIONS: dict[str, tuple[tuple[str, ...], Callable[[xr.Dataset], NDArray[np.float64]]]] = {
    "secz": (("zen_pnt",), _secz),
    "secz2": (("zen_pnt",), lambda runs: _secz(runs) ** 2),
    "log_muoneff": (("muoneff",), lambda runs: np.log(runs["muoneff"].values.astype(float))),
    "deadtime": (("deadc",), lambda runs: 1.0 - runs["deadc"].values.astype(float)),
    "cos_az": (("az_pnt",), lambda runs: np.cos(np.deg2rad(runs["az_pnt"].values.astype(float)))),
    "sin_az": (("az_pnt",), lambda runs: np.sin(np.deg2rad(runs["az_pnt"].values.astype(float)))),
}
DEFAULT_CONDITIONS: tuple[str, ...] = ("secz", "secz2", "log_muoneff", "deadtime")
DEFAULT_SHAPE_CONDITIONS: tuple[str, ...] = ("secz",)
#: Radius (deg) that scales the radial shape term s(t) = (offset / radius)^2.
SHAPE_RADIUS = 2.0
#: Width of the Gaussian prior on the standardised coefficients.
PRIOR_WIDTH = 1.0
#: Weight of the squared second difference of the coefficients along energy.
DEFAULT_ENERGY_SMOOTHNESS = 10.0
_NEWTON_STEPS = 50


def condition_values(runs: xr.Dataset, names: Sequence[str]) -> xr.DataArray:
    """The condition variables of every run, along ``(obs_id, condition)``.

    Raises
    ------
    KeyError
        Naming the condition and the run column it needs, if missing or not finite.
    """
    columns = []
    for name in names:
        if name not in CONDITIONS:
            raise KeyError(f"unknown condition {name!r}; known: {sorted(CONDITIONS)}")
        needs, func = CONDITIONS[name]
        missing = [c for c in needs if c not in runs.variables]
        if missing:
            raise KeyError(f"condition {name!r} needs the run column(s) {missing}")
        values = np.asarray(func(runs), dtype=np.float64)
        if not np.all(np.isfinite(values)):
            bad = runs[OBS_DIM].values[~np.isfinite(values)].tolist()
            raise KeyError(f"condition {name!r}: runs {bad} have no finite {needs}")
        columns.append(values)
    data = np.stack(columns, axis=1) if columns else np.zeros((runs.sizes[OBS_DIM], 0))
    return xr.DataArray(
        data,
        dims=(OBS_DIM, COVARIATE_DIM),
        coords={OBS_DIM: runs[OBS_DIM].values, COVARIATE_DIM: list(names)},
    )


def _shape_profile(cube: xr.Dataset) -> NDArray[np.float64]:
    centre = 0.5 * (cube["offset_lo"].values + cube["offset_hi"].values)
    return (centre / SHAPE_RADIUS) ** 2


def _row_terms(
    counts: NDArray[np.float64],
    exposure: NDArray[np.float64],
    design: NDArray[np.float64],
    beta: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Gradient and Hessian of one energy bin's profile log-likelihood at ``beta``.

    ``counts``, ``exposure``: (run, offset); ``design``: (run, offset, p).
    Profiled over the free rate of each offset bin ``t``, the log-likelihood is
    ``sum n x.beta - sum_t N_t log(sum_r e exp(x.beta))``.
    """
    p = design.shape[-1]
    total = counts.sum(axis=0)
    used = (total > 0) & (exposure.sum(axis=0) > 0)
    if p == 0 or not used.any():
        return np.zeros(p), np.zeros((p, p))
    n, e, x, big_n = counts[:, used], exposure[:, used], design[:, used], total[used]
    eta = x @ beta
    eta -= eta.max(axis=0, keepdims=True)
    w = e * np.exp(eta)
    w /= w.sum(axis=0, keepdims=True)
    mean = np.einsum("rt,rtk->tk", w, x)
    grad = np.einsum("rt,rtk->k", n, x) - np.einsum("t,tk->k", big_n, mean)
    second = np.einsum("rt,rtk,rtl->tkl", w, x, x) - np.einsum("tk,tl->tkl", mean, mean)
    return grad, -np.einsum("t,tkl->kl", big_n, second)


def _fit_coefficients(
    counts: NDArray[np.float64],
    exposure: NDArray[np.float64],
    design: NDArray[np.float64],
    smoothness: float,
) -> NDArray[np.float64]:
    """Coefficients of all energy bins, maximising the penalised profile likelihood.

    ``counts``, ``exposure``: (run, energy, offset); ``design``: (run, offset, p).
    The penalty is a Gaussian prior of width :data:`PRIOR_WIDTH` on every
    coefficient plus ``smoothness`` x the squared second difference of each
    coefficient along the energy bins, so that coefficients vary smoothly with
    energy and bins with few events borrow from their neighbours. The objective
    is concave: Newton's method converges in a few steps.
    """
    n_e, p = counts.shape[1], design.shape[-1]
    if p == 0:
        return np.zeros((n_e, 0))
    second_diff = np.diff(np.eye(n_e), n=2, axis=0)
    penalty = smoothness * np.kron(second_diff.T @ second_diff, np.eye(p))
    penalty += np.eye(n_e * p) / PRIOR_WIDTH**2
    beta = np.zeros(n_e * p)
    for _ in range(_NEWTON_STEPS):
        grad = -penalty @ beta
        hess = -penalty.copy()
        for i in range(n_e):
            g, h = _row_terms(counts[:, i], exposure[:, i], design, beta[i * p : (i + 1) * p])
            grad[i * p : (i + 1) * p] += g
            hess[i * p : (i + 1) * p, i * p : (i + 1) * p] += h
        step = np.linalg.solve(hess, -grad)
        beta = beta + step
        if np.max(np.abs(step)) < 1e-8:
            break
    return beta.reshape(n_e, p)


def _design(
    cube: xr.Dataset,
    values: xr.DataArray,
    mean: NDArray[np.float64],
    scale: NDArray[np.float64],
    conditions: Sequence[str],
    shape_conditions: Sequence[str],
) -> NDArray[np.float64]:
    """Design array (run, offset, p): standardised conditions, then their shape terms."""
    z = (values.values - mean) / scale
    n_runs, n_t = values.shape[0], cube.sizes[OFFSET_DIM]
    norm_part = np.broadcast_to(z[:, None, :], (n_runs, n_t, z.shape[1]))
    idx = [list(conditions).index(c) for c in shape_conditions]
    shape_part = z[:, None, idx] * _shape_profile(cube)[None, :, None]
    return np.concatenate([norm_part, shape_part], axis=-1)


def fit_conditions(
    cube: xr.Dataset,
    *,
    conditions: Sequence[str] = DEFAULT_CONDITIONS,
    shape_conditions: Sequence[str] = DEFAULT_SHAPE_CONDITIONS,
    smoothing: str = "adaptive",
    solid_angle: str = "exact",
    energy_smoothness: float = DEFAULT_ENERGY_SMOOTHNESS,
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

    Returns
    -------
    xarray.Dataset
        Along ``(energy, offset)``: ``counts``, ``exposure_time`` (weighted with
        each run's condition factor: the exposure at reference conditions),
        ``rate`` (smoothed reference rate), ``rate_raw``, ``rate_error``;
        ``coefficient`` along ``(energy, condition)`` and
        ``shape_coefficient`` along ``(energy, shape_condition)``;
        ``condition_mean``, ``condition_scale``, ``condition_min``,
        ``condition_max`` along ``condition``; ``attrs`` with the time
        convention, smoothing and ``model = "conditions"``.
    """
    from xbkg.model import compute_rate, smooth

    unknown = [c for c in shape_conditions if c not in conditions]
    if unknown:
        raise ValueError(f"shape conditions {unknown} must also be in conditions {conditions}")
    values = condition_values(cube, conditions)
    mean = values.values.mean(axis=0)
    scale = values.values.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    design = _design(cube, values, mean, scale, conditions, shape_conditions)
    counts = cube["counts"].transpose(OBS_DIM, ENERGY_DIM, OFFSET_DIM).values.astype(np.float64)
    exposure = cube["exposure_time"].transpose(OBS_DIM, ENERGY_DIM, OFFSET_DIM).values
    beta = _fit_coefficients(counts, exposure, design, energy_smoothness)
    factor = np.exp(np.einsum("rtk,ek->ret", design, beta))
    weighted = (exposure * factor).sum(axis=0)
    # Range of the conditions of the runs that saw each energy bin: a run is never
    # given a factor extrapolated beyond what the fit of that bin saw.
    seen = exposure.sum(axis=2) > 0  # (run, energy)
    vals = values.values[:, None, :]
    low = np.where(seen[..., None], vals, np.inf).min(axis=0)
    high = np.where(seen[..., None], vals, -np.inf).max(axis=0)
    unseen = ~seen.any(axis=0)
    low[unseen], high[unseen] = values.values.min(axis=0), values.values.max(axis=0)

    coords = {
        k: v.variable for k, v in cube.coords.items() if set(v.dims) <= {ENERGY_DIM, OFFSET_DIM}
    }
    dims = (ENERGY_DIM, OFFSET_DIM)
    model = xr.Dataset(
        {
            "counts": (dims, counts.sum(axis=0).astype(np.int64), {"units": "1"}),
            "exposure_time": (
                dims,
                weighted,
                {"units": "s", "long_name": "exposure time at reference conditions"},
            ),
        },
        coords=coords,
    )
    model.attrs = {
        "time_convention": cube.attrs.get("time_convention", "ontime"),
        "solid_angle": solid_angle,
    }
    model = compute_rate(model, solid_angle=solid_angle)  # type: ignore[arg-type]
    raw = model["rate"]
    model = smooth(model, smoothing)  # type: ignore[arg-type]
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
    )
    model = model.assign_coords(
        {
            COVARIATE_DIM: list(conditions),
            SHAPE_DIM: list(shape_conditions),
            "condition_mean": (COVARIATE_DIM, mean),
            "condition_scale": (COVARIATE_DIM, scale),
            "condition_min": ((ENERGY_DIM, COVARIATE_DIM), low),
            "condition_max": ((ENERGY_DIM, COVARIATE_DIM), high),
        }
    )
    model.attrs.update({"model": "conditions", "n_runs": int(cube.sizes[OBS_DIM])})
    return model


def run_rate(model: xr.Dataset, runs: xr.Dataset) -> xr.DataArray:
    """Rate of every run for its own conditions, along ``(obs_id, energy, offset)``.

    Condition values outside the range of the training runs are clipped to it.
    Bins without a reference rate (never exposed in training) stay NaN.
    """
    conditions = [str(c) for c in model[COVARIATE_DIM].values]
    shape_conditions = [str(c) for c in model[SHAPE_DIM].values]
    values = condition_values(runs, conditions)
    beta = np.concatenate([model["coefficient"].values, model["shape_coefficient"].values], axis=1)
    low, high = model["condition_min"].values, model["condition_max"].values
    factor = np.empty((runs.sizes[OBS_DIM], model.sizes[ENERGY_DIM], model.sizes[OFFSET_DIM]))
    for i in range(model.sizes[ENERGY_DIM]):
        clipped = values.clip(low[i], high[i])
        design = _design(
            model,
            clipped,
            model["condition_mean"].values,
            model["condition_scale"].values,
            conditions,
            shape_conditions,
        )
        factor[:, i] = np.exp(design @ beta[i])
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
            "time_convention": model.attrs.get("time_convention", "ontime"),
        },
    )


def conditions_builder(
    conditions: Sequence[str] = DEFAULT_CONDITIONS,
    shape_conditions: Sequence[str] = DEFAULT_SHAPE_CONDITIONS,
    smoothing: str = "adaptive",
    energy_smoothness: float = DEFAULT_ENERGY_SMOOTHNESS,
) -> Callable[[xr.Dataset, xr.Dataset], xr.DataArray]:
    """Builder of condition-dependent models for :func:`xbkg.validation.crossval`."""

    def build(train: xr.Dataset, test: xr.Dataset) -> xr.DataArray:
        model = fit_conditions(
            train,
            conditions=conditions,
            shape_conditions=shape_conditions,
            smoothing=smoothing,
            energy_smoothness=energy_smoothness,
        )
        return run_rate(model, test)

    return build

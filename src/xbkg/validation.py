"""How well a background model predicts runs: per-run tables, summaries, cross-validation.

A model is judged by what it predicts for real runs. For every run of a run
cube (:func:`xbkg.cube.make_run_cube`) the observed counts are compared with
the predicted counts in the energy x offset bins the cube exposed: above the
run's safe energy threshold, outside the exclusion regions, up to an offset
limit. The cube already holds what makes this exact: its ``exposure_time`` is
the run time x the unexcluded fraction of each ring x the safe-energy mask,
and its ``counts`` are the events outside the exclusion regions. So for a
model given as a rate along ``(energy, offset)``

``predicted = (rate integrated over the bin) x exposure_time``

with the exposure converted to the model's time convention (ONTIME or
LIVETIME, run by run). How the rate is integrated over a bin is the
``prediction`` option:

- ``"consumer"`` (default): as Gammapy's 3D analysis integrates a ``bkg_2d``
  model (:mod:`xbkg.prediction`): the rate interpolated log-log between the
  bin centres, integrated log-log between the energy edges and over each
  ring's solid angle. A model that looks right bin by bin but misbehaves in
  the analysis (an exact zero next to a populated bin empties that bin)
  shows here as it will there;
- ``"step"``: rate x energy width x ring solid angle, the rate taken as
  constant inside each of its bins (the model's own bin integrals).

Field-of-view templates (``bkg_3d``, e.g. the per-run templates shipped in
H.E.S.S. DR1) are integrated over the unexcluded part of each ring on a fine
polar grid, constant inside each template pixel (:func:`template_counts`),
whatever the option.

The per-run table (:func:`validate`) is a Dataset along ``obs_id``:

- ``observed``, ``predicted``: counts summed over the validation bins;
- ``ratio``: observed / predicted (the run's normalisation);
- ``significance``: ``(observed - predicted) / sqrt(predicted)``;
- ``chi2``, ``dof``, ``chi2_dof``: Pearson chi2 of the *shape* after scaling
  the prediction to the run's observed total (``dof`` = bins - 1);
- ``ratio_energy``: observed / predicted per energy bin.

Its ``attrs`` hold the summary (:func:`summarize`): the overall
normalisation, the run-to-run scatter of obs/pred (standard deviation over
mean), the scatter expected from counting statistics alone, the mean shape
chi2/dof, and the mean and width of the per-bin residual significance
(Pearson residuals after per-run normalisation, pooled over runs and bins).
For a model equal to the truth the Pearson chi2 has expectation exactly
``dof`` (multinomial), the residuals have mean 0 and width 1, and the scatter
equals the Poisson scatter, whatever the counts per bin.

:func:`crossval` builds models on k-1 folds of runs and validates each on the
held-out fold, with a deterministic assignment of runs to folds. The models
are built by a :data:`ModelBuilder`: :func:`xbkg.pipeline.builder_for` gives
one that builds what ``xbkg make`` builds with given options. The figures of
these tables are drawn by :func:`xbkg.plotting.plot_validation`.

Examples
--------
>>> import os, xbkg
>>> from xbkg.io.datastore import read_run_templates
>>> from xbkg.validation import run_rates
>>> store = xbkg.open_datastore(os.path.join(os.environ["XBKG_DATA"], "hess-dl3-dr1"))
>>> runs = xbkg.select_runs(xbkg.run_table(store), ranges={"|GLAT_PNT|": (10, None)})
>>> regions = xbkg.read_catalog("gammacat")
>>> cube = xbkg.make_run_cube(store, runs, regions=regions)

The DR1 templates shipped with the runs, a grouped model, and the default
model by 5-fold cross-validation:

>>> templates = read_run_templates(store, cube["obs_id"].values)
>>> table = xbkg.validate(cube, xbkg.template_predictions(templates, cube, regions))
>>> bkg = xbkg.build_background(store, runs, regions=regions)
>>> rate = run_rates(bkg.smoothed, cube)
>>> grouped = xbkg.validate(cube, xbkg.predict_counts(rate, cube))
>>> from xbkg.pipeline import builder_for
>>> held_out = xbkg.crossval(cube, builder_for(xbkg.Options()), k=5)
>>> [round(t.attrs["scatter"], 2) for t in (table, grouped, held_out)]  # obs/pred scatter
[0.11, 0.35, 0.15]
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import ArrayLike, NDArray

from xbkg import exclusion
from xbkg.axes import edges, ring_solid_angle
from xbkg.conventions import (
    ENERGY_DIM,
    GROUP_DIM,
    MEV_PER_TEV,
    OBS_DIM,
    OFFSET_DIM,
)
from xbkg.prediction import PredictionMethod, consumer_counts, time_scale

__all__ = [
    "DEFAULT_OFFSET_MAX",
    "FOV_BINSZ",
    "FOV_ENERGY_EDGES",
    "FOV_MAP_WIDTH",
    "FOV_REBIN",
    "HELD_OUT_OBS_IDS",
    "ModelBuilder",
    "PredictionMethod",
    "crossval",
    "crossval_fov",
    "crossval_predictions",
    "energy_redistribution",
    "fit_fov_gradient",
    "fold_assignment",
    "fov_coordinates",
    "fov_run_maps",
    "fov_validation_maps",
    "held_out_validation",
    "predict_counts",
    "run_rates",
    "stored_fov_model",
    "summarize",
    "summarize_fov",
    "template_counts",
    "template_predictions",
    "time_scale",
    "validate",
    "validate_fov",
    "validation_mask",
]

#: Validation uses offsets up to this value (deg) by default.
DEFAULT_OFFSET_MAX = 2.0
#: Consecutive cube rings merged into one validation ring for the shape chi2 (see :func:`validate`).
DEFAULT_MERGE_RINGS = 9
#: Polar grid of :func:`template_counts`: equal-area sub-rings per ring and azimuth steps.
DEFAULT_RADIAL_STEPS = 4
DEFAULT_AZIMUTH_STEPS = 720
#: Time convention of templates that do not say (H.E.S.S. DR1 templates are per LIVETIME).
DEFAULT_TEMPLATE_TIME = "livetime"

#: ``builder(train_cube, test_cube) -> per-run rate`` along ``(obs_id, energy, offset)``
#: for the runs of ``test_cube``, with ``attrs["time_convention"]``.
ModelBuilder = Callable[[xr.Dataset, xr.Dataset], xr.DataArray]

# Relative tolerance when comparing an offset edge with the offset limit.
_EDGE_RTOL = 1e-9


# --------------------------------------------------------------------------- predictions


def energy_redistribution(
    source_edges: ArrayLike, target_edges: ArrayLike, spectrum: ArrayLike | None = None
) -> NDArray[np.float64]:
    """Fraction of each source energy bin's integral that falls in each target bin.

    Inside every source bin the rate is taken to follow a power law whose index
    is the local log-log slope of ``spectrum`` (the bin-averaged rates of the
    source bins, e.g. summed over the field of view); the bin's integral is
    conserved. Where a target bin is a union of source bins the result is
    exact whatever the slopes.

    Parameters
    ----------
    source_edges, target_edges
        Energy edges (TeV) of the model and of the run cube.
    spectrum
        Bin-averaged rate per source bin (any positive units); flat if None.

    Returns
    -------
    numpy.ndarray
        Shape ``(n_source, n_target)``. A target bin not fully covered by the
        source range gets NaN in every row (it cannot be predicted).
    """
    src = np.asarray(source_edges, dtype=np.float64)
    dst = np.asarray(target_edges, dtype=np.float64)
    n_src = src.size - 1
    slope = np.zeros(n_src)
    if spectrum is not None and n_src > 1:
        s = np.asarray(spectrum, dtype=np.float64)
        log_e = np.log(np.sqrt(src[:-1] * src[1:]))
        with np.errstate(divide="ignore", invalid="ignore"):
            log_s = np.where(s > 0, np.log(s), np.nan)
        grad = np.full(n_src, np.nan)
        ok = np.isfinite(log_s)
        if ok.sum() > 1:
            grad[ok] = np.gradient(log_s[ok], log_e[ok])
        slope = np.clip(np.nan_to_num(grad, nan=0.0), -10.0, 10.0)
    lo = np.maximum(src[:-1, None], dst[None, :-1])
    hi = np.minimum(src[1:, None], dst[None, 1:])
    overlap = hi > lo
    a, b = src[:-1, None], src[1:, None]
    g1 = slope[:, None] + 1.0

    def primitive(e: NDArray[np.float64]) -> NDArray[np.float64]:
        # Integral of (E / a)**slope from a to e, in units of a; log form at slope -1.
        x = e / a
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            power = np.where(np.abs(g1) > 1e-9, (x**g1 - 1.0) / np.where(g1 == 0, 1, g1), 0.0)
        return np.where(np.abs(g1) > 1e-9, power, np.log(x))

    total = primitive(np.broadcast_to(b, lo.shape))
    part = primitive(np.where(overlap, hi, a)) - primitive(np.where(overlap, lo, a))
    fraction = np.where(overlap, part / total, 0.0)
    covered = (dst[:-1] >= src[0] * (1 - 1e-7)) & (dst[1:] <= src[-1] * (1 + 1e-7))
    fraction[:, ~covered] = np.nan
    return fraction


def _same_edges(a: NDArray[np.float64], b: NDArray[np.float64]) -> bool:
    return a.shape == b.shape and np.allclose(a, b, rtol=1e-6, atol=0)


def predict_counts(
    rate: xr.DataArray,
    cube: xr.Dataset,
    *,
    time: str | None = None,
    prediction: PredictionMethod = "consumer",
) -> xr.DataArray:
    """Predicted counts of a model rate in every bin of the run cube.

    Parameters
    ----------
    rate
        Background rate in s-1 MeV-1 sr-1 along ``(energy, offset)`` (the
        same for every run) or ``(obs_id, energy, offset)`` (one per run of the
        cube), with energy and offset edges. NaN (no model) propagates to the
        prediction.
    cube
        Run cube with ``exposure_time``.
    time
        Time convention of the rate; default ``rate.attrs["time_convention"]``,
        else the cube's.
    prediction
        ``"consumer"``: integrated as Gammapy's 3D analysis integrates the
        model (:func:`xbkg.prediction.consumer_counts`); the model's bins may
        differ from the cube's in energy and offset. A NaN rate then also
        makes the neighbouring bins unpredicted, since the analysis
        interpolates between bins: a model that is NaN below every training
        run's threshold leaves the lowest exposed energy bin unpredicted
        (fill it first, e.g. with :func:`xbkg.model.fill_unconstrained`, to
        validate what would be written). ``"step"``: rate x energy
        width x ring solid angle; the offset edges must be the cube's, the
        energy edges may differ (the rate is then redistributed with
        :func:`energy_redistribution`, exact where bins nest).

    Returns
    -------
    xarray.DataArray
        Predicted counts along ``(obs_id, energy, offset)``; zero where the cube
        has no exposure (below the safe threshold, excluded rings). The method
        is in ``attrs["prediction"]``.
    """
    if prediction == "consumer":
        return consumer_counts(rate, cube, time=time)
    if prediction != "step":
        raise ValueError(f"prediction must be 'consumer' or 'step', got {prediction!r}")
    return _step_counts(rate, cube, time=time)


def _step_counts(rate: xr.DataArray, cube: xr.Dataset, *, time: str | None) -> xr.DataArray:
    """Rate x energy width x ring solid angle x exposure (:func:`predict_counts`, ``"step"``)."""
    convention = time or str(
        rate.attrs.get("time_convention", cube.attrs.get("time_convention", "ontime"))
    )
    offset_model, offset_cube = edges(rate, OFFSET_DIM), edges(cube, OFFSET_DIM)
    if not _same_edges(offset_model, offset_cube):
        raise ValueError(
            "the model and the run cube have different offset bins "
            f"({offset_model.size - 1} and {offset_cube.size - 1} rings); build the cube "
            "with the model's offset edges"
        )
    energy_model, energy_cube = edges(rate, ENERGY_DIM), edges(cube, ENERGY_DIM)
    omega = ring_solid_angle(cube)
    exposure = cube["exposure_time"] * time_scale(cube, convention)
    if _same_edges(energy_model, energy_cube):
        per_bin = (
            rate.drop_vars([c for c in rate.coords if c not in rate.dims]).assign_coords(
                {ENERGY_DIM: cube[ENERGY_DIM], OFFSET_DIM: cube[OFFSET_DIM]}
            )
            * (np.diff(energy_cube) * MEV_PER_TEV)[:, None]
        )
        # A rate with an obs_id dimension must cover the cube's runs.
        predicted = per_bin * omega * exposure
    else:
        width = xr.DataArray(np.diff(energy_model) * MEV_PER_TEV, dims=ENERGY_DIM)
        integral = (rate * width).fillna(0.0)
        spectrum = (rate * omega.values).sum(OFFSET_DIM)
        if OBS_DIM in spectrum.dims:
            spectrum = spectrum.mean(OBS_DIM)
        matrix = xr.DataArray(
            energy_redistribution(energy_model, energy_cube, spectrum.values),
            dims=("source_energy", ENERGY_DIM),
            coords={ENERGY_DIM: cube[ENERGY_DIM]},
        )
        unknown = rate.isnull().rename({ENERGY_DIM: "source_energy"})
        src = integral.rename({ENERGY_DIM: "source_energy"})
        src = src.drop_vars([c for c in src.coords if c != OBS_DIM])
        per_bin = xr.dot(src, matrix, dim="source_energy")
        # Any model bin without a rate that feeds a cube bin makes that bin unknown.
        feeds = xr.dot(
            unknown.astype(float), (matrix.fillna(1.0) > 0).astype(float), dim="source_energy"
        )
        per_bin = per_bin.where(feeds == 0).where(matrix.notnull().all("source_energy"))
        per_bin = per_bin.assign_coords({OFFSET_DIM: cube[OFFSET_DIM]})
        predicted = per_bin * omega * exposure
    predicted = predicted.where(cube["exposure_time"] > 0, 0.0)
    predicted = predicted.transpose(OBS_DIM, ENERGY_DIM, OFFSET_DIM)
    return (
        predicted.assign_coords(
            {k: v for k, v in cube.coords.items() if k in (ENERGY_DIM, OFFSET_DIM, OBS_DIM)}
        )
        .rename("predicted")
        .assign_attrs(units="1", long_name="predicted counts", prediction="step")
    )


def _group_coords(model: xr.Dataset) -> xr.Dataset:
    """The group definitions carried by a grouped model (``<col>_min``, ``_max``, ``_value``)."""
    keep = {
        name: var.variable
        for name, var in model.coords.items()
        if var.dims == (GROUP_DIM,) and str(name).endswith(("_min", "_max", "_value"))
    }
    # model[GROUP_DIM] would carry every coordinate along group (n_runs, ...): take values.
    groups = xr.Dataset(coords={GROUP_DIM: model[GROUP_DIM].values, **keep})
    groups.attrs["grouping"] = model.attrs.get("grouping", "")
    return groups


def run_rates(model: xr.Dataset, runs: xr.Dataset) -> xr.DataArray:
    """The rate each run gets from a grouped model: its group's, else the nearest populated one.

    Parameters
    ----------
    model
        Grouped model along ``(group, energy, offset)`` with ``rate`` and
        ``n_runs`` (:func:`xbkg.model.compute_rate`, :func:`xbkg.model.smooth`).
    runs
        Runs (run table or cube) holding the grouping columns.

    Returns
    -------
    xarray.DataArray
        Rate along ``(obs_id, energy, offset)``, with ``attrs["time_convention"]``.
    """
    from xbkg.grouping import assign_groups, nearest_group

    groups = _group_coords(model)
    own = assign_groups(runs, groups).values
    populated = model[GROUP_DIM].values[model["n_runs"].values > 0]
    if populated.size == 0:
        raise ValueError("the model has no populated group")
    used = own.copy()
    missing = ~np.isin(own, populated)
    if missing.any():
        used[missing] = nearest_group(runs, groups, populated.tolist()).values[missing]
    rate = model["rate"].sel({GROUP_DIM: xr.DataArray(used, dims=OBS_DIM)})
    rate = rate.drop_vars([c for c in rate.coords if GROUP_DIM in rate[c].dims or c == GROUP_DIM])
    rate = rate.assign_coords({OBS_DIM: runs[OBS_DIM].values}).transpose(OBS_DIM, ...)
    rate.attrs = dict(model["rate"].attrs)
    rate.attrs["time_convention"] = _model_time(model)
    return rate


def _model_time(model: xr.Dataset) -> str:
    if "time_convention" in model.attrs:
        return str(model.attrs["time_convention"])
    options = model.attrs.get("options")
    if options:
        return str(json.loads(options).get("time", "ontime"))
    return "ontime"


# --------------------------------------------------------------------------- bkg_3d templates


def _polar_grid(
    offset_edges: NDArray[np.float64], n_radial: int, n_azimuth: int
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.intp]]:
    """Nodes of equal-area cells covering the rings: offset (rad), azimuth (rad), area, ring."""
    t = np.deg2rad(offset_edges)
    u = 2.0 * np.sin(0.5 * t) ** 2  # 1 - cos t, the area coordinate: dOmega = du dphi
    frac = (np.arange(n_radial) + 0.5) / n_radial
    u_nodes = u[:-1, None] + np.diff(u)[:, None] * frac[None, :]
    r = 2.0 * np.arcsin(np.sqrt(0.5 * u_nodes))  # (ring, radial)
    phi = (np.arange(n_azimuth) + 0.5) * (2.0 * np.pi / n_azimuth)
    area = (np.diff(u)[:, None] / n_radial) * (2.0 * np.pi / n_azimuth)
    n_rings = t.size - 1
    r_all = np.repeat(r.reshape(-1), n_azimuth)
    phi_all = np.tile(phi, n_rings * n_radial)
    area_all = np.repeat(np.repeat(area[:, 0], n_radial), n_azimuth)
    ring = np.repeat(np.arange(n_rings), n_radial * n_azimuth)
    return r_all, phi_all, area_all, ring


def fov_coordinates(
    offset: ArrayLike, position_angle: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Field-of-view coordinates (DETX, DETY) in deg of a RADEC-aligned ``bkg_3d``.

    A sky position at great-circle distance ``offset`` from the pointing and
    position angle ``position_angle`` (deg, East of North) has, in the
    spherical frame centred on the pointing, latitude ``DETY`` (towards North)
    and longitude ``-DETX`` (GADF and Gammapy count DETX towards West).
    """
    r = np.deg2rad(np.asarray(offset, dtype=np.float64))
    phi = np.deg2rad(np.asarray(position_angle, dtype=np.float64))
    detx = -np.rad2deg(np.arctan2(np.sin(r) * np.sin(phi), np.cos(r)))
    dety = np.rad2deg(np.arcsin(np.clip(np.sin(r) * np.cos(phi), -1.0, 1.0)))
    return detx, dety


def template_counts(
    template: xr.DataArray,
    ra_pnt: float,
    dec_pnt: float,
    energy_edges: ArrayLike,
    offset_edges: ArrayLike,
    regions: xr.Dataset | None = None,
    *,
    excluded_fraction: ArrayLike | None = None,
    n_radial: int = DEFAULT_RADIAL_STEPS,
    n_azimuth: int = DEFAULT_AZIMUTH_STEPS,
) -> NDArray[np.float64]:
    """Counts per second of a ``bkg_3d`` template in energy x offset rings, outside exclusions.

    The template (a rate per field-of-view pixel, taken as constant inside
    each pixel) is integrated over each ring on a polar grid of equal-area
    cells (``n_radial`` sub-rings x ``n_azimuth`` azimuth steps per ring, so
    ring edges are exact). The integral over the cells whose centre lies in an
    exclusion circle is subtracted after rescaling it from their area to the
    exact excluded area of the ring (``excluded_fraction``, from
    :func:`xbkg.exclusion.ring_excluded_fraction`): areas are exact, and only
    the weighting of the template inside the ring comes from the grid. With the defaults (4 x
    720 cells per ring, 0.5 deg in azimuth) the integrals of H.E.S.S. DR1
    templates over the 99 default rings agree with a grid 8 x 8 times finer
    to 0.6 % (the template's 0.1 deg pixel edges cut the thin outer rings),
    and over the validation rings of :func:`validate` (9 rings merged) to
    0.04 %, between 0.25 and 20 TeV, with and without exclusion (tested).
    About 0.25 s per run.

    Field-of-view coordinates follow GADF and Gammapy for ``FOVALIGN = RADEC``:
    ``DETY`` towards North and ``DETX`` towards West (decreasing RA), as the
    spherical offsets of a frame centred on the pointing.

    Parameters
    ----------
    template
        Rate along ``(energy, fov_lon, fov_lat)`` in s-1 MeV-1 sr-1, as read by
        :func:`xbkg.io.gadf.read_bkg`, with ``attrs["FOVALIGN"] == "RADEC"``.
    ra_pnt, dec_pnt
        Pointing of the run, deg.
    energy_edges, offset_edges
        Bins to predict (TeV, deg); energy bins are filled with
        :func:`energy_redistribution` (exact where they nest in the template's).
    regions
        Exclusion circles, or None.
    excluded_fraction
        Exact excluded fraction of every ring; computed if None.
    n_radial, n_azimuth
        Grid steps per ring.

    Returns
    -------
    numpy.ndarray
        Shape ``(n_energy, n_offset)``: counts per second of the template's
        time. NaN for energy bins outside the template's range and for rings
        reaching outside its field of view.
    """
    align = str(template.attrs.get("FOVALIGN", "ALTAZ")).upper()
    if align != "RADEC":
        raise ValueError(
            f"bkg_3d template with FOVALIGN={align!r}: only RADEC-aligned templates can be "
            "integrated without the run's alt-az track"
        )
    rate = template.transpose(ENERGY_DIM, "fov_lon", "fov_lat")
    e_edges = np.asarray(energy_edges, dtype=np.float64)
    t_edges = np.asarray(offset_edges, dtype=np.float64)
    n_rings = t_edges.size - 1
    r, phi, area, ring = _polar_grid(t_edges, n_radial, n_azimuth)
    sin_r, cos_r = np.sin(r), np.cos(r)
    detx, dety = fov_coordinates(np.rad2deg(r), np.rad2deg(phi))

    keep = np.ones(r.size, dtype=bool)
    if regions is not None and regions.sizes.get("source", 0) > 0:
        near = exclusion.regions_in_fov(regions, ra_pnt, dec_pnt, float(t_edges[-1]))
        for k in range(near.sizes["source"]):
            ra_c, dec_c = float(near["ra"][k]), float(near["dec"][k])
            d = np.deg2rad(exclusion.separation(ra_pnt, dec_pnt, ra_c, dec_c))
            pa = np.deg2rad(exclusion.position_angle(ra_pnt, dec_pnt, ra_c, dec_c))
            cos_sep = cos_r * np.cos(d) + sin_r * np.sin(d) * np.cos(phi - pa)
            keep &= cos_sep < np.cos(np.deg2rad(float(near["radius"][k])))
        if excluded_fraction is None:
            excluded_fraction = exclusion.ring_excluded_fraction(t_edges, near, ra_pnt, dec_pnt)
    if excluded_fraction is None:
        excluded_fraction = np.zeros(n_rings)

    x_edges, y_edges = edges(rate, "fov_lon"), edges(rate, "fov_lat")
    ix = np.searchsorted(x_edges, detx, side="right") - 1
    iy = np.searchsorted(y_edges, dety, side="right") - 1
    inside = (ix >= 0) & (ix < x_edges.size - 1) & (iy >= 0) & (iy < y_edges.size - 1)
    values = np.nan_to_num(np.asarray(rate.values, dtype=np.float64), nan=0.0)
    sampled = np.zeros((values.shape[0], r.size))
    sampled[:, inside] = values[:, ix[inside], iy[inside]]

    # The grid covers each ring exactly; only the excluded part is approximated.
    # Its integral is rescaled from the grid's excluded area to the exact one, so a
    # circle's boundary cells carry the template's values there; a sliver the grid
    # missed entirely gets the ring's mean rate.
    excluded = ~keep
    whole_ring = np.zeros((values.shape[0], n_rings))
    cut = np.zeros((values.shape[0], n_rings))
    for i in range(values.shape[0]):
        whole_ring[i] = np.bincount(ring, weights=sampled[i] * area, minlength=n_rings)
        cut[i] = np.bincount(ring, weights=sampled[i] * area * excluded, minlength=n_rings)
    grid_cut_area = np.bincount(ring, weights=area * excluded, minlength=n_rings)
    omega = ring_solid_angle(offset=t_edges).values
    exact_cut_area = omega * np.asarray(excluded_fraction, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        cut_integral = np.where(
            grid_cut_area > 0,
            cut * (exact_cut_area / grid_cut_area),
            whole_ring * (exact_cut_area / omega),
        )
    scaled = np.clip(whole_ring - cut_integral, 0.0, None)
    covered = np.bincount(ring, weights=(~inside).astype(float), minlength=n_rings) == 0
    scaled[:, ~covered] = np.nan

    tpl_energy = edges(rate, ENERGY_DIM)
    width = np.diff(tpl_energy) * MEV_PER_TEV
    spectrum = np.nansum(scaled, axis=1)
    matrix = energy_redistribution(tpl_energy, e_edges, spectrum)
    return (
        np.einsum("it,ij->jt", scaled * width[:, None], np.nan_to_num(matrix, nan=0.0))
        + np.where(np.isnan(matrix).any(axis=0), np.nan, 0.0)[:, None]
    )


def template_predictions(
    templates: Sequence[xr.DataArray],
    cube: xr.Dataset,
    regions: xr.Dataset | None = None,
    *,
    time: str | None = None,
    n_radial: int = DEFAULT_RADIAL_STEPS,
    n_azimuth: int = DEFAULT_AZIMUTH_STEPS,
    prediction: PredictionMethod = "consumer",
) -> xr.DataArray:
    """Predicted counts of per-run templates in every bin of the run cube.

    Parameters
    ----------
    templates
        One template per run of the cube, in the cube's ``obs_id`` order:
        ``bkg_3d`` (integrated with :func:`template_counts`) or ``bkg_2d``
        (:func:`predict_counts` with ``prediction``).
    cube
        Run cube (its ``ra_pnt``, ``dec_pnt`` and ``excluded_fraction`` are used).
    regions
        The exclusion circles the cube was built with.
    time
        Time convention of the templates: default the ``BKGTIME`` header
        keyword, else ``"livetime"`` (H.E.S.S. DR1).
    n_radial, n_azimuth
        Polar grid of :func:`template_counts` (``bkg_3d``).
    prediction
        How ``bkg_2d`` templates are integrated (:func:`predict_counts`).
        ``bkg_3d`` templates are always integrated as constant inside each
        pixel (:func:`template_counts`), a step prediction.

    Returns
    -------
    xarray.DataArray
        Predicted counts along ``(obs_id, energy, offset)``; ``attrs["prediction"]``
        says how they were integrated (``"step"`` for ``bkg_3d`` templates,
        ``"mixed"`` if ``bkg_2d`` and ``bkg_3d`` ones were integrated differently).
    """
    if prediction not in ("consumer", "step"):
        raise ValueError(f"prediction must be 'consumer' or 'step', got {prediction!r}")
    if len(templates) != cube.sizes[OBS_DIM]:
        raise ValueError(f"need one template per run: {len(templates)} for {cube.sizes[OBS_DIM]}")
    e_edges, t_edges = edges(cube, ENERGY_DIM), edges(cube, OFFSET_DIM)
    out = []
    used = set()
    for i, template in enumerate(templates):
        run = cube.isel({OBS_DIM: [i]})
        convention = (time or str(template.attrs.get("BKGTIME", DEFAULT_TEMPLATE_TIME))).lower()
        if "fov_lon" in template.dims:
            per_second = template_counts(
                template,
                float(run["ra_pnt"][0]),
                float(run["dec_pnt"][0]),
                e_edges,
                t_edges,
                regions,
                excluded_fraction=run["excluded_fraction"].values[0],
                n_radial=n_radial,
                n_azimuth=n_azimuth,
            )
            duration = float(run[convention][0])
            pred = xr.DataArray(
                per_second[None] * duration,
                dims=(OBS_DIM, ENERGY_DIM, OFFSET_DIM),
                coords={OBS_DIM: run[OBS_DIM].values},
            ).where(run["exposure_time"].values > 0, 0.0)
            used.add("step")
        else:
            pred = predict_counts(template, run, time=convention, prediction=prediction)
            used.add(prediction)
        out.append(pred.drop_vars([c for c in pred.coords if c != OBS_DIM]))
    predicted = xr.concat(out, dim=OBS_DIM).assign_coords(
        {k: v for k, v in cube.coords.items() if set(v.dims) <= {ENERGY_DIM, OFFSET_DIM}}
    )
    method = used.pop() if len(used) == 1 else "mixed"
    return predicted.rename("predicted").assign_attrs(
        units="1", long_name="predicted counts", prediction=method
    )


# --------------------------------------------------------------------------- validation


def validation_mask(cube: xr.Dataset, offset_max: float = DEFAULT_OFFSET_MAX) -> xr.DataArray:
    """Bins that take part: exposed (safe energy, not fully excluded) and within ``offset_max``."""
    within = cube["offset_hi"] <= offset_max * (1 + _EDGE_RTOL)
    return (cube["exposure_time"] > 0) & within


def _merge_rings(values: xr.DataArray, cube: xr.Dataset, merge: int) -> xr.DataArray:
    """Sum groups of ``merge`` consecutive offset rings (from the centre) into validation rings."""
    n = cube.sizes[OFFSET_DIM]
    ring = np.arange(n) // merge
    outer = cube["offset_hi"].values
    hi = np.array([outer[ring == k].max() for k in range(ring.max() + 1)])
    lo = np.array([cube["offset_lo"].values[ring == k].min() for k in range(ring.max() + 1)])
    label = xr.DataArray(ring, dims=OFFSET_DIM, name="ring")
    out = values.groupby(label).sum()
    return out.rename({"ring": OFFSET_DIM}).assign_coords(
        {
            OFFSET_DIM: 0.5 * (lo + hi),
            "offset_lo": (OFFSET_DIM, lo, {"units": "deg"}),
            "offset_hi": (OFFSET_DIM, hi, {"units": "deg"}),
        }
    )


def _total_columns(observed: xr.DataArray, predicted: xr.DataArray) -> dict[str, xr.DataArray]:
    """The per-run columns of every validation table: totals, their ratio and significance."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "observed": observed.assign_attrs(units="1", long_name="observed counts"),
            "predicted": predicted.assign_attrs(units="1", long_name="predicted counts"),
            "ratio": (observed / predicted).assign_attrs(
                units="1", long_name="observed / predicted"
            ),
            "significance": ((observed - predicted) / np.sqrt(predicted)).assign_attrs(
                units="1", long_name="(observed - predicted) / sqrt(predicted)"
            ),
        }


def validate(
    cube: xr.Dataset,
    predicted: xr.DataArray,
    *,
    offset_max: float = DEFAULT_OFFSET_MAX,
    merge_rings: int = DEFAULT_MERGE_RINGS,
    prediction: str | None = None,
) -> xr.Dataset:
    """Per-run comparison of observed and predicted counts, with the summary in ``attrs``.

    Parameters
    ----------
    cube
        Run cube (observed ``counts``, ``exposure_time``).
    predicted
        Predicted counts along ``(obs_id, energy, offset)`` for the cube's runs
        (:func:`predict_counts`, :func:`template_predictions`). Bins where it is
        NaN (the model has no rate there) are left out and counted in
        ``n_unpredicted``.
    offset_max
        Largest offset (deg) of the bins used: a validation ring takes part if
        its outer edge is at most ``offset_max``.
    merge_rings
        The shape chi2 and residuals are computed in validation rings of this
        many consecutive cube rings. The default 9 turns the 99 equal-area
        rings of the default binning into equal-area rings about 0.15-0.75 deg
        wide (7 within 2 deg): wide enough that a bin holds tens to hundreds of
        events at the energies that matter (a Pearson chi2 over bins of a
        fraction of an event is dominated by noise and hides shape errors),
        and fine enough to see the radial profile. Counts and predictions are
        summed over the exposed part of each validation ring only.
    prediction
        How ``predicted`` was computed (``"consumer"``, ``"step"``), recorded
        in the summary; default ``predicted.attrs["prediction"]`` (set by
        :func:`predict_counts`, :func:`template_predictions`,
        :func:`crossval_predictions`), else ``"unknown"``. The counts are
        given, so this only labels them; it must agree with the attribute.

    Returns
    -------
    xarray.Dataset
        Along ``obs_id``: ``observed``, ``predicted``, ``ratio``,
        ``significance``, ``chi2``, ``dof``, ``chi2_dof``,
        ``counts_zero_prediction`` (events in bins the model predicts none),
        ``n_unpredicted``; along ``(obs_id, energy)``: ``observed_energy``,
        ``predicted_energy``, ``ratio_energy``; along ``(obs_id, energy,
        offset)`` (validation rings): ``residual`` (Pearson residual after
        per-run normalisation, NaN where unused); the run coordinates of the
        cube; the summary of :func:`summarize` in ``attrs``, with
        ``prediction``, ``offset_max`` and ``merge_rings``.
    """
    if merge_rings < 1:
        raise ValueError(f"merge_rings must be >= 1, got {merge_rings}")
    labelled = predicted.attrs.get("prediction")
    if prediction is not None and labelled is not None and prediction != labelled:
        raise ValueError(
            f"prediction={prediction!r}, but the predicted counts were computed with "
            f"{labelled!r} (attrs['prediction'])"
        )
    method = str(prediction or labelled or "unknown")
    predicted = predicted.transpose(OBS_DIM, ENERGY_DIM, OFFSET_DIM)
    pred = predicted.reindex({OBS_DIM: cube[OBS_DIM].values})
    mask = validation_mask(cube, offset_max)
    known = pred.notnull()
    use = mask & known
    counts = _merge_rings(cube["counts"].where(use, 0).astype(np.float64), cube, merge_rings)
    mu = _merge_rings(pred.where(use, 0.0), cube, merge_rings)
    inside = counts["offset_hi"] <= offset_max * (1 + _EDGE_RTOL)
    counts, mu = counts.where(inside, 0.0), mu.where(inside, 0.0)
    exposed = _merge_rings(use.astype(np.int64), cube, merge_rings).where(inside, 0) > 0
    unpredicted = (mask & ~known).sum((ENERGY_DIM, OFFSET_DIM))
    obs = counts.sum((ENERGY_DIM, OFFSET_DIM))
    tot = mu.sum((ENERGY_DIM, OFFSET_DIM))
    ratio = obs / tot
    norm_mu = mu * ratio
    positive = exposed & (norm_mu > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        pearson = ((counts - norm_mu) / np.sqrt(norm_mu)).where(positive)
    chi2 = (pearson**2).sum((ENERGY_DIM, OFFSET_DIM))
    dof = positive.sum((ENERGY_DIM, OFFSET_DIM)) - 1
    obs_e = counts.sum(OFFSET_DIM)
    pred_e = mu.sum(OFFSET_DIM)
    table = xr.Dataset(
        {
            **_total_columns(obs, tot),
            "chi2": chi2.assign_attrs(
                units="1", long_name="shape Pearson chi2 after normalisation"
            ),
            "dof": dof.assign_attrs(units="1", long_name="degrees of freedom (bins - 1)"),
            "chi2_dof": (chi2 / dof).assign_attrs(units="1", long_name="shape chi2 / dof"),
            "counts_zero_prediction": counts.where(exposed & (mu <= 0), 0)
            .sum((ENERGY_DIM, OFFSET_DIM))
            .assign_attrs(units="1", long_name="events in bins with zero prediction"),
            "n_unpredicted": unpredicted.assign_attrs(
                units="1", long_name="cube bins the model has no rate for"
            ),
            "observed_energy": obs_e.assign_attrs(units="1", long_name="observed counts"),
            "predicted_energy": pred_e.assign_attrs(units="1", long_name="predicted counts"),
            "ratio_energy": (obs_e / pred_e.where(pred_e > 0)).assign_attrs(
                units="1", long_name="observed / predicted per energy bin"
            ),
            "residual": pearson.assign_attrs(
                units="1", long_name="Pearson residual after per-run normalisation"
            ),
        }
    )
    run_coords = {k: v.variable for k, v in cube.coords.items() if v.dims == (OBS_DIM,)}
    energy_coords = {k: v.variable for k, v in cube.coords.items() if v.dims == (ENERGY_DIM,)}
    table = table.assign_coords({**run_coords, **energy_coords})
    summary: dict[str, Any] = dict(summarize(table, pearson.values[positive.values]))
    summary.update(offset_max=float(offset_max), merge_rings=int(merge_rings), prediction=method)
    table.attrs = summary
    return table


def summarize(table: xr.Dataset, residuals: ArrayLike | None = None) -> dict[str, float]:
    """Summary metrics of a per-run validation table.

    Parameters
    ----------
    table
        Output of :func:`validate`.
    residuals
        Per-bin Pearson residuals after per-run normalisation (pooled); if
        None, the table's own ``attrs`` values are kept.

    Returns
    -------
    dict
        ``n_runs``; ``normalisation`` (total observed / total predicted);
        ``scatter`` (sample standard deviation of obs/pred over runs divided by
        its mean); ``poisson_scatter`` (the scatter counting statistics alone
        would give, ``sqrt(mean(1 / predicted))``); ``chi2_dof`` (mean per-run
        shape chi2/dof); ``significance_mean``, ``significance_width`` (of the
        pooled per-bin residuals); ``run_significance_mean``,
        ``run_significance_width`` (of the per-run total significance).
    """
    ratio = table["ratio"].values
    ok = np.isfinite(ratio)
    pred = table["predicted"].values[ok]
    out = {
        "n_runs": int(ok.sum()),
        "normalisation": float(table["observed"].values[ok].sum() / pred.sum()),
        "scatter": float(np.std(ratio[ok], ddof=1) / np.mean(ratio[ok]))
        if ok.sum() > 1
        else np.nan,
        "poisson_scatter": float(np.sqrt(np.mean(1.0 / pred))),
        "chi2_dof": float(np.nanmean(table["chi2_dof"].values[ok])),
        "run_significance_mean": float(np.mean(table["significance"].values[ok])),
        "run_significance_width": float(np.std(table["significance"].values[ok])),
    }
    if residuals is not None:
        res = np.asarray(residuals, dtype=np.float64)
        out["significance_mean"] = float(np.mean(res)) if res.size else np.nan
        out["significance_width"] = float(np.std(res)) if res.size else np.nan
    else:
        out["significance_mean"] = float(table.attrs.get("significance_mean", np.nan))
        out["significance_width"] = float(table.attrs.get("significance_width", np.nan))
    return out


# --------------------------------------------------------------------------- cross-validation


def fold_assignment(obs_ids: ArrayLike, k: int = 5, seed: int = 0) -> xr.DataArray:
    """Deterministic assignment of runs to ``k`` folds.

    The runs are sorted by ``obs_id``, shuffled with a generator seeded by
    ``seed``, and dealt out in turn, so folds differ in size by at most one and
    the assignment does not depend on the order the runs come in.
    """
    ids = np.asarray(obs_ids, dtype=np.int64)
    if not 2 <= k <= ids.size:
        raise ValueError(f"need 2 <= k <= number of runs ({ids.size}), got k={k}")
    order = np.sort(ids)
    shuffled = order[np.random.default_rng(seed).permutation(order.size)]
    fold_of = dict(zip(shuffled.tolist(), (np.arange(order.size) % k).tolist(), strict=True))
    return xr.DataArray(
        np.array([fold_of[int(i)] for i in ids], dtype=np.int64),
        dims=OBS_DIM,
        coords={OBS_DIM: ids},
        name="fold",
        attrs={"long_name": f"cross-validation fold (k={k}, seed={seed})"},
    )


def _split_runs(cube: xr.Dataset, test: NDArray[np.bool_]) -> tuple[xr.Dataset, xr.Dataset]:
    """The runs of ``cube`` to build a model from (``test`` false) and those to predict."""
    return cube.isel({OBS_DIM: np.flatnonzero(~test)}), cube.isel({OBS_DIM: np.flatnonzero(test)})


def crossval_predictions(
    cube: xr.Dataset,
    builder: ModelBuilder,
    *,
    k: int = 5,
    seed: int = 0,
    prediction: PredictionMethod = "consumer",
) -> xr.DataArray:
    """Held-out predicted counts of every run: each from a model built on the other folds.

    Parameters
    ----------
    cube
        Run cube of all runs.
    builder
        ``builder(train_cube, test_cube)`` returns the rate of each test run
        (e.g. :func:`xbkg.pipeline.builder_for`).
    k
        Number of folds (:func:`fold_assignment`).
    seed
        Seed of the shuffle that assigns runs to folds (:func:`fold_assignment`).
    prediction
        How the rates are integrated over the cube's bins (:func:`predict_counts`).

    Returns
    -------
    xarray.DataArray
        Predicted counts along ``(obs_id, energy, offset)`` in the cube's run
        order, with the ``fold`` of every run as a coordinate and ``k``,
        ``seed``, ``prediction`` in ``attrs``.
    """
    folds = fold_assignment(cube[OBS_DIM].values, k, seed)
    predictions = []
    for f in range(k):
        train_cube, test_cube = _split_runs(cube, folds.values == f)
        rate = builder(train_cube, test_cube)
        predictions.append(predict_counts(rate, test_cube, prediction=prediction))
    predicted = xr.concat(predictions, dim=OBS_DIM).reindex({OBS_DIM: cube[OBS_DIM].values})
    return predicted.assign_coords(fold=folds).assign_attrs(k=k, seed=seed, prediction=prediction)


def crossval(
    cube: xr.Dataset,
    builder: ModelBuilder,
    *,
    k: int = 5,
    seed: int = 0,
    offset_max: float = DEFAULT_OFFSET_MAX,
    prediction: PredictionMethod = "consumer",
) -> xr.Dataset:
    """k-fold cross-validation by run: build on k-1 folds, validate on the held-out one.

    Parameters
    ----------
    cube
        Run cube of all runs.
    builder
        ``builder(train_cube, test_cube)`` returns the rate of each test run
        (e.g. :func:`xbkg.pipeline.builder_for`).
    k
        Number of folds (:func:`fold_assignment`).
    seed
        Seed of the shuffle that assigns runs to folds (:func:`fold_assignment`).
    offset_max
        As for :func:`validate`.
    prediction
        How the rates are integrated over the cube's bins (:func:`predict_counts`).

    Returns
    -------
    xarray.Dataset
        The :func:`validate` table of the held-out predictions of all runs
        (:func:`crossval_predictions`), with a ``fold`` coordinate and
        ``k``/``seed``/``prediction`` in ``attrs``.
    """
    predicted = crossval_predictions(cube, builder, k=k, seed=seed, prediction=prediction)
    table = validate(cube, predicted, offset_max=offset_max)
    table = table.assign_coords(fold=predicted["fold"])
    table.attrs.update({"k": k, "seed": seed})
    return table


# --------------------------------------------------------------------------- held-out runs

#: H.E.S.S. DR1 runs kept out of all tuning: every 5th of the 61 off-plane runs
#: (``|GLAT_PNT| > 10`` deg, as in ``benchmarks/crossval_dr1.py``) sorted by OBS_ID,
#: starting with the 5th. Defaults and options are chosen by cross-validation on
#: the other runs; these score a model trained on all the others
#: (:func:`held_out_validation`), once the choices are made. Never tune on them.
HELD_OUT_OBS_IDS: tuple[int, ...] = (
    20915, 21851, 23143, 23736, 26791, 28967, 29177, 29683, 33791, 33796, 33801, 47828,
)  # fmt: skip


def held_out_validation(
    cube: xr.Dataset,
    builder: ModelBuilder,
    held_out: Sequence[int] = HELD_OUT_OBS_IDS,
    *,
    offset_max: float = DEFAULT_OFFSET_MAX,
    prediction: PredictionMethod = "consumer",
) -> xr.Dataset:
    """The :func:`validate` table of the ``held_out`` runs, predicted by a model of all others.

    ``builder(train_cube, test_cube)`` is given the cube's other runs to build
    from and the held-out runs of the cube to predict (as for :func:`crossval`).
    ``attrs["n_train"]`` is the number of runs the model was built from.
    """
    test = np.isin(cube[OBS_DIM].values, np.asarray(held_out, dtype=np.int64))
    if test.all() or not test.any():
        raise ValueError(
            f"the cube's {test.size} runs include {int(test.sum())} of the held-out runs: "
            "need some of them and some others to build from"
        )
    train_cube, test_cube = _split_runs(cube, test)
    predicted = predict_counts(builder(train_cube, test_cube), test_cube, prediction=prediction)
    table = validate(test_cube, predicted, offset_max=offset_max)
    table.attrs["n_train"] = int(train_cube.sizes[OBS_DIM])
    return table


# --------------------------------------------------------------------------- field-of-view maps
#
# bkg_3d models are validated on sky maps, the way a 3D analysis uses them: each run's
# prediction is computed as Gammapy 2.1's MapDatasetMaker computes it
# (:func:`xbkg.prediction.fov_consumer_counts`) on a map of FOV_BINSZ pixels centred on
# the pointing, and the observed events are binned on the same map. Pixels whose centre
# lies inside an exclusion region, or further than ``offset_max`` from the pointing, are
# left out of both; energy bins not entirely above the run's safe threshold too. The fine
# pixels are then summed into coarser ones (FOV_REBIN x FOV_REBIN) for the metrics.

#: Pixel size (deg) of the maps the prediction is computed on.
FOV_BINSZ = 0.1
#: Fine pixels per side summed into one pixel of the metrics (0.2 deg pixels).
FOV_REBIN = 2
#: Width (deg) of each run's map, centred on the pointing (covers 2 deg from it).
FOV_MAP_WIDTH = 4.0
_SKY_DIMS = ("sky_lat", "sky_lon")
# Newton iterations of the gradient fit (it converges in a few).
_FIT_ITERATIONS = 50


def fov_run_maps(
    events: Any,
    track: Any,
    rate: xr.DataArray,
    alignment: str,
    energy_edges: ArrayLike,
    *,
    tstart: float,
    ontime: float,
    safe_energy_lo: float = np.nan,
    regions: xr.Dataset | None = None,
    offset_max: float = DEFAULT_OFFSET_MAX,
    width: float = FOV_MAP_WIDTH,
    binsz: float = FOV_BINSZ,
    rebin: int = FOV_REBIN,
    fov_rotation_step: float = 1.0,
) -> xr.Dataset:
    """Observed and predicted counts of one run on a sky map around its pointing.

    Parameters
    ----------
    events
        The run's events (:class:`xbkg.io.datastore.EventList` or anything with
        ``ra``, ``dec`` (deg) and ``energy`` (TeV) arrays).
    track
        The run's :class:`xbkg.fov.PointingTrack`; the map is centred on its
        ``ra_pnt``, ``dec_pnt``.
    rate
        The run's ``bkg_3d`` model as stored in its file (``read_bkg(...,
        reverse_lon=False)``), along ``(energy, fov_lon, fov_lat)``.
    alignment
        How Gammapy orients it for this run
        (:func:`xbkg.prediction.consumer_alignment`).
    energy_edges
        Energy bins of the map, TeV.
    tstart, ontime
        Start (s, in the track's time reference) and duration (s) of the run,
        as Gammapy takes them (first good time interval start, sum of the good
        time intervals).
    safe_energy_lo
        The run's safe threshold (TeV): energy bins not entirely above it are
        left out. NaN: none.
    regions
        Exclusion circles: fine pixels whose centre lies inside one are left
        out of both the observed and the predicted counts.
    offset_max
        Fine pixels whose centre lies further from the pointing (deg) are left out.
    width, binsz
        Map width and fine pixel size, deg (the prediction's map).
    rebin
        Fine pixels per side summed into one pixel of the result.
    fov_rotation_step
        ``MapDatasetMaker(fov_rotation_step=...)``, deg.

    Returns
    -------
    xarray.Dataset
        Along ``(energy, sky_lat, sky_lon)``: ``observed``, ``predicted``
        (summed over the used fine pixels), ``used`` (some fine pixel used and
        the energy bin above threshold); along ``(sky_lat, sky_lon)``:
        ``altaz_lon``, ``altaz_lat``, the predicted-counts weighted mean ALTAZ
        field-of-view position of the used fine pixels during the run.
    """
    from xbkg.exclusion import outside_regions, separation
    from xbkg.prediction import fov_consumer_counts, sky_grid, sky_pixel_index

    if rebin < 1:
        raise ValueError(f"rebin must be >= 1, got {rebin}")
    e_edges = np.asarray(energy_edges, dtype=np.float64)
    ra_pnt, dec_pnt = float(track.ra_pnt), float(track.dec_pnt)
    ra, dec, omega = sky_grid(ra_pnt, dec_pnt, width, binsz)
    npix = ra.shape[0]
    if npix % rebin:
        raise ValueError(f"the map's {npix} pixels a side are not a multiple of rebin={rebin}")
    keep = separation(ra, dec, ra_pnt, dec_pnt) <= offset_max
    if regions is not None and regions.sizes.get("source", 0) > 0:
        keep &= outside_regions(ra, dec, regions)
    energy_ok = np.ones(e_edges.size - 1, dtype=bool)
    if np.isfinite(safe_energy_lo):
        energy_ok = e_edges[:-1] >= safe_energy_lo * (1 - 1e-6)

    pred = fov_consumer_counts(
        rate,
        _alignment(alignment),
        track,
        ra,
        dec,
        omega,
        e_edges,
        tstart,
        ontime,
        fov_rotation_step=fov_rotation_step,
    )
    iy, ix = sky_pixel_index(ra_pnt, dec_pnt, width, binsz, events.ra, events.dec)
    ie = np.searchsorted(e_edges, np.asarray(events.energy, dtype=np.float64), side="right") - 1
    inside = (iy >= 0) & (ie >= 0) & (ie < e_edges.size - 1)
    observed = np.zeros((e_edges.size - 1, npix, npix))
    np.add.at(observed, (ie[inside], iy[inside], ix[inside]), 1.0)

    use = energy_ok[:, None, None] & keep[None]
    counts = np.where(use, observed, 0.0)
    predicted = np.where(use, pred.counts, 0.0)
    weight = np.where(keep, np.nan_to_num(pred.counts[energy_ok]).sum(axis=0), 0.0)

    def coarse(values: NDArray[Any]) -> NDArray[Any]:
        shape = (*values.shape[:-2], npix // rebin, rebin, npix // rebin, rebin)
        return values.reshape(shape).sum(axis=(-3, -1))

    total = coarse(weight)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_lon = coarse(weight * np.nan_to_num(pred.altaz_lon)) / total
        mean_lat = coarse(weight * np.nan_to_num(pred.altaz_lat)) / total
    used = coarse(use.astype(np.int64)) > 0
    dims3 = (ENERGY_DIM, *_SKY_DIMS)
    energy = _energy_coords(e_edges)
    return xr.Dataset(
        {
            "observed": (dims3, coarse(counts), {"units": "1", "long_name": "observed counts"}),
            "predicted": (
                dims3,
                coarse(predicted),
                {"units": "1", "long_name": "predicted counts (Gammapy's MapDatasetMaker)"},
            ),
            "used": (dims3, used, {"long_name": "pixel and energy bin take part"}),
            "altaz_lon": (
                _SKY_DIMS,
                np.where(total > 0, mean_lon, np.nan),
                {"units": "deg", "long_name": "mean ALTAZ fov_lon of the pixel during the run"},
            ),
            "altaz_lat": (
                _SKY_DIMS,
                np.where(total > 0, mean_lat, np.nan),
                {"units": "deg", "long_name": "mean ALTAZ fov_lat of the pixel during the run"},
            ),
        },
        coords=energy,
        attrs={"alignment": pred.alignment, "n_times": int(pred.times.size)},
    )


def _alignment(alignment: str) -> Any:
    """``alignment`` checked as one of Gammapy's three orientations of a ``bkg_3d``."""
    name = str(alignment).strip().upper()
    if name not in ("ALTAZ", "RADEC", "REVERSE_LON_RADEC"):
        raise ValueError(
            f"alignment must be 'ALTAZ', 'RADEC' or 'REVERSE_LON_RADEC', got {alignment!r}"
        )
    return name


def _energy_coords(energy_edges: NDArray[np.float64]) -> dict[str, Any]:
    """Energy coordinates (centre, ``energy_lo``, ``energy_hi``) of bins with these edges."""
    from xbkg.axes import binned_coords

    return {k: v for k, v in binned_coords(energy=energy_edges).items() if k.startswith(ENERGY_DIM)}


def fit_fov_gradient(
    observed: ArrayLike, predicted: ArrayLike, fov_lon: ArrayLike, fov_lat: ArrayLike
) -> dict[str, float]:
    """Poisson fit of ``observed / predicted = a (1 + g_lon fov_lon + g_lat fov_lat)``.

    Maximum likelihood for Poisson counts with mean
    ``predicted x a (1 + g_lon x + g_lat y)``, over the pixels given
    (pixels with ``predicted > 0``), with errors from the Fisher
    information at the fit. The model is linear in ``(a, a g_lon, a g_lat)``,
    where the log-likelihood is concave: Newton's method with step halving
    (keeping every mean positive) finds the maximum.

    Returns
    -------
    dict
        ``norm``, ``gradient_lon``, ``gradient_lat`` (per deg), their standard
        errors ``gradient_lon_err``, ``gradient_lat_err``; NaN if the fit has
        too few pixels or counts.
    """
    n = np.asarray(observed, dtype=np.float64).ravel()
    p = np.asarray(predicted, dtype=np.float64).ravel()
    x = np.asarray(fov_lon, dtype=np.float64).ravel()
    y = np.asarray(fov_lat, dtype=np.float64).ravel()
    ok = (p > 0) & np.isfinite(x) & np.isfinite(y) & np.isfinite(n)
    n, p, x, y = n[ok], p[ok], x[ok], y[ok]
    nan = {
        k: np.nan
        for k in ("norm", "gradient_lon", "gradient_lat", "gradient_lon_err", "gradient_lat_err")
    }
    if n.size < 4 or n.sum() <= 0:
        return nan
    design = p[:, None] * np.column_stack([np.ones_like(x), x, y])  # mean = design @ theta
    theta = np.array([n.sum() / p.sum(), 0.0, 0.0])

    def loglike(t: NDArray[np.float64]) -> float:
        mu = design @ t
        if np.any(mu <= 0):
            return -np.inf
        return float(np.sum(n * np.log(mu) - mu))

    current = loglike(theta)
    for _ in range(_FIT_ITERATIONS):
        mu = design @ theta
        grad = design.T @ (n / mu - 1.0)
        hess = (design * (n / mu**2)[:, None]).T @ design
        try:
            step = np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            return nan
        scale = 1.0
        while scale > 1e-6 and loglike(theta + scale * step) < current:
            scale *= 0.5
        theta = theta + scale * step
        new = loglike(theta)
        converged = abs(new - current) < 1e-10 * max(1.0, abs(new))
        current = new
        if converged:
            break
    mu = design @ theta
    fisher = (design / mu[:, None]).T @ design
    try:
        cov = np.linalg.inv(fisher)
    except np.linalg.LinAlgError:
        return nan
    a = theta[0]
    g = theta[1:] / a
    # Delta method for g_k = theta_k / theta_0.
    errors = []
    for k in (1, 2):
        jac = np.zeros(3)
        jac[0], jac[k] = -theta[k] / a**2, 1.0 / a
        errors.append(float(np.sqrt(jac @ cov @ jac)))
    return {
        "norm": float(a),
        "gradient_lon": float(g[0]),
        "gradient_lat": float(g[1]),
        "gradient_lon_err": errors[0],
        "gradient_lat_err": errors[1],
    }


def _deviance(n: NDArray[np.float64], mu: NDArray[np.float64]) -> NDArray[np.float64]:
    """Poisson deviance of each bin: ``2 (n log(n / mu) - (n - mu))`` (``n log n`` = 0 at 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(n > 0, n * np.log(n / mu), 0.0)
    return 2.0 * (term - (n - mu))


def validate_fov(maps: xr.Dataset) -> xr.Dataset:
    """Per-run comparison of observed and predicted sky maps, with the summary in ``attrs``.

    Parameters
    ----------
    maps
        :func:`fov_run_maps` of the runs, concatenated along ``obs_id``.

    Returns
    -------
    xarray.Dataset
        Along ``obs_id``:

        - ``observed``, ``predicted``, ``ratio`` (observed / predicted),
          ``significance``: over the used bins;
        - ``deviance``, ``dof``, ``deviance_dof``: Poisson deviance of the
          *shape* (after scaling the prediction to the run's observed total,
          so that it measures the shape only) over the used (energy x pixel)
          bins with a positive prediction, ``dof`` = bins - 1. The deviance is
          minus twice the log-likelihood ratio to the saturated model: for
          the same data, a lower value is a better prediction (a proper score),
          whatever the counts per bin; only where every bin holds many counts
          does its expectation approach ``dof``;
        - ``gradient_lat``, ``gradient_lon`` and their ``_err``: the gradient
          (per deg) of observed / predicted along the ALTAZ field of view
          (:func:`fit_fov_gradient`): ``gradient_lat`` towards higher
          altitude, ``gradient_lon`` along GADF's ALTAZ ``fov_lon`` (towards
          *lower* azimuth). Fitted on the pixels summed over energy, each at
          its mean ALTAZ position during the run (weighted by its predicted
          counts at each time): for a ratio linear in the ALTAZ position this
          is the pixel's mean ratio, so the fit is unbiased; the rotation of
          the field during the run only shortens the lever arm;
        - ``residual`` along ``(obs_id, energy, sky_lat, sky_lon)``: Pearson
          residual after the per-run normalisation, NaN where unused.

        ``attrs``: ``n_runs``, ``normalisation``, ``scatter`` (standard
        deviation of the ratio over runs / its mean), ``poisson_scatter``,
        ``deviance_dof`` (summed deviance / summed dof), ``deviance_dof_mean``
        (mean over runs), ``gradient_lat_mean``, ``gradient_lat_rms``,
        ``gradient_lon_mean``, ``gradient_lon_rms`` (over runs),
        ``significance_mean``, ``significance_width`` (of the pooled residuals:
        0 and 1 for a model equal to the truth), ``prediction`` (``"consumer-3d"``).
    """
    sum_dims = (ENERGY_DIM, *_SKY_DIMS)
    used = maps["used"] & maps["predicted"].notnull()
    counts = maps["observed"].where(used, 0.0)
    mu = maps["predicted"].where(used, 0.0)
    obs = counts.sum(sum_dims)
    tot = mu.sum(sum_dims)
    ratio = obs / tot
    norm_mu = mu * ratio
    positive = used & (norm_mu > 0)
    n_v = counts.values
    m_v = norm_mu.values
    with np.errstate(divide="ignore", invalid="ignore"):
        dev = np.where(positive.values, _deviance(n_v, m_v), 0.0)
        pearson = np.where(positive.values, (n_v - m_v) / np.sqrt(m_v), np.nan)
    deviance = dev.sum(axis=(1, 2, 3))
    dof = positive.values.sum(axis=(1, 2, 3)) - 1
    fits = []
    for i in range(maps.sizes[OBS_DIM]):
        run = maps.isel({OBS_DIM: i})
        fits.append(
            fit_fov_gradient(
                counts.isel({OBS_DIM: i}).sum(ENERGY_DIM).values,
                mu.isel({OBS_DIM: i}).sum(ENERGY_DIM).values,
                run["altaz_lon"].values,
                run["altaz_lat"].values,
            )
        )
    run_dim = (OBS_DIM,)

    def per_run(key: str) -> NDArray[np.float64]:
        return np.array([f[key] for f in fits], dtype=np.float64)

    with np.errstate(divide="ignore", invalid="ignore"):
        table = xr.Dataset(
            {
                **_total_columns(obs, tot),
                "deviance": (
                    run_dim,
                    deviance,
                    {"units": "1", "long_name": "shape Poisson deviance after normalisation"},
                ),
                "dof": (run_dim, dof, {"units": "1", "long_name": "degrees of freedom (bins - 1)"}),
                "deviance_dof": (
                    run_dim,
                    deviance / dof,
                    {"units": "1", "long_name": "shape Poisson deviance / dof"},
                ),
                "gradient_lat": (
                    run_dim,
                    per_run("gradient_lat"),
                    {"units": "deg-1", "long_name": "gradient of obs/pred towards higher altitude"},
                ),
                "gradient_lat_err": (run_dim, per_run("gradient_lat_err"), {"units": "deg-1"}),
                "gradient_lon": (
                    run_dim,
                    per_run("gradient_lon"),
                    {"units": "deg-1", "long_name": "gradient of obs/pred along ALTAZ fov_lon"},
                ),
                "gradient_lon_err": (run_dim, per_run("gradient_lon_err"), {"units": "deg-1"}),
                "residual": (
                    maps["observed"].dims,
                    pearson,
                    {"units": "1", "long_name": "Pearson residual after per-run normalisation"},
                ),
            },
            coords={k: v.variable for k, v in maps.coords.items()},
        )
    table.attrs = summarize_fov(table)
    table.attrs.update(
        {k: maps.attrs[k] for k in ("offset_max", "binsz", "rebin") if k in maps.attrs}
    )
    return table


def summarize_fov(table: xr.Dataset) -> dict[str, Any]:
    """Summary metrics of a :func:`validate_fov` table (see there)."""
    ratio = table["ratio"].values
    ok = np.isfinite(ratio)
    pred = table["predicted"].values[ok]
    res = table["residual"].values[ok]
    res = res[np.isfinite(res)]
    dev, dof = table["deviance"].values[ok], table["dof"].values[ok]

    def rms(name: str) -> float:
        v = table[name].values[ok]
        v = v[np.isfinite(v)]
        return float(np.sqrt(np.mean(v**2))) if v.size else np.nan

    def mean(name: str) -> float:
        v = table[name].values[ok]
        v = v[np.isfinite(v)]
        return float(np.mean(v)) if v.size else np.nan

    return {
        "n_runs": int(ok.sum()),
        "normalisation": float(table["observed"].values[ok].sum() / pred.sum())
        if ok.any()
        else np.nan,
        "scatter": float(np.std(ratio[ok], ddof=1) / np.mean(ratio[ok]))
        if ok.sum() > 1
        else np.nan,
        "poisson_scatter": float(np.sqrt(np.mean(1.0 / pred))) if ok.any() else np.nan,
        "deviance_dof": float(dev.sum() / dof.sum()) if dof.sum() > 0 else np.nan,
        "deviance_dof_mean": mean("deviance_dof"),
        "gradient_lat_mean": mean("gradient_lat"),
        "gradient_lat_rms": rms("gradient_lat"),
        "gradient_lon_mean": mean("gradient_lon"),
        "gradient_lon_rms": rms("gradient_lon"),
        "significance_mean": float(np.mean(res)) if res.size else np.nan,
        "significance_width": float(np.std(res)) if res.size else np.nan,
        "prediction": "consumer-3d",
    }


#: ``events_of(obs_id)``: the run's events with TIME and header (``read_events``).
EventsOf = Callable[[int], Any]
#: ``model_of(obs_id)``: the run's ``bkg_3d`` as stored and how Gammapy orients it.
ModelOf = Callable[[int], tuple[xr.DataArray, str]]


def fov_validation_maps(
    runs: xr.Dataset,
    events_of: EventsOf,
    model_of: ModelOf,
    energy_edges: ArrayLike,
    *,
    regions: xr.Dataset | None = None,
    offset_max: float = DEFAULT_OFFSET_MAX,
    width: float = FOV_MAP_WIDTH,
    binsz: float = FOV_BINSZ,
    rebin: int = FOV_REBIN,
) -> xr.Dataset:
    """:func:`fov_run_maps` of every run, along ``obs_id``.

    The events and models are read by the caller's functions (this module
    reads no file). Each run's pointing track comes from its EVENTS header
    (:func:`xbkg.fov.track_from_header`), its start from ``TSTART`` and its
    duration from ``ONTIME`` (else ``TSTOP - TSTART``), as Gammapy takes them
    for a run with one good time interval; the safe threshold from the run
    table's ``safe_energy_lo``.

    Parameters
    ----------
    runs
        Run table (or cube) of the runs, with ``safe_energy_lo`` if there is a threshold.
    events_of
        ``events_of(obs_id)``: the events, with ``ra``, ``dec``, ``energy``
        and ``header`` (e.g. ``read_events(path, time=True)``).
    model_of
        ``model_of(obs_id)``: ``(rate as stored, alignment as Gammapy takes it)``.
    energy_edges, regions, offset_max, width, binsz, rebin
        As for :func:`fov_run_maps`.
    """
    from xbkg.fov import track_from_header

    out = []
    obs_ids = [int(o) for o in runs[OBS_DIM].values]
    safe = (
        runs["safe_energy_lo"].values.astype(np.float64)
        if "safe_energy_lo" in runs
        else np.full(len(obs_ids), np.nan)
    )
    for i, obs_id in enumerate(obs_ids):
        events = events_of(obs_id)
        header = events.header
        track = track_from_header(header, str(getattr(events, "path", "")))
        tstart = float(header["TSTART"])
        ontime = header.get("ONTIME")
        duration = float(ontime) if ontime is not None else float(header["TSTOP"]) - tstart
        rate, alignment = model_of(obs_id)
        out.append(
            fov_run_maps(
                events,
                track,
                rate,
                alignment,
                energy_edges,
                tstart=tstart,
                ontime=duration,
                safe_energy_lo=float(safe[i]),
                regions=regions,
                offset_max=offset_max,
                width=width,
                binsz=binsz,
                rebin=rebin,
            ).expand_dims({OBS_DIM: [obs_id]})
        )
    maps = xr.concat(out, dim=OBS_DIM, combine_attrs="drop")
    run_coords = {k: v.variable for k, v in runs.coords.items() if v.dims == (OBS_DIM,)}
    return maps.assign_coords(run_coords).assign_attrs(
        offset_max=float(offset_max), binsz=float(binsz), rebin=int(rebin)
    )


#: Energy bins of the field-of-view validation: 15 log bins from 0.1 to 100 TeV.
FOV_ENERGY_EDGES: tuple[float, ...] = tuple(float(e) for e in np.geomspace(0.1, 100.0, 16))


def stored_fov_model(rate: xr.DataArray, reversed_lon: bool) -> tuple[xr.DataArray, str]:
    """A ``bkg_3d`` rate (GADF orientation) as its file holds it, and as Gammapy orients it.

    ``xbkg make`` writes a RADEC model of a run flagged like H.E.S.S. DR1
    mirrored in ``fov_lon``, which Gammapy 2.1 then evaluates with ``fov_lon``
    reversed (``REVERSE_LON_RADEC``); an ALTAZ model is written as it is, and
    Gammapy reads it as ``REVERSE_LON_RADEC`` on such a run too (wrongly).

    Parameters
    ----------
    rate
        Along ``(energy, fov_lon, fov_lat)`` with ``attrs["FOVALIGN"]``.
    reversed_lon
        Whether the run is flagged (:func:`xbkg.io.datastore.gammapy_reversed_lon`).

    Returns
    -------
    rate, alignment
        The stored rate and :func:`xbkg.prediction.consumer_alignment`.
    """
    from xbkg.axes import fov_coords
    from xbkg.prediction import consumer_alignment

    fovalign = str(rate.attrs.get("FOVALIGN", "ALTAZ"))
    alignment = consumer_alignment(fovalign, reversed_lon)
    if not (reversed_lon and fovalign.upper() == "RADEC"):
        return rate, alignment
    lon = edges(rate, "fov_lon")
    mirrored = rate.isel(fov_lon=slice(None, None, -1))
    mirrored = mirrored.drop_vars([c for c in mirrored.coords if "fov_lon" in mirrored[c].dims])
    coords = fov_coords(-lon[::-1], edges(rate, "fov_lat"))
    return mirrored.assign_coords(
        {k: v for k, v in coords.items() if k.startswith("fov_lon")}
    ), alignment


def crossval_fov(
    cube: xr.Dataset,
    builder: ModelBuilder,
    events_of: EventsOf,
    reversed_lon: dict[int, bool],
    *,
    energy_edges: ArrayLike = FOV_ENERGY_EDGES,
    regions: xr.Dataset | None = None,
    k: int = 5,
    seed: int = 0,
    offset_max: float = DEFAULT_OFFSET_MAX,
) -> xr.Dataset:
    """k-fold cross-validation of ``bkg_3d`` models by run, on field-of-view sky maps.

    For each fold, ``builder(train_cube, test_cube)`` (e.g.
    :func:`xbkg.pipeline.fov_builder_for`) gives the held-out runs' ``bkg_3d``
    rates; each is put in the orientation its file would have
    (:func:`stored_fov_model`) and evaluated as Gammapy 2.1 evaluates it
    (:func:`fov_validation_maps`).

    Parameters
    ----------
    cube
        ``bkg_3d`` run cube of all runs (``build_background(...).cube``).
    builder
        Returns the 3D rates of the test runs, along ``(obs_id, energy,
        fov_lon, fov_lat)`` with ``attrs["FOVALIGN"]``.
    events_of
        ``events_of(obs_id)``: the run's events with TIME and header.
    reversed_lon
        ``{obs_id: flagged like H.E.S.S. DR1}`` (:func:`xbkg.io.datastore.gammapy_reversed_lon`).
    energy_edges, regions, offset_max
        As for :func:`fov_run_maps`.
    k, seed
        Folds (:func:`fold_assignment`).

    Returns
    -------
    xarray.Dataset
        The :func:`validate_fov` table of all runs' held-out predictions, with
        a ``fold`` coordinate and ``k``, ``seed`` in ``attrs``.
    """
    folds = fold_assignment(cube[OBS_DIM].values, k, seed)
    parts = []
    for f in range(k):
        train_cube, test_cube = _split_runs(cube, folds.values == f)
        rates = builder(train_cube, test_cube)
        by_run = {
            int(o): stored_fov_model(
                rates.sel({OBS_DIM: o}).assign_attrs(rates.attrs), reversed_lon[int(o)]
            )
            for o in test_cube[OBS_DIM].values
        }
        parts.append(
            fov_validation_maps(
                test_cube,
                events_of,
                by_run.__getitem__,
                energy_edges,
                regions=regions,
                offset_max=offset_max,
            )
        )
    maps = xr.concat(parts, dim=OBS_DIM, combine_attrs="override").reindex(
        {OBS_DIM: cube[OBS_DIM].values}
    )
    table = validate_fov(maps).assign_coords(fold=folds)
    table.attrs.update({"k": k, "seed": seed, "offset_max": float(offset_max)})
    return table

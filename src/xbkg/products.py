"""Labelled products of a background model: acceptance curves, spectra, images.

Every product is computed the same way, by :func:`integrate`: over the bins
of the requested range, sum the *predicted counts* and the *exposure* (exposure
time x solid angle x energy width), then divide:

``rate(range) = sum(predicted counts) / sum(exposure_time x solid angle x energy width)``

This is the rate that a run exposing the whole range would measure. It is not
the average of the bin rates, which would give a narrow, empty bin as much
weight as a wide, well-exposed one.

*Predicted counts* are the observed ``counts`` for a raw model (or a per-run
cube), and ``rate x exposure_time x solid angle x energy width`` for a
smoothed model (``attrs["smoothing"]`` other than ``"none"``) or a Dataset
with a ``rate`` and an ``exposure_time`` but no counts (a prediction), so
that the products of a smoothed model are those of its smoothed rate. A
Dataset with only a ``rate`` (a model read from a FITS file) is treated as
uniformly exposed: its products are solid-angle x energy-width weighted
means of the rate. Datasets opened from netCDF files with CF ``bounds``
variables instead of edge coordinates are accepted as they are.

Selections are made by physical value or by bin index:

- ``energy=1.0``: the bin ``[lo, hi)`` containing 1.0 TeV (bins are half-open,
  as when events are binned);
- ``energy=slice(1.0, 10.0)``: every bin that overlaps the interval
  ``[1, 10)`` TeV, each taken whole (overlaps shorter than ``1e-6`` of a bin
  width are ignored: they come from rounding of edges read from files). Either
  end may be None for the end of the axis;
- ``energy_index=6`` or ``energy_index=slice(6, 9)``: bins by position;
- nothing: the whole axis.

A value outside the axis is an error. The range a product really covers is
recorded in its scalar ``<dim>_lo``/``<dim>_hi`` coordinates.

Dimensions other than ``energy`` and ``offset`` (``group``, ``obs_id``) are
kept, so that one call gives the product of every group or every run; name
them in ``sum_over`` to add them up first (e.g. several runs of a cube).

Field-of-view (``bkg_3d``) models, along ``(energy, fov_lon, fov_lat)``, have
products of their own: :func:`fov_image` (the model over an energy band, per
pixel) and :func:`fov_profile` (that image along ``fov_lon`` or ``fov_lat``,
through the centre), for a rate or for the dimensionless shape factor of a
build. A band is the weighted mean of its energy bins (weights: the energy
bin widths, i.e. the rate over the band; or any given per bin, e.g. the
counts of a build for its shape factor); a strip across the field of view is
the solid-angle weighted mean of its pixels. The frame (``FOVALIGN``) and its
sign are those of GADF: ``fov_lon`` grows towards lower azimuth (``ALTAZ``) or
lower right ascension (``RADEC``), ``fov_lat`` towards higher altitude or
north. :func:`radial_profile` averages a ``bkg_3d`` template over offset rings.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from xbkg.axes import binned_coords, edges, energy_width_mev, from_cf_bounds, validate_edges
from xbkg.axes import offset_edges as default_offset_edges
from xbkg.conventions import (
    ENERGY_DIM,
    FOV_LAT_DIM,
    FOV_LON_DIM,
    FOV_UNIT,
    FOVALIGN_KEYWORD,
    OFFSET_DIM,
    RATE_UNIT,
)
from xbkg.model import SolidAngle, bin_volume

__all__ = [
    "Selection",
    "acceptance_curve",
    "bin_slice",
    "fov_image",
    "fov_profile",
    "image",
    "integrate",
    "radial_profile",
    "spectrum",
]

#: A selection along a binned axis: a value (the bin containing it), a slice of
#: values (the bins overlapping it), or None (the whole axis).
Selection = float | slice | None

#: Which model a product describes: the smoothed rate, or the observed counts.
ModelChoice = Literal["smoothed", "raw"]
#: The smoothed rate's name in old flat archives (schema 2 and 3, :mod:`xbkg.io.netcdf`).
_ARCHIVE_SMOOTHED = "smoothed_rate"

#: Overlaps shorter than this fraction of a bin width do not select the bin.
_OVERLAP_RTOL = 1e-6

_UNITS = {ENERGY_DIM: "TeV", OFFSET_DIM: "deg", FOV_LON_DIM: FOV_UNIT, FOV_LAT_DIM: FOV_UNIT}
_EXPOSURE_UNIT = "s sr MeV"


def bin_slice(
    obj: xr.Dataset | xr.DataArray,
    dim: str,
    value: Selection = None,
    index: int | slice | None = None,
) -> slice:
    """Positions of the bins of ``dim`` selected by physical value or by index.

    Parameters
    ----------
    obj
        Dataset or DataArray with ``<dim>_lo``/``<dim>_hi`` edge coordinates.
    dim
        Dimension name, e.g. ``"energy"``.
    value
        A number (the bin ``[lo, hi)`` holding it), a slice of numbers (the
        bins overlapping ``[start, stop)``; None ends mean the axis ends) or
        None (every bin).
    index
        A bin position or a slice of positions (step 1), instead of ``value``.

    Returns
    -------
    slice
        A non-empty slice of positions with step 1, for ``isel``.

    Raises
    ------
    ValueError
        If both ``value`` and ``index`` are given, a value or range lies
        outside the axis, or nothing is selected.
    """
    bin_edges = edges(obj, dim)
    n = bin_edges.size - 1
    unit = obj[f"{dim}_lo"].attrs.get("units", _UNITS.get(dim, ""))
    axis = f"the {dim} axis covers [{bin_edges[0]:g}, {bin_edges[-1]:g}) {unit}".rstrip()
    if value is not None and index is not None:
        raise ValueError(f"select {dim} by value ({dim}=) or by index ({dim}_index=), not both")
    if index is not None:
        return _index_slice(index, n, dim)
    if value is None:
        return slice(0, n)
    if isinstance(value, slice):
        return _value_range(value, bin_edges, dim, unit, axis)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{dim}= must be a number, a slice of numbers or None, got {value!r}")
    v = float(value)
    if not bin_edges[0] <= v < bin_edges[-1]:
        raise ValueError(f"{dim}={v:g} {unit} is outside the axis: {axis}")
    i = int(np.searchsorted(bin_edges, v, side="right")) - 1
    return slice(i, i + 1)


def _index_slice(index: int | slice, n: int, dim: str) -> slice:
    if isinstance(index, slice):
        if index.step not in (None, 1):
            raise ValueError(f"{dim}_index: a slice with a step is not a range of bins: {index}")
        positions = range(n)[index]
        if len(positions) == 0:
            raise ValueError(f"{dim}_index={index} selects no bin of the {n}")
        return slice(positions.start, positions.stop)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise TypeError(f"{dim}_index must be an integer or a slice, got {index!r}")
    if not -n <= index < n:
        raise ValueError(f"{dim}_index={index} is outside the axis of {n} bins")
    i = int(index) % n
    return slice(i, i + 1)


def _value_range(
    value: slice, bin_edges: NDArray[np.float64], dim: str, unit: str, axis: str
) -> slice:
    if value.step is not None:
        raise ValueError(f"{dim}={value}: a range of values has no step")
    lo, hi = bin_edges[:-1], bin_edges[1:]
    start = bin_edges[0] if value.start is None else float(value.start)
    stop = bin_edges[-1] if value.stop is None else float(value.stop)
    if not start < stop:
        raise ValueError(f"{dim}=slice({value.start}, {value.stop}) is empty or reversed")
    for name, v in (("start", start), ("stop", stop)):
        if not bin_edges[0] <= v <= bin_edges[-1]:
            raise ValueError(f"{dim} range {name} {v:g} {unit} is outside the axis: {axis}")
    overlap = np.minimum(hi, stop) - np.maximum(lo, start)
    chosen = np.flatnonzero(overlap > _OVERLAP_RTOL * (hi - lo))
    if chosen.size == 0:
        raise ValueError(f"{dim}=slice({start:g}, {stop:g}) selects no bin: {axis}")
    return slice(int(chosen[0]), int(chosen[-1]) + 1)


def _with_edges(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with ``<dim>_lo``/``<dim>_hi`` edges, converted from CF bounds if need be.

    A Dataset opened from a netCDF file by plain xarray (the archive) carries
    CF ``energy_bounds`` variables instead of the in-memory edge coordinates.
    """
    for dim in (ENERGY_DIM, OFFSET_DIM):
        if (
            dim in ds.coords
            and f"{dim}_lo" not in ds.coords
            and ds[dim].attrs.get("bounds") in ds.variables
        ):
            return from_cf_bounds(ds)
    return ds


def _solid_angle_mode(ds: xr.Dataset) -> SolidAngle:
    """The ring solid angle convention of a model, or of the options a cube records."""
    mode = ds.attrs.get("solid_angle")
    if mode is None and "options" in ds.attrs:
        mode = json.loads(ds.attrs["options"]).get("solid_angle")
    if mode not in (None, "exact", "flat"):
        raise ValueError(f"unknown solid_angle attribute {mode!r}; expected 'exact' or 'flat'")
    return mode or "exact"


def _model_view(ds: xr.Dataset, model: ModelChoice) -> xr.Dataset:
    """The variables of the chosen model: ``rate`` smoothed or raw, ``attrs["smoothing"]``.

    A group model of an archive (``xr.open_datatree(path)["model/smoothed"]``
    as a Dataset) is a model like any other; the root of an archive holds none.
    """
    if model not in ("smoothed", "raw"):
        raise ValueError(f"model must be 'smoothed' or 'raw', got {model!r}")
    if "xbkg_schema" in ds.attrs and ENERGY_DIM not in ds.dims:
        raise ValueError(
            "this is the root of an xbkg archive (its provenance); the models are its groups "
            "'model/smoothed' and 'model/raw': use xr.open_datatree(path)['model/smoothed']"
            ".to_dataset().bkg or xr.open_dataset(path, group='model/smoothed').bkg"
        )
    if _ARCHIVE_SMOOTHED in ds.variables:  # a flat archive (schema 2, 3): both rates
        smoothing = str(ds.attrs.get("smoothing", "none"))
        if model == "smoothed":
            ds = ds.assign(rate=ds[_ARCHIVE_SMOOTHED])
        return ds.assign_attrs(smoothing=smoothing if model == "smoothed" else "none")
    if model == "raw" and _is_smoothed(ds):
        return ds.drop_vars("rate").assign_attrs(smoothing="none")
    return ds


def _is_smoothed(ds: xr.Dataset) -> bool:
    return str(ds.attrs.get("smoothing", "none")) != "none"


def _as_dims(dims: str | Sequence[str]) -> tuple[str, ...]:
    return (dims,) if isinstance(dims, str) else tuple(dims)


def integrate(
    ds: xr.Dataset,
    dims: str | Sequence[str] = (),
    *,
    energy: Selection = None,
    offset: Selection = None,
    energy_index: int | slice | None = None,
    offset_index: int | slice | None = None,
    model: ModelChoice = "smoothed",
) -> xr.Dataset:
    """Sum a model over ranges of bins and divide: the rate over the range.

    Parameters
    ----------
    ds
        A grouped model (``group, energy, offset``), a per-run cube
        (``obs_id, energy, offset``) or one slice of either, with ``counts``
        and ``exposure_time``, a Dataset with a ``rate`` and an
        ``exposure_time``, or one with only a ``rate`` (uniform exposure
        assumed). Smoothed models (``attrs["smoothing"]`` other than
        ``"none"``) contribute ``rate x exposure`` as predicted counts.
    dims
        Dimensions to sum over: ``"energy"``, ``"offset"`` and any other
        dimension of ``ds`` (e.g. ``"obs_id"``). Dimensions not named are kept.
    energy
        Energy bins to use, by value in TeV (see :func:`bin_slice`); default: all.
    offset
        Offset bins to use, by value in deg (see :func:`bin_slice`); default: all.
    energy_index
        Energy bins to use, by position, instead of by value.
    offset_index
        Offset bins to use, by position, instead of by value.
    model
        ``"smoothed"`` (default): a smoothed model contributes its rate, as
        the FITS files hold it; ``"raw"``: the observed counts instead. (An
        archive opens as a tree whose ``model/smoothed`` and ``model/raw``
        groups are the two models; old flat archives hold both rates side by
        side, and this chooses between them.)

    Returns
    -------
    xarray.Dataset
        ``predicted_counts``, ``exposure`` (exposure time x solid angle x
        energy width, in s sr MeV), ``rate`` (their ratio, NaN where nothing
        was exposed) and, if ``ds`` has counts, ``counts`` (observed) and
        ``rate_error`` (Poisson: the relative error of the observed counts of
        the range). A summed ``energy`` or ``offset`` dimension leaves scalar
        ``<dim>_lo``/``<dim>_hi`` coordinates with the range covered.

    Raises
    ------
    ValueError
        For a selection outside an axis, an unknown dimension, or a Dataset
        without a ``rate`` nor ``counts`` and ``exposure_time``.
    """
    ds = _model_view(_with_edges(ds), model)
    summed = _as_dims(dims)
    for dim in (ENERGY_DIM, OFFSET_DIM):
        if dim not in ds.dims:
            raise ValueError(
                f"a background model needs an {dim!r} dimension; got {tuple(ds.dims)} "
                "(for a bkg_3d template, make radial profiles with radial_profile() first)"
            )
    unknown = [d for d in summed if d not in ds.dims]
    if unknown:
        raise ValueError(f"cannot sum over {unknown}: the dimensions are {tuple(ds.dims)}")
    has_exposure = "exposure_time" in ds
    has_counts = "counts" in ds and has_exposure
    use_rate = "rate" in ds and (_is_smoothed(ds) or not has_counts)
    if not has_counts and "rate" not in ds:
        raise ValueError(
            "need counts and exposure_time (a model or run cube) or a rate; "
            f"the variables are {sorted(map(str, ds.data_vars))}"
        )
    ds = ds.isel(
        {
            ENERGY_DIM: bin_slice(ds, ENERGY_DIM, energy, energy_index),
            OFFSET_DIM: bin_slice(ds, OFFSET_DIM, offset, offset_index),
        }
    )
    volume = bin_volume(ds, solid_angle=_solid_angle_mode(ds))
    # Without an exposure time every bin counts as equally exposed.
    weight = ds["exposure_time"] if has_exposure else xr.ones_like(ds["rate"])
    exposure = weight * volume
    if use_rate:
        predicted = ds["rate"] * exposure
        if has_exposure:
            predicted = predicted.where(ds["exposure_time"] > 0, 0.0)
    else:
        predicted = ds["counts"].astype(np.float64)

    sums = {
        "predicted_counts": predicted.sum(summed, skipna=False),
        "exposure": exposure.sum(summed, skipna=False),
    }
    if has_counts:
        sums["counts"] = ds["counts"].sum(summed)
    positive = sums["exposure"] > 0
    rate = (sums["predicted_counts"] / sums["exposure"].where(positive)).assign_attrs(
        units=RATE_UNIT, long_name="background rate"
    )
    out = xr.Dataset({**sums, "rate": rate})
    if has_counts:
        n = sums["counts"].astype(np.float64)
        if use_rate:
            error = rate * n**0.5 / n.where(n > 0)
            error = error.where(n > 0, 0.0).where(positive)
        else:
            error = n**0.5 / sums["exposure"].where(positive)
        out["rate_error"] = error.assign_attrs(
            units=RATE_UNIT, long_name="background rate statistical error (Poisson)"
        )
        out["counts"].attrs = {"units": "1", "long_name": "observed counts"}
    out["predicted_counts"].attrs = {"units": "1", "long_name": "predicted counts"}
    out["exposure"].attrs = {
        "units": _EXPOSURE_UNIT,
        "long_name": "exposure time x solid angle x energy width",
    }
    for dim in (ENERGY_DIM, OFFSET_DIM):
        if dim in summed:
            bin_edges = edges(ds, dim)
            for name, v in ((f"{dim}_lo", bin_edges[0]), (f"{dim}_hi", bin_edges[-1])):
                out.coords[name] = xr.Variable((), v, dict(ds[name].attrs))
    out.attrs = dict(ds.attrs)
    return out


def _product(result: xr.Dataset, name: str) -> xr.DataArray:
    rate = result["rate"]
    rate.name = "rate"
    rate.attrs = {"units": RATE_UNIT, "long_name": name}
    return rate


def acceptance_curve(
    ds: xr.Dataset,
    energy: Selection = None,
    *,
    energy_index: int | slice | None = None,
    sum_over: str | Sequence[str] = (),
    model: ModelChoice = "smoothed",
) -> xr.DataArray:
    """Background rate versus offset over an energy bin or range.

    Parameters
    ----------
    ds
        A model, a run cube, or a slice of either (see :func:`integrate`).
    energy
        An energy in TeV (the bin holding it), a slice of energies (the bins
        overlapping it) or None (all energies).
    energy_index
        A bin position or slice of positions instead of ``energy``.
    sum_over
        Other dimensions to add up first, e.g. ``"obs_id"`` for several runs.
    model
        ``"smoothed"`` (default) or ``"raw"`` (see :func:`integrate`).

    Returns
    -------
    xarray.DataArray
        ``rate`` in s-1 MeV-1 sr-1 along ``offset`` (and any dimension not
        summed), with offset edges and the energy range as scalar
        ``energy_lo``/``energy_hi`` coordinates.

    Examples
    --------
    >>> import os, xbkg
    >>> store = xbkg.open_datastore(os.path.join(os.environ["XBKG_DATA"], "hess-dl3-dr1"))
    >>> model = xbkg.build_background(store, xbkg.run_table(store)).smoothed
    >>> curve = acceptance_curve(model.sel(group=0), energy=1.0)
    >>> curve.dims
    ('offset',)
    >>> curve = model.bkg.acceptance_curve(energy=slice(1, 10))
    >>> float(curve["energy_lo"]), float(curve["energy_hi"])
    (1.0, 10.0)
    """
    result = integrate(
        ds,
        (ENERGY_DIM, *_as_dims(sum_over)),
        energy=energy,
        energy_index=energy_index,
        model=model,
    )
    return _product(result, "background rate (acceptance curve)")


def spectrum(
    ds: xr.Dataset,
    offset: Selection = None,
    *,
    offset_index: int | slice | None = None,
    sum_over: str | Sequence[str] = (),
    model: ModelChoice = "smoothed",
) -> xr.DataArray:
    """Background rate versus energy over an offset bin or range.

    Parameters
    ----------
    ds
        A model, a run cube, or a slice of either (see :func:`integrate`).
    offset
        An offset in deg (the ring holding it), a slice of offsets (the rings
        overlapping it) or None (the whole field of view).
    offset_index
        A ring position or slice of positions instead of ``offset``.
    sum_over
        Other dimensions to add up first, e.g. ``"obs_id"`` for several runs.
    model
        ``"smoothed"`` (default) or ``"raw"`` (see :func:`integrate`).

    Returns
    -------
    xarray.DataArray
        ``rate`` in s-1 MeV-1 sr-1 along ``energy`` (and any dimension not
        summed), with energy edges and the offset range as scalar
        ``offset_lo``/``offset_hi`` coordinates.
    """
    result = integrate(
        ds,
        (OFFSET_DIM, *_as_dims(sum_over)),
        offset=offset,
        offset_index=offset_index,
        model=model,
    )
    return _product(result, "background rate (spectrum)")


def image(
    ds: xr.Dataset,
    *,
    energy: Selection = None,
    offset: Selection = None,
    energy_index: int | slice | None = None,
    offset_index: int | slice | None = None,
    sum_over: str | Sequence[str] = (),
    model: ModelChoice = "smoothed",
) -> xr.DataArray:
    """Background rate in every energy x offset bin.

    Parameters
    ----------
    ds
        A model, a run cube, or a slice of either (see :func:`integrate`).
    energy
        Restrict the image to some energy bins, by value in TeV (see
        :func:`bin_slice`); default: all.
    offset
        Restrict the image to some offset bins, by value in deg; default: all.
    energy_index
        Energy bins by position, instead of by value.
    offset_index
        Offset bins by position, instead of by value.
    sum_over
        Other dimensions to add up first, e.g. ``"obs_id"`` for several runs.
    model
        ``"smoothed"`` (default) or ``"raw"`` (see :func:`integrate`).

    Returns
    -------
    xarray.DataArray
        ``rate`` in s-1 MeV-1 sr-1 along ``(energy, offset)``, with edges.
    """
    result = integrate(
        ds,
        _as_dims(sum_over),
        energy=energy,
        offset=offset,
        energy_index=energy_index,
        offset_index=offset_index,
        model=model,
    )
    return _product(result, "background rate")


def radial_profile(
    template: xr.DataArray | xr.Dataset,
    offset_edges: Sequence[float] | NDArray[np.float64] | None = None,
    *,
    oversample: int | None = None,
) -> xr.DataArray:
    """Average a field-of-view (``bkg_3d``) template over offset rings.

    Each ``fov_lon`` x ``fov_lat`` pixel is cut into ``oversample`` x ``oversample``
    sub-pixels, each given to the ring holding its centre (offset
    ``sqrt(fov_lon**2 + fov_lat**2)``, accurate to 1e-4 relative within 3 deg); a
    ring's rate is the area-weighted mean of the pixels it covers. Rings that
    the template does not reach are NaN; rings reaching beyond its corners
    average the part it covers.

    Parameters
    ----------
    template
        Rate along ``(energy, fov_lon, fov_lat)`` with edges, e.g. from
        :func:`xbkg.read_bkg` or ``xr.open_dataset(path, engine="gadf")``;
        other dimensions (e.g. ``obs_id`` for the templates of several runs
        on one grid) are kept.
    offset_edges
        Ring edges in deg (default: the xbkg default binning).
    oversample
        Sub-pixels per pixel side; default: enough for four sub-pixels across
        the narrowest ring.

    Returns
    -------
    xarray.DataArray
        ``rate`` along ``(..., energy, offset)`` with edges, in the template's units.
    """
    rate = _with_edges(template)["rate"] if isinstance(template, xr.Dataset) else template
    fov = ("fov_lon", "fov_lat")
    missing = [d for d in (ENERGY_DIM, *fov) if d not in rate.dims]
    if missing:
        raise ValueError(
            f"a bkg_3d template needs dimensions energy, fov_lon, fov_lat; got {rate.dims}"
        )
    o = validate_edges(default_offset_edges() if offset_edges is None else offset_edges, "offset")
    x, y = edges(rate, "fov_lon"), edges(rate, "fov_lat")
    pixel = float(min(np.diff(x).min(), np.diff(y).min()))
    if oversample is None:
        oversample = int(min(100, np.ceil(4 * pixel / np.diff(o).min())))
    # Sub-pixel centres along each axis, and the pixel each one belongs to.
    frac = (np.arange(oversample) + 0.5) / oversample
    sx = (x[:-1, None] + np.diff(x)[:, None] * frac).ravel()
    sy = (y[:-1, None] + np.diff(y)[:, None] * frac).ravel()
    px = np.repeat(np.arange(x.size - 1), oversample)
    py = np.repeat(np.arange(y.size - 1), oversample)
    area = np.outer(np.repeat(np.diff(x), oversample), np.repeat(np.diff(y), oversample))
    theta = np.hypot(sx[:, None], sy[None, :])
    ring = np.searchsorted(o, theta, side="right") - 1
    inside = (ring >= 0) & (ring < o.size - 1)
    n_rings = o.size - 1
    pixel_index = (px[:, None] * (y.size - 1) + py[None, :])[inside]
    # weights[p, r]: area of pixel p inside ring r.
    weights = np.bincount(
        pixel_index * n_rings + ring[inside],
        weights=area[inside],
        minlength=(x.size - 1) * (y.size - 1) * n_rings,
    ).reshape((x.size - 1) * (y.size - 1), n_rings)
    extra = [d for d in rate.dims if d not in (ENERGY_DIM, *fov)]
    ordered = rate.transpose(*extra, ENERGY_DIM, *fov)
    values = ordered.values.reshape(*ordered.shape[:-2], -1)
    total = weights.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        profile = (values @ weights) / np.where(total > 0, total, np.nan)
    coords: dict[Any, Any] = dict(binned_coords(edges(rate, ENERGY_DIM), o))
    coords.update({k: v.variable for k, v in rate.coords.items() if set(v.dims) <= set(extra)})
    attrs = {k: v for k, v in rate.attrs.items() if k in ("units", "long_name")}
    return xr.DataArray(
        profile, dims=(*extra, ENERGY_DIM, OFFSET_DIM), coords=coords, name="rate", attrs=attrs
    )


#: The field-of-view dimensions, each with the one across it.
_ACROSS = {FOV_LON_DIM: FOV_LAT_DIM, FOV_LAT_DIM: FOV_LON_DIM}

#: Per-bin weights along ``energy``: a DataArray with an ``energy`` dimension, or a sequence.
EnergyWeights = xr.DataArray | Sequence[float] | NDArray[np.float64] | None


def _fov_model(template: xr.DataArray | xr.Dataset) -> xr.DataArray:
    """The field-of-view model of ``template``: its ``rate`` (a Dataset) or itself."""
    if isinstance(template, xr.Dataset):
        ds = _with_edges(template)
        if "rate" not in ds:
            raise ValueError(
                "a field-of-view model Dataset needs a 'rate' variable; "
                f"the variables are {sorted(map(str, ds.data_vars))}"
            )
        rate = ds["rate"]
        # A file's alignment is a header keyword, kept on the Dataset.
        if FOVALIGN_KEYWORD in ds.attrs and FOVALIGN_KEYWORD not in rate.attrs:
            rate = rate.assign_attrs({FOVALIGN_KEYWORD: ds.attrs[FOVALIGN_KEYWORD]})
    else:
        rate = template
    if any(d not in rate.dims for d in (ENERGY_DIM, FOV_LON_DIM, FOV_LAT_DIM)):
        raise ValueError(
            "a field-of-view (bkg_3d) model needs the dimensions energy, fov_lon, fov_lat; "
            f"got {rate.dims} (for a radial bkg_2d model use image() or acceptance_curve())"
        )
    return rate


def _energy_weights(rate: xr.DataArray, weights: EnergyWeights) -> tuple[xr.DataArray, str]:
    """Weights of the energy bins of ``rate``, on its energy coordinates, and what they are."""
    if weights is None:
        return energy_width_mev(rate), "energy bin width"
    w = weights if isinstance(weights, xr.DataArray) else xr.DataArray(weights, dims=ENERGY_DIM)
    n = rate.sizes[ENERGY_DIM]
    if ENERGY_DIM not in w.dims or w.sizes[ENERGY_DIM] != n:
        raise ValueError(
            f"weights need one value per energy bin of the model ({n} bins) along 'energy'; "
            f"got dimensions {dict(w.sizes)}"
        )
    if ENERGY_DIM in w.coords and not np.allclose(
        w[ENERGY_DIM].values, rate[ENERGY_DIM].values, rtol=1e-6, atol=0.0
    ):
        raise ValueError("the weights' energy bins are not those of the model")
    values = np.asarray(w.values, dtype=np.float64)
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError("weights must be finite and non-negative")
    # The model's energy coordinates, so that no rounding of the weights' ones misaligns them.
    w = w.drop_vars([c for c in w.coords if ENERGY_DIM in w[c].dims]).astype(np.float64)
    return w.assign_coords({ENERGY_DIM: rate[ENERGY_DIM]}), "given weights"


def fov_image(
    template: xr.DataArray | xr.Dataset,
    energy: Selection = None,
    *,
    energy_index: int | slice | None = None,
    weights: EnergyWeights = None,
) -> xr.DataArray:
    """A field-of-view model over an energy band: one value per ``fov_lon`` x ``fov_lat`` pixel.

    The weighted mean of the band's energy bins, ``sum(w * model) / sum(w)``.

    Parameters
    ----------
    template
        A model along ``(energy, fov_lon, fov_lat)`` with edges: a rate (e.g.
        ``xr.open_dataset(path, engine="gadf")``, :func:`xbkg.read_bkg`,
        ``xbkg.pipeline.run_fov_rates``) or the shape factor of a build
        (``Background.fov_shape``). Other dimensions (e.g. ``obs_id``) are kept.
    energy
        An energy in TeV (the bin holding it), a slice of energies (the bins
        overlapping it, see :func:`bin_slice`) or None (all energies).
    energy_index
        A bin position or slice of positions instead of ``energy``.
    weights
        One non-negative weight per energy bin of ``template`` (the whole axis;
        a DataArray along ``energy``, possibly with other dimensions, or a
        sequence). Default: the bin widths, which gives the rate over the
        band (its integral over energy divided by the band's width). For a
        shape factor, the counts per energy bin weigh each bin as the data do.

    Returns
    -------
    xarray.DataArray
        Along ``(..., fov_lon, fov_lat)`` with edges, the units and
        ``FOVALIGN`` of ``template``, the band as scalar
        ``energy_lo``/``energy_hi`` coordinates, and ``attrs["energy_weights"]``.

    Raises
    ------
    ValueError
        If ``template`` is not a field-of-view model, the selection is outside
        the energy axis, the weights do not fit, or they are all zero in the band.
    """
    rate = _fov_model(template)
    band = bin_slice(rate, ENERGY_DIM, energy, energy_index)
    w, described = _energy_weights(rate, weights)
    w, part = w.isel({ENERGY_DIM: band}), rate.isel({ENERGY_DIM: band})
    total = w.sum(ENERGY_DIM)
    bin_edges = edges(part, ENERGY_DIM)
    if not bool((total > 0).all()):
        raise ValueError(
            f"the weights of the energy bins {bin_edges[0]:.3g}-{bin_edges[-1]:.3g} TeV are all "
            "zero: choose a band with weight"
        )
    mean = (part * w).sum(ENERGY_DIM, skipna=False) / total
    for name, value in ((f"{ENERGY_DIM}_lo", bin_edges[0]), (f"{ENERGY_DIM}_hi", bin_edges[-1])):
        mean.coords[name] = xr.Variable((), value, dict(rate[name].attrs))
    mean.name = rate.name
    mean.attrs = {
        **{k: v for k, v in rate.attrs.items() if k in ("units", "long_name", FOVALIGN_KEYWORD)},
        "energy_weights": described,
    }
    return mean.transpose(..., FOV_LON_DIM, FOV_LAT_DIM)


def fov_profile(
    template: xr.DataArray | xr.Dataset,
    along: str,
    energy: Selection = None,
    *,
    energy_index: int | slice | None = None,
    across: Selection = None,
    across_index: int | slice | None = None,
    weights: EnergyWeights = None,
) -> xr.DataArray:
    """A field-of-view model along ``fov_lon`` or ``fov_lat``, through the centre, over a band.

    The :func:`fov_image` of the band, averaged across a strip of pixels
    (weighted by their solid angle).

    Parameters
    ----------
    template
        A model along ``(energy, fov_lon, fov_lat)`` (see :func:`fov_image`).
    along
        ``"fov_lon"`` or ``"fov_lat"``: the dimension the profile follows.
    energy
        The energy band, by value in TeV (see :func:`fov_image`).
    energy_index
        The energy band by position, instead of by value.
    across
        The strip, by value in deg along the other dimension: a value (the
        bin holding it) or a slice (the bins overlapping it). Default: the
        pixels at the centre (the two either side of 0 for an even number of
        bins, the middle one for an odd number).
    across_index
        The strip by position, instead of by value.
    weights
        Weights of the energy bins (see :func:`fov_image`).

    Returns
    -------
    xarray.DataArray
        Along ``(..., along)`` with edges, the strip as scalar
        ``<other>_lo``/``<other>_hi`` coordinates and the band as
        ``energy_lo``/``energy_hi``.
    """
    from xbkg.fov_model import pixel_solid_angle

    if along not in _ACROSS:
        raise ValueError(f"along must be 'fov_lon' or 'fov_lat', got {along!r}")
    other = _ACROSS[along]
    image_ = fov_image(template, energy, energy_index=energy_index, weights=weights)
    if across is None and across_index is None:
        half = 0.5 * float(np.diff(edges(image_, other)).min())
        across = slice(-half, half)
    part = image_.isel({other: bin_slice(image_, other, across, across_index)})
    omega = xr.DataArray(
        pixel_solid_angle(edges(part, FOV_LON_DIM), edges(part, FOV_LAT_DIM)),
        dims=(FOV_LON_DIM, FOV_LAT_DIM),
    )
    profile = (part * omega).sum(other, skipna=False) / omega.sum(other)
    strip = edges(part, other)
    for name, value in ((f"{other}_lo", strip[0]), (f"{other}_hi", strip[-1])):
        profile.coords[name] = xr.Variable((), value, dict(image_[name].attrs))
    profile.name = image_.name
    profile.attrs = dict(image_.attrs)
    return profile.transpose(..., along)

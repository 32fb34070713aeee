"""Plots of background products (acceptance curve, spectrum, image, overview), of
field-of-view (``bkg_3d``) models (image per energy band, profiles) and of validation tables.

Every function takes an optional matplotlib ``Axes`` (``ax=``; four of them,
``axes=``, for :func:`plot_validation`), draws on it (or on the current axes)
and returns it, like xarray's plotting functions.
Products are computed by :mod:`xbkg.products` and drawn as they are: a raw
model (``attrs["smoothing"] == "none"``) as points with Poisson error bars
and horizontal bars spanning each bin, a smoothed model as a line through
the bin centres; images use the true bin edges. matplotlib is imported inside
the functions, so that importing xbkg never needs it.

Field-of-view models are drawn as the sky is: ``fov_lon`` increasing to the
right and ``fov_lat`` upwards. With the GADF sign (``fov_lon`` grows towards
lower azimuth or lower right ascension) azimuth, or RA, grows to the left and
altitude, or Dec, upwards: an ``RADEC`` image has east left and north up. The
axis labels name the frame (``FOVALIGN``; GADF's default ``ALTAZ`` when a
model does not say) and these directions.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from xbkg.axes import edges
from xbkg.conventions import (
    ENERGY_DIM,
    FOV_ALIGNMENTS,
    FOV_LAT_DIM,
    FOV_LON_DIM,
    FOVALIGN_KEYWORD,
    GROUP_DIM,
    OBS_DIM,
    OFFSET_DIM,
)
from xbkg.products import EnergyWeights, Selection, fov_image, fov_profile, integrate

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from xbkg.options import Background

__all__ = [
    "FOV_RUN_FILES",
    "FOV_SHAPE_FILES",
    "PLOT_FILES",
    "RUN_MODELS_FILE",
    "fov_axis_label",
    "fov_runs",
    "plot_acceptance_curve",
    "plot_files",
    "plot_fov_image",
    "plot_fov_profile",
    "plot_image",
    "plot_overview",
    "plot_spectrum",
    "plot_validation",
    "unit_label",
    "write_plots",
]

#: Figures written per group by :func:`write_plots` (``{group}`` is the GROUP_ID).
PLOT_FILES: tuple[str, ...] = (
    "plot_group_{group:03d}_overview.png",
    "plot_group_{group:03d}_acceptance.png",
    "plot_group_{group:03d}_spectrum.png",
    "plot_group_{group:03d}_image.png",
)

#: The figure of a few per-run models (the models the HDU index uses), when there are any.
RUN_MODELS_FILE = "plot_run_models.png"

#: Figures of the field-of-view shape factor of a ``bkg_3d`` build: images per energy band,
#: profiles along ``fov_lon`` and ``fov_lat``.
FOV_SHAPE_FILES: tuple[str, ...] = (
    "plot_fov_shape_image.png",
    "plot_fov_shape_profiles.png",
)

#: Figures of one run's ``bkg_3d`` model (``{obs_id}`` is the OBS_ID), as its file holds it.
FOV_RUN_FILES: tuple[str, ...] = (
    "plot_fov_run_{obs_id:06d}_image.png",
    "plot_fov_run_{obs_id:06d}_profiles.png",
)

_RATE_LABEL = "Background rate"


def unit_label(units: str) -> str:
    """A unit string such as ``"s-1 MeV-1 sr-1"`` as matplotlib mathtext."""
    if units in ("", "1"):
        return ""
    return re.sub(r"([A-Za-z]+)(-?\d+)", r"\1$^{\2}$", units)


def _label(name: str, units: str) -> str:
    text = unit_label(units)
    return f"{name} [{text}]" if text else name


def _range_text(obj: xr.DataArray | xr.Dataset, dim: str) -> str:
    lo, hi = float(obj[f"{dim}_lo"]), float(obj[f"{dim}_hi"])
    unit = obj[f"{dim}_lo"].attrs.get("units", "")
    return f"{dim.capitalize()} {lo:.3g}–{hi:.3g} {unit}".rstrip()


def _group_text(obj: xr.DataArray | xr.Dataset) -> str:
    """``"group 0 (ZEN_PNT 0–49)"`` for a one-group selection, else ``""``."""
    if GROUP_DIM not in obj.coords or obj[GROUP_DIM].ndim != 0:
        return ""
    parts = []
    for name, var in obj.coords.items():
        gadf = var.attrs.get("gadf_name")
        if var.ndim != 0 or not gadf:
            continue
        if str(gadf).endswith("_MIN"):
            column = str(gadf)[: -len("_MIN")]
            hi = obj.coords.get(str(name)[: -len("_min")] + "_max")
            upper = f"{float(hi):g}" if hi is not None else ""
            parts.append(f"{column} {float(var):g}–{upper}")
        elif not str(gadf).endswith("_MAX"):
            parts.append(f"{gadf} {var.item()}")
    detail = f" ({', '.join(parts)})" if parts else ""
    return f"Group {int(obj[GROUP_DIM])}{detail}"


def _extent(obj: xr.Dataset, dim: str) -> tuple[float, float]:
    bin_edges = edges(obj, dim)
    return float(bin_edges[0]), float(bin_edges[-1])


def _get_ax(ax: Axes | None) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    return plt.gca()


def _one_dim(result: xr.Dataset, dim: str, what: str) -> None:
    extra = [d for d in result["rate"].dims if d != dim]
    if extra:
        raise ValueError(
            f"the {what} has the extra dimension(s) {tuple(extra)}: select one entry, "
            f"e.g. ds.sel({extra[0]}=...), or add them up with sum_over={tuple(extra)!r}"
        )


def _is_smoothed(ds: xr.Dataset) -> bool:
    return str(ds.attrs.get("smoothing", "none")) != "none"


def _draw_1d(
    ax: Axes,
    result: xr.Dataset,
    dim: str,
    *,
    errors: bool | None,
    label: str | None,
    kwargs: dict[str, Any],
) -> None:
    rate = result["rate"]
    x = result[dim].values
    lo, hi = result[f"{dim}_lo"].values, result[f"{dim}_hi"].values
    if errors is None:
        errors = not _is_smoothed(result) and "rate_error" in result
    if errors:
        if "rate_error" not in result:
            raise ValueError("errors=True needs counts: this model has only a rate")
        style = {"fmt": "o", "markersize": 3, "elinewidth": 0.8, "capsize": 0}
        ax.errorbar(
            x,
            rate.values,
            yerr=result["rate_error"].values,
            xerr=np.vstack([x - lo, hi - x]),
            label=label,
            **{**style, **kwargs},
        )
    else:
        ax.plot(x, rate.values, label=label, **kwargs)


def plot_acceptance_curve(
    ds: xr.Dataset,
    energy: Selection = None,
    *,
    energy_index: int | slice | None = None,
    sum_over: str | Sequence[str] = (),
    ax: Axes | None = None,
    errors: bool | None = None,
    label: str | None = None,
    **kwargs: Any,
) -> Axes:
    """Plot the background rate versus offset over an energy bin or range.

    Parameters
    ----------
    ds
        A one-group model, one run of a cube, or anything that
        :func:`xbkg.products.acceptance_curve` turns into a single curve.
    energy
        Energy bin or range, by value in TeV (as for
        :func:`xbkg.products.acceptance_curve`).
    energy_index
        Energy bin or range by position, instead of by value.
    sum_over
        Other dimensions to add up first, e.g. ``"obs_id"``.
    ax
        Axes to draw on (default: the current axes).
    errors
        Draw points with Poisson error bars (default for raw models) instead
        of a line (default for smoothed models).
    label
        Legend label (default: the energy range).
    **kwargs
        Passed to ``Axes.plot`` (line) or ``Axes.errorbar`` (points).

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on; the title names the energy range unless the axes
        already had one.
    """
    result = integrate(
        ds, (ENERGY_DIM, *_as_tuple(sum_over)), energy=energy, energy_index=energy_index
    )
    _one_dim(result, OFFSET_DIM, "acceptance curve")
    ax = _get_ax(ax)
    span = _range_text(result, ENERGY_DIM)
    _draw_1d(ax, result, OFFSET_DIM, errors=errors, label=label or span, kwargs=kwargs)
    ax.set_xlabel(_label("Offset", result[OFFSET_DIM].attrs.get("units", "deg")))
    ax.set_ylabel(_label(_RATE_LABEL, result["rate"].attrs["units"]))
    ax.set_xlim(_extent(result, OFFSET_DIM))
    if not ax.get_title():
        ax.set_title(", ".join(t for t in (_group_text(result), span) if t))
    return ax


def plot_spectrum(
    ds: xr.Dataset,
    offset: Selection = None,
    *,
    offset_index: int | slice | None = None,
    sum_over: str | Sequence[str] = (),
    ax: Axes | None = None,
    errors: bool | None = None,
    label: str | None = None,
    **kwargs: Any,
) -> Axes:
    """Plot the background rate versus energy (log-log) over an offset bin or range.

    Parameters
    ----------
    ds
        A one-group model, one run of a cube, or anything that
        :func:`xbkg.products.spectrum` turns into a single spectrum.
    offset
        Offset ring or range, by value in deg (as for
        :func:`xbkg.products.spectrum`; default: the whole field of view).
    offset_index
        Offset ring or range by position, instead of by value.
    sum_over
        Other dimensions to add up first, e.g. ``"obs_id"``.
    ax
        Axes to draw on (default: the current axes).
    errors
        Points with error bars (default for raw models) or a line.
    label
        Legend label (default: the offset range).
    **kwargs
        Passed to ``Axes.plot`` or ``Axes.errorbar``.

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on, with logarithmic axes.
    """
    result = integrate(
        ds, (OFFSET_DIM, *_as_tuple(sum_over)), offset=offset, offset_index=offset_index
    )
    _one_dim(result, ENERGY_DIM, "spectrum")
    ax = _get_ax(ax)
    span = _range_text(result, OFFSET_DIM)
    _draw_1d(ax, result, ENERGY_DIM, errors=errors, label=label or span, kwargs=kwargs)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(_label("Energy", result[ENERGY_DIM].attrs.get("units", "TeV")))
    ax.set_ylabel(_label(_RATE_LABEL, result["rate"].attrs["units"]))
    ax.set_xlim(_extent(result, ENERGY_DIM))
    if not ax.get_title():
        ax.set_title(", ".join(t for t in (_group_text(result), span) if t))
    return ax


def plot_image(
    ds: xr.Dataset,
    *,
    energy: Selection = None,
    offset: Selection = None,
    sum_over: str | Sequence[str] = (),
    ax: Axes | None = None,
    colorbar: bool = True,
    vmin: float | None = None,
    vmax: float | None = None,
    **kwargs: Any,
) -> Axes:
    """Plot the rate of every energy x offset bin, with its true bin edges.

    Offset runs along x, energy along y on a logarithmic scale, and the rate
    is shown on a logarithmic colour scale; bins with a zero or undefined
    rate (nothing exposed) are left blank.

    Parameters
    ----------
    ds
        A one-group model, one run of a cube, or anything that
        :func:`xbkg.products.image` turns into a single image.
    energy
        Energy bins to show, by value in TeV (as for :func:`xbkg.products.image`).
    offset
        Offset bins to show, by value in deg.
    sum_over
        Other dimensions to add up first, e.g. ``"obs_id"``.
    ax
        Axes to draw on (default: the current axes).
    colorbar
        Add a colour bar labelled with the units.
    vmin
        Lower limit of the colour scale (default: the smallest positive rate).
    vmax
        Upper limit of the colour scale (default: the largest rate).
    **kwargs
        Passed to ``Axes.pcolormesh`` (e.g. ``cmap``).

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on; the mesh is ``ax.collections[0]``.
    """
    from matplotlib.colors import LogNorm

    result = integrate(ds, _as_tuple(sum_over), energy=energy, offset=offset)
    rate = result["rate"]
    extra = [d for d in rate.dims if d not in (ENERGY_DIM, OFFSET_DIM)]
    if extra:
        raise ValueError(
            f"the image has the extra dimension(s) {tuple(extra)}: select one entry, "
            f"e.g. ds.sel({extra[0]}=...), or add them up with sum_over={tuple(extra)!r}"
        )
    values = rate.transpose(ENERGY_DIM, OFFSET_DIM).values
    shown = np.ma.masked_where(~(values > 0), values)
    positive = values[values > 0]
    if vmin is None:
        vmin = float(positive.min()) if positive.size else 1e-12
    if vmax is None:
        vmax = float(positive.max()) if positive.size else 1.0
    ax = _get_ax(ax)
    mesh = ax.pcolormesh(
        edges(result, OFFSET_DIM),
        edges(result, ENERGY_DIM),
        shown,
        norm=LogNorm(vmin=vmin, vmax=vmax),
        **{"cmap": "viridis", **kwargs},
    )
    ax.set_yscale("log")
    ax.set_xlabel(_label("Offset", result[OFFSET_DIM].attrs.get("units", "deg")))
    ax.set_ylabel(_label("Energy", result[ENERGY_DIM].attrs.get("units", "TeV")))
    if colorbar:
        ax.figure.colorbar(mesh, ax=ax, label=_label(_RATE_LABEL, rate.attrs["units"]))
    if not ax.get_title():
        ax.set_title(_group_text(result))
    return ax


def plot_overview(
    ds: xr.Dataset,
    *,
    raw: xr.Dataset | None = None,
    energy: Selection = None,
    offset: Selection = None,
    axes: Sequence[Axes] | None = None,
) -> Sequence[Axes]:
    """Acceptance curve, spectrum and image of one model, side by side.

    Parameters
    ----------
    ds
        A one-group model (smoothed or raw).
    raw
        The raw model of the same group, drawn as points with error bars
        under the curve and spectrum of ``ds``.
    energy
        Energy bin or range of the acceptance curve (default: the bin with
        the most counts).
    offset
        Offset range of the spectrum (default: the whole field of view).
    axes
        Three Axes to draw on (default: a new 15 x 4.5 inch figure).

    Returns
    -------
    sequence of matplotlib.axes.Axes
        The three axes.
    """
    if axes is None:
        import matplotlib.pyplot as plt

        _fig, new_axes = plt.subplots(1, 3, figsize=(15, 4.5), layout="constrained")
        axes = list(new_axes)
    if len(axes) != 3:
        raise ValueError(f"plot_overview draws on 3 axes, got {len(axes)}")
    energy_index = None
    if energy is None:
        source = raw if raw is not None else ds
        if "counts" in source:
            totals = source["counts"].sum([d for d in source["counts"].dims if d != ENERGY_DIM])
            energy_index = int(np.argmax(totals.values))
    curve_ax, spectrum_ax, image_ax = axes
    title = _group_text(ds)
    for model, kind in ((raw, "raw"), (ds, None)):
        if model is None:
            continue
        name = kind or ("smoothed" if _is_smoothed(ds) else "model")
        plot_acceptance_curve(
            model, energy, energy_index=energy_index, ax=curve_ax, label=name, zorder=3
        )
        plot_spectrum(model, offset, ax=spectrum_ax, label=name, zorder=3)
    curve = integrate(ds, ENERGY_DIM, energy=energy, energy_index=energy_index)
    curve_ax.set_title(_range_text(curve, ENERGY_DIM))
    spec = integrate(ds, OFFSET_DIM, offset=offset)
    spectrum_ax.set_title(_range_text(spec, OFFSET_DIM))
    image_ax.set_title("Rate" + (" (smoothed)" if _is_smoothed(ds) else ""))
    plot_image(ds, ax=image_ax)
    for ax in (curve_ax, spectrum_ax):
        ax.legend(frameon=False)
    if title:
        curve_ax.figure.suptitle(title)
    return axes


def plot_validation(table: xr.Dataset, *, label: str | None = None, axes: Any = None) -> Any:
    """Four panels: obs/pred per run against zenith, shape chi2/dof, residual significance, and
    obs/pred per energy bin (mean and spread over runs).

    Parameters
    ----------
    table
        Output of :func:`xbkg.validation.validate` or :func:`xbkg.validation.crossval`.
    label
        Legend label (e.g. the model's name); several tables can share ``axes``.
    axes
        Four matplotlib axes; a new 2 x 2 figure if None.

    Returns
    -------
    numpy.ndarray
        The four axes.
    """
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(2, 2, figsize=(10, 7), constrained_layout=True)
    ax = np.asarray(axes).ravel()
    s = table.attrs
    text = (
        f"{label + ': ' if label else ''}scatter {s['scatter']:.3f}, chi2/dof {s['chi2_dof']:.2f}"
    )
    x = table["zen_pnt"].values if "zen_pnt" in table.coords else np.arange(table.sizes[OBS_DIM])
    ax[0].plot(x, table["ratio"].values, "o", label=text)
    ax[0].set_xlabel("zenith angle (deg)" if "zen_pnt" in table.coords else "run")
    ax[0].set_ylabel("observed / predicted")
    ax[0].legend(fontsize="small")
    ax[1].hist(table["chi2_dof"].values, bins=20, histtype="step", label=label)
    ax[1].set_xlabel("shape chi2 / dof per run")
    ax[2].hist(table["significance"].values, bins=20, histtype="step", label=label)
    ax[2].set_xlabel("(observed - predicted) / sqrt(predicted) per run")
    ratio_e = table["ratio_energy"]
    ax[3].errorbar(
        table[ENERGY_DIM].values,
        ratio_e.mean(OBS_DIM, skipna=True).values,
        yerr=ratio_e.std(OBS_DIM, skipna=True).values,
        fmt="o-",
        label=label,
    )
    ax[3].set_xscale("log")
    ax[3].axhline(1.0, color="0.5", lw=0.8)
    ax[3].set_xlabel("energy (TeV)")
    ax[3].set_ylabel("observed / predicted (mean, std over runs)")
    return ax


#: What grows along each field-of-view axis, per frame (GADF sign: fov_lon grows towards
#: lower azimuth or RA, so these grow the other way).
_FRAME_QUANTITY = {
    "ALTAZ": {FOV_LON_DIM: "azimuth", FOV_LAT_DIM: "altitude"},
    "RADEC": {FOV_LON_DIM: "RA", FOV_LAT_DIM: "Dec"},
}
_DIRECTION = {
    (FOV_LON_DIM, "x"): "to the left",
    (FOV_LON_DIM, "y"): "downwards",
    (FOV_LAT_DIM, "x"): "to the right",
    (FOV_LAT_DIM, "y"): "upwards",
}
_SKY_SIDE = {FOV_LON_DIM: " (east)", FOV_LAT_DIM: " (north)"}


def fov_axis_label(dim: str, alignment: str, axis: str = "x") -> str:
    """Label of a field-of-view axis: its unit, its frame, and which way the sky turns.

    Parameters
    ----------
    dim
        ``"fov_lon"`` or ``"fov_lat"``.
    alignment
        ``"ALTAZ"`` or ``"RADEC"`` (the model's ``FOVALIGN``).
    axis
        ``"x"`` or ``"y"``: the plot axis ``dim`` increases along (to the right, upwards).

    Returns
    -------
    str
        E.g. ``"fov_lon [deg], ALTAZ: azimuth grows to the left"``.

    Examples
    --------
    >>> fov_axis_label("fov_lat", "RADEC", "y")
    'fov_lat [deg], RADEC: Dec grows upwards (north)'
    """
    if alignment not in _FRAME_QUANTITY:
        raise ValueError(f"unknown field-of-view alignment {alignment!r}: {FOV_ALIGNMENTS}")
    if (dim, axis) not in _DIRECTION:
        raise ValueError(
            f"need dim 'fov_lon' or 'fov_lat' and axis 'x' or 'y', got {dim!r}, {axis!r}"
        )
    side = _SKY_SIDE[dim] if alignment == "RADEC" else ""
    quantity = _FRAME_QUANTITY[alignment][dim]
    return f"{dim} [deg], {alignment}: {quantity} grows {_DIRECTION[dim, axis]}{side}"


def _alignment(obj: xr.DataArray | xr.Dataset, alignment: str | None) -> str:
    """The frame of a model: as given, else its FOVALIGN, else GADF's default (ALTAZ)."""
    found = alignment or obj.attrs.get(FOVALIGN_KEYWORD)
    if found is None and isinstance(obj, xr.Dataset) and "rate" in obj:
        found = obj["rate"].attrs.get(FOVALIGN_KEYWORD)
    found = str(found or "ALTAZ").strip().upper()
    if found not in FOV_ALIGNMENTS:
        raise ValueError(
            f"unknown field-of-view alignment {found!r}: expected one of {FOV_ALIGNMENTS}"
        )
    return found


def _is_factor(obj: xr.DataArray) -> bool:
    """A dimensionless model (a shape factor) rather than a rate."""
    return str(obj.attrs.get("units", "")) in ("", "1")


def _value_label(obj: xr.DataArray) -> str:
    if _is_factor(obj):
        return "Field-of-view shape factor"
    return _label(_RATE_LABEL, str(obj.attrs.get("units", "")))


def _only_fov(obj: xr.DataArray, dims: tuple[str, ...], what: str) -> None:
    extra = [d for d in obj.dims if d not in dims]
    if extra:
        raise ValueError(
            f"the {what} has the extra dimension(s) {tuple(extra)}: select one entry, "
            f"e.g. .sel({extra[0]}=...)"
        )


def _energy_text(obj: xr.DataArray) -> str:
    lo, hi = float(obj[f"{ENERGY_DIM}_lo"]), float(obj[f"{ENERGY_DIM}_hi"])
    return f"Energy {lo:.3g}–{hi:.3g} TeV"


def _run_text(obj: xr.DataArray) -> str:
    if OBS_DIM in obj.coords and obj[OBS_DIM].ndim == 0:
        return f"OBS_ID {int(obj[OBS_DIM])}"
    return ""


def _factor_limits(values: NDArray[np.float64]) -> tuple[float, float]:
    """Colour limits symmetric about 1 (no change from the radial model)."""
    finite = values[np.isfinite(values)]
    spread = float(np.abs(finite - 1.0).max()) if finite.size else 0.0
    spread = spread if spread > 0 else 0.01
    return 1.0 - spread, 1.0 + spread


def plot_fov_image(
    template: xr.DataArray | xr.Dataset,
    energy: Selection = None,
    *,
    energy_index: int | slice | None = None,
    weights: EnergyWeights = None,
    alignment: str | None = None,
    ax: Axes | None = None,
    colorbar: bool = True,
    vmin: float | None = None,
    vmax: float | None = None,
    **kwargs: Any,
) -> Axes:
    """Plot a field-of-view model over an energy band, pixel by pixel.

    ``fov_lon`` runs along x (increasing to the right), ``fov_lat`` along y,
    on equal scales and with the true pixel edges; the axis labels name the
    frame and the directions azimuth and altitude (or RA and Dec) grow in
    (:func:`fov_axis_label`). A rate is drawn on a linear colour scale, a
    shape factor (units ``"1"``) on a diverging one centred on 1; undefined
    pixels are left blank.

    Parameters
    ----------
    template
        A model along ``(energy, fov_lon, fov_lat)``, one run: a ``bkg_3d``
        file (``xr.open_dataset(path, engine="gadf")``), one run of
        ``xbkg.pipeline.run_fov_rates``, or ``Background.fov_shape``.
    energy
        Energy band by value in TeV (as for :func:`xbkg.products.fov_image`).
    energy_index
        Energy band by position, instead of by value.
    weights
        Weights of the energy bins (as for :func:`xbkg.products.fov_image`).
    alignment
        ``"ALTAZ"`` or ``"RADEC"`` (default: the model's ``FOVALIGN``, else ALTAZ).
    ax
        Axes to draw on (default: the current axes).
    colorbar
        Add a colour bar labelled with the quantity and its units.
    vmin, vmax
        Colour scale limits (default: the range of the image; for a shape
        factor, symmetric about 1).
    **kwargs
        Passed to ``Axes.pcolormesh`` (e.g. ``cmap``).

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on; the mesh is ``ax.collections[0]``.
    """
    frame = _alignment(template, alignment)
    image = fov_image(template, energy, energy_index=energy_index, weights=weights)
    _only_fov(image, (FOV_LON_DIM, FOV_LAT_DIM), "field-of-view image")
    # pcolormesh takes rows along y: fov_lat.
    values = image.transpose(FOV_LAT_DIM, FOV_LON_DIM).values.astype(np.float64)
    factor = _is_factor(image)
    if factor:
        low, high = _factor_limits(values)
    else:
        finite = values[np.isfinite(values)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    ax = _get_ax(ax)
    mesh = ax.pcolormesh(
        edges(image, FOV_LON_DIM),
        edges(image, FOV_LAT_DIM),
        np.ma.masked_invalid(values),
        vmin=low if vmin is None else vmin,
        vmax=high if vmax is None else vmax,
        **{"cmap": "RdBu_r" if factor else "viridis", **kwargs},
    )
    ax.set_aspect("equal")
    ax.set_xlim(_extent_of(image, FOV_LON_DIM))
    ax.set_ylim(_extent_of(image, FOV_LAT_DIM))
    ax.set_xlabel(fov_axis_label(FOV_LON_DIM, frame, "x"))
    ax.set_ylabel(fov_axis_label(FOV_LAT_DIM, frame, "y"))
    if colorbar:
        ax.figure.colorbar(mesh, ax=ax, label=_value_label(image))
    if not ax.get_title():
        ax.set_title(", ".join(t for t in (_run_text(image), _energy_text(image)) if t))
    return ax


def plot_fov_profile(
    template: xr.DataArray | xr.Dataset,
    along: str,
    energy: Selection = None,
    *,
    energy_index: int | slice | None = None,
    across: Selection = None,
    across_index: int | slice | None = None,
    weights: EnergyWeights = None,
    alignment: str | None = None,
    ax: Axes | None = None,
    label: str | None = None,
    **kwargs: Any,
) -> Axes:
    """Plot a field-of-view model along ``fov_lon`` or ``fov_lat``, through the centre.

    A line through the pixel centres of :func:`xbkg.products.fov_profile`;
    the x label names the frame and the direction azimuth or altitude (RA or
    Dec) grows in.

    Parameters
    ----------
    template
        A model along ``(energy, fov_lon, fov_lat)``, one run (see :func:`plot_fov_image`).
    along
        ``"fov_lon"`` or ``"fov_lat"``.
    energy
        Energy band by value in TeV (default: all energies).
    energy_index
        Energy band by position, instead of by value.
    across
        The strip averaged across, by value in deg (default: the central pixels).
    across_index
        The strip by position, instead of by value.
    weights
        Weights of the energy bins (as for :func:`xbkg.products.fov_image`).
    alignment
        ``"ALTAZ"`` or ``"RADEC"`` (default: the model's ``FOVALIGN``, else ALTAZ).
    ax
        Axes to draw on (default: the current axes).
    label
        Legend label (default: the energy band).
    **kwargs
        Passed to ``Axes.plot``.

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on; the title names the band and the strip unless the
        axes already had one.
    """
    frame = _alignment(template, alignment)
    profile = fov_profile(
        template,
        along,
        energy,
        energy_index=energy_index,
        across=across,
        across_index=across_index,
        weights=weights,
    )
    _only_fov(profile, (along,), "field-of-view profile")
    ax = _get_ax(ax)
    band = _energy_text(profile)
    ax.plot(profile[along].values, profile.values, label=label or band, **kwargs)
    ax.set_xlabel(fov_axis_label(along, frame, "x"))
    ax.set_ylabel(_value_label(profile))
    ax.set_xlim(_extent_of(profile, along))
    if not ax.get_title():
        ax.set_title(", ".join(t for t in (_run_text(profile), band, _strip_text(profile)) if t))
    return ax


def _strip_text(profile: xr.DataArray) -> str:
    """``"fov_lat -0.25–0.25 deg"``: the strip a profile averages across."""
    for dim in (FOV_LON_DIM, FOV_LAT_DIM):
        if dim not in profile.dims and f"{dim}_lo" in profile.coords:
            lo, hi = float(profile[f"{dim}_lo"]), float(profile[f"{dim}_hi"])
            return f"{dim} {lo:g}–{hi:g} deg"
    return ""


def _extent_of(obj: xr.DataArray, dim: str) -> tuple[float, float]:
    bin_edges = edges(obj, dim)
    return float(bin_edges[0]), float(bin_edges[-1])


def _as_tuple(dims: str | Sequence[str]) -> tuple[str, ...]:
    return (dims,) if isinstance(dims, str) else tuple(dims)


def _decades(ds: xr.Dataset | xr.DataArray) -> list[slice]:
    """Energy ranges of one decade each (bins grouped by the decade of their centre)."""
    decade = np.floor(np.log10(ds[ENERGY_DIM].values) + 1e-9).astype(int)
    return [
        slice(int(np.flatnonzero(decade == d)[0]), int(np.flatnonzero(decade == d)[-1]) + 1)
        for d in np.unique(decade)
    ]


def _rings(ds: xr.Dataset, width: float = 0.5) -> list[slice]:
    o = edges(ds, OFFSET_DIM)
    stops = np.arange(o[0] + width, o[-1] + width / 2, width)
    out, start = [], 0
    for stop in stops:
        end = int(np.searchsorted(ds[OFFSET_DIM].values, stop))
        if end > start:
            out.append(slice(start, end))
            start = end
    if start < o.size - 1:
        out.append(slice(start, o.size - 1))
    return out


def plot_files(bkg: Background, fov_obs_ids: Sequence[int] | None = None) -> list[str]:
    """Names of the PNG files :func:`write_plots` writes for ``bkg``.

    ``fov_obs_ids``: the runs whose ``bkg_3d`` models are drawn (see :func:`fov_runs`).
    """
    from xbkg.pipeline import populated_groups

    names = [name.format(group=g) for g in populated_groups(bkg) for name in PLOT_FILES]
    if bkg.run_models is not None and bkg.run_models.sizes[OBS_DIM] > 0:
        names.append(RUN_MODELS_FILE)
    if bkg.fov_shape is not None:
        names += list(FOV_SHAPE_FILES)
    names += [name.format(obs_id=o) for o in fov_runs(bkg, fov_obs_ids) for name in FOV_RUN_FILES]
    return names


def fov_runs(bkg: Background, obs_ids: Sequence[int] | None = None) -> list[int]:
    """The runs whose ``bkg_3d`` models :func:`write_plots` draws.

    Parameters
    ----------
    bkg
        A build; only a ``bkg_3d`` build with per-run models has such runs.
    obs_ids
        The runs asked for; default: one, the run of median zenith angle
        (the lower one of an even number) among those with a model of their own
        (none for a ``bkg_2d`` build).

    Raises
    ------
    ValueError
        If runs are asked for but ``bkg`` has no ``bkg_3d`` per-run models, or
        not for these runs.
    """
    has_models = bkg.run_models is not None and bkg.run_models.sizes[OBS_DIM] > 0
    if bkg.fov_shape is None or not has_models:
        if obs_ids:
            raise ValueError(
                "field-of-view figures of runs need a bkg_3d build with per-run models "
                "(xbkg make --bkg-class bkg_3d); this one has none"
            )
        return []
    assert bkg.run_models is not None
    if obs_ids is None:
        # shown_runs orders the runs with models by zenith angle (when it is known).
        ordered = shown_runs(bkg.run_models, bkg.cube, n=bkg.run_models.sizes[OBS_DIM])
        return [ordered[(len(ordered) - 1) // 2]]
    known = {int(o) for o in bkg.run_models[OBS_DIM].values}
    unknown = [int(o) for o in obs_ids if int(o) not in known]
    if unknown:
        first = ", ".join(str(o) for o in sorted(known)[:5])
        raise ValueError(
            f"no bkg_3d model for OBS_ID {', '.join(map(str, unknown))}: the models are for "
            f"{len(known)} runs ({first}{', ...' if len(known) > 5 else ''})"
        )
    return list(dict.fromkeys(int(o) for o in obs_ids))


def shown_runs(run_models: xr.Dataset, runs: xr.Dataset, n: int = 4) -> list[int]:
    """OBS_IDs of up to ``n`` per-run models spanning the zenith angles of ``runs``.

    The runs with a model and a known ``zen_pnt`` in ``runs``, at evenly spaced
    ranks of zenith angle (lowest and highest included); else the first ``n``.
    """
    ids = run_models[OBS_DIM].values
    if "zen_pnt" in runs.coords or "zen_pnt" in runs:
        known = runs[OBS_DIM].values[np.isin(runs[OBS_DIM].values, ids)]
        zenith = runs["zen_pnt"].sel({OBS_DIM: known}).values.astype(np.float64)
        order = known[np.argsort(zenith, kind="stable")]
        if order.size:
            picks = np.unique(np.linspace(0, order.size - 1, min(n, order.size)).round())
            return [int(order[int(i)]) for i in picks]
    return [int(o) for o in ids[:n]]


def write_plots(
    bkg: Background,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    fov_obs_ids: Sequence[int] | None = None,
) -> list[Path]:
    """Write PNG figures of every populated group's raw and smoothed model.

    Per group (``NNN`` = GROUP_ID): ``plot_group_NNN_overview.png``
    (:func:`plot_overview`), ``..._acceptance.png`` (acceptance curves per
    decade of energy), ``..._spectrum.png`` (spectra of the whole field of
    view and of 0.5 deg wide rings) and ``..._image.png`` (raw and smoothed
    rate images on one colour scale).

    For a ``bkg_3d`` build, also the field-of-view shape factor per decade of
    energy (its bins weighted by their counts), in the ALTAZ frame it is
    measured in: ``plot_fov_shape_image.png`` (images, one colour scale
    centred on 1) and ``plot_fov_shape_profiles.png`` (along ``fov_lon`` and
    ``fov_lat`` through the centre); and, for each run of :func:`fov_runs`
    (``NNNNNN`` = OBS_ID), its ``bkg_3d`` model as its file holds it, in the
    GADF orientation (``xbkg.pipeline.run_fov_rates``):
    ``plot_fov_run_NNNNNN_image.png`` and ``..._profiles.png``.

    Parameters
    ----------
    bkg
        A build (e.g. read by :func:`xbkg.io.netcdf.read_archive`).
    out_dir
        Folder to write into.
    overwrite
        Replace existing figures of the same names.
    fov_obs_ids
        Runs whose ``bkg_3d`` models are drawn (default: see :func:`fov_runs`).

    Returns
    -------
    list of pathlib.Path
        The files written.

    All figures are drawn first, then written together (:func:`xbkg.io.outputs.all_or_nothing`):
    an error or an interrupt leaves no partial set of figures.

    Raises
    ------
    OutputExistsError
        If any of the files exists and ``overwrite`` is false (nothing is written).
    """
    from xbkg.io.outputs import all_or_nothing
    from xbkg.pipeline import populated_groups

    out_dir = Path(out_dir)
    runs = fov_runs(bkg, fov_obs_ids)
    names = plot_files(bkg, runs)

    def write(stage: Path) -> None:
        for fig, name in _fov_figures(bkg, runs):
            fig.savefig(stage / name, dpi=150, metadata={"Software": None})
        if RUN_MODELS_FILE in names:
            assert bkg.run_models is not None
            fig = _run_models_figure(bkg.run_models, bkg.cube)
            fig.savefig(stage / RUN_MODELS_FILE, dpi=150, metadata={"Software": None})
        for g in populated_groups(bkg):
            raw, smoothed = bkg.model.sel({GROUP_DIM: g}), bkg.smoothed.sel({GROUP_DIM: g})
            figures = [
                _overview_figure(raw, smoothed),
                _acceptance_figure(raw, smoothed),
                _spectrum_figure(raw, smoothed),
                _image_figure(raw, smoothed),
            ]
            for fig, name in zip(figures, PLOT_FILES, strict=True):
                fig.savefig(stage / name.format(group=g), dpi=150, metadata={"Software": None})

    all_or_nothing(out_dir, names, overwrite, write, empty_folder=False)
    return [out_dir / name for name in names]


# The figures written to files are made without pyplot: no global state, no
# window, and the backend of an interactive session is left alone.
def _figure(**kwargs: Any) -> Any:
    from matplotlib.figure import Figure

    return Figure(layout="constrained", **kwargs)


def _run_models_figure(run_models: xr.Dataset, runs: xr.Dataset) -> Any:
    """Spectra and 1 TeV acceptance curves of a few per-run models, filled bins dashed."""
    fig = _figure(figsize=(12, 4.5))
    spectrum_ax, curve_ax = fig.subplots(1, 2)
    for i, obs_id in enumerate(shown_runs(run_models, runs)):
        model = run_models.sel({OBS_DIM: obs_id})
        zenith = (
            f", {float(runs['zen_pnt'].sel({OBS_DIM: obs_id})):.0f} deg zenith"
            if "zen_pnt" in runs.variables and obs_id in runs[OBS_DIM].values
            else ""
        )
        color = f"C{i}"
        rate = model[["rate"]]
        plot_spectrum(
            rate, ax=spectrum_ax, errors=False, label=f"OBS_ID {obs_id}{zenith}", color=color
        )
        if "filled" in model:
            # The bins the data constrain, solid; the continuation of the others, dashed.
            constrained = rate.where(~model["filled"].all(OFFSET_DIM))
            spectrum_ax.lines[-1].set_linestyle("--")
            plot_spectrum(constrained, ax=spectrum_ax, errors=False, label="_", color=color)
        plot_acceptance_curve(
            rate, energy=1.0, ax=curve_ax, errors=False, label=f"{obs_id}", color=color
        )
    spectrum_ax.set_title("Per-run models (dashed: filled, not constrained by data)")
    curve_ax.set_title("Per-run models at 1 TeV")
    spectrum_ax.legend(fontsize="small")
    return fig


def _overview_figure(raw: xr.Dataset, smoothed: xr.Dataset) -> Any:
    fig = _figure(figsize=(15, 4.5))
    plot_overview(smoothed, raw=raw, axes=list(fig.subplots(1, 3)))
    return fig


def _acceptance_figure(raw: xr.Dataset, smoothed: xr.Dataset) -> Any:
    fig = _figure(figsize=(7, 5))
    ax = fig.subplots()
    for i, band in enumerate(_decades(raw)):
        color = f"C{i}"
        result = integrate(raw, ENERGY_DIM, energy_index=band)
        if not float(result["exposure"].sum()) > 0:
            continue
        span = _range_text(result, ENERGY_DIM)
        plot_acceptance_curve(raw, energy_index=band, ax=ax, color=color, label=span, alpha=0.6)
        plot_acceptance_curve(smoothed, energy_index=band, ax=ax, color=color, label="_")
    ax.set_yscale("log")
    ax.set_title(f"{_group_text(raw)}: points raw, lines smoothed")
    ax.legend(frameon=False)
    return fig


def _spectrum_figure(raw: xr.Dataset, smoothed: xr.Dataset) -> Any:
    fig = _figure(figsize=(7, 5))
    ax = fig.subplots()
    bands: list[slice | None] = [None, *_rings(raw)]
    for i, band in enumerate(bands):
        color = "k" if band is None else f"C{i - 1}"
        result = integrate(raw, OFFSET_DIM, offset_index=band)
        span = _range_text(result, OFFSET_DIM)
        plot_spectrum(raw, offset_index=band, ax=ax, color=color, label=span, alpha=0.6)
        plot_spectrum(smoothed, offset_index=band, ax=ax, color=color, label="_")
    ax.set_title(f"{_group_text(raw)}: points raw, lines smoothed")
    ax.legend(frameon=False)
    return fig


def _image_figure(raw: xr.Dataset, smoothed: xr.Dataset) -> Any:
    fig = _figure(figsize=(12, 4.5))
    axes = fig.subplots(1, 2, sharey=True)
    values = np.concatenate([raw["rate"].values.ravel(), smoothed["rate"].values.ravel()])
    positive = values[values > 0]
    vmin, vmax = (float(positive.min()), float(positive.max())) if positive.size else (None, None)
    for ax, model, name in ((axes[0], raw, "raw"), (axes[1], smoothed, "smoothed")):
        plot_image(model, ax=ax, colorbar=ax is axes[1], vmin=vmin, vmax=vmax)
        ax.set_title(f"{name} rate")
    axes[1].set_ylabel("")
    fig.suptitle(_group_text(raw))
    return fig


def _fov_figures(bkg: Background, obs_ids: Sequence[int]) -> list[tuple[Any, str]]:
    """The field-of-view figures of a ``bkg_3d`` build and their file names."""
    from xbkg.pipeline import run_fov_rates

    if bkg.fov_shape is None:
        return []
    # The shape factor is measured in the ALTAZ frame (Background.fov_shape).
    shape = bkg.fov_shape.assign_attrs({FOVALIGN_KEYWORD: "ALTAZ"})
    weights = None
    if "fov_counts" in bkg.cube:
        weights = bkg.cube["fov_counts"].sum([OBS_DIM, FOV_LON_DIM, FOV_LAT_DIM])
    bands = [b for b in _decades(shape) if weights is None or float(weights[b].sum()) > 0]
    title = "Field-of-view shape factor of the build (ALTAZ; energy bins weighted by counts)"
    figures = [
        (_fov_image_figure(shape, bands, weights, title, shared=True), FOV_SHAPE_FILES[0]),
        (_fov_shape_profiles_figure(shape, bands, weights, title), FOV_SHAPE_FILES[1]),
    ]
    if obs_ids:
        rates = run_fov_rates(bkg, obs_ids)
        assert bkg.run_models is not None
        reversed_lon = bkg.run_models.get("reverse_lon")
        for obs_id in obs_ids:
            rate = rates.sel({OBS_DIM: obs_id})
            alignment = str(rate.attrs.get(FOVALIGN_KEYWORD, "ALTAZ"))
            note = ""
            if reversed_lon is not None and bool(reversed_lon.sel({OBS_DIM: obs_id})):
                note = "; stored mirrored for Gammapy (REVLON), shown in the GADF orientation"
            zenith = ""
            if "zen_pnt" in bkg.cube.coords and obs_id in bkg.cube[OBS_DIM].values:
                zenith = f", {float(bkg.cube['zen_pnt'].sel({OBS_DIM: obs_id})):.0f} deg zenith"
            run_title = f"OBS_ID {obs_id}{zenith}: bkg_3d model as written ({alignment}{note})"
            names = [name.format(obs_id=obs_id) for name in FOV_RUN_FILES]
            bands = _decades(rate)
            figures.append(
                (_fov_image_figure(rate, bands, None, run_title, shared=False), names[0])
            )
            figures.append((_fov_run_profiles_figure(rate, bands, run_title), names[1]))
    return figures


def _fov_image_figure(
    model: xr.DataArray,
    bands: Sequence[slice],
    weights: xr.DataArray | None,
    title: str,
    *,
    shared: bool,
) -> Any:
    """Images of ``model`` per energy band: one colour scale (``shared``) or one per band."""
    fig = _figure(figsize=(4.6 * max(len(bands), 1) + 1.0, 5.2))
    axes = list(np.atleast_1d(fig.subplots(1, max(len(bands), 1), sharey=True)))
    limits: tuple[float | None, float | None] = (None, None)
    if shared and bands:
        values = np.concatenate(
            [fov_image(model, energy_index=b, weights=weights).values.ravel() for b in bands]
        )
        limits = _factor_limits(values)
    for ax, band in zip(axes, bands, strict=False):
        plot_fov_image(
            model,
            energy_index=band,
            weights=weights,
            ax=ax,
            colorbar=not shared,
            vmin=limits[0],
            vmax=limits[1],
        )
        ax.set_title(_energy_text(fov_image(model, energy_index=band, weights=weights)))
    for ax in axes[1:]:
        ax.set_ylabel("")
    if shared and bands:
        fig.colorbar(axes[0].collections[0], ax=axes, label=_value_label(model))
    fig.suptitle(title)
    return fig


def _fov_shape_profiles_figure(
    shape: xr.DataArray, bands: Sequence[slice], weights: xr.DataArray | None, title: str
) -> Any:
    """Profiles of the shape factor along fov_lon and fov_lat, one line per energy band."""
    fig = _figure(figsize=(12, 4.6))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, along in zip(axes, (FOV_LON_DIM, FOV_LAT_DIM), strict=True):
        for i, band in enumerate(bands):
            plot_fov_profile(shape, along, energy_index=band, weights=weights, ax=ax, color=f"C{i}")
        ax.axhline(1.0, color="0.5", lw=0.8, ls="--")
        profile = fov_profile(shape, along, energy_index=bands[0] if bands else None)
        ax.set_title(f"Through the centre: {_strip_text(profile)}")
        if bands:
            ax.legend(frameon=False, fontsize="small")
    axes[1].set_ylabel("")
    fig.suptitle(title)
    return fig


def _fov_run_profiles_figure(rate: xr.DataArray, bands: Sequence[slice], title: str) -> Any:
    """Profiles of a run's rate along fov_lon (top) and fov_lat (bottom), one column per band."""
    n = max(len(bands), 1)
    fig = _figure(figsize=(4.6 * n, 7.5))
    grid = np.asarray(fig.subplots(2, n, squeeze=False))
    for column, band in enumerate(bands):
        for row, along in enumerate((FOV_LON_DIM, FOV_LAT_DIM)):
            ax = grid[row, column]
            plot_fov_profile(rate, along, energy_index=band, ax=ax, color=f"C{column}")
            profile = fov_profile(rate, along, energy_index=band)
            ax.set_title(f"{_energy_text(profile)}\n{_strip_text(profile)}", fontsize="medium")
            if column:
                ax.set_ylabel("")
    fig.suptitle(title)
    return fig

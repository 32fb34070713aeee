"""The data model of a build: its choices (:class:`Options`) and products (:class:`Background`).

This module holds the types that the pipeline, the command line and the
readers and writers of :mod:`xbkg.io` share, and the one definition of every
default: :data:`PRESETS` holds named :class:`Options` (``"default"``, and
``"gammapy-0.6"``, which reproduces the Gammapy 0.6 tool behind the original
tutorial); :func:`options_for` is how the command line makes its options.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import xarray as xr

from xbkg.axes import energy_edges, offset_edges
from xbkg.conventions import (
    DEFAULT_CATALOG,
    DEFAULT_MIN_RADIUS,
    DEFAULT_SMOOTHING,
    NO_CATALOG,
    ExclusionMethod,
    SmoothingMethod,
    SolidAngle,
    TimeConvention,
)
from xbkg.errors import ConfigError
from xbkg.grouping import GroupAxis, default_grouping, grouping_description

__all__ = ["PRESETS", "Background", "Options", "options_for"]


@dataclass(frozen=True)
class Options:
    """Every choice that shapes a background model (recorded in all outputs).

    Parameters
    ----------
    energy_edges
        Bin edges in TeV. Default (None): chosen from the data by
        :func:`build_background`, which records the edges it used in the
        options of its result (and so in every output): the grid
        ``10**(k / 5)`` TeV (:data:`xbkg.conventions.ENERGY_GRID_PER_DECADE`
        points per decade, on which the 15 bins of 0.1-100 TeV lie) from the
        grid point at or below the lowest ``SAFE_ENERGY_LO`` of the runs to the
        one at or above their highest ``SAFE_ENERGY_HI``, but never less than
        0.1-100 TeV (:data:`xbkg.conventions.DEFAULT_ENERGY_RANGE`). Where the
        runs give no safe energy range (or ``safe_energy`` is False), the
        events decide that side: the binning pass covers
        :data:`xbkg.conventions.ENERGY_SEARCH_RANGE` there and the bins beyond
        the outermost events are dropped, so no extra pass over the events is
        needed.
    offset_edges
        Bin edges in deg.
    grouping
        Condition axes of the run groups.
    time
        Run duration normalising the rate: ``"ontime"`` (GADF; what Gammapy
        multiplies the template by) or ``"livetime"``.
    safe_energy
        Use only energy bins inside each run's safe energy range.
    exclusion_method
        ``"exact"`` (every overlapping circle, per-ring fractions) or
        ``"gammapy-0.6"`` (nearest source's wedge).
    solid_angle
        ``"exact"`` spherical ring area or Gammapy 0.6's ``"flat"``.
    smoothing
        Smoothing of the group models and of the condition model's reference
        rate: ``"poisson"`` (default), ``"adaptive"`` or ``"gammapy-0.6"``
        (see :func:`xbkg.model.smooth`).
    min_radius
        Smallest exclusion radius (deg) for catalogue sources.
    exclude
        Catalogues of known sources left out of the model (events and exposure
        within ``max(size, min_radius)`` of each source): names of catalogues
        shipped with xbkg (:data:`xbkg.conventions.CATALOGS`) or catalogue
        files, read by :func:`build_background`; the regions given to it are
        left out as well. Default ``("gammacat",)``: gamma-cat, shipped with
        xbkg (CC BY-NC-SA 4.0; see ``xbkg/catalogs/gammacat/README.md`` for
        its citation), so that ``xbkg make`` and the Python API exclude the
        same known sources unless told otherwise (``xbkg make --exclude``).
        ``()`` or ``"none"``: no catalogue, as Gammapy 0.6 (and the
        ``"gammapy-0.6"`` preset). Recorded with the other options.
    index_model
        Which model the HDU index points at: ``"smooth"`` or ``"raw"``.
    missing_group
        A run whose group has no model: ``"nearest"`` populated group (with a
        warning) or ``"error"``.
    model
        What each run's entry in the HDU index points at: ``"conditions"``, a
        model of its own from :func:`xbkg.conditions.fit_conditions` (zenith
        angle, muon efficiency and threshold per energy bin), written as one
        ``bkg_2d`` file per run; ``"groups"``, its group's model. The group
        models are written in both cases. Default (None): ``"groups"`` when a
        grouping other than the default is given (asking for groups means
        wanting their models; :func:`options_for` and ``xbkg make --group``
        choose groups for any grouping given), else ``"conditions"``.
    fill_unconstrained
        Give the bins of the written models that the data do not constrain
        (below the safe threshold, without exposure or counts) a smooth,
        positive continuation (:func:`xbkg.model.fill_unconstrained`), so that
        science tools interpolating between bins (Gammapy integrates log-log in
        energy) predict the right counts next to them. The filled bins are
        recorded (``filled`` in the models and the archive, ``NFILLED`` in the
        FITS headers). False keeps exact zeros, as Gammapy 0.6 wrote them.
    energy_nodes
        What the model files hold along energy: ``"loglog"`` (default), the
        values at the bin centres whose log-log interpolant, which Gammapy
        integrates, has the model's mean rate over every bin
        (:func:`xbkg.prediction.loglog_nodes`; ``BKGENODE = 'LOGLOG'``); or
        ``"mean"``, the bin means themselves, which Gammapy over-predicts by
        about 1.7 % for an E^-2.7 spectrum in 0.2-decade bins (as Gammapy 0.6
        wrote them). The archive always holds the means.
    bkg_class
        ``"bkg_2d"`` (default): radial models, rate(energy, offset).
        ``"bkg_3d"``: field-of-view models, rate(energy, fov_lon, fov_lat),
        for every run, the radial model times a field-of-view shape factor
        measured in the ALTAZ frame (:mod:`xbkg.fov_model`); the group models
        stay radial.
    fov_alignment
        Alignment of the ``bkg_3d`` files (GADF ``FOVALIGN``): ``"ALTAZ"`` or
        ``"RADEC"`` (each run's model turned with the field of view during the
        run). Default (None): ALTAZ, except on data stores that Gammapy 2.1
        reads with ``fov_lon`` reversed (flagged like the H.E.S.S. DL3 DR1
        release, :func:`xbkg.io.datastore.gammapy_reversed_lon`), where it
        could not read an ALTAZ model: RADEC, written in the orientation
        Gammapy then applies. Resolved by :func:`build_background`.
    fov_edges
        Field-of-view bin edges in deg, the same for ``fov_lon`` and
        ``fov_lat``; default (None) :func:`xbkg.axes.fov_edges` (50 bins of
        0.1 deg, as the H.E.S.S. DR1 templates).
    """

    energy_edges: tuple[float, ...] | None = None
    offset_edges: tuple[float, ...] = field(default_factory=lambda: tuple(offset_edges()))
    grouping: tuple[GroupAxis, ...] = field(default_factory=lambda: tuple(default_grouping()))
    time: TimeConvention = "ontime"
    safe_energy: bool = True
    exclusion_method: ExclusionMethod = "exact"
    solid_angle: SolidAngle = "exact"
    smoothing: SmoothingMethod = DEFAULT_SMOOTHING
    min_radius: float = DEFAULT_MIN_RADIUS
    exclude: tuple[str, ...] = (DEFAULT_CATALOG,)
    index_model: Literal["smooth", "raw"] = "smooth"
    missing_group: Literal["nearest", "error"] = "nearest"
    model: Literal["groups", "conditions"] | None = None
    fill_unconstrained: bool = True
    energy_nodes: Literal["loglog", "mean"] = "loglog"
    bkg_class: Literal["bkg_2d", "bkg_3d"] = "bkg_2d"
    fov_alignment: Literal["ALTAZ", "RADEC"] | None = None
    fov_edges: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        exclude = (self.exclude,) if isinstance(self.exclude, (str, Path)) else self.exclude
        exclude = tuple(str(c) for c in exclude)
        object.__setattr__(self, "exclude", () if exclude == (NO_CATALOG,) else exclude)
        for name in ("energy_edges", "fov_edges"):  # e.g. a list read from JSON
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(float(e) for e in value))
        if self.energy_nodes not in ("loglog", "mean"):
            raise ConfigError(f"energy_nodes must be 'loglog' or 'mean', got {self.energy_nodes!r}")
        if self.bkg_class not in ("bkg_2d", "bkg_3d"):
            raise ConfigError(f"bkg_class must be 'bkg_2d' or 'bkg_3d', got {self.bkg_class!r}")
        if self.fov_alignment not in (None, "ALTAZ", "RADEC"):
            raise ConfigError(
                f"fov_alignment must be 'ALTAZ' or 'RADEC', got {self.fov_alignment!r}"
            )
        if self.model is None:
            # Resolved here, once, so that the command line, the Python API and
            # the archive all record the same choice.
            chosen = "conditions" if self.grouping == tuple(default_grouping()) else "groups"
            object.__setattr__(self, "model", chosen)

    def __repr__(self) -> str:
        # Edges as ranges: the full tuples are hundreds of numbers.
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and f.name == "energy_edges":
                text = "<from the data>"
            elif f.name in ("energy_edges", "offset_edges", "fov_edges") and value is not None:
                text = _edges_repr(value, "TeV" if f.name == "energy_edges" else "deg")
            elif f.name == "grouping":
                text = repr(grouping_description(value))
            else:
                text = repr(value)
            parts.append(f"{f.name}={text}")
        return f"Options({', '.join(parts)})"

    def to_json(self) -> str:
        """The options as a JSON string (stored in file headers and the archive)."""
        d = dataclasses.asdict(self)
        d["grouping"] = [
            {k: v for k, v in dataclasses.asdict(a).items() if v is not None} for a in self.grouping
        ]
        return json.dumps(d, sort_keys=True)


def _edges_repr(edges: tuple[float, ...], unit: str) -> str:
    """Bin edges as their range and spacing: ``0.1-100 TeV (15 log bins)``."""
    n = len(edges) - 1
    widths = [b - a for a, b in itertools.pairwise(edges)]
    squares = [b * b - a * a for a, b in itertools.pairwise(edges)]
    ratios = [b / a for a, b in itertools.pairwise(edges)] if edges[0] > 0 else []

    def even(steps: list[float]) -> bool:
        return bool(steps) and max(steps) - min(steps) <= 1e-9 * max(abs(x) for x in steps)

    spacing = (
        "log " if n > 1 and even(ratios)
        else "linear " if n > 1 and even(widths)
        else "equal-area " if n > 1 and even(squares)
        else ""
    )  # fmt: skip
    return f"{edges[0]:g}-{edges[-1]:g} {unit} ({n} {spacing}bin{'s' if n != 1 else ''})"


PRESETS: dict[str, Options] = {
    "default": Options(),
    # Gammapy 0.6 (the tutorial's OffDataBackgroundMaker), numbers reproduced exactly.
    "gammapy-0.6": Options(
        energy_edges=tuple(energy_edges()),
        time="livetime",
        safe_energy=False,
        exclusion_method="gammapy-0.6",
        solid_angle="flat",
        smoothing="gammapy-0.6",
        min_radius=0.0,
        exclude=(),
        model="groups",
        fill_unconstrained=False,
        energy_nodes="mean",
    ),
}


def options_for(preset: str = "default", **overrides: Any) -> Options:
    """Options of a named preset, with some fields replaced.

    Raises
    ------
    ConfigError
        For an unknown preset or option name.
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    names = {f.name for f in dataclasses.fields(Options)}
    unknown = set(overrides) - names
    if unknown:
        raise ConfigError(f"unknown option(s) {sorted(unknown)}; options are {sorted(names)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    for key in ("energy_edges", "offset_edges", "grouping", "fov_edges"):
        if key in overrides:
            overrides[key] = tuple(overrides[key])
    if "grouping" in overrides and "model" not in overrides:
        overrides["model"] = "groups"  # asking for groups means wanting their models
    return dataclasses.replace(PRESETS[preset], **overrides)


@dataclass(frozen=True)
class Background:
    """The products of one background build.

    Attributes
    ----------
    cube
        Per-run counts and exposure along ``(obs_id, energy, offset)``.
    groups
        Group definitions along ``group``.
    model
        Raw grouped model (counts, exposure_time, rate, rate_error).
    smoothed
        Smoothed model (same variables, smoothed rate).
    regions
        Exclusion circles used (along ``source``).
    options
        The options used.
    conditions
        The condition-dependent model (:func:`xbkg.conditions.fit_conditions`)
        when ``options.model == "conditions"``, else None.
    run_models
        The per-run models written for the data store's runs
        (:func:`run_models`), once written (:func:`write_background` makes
        them for every run of the store) or read from an archive; else None.
    fov_shape
        With ``options.bkg_class == "bkg_3d"``: the field-of-view shape factor
        along ``(energy, fov_lon, fov_lat)`` in the ALTAZ frame
        (:func:`xbkg.fov_model.fov_shape`); else None.
    """

    cube: xr.Dataset
    groups: xr.Dataset
    model: xr.Dataset
    smoothed: xr.Dataset
    regions: xr.Dataset | None
    options: Options
    conditions: xr.Dataset | None = None
    run_models: xr.Dataset | None = None
    fov_shape: xr.DataArray | None = None

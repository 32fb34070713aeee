"""Exclusion regions: known gamma-ray sources left out of the background model.

A *region list* is an :class:`xarray.Dataset` with one dimension ``source``
and the variables ``ra``, ``dec``, ``radius`` (deg, ICRS) and ``name``. It is
built from a catalogue (:func:`read_catalog`), from user circles
(:func:`exclusion_circles`) or both (:func:`combine_regions`), and being a
Dataset it can be stored in the netCDF archive next to the model it shaped.

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
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr
from numpy.typing import ArrayLike, NDArray

from xbkg.axes import validate_edges
from xbkg.conventions import CATALOGS, DEFAULT_MIN_RADIUS, DEFAULT_SOURCE_RADIUS, NO_CATALOG
from xbkg.errors import CatalogError, ConfigError, XbkgError, describe
from xbkg.io.eventfile import read_table
from xbkg.io.fitsfile import open_fits, read_errors, strict_warnings

if TYPE_CHECKING:
    from astropy.table import Table

__all__ = [
    "CATALOGS",
    "DEFAULT_QUADRATURE_NODES",
    "SOURCE_DIM",
    "catalog_regions",
    "combine_regions",
    "exclusion_circles",
    "nearest_source_wedge",
    "outside_regions",
    "position_angle",
    "read_catalog",
    "regions_from_table",
    "regions_in_fov",
    "ring_excluded_fraction",
    "separation",
    "wedge_fraction",
    "wedge_keep",
]

#: Dimension of a region list.
SOURCE_DIM = "source"

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
    formula of :meth:`astropy.coordinates.SkyCoord.separation`.
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
    :meth:`astropy.coordinates.SkyCoord.position_angle`.
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


# ---------------------------------------------------------------------------
# Region lists
# ---------------------------------------------------------------------------


def _make_regions(
    ra: NDArray[np.float64],
    dec: NDArray[np.float64],
    radius: NDArray[np.float64],
    name: Sequence[str],
    attrs: dict[str, str],
) -> xr.Dataset:
    return xr.Dataset(
        {
            "ra": (SOURCE_DIM, ra, {**_ANGLE_ATTRS, "long_name": "right ascension (ICRS)"}),
            "dec": (SOURCE_DIM, dec, {**_ANGLE_ATTRS, "long_name": "declination (ICRS)"}),
            "radius": (SOURCE_DIM, radius, {**_ANGLE_ATTRS, "long_name": "exclusion radius"}),
            "name": (SOURCE_DIM, np.asarray(list(name), dtype=str), {"long_name": "source name"}),
        },
        attrs={"frame": "icrs", **attrs},
    )


def _check_regions(regions: xr.Dataset) -> None:
    if not isinstance(regions, xr.Dataset):
        raise TypeError(f"a region list must be an xarray.Dataset, got {type(regions).__name__}")
    missing = [v for v in ("ra", "dec", "radius", "name") if v not in regions.variables]
    if missing or set(regions.dims) - {SOURCE_DIM}:
        raise CatalogError(
            f"not a region list: need variables ra, dec, radius, name along dimension "
            f"{SOURCE_DIM!r}; missing {missing}, dimensions {list(regions.dims)}"
        )


def _region_arrays(
    regions: xr.Dataset,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """``ra, dec, radius`` of a region list as float64 numpy arrays in deg."""
    _check_regions(regions)
    return (
        np.asarray(regions["ra"].values, dtype=np.float64),
        np.asarray(regions["dec"].values, dtype=np.float64),
        np.asarray(regions["radius"].values, dtype=np.float64),
    )


def _rows(index: NDArray[np.intp], names: Sequence[str], limit: int = 10) -> str:
    """Describe offending rows by index and name for error messages."""
    shown = ", ".join(f"{i} ({names[i]!r})" for i in index[:limit])
    more = f" and {index.size - limit} more" if index.size > limit else ""
    return shown + more


def exclusion_circles(
    ra: ArrayLike,
    dec: ArrayLike,
    radius: ArrayLike,
    name: str | Sequence[str] | None = None,
) -> xr.Dataset:
    """Region list from user circles.

    Parameters
    ----------
    ra, dec
        Centres in deg (ICRS); scalars or 1-D sequences of the same length.
        RA is wrapped into [0, 360).
    radius
        Radii in deg, scalar (same for all circles) or one per circle; each must
        satisfy ``0 < radius < 180``.
    name
        One name per circle (a single string for a single circle); default
        ``"circle <i>"``.

    Returns
    -------
    xarray.Dataset
        Region list with dimension ``source``.

    Raises
    ------
    xbkg.errors.CatalogError
        Naming the offending circles, for non-finite values, ``|dec| > 90`` or a
        radius outside ``(0, 180)`` (a ``ValueError`` subclass).
    """
    ra_a = np.atleast_1d(np.asarray(ra, dtype=np.float64))
    dec_a = np.atleast_1d(np.asarray(dec, dtype=np.float64))
    if ra_a.ndim != 1 or ra_a.shape != dec_a.shape:
        raise CatalogError(
            f"ra and dec must be 1-D of equal length, got {ra_a.shape}, {dec_a.shape}"
        )
    try:
        rad_a = np.broadcast_to(np.asarray(radius, dtype=np.float64), ra_a.shape).copy()
    except ValueError:
        raise CatalogError(
            f"radius must be a scalar or one value per circle ({ra_a.size}), "
            f"got shape {np.shape(radius)}"
        ) from None
    if name is None:
        names = [f"circle {i}" for i in range(ra_a.size)]
    else:
        names = [name] if isinstance(name, str) else [str(n) for n in name]
        if len(names) != ra_a.size:
            raise CatalogError(f"got {len(names)} names for {ra_a.size} circles")
    problems = []
    bad = np.flatnonzero(~(np.isfinite(ra_a) & np.isfinite(dec_a) & np.isfinite(rad_a)))
    if bad.size:
        problems.append(f"non-finite values in circles {_rows(bad, names)}")
    bad = np.flatnonzero(np.abs(dec_a) > 90)
    if bad.size:
        problems.append(f"|dec| > 90 deg in circles {_rows(bad, names)}")
    bad = np.flatnonzero((rad_a <= 0) | (rad_a >= 180))
    if bad.size:
        problems.append(f"radius not in (0, 180) deg in circles {_rows(bad, names)}")
    if problems:
        raise CatalogError("invalid exclusion circles: " + "; ".join(problems))
    return _make_regions(np.mod(ra_a, 360.0), dec_a, rad_a, names, {})


def combine_regions(*regions: xr.Dataset) -> xr.Dataset:
    """Concatenate region lists along ``source``; no arguments give an empty list.

    Attributes that differ between the inputs are dropped. Overlapping or
    duplicate circles are kept: the union is taken where it matters
    (:func:`outside_regions`, :func:`ring_excluded_fraction`).
    """
    for r in regions:
        _check_regions(r)
    if not regions:
        empty = np.empty(0, dtype=np.float64)
        return _make_regions(empty, empty, empty, [], {})
    variables = ["ra", "dec", "radius", "name"]
    return xr.concat(
        [r[variables] for r in regions], dim=SOURCE_DIM, combine_attrs="drop_conflicts"
    )


def regions_in_fov(
    regions: xr.Dataset, ra_pnt: float, dec_pnt: float, fov_radius: float
) -> xr.Dataset:
    """The circles that reach into the field of view.

    A circle is kept if ``separation(pointing, centre) - radius < fov_radius``
    (strict), i.e. if some of it lies closer than ``fov_radius`` to the pointing.
    All angles in deg.
    """
    ra, dec, radius = _region_arrays(regions)
    sep = separation(ra_pnt, dec_pnt, ra, dec)
    return regions.isel({SOURCE_DIM: np.flatnonzero(sep - radius < fov_radius)})


# ---------------------------------------------------------------------------
# Catalogues
# ---------------------------------------------------------------------------


def _find(columns: Sequence[str], wanted: str) -> str | None:
    """The column called ``wanted`` ignoring case, or None."""
    for c in columns:
        # A damaged header can leave a column without name (None).
        if isinstance(c, str) and c.lower() == wanted.lower():
            return c
    return None


def _schema(
    columns: Sequence[str], radius_column: str | None
) -> tuple[tuple[str, str] | None, str | None, str | None]:
    """Position pair, size column and name column found among ``columns``."""
    position = None
    for ra_name, dec_name in _POSITION_COLUMNS:
        ra_col, dec_col = _find(columns, ra_name), _find(columns, dec_name)
        if ra_col and dec_col:
            position = (ra_col, dec_col)
            break
    candidates = (radius_column,) if radius_column else _SIZE_COLUMNS
    size = next((c for c in (_find(columns, w) for w in candidates) if c), None)
    name = next((c for c in (_find(columns, w) for w in _NAME_COLUMNS) if c), None)
    return position, size, name


def _accepted(radius_column: str | None) -> str:
    positions = " or ".join(f"{a}/{b}" for a, b in _POSITION_COLUMNS)
    sizes = repr(radius_column) if radius_column else " or ".join(_SIZE_COLUMNS)
    return (
        f"accepted: position columns {positions}; size column {sizes} "
        "(case-insensitive; choose another with radius_column=...)"
    )


def _missing(columns: Sequence[str], radius_column: str | None) -> list[str]:
    position, size, _ = _schema(columns, radius_column)
    missing = []
    if position is None:
        missing.append("position (RA/DEC)")
    if size is None:
        missing.append(f"size ({radius_column})" if radius_column else "size")
    return missing


@dataclass(frozen=True)
class _SourceTable:
    """The columns of a source table (masked arrays where values are missing) and their units."""

    columns: Mapping[str, NDArray[Any]]
    units: Mapping[str, str]

    @property
    def colnames(self) -> list[str]:
        return list(self.columns)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0


def _from_astropy(table: Table) -> _SourceTable:
    units = {n: str(table[n].unit) for n in table.colnames if table[n].unit is not None}
    return _SourceTable({n: table[n] for n in table.colnames}, units)


def _read_table(path: Path, radius_column: str | None) -> _SourceTable:
    """Read the source table of a catalogue file (FITS: pick the right HDU)."""
    if not path.is_file():
        raise CatalogError(f"{path}: catalogue file not found; check the path")
    suffixes = [s.lower() for s in path.suffixes]
    if any(s in _FITS_SUFFIXES for s in suffixes):
        fast = _read_fits_fast(path, radius_column)
        if fast is not None:
            return fast
    try:
        with strict_warnings():
            return _from_astropy(_read_source_table(path, radius_column))
    except XbkgError:
        raise
    except read_errors() as exc:
        text = describe(exc)
        if isinstance(exc, (EOFError, zlib.error)) or "truncated" in str(exc):
            hint = "the file is incomplete (truncated or a broken gzip stream), download it again"
        else:
            hint = "the file is damaged or not a table in a format astropy reads, replace it"
        raise CatalogError(f"cannot read catalogue {path} ({text}); {hint}") from exc


def _read_fits_fast(path: Path, radius_column: str | None) -> _SourceTable | None:
    """The schema's columns of the source table, read without astropy (None: use astropy).

    The table named ``HGPS_SOURCES`` if there is one, else the first with usable columns.
    """

    def rank(name: str, names: list[str]) -> int | None:
        if name.upper() == _PREFERRED_HDU:
            return 0
        return 1 if not _missing(names, radius_column) else None

    def wanted(names: list[str]) -> list[str]:
        # Only the columns the schema uses are decoded (a catalogue has dozens).
        position, size, name = _schema(names, radius_column)
        return [c for c in (*(position or ()), size, name) if c]

    table = read_table(path, rank, wanted)
    if table is None:
        return None
    return _SourceTable(table.columns, table.units)


def _read_source_table(path: Path, radius_column: str | None) -> Table:
    from astropy.io import fits
    from astropy.table import Table

    suffixes = [s.lower() for s in path.suffixes]
    if not any(s in _FITS_SUFFIXES for s in suffixes):
        return Table.read(path)
    with open_fits(path) as hdul:
        tables = [h for h in hdul if isinstance(h, (fits.BinTableHDU, fits.TableHDU))]
        chosen = next((h for h in tables if h.name.upper() == _PREFERRED_HDU), None)
        if chosen is None:
            chosen = next((h for h in tables if not _missing(h.columns.names, radius_column)), None)
        if chosen is None:
            found = "; ".join(
                f"HDU {h.name or '(unnamed)'} lacks "
                + ", ".join(_missing(h.columns.names, radius_column))
                for h in tables
            )
            raise CatalogError(
                f"no source table in catalogue {path}: {found or 'the file has no table HDU'}; "
                f"{_accepted(radius_column)}"
            )
        # Only the columns the schema uses are converted (a catalogue has dozens,
        # some of them vectors; reading them all is most of the time spent here).
        position, size, name = _schema(chosen.columns.names, radius_column)
        wanted = {c for c in (*(position or ()), size, name) if c}
        columns = [c for c in chosen.columns if c.name in wanted]
        return Table.read(fits.BinTableHDU.from_columns(columns, name=chosen.name))


#: Angle units of catalogue columns, in deg; others are converted by astropy.
_DEGREES = {"deg": 1.0, "degree": 1.0, "rad": 180 / math.pi, "arcmin": 1 / 60, "arcsec": 1 / 3600}


def _degrees(table: _SourceTable, column: str, what: str) -> NDArray[np.float64]:
    """Column values in deg (unitless means deg); masked entries become NaN."""
    col = table.columns[column]
    try:
        values = np.asarray(np.ma.getdata(col), dtype=np.float64)
    except (TypeError, ValueError):
        raise CatalogError(
            f"column {column!r} of {what} is not numeric (dtype {np.asarray(col).dtype}); "
            "give angles as numbers in deg or with an angle unit"
        ) from None
    values = np.where(np.ma.getmaskarray(col), np.nan, values)
    unit = table.units.get(column, "").strip()
    if unit in ("", "1"):
        return values
    if unit in _DEGREES:
        return values * _DEGREES[unit]
    import astropy.units as u

    try:
        return (values * u.Unit(unit)).to_value(u.deg)
    except (u.UnitsError, TypeError, ValueError):
        raise CatalogError(
            f"column {column!r} of {what} has unit {unit!s}, which is not an angle"
        ) from None


def _names(table: _SourceTable, column: str | None) -> list[str]:
    if column is None:
        return [f"row {i}" for i in range(len(table))]
    out = []
    for v in table.columns[column]:
        text = v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
        out.append(text.strip().strip("\x00"))
    return out


def _regions_from_table(
    table: _SourceTable,
    what: str,
    *,
    min_radius: float,
    default_radius: float,
    radius_column: str | None,
    attrs: dict[str, str],
) -> xr.Dataset:
    if not (min_radius >= 0 and default_radius > 0):
        raise ConfigError(
            f"need min_radius >= 0 and default_radius > 0, got {min_radius}, {default_radius}"
        )
    position, size_col, name_col = _schema(table.colnames, radius_column)
    missing = _missing(table.colnames, radius_column)
    if missing:
        raise CatalogError(
            f"{what} lacks the {' and '.join(missing)} column(s); it has {table.colnames}; "
            f"{_accepted(radius_column)}"
        )
    # Guaranteed by the check above; tells the type checker.
    assert position is not None
    assert size_col is not None
    names = _names(table, name_col)
    ra = _degrees(table, position[0], what)
    dec = _degrees(table, position[1], what)
    size = _degrees(table, size_col, what)
    bad = np.flatnonzero(~(np.isfinite(ra) & np.isfinite(dec)) | (np.abs(dec) > 90))
    if bad.size:
        raise CatalogError(f"{what} has missing or invalid positions in rows {_rows(bad, names)}")
    # A missing size (masked or NaN) means "no measured extension": use the default.
    size = np.where(np.isfinite(size), size, default_radius)
    radius = np.maximum(size, min_radius)
    bad = np.flatnonzero((radius <= 0) | (radius >= 180))
    if bad.size:
        raise CatalogError(
            f"{what}: exclusion radius not in (0, 180) deg in rows {_rows(bad, names)} "
            f"(column {size_col!r}, min_radius={min_radius})"
        )
    return _make_regions(np.mod(ra, 360.0), dec, radius, names, attrs)


def regions_from_table(
    table: Table,
    *,
    min_radius: float = DEFAULT_MIN_RADIUS,
    default_radius: float = DEFAULT_SOURCE_RADIUS,
    radius_column: str | None = None,
) -> xr.Dataset:
    """Region list from an in-memory :class:`astropy.table.Table`.

    Same rules as :func:`read_catalog`.
    """
    return _regions_from_table(
        _from_astropy(table),
        "the table",
        min_radius=min_radius,
        default_radius=default_radius,
        radius_column=radius_column,
        attrs={},
    )


def _shipped(name: str) -> Path:
    """The file of a catalogue shipped with xbkg."""
    from importlib.resources import files

    return Path(str(files("xbkg").joinpath(CATALOGS[name])))


def read_catalog(
    path: str | Path,
    *,
    min_radius: float = DEFAULT_MIN_RADIUS,
    default_radius: float = DEFAULT_SOURCE_RADIUS,
    radius_column: str | None = None,
) -> xr.Dataset:
    """Read a source catalogue as a region list.

    Recognised layouts (column names matched case-insensitively):

    * gamma-cat: ``ra``, ``dec``, ``morph_sigma``, names from ``common_name``;
    * HGPS: ``RAJ2000``, ``DEJ2000``, ``Size``, names from ``Source_Name``
      (table ``HGPS_SOURCES`` of the multi-table file);
    * generic (Gammapy 0.6 exclusion table): ``RA``, ``DEC``, ``Radius``,
      names from ``Name`` if present.

    In a FITS file the table HDU named ``HGPS_SOURCES`` is used if present,
    else the first table with usable columns. Other formats are read with
    :meth:`astropy.table.Table.read` (e.g. ECSV). Column units are honoured
    (converted to deg); a column without unit is taken to be in deg.

    The exclusion radius is ``max(size, min_radius)``, where a missing size
    (masked or NaN) is replaced by ``default_radius`` first. Note that gamma-cat's
    ``morph_sigma`` is a Gaussian width, not a containment radius.

    Parameters
    ----------
    path
        Catalogue file, or the name of a catalogue shipped with xbkg
        (:data:`CATALOGS`: ``"gammacat"``, gamma-cat's 162 TeV sources; CC
        BY-NC-SA 4.0, see the README next to the file for the citation).
    min_radius
        Smallest exclusion radius in deg. Gammapy 0.6 applied none (use 0 to
        reproduce it).
    default_radius
        Radius in deg for sources without a size.
    radius_column
        Use this column as the size instead of the recognised ones.

    Returns
    -------
    xarray.Dataset
        Region list (dimension ``source``), attribute ``catalog`` = file
        name, or the name of a shipped catalogue.

    Raises
    ------
    xbkg.errors.CatalogError
        Naming the file: if it does not exist, is damaged or truncated, lacks
        usable columns (naming the missing and the accepted ones), or has rows
        with missing or invalid positions or radii.
    xbkg.errors.ConfigError
        If ``min_radius`` or ``default_radius`` cannot work. Both errors are
        ``ValueError`` subclasses.
    """
    name = None
    if isinstance(path, str) and path in CATALOGS:
        name, path = path, _shipped(path)
    path = Path(path)
    table = _read_table(path, radius_column)
    return _regions_from_table(
        table,
        f"catalogue {path}",
        min_radius=min_radius,
        default_radius=default_radius,
        radius_column=radius_column,
        attrs={"catalog": name or path.name},
    )


def catalog_regions(
    catalogs: Sequence[str | Path], *, min_radius: float = DEFAULT_MIN_RADIUS
) -> xr.Dataset | None:
    """The exclusion circles of some catalogues together; None for none.

    Parameters
    ----------
    catalogs
        Names of shipped catalogues (:data:`CATALOGS`) or catalogue files,
        read with :func:`read_catalog`; :data:`NO_CATALOG` alone means none.
    min_radius
        Smallest exclusion radius in deg.
    """
    names = [str(c) for c in catalogs]
    if names == [NO_CATALOG]:
        return None
    if NO_CATALOG in names:
        raise ConfigError(f"exclusion {names}: {NO_CATALOG!r} cannot be combined with catalogues")
    regions = [read_catalog(c, min_radius=min_radius) for c in catalogs]
    if not regions:
        return None
    return regions[0] if len(regions) == 1 else combine_regions(*regions)


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
    ra_c, dec_c, rad_c = _region_arrays(regions)
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
    ra_c, dec_c, rad_c = _region_arrays(regions)
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
    ra_c, dec_c, rad_c = _region_arrays(regions)
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

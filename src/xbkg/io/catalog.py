"""Source catalogues as exclusion regions: gamma-cat (shipped), HGPS, generic tables.

:func:`read_catalog` reads a catalogue file (or one shipped with xbkg, by
name) into a region list (:mod:`xbkg.regions`); :func:`catalog_regions` joins
the catalogues of :attr:`xbkg.options.Options.exclude`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import astropy.units as u
import numpy as np
import xarray as xr
from astropy.io import fits
from astropy.io.registry import IORegistryError
from astropy.table import Table
from numpy.typing import NDArray

from xbkg.conventions import CATALOGS, DEFAULT_MIN_RADIUS, DEFAULT_SOURCE_RADIUS, NO_CATALOG
from xbkg.errors import CatalogError, ConfigError, describe
from xbkg.io.fitsread import DamagedFile, read_fits
from xbkg.regions import combine_regions, describe_rows, make_regions

__all__ = ["CATALOGS", "catalog_regions", "read_catalog", "regions_from_table"]

# Accepted catalogue columns, matched case-insensitively, in order of preference.
_POSITION_COLUMNS: tuple[tuple[str, str], ...] = (("RAJ2000", "DEJ2000"), ("RA", "DEC"))
_SIZE_COLUMNS: tuple[str, ...] = ("Radius", "Size", "morph_sigma")
_NAME_COLUMNS: tuple[str, ...] = ("Source_Name", "common_name", "Name")
# The HGPS catalogue file holds several tables; the sources are in this one.
_PREFERRED_HDU = "HGPS_SOURCES"
_FITS_SUFFIXES = (".fits", ".fit", ".fts")


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


def _read_table(path: Path, radius_column: str | None) -> Table:
    """Read the source table of a catalogue file (FITS: pick the right HDU)."""
    if not path.is_file():
        raise CatalogError(f"{path}: catalogue file not found; check the path")
    if not any(s.lower() in _FITS_SUFFIXES for s in path.suffixes):
        try:
            return Table.read(path)
        except (ValueError, OSError, IORegistryError) as exc:
            raise CatalogError(
                f"cannot read catalogue {path} ({describe(exc)}); the file is damaged or not "
                "a table in a format astropy reads, replace it"
            ) from exc
    try:
        hdul = read_fits(path)
    except DamagedFile as exc:
        raise CatalogError(
            f"cannot read catalogue {path} ({exc}); the file is damaged or incomplete, "
            "download it again"
        ) from exc
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
    try:
        return Table.read(fits.BinTableHDU.from_columns(columns), unit_parse_strict="silent")
    except u.UnitsError as exc:  # a unit astropy refuses even silently, e.g. TUNITn = '0'
        raise CatalogError(
            f"cannot read catalogue {path} ({exc}); the file is damaged, download it again"
        ) from exc


def _degrees(table: Table, column: str, what: str) -> NDArray[np.float64]:
    """Column values in deg (unitless means deg); masked entries become NaN."""
    col = table[column]
    try:
        values = np.asarray(np.ma.getdata(col), dtype=np.float64)
    except (TypeError, ValueError):
        raise CatalogError(
            f"column {column!r} of {what} is not numeric (dtype {np.asarray(col).dtype}); "
            "give angles as numbers in deg or with an angle unit"
        ) from None
    values = np.where(np.ma.getmaskarray(col), np.nan, values)
    if col.unit is None or col.unit == u.dimensionless_unscaled:
        return values
    try:
        return values * col.unit.to(u.deg)
    except (u.UnitsError, ValueError):
        raise CatalogError(
            f"column {column!r} of {what} has unit {col.unit!s}, which is not an angle"
        ) from None


def _names(table: Table, column: str | None) -> list[str]:
    if column is None:
        return [f"row {i}" for i in range(len(table))]
    out = []
    for v in table[column]:
        text = v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
        out.append(text.strip().strip("\x00"))
    return out


def _regions_from_table(
    table: Table,
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
        rows = describe_rows(bad, names)
        raise CatalogError(f"{what} has missing or invalid positions in rows {rows}")
    # A missing size (masked or NaN) means "no measured extension": use the default.
    size = np.where(np.isfinite(size), size, default_radius)
    radius = np.maximum(size, min_radius)
    bad = np.flatnonzero((radius <= 0) | (radius >= 180))
    if bad.size:
        raise CatalogError(
            f"{what}: exclusion radius not in (0, 180) deg in rows {describe_rows(bad, names)} "
            f"(column {size_col!r}, min_radius={min_radius})"
        )
    return make_regions(np.mod(ra, 360.0), dec, radius, names, attrs)


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
        table,
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

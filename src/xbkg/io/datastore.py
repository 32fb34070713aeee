"""GADF data stores: the HDU and observation indexes, run selection, event reading.

A data store is a folder with ``hdu-index.fits.gz`` (where each HDU of each
run is) and ``obs-index.fits.gz`` (one row of conditions per run).
``FILE_DIR`` is relative to the index file's folder unless the index has a
``BASE_DIR`` keyword. Old stores (GADF v0.1) pad strings with NUL bytes and
leave units off; HDU names are matched case-insensitively.

The run conditions are exposed as an :class:`xarray.Dataset` along ``obs_id``
(:func:`run_table`), so selecting runs is a labelled operation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xbkg.conventions import HDU_INDEX_FILE, OBS_DIM, OBS_INDEX_FILE, coord_name
from xbkg.errors import DataStoreError, XbkgWarning, describe
from xbkg.io.eventfile import DamagedFile, read_table, read_table_columns
from xbkg.io.fitsfile import open_fits, read_errors, write_table
from xbkg.io.gzipcheck import check_gzip_file
from xbkg.io.outputs import all_or_nothing

if TYPE_CHECKING:
    import xarray as xr
    from astropy.io import fits
    from astropy.table import Table

__all__ = [
    "DataStore",
    "EventList",
    "IndexTable",
    "copy_runs",
    "event_locations",
    "hdu_location",
    "index_problems",
    "open_datastore",
    "read_events",
    "read_run_templates",
    "run_table",
    "select_runs",
    "selected_rows",
]

#: Columns the HDU index must have (GADF).
HDU_INDEX_COLUMNS = ("OBS_ID", "HDU_TYPE", "HDU_CLASS", "FILE_DIR", "FILE_NAME", "HDU_NAME")
#: Observatory site keywords (deg, deg, m): GADF puts them in the obs-index header
#: (for all runs), else they are read from each run's EVENTS header.
SITE_KEYWORDS = ("GEOLAT", "GEOLON", "ALTITUDE")
#: Header keywords copied into the run table when the obs-index lacks the column.
HEADER_RUN_KEYWORDS = (
    "RA_PNT",
    "DEC_PNT",
    "ALT_PNT",
    "AZ_PNT",
    "ONTIME",
    "LIVETIME",
    "DEADC",
    "TSTART",
    "TSTOP",
    "MUONEFF",
    "N_TELS",
    *SITE_KEYWORDS,
)
#: Text keyword naming the instrument, taken with the site keywords (:func:`run_table`).
TELESCOP_KEYWORD = "TELESCOP"
DAMAGED = "the file is damaged or incomplete: copy it again, or leave the run out"
MISSING_FILE = (
    "file listed in the HDU index does not exist; fix FILE_DIR/FILE_NAME in the HDU index "
    "or leave the run out"
)
#: Run-table attribute: JSON ``{obs_id: message}`` of runs whose EVENTS header
#: could not be read to complete the obs-index.
UNREADABLE_ATTR = "unreadable_runs"
_UNITS = {
    "RA_PNT": "deg",
    "DEC_PNT": "deg",
    "ALT_PNT": "deg",
    "AZ_PNT": "deg",
    "ZEN_PNT": "deg",
    "GLON_PNT": "deg",
    "GLAT_PNT": "deg",
    "ONTIME": "s",
    "LIVETIME": "s",
    "TSTART": "s",
    "TSTOP": "s",
    "SAFE_ENERGY_LO": "TeV",
    "SAFE_ENERGY_HI": "TeV",
    "GEOLAT": "deg",
    "GEOLON": "deg",
    "ALTITUDE": "m",
}


def _clean_str(value: Any) -> str:
    """Decode a FITS string cell and strip NUL padding and blanks (old GADF writers)."""
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    return str(value).replace("\x00", "").strip()


@dataclass(frozen=True)
class IndexTable:
    """A GADF index table: one numpy array per column, with units and header keywords.

    Strings are ``str`` with NUL padding and blanks stripped. Index columns
    ``table["OBS_ID"]``, rows ``table.take(mask)``; :meth:`to_table` gives an
    :class:`astropy.table.Table`.

    Attributes
    ----------
    columns
        Column name -> values (one per row), in file order.
    units
        Column name -> unit, for the columns that have one.
    header
        ``(keyword, value)`` of the header keywords that do not describe the
        table layout, in file order (COMMENT and HISTORY included).
    """

    columns: Mapping[str, NDArray[Any]]
    units: Mapping[str, str]
    header: tuple[tuple[str, Any], ...] = ()

    def __getitem__(self, name: str) -> NDArray[Any]:
        return self.columns[name]

    def __contains__(self, name: object) -> bool:
        return name in self.columns

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Rows as ``{column: value}``."""
        for i in range(len(self)):
            yield {name: values[i] for name, values in self.columns.items()}

    @property
    def colnames(self) -> list[str]:
        """Column names in file order."""
        return list(self.columns)

    @property
    def meta(self) -> dict[str, Any]:
        """Header keyword values (COMMENT and HISTORY left out; the first card of a keyword)."""
        out: dict[str, Any] = {}
        for key, value in self.header:
            if key not in ("COMMENT", "HISTORY"):
                out.setdefault(key, value)
        return out

    def take(self, rows: NDArray[Any]) -> IndexTable:
        """The table of some rows (a boolean mask or row numbers)."""
        return dataclasses.replace(
            self, columns={name: values[rows] for name, values in self.columns.items()}
        )

    def to_table(self) -> Table:
        """The table as an :class:`astropy.table.Table` (units and keywords kept)."""
        import astropy.units as u
        from astropy.table import Table

        table = Table()
        for name, values in self.columns.items():
            unit = self.units.get(name)
            table[name] = values
            if unit:
                table[name].unit = u.Unit(unit, parse_strict="silent")
        table.meta.update(self.meta)
        comments = [str(v) for k, v in self.header if k == "COMMENT"]
        if comments:
            table.meta["comments"] = comments
        return table

    def write(self, path: str | Path, extname: str, *, overwrite: bool = False) -> Path:
        """Write as a FITS binary table named ``extname`` (gzip if the name ends in .gz)."""
        return write_table(
            self.columns,
            path,
            extname,
            units=self.units,
            header=[(k, v) for k, v in self.header if k != "BASE_DIR"],
            overwrite=overwrite,
        )


def _from_astropy(table: Table) -> IndexTable:
    """An index read by astropy: scalar columns only, masked values as NaN, strings cleaned."""
    columns: dict[str, NDArray[Any]] = {}
    units: dict[str, str] = {}
    for name in table.colnames:
        column = table[name]
        data: np.ma.MaskedArray = np.ma.asarray(column)
        if data.ndim != 1:
            continue  # vector cells: not an index column
        if data.dtype.kind in "SUO":
            columns[name] = np.array([_clean_str(v) for v in data.filled("")], dtype=str)
        elif data.dtype.kind in "iu" and np.ma.is_masked(data):
            columns[name] = np.ma.filled(data.astype(np.float64), np.nan)
        elif data.dtype.kind == "f":
            columns[name] = np.ma.filled(data, np.nan).astype(data.dtype.newbyteorder("="))
        elif data.dtype.kind in "iu":
            columns[name] = np.asarray(data.data, dtype=np.int64)
        else:
            columns[name] = np.asarray(data.data)
        if getattr(column, "unit", None) is not None:
            units[name] = column.unit.to_string()
    header: list[tuple[str, Any]] = []
    for key, value in table.meta.items():
        if key.lower() in ("comments", "history"):
            header += [(key.upper().rstrip("S"), str(v)) for v in value]
        elif key != "EXTNAME" and isinstance(value, (bool, int, float, str)):
            header.append((key, value))
    return IndexTable(columns, units, tuple(header))


def _read_index(path: Path, kind: str) -> IndexTable:
    if not path.is_file():
        raise DataStoreError(
            f"{path}: {kind} not found; a GADF data store needs {HDU_INDEX_FILE} and "
            f"{OBS_INDEX_FILE} in its folder"
        )
    fast = read_table(path)
    if fast is not None:
        return IndexTable(fast.columns, fast.units, tuple(fast.header))
    # Not a layout the fast reader knows, or damaged: astropy reads or explains.
    from astropy.io import fits
    from astropy.table import Table

    try:
        with open_fits(path) as hdul:
            tables = [h for h in hdul if isinstance(h, fits.BinTableHDU)]
            if not tables:
                raise DataStoreError(
                    f"{path}: cannot read the {kind}: the file holds no table; it is damaged, "
                    "incomplete or not an index: copy it again"
                )
            table = Table.read(tables[0], unit_parse_strict="silent")
    except DataStoreError:
        raise
    except read_errors() as exc:
        raise DataStoreError(
            f"{path}: cannot read the {kind} ({describe(exc)}); {DAMAGED}"
        ) from exc
    return _from_astropy(table)


@dataclass(frozen=True)
class DataStore:
    """An opened GADF data store (indexes read, events not).

    Attributes
    ----------
    path
        Folder of the store.
    base_dir
        Folder that ``FILE_DIR`` is relative to.
    hdu_index
        The HDU index with strings cleaned (no NUL padding, lower-case
        ``HDU_TYPE``/``HDU_CLASS``).
    obs_index
        The observation index as read.
    """

    path: Path
    base_dir: Path
    hdu_index: IndexTable
    obs_index: IndexTable

    @property
    def obs_ids(self) -> NDArray[np.int64]:
        """OBS_IDs of the obs-index, in file order."""
        return np.asarray(self.obs_index["OBS_ID"], dtype=np.int64)


def open_datastore(path: str | Path) -> DataStore:
    """Open a GADF data store from its folder (or the path of its HDU index).

    Raises
    ------
    DataStoreError
        If an index is missing or unreadable or lacks required columns; the
        message names the file.
    """
    path = Path(path)
    folder = path.parent if path.is_file() else path
    hdu_path = path if path.is_file() else folder / HDU_INDEX_FILE
    if not folder.is_dir():
        raise DataStoreError(f"{folder}: data store folder not found")
    hdu_index = _read_index(hdu_path, "HDU index")
    obs_index = _read_index(folder / OBS_INDEX_FILE, "observation index")
    missing = [c for c in HDU_INDEX_COLUMNS if c not in hdu_index.colnames]
    if missing:
        raise DataStoreError(f"{hdu_path}: HDU index lacks the required columns {missing}")
    if "OBS_ID" not in obs_index.colnames:
        raise DataStoreError(f"{folder / OBS_INDEX_FILE}: observation index has no OBS_ID column")
    not_text = [c for c in HDU_INDEX_COLUMNS[1:] if hdu_index[c].dtype.kind not in "SUO"]
    if not_text:
        raise DataStoreError(
            f"{hdu_path}: HDU index columns {not_text} must hold text (FITS format A); "
            "the index is damaged or was written wrongly"
        )
    columns = dict(hdu_index.columns)
    for col in ("HDU_TYPE", "HDU_CLASS"):
        columns[col] = np.char.lower(columns[col].astype(str))
    hdu_index = dataclasses.replace(hdu_index, columns=columns)
    base = hdu_index.meta.get("BASE_DIR")
    base_dir = (hdu_path.parent / _clean_str(base)) if base else hdu_path.parent
    return DataStore(path=folder, base_dir=base_dir, hdu_index=hdu_index, obs_index=obs_index)


def hdu_location(store: DataStore, obs_id: int, hdu_type: str = "events") -> tuple[Path, str]:
    """File and HDU name of one HDU of a run (the first matching index row).

    Raises
    ------
    DataStoreError
        If the index has no such row.
    """
    index = store.hdu_index
    rows = np.flatnonzero((index["OBS_ID"] == obs_id) & (index["HDU_TYPE"] == hdu_type))
    if len(rows) == 0:
        raise DataStoreError(
            f"{store.path / HDU_INDEX_FILE}: no {hdu_type!r} HDU listed for OBS_ID {obs_id}"
        )
    row = rows[0]
    file_dir, file_name = str(index["FILE_DIR"][row]), str(index["FILE_NAME"][row])
    return store.base_dir / file_dir / file_name, str(index["HDU_NAME"][row])


def event_locations(store: DataStore) -> dict[int, tuple[Path, str]]:
    """File and HDU name of the events of every run (first index row of each run)."""
    rows = store.hdu_index.take(store.hdu_index["HDU_TYPE"] == "events")
    out: dict[int, tuple[Path, str]] = {}
    for obs_id, file_dir, file_name, hdu_name in zip(
        rows["OBS_ID"].tolist(),
        rows["FILE_DIR"].tolist(),
        rows["FILE_NAME"].tolist(),
        rows["HDU_NAME"].tolist(),
        strict=True,
    ):
        out.setdefault(int(obs_id), (store.base_dir / file_dir / file_name, str(hdu_name)))
    return out


def index_problems(store: DataStore) -> dict[int, str]:
    """Runs whose events the HDU index does not locate unambiguously.

    Returns ``{obs_id: message}`` for the runs listed in the obs-index without
    an events row in the HDU index and for runs with several events rows.
    """
    hdu_path = store.path / HDU_INDEX_FILE
    events = np.asarray(store.hdu_index["OBS_ID"])[store.hdu_index["HDU_TYPE"] == "events"]
    ids, n_rows = np.unique(events.astype(np.int64), return_counts=True)
    problems = {
        int(i): f"{hdu_path}: OBS_ID {int(i)} has {int(n)} events rows; keep one"
        for i, n in zip(ids, n_rows, strict=True)
        if n > 1
    }
    for obs_id in np.setdiff1d(store.obs_ids, ids).tolist():
        problems[int(obs_id)] = (
            f"{hdu_path}: OBS_ID {obs_id} is in the obs-index but has no events row in the "
            "HDU index; add the row or leave the run out (select_runs)"
        )
    return dict(sorted(problems.items()))


def _column_to_variable(values: NDArray[Any], unit: str | None, name: str) -> xr.Variable:
    import xarray as xr

    # Index columns are floats, int64 (NaN floats where values are missing:
    # there is no integer "missing" value), bool or cleaned str.
    if values.dtype.kind == "f":
        values = values.astype(np.float64)
    units = unit if unit is not None else _UNITS.get(name, "")
    attrs = {"gadf_name": name}
    if units:
        attrs["units"] = units
    return xr.Variable(OBS_DIM, values, attrs=attrs)


def run_table(store: DataStore, *, complete: bool = True) -> xr.Dataset:
    """The observation index as a Dataset along ``obs_id``.

    Columns become variables named in lower case (``ZEN_PNT`` -> ``zen_pnt``)
    with ``units`` and the original ``gadf_name`` in their attributes.

    Parameters
    ----------
    store
        The data store.
    complete
        Fill conditions that other instruments' indexes often leave out:
        ``ZEN_PNT`` from ``ALT_PNT``, ``DEADC`` from ``LIVETIME / ONTIME``, and
        pointing, times, ``MUONEFF``, ``N_TELS`` and the site (``GEOLAT``,
        ``GEOLON``, ``ALTITUDE``, ``TELESCOP``) from the EVENTS header of each
        run where the index has no value. The site keywords of the obs-index
        header (where GADF puts them) hold for every run that lacks a column.
    """
    obs = store.obs_index
    ids = np.asarray(obs["OBS_ID"], dtype=np.int64)
    unique, counts = np.unique(ids, return_counts=True)
    if unique.size != ids.size:
        dup = unique[counts > 1].tolist()
        raise DataStoreError(
            f"{store.path / OBS_INDEX_FILE}: duplicate OBS_IDs {dup}; each run needs exactly "
            "one row, remove the duplicates"
        )
    variables = {
        coord_name(c): _column_to_variable(obs[c], obs.units.get(c), c)
        for c in obs.colnames
        if c != "OBS_ID"
    }
    unindexed = np.setdiff1d(np.asarray(store.hdu_index["OBS_ID"], dtype=np.int64), ids)
    if unindexed.size:
        warnings.warn(
            f"{store.path / HDU_INDEX_FILE}: OBS_IDs {unindexed.tolist()} have HDUs but no "
            f"row in {OBS_INDEX_FILE}; they are not used",
            XbkgWarning,
            stacklevel=2,
        )
    import xarray as xr

    runs = xr.Dataset(variables, coords={OBS_DIM: ids})
    runs[OBS_DIM].attrs = {"long_name": "observation id", "gadf_name": "OBS_ID"}
    if complete:
        runs = _complete_runs(store, runs)
    return runs


def _needs(runs: xr.Dataset, name: str) -> NDArray[np.bool_]:
    if name not in runs:
        return np.ones(runs.sizes[OBS_DIM], dtype=bool)
    values = runs[name].values
    if values.dtype.kind != "f":
        return np.zeros(values.shape, dtype=bool)
    return ~np.isfinite(values)


def _set(runs: xr.Dataset, gadf: str, values: NDArray[np.float64], fill: NDArray[np.bool_]) -> None:
    import xarray as xr

    name = coord_name(gadf)
    old = runs[name].values.astype(np.float64) if name in runs else np.full(fill.shape, np.nan)
    new = np.where(fill, values, old)
    attrs = {"gadf_name": gadf}
    if gadf in _UNITS:
        attrs["units"] = _UNITS[gadf]
    runs[name] = xr.Variable(OBS_DIM, new, attrs=attrs)


def _header_float(value: Any) -> float:
    """A numeric header value (some writers store numbers as text); NaN if it is none."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return np.nan


def _site_from_index_header(store: DataStore, runs: xr.Dataset) -> None:
    """Site keywords of the obs-index header, for the runs without a column value."""
    import xarray as xr

    meta = store.obs_index.meta
    n = runs.sizes[OBS_DIM]
    for key in SITE_KEYWORDS:
        if key in meta:
            _set(runs, key, np.full(n, _header_float(meta[key])), _needs(runs, coord_name(key)))
    name = coord_name(TELESCOP_KEYWORD)
    if name not in runs and TELESCOP_KEYWORD in meta:
        text = _clean_str(meta[TELESCOP_KEYWORD])
        runs[name] = xr.Variable(OBS_DIM, np.full(n, text), {"gadf_name": TELESCOP_KEYWORD})


def _complete_runs(store: DataStore, runs: xr.Dataset) -> xr.Dataset:
    import xarray as xr

    runs = runs.copy()
    _site_from_index_header(store, runs)
    telescop = coord_name(TELESCOP_KEYWORD)
    missing_header = np.zeros(runs.sizes[OBS_DIM], dtype=bool)
    for key in HEADER_RUN_KEYWORDS:
        missing_header |= _needs(runs, coord_name(key))
    if missing_header.any():
        # Only what the index lacks is read, and only from the EVENTS header.
        values = {key: np.full(runs.sizes[OBS_DIM], np.nan) for key in HEADER_RUN_KEYWORDS}
        names = np.full(runs.sizes[OBS_DIM], "", dtype=object)
        unreadable: dict[int, str] = {}
        for i, obs_id in enumerate(runs[OBS_DIM].values):
            if not missing_header[i]:
                continue
            try:
                path, hdu = hdu_location(store, int(obs_id))
                header = _read_header(path, hdu)
            except DataStoreError as exc:
                # Reported by the per-run checks of the binning pass, which can skip the run.
                unreadable[int(obs_id)] = str(exc)
                continue
            for key in HEADER_RUN_KEYWORDS:
                if key in header:
                    with contextlib.suppress(TypeError, ValueError):
                        values[key][i] = float(header[key])
            names[i] = _clean_str(header.get(TELESCOP_KEYWORD, ""))
        for key in HEADER_RUN_KEYWORDS:
            _set(runs, key, values[key], _needs(runs, coord_name(key)))
        if telescop not in runs and any(names):
            runs[telescop] = xr.Variable(
                OBS_DIM, names.astype(str), {"gadf_name": TELESCOP_KEYWORD}
            )
        if unreadable:
            runs.attrs[UNREADABLE_ATTR] = json.dumps(unreadable, sort_keys=True)
        if "ONTIME" in HEADER_RUN_KEYWORDS:
            duration = runs["tstop"].values - runs["tstart"].values
            _set(runs, "ONTIME", duration, _needs(runs, "ontime"))
    if "alt_pnt" in runs:
        _set(runs, "ZEN_PNT", 90.0 - runs["alt_pnt"].values, _needs(runs, "zen_pnt"))
    if "zen_pnt" in runs:
        _set(runs, "ALT_PNT", 90.0 - runs["zen_pnt"].values, _needs(runs, "alt_pnt"))
    if "livetime" in runs and "ontime" in runs:
        with np.errstate(divide="ignore", invalid="ignore"):  # bad durations are reported later
            ratio = runs["livetime"].values / runs["ontime"].values
        _set(runs, "DEADC", ratio, _needs(runs, "deadc"))
    if "deadc" in runs and "ontime" in runs:
        live = runs["ontime"].values * runs["deadc"].values
        _set(runs, "LIVETIME", live, _needs(runs, "livetime"))
    return runs


def _read_header(path: Path, hdu: str) -> fits.Header:
    try:
        with open_fits(path) as hdul:
            return hdul[_find_hdu(hdul, hdu, path)].header.copy()
    except FileNotFoundError as exc:
        raise DataStoreError(f"{path}: {MISSING_FILE}") from exc
    except DataStoreError:
        raise
    except read_errors() as exc:
        raise DataStoreError(
            f"{path}: cannot read the header ({describe(exc)}); {DAMAGED}"
        ) from exc


def _find_hdu(hdul: fits.HDUList, name: str, path: Path) -> int:
    wanted = name.strip().upper()
    for i, h in enumerate(hdul):
        if str(h.name).strip().upper() == wanted:
            return i
    # Old files may lack EXTNAME: fall back to the HDUNAME keyword.
    for i, h in enumerate(hdul):
        if _clean_str(h.header.get("HDUNAME", "")).upper() == wanted:
            return i
    names = [h.name for h in hdul]
    raise DataStoreError(
        f"{path}: no HDU named {name!r} (the file has {names}); fix HDU_NAME in the HDU index, "
        "or, if the HDU should be there, the file is damaged or incomplete: copy it again"
    )


def select_runs(
    runs: xr.Dataset,
    obs_ids: Iterable[int] | None = None,
    ranges: Mapping[str, tuple[float | None, float | None]] | None = None,
) -> xr.Dataset:
    """Select runs by OBS_ID and by half-open ranges ``[lo, hi)`` of run conditions.

    Parameters
    ----------
    runs
        Run table (:func:`run_table`) or any Dataset along ``obs_id``.
    obs_ids
        Runs to keep, in this order. Unknown ids raise an error.
    ranges
        ``{column: (lo, hi)}``; ``None`` leaves a side open. Write ``"|GLAT_PNT|"``
        to select on the absolute value. Column names are case-insensitive.

    Examples
    --------
    >>> select_runs(runs, ranges={"|GLAT_PNT|": (5, None)})  # doctest: +SKIP
    """
    rows = selected_rows(runs[OBS_DIM].values, runs.variables, obs_ids, ranges)
    return runs.isel({OBS_DIM: rows})


def selected_rows(
    ids: ArrayLike,
    columns: Mapping[Any, ArrayLike],
    obs_ids: Iterable[int] | None = None,
    ranges: Mapping[str, tuple[float | None, float | None]] | None = None,
) -> NDArray[np.intp]:
    """The rows :func:`select_runs` keeps, from the run columns as plain arrays.

    Parameters
    ----------
    ids
        OBS_ID of every row.
    columns
        Run columns by lower-case name (:func:`xbkg.conventions.coord_name`).
    obs_ids, ranges
        As for :func:`select_runs`.
    """
    ids = np.asarray(ids, dtype=np.int64)
    rows = np.arange(ids.size)
    if obs_ids is not None:
        wanted = np.asarray(list(obs_ids), dtype=np.int64)
        unknown = np.setdiff1d(wanted, ids)
        if unknown.size:
            raise DataStoreError(f"OBS_IDs not in the data store: {unknown.tolist()}")
        row_of = {obs_id: i for i, obs_id in enumerate(ids.tolist())}
        rows = np.array([row_of[obs_id] for obs_id in wanted.tolist()], dtype=np.intp)
    for key, (lo, hi) in (ranges or {}).items():
        absolute = key.startswith("|") and key.endswith("|")
        name = coord_name(key.strip("|"))
        if name not in columns:
            # Named as users type them: the obs-index column names, upper-case.
            available = sorted(str(c).upper() for c in columns if c != OBS_DIM)
            raise DataStoreError(
                f"cannot select on {key!r}: no such run column; available: {available}"
            )
        values = np.asarray(columns[name])[rows].astype(np.float64)
        if absolute:
            values = np.abs(values)
        keep = np.isfinite(values)
        if lo is not None:
            keep &= values >= lo
        if hi is not None:
            keep &= values < hi
        rows = rows[keep]
    return rows


@dataclass(frozen=True)
class EventList:
    """The event columns needed for binning (TeV, deg) and the EVENTS header values."""

    ra: NDArray[np.float64]
    dec: NDArray[np.float64]
    energy: NDArray[np.float64]
    header: Mapping[str, Any]
    path: Path


#: Conversion factors of the units event lists use, so that astropy is needed
#: only for others (exact: 1 eV = 1.602176634e-19 J by definition).
_FACTORS = {
    "deg": {"deg": 1.0, "rad": 180.0 / np.pi, "arcmin": 1 / 60, "arcsec": 1 / 3600},
    "TeV": {
        "TeV": 1.0,
        "GeV": 1e-3,
        "MeV": 1e-6,
        "keV": 1e-9,
        "eV": 1e-12,
        "PeV": 1e3,
        "J": 1e-12 / 1.602176634e-19,
        "erg": 1e-19 / 1.602176634e-19,
    },
}


def _to_unit(
    values: NDArray[np.float64], unit: str | None, target: str, path: Path, column: str
) -> NDArray[np.float64]:
    """``values`` converted from the column's ``unit`` (TUNITn) to ``target``."""
    if not unit or unit == target:
        return values
    known = _FACTORS[target].get(unit.strip())
    if known is not None:
        return values * known
    import astropy.units as u

    try:
        factor = u.Unit(unit).to(target)
    except (ValueError, TypeError, u.UnitsError) as exc:
        raise DataStoreError(
            f"{path}: column {column} has unit {unit!r}, which is not convertible to "
            f"{target}; fix its TUNIT keyword"
        ) from exc
    return values * factor


def _column_units(cards: Mapping[str, Any], names: Sequence[str]) -> dict[str, str | None]:
    """TUNITn of the named columns (``None`` where absent or blank)."""
    number = {
        str(cards.get(f"TTYPE{i}", "")).strip().upper(): i
        for i in range(1, int(cards.get("TFIELDS", 0)) + 1)
    }
    return {
        name: str(cards.get(f"TUNIT{number.get(name, 0)}", "")).strip() or None for name in names
    }


def _events_from_columns(
    columns: Mapping[str, NDArray[np.float64]], cards: Mapping[str, Any], path: Path
) -> EventList:
    units = _column_units(cards, ("RA", "DEC", "ENERGY"))
    # Old GADF files leave ENERGY without a unit: the header's EUNIT, else TeV.
    energy_unit = units["ENERGY"] or _clean_str(cards.get("EUNIT", "TeV")) or "TeV"
    return EventList(
        ra=_to_unit(columns["RA"], units["RA"], "deg", path, "RA"),
        dec=_to_unit(columns["DEC"], units["DEC"], "deg", path, "DEC"),
        energy=_to_unit(columns["ENERGY"], energy_unit, "TeV", path, "ENERGY"),
        header=cards,
        path=path,
    )


def read_events(path: str | Path, hdu: str = "EVENTS", *, verify: bool = True) -> EventList:
    """Read RA, DEC and ENERGY of an EVENTS HDU.

    Only the EVENTS table is decompressed and only the three needed columns
    are decoded (:func:`xbkg.io.eventfile.read_table_columns`); files that the
    fast reader does not understand go through :mod:`astropy.io.fits`.
    ENERGY without a unit is taken in the header's ``EUNIT``, else TeV (the
    convention of old GADF files).

    With ``verify`` (default), a gzip-compressed file is decompressed to its
    end to check its CRC-32 and length: damage inside the EVENTS table that
    still decompresses would otherwise go unnoticed and bias the model.

    Raises
    ------
    DataStoreError
        If the file or HDU is missing or damaged or a column is absent; the
        message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataStoreError(f"{path}: {MISSING_FILE}")
    try:
        fast = read_table_columns(path, hdu, ("RA", "DEC", "ENERGY"), verify=verify)
    except DamagedFile as exc:
        raise DataStoreError(f"{path}: gzip check failed ({describe(exc)}); {DAMAGED}") from exc
    if fast is not None:
        fast_columns, fast_cards, _ = fast
        return _events_from_columns(fast_columns, fast_cards, path)
    from astropy.io import fits

    try:
        with open_fits(path) as hdul:
            table = hdul[_find_hdu(hdul, hdu, path)]
            if not isinstance(table, fits.BinTableHDU):
                raise DataStoreError(f"{path}: HDU {hdu!r} is not a binary table")
            _check_table_size(table.header, path)
            names = [str(n).upper() for n in table.columns.names]
            missing = [c for c in ("RA", "DEC", "ENERGY") if c not in names]
            if missing:
                raise DataStoreError(
                    f"{path}: EVENTS table lacks the columns {missing}; fix the file or leave "
                    "the run out (select_runs)"
                )
            data = table.data
            columns = {
                c: np.asarray(data.field(names.index(c)), dtype=np.float64)
                for c in ("RA", "DEC", "ENERGY")
            }
            cards = {k: v for k, v in table.header.items() if k not in ("COMMENT", "HISTORY", "")}
        if verify:
            check_gzip_file(path)
    except DataStoreError:
        raise
    except read_errors() as exc:
        raise DataStoreError(
            f"{path}: cannot read the events ({describe(exc)}); {DAMAGED}"
        ) from exc
    return _events_from_columns(columns, cards, path)


def _check_table_size(header: fits.Header, path: Path) -> None:
    """Refuse a table whose header claims more data than the file holds (or a negative size).

    astropy would allocate the claimed size, or read garbage for a negative one.
    """
    rows, width = header.get("NAXIS2"), header.get("NAXIS1")
    if not (isinstance(rows, int) and isinstance(width, int) and rows >= 0 and width >= 0):
        raise DataStoreError(
            f"{path}: the table header has NAXIS1 = {width!r}, NAXIS2 = {rows!r}, not sizes; "
            f"{DAMAGED}"
        )
    if rows * width > _uncompressed_size(path):
        raise DataStoreError(
            f"{path}: the table header claims {rows} rows of {width} bytes, more than the file "
            f"holds; {DAMAGED}"
        )


def _uncompressed_size(path: Path) -> int:
    """An upper bound of the size of the file's content (exact for gzip files below 4 GiB)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        if f.read(2) != b"\x1f\x8b" or size < 18:
            return size
        f.seek(-4, os.SEEK_END)
        isize = int.from_bytes(f.read(4), "little")
    # The gzip trailer holds the size modulo 4 GiB; deflate expands at most 1032-fold.
    limit = 1032 * size
    return isize if limit < (1 << 32) else limit


def read_run_templates(
    store: DataStore, obs_ids: Sequence[int], hdu_type: str = "bkg"
) -> list[xr.DataArray]:
    """The background template of each run, from the data store's HDU index.

    Parameters
    ----------
    store
        Data store (:func:`xbkg.io.datastore.open_datastore`).
    obs_ids
        Runs.
    hdu_type
        HDU type in the index (``"bkg"``).

    Returns
    -------
    list of xarray.DataArray
        One template per run (``bkg_2d`` or ``bkg_3d``), in the order of ``obs_ids``.
    """
    from xbkg.io.gadf import read_bkg

    out = []
    for obs_id in obs_ids:
        path, hdu = hdu_location(store, int(obs_id), hdu_type)
        out.append(read_bkg(path, hdu))
    return out


def copy_runs(
    store: DataStore, obs_ids: Sequence[int], out_dir: str | Path, *, overwrite: bool = False
) -> DataStore:
    """Copy the files of some runs to a new data store folder with consistent indexes.

    Files keep their ``FILE_DIR`` layout; the new indexes list only the copied
    runs (the Gammapy 0.6 ``copy_obs``).

    The copy is all or nothing (:func:`xbkg.io.outputs.all_or_nothing`).

    Raises
    ------
    DataStoreError
        For unknown OBS_IDs, files listed but missing, or index entries that
        would lead outside ``out_dir``.
    OutputExistsError
        If ``out_dir`` holds files and ``overwrite`` is false.
    """
    out_dir = Path(out_dir)
    wanted = np.asarray(list(obs_ids), dtype=np.int64)
    unknown = np.setdiff1d(wanted, store.obs_ids)
    if unknown.size:
        raise DataStoreError(f"{store.path}: OBS_IDs not in the data store: {unknown.tolist()}")
    hdu_rows = store.hdu_index.take(np.isin(store.hdu_index["OBS_ID"], wanted))
    obs_rows = store.obs_index.take(np.isin(store.obs_index["OBS_ID"], wanted))
    files = sorted(
        {Path(d) / n for d, n in zip(hdu_rows["FILE_DIR"], hdu_rows["FILE_NAME"], strict=True)}
    )
    for relative in files:
        if relative.is_absolute() or ".." in relative.parts:
            raise DataStoreError(
                f"{store.path / HDU_INDEX_FILE}: FILE_DIR/FILE_NAME {relative.as_posix()!r} "
                "would put a copy outside the output folder; copy such stores with the file "
                "system instead"
            )
        if not (store.base_dir / relative).is_file():
            raise DataStoreError(f"{store.base_dir / relative}: {MISSING_FILE}")

    def write(stage: Path) -> None:
        for relative in files:
            (stage / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(store.base_dir / relative, stage / relative)
        # BASE_DIR is dropped: the copied files lie beside the new indexes.
        hdu_rows.write(stage / HDU_INDEX_FILE, "HDU_INDEX")
        obs_rows.write(stage / OBS_INDEX_FILE, "OBS_INDEX")

    names = [HDU_INDEX_FILE, OBS_INDEX_FILE, *(r.as_posix() for r in files)]
    all_or_nothing(out_dir, names, overwrite, write)
    return open_datastore(out_dir)

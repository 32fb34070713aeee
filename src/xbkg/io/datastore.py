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
import functools
import json
import shutil
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyError
from astropy.table import Column, Table
from numpy.typing import ArrayLike, NDArray

from xbkg.conventions import HDU_INDEX_FILE, OBS_DIM, OBS_INDEX_FILE, coord_name
from xbkg.errors import DataStoreError, XbkgWarning
from xbkg.io.fitsfile import write_table
from xbkg.io.fitsread import DamagedFile, HeaderCards, NoSuchHDU, read_fits, read_table
from xbkg.io.outputs import all_or_nothing

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "DataStore",
    "EventList",
    "copy_runs",
    "event_locations",
    "gammapy_reversed_lon",
    "gammapy_reverses_lon",
    "hdu_location",
    "index_problems",
    "open_datastore",
    "read_events",
    "read_run_templates",
    "run_table",
    "select_runs",
    "selected_rows",
    "write_index",
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
#: The units GADF gives these obs-index columns and EVENTS keywords, for the run
#: table when an index leaves TUNITn out (old stores) or a value comes from a header.
_GADF_UNITS = {
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


def _index_column(column: Column) -> NDArray[Any] | None:
    """A scalar index column as plain values (masked numbers NaN, text cleaned); None if vector."""
    data: np.ma.MaskedArray = np.ma.asarray(column)
    if data.ndim != 1:
        return None  # vector cells: not an index column
    if data.dtype.kind in "SUO":
        return np.array([_clean_str(v) for v in data.filled("")], dtype=str)
    if data.dtype.kind in "iu" and np.ma.is_masked(data):
        return np.ma.filled(data.astype(np.float64), np.nan)
    if data.dtype.kind == "f":
        return np.ma.filled(data, np.nan).astype(data.dtype.newbyteorder("="))
    if data.dtype.kind in "iu":
        return np.asarray(data.data, dtype=np.int64)
    return np.asarray(data.data)


def _read_index(path: Path, kind: str) -> Table:
    """The first table of an index file, its scalar columns cleaned (:func:`_index_column`)."""
    if not path.is_file():
        raise DataStoreError(
            f"{path}: {kind} not found; a GADF data store needs {HDU_INDEX_FILE} and "
            f"{OBS_INDEX_FILE} in its folder"
        )
    try:
        hdus = read_fits(path)
    except DamagedFile as exc:
        raise DataStoreError(f"{path}: cannot read the {kind} ({exc}); {DAMAGED}") from exc
    tables = [h for h in hdus if isinstance(h, fits.BinTableHDU)]
    if not tables:
        raise DataStoreError(
            f"{path}: cannot read the {kind}: the file holds no table; it is damaged, "
            "incomplete or not an index: copy it again"
        )
    try:
        read = Table.read(tables[0], unit_parse_strict="silent")
    except u.UnitsError as exc:  # a unit astropy refuses even silently, e.g. TUNITn = '0'
        raise DataStoreError(f"{path}: cannot read the {kind} ({exc}); {DAMAGED}") from exc
    table = Table(meta={k: v for k, v in read.meta.items() if k != "EXTNAME"})
    for name in read.colnames:
        values = _index_column(read[name])
        if values is not None:
            table[name] = Column(values, unit=read[name].unit)
    return table


def write_index(table: Table, path: str | Path, extname: str, *, overwrite: bool = False) -> Path:
    """Write an index table (gzip if the name ends in .gz), without ``BASE_DIR``.

    The files an index lists lie beside it once it is written (the output of
    ``xbkg make`` or :func:`copy_runs`).
    """
    table = table.copy(copy_data=False)
    table.meta.pop("BASE_DIR", None)
    return write_table(table, path, extname, overwrite=overwrite)


def _unit(table: Table, name: str) -> str | None:
    """The unit of a column as text, or None."""
    unit = table[name].unit
    return None if unit is None else unit.to_string()


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
    hdu_index: Table
    obs_index: Table

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
    for col in ("HDU_TYPE", "HDU_CLASS"):
        hdu_index[col] = np.char.lower(np.asarray(hdu_index[col], dtype=str))
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
    rows = store.hdu_index[store.hdu_index["HDU_TYPE"] == "events"]
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
    units = unit if unit is not None else _GADF_UNITS.get(name, "")
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
        coord_name(c): _column_to_variable(np.asarray(obs[c]), _unit(obs, c), c)
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
    if gadf in _GADF_UNITS:
        attrs["units"] = _GADF_UNITS[gadf]
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


def _read_header(path: Path, hdu: str) -> dict[str, Any]:
    """The run keywords (:data:`HEADER_RUN_KEYWORDS`, ``TELESCOP``) of an EVENTS header."""
    with _reading(path, hdu, "the header"):
        header = read_table(path, hdu, verify=False)[0].header
        keys = (*HEADER_RUN_KEYWORDS, TELESCOP_KEYWORD)
        return {key: header[key] for key in keys if key in header}


@contextlib.contextmanager
def _reading(path: Path, hdu: str, what: str) -> Iterator[None]:
    """Reading ``what`` of ``path``: its problems as a :class:`DataStoreError` naming the file."""
    try:
        yield
    except FileNotFoundError as exc:
        raise DataStoreError(f"{path}: {MISSING_FILE}") from exc
    except NoSuchHDU as exc:
        raise DataStoreError(
            f"{path}: no HDU named {hdu!r} (the file has {exc.names}); fix HDU_NAME in the HDU "
            "index, or, if the HDU should be there, the file is damaged or incomplete: copy it "
            "again"
        ) from exc
    except (DamagedFile, VerifyError) as exc:
        raise DataStoreError(f"{path}: cannot read {what}: {exc}; {DAMAGED}") from exc


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
    >>> import os
    >>> runs = run_table(open_datastore(os.path.join(os.environ["XBKG_DATA"], "hess-dl3-dr1")))
    >>> runs.sizes["obs_id"], select_runs(runs, ranges={"|GLAT_PNT|": (10, None)}).sizes["obs_id"]
    (105, 61)
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
    obs_ids
        Runs to keep (as for :func:`select_runs`).
    ranges
        Column ranges the runs must lie in (as for :func:`select_runs`).
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
    """The event columns needed for binning (TeV, deg), the file and the EVENTS header.

    ``header`` is the EVENTS header (:class:`astropy.io.fits.Header`), parsed
    from ``cards`` when first looked into: binning needs none of it.
    """

    ra: NDArray[np.float64]
    dec: NDArray[np.float64]
    energy: NDArray[np.float64]
    path: Path
    cards: HeaderCards
    #: TIME (s since the header's time reference), read only when asked for.
    time: NDArray[np.float64] | None = None

    @property
    def header(self) -> fits.Header:
        """The EVENTS header.

        Raises
        ------
        DataStoreError
            If a pointing card (``RA_PNT``, ``DEC_PNT``: binning may use them) is garbled.
        """
        with _reading(self.path, "EVENTS", "the EVENTS header"):
            header = self.cards.header
            header.get("RA_PNT"), header.get("DEC_PNT")
        return header


@functools.lru_cache(maxsize=64)
def _factor(unit: str, target: str) -> float:
    """Conversion factor from ``unit`` to ``target`` (parsing units is slow; cached)."""
    return 1.0 if unit == target else float(u.Unit(unit).to(target))


def _to_unit(
    values: NDArray[np.float64], unit: str, target: str, path: Path, column: str
) -> NDArray[np.float64]:
    """``values`` converted from the column's ``unit`` (TUNITn) to ``target``."""
    try:
        factor = _factor(unit.strip(), target)
    except (ValueError, u.UnitsError) as exc:
        raise DataStoreError(
            f"{path}: column {column} has unit {unit!r}, which is not convertible to "
            f"{target}; fix its TUNIT keyword"
        ) from exc
    return values if factor == 1.0 else values * factor


def read_events(
    path: str | Path, hdu: str = "EVENTS", *, verify: bool = True, time: bool = False
) -> EventList:
    """Read RA, DEC and ENERGY (and with ``time``, TIME) of an EVENTS HDU.

    The file is decompressed only up to the end of the EVENTS table
    (:func:`xbkg.io.fitsread.read_table`). ENERGY without a unit is taken in
    the header's ``EUNIT``, else TeV (the convention of old GADF files).

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
    names = ("RA", "DEC", "ENERGY", "TIME") if time else ("RA", "DEC", "ENERGY")
    with _reading(path, hdu, "the events"):
        cards, values, units = read_table(path, hdu, names, verify=verify)
        energy_unit = units.get("ENERGY") or _clean_str(cards.get("EUNIT", "")) or "TeV"
    missing = [c for c in names if c not in values]
    if missing:
        raise DataStoreError(
            f"{path}: EVENTS table lacks the columns {missing}; fix the file or leave "
            "the run out (select_runs)"
        )
    return EventList(
        ra=_to_unit(values["RA"], units["RA"] or "deg", "deg", path, "RA"),
        dec=_to_unit(values["DEC"], units["DEC"] or "deg", "deg", path, "DEC"),
        energy=_to_unit(values["ENERGY"], energy_unit, "TeV", path, "ENERGY"),
        path=path,
        cards=cards,
        time=values.get("TIME"),
    )


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
    hdu_rows = store.hdu_index[np.isin(store.hdu_index["OBS_ID"], wanted)]
    obs_rows = store.obs_index[np.isin(store.obs_index["OBS_ID"], wanted)]
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
        write_index(hdu_rows, stage / HDU_INDEX_FILE, "HDU_INDEX")
        write_index(obs_rows, stage / OBS_INDEX_FILE, "OBS_INDEX")

    names = [HDU_INDEX_FILE, OBS_INDEX_FILE, *(r.as_posix() for r in files)]
    all_or_nothing(out_dir, names, overwrite, write)
    return open_datastore(out_dir)


def gammapy_reversed_lon(store: DataStore, obs_ids: Sequence[int] | None = None) -> dict[int, bool]:
    """Which runs Gammapy 2.1 reads every background model of with ``fov_lon`` reversed.

    Gammapy 2.1's ``Observation.bkg`` sets ``REVERSE_LON_RADEC`` on the
    background of a run, whatever its ``FOVALIGN``, when the header of the
    run's EVENTS HDU (the one its HDU index lists) has exactly ``CREATOR =
    'SASH FITS::EventListWriter'`` and ``HDUVERS = '0.2'`` (text values), as
    in the H.E.S.S. DL3 DR1 release. ``make_map_background_irf`` then
    evaluates the model at ``-fov_lon`` in the RADEC frame: a RADEC model is
    read mirrored East-West unless it is written mirrored
    (``xbkg.io.gadf.write_bkg_3d(..., reverse_lon=True)``), and an ALTAZ model
    is read as RADEC. Only the EVENTS headers are read, each file up to the end
    of its EVENTS table.

    Parameters
    ----------
    store
        The data store whose EVENTS the models will be used with.
    obs_ids
        Runs to look at (default: every run of the obs-index).

    Returns
    -------
    dict
        ``{obs_id: True if Gammapy reverses fov_lon for that run}``, in the order of ``obs_ids``.

    Raises
    ------
    DataStoreError
        If a run has no events row in the HDU index, or its file or EVENTS HDU
        is missing or damaged; the message names the file.
    """
    ids = store.obs_ids if obs_ids is None else np.asarray(list(obs_ids), dtype=np.int64)
    out: dict[int, bool] = {}
    seen: dict[tuple[Path, str], bool] = {}
    for obs_id in ids.tolist():
        path, hdu = hdu_location(store, int(obs_id), "events")
        if (path, hdu) not in seen:
            with _reading(path, hdu, "the EVENTS header"):
                seen[path, hdu] = gammapy_reverses_lon(read_table(path, hdu, verify=False)[0])
        out[int(obs_id)] = seen[path, hdu]
    return out


def gammapy_reverses_lon(events_header: Any) -> bool:
    """Whether Gammapy 2.1 reads the backgrounds of a run with this EVENTS header lon-reversed.

    (:func:`gammapy_reversed_lon`.) ``events_header`` is anything with
    ``.get``: an astropy header or the cards :func:`read_events` keeps.
    """
    from xbkg.conventions import GAMMAPY_REVERSED_LON_EVENTS

    # Compared as Gammapy does: the header values, exactly (a number 0.2 is not '0.2').
    return all(
        events_header.get(key) == value for key, value in GAMMAPY_REVERSED_LON_EVENTS.items()
    )

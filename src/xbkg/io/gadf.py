"""GADF background tables: write and read ``bkg_2d`` and ``bkg_3d``.

GADF stores an IRF as a binary table with one row whose cells are arrays: one
cell per axis edge column (``ENERG_LO``, ``ENERG_HI``, ``THETA_LO``, ...) and
one multi-dimensional cell for the data (``BKG``).

The order of the axes in the data cell is not fixed by the format. The GADF
example files, H.E.S.S. DR1 and Gammapy 0.6 store the rate with energy as the
*slowest* axis (numpy row shape ``(n_energy, n_theta)``, FITS ``TDIM`` =
``(n_theta, n_energy)``); Gammapy 1.x/2.x writes the transpose. The reader
therefore decides the layout by comparing the cell shape with the lengths of
the ``*_LO``/``*_HI`` columns, and where that cannot tell (two axes of equal
length) it relies on the ``CREFn`` keyword or on the caller, never on a guess.
The writer uses the GADF-recommended layout and always writes ``CREFn``.

Axis orders given to or described by this module (``axis_order``, messages)
are numpy orders: the slowest-varying axis first. ``CREFn`` and ``TDIMn`` list
FITS axes, fastest first, i.e. the reverse.

A ``bkg_3d`` rate lives on ``(energy, fov_lon, fov_lat)``, stored in the
``ENERG``, ``DETX`` and ``DETY`` columns, with ``FOVALIGN`` saying whether the
field of view is aligned with ALTAZ or RADEC; ``fov_lon`` counts towards lower
azimuth or RA, as GADF and Gammapy 2.1 define it. Gammapy 2.1 evaluates every
background of a run flagged like H.E.S.S. DR1 (in its EVENTS header) at
``-fov_lon`` whatever the file says; :func:`write_bkg_3d` can store a model
mirrored for such runs (``reverse_lon``, recorded as ``REVLON = T``) and
:func:`read_bkg` always returns the GADF orientation.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np
import xarray as xr
from astropy.io import fits
from numpy.typing import NDArray

from xbkg import conventions
from xbkg.axes import binned_coords, edges, fov_coords, validate_edges
from xbkg.errors import ConfigError, DataStoreError
from xbkg.io.fitsfile import cell_format, one_row_table_bytes, write_fits_bytes
from xbkg.io.fitsread import DamagedFile, read_fits

__all__ = [
    "BKG_COLUMNS",
    "BKG_EXTNAMES",
    "DETX_DIM",
    "DETY_DIM",
    "bkg_2d_hdu",
    "bkg_3d_hdu",
    "read_bkg",
    "write_bkg_2d",
    "write_bkg_2d_files",
    "write_bkg_3d",
    "write_bkg_3d_files",
]

#: Field-of-view dimensions of a ``bkg_3d`` model: the ``DETX`` columns hold
#: ``fov_lon``, the ``DETY`` columns ``fov_lat`` (GADF, Gammapy ``Background3D``).
DETX_DIM = conventions.FOV_LON_DIM
DETY_DIM = conventions.FOV_LAT_DIM

#: Extension names recognised as a background table (compared case-insensitively).
BKG_EXTNAMES: tuple[str, ...] = ("BACKGROUND", "BKG", "BKG_2D", "BKG_3D")
#: Names of the data column, in order of preference (compared case-insensitively).
#: ``BGD`` is found in some CTA files; Gammapy 0.6 wrote a lower-case ``bkg``.
BKG_COLUMNS: tuple[str, ...] = ("BKG", "BGD")

DIMS_2D = (conventions.ENERGY_DIM, conventions.OFFSET_DIM)
DIMS_3D = (conventions.ENERGY_DIM, DETX_DIM, DETY_DIM)

# GADF column stem of each dimension, and the unit the dimension is held in.
_STEM = {
    conventions.ENERGY_DIM: "ENERG",
    conventions.OFFSET_DIM: "THETA",
    DETX_DIM: "DETX",
    DETY_DIM: "DETY",
}
_DIM_OF_STEM = {stem: dim for dim, stem in _STEM.items()}
_UNIT = {
    conventions.ENERGY_DIM: conventions.ENERGY_UNIT,
    conventions.OFFSET_DIM: conventions.OFFSET_UNIT,
    DETX_DIM: conventions.OFFSET_UNIT,
    DETY_DIM: conventions.OFFSET_UNIT,
}
#: GADF (general/coordinates) assumes ALTAZ when a bkg_3d has no FOVALIGN keyword.
_DEFAULT_FOVALIGN = "ALTAZ"

# Keywords that describe the table structure: the writer owns them, the reader
# does not copy them into attrs (they mean nothing once the array is decoded).
_STRUCTURAL_KEYWORD = re.compile(
    r"^(SIMPLE|XTENSION|BITPIX|NAXIS\d*|PCOUNT|GCOUNT|TFIELDS|EXTEND|END"
    r"|T(TYPE|FORM|UNIT|DIM|NULL|SCAL|ZERO|DISP)\d+|CREF\d+|CHECKSUM|DATASUM)$"
)
_NOT_ATTRS = {"COMMENT", "HISTORY", ""}


# --------------------------------------------------------------------------- writing


def bkg_2d_hdu(
    rate: xr.DataArray,
    *,
    extname: str = conventions.BKG_2D_EXTNAME,
    header: Mapping[str, Any] | None = None,
) -> fits.BinTableHDU:
    """GADF ``bkg_2d`` table HDU of a background rate.

    The table has one row and the float64 columns ``ENERG_LO``, ``ENERG_HI``
    (TeV), ``THETA_LO``, ``THETA_HI`` (deg) and ``BKG`` (s-1 MeV-1 sr-1). The
    ``BKG`` cell is stored in the GADF-recommended layout, energy slowest
    (``TDIM = (n_theta, n_energy)``), and the layout is declared in
    ``CREF5 = '(THETA_LO:THETA_HI,ENERG_LO:ENERG_HI)'`` so that it can be read
    back even when both axes have the same length.

    Parameters
    ----------
    rate
        Background rate with exactly the dimensions ``energy`` and ``offset``
        (in any order), their ``*_lo``/``*_hi`` edge coordinates and a
        ``units`` attribute convertible to s-1 MeV-1 sr-1. Edge coordinates
        with a ``units`` attribute other than TeV / deg are converted.
    extname
        Extension name; it must match the ``HDU_NAME`` of the HDU index.
    header
        Extra header keywords (e.g. ``GROUP_ID``, ``BKGTIME``), written after
        the GADF ``HDUCLAS*`` keywords, which they may override (e.g.
        ``HDUCLAS3='POINT-LIKE'``). Values may be ``(value, comment)`` pairs.
        Keywords describing the table layout and ``EXTNAME`` are refused.

    Returns
    -------
    astropy.io.fits.BinTableHDU
        The table; deterministic (no dates or checksums).

    Raises
    ------
    ValueError
        If dimensions, edges or units are missing or unusable, if ``rate``
        holds NaN or infinite values (fill empty bins first), or if
        ``header`` tries to set a structural keyword.
    """
    columns, cards = _bkg_2d_parts(rate, header)
    table = _one_row_table(columns, extname)
    table.header.extend(cards)
    return table


#: A column of a one-row model table: name, cell (float64, or float32 for bkg_3d
#: rates), unit, TDIM.
_Column = tuple[str, NDArray[np.floating], str, str | None]


def _one_row_table(columns: Sequence[_Column], extname: str) -> fits.BinTableHDU:
    """The one-row table of ``columns`` ``(name, cell, unit, tdim)``, without other keywords."""
    return fits.BinTableHDU.from_columns(
        [
            fits.Column(
                name=n,
                format=cell_format(v),
                unit=unit,
                dim=d,
                array=v[np.newaxis],
            )
            for n, v, unit, d in columns
        ],
        name=extname,
    )


def _bkg_2d_parts(
    rate: xr.DataArray, header: Mapping[str, Any] | None
) -> tuple[list[_Column], list[tuple[str, Any, str]]]:
    """Columns ``(name, cell, unit, tdim)`` and header cards ``(key, value, comment)``."""
    _check_dims(rate.dims)
    return _bkg_2d_columns(rate, _rate_for_file(rate)), _bkg_2d_cards(header)


def _check_dims(dims: Sequence[Any]) -> None:
    if set(dims) != set(DIMS_2D):
        raise ValueError(
            f"a bkg_2d rate needs exactly the dimensions {DIMS_2D}, got {tuple(dims)}; "
            "select or sum away other dimensions first"
        )


def _bkg_2d_columns(rate: xr.DataArray, values: NDArray[np.float64]) -> list[_Column]:
    """The table columns: bin edges from ``rate``, the cell ``values`` (energy, offset)."""
    energy = _edges_for_file(rate, conventions.ENERGY_DIM)
    offset = _edges_for_file(rate, conventions.OFFSET_DIM)
    n_energy, n_theta = values.shape
    return [
        ("ENERG_LO", energy[:-1], conventions.ENERGY_UNIT, None),
        ("ENERG_HI", energy[1:], conventions.ENERGY_UNIT, None),
        ("THETA_LO", offset[:-1], conventions.OFFSET_UNIT, None),
        ("THETA_HI", offset[1:], conventions.OFFSET_UNIT, None),
        ("BKG", values.ravel(), conventions.RATE_UNIT, f"({n_theta},{n_energy})"),
    ]


def _bkg_2d_cards(header: Mapping[str, Any] | None) -> list[tuple[str, Any, str]]:
    """Header cards: the GADF class keywords, CREF, then ``header``."""
    # Ordered like an astropy Header: a repeated keyword replaces the earlier card.
    cards: dict[str, tuple[str, Any, str]] = {
        key: (key, value, "") for key, value in conventions.BKG_2D_HDUCLAS.items()
    }
    # Column 5 is BKG; CREF lists FITS axes, fastest first, like TDIM.
    cards["CREF5"] = ("CREF5", "(THETA_LO:THETA_HI,ENERG_LO:ENERG_HI)", "BKG axes, fastest first")
    for key, item in (header or {}).items():
        name = key.strip().upper()
        if name == "EXTNAME" or _STRUCTURAL_KEYWORD.match(name):
            raise ValueError(
                f"header keyword {key!r} describes the table layout and is set by the writer; "
                "use extname= for the extension name and leave the others out"
            )
        value, comment = item if isinstance(item, tuple) else (item, "")
        normalised = name.removeprefix("HIERARCH ").strip()
        existing = cards.get(normalised)
        cards[normalised] = (existing[0] if existing else key, value, comment)
    return list(cards.values())


def write_bkg_2d_files(
    rates: xr.DataArray,
    dim: str,
    paths: Sequence[str | os.PathLike[str]],
    headers: Sequence[Mapping[str, Any] | None],
    *,
    extname: str = conventions.BKG_2D_EXTNAME,
    overwrite: bool = False,
) -> list[Path]:
    """Write one ``bkg_2d`` file per entry of ``rates`` along ``dim`` (e.g. one per run).

    Each file has the bytes :func:`write_bkg_2d` writes for ``rates.isel({dim: i})``
    with ``headers[i]``; the axes, units and values are checked once for all.

    Parameters
    ----------
    rates
        Rates along ``(dim, energy, offset)``.
    dim
        The dimension to split along.
    paths, headers
        Output file and header keywords of each entry, in the order of ``dim``.
    extname, overwrite
        As for :func:`write_bkg_2d`.
    """
    if len(paths) != rates.sizes[dim] or len(headers) != rates.sizes[dim]:
        raise ValueError(
            f"need one path and one header per {dim}, got {len(paths)}, {len(headers)}"
        )
    _check_dims([d for d in rates.dims if d != dim])
    values = _rate_for_file(rates.transpose(dim, *DIMS_2D))
    cards = [_bkg_2d_cards(header) for header in headers]
    columns = _bkg_2d_columns(rates.isel({dim: 0}, drop=True), values[0])
    return _write_tables(columns, values, cards, paths, extname, overwrite)


def _write_tables(
    columns: list[_Column],
    values: NDArray[np.floating],
    cards: Sequence[list[tuple[str, Any, str]]],
    paths: Sequence[str | os.PathLike[str]],
    extname: str,
    overwrite: bool,
) -> list[Path]:
    """Write the table of ``columns`` once per path, with ``values[i]`` as BKG and ``cards[i]``.

    astropy builds the table header once (building a table costs more than
    writing a file); each file is that header plus its cards, and its row.
    """
    layout = _one_row_table(columns, extname).header
    written = []
    for bkg, file_cards, path in zip(values, cards, paths, strict=True):
        header = fits.Header([*layout.cards, *file_cards])
        cells = [bkg.ravel() if name == "BKG" else cell for name, cell, _, _ in columns]
        raw = one_row_table_bytes(header, cells)
        written.append(write_fits_bytes(raw, path, overwrite=overwrite))
    return written


def write_bkg_2d(
    rate: xr.DataArray,
    path: str | os.PathLike[str],
    *,
    extname: str = conventions.BKG_2D_EXTNAME,
    header: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a background rate as a GADF ``bkg_2d`` FITS file.

    The file holds an empty primary HDU and the table of :func:`bkg_2d_hdu`.
    It is gzip-compressed if ``path`` ends in ``.gz``; the same inputs always
    give the same bytes, and the file appears complete or not at all.

    Parameters
    ----------
    rate, extname, header
        As for :func:`bkg_2d_hdu`.
    path
        Output file.
    overwrite
        Replace an existing file.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is false.
    ValueError
        As for :func:`bkg_2d_hdu`; nothing is written then.
    """
    columns, cards = _bkg_2d_parts(rate, header)
    values = columns[-1][1].reshape(1, rate.sizes[conventions.ENERGY_DIM], -1)
    return _write_tables(columns, values, [cards], [path], extname, overwrite)[0]


def _edges_for_file(rate: xr.DataArray, dim: str) -> NDArray[np.float64]:
    try:
        values = edges(rate, dim)
    except KeyError as err:
        raise ValueError(f"rate: {err.args[0]}") from err
    unit = rate[f"{dim}_lo"].attrs.get("units", _UNIT[dim])
    values = _convert(values, unit, _UNIT[dim], f"rate {dim} edges")
    fov = dim in (conventions.FOV_LON_DIM, conventions.FOV_LAT_DIM)
    return validate_edges(values, dim, positive=dim == conventions.ENERGY_DIM, signed=fov)


def _rate_for_file(rate: xr.DataArray, dims: tuple[str, ...] = DIMS_2D) -> NDArray[np.float64]:
    """The values along ``(..., *dims)`` in s-1 MeV-1 sr-1, all finite."""
    if "units" not in rate.attrs:
        raise ValueError(
            "rate has no 'units' attribute; set it, e.g. "
            f"rate.attrs['units'] = {conventions.RATE_UNIT!r}"
        )
    ordered = rate.transpose(..., *dims)
    values = np.asarray(ordered.values, dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"rate has {int(bad.sum())} non-finite value(s) of {values.size} "
            f"(first at index {first} along {ordered.dims}); GADF readers cannot use NaN or "
            "inf. Fill the empty bins first, e.g. rate.fillna(0.0), or smooth the model"
        )
    return _convert(values, str(rate.attrs["units"]), conventions.RATE_UNIT, "rate")


# --------------------------------------------------------------------------- writing bkg_3d

#: Column stems of a bkg_3d table, in the order written; the data column comes last.
_BKG_3D_STEMS = (("ENERG", conventions.ENERGY_DIM), ("DETX", DETX_DIM), ("DETY", DETY_DIM))
#: CREF of the data column (column 7), FITS axes fastest first: the GADF layout, numpy
#: cell (energy, fov_lon, fov_lat), and the transposed layout Gammapy writes.
_CREF_3D_GADF = "(DETY_LO:DETY_HI,DETX_LO:DETX_HI,ENERG_LO:ENERG_HI)"
_CREF_3D_GAMMAPY = "(ENERG_LO:ENERG_HI,DETX_LO:DETX_HI,DETY_LO:DETY_HI)"
#: Keywords of a bkg_3d header that the writer sets from its arguments.
_BKG_3D_OWN_KEYWORDS = (conventions.FOVALIGN_KEYWORD, conventions.REVERSED_LON_KEYWORD)


def bkg_3d_hdu(
    rate: xr.DataArray,
    *,
    reverse_lon: bool = False,
    extname: str = conventions.BKG_3D_EXTNAME,
    header: Mapping[str, Any] | None = None,
) -> fits.BinTableHDU:
    """GADF ``bkg_3d`` table HDU of a field-of-view background rate.

    The table has one row, the float64 columns ``ENERG_LO``, ``ENERG_HI``
    (TeV), ``DETX_LO``, ``DETX_HI``, ``DETY_LO``, ``DETY_HI`` (deg) and the
    float32 column ``BKG`` (s-1 MeV-1 sr-1), as in the H.E.S.S. DR1 release.
    ``DETX`` holds ``fov_lon`` and ``DETY`` ``fov_lat``. The header has the
    GADF ``HDUCLAS*`` keywords (``HDUCLAS4 = 'BKG_3D'``), ``FOVALIGN`` (from
    ``rate.attrs``), ``REVLON`` (whether DETX holds ``-fov_lon``, see
    ``reverse_lon``) and ``CREF7``, which declares the layout of the ``BKG``
    cell.

    The cell is stored with energy slowest (numpy ``(energy, DETX, DETY)``, the
    layout of the GADF examples and of H.E.S.S. DR1), which Gammapy 2.1 reads
    as ``(energy, fov_lon, fov_lat)``. When there are as many energy as
    ``fov_lat`` bins, Gammapy cannot tell that layout from its transpose and
    takes the transpose (logging "Ambiguous axes order"); the cell is then
    stored transposed, numpy ``(DETY, DETX, energy)`` as Gammapy writes it, so
    that Gammapy still reads it right. ``CREF7`` says which.

    Parameters
    ----------
    rate
        Rate with exactly the dimensions ``energy``, ``fov_lon`` and
        ``fov_lat`` (in any order), their ``*_lo``/``*_hi`` edge coordinates
        (:func:`xbkg.axes.binned_coords`, :func:`xbkg.axes.fov_coords`), a
        ``units`` attribute convertible to s-1 MeV-1 sr-1 and a ``FOVALIGN``
        attribute, ``'ALTAZ'`` or ``'RADEC'``. ``fov_lon`` and ``fov_lat`` follow
        GADF and Gammapy 2.1: ``fov_lat`` towards the zenith (ALTAZ) or North
        (RADEC), ``fov_lon`` towards lower azimuth or lower RA (West).
    reverse_lon
        Store the rate mirrored along ``fov_lon`` (``DETX = -fov_lon``), with
        ``REVLON = T``. This is the orientation in which Gammapy 2.1 reads every
        background of a run whose EVENTS header is flagged like the H.E.S.S. DL3
        DR1 release (:func:`xbkg.io.datastore.gammapy_reversed_lon`): it then
        evaluates the model at ``-fov_lon`` (``REVERSE_LON_RADEC``). Give it for
        the models of such runs, and only for RADEC models: Gammapy reads an
        ALTAZ model as RADEC there, which no orientation can correct.
        :func:`read_bkg` undoes the mirroring.
    extname
        Extension name; it must match the ``HDU_NAME`` of the HDU index.
    header
        Extra header keywords (e.g. ``OBS_ID``, ``BKGTIME``), written after the
        GADF keywords, which they may override (e.g. ``HDUCLAS3='POINT-LIKE'``).
        Values may be ``(value, comment)`` pairs. Keywords describing the table
        layout, ``EXTNAME``, ``FOVALIGN`` and ``REVLON`` are refused.

    Returns
    -------
    astropy.io.fits.BinTableHDU
        The table; deterministic (no dates or checksums).

    Raises
    ------
    ValueError
        If dimensions, edges, units or ``FOVALIGN`` are missing or unusable,
        if ``rate`` holds NaN or infinite values (fill empty bins first), or if
        ``header`` tries to set a keyword the writer sets;
        :class:`xbkg.errors.ConfigError` (a ``ValueError``) if ``reverse_lon``
        is given for an ALTAZ model.
    """
    _check_3d_dims(rate.dims)
    align = _fov_alignment(rate)
    _check_reverse_lon(bool(reverse_lon), align)
    values = _rate_for_file(rate, DIMS_3D)
    return _bkg_3d_table(rate, values, align, bool(reverse_lon), extname, header)


#: One column of a one-row table: name, cell (1-D), unit, TDIM or None.
def _bkg_3d_table(
    rate: xr.DataArray,
    values: NDArray[np.float64],
    align: str,
    reverse_lon: bool,
    extname: str,
    header: Mapping[str, Any] | None,
) -> fits.BinTableHDU:
    """The table of ``values`` (energy, fov_lon, fov_lat) on the axes of ``rate``."""
    columns, cref = _bkg_3d_columns(_bkg_3d_edges(rate), values, reverse_lon)
    table = _one_row_table(columns, extname)
    table.header.extend(_bkg_3d_cards(align, reverse_lon, cref, header))
    return table


def _bkg_3d_edges(rate: xr.DataArray) -> dict[str, NDArray[np.float64]]:
    """Bin edges of the three axes of ``rate``, in the file's units."""
    bin_edges = {dim: _edges_for_file(rate, dim) for _, dim in _BKG_3D_STEMS[1:]}
    bin_edges[conventions.ENERGY_DIM] = _edges_for_file(rate, conventions.ENERGY_DIM)
    return bin_edges


def _bkg_3d_columns(
    bin_edges: Mapping[str, NDArray[np.float64]], values: NDArray[np.float64], reverse_lon: bool
) -> tuple[list[_Column], str]:
    """The columns of a file of ``values`` (energy, fov_lon, fov_lat), and its CREF7."""
    lon = bin_edges[DETX_DIM]
    if reverse_lon:
        # DETX = -fov_lon: the edges negated in increasing order, the cells reversed.
        lon, values = -lon[::-1], values[:, ::-1, :]
    n_energy, _, n_lat = values.shape
    # Gammapy 2.1 transposes a cell whose shape differs from (energy, fov_lon, fov_lat)
    # and takes it as it is otherwise: with as many energy as fov_lat bins, only the
    # transposed layout is read right.
    cell, cref = (
        (values.transpose(2, 1, 0), _CREF_3D_GAMMAPY)
        if n_energy == n_lat
        else (values, _CREF_3D_GADF)
    )
    columns: list[_Column] = []
    for stem, dim in _BKG_3D_STEMS:
        e = lon if dim == DETX_DIM else bin_edges[dim]
        columns += [
            (f"{stem}_LO", e[:-1], _UNIT[dim], None),
            (f"{stem}_HI", e[1:], _UNIT[dim], None),
        ]
    tdim = "(" + ",".join(str(n) for n in cell.shape[::-1]) + ")"
    # float32, as in the H.E.S.S. DR1 release: 7 digits are far below any model's
    # uncertainty, and the files, which gzip hardly shrinks, are half as large and
    # twice as quick to write.
    bkg = np.ascontiguousarray(cell, dtype=np.float32).ravel()
    columns.append(("BKG", bkg, conventions.RATE_UNIT, tdim))
    return columns, cref


def _write_bkg_3d_tables(
    rate: xr.DataArray,
    values: NDArray[np.float64],
    align: str,
    flags: Sequence[bool],
    headers: Sequence[Mapping[str, Any] | None],
    paths: Sequence[str | os.PathLike[str]],
    extname: str,
    overwrite: bool,
) -> list[Path]:
    """Write each ``values[i]`` on the axes of ``rate``, with ``flags[i]`` and ``headers[i]``.

    astropy builds the table header once (it depends on the shapes only); each
    file is that header plus its cards, and its row (:func:`one_row_table_bytes`).
    """
    bin_edges = _bkg_3d_edges(rate)
    files = [
        _bkg_3d_columns(bin_edges, cell, bool(flag))
        for cell, flag in zip(values, flags, strict=True)
    ]
    cards = [
        _bkg_3d_cards(align, bool(flag), cref, header)
        for (_, cref), flag, header in zip(files, flags, headers, strict=True)
    ]  # all checked before anything is written
    layout = _one_row_table(files[0][0], extname).header if files else fits.Header()
    written = []
    for (columns, _), file_cards, path in zip(files, cards, paths, strict=True):
        raw = one_row_table_bytes(
            fits.Header([*layout.cards, *file_cards]), [cell for _, cell, _, _ in columns]
        )
        written.append(write_fits_bytes(raw, path, overwrite=overwrite))
    return written


def _bkg_3d_cards(
    align: str, reverse_lon: bool, cref: str, header: Mapping[str, Any] | None
) -> list[tuple[str, Any, str]]:
    """Header cards: the GADF class keywords, FOVALIGN, REVLON, CREF, then ``header``."""
    cards: dict[str, tuple[str, Any, str]] = {
        key: (key, value, "") for key, value in conventions.BKG_3D_HDUCLAS.items()
    }
    cards[conventions.FOVALIGN_KEYWORD] = (
        conventions.FOVALIGN_KEYWORD,
        align,
        "field-of-view axes aligned with ALTAZ or RADEC",
    )
    cards[conventions.REVERSED_LON_KEYWORD] = (
        conventions.REVERSED_LON_KEYWORD,
        reverse_lon,
        "DETX holds -fov_lon (Gammapy REVERSE_LON_RADEC)",
    )
    # No comment: the value leaves no room for one on the card.
    cards["CREF7"] = ("CREF7", cref, "")
    for key, item in (header or {}).items():
        name = key.strip().upper()
        normalised = name.removeprefix("HIERARCH ").strip()
        if name == "EXTNAME" or _STRUCTURAL_KEYWORD.match(name):
            raise ValueError(
                f"header keyword {key!r} describes the table layout and is set by the writer; "
                "use extname= for the extension name and leave the others out"
            )
        if normalised in _BKG_3D_OWN_KEYWORDS:
            raise ValueError(
                f"header keyword {key!r} is set by the writer: FOVALIGN from "
                "rate.attrs['FOVALIGN'], REVLON from reverse_lon="
            )
        value, comment = item if isinstance(item, tuple) else (item, "")
        existing = cards.get(normalised)
        cards[normalised] = (existing[0] if existing else key, value, comment)
    return list(cards.values())


def write_bkg_3d(
    rate: xr.DataArray,
    path: str | os.PathLike[str],
    *,
    reverse_lon: bool = False,
    extname: str = conventions.BKG_3D_EXTNAME,
    header: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a field-of-view background rate as a GADF ``bkg_3d`` FITS file.

    The file holds an empty primary HDU and the table of :func:`bkg_3d_hdu`.
    It is gzip-compressed if ``path`` ends in ``.gz``; the same inputs always
    give the same bytes, and the file appears complete or not at all.
    :func:`read_bkg` gives ``rate`` back (values, dimensions, coordinates).

    Parameters
    ----------
    rate, reverse_lon, extname, header
        As for :func:`bkg_3d_hdu`.
    path
        Output file.
    overwrite
        Replace an existing file.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is false.
    ValueError
        As for :func:`bkg_3d_hdu`; nothing is written then.
    """
    _check_3d_dims(rate.dims)
    align = _fov_alignment(rate)
    _check_reverse_lon(bool(reverse_lon), align)
    values = _rate_for_file(rate, DIMS_3D)[np.newaxis]
    flags, headers = [bool(reverse_lon)], [header]
    return _write_bkg_3d_tables(rate, values, align, flags, headers, [path], extname, overwrite)[0]


def write_bkg_3d_files(
    rates: xr.DataArray,
    dim: str,
    paths: Sequence[str | os.PathLike[str]],
    headers: Sequence[Mapping[str, Any] | None],
    *,
    reverse_lon: bool | Sequence[bool] = False,
    extname: str = conventions.BKG_3D_EXTNAME,
    overwrite: bool = False,
) -> list[Path]:
    """Write one ``bkg_3d`` file per entry of ``rates`` along ``dim`` (e.g. one per run).

    Each file has the bytes :func:`write_bkg_3d` writes for ``rates.isel({dim: i})``
    with ``headers[i]`` and ``reverse_lon[i]``; axes, units, values and
    ``FOVALIGN`` are checked once for all, before anything is written.

    Parameters
    ----------
    rates
        Rates along ``(dim, energy, fov_lon, fov_lat)`` with one ``FOVALIGN`` attribute.
    dim
        The dimension to split along (``obs_id``, ``group``).
    paths, headers
        Output file and header keywords of each entry, in the order of ``dim``.
    reverse_lon
        As for :func:`bkg_3d_hdu`: one value for all files, or one per entry
        (a store may mix runs that Gammapy reads with reversed ``fov_lon`` and
        runs it does not; see :func:`xbkg.io.datastore.gammapy_reversed_lon`).
    extname, overwrite
        As for :func:`write_bkg_3d`.
    """
    n = rates.sizes[dim]
    flags = [bool(reverse_lon)] * n if isinstance(reverse_lon, bool) else list(reverse_lon)
    if len(paths) != n or len(headers) != n or len(flags) != n:
        raise ValueError(
            f"need one path, one header and one reverse_lon per {dim} ({n}), got "
            f"{len(paths)}, {len(headers)}, {len(flags)}"
        )
    _check_3d_dims([d for d in rates.dims if d != dim])
    align = _fov_alignment(rates)
    for flag in flags:
        _check_reverse_lon(bool(flag), align)
    values = _rate_for_file(rates.transpose(dim, *DIMS_3D), DIMS_3D)
    template = rates.isel({dim: 0}, drop=True)
    return _write_bkg_3d_tables(template, values, align, flags, headers, paths, extname, overwrite)


def _check_3d_dims(dims: Sequence[Any]) -> None:
    if set(dims) != set(DIMS_3D):
        raise ValueError(
            f"a bkg_3d rate needs exactly the dimensions {DIMS_3D}, got {tuple(dims)}; "
            "select or sum away other dimensions first, or use write_bkg_3d_files"
        )


def _fov_alignment(rate: xr.DataArray) -> str:
    key = conventions.FOVALIGN_KEYWORD
    if key not in rate.attrs:
        raise ValueError(
            f"rate has no {key!r} attribute saying how its field of view is aligned; set it, "
            f"e.g. rate.attrs[{key!r}] = 'RADEC' (one of {conventions.FOV_ALIGNMENTS})"
        )
    align = _text(rate.attrs[key]).upper()
    if align not in conventions.FOV_ALIGNMENTS:
        raise ValueError(
            f"rate.attrs[{key!r}] = {rate.attrs[key]!r}; GADF knows {conventions.FOV_ALIGNMENTS}"
        )
    return align


def _check_reverse_lon(reverse_lon: bool, align: str) -> None:
    if reverse_lon and align != "RADEC":
        raise ConfigError(
            f"reverse_lon is for RADEC models, this one is {align}: Gammapy 2.1 reads every "
            "background of a run flagged like H.E.S.S. DR1 (EVENTS CREATOR = "
            f"{conventions.GAMMAPY_REVERSED_LON_EVENTS['CREATOR']!r}, HDUVERS = "
            f"{conventions.GAMMAPY_REVERSED_LON_EVENTS['HDUVERS']!r}) as RADEC with fov_lon "
            "reversed, so no orientation of an ALTAZ model is read right there; build a RADEC "
            "model for such runs"
        )


# --------------------------------------------------------------------------- reading


def read_bkg(
    path: str | os.PathLike[str],
    hdu: str | int | None = None,
    *,
    axis_order: Sequence[str] | None = None,
    reverse_lon: bool | None = None,
) -> xr.DataArray:
    """Read a GADF ``bkg_2d`` or ``bkg_3d`` table into a labelled array.

    Parameters
    ----------
    path
        FITS file (optionally gzip-compressed).
    hdu
        Extension name (matched case-insensitively against ``EXTNAME`` and,
        for Gammapy 0.6 files, ``HDUNAME``) or index. If None, the one HDU
        with ``HDUCLAS2 = 'BKG'`` or an ``EXTNAME`` in :data:`BKG_EXTNAMES`;
        failing that, the one binary table with a ``BKG``/``BGD`` column.
    axis_order
        Dimension names in the order the data cell stores them, slowest first
        (numpy order), e.g. ``("energy", "offset")`` for the GADF-recommended
        layout or ``("offset", "energy")`` for what Gammapy 1.x/2.x writes.
        Only needed when axes have equal lengths and the HDU has no ``CREFn``
        keyword; if given it must agree with the shape and with ``CREFn``.
        One case is settled without it: a ``bkg_3d`` with as many DETX as
        DETY bins (H.E.S.S. DR1, the GADF example) is read in the
        GADF-recommended order ``("energy", "detx", "dety")``, the only one in
        use, since the two field-of-view axes cannot be told apart by shape.
    reverse_lon
        For a ``bkg_3d``: whether the file's ``DETX`` holds ``-fov_lon``, as
        Gammapy 2.1 takes it for every background of a run whose EVENTS header is
        flagged like H.E.S.S. DR1 (:func:`xbkg.io.datastore.gammapy_reversed_lon`);
        the rate is then mirrored back. If None (default), the file decides:
        its ``REVLON`` keyword (written by :func:`write_bkg_3d`), else, for a
        RADEC model in a file that also holds such a flagged EVENTS HDU (the
        run files of H.E.S.S. DR1), true; otherwise false. Pass it for a
        template kept apart from the events of a flagged run.

    Returns
    -------
    xarray.DataArray
        Named ``"bkg"``, in s-1 MeV-1 sr-1 (converted from the column unit; a
        column without unit is taken to be in s-1 MeV-1 sr-1 already), with
        dimensions ``("energy", "offset")`` for ``bkg_2d`` or ``("energy",
        "fov_lon", "fov_lat")`` for ``bkg_3d`` (from the ``DETX`` and ``DETY``
        columns, in the GADF orientation whatever the file's, see
        ``reverse_lon``), each with ``*_lo``/``*_hi`` edges;
        energy in TeV with logarithmic centres, the others in deg with linear
        centres (axis columns without unit are taken as TeV / deg). ``attrs``
        hold the header keywords that are not about the table layout
        (``HDUCLAS*``, ``BKGTIME``, ``OBS_ID``, ...; logical values as 0/1 so
        that they can be saved to netCDF), ``FOVALIGN`` for ``bkg_3d``
        (``'ALTAZ'`` if the file has none, as GADF says), and ``source_file``
        (file name) and ``source_hdu``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    xbkg.errors.DataStoreError
        Naming the file and HDU, if the file is damaged or truncated, no
        background HDU is found, columns are missing, their lengths do not fit
        the data cell, units cannot be converted, or the axis order cannot be
        decided (pass ``axis_order``).
    xbkg.errors.ConfigError
        If ``axis_order`` does not fit the table or contradicts its ``CREFn``.
        Both are ``ValueError`` subclasses.
    TypeError
        If ``hdu`` or ``axis_order`` has the wrong type.
    """
    path = Path(path)
    if isinstance(hdu, bool) or not (hdu is None or isinstance(hdu, (int, str))):
        raise TypeError(f"hdu must be a name, an index or None, got {hdu!r}")
    if isinstance(axis_order, str):
        raise TypeError(f"axis_order must be a sequence of dimension names, got {axis_order!r}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: background file not found")
    try:
        hdulist = read_fits(path)
    except DamagedFile as exc:
        raise DataStoreError(
            f"{path}: cannot read the background table ({exc}); the file is damaged or "
            "incomplete, copy it again"
        ) from exc
    index, table = _select_hdu(hdulist, hdu, path)
    rate = _read_table(table, index, path, axis_order)
    if DETX_DIM in rate.dims:
        rate = _gadf_orientation(rate, hdulist, reverse_lon, f"{path} [HDU {_label(table, index)}]")
    return rate


def _gadf_orientation(
    rate: xr.DataArray, hdulist: fits.HDUList, reverse_lon: bool | None, where: str
) -> xr.DataArray:
    """A ``bkg_3d`` rate as stored, with ``fov_lon`` mirrored back if DETX holds ``-fov_lon``."""
    attrs = dict(rate.attrs)
    keyword = attrs.pop(conventions.REVERSED_LON_KEYWORD, None)
    align = attrs[conventions.FOVALIGN_KEYWORD]
    if reverse_lon is None:
        if keyword is not None:
            reverse_lon = bool(keyword)
        else:
            reverse_lon = align == "RADEC" and any(
                _text(h.header.get("HDUCLAS1", h.name)).upper() == "EVENTS"
                and _flags_reversed_lon(h.header)
                for h in hdulist
            )
    if not reverse_lon:
        out = rate.copy(deep=False)
        out.attrs = attrs
        return out
    if align != "RADEC":
        raise DataStoreError(
            f"{where}: FOVALIGN = {align!r} with a reversed fov_lon: Gammapy reverses fov_lon "
            "only for RADEC models; the file is inconsistent (or pass reverse_lon=False)"
        )
    lon = edges(rate, DETX_DIM)
    mirrored = rate.isel({DETX_DIM: slice(None, None, -1)})
    mirrored = mirrored.drop_vars([DETX_DIM, f"{DETX_DIM}_lo", f"{DETX_DIM}_hi"])
    coords = fov_coords(-lon[::-1], edges(rate, DETY_DIM))
    mirrored = mirrored.assign_coords({k: v for k, v in coords.items() if k.startswith(DETX_DIM)})
    mirrored = mirrored.transpose(*rate.dims)
    mirrored.attrs = attrs
    return mirrored


def _flags_reversed_lon(header: fits.Header) -> bool:
    """Whether Gammapy 2.1 reverses fov_lon for a run with this EVENTS header (exact values)."""
    flags = conventions.GAMMAPY_REVERSED_LON_EVENTS
    return all(key in header and header[key] == value for key, value in flags.items())


def _select_hdu(
    hdulist: fits.HDUList, hdu: str | int | None, path: Path
) -> tuple[int, fits.BinTableHDU]:
    if hdu is None:
        tables = [(i, h) for i, h in enumerate(hdulist) if isinstance(h, fits.BinTableHDU)]
        found = [(i, h) for i, h in tables if _declares_bkg(h.header)]
        if not found:
            # Gammapy 0.6 files have neither HDUCLAS nor EXTNAME: look at the columns.
            found = [(i, h) for i, h in tables if _data_column(h) is not None]
        if len(found) == 1:
            return found[0]
        if not found:
            raise DataStoreError(
                f"{path}: no background HDU found (looked for HDUCLAS2='BKG', EXTNAME in "
                f"{BKG_EXTNAMES} or a table with a BKG/BGD column); HDUs: {_describe(hdulist)}"
            )
        raise DataStoreError(
            f"{path}: several background HDUs {[_label(h, i) for i, h in found]}; "
            "choose one with hdu="
        )

    if isinstance(hdu, int):
        if not -len(hdulist) <= hdu < len(hdulist):
            raise DataStoreError(f"{path}: no HDU {hdu}; HDUs: {_describe(hdulist)}")
        index = hdu % len(hdulist)
    else:
        wanted = hdu.strip().upper()
        if not wanted:
            raise ConfigError(f"{path}: empty HDU name; pass a name, an index or None")
        matches = [
            i
            for i, h in enumerate(hdulist)
            if wanted in (h.name.strip().upper(), _text(h.header.get("HDUNAME", "")).upper())
        ]
        if not matches:
            raise DataStoreError(f"{path}: no HDU named {hdu!r}; HDUs: {_describe(hdulist)}")
        if len(matches) > 1:
            raise DataStoreError(
                f"{path}: several HDUs named {hdu!r} (indices {matches}); pass an index as hdu="
            )
        index = matches[0]
    table = hdulist[index]
    if not isinstance(table, fits.BinTableHDU):
        raise DataStoreError(
            f"{path}: HDU {_label(table, index)} is a {type(table).__name__}, not a binary table"
        )
    return index, table


def _read_table(
    table: fits.BinTableHDU, index: int, path: Path, axis_order: Sequence[str] | None
) -> xr.DataArray:
    where = f"{path} [HDU {_label(table, index)}]"
    header = table.header
    data_name = _data_column(table)
    if data_name is None:
        raise DataStoreError(
            f"{where}: no background data column (looked for {BKG_COLUMNS}, any case); "
            f"columns: {table.columns.names}"
        )
    # Checked on the header before the data are read: a damaged NAXISn would make
    # astropy allocate (and, for gzip, try to decompress) whatever it claims.
    nrows, row_bytes = header.get("NAXIS2"), header.get("NAXIS1")
    if nrows != 1:
        raise DataStoreError(
            f"{where}: expected a table with one row (GADF array convention), the header "
            f"says NAXIS2 = {nrows!r}"
        )
    if row_bytes != table.columns.dtype.itemsize:
        raise DataStoreError(
            f"{where}: the header gives rows of NAXIS1 = {row_bytes!r} bytes, but the columns "
            f"(TFORMn) take {table.columns.dtype.itemsize}; the header is damaged, copy the "
            "file again"
        )
    if len(table.data) != 1:
        raise DataStoreError(
            f"{where}: expected a table with one row (GADF array convention), found "
            f"{len(table.data)} rows"
        )
    is_3d = any(_column(table, f"{_STEM[d]}_LO") for d in (DETX_DIM, DETY_DIM))
    dims = DIMS_3D if is_3d else DIMS_2D

    bin_edges = {dim: _edges_from_columns(table, dim, where) for dim in dims}
    sizes = {dim: e.size - 1 for dim, e in bin_edges.items()}

    raw = np.asarray(table.data[data_name][0], dtype=np.float64)
    column_number = table.columns.names.index(data_name) + 1
    stored = _stored_order(
        raw.shape,
        sizes,
        cref=_cref_order(header, column_number, dims, where),
        axis_order=_check_axis_order(axis_order, dims, where),
        where=f"{where} column {data_name!r}",
    )
    values = raw.transpose([stored.index(dim) for dim in dims])
    unit = table.columns[data_name].unit or conventions.RATE_UNIT
    values = _convert(
        values, unit, conventions.RATE_UNIT, f"{where} column {data_name!r}", DataStoreError
    )

    if is_3d:
        energy_coords = binned_coords(energy=bin_edges[conventions.ENERGY_DIM])
        coords = {k: v for k, v in energy_coords.items() if k.startswith("energy")}
        coords.update(fov_coords(bin_edges[DETX_DIM], bin_edges[DETY_DIM]))
    else:
        coords = binned_coords(bin_edges[conventions.ENERGY_DIM], bin_edges[conventions.OFFSET_DIM])

    attrs: dict[str, Any] = {"units": conventions.RATE_UNIT, "long_name": "background rate"}
    attrs.update(_header_attrs(header))
    if is_3d:
        attrs["FOVALIGN"] = _text(header.get("FOVALIGN", _DEFAULT_FOVALIGN)).upper()
    attrs["source_file"] = path.name
    attrs["source_hdu"] = _label(table, index)
    return xr.DataArray(values, dims=dims, coords=coords, name="bkg", attrs=attrs)


def _edges_from_columns(table: fits.BinTableHDU, dim: str, where: str) -> NDArray[np.float64]:
    stem = _STEM[dim]
    wanted = [f"{stem}_LO", f"{stem}_HI"]
    names = [_column(table, name) for name in wanted]
    missing = [w for w, name in zip(wanted, names, strict=True) if name is None]
    if missing:
        axes = "ENERG, DETX and DETY" if dim in (DETX_DIM, DETY_DIM) else "ENERG and THETA"
        raise DataStoreError(
            f"{where}: missing column {' and '.join(missing)} (a background table needs _LO "
            f"and _HI columns for {axes}); columns: {table.columns.names}"
        )
    lo, hi = (
        _convert(
            np.asarray(table.data[name][0], dtype=np.float64).ravel(),
            table.columns[name].unit or _UNIT[dim],
            _UNIT[dim],
            f"{where} column {name!r}",
            DataStoreError,
        )
        for name in names
    )
    if lo.size != hi.size or lo.size == 0:
        raise DataStoreError(
            f"{where}: columns {stem}_LO and {stem}_HI have lengths {lo.size} and {hi.size}; "
            "they must be equal and non-zero"
        )
    if not np.array_equal(lo[1:], hi[:-1]):
        raise DataStoreError(
            f"{where}: the {stem} bins are not contiguous ({stem}_LO[1:] != _HI[:-1])"
        )
    bin_edges = np.append(lo, hi[-1])
    if dim in (conventions.ENERGY_DIM, conventions.OFFSET_DIM):
        try:
            return validate_edges(bin_edges, stem, positive=dim == conventions.ENERGY_DIM)
        except ValueError as err:
            raise DataStoreError(f"{where}: {err}") from err
    if not (np.all(np.isfinite(bin_edges)) and np.all(np.diff(bin_edges) > 0)):
        raise DataStoreError(
            f"{where}: {stem} edges must be finite and increasing, got {bin_edges}"
        )
    return bin_edges


def _stored_order(
    shape: tuple[int, ...],
    sizes: Mapping[str, int],
    *,
    cref: tuple[str, ...] | None,
    axis_order: tuple[str, ...] | None,
    where: str,
) -> tuple[str, ...]:
    """Order (numpy, slowest first) of the dimensions in a data cell of ``shape``."""
    fitting = [
        order for order in itertools.permutations(sizes) if tuple(sizes[d] for d in order) == shape
    ]
    if not fitting:
        raise DataStoreError(
            f"{where}: data shape {shape} fits no order of the axis lengths {dict(sizes)} "
            "given by the _LO/_HI columns"
        )
    if cref is not None:
        if cref not in fitting:
            raise DataStoreError(
                f"{where}: the CREF keyword gives the axis order {cref} (slowest first), "
                f"which does not fit the data shape {shape}"
            )
        if axis_order is not None and axis_order != cref:
            raise ConfigError(
                f"{where}: axis_order={axis_order} contradicts the file's CREF keyword, "
                f"which gives {cref}; drop axis_order"
            )
        return cref
    if axis_order is not None:
        if axis_order not in fitting:
            raise ConfigError(
                f"{where}: axis_order={axis_order} does not fit the data shape {shape} "
                f"(axis lengths {dict(sizes)})"
            )
        return axis_order
    if len(fitting) == 1:
        return fitting[0]
    recommended = tuple(sizes)
    energy_positions = {order.index(conventions.ENERGY_DIM) for order in fitting}
    if len(sizes) == 3 and recommended in fitting and len(energy_positions) == 1:
        # Square field-of-view bins of a bkg_3d (H.E.S.S. DR1, the GADF example): the
        # energy axis is known from its length, and DETX/DETY cannot be told apart by
        # shape at all. The GADF-recommended order (ENERGY, DETX, DETY) is the only
        # convention in use (Gammapy reads these files the same way).
        return recommended
    raise DataStoreError(
        f"{where}: the axis order cannot be told from the data shape {shape}, because axes "
        f"have equal lengths {dict(sizes)}, and the HDU has no CREF keyword. Pass axis_order= "
        f"with the stored order, slowest axis first: one of {fitting}. The GADF-recommended "
        f"layout is {tuple(sizes)}; Gammapy 1.x/2.x writes {tuple(sizes)[::-1]}"
    )


def _cref_order(
    header: fits.Header, column_number: int, dims: tuple[str, ...], where: str
) -> tuple[str, ...] | None:
    key = f"CREF{column_number}"
    if key not in header:
        return None
    text = _text(header[key])
    # e.g. '(THETA_LO:THETA_HI,ENERG_LO:ENERG_HI)': one LO:HI pair per FITS axis.
    found = []
    for part in text.strip("()").split(","):
        stem = part.split(":")[0].strip().upper().removesuffix("_LO")
        if stem not in _DIM_OF_STEM:
            raise DataStoreError(
                f"{where}: cannot interpret {key} = {text!r}: unknown axis {stem!r}"
            )
        found.append(_DIM_OF_STEM[stem])
    order = tuple(reversed(found))  # FITS lists the fastest axis first
    if sorted(order) != sorted(dims):
        raise DataStoreError(f"{where}: {key} = {text!r} does not name the axes {dims}")
    return order


def _check_axis_order(
    axis_order: Sequence[str] | None, dims: tuple[str, ...], where: str
) -> tuple[str, ...] | None:
    if axis_order is None:
        return None
    order = tuple(str(d).strip().lower() for d in axis_order)
    if sorted(order) != sorted(dims):
        raise ConfigError(
            f"{where}: axis_order must be an ordering of {dims} for this table, got {axis_order}"
        )
    return order


def _header_attrs(header: fits.Header) -> dict[str, str | int | float]:
    attrs: dict[str, str | int | float] = {}
    for key, value in header.items():
        if key in _NOT_ATTRS or _STRUCTURAL_KEYWORD.match(key):
            continue
        if isinstance(value, bool):
            attrs[key] = int(value)
        elif isinstance(value, str):
            attrs[key] = value.strip()
        elif isinstance(value, (int, float)):
            attrs[key] = value
        # keywords without a value (astropy's Undefined) or complex values are left out
    return attrs


# --------------------------------------------------------------------------- helpers


def _convert(
    values: NDArray[np.float64],
    unit: str,
    target: str,
    what: str,
    error: type[ValueError] = ValueError,
) -> NDArray[np.float64]:
    try:
        scale = _scale(unit, target)
    except (ValueError, TypeError) as err:
        raise error(f"{what}: unit {unit!r} cannot be converted to {target!r}") from err
    # Skip the multiplication for equal units so that values pass through bit for bit.
    return values if scale == 1.0 else values * scale


@functools.lru_cache(maxsize=64)
def _scale(unit: str, target: str) -> float:
    """Conversion factor between two unit strings (parsing units is slow; cached)."""
    if unit.strip() == target:
        return 1.0
    try:
        return float(u.Unit(unit).to(target))
    except u.UnitsError as err:
        raise ValueError(str(err)) from err


def _data_column(table: fits.BinTableHDU) -> str | None:
    for name in BKG_COLUMNS:
        found = _column(table, name)
        if found is not None:
            return found
    return None


def _column(table: fits.BinTableHDU, name: str) -> str | None:
    """Actual name of column ``name`` in ``table``, compared case-insensitively."""
    for actual in table.columns.names:
        if isinstance(actual, str) and actual.strip().upper() == name:
            return actual
    return None


def _declares_bkg(header: fits.Header) -> bool:
    return (
        _text(header.get("HDUCLAS2", "")).upper() == "BKG"
        or _text(header.get("EXTNAME", "")).upper() in BKG_EXTNAMES
    )


def _text(value: Any) -> str:
    return str(value).strip()


def _label(hdu: Any, index: int) -> str:
    """Extension name of an HDU, or ``#index`` if it has none."""
    return str(hdu.name) if hdu.name else f"#{index}"


def _describe(hdulist: fits.HDUList) -> str:
    return ", ".join(f"#{i} {h.name or '(no name)'}" for i, h in enumerate(hdulist))

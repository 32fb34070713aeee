"""The output data store: model files, per-run model files and ``group-def.fits``.

Readers and writers of the files that ``xbkg make`` adds to its output folder,
next to the HDU and observation indexes (:mod:`xbkg.io.hdu_index`) and the
archive (:mod:`xbkg.io.netcdf`). They take the labelled models as they are
and write them: what goes into the models is decided by the pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from astropy.io import fits
from astropy.table import Table
from numpy.typing import NDArray

from xbkg._version import __version__
from xbkg.axes import edges
from xbkg.conventions import (
    ENERGY_DIM,
    GROUP_DIM,
    OBS_DIM,
    OFFSET_DIM,
    TIME_KEYWORD,
    run_model_filename,
)
from xbkg.errors import ConfigError
from xbkg.grouping import GroupAxis, group_definitions, grouping_description
from xbkg.io.fitsfile import write_table
from xbkg.io.fitsread import DamagedFile, read_fits
from xbkg.io.gadf import write_bkg_2d, write_bkg_2d_files

__all__ = [
    "energy_node_cards",
    "fill_cards",
    "model_fits_header",
    "read_group_def",
    "run_model_headers",
    "write_group_def",
    "write_model_fits",
    "write_run_model_files",
]


def model_fits_header(model: xr.Dataset) -> dict[str, Any]:
    """Header keywords of the ``bkg_2d`` file of one group, from the model alone.

    ``GROUP_ID``, ``N_RUNS``, ``BKGTIME`` (the run duration normalising the
    rate), ``SMOOTHED`` (smoothing method), ``CREATOR`` (the xbkg version
    that built the model, so that files re-written from an archive are
    identical) and the group ranges (``ZEN_PNT_MIN``, ...), as
    ``(value, comment)`` pairs.

    Parameters
    ----------
    model
        One group of a model (``model.sel(group=g)``).
    """
    header: dict[str, Any] = {}
    if GROUP_DIM in model.coords and model[GROUP_DIM].ndim == 0:
        header["GROUP_ID"] = (int(model[GROUP_DIM]), "run group of this model (see group-def.fits)")
    if "n_runs" in model.coords:
        header["N_RUNS"] = (int(model["n_runs"]), "runs stacked")
    if "time_convention" in model.attrs:
        header[TIME_KEYWORD] = (
            str(model.attrs["time_convention"]).upper(),
            "run duration normalising the rate",
        )
    header["SMOOTHED"] = (str(model.attrs.get("smoothing", "none")), "smoothing method")
    header.update(energy_node_cards(model["rate"]))
    if "filled" in model:
        header.update(fill_cards(model["filled"]))
    version = model.attrs.get("xbkg_version", __version__)
    header["CREATOR"] = (f"xbkg {version}", "program that wrote this file")
    for name, var in model.coords.items():
        if name == GROUP_DIM or "gadf_name" not in var.attrs or var.ndim != 0:
            continue
        value = var.item()
        key = str(var.attrs["gadf_name"])
        # Longer names (ZEN_PNT_MIN) need the HIERARCH convention; cutting them to
        # 8 characters would make ZEN_PNT_MIN and ZEN_PNT_MAX the same keyword.
        header[key if len(key) <= 8 else f"HIERARCH {key}"] = (
            value.item() if isinstance(value, np.generic) else value,
            "group range",
        )
    return header


def energy_node_cards(rate: xr.DataArray) -> dict[str, tuple[Any, str]]:
    """``BKGENODE = 'LOGLOG'`` when the rate holds log-log nodes rather than bin means.

    (:func:`xbkg.prediction.loglog_nodes`: Gammapy's log-log integral of the
    values over each energy bin is the model's mean rate there.)
    """
    if rate.attrs.get("energy_nodes") != "loglog":
        return {}
    return {"BKGENODE": ("LOGLOG", "log-log energy nodes: bin integrals = bin means")}


def fill_cards(filled: xr.DataArray) -> dict[str, tuple[Any, str]]:
    """Header keywords recording which bins of one model were filled.

    ``BKGFILL`` (how), ``NFILLED`` (how many bins) and ``DATA_ELO`` /
    ``DATA_EHI``: the energy range (TeV) of the rows holding bins that the
    data constrain; outside it every bin is a continuation. The full mask is
    in the archive (``filled``).
    """
    mask = filled.transpose(ENERGY_DIM, OFFSET_DIM).values
    cards: dict[str, tuple[Any, str]] = {
        "BKGFILL": ("loglog", "unconstrained bins: smooth continuation"),
        "NFILLED": (int(mask.sum()), "bins filled (not constrained by the data)"),
    }
    rows = np.flatnonzero(~mask.all(axis=1))
    if rows.size:
        bin_edges = edges(filled, ENERGY_DIM)
        cards["DATA_ELO"] = (float(bin_edges[rows[0]]), "[TeV] lowest energy constrained by data")
        cards["DATA_EHI"] = (float(bin_edges[rows[-1] + 1]), "[TeV] highest energy constrained")
    return cards


def write_model_fits(
    model: xr.Dataset,
    path: str | Path,
    *,
    group: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the rate of one group of a model as a GADF ``bkg_2d`` file.

    Bins that no run exposed (NaN rate) are written as 0, since science tools
    cannot use NaN; the archive keeps the distinction (``exposure_time == 0``).
    The header is :func:`model_fits_header`. ``xbkg make`` and ``xbkg
    export`` write their model files with this function.

    Parameters
    ----------
    model
        A model with ``rate`` (raw or smoothed), one group or several.
    path
        Output file (gzip-compressed if it ends in ``.gz``).
    group
        GROUP_ID to write; needed if ``model`` has a ``group`` dimension.
    overwrite
        Replace an existing file.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    if group is not None:
        model = model.sel({GROUP_DIM: group})
    if GROUP_DIM in model.dims:
        raise ConfigError(
            f"the model has {model.sizes[GROUP_DIM]} groups; choose the one to write with group="
        )
    rate = model["rate"].fillna(0.0)
    return write_bkg_2d(rate, path, header=model_fits_header(model), overwrite=overwrite)


def run_model_headers(models: xr.Dataset, *, time: str, version: str) -> list[dict[str, Any]]:
    """Header keywords of each run's own model file, in the order of ``obs_id``.

    ``OBS_ID``, ``BKGTIME`` (``time``), ``SMOOTHED``, ``BKGMODEL =
    'conditions'``, the fill keywords (:func:`fill_cards`) and ``CREATOR``
    (``xbkg <version>``).
    """
    smoothing = str(models["rate"].attrs.get("smoothing", "none"))
    headers = []
    for obs_id in (int(o) for o in models[OBS_DIM].values):
        header: dict[str, Any] = {
            "OBS_ID": (obs_id, "run this model is for"),
            TIME_KEYWORD: (time.upper(), "run duration normalising the rate"),
            "SMOOTHED": (smoothing, "smoothing method"),
            "BKGMODEL": ("conditions", "rate for the run's own observing conditions"),
            **energy_node_cards(models["rate"]),
        }
        if "filled" in models:
            header.update(fill_cards(models["filled"].sel({OBS_DIM: obs_id})))
        header["CREATOR"] = (f"xbkg {version}", "program that wrote this file")
        headers.append(header)
    return headers


def write_run_model_files(
    models: xr.Dataset, directory: str | Path, *, time: str, version: str
) -> list[Path]:
    """Write each run's own ``bkg_2d`` model (:func:`xbkg.pipeline.run_models`) into ``directory``.

    Bins without a rate are written as 0 (only without filling). The headers
    are :func:`run_model_headers`.
    """
    directory = Path(directory)
    obs_ids = [int(o) for o in models[OBS_DIM].values]
    return write_bkg_2d_files(
        models["rate"].fillna(0.0),
        OBS_DIM,
        [directory / run_model_filename(o) for o in obs_ids],
        run_model_headers(models, time=time, version=version),
    )


def write_group_def(groups: xr.Dataset, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write the group definitions as ``group-def.fits``.

    One BINTABLE row per group: ``GROUP_ID`` then ``<COL>_MIN``/``<COL>_MAX``
    for edge axes or ``<COL>`` for value axes (the Gammapy 0.6 layout).
    """
    columns = {"GROUP_ID": groups[GROUP_DIM].values.astype(np.int64)}
    for name, var in groups.coords.items():
        if name == GROUP_DIM:
            continue
        gadf = str(var.attrs.get("gadf_name", str(name).upper()))
        values = np.asarray(var.values)
        if values.dtype.kind in "iub":
            columns[gadf] = values.astype(np.int64)
        elif values.dtype.kind == "f":
            columns[gadf] = values.astype(np.float64)
        else:
            columns[gadf] = values.astype(str)
    # No comment on this card: a long grouping description would not fit beside one.
    table = Table(columns, meta={"GROUPING": str(groups.attrs.get("grouping", ""))})
    return write_table(table, path, "GROUP_DEF", overwrite=overwrite)


def read_group_def(path: str | Path) -> xr.Dataset:
    """Read a ``group-def.fits`` (ours or Gammapy 0.6's) into group definitions.

    The groups must form a full cartesian grid of their axes, with GROUP_IDs
    in row-major order (first axis slowest, edges increasing, values in the
    order they first appear); anything else is refused rather than
    re-numbered, since the GROUP_IDs of a file give models and runs their
    meaning.

    Raises
    ------
    ConfigError
        If there is no GROUP_ID column, or the rows are not that grid in that
        order (e.g. group 0 is not the first range); the message names the
        file, the first row that differs and how to fix it.
    """
    path = Path(path)
    try:
        hdul = read_fits(path)
    except DamagedFile as exc:
        raise ConfigError(
            f"{path}: cannot read the group definitions ({exc}); the file is damaged or "
            "incomplete: copy it again"
        ) from exc
    if len(hdul) < 2 or not isinstance(hdul[1], fits.BinTableHDU):
        raise ConfigError(f"{path}: the file holds no group definition table")
    data = hdul[1].data
    names = [n.upper() for n in data.columns.names]
    if "GROUP_ID" not in names:
        raise ConfigError(f"{path}: group definition has no GROUP_ID column")
    table: Mapping[str, NDArray[Any]] = {n: np.asarray(data[n]) for n in names}
    axes = []
    for n in names:
        if n == "GROUP_ID" or n.endswith("_MAX"):
            continue
        if n.endswith("_MIN"):
            col = n[: -len("_MIN")]
            edges = np.unique(np.concatenate([table[n], table[f"{col}_MAX"]]))
            axes.append(GroupAxis(col, edges=tuple(edges)))
        else:
            axes.append(GroupAxis(n, values=tuple(dict.fromkeys(table[n].tolist()))))
    groups = group_definitions(axes)
    expected = groups[GROUP_DIM].values
    fix = (
        "write the rows as the full grid of the axes with GROUP_ID = 0, 1, ... in row-major "
        "order (first axis slowest, edges increasing), e.g. with xbkg.io.store.write_group_def, "
        "and rebuild the models that use the old numbering"
    )
    if not np.array_equal(np.asarray(table["GROUP_ID"]), expected):
        raise ConfigError(
            f"{path}: GROUP_IDs {table['GROUP_ID'].tolist()} are not the row-major cartesian "
            f"grid {expected.tolist()} of the axes {grouping_description(axes)}; {fix}"
        )
    # The same GROUP_IDs must also mean the same cells: a file whose group 0 is
    # not the first range would otherwise be renumbered silently.
    columns = {
        str(var.attrs.get("gadf_name", str(name).upper())): var.values
        for name, var in groups.coords.items()
        if name != GROUP_DIM
    }
    differs = np.zeros(expected.size, dtype=bool)
    for column, values in columns.items():
        differs |= np.asarray(table[column]).astype(values.dtype) != values
    if differs.any():
        row = int(np.argmax(differs))

        def cell(get: Any) -> str:
            shown = {c: get(c) for c in columns}
            return ", ".join(
                f"{c} {v:g}" if isinstance(v, (int, float, np.number)) else f"{c} {v}"
                for c, v in shown.items()
            )

        raise ConfigError(
            f"{path}: row {row} (GROUP_ID {expected[row]}) is {cell(lambda c: table[c][row])}, "
            f"but GROUP_ID {expected[row]} of the grid {grouping_description(axes)} in row-major "
            f"order is {cell(lambda c: columns[c][row])}: the groups are not numbered in "
            f"row-major order and reading the file would renumber them; {fix}"
        )
    return groups

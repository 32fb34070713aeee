"""Turn an output folder into a data store: obs-index and HDU index with bkg rows.

The written HDU index covers every run of the input store. Its event and IRF
rows point back at the original files through ``FILE_DIR`` paths relative to
the new index, and each run gets exactly one ``bkg`` row pointing at its
model (existing ``bkg`` rows of those runs are replaced, not duplicated), with
``HDU_CLASS`` ``bkg_2d`` or ``bkg_3d`` as the model files are: Gammapy's
``DataStore`` reads the model as ``Background2D`` or ``Background3D`` by it.
``SIZE`` (file size in bytes) and ``MD5`` (of the file) are filled for the new
rows; rows copied from the input keep the values the input had.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table
from numpy.typing import NDArray

from xbkg.conventions import BKG_2D_EXTNAME, BKG_2D_HDU_CLASS, BKG_HDU_CLASSES, BKG_HDU_TYPE
from xbkg.errors import ConfigError
from xbkg.io.datastore import DataStore

__all__ = ["file_md5", "make_hdu_index", "make_obs_index"]


def file_md5(path: str | Path) -> str:
    """Hex MD5 digest of a file."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _relative_dir(target: Path, start: Path) -> str:
    rel = os.path.relpath(os.path.abspath(target), os.path.abspath(start))
    return Path(rel).as_posix()


def make_hdu_index(
    store: DataStore,
    out_dir: str | Path,
    bkg_files: Mapping[int, str],
    *,
    files_dir: str | Path | None = None,
    hdu_name: str = BKG_2D_EXTNAME,
    hdu_class: str | Mapping[int, str] = BKG_2D_HDU_CLASS,
) -> Table:
    """HDU index of the output data store (write it with :func:`xbkg.io.datastore.write_index`).

    Parameters
    ----------
    store
        The input data store.
    out_dir
        Folder where the new index will be written (FILE_DIRs are relative to it).
    bkg_files
        ``{obs_id: file name}`` of the model each run uses; the file lies in
        ``files_dir`` (default ``out_dir``), and must exist there.
    files_dir
        Where the model files are now (they may be staged elsewhere before
        being moved into ``out_dir``); SIZE and MD5 are computed from them.
    hdu_name, hdu_class
        HDU_NAME (the EXTNAME of the model HDU) and HDU_CLASS of the new rows:
        ``"bkg_2d"`` for :func:`xbkg.io.gadf.write_bkg_2d` files, ``"bkg_3d"``
        for :func:`xbkg.io.gadf.write_bkg_3d` files (both write the EXTNAME
        ``BACKGROUND``). ``hdu_class`` may also be ``{obs_id: class}``, one
        per run of ``bkg_files`` (a store whose runs use models of both classes).

    Returns
    -------
    astropy.table.Table
        Input rows (bkg rows of the given runs removed, FILE_DIR re-based) and
        one new bkg row per run, ordered by OBS_ID, HDU_TYPE, HDU_CLASS, HDU_NAME,
        FILE_DIR and FILE_NAME.
    """
    classes = {o: hdu_class for o in bkg_files} if isinstance(hdu_class, str) else dict(hdu_class)
    unknown = sorted(set(classes.values()) - set(BKG_HDU_CLASSES))
    if unknown or set(classes) != set(bkg_files):
        raise ConfigError(
            f"hdu_class must be one of {BKG_HDU_CLASSES} (the GADF background classes Gammapy "
            f"reads), one per run, got {hdu_class!r}"
        )
    out_dir = Path(out_dir)
    files_dir = Path(files_dir) if files_dir is not None else out_dir
    index = store.hdu_index
    old = index[~((index["HDU_TYPE"] == BKG_HDU_TYPE) & np.isin(index["OBS_ID"], list(bkg_files)))]
    old_columns = {name: np.asarray(old[name]) for name in old.colnames}
    # Re-based once per folder: an index has thousands of rows and a few folders.
    folders, inverse = np.unique(old_columns["FILE_DIR"], return_inverse=True)
    rebased = np.array([_relative_dir(store.base_dir / d, out_dir) for d in folders], dtype=str)
    old_columns["FILE_DIR"] = rebased[inverse] if len(old) else old_columns["FILE_DIR"]
    info = {}
    for name in sorted(set(bkg_files.values())):
        path = files_dir / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the HDU index would point at a missing model file")
        info[name] = (path.stat().st_size, file_md5(path))
    obs_ids = sorted(bkg_files)
    n = len(obs_ids)
    values: dict[str, NDArray[Any]] = {
        "OBS_ID": np.asarray(obs_ids, dtype=np.int64),
        "HDU_TYPE": np.full(n, BKG_HDU_TYPE),
        "HDU_CLASS": np.array([classes[i] for i in obs_ids], dtype=str),
        "FILE_DIR": np.full(n, "."),
        "FILE_NAME": np.array([bkg_files[i] for i in obs_ids], dtype=str),
        "HDU_NAME": np.full(n, hdu_name),
        "SIZE": np.asarray([info[bkg_files[i]][0] for i in obs_ids], dtype=np.int64),
        "MD5": np.array([info[bkg_files[i]][1] for i in obs_ids], dtype=str),
    }
    old_columns.setdefault("SIZE", np.full(len(old), -1, dtype=np.int64))
    old_columns.setdefault("MD5", np.full(len(old), ""))
    # Columns the input has and we cannot fill (MTIME would break reproducibility) are blank.
    columns = {
        name: _concatenate(column, values.get(name, _blank(column, n)))
        for name, column in old_columns.items()
    }
    # Sorted on every column that tells rows apart, so the output does not depend
    # on the order of the input index.
    keys = ("FILE_NAME", "FILE_DIR", "HDU_NAME", "HDU_CLASS", "HDU_TYPE", "OBS_ID")
    order = np.lexsort([columns[k] for k in keys])
    table = Table({k: v[order] for k, v in columns.items()}, meta=index.meta)
    for name in index.colnames:
        table[name].unit = index[name].unit
    return table


def _concatenate(old: NDArray[Any], new: NDArray[Any]) -> NDArray[Any]:
    if old.dtype.kind == "U" or new.dtype.kind == "U":
        return np.concatenate([old.astype(str), new.astype(str)])
    return np.concatenate([old, new.astype(old.dtype)])


def _blank(column: NDArray[Any], n: int) -> NDArray[Any]:
    kind = column.dtype.kind
    if kind == "f":
        return np.full(n, np.nan)
    if kind in "iu":
        return np.full(n, -1, dtype=np.int64)
    if kind == "b":
        return np.zeros(n, dtype=bool)
    return np.full(n, "")


def make_obs_index(store: DataStore) -> Table:
    """The observation index of the output store: the input's rows, sorted by OBS_ID."""
    return store.obs_index[np.argsort(store.obs_index["OBS_ID"], kind="stable")]

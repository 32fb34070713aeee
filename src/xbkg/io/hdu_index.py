"""Turn an output folder into a data store: obs-index and HDU index with bkg rows.

The written HDU index covers every run of the input store. Its event and IRF
rows point back at the original files through ``FILE_DIR`` paths relative to
the new index, and each run gets exactly one ``bkg`` row pointing at its
model (existing ``bkg`` rows of those runs are replaced, not duplicated).
``SIZE`` (file size in bytes) and ``MD5`` (of the file) are filled for the new
rows; rows copied from the input keep the values the input had.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.table import Table, vstack

from xbkg.conventions import BKG_2D_EXTNAME
from xbkg.datastore import DataStore

__all__ = ["file_md5", "index_hdulist", "make_hdu_index", "make_obs_index"]


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
    hdu_class: str = "bkg_2d",
) -> Table:
    """HDU index of the output data store.

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
        HDU_NAME (the EXTNAME of the model HDU) and HDU_CLASS of the new rows.

    Returns
    -------
    astropy.table.Table
        Input rows (bkg rows of the given runs removed, FILE_DIR re-based) and
        one new bkg row per run, ordered by OBS_ID, HDU_TYPE, HDU_CLASS, HDU_NAME,
        FILE_DIR and FILE_NAME.
    """
    out_dir = Path(out_dir)
    files_dir = Path(files_dir) if files_dir is not None else out_dir
    old = store.hdu_index.copy()
    replaced = (old["HDU_TYPE"] == "bkg") & np.isin(old["OBS_ID"], list(bkg_files))
    old = old[~replaced]
    old["FILE_DIR"] = [_relative_dir(store.base_dir / d, out_dir) for d in old["FILE_DIR"]]
    info = {}
    for name in sorted(set(bkg_files.values())):
        path = files_dir / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the HDU index would point at a missing model file")
        info[name] = (path.stat().st_size, file_md5(path))
    obs_ids = sorted(bkg_files)
    values = {
        "OBS_ID": np.asarray(obs_ids, dtype=np.int64),
        "HDU_TYPE": ["bkg"] * len(obs_ids),
        "HDU_CLASS": [hdu_class] * len(obs_ids),
        "FILE_DIR": ["."] * len(obs_ids),
        "FILE_NAME": [bkg_files[i] for i in obs_ids],
        "HDU_NAME": [hdu_name] * len(obs_ids),
        "SIZE": np.asarray([info[bkg_files[i]][0] for i in obs_ids], dtype=np.int64),
        "MD5": [info[bkg_files[i]][1] for i in obs_ids],
    }
    if "SIZE" not in old.colnames:
        old["SIZE"] = np.full(len(old), -1, dtype=np.int64)
    if "MD5" not in old.colnames:
        old["MD5"] = [""] * len(old)
    # Columns the input has and we cannot fill (MTIME would break reproducibility) are blank.
    new = Table({c: values.get(c, _blank(old[c], len(obs_ids))) for c in old.colnames})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", u.UnitsWarning)
        table = vstack([old, new[old.colnames]], join_type="exact", metadata_conflicts="silent")
    # Sorted on every column that tells rows apart, so the output does not depend
    # on the order of the input index.
    keys = ("FILE_NAME", "FILE_DIR", "HDU_NAME", "HDU_CLASS", "HDU_TYPE", "OBS_ID")
    order = np.lexsort([np.asarray(table[k]) for k in keys])
    table = table[order]
    table.meta = {k: v for k, v in store.hdu_index.meta.items() if k != "BASE_DIR"}
    return table


def _blank(column, n: int):
    kind = np.asarray(column).dtype.kind
    if kind == "f":
        return np.full(n, np.nan)
    if kind in "iu":
        return np.full(n, -1, dtype=np.int64)
    return [""] * n


def make_obs_index(store: DataStore) -> Table:
    """The observation index of the output store: the input's rows, sorted by OBS_ID."""
    order = np.argsort(np.asarray(store.obs_index["OBS_ID"]), kind="stable")
    return store.obs_index[order]


def index_hdulist(table: Table, extname: str, header: Mapping[str, str] | None = None):
    """A primary HDU plus ``table`` as a BINTABLE named ``extname``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", u.UnitsWarning)
        hdu = fits.table_to_hdu(table)
    hdu.name = extname
    for key, value in (header or {}).items():
        hdu.header[key] = value
    return fits.HDUList([fits.PrimaryHDU(), hdu])

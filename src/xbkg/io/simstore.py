"""Writing a simulated GADF data store: event lists, IRFs, obs-index and HDU index.

:func:`xbkg.simulate.simulate_datastore` plans the runs and draws their events
(:mod:`xbkg.schedule`, :mod:`xbkg.truth`); this module writes them as files
that look like real data. It is given plain labelled data: the run table
along ``obs_id`` (with the obs-index columns in lower case), the event columns
and the IRF values of each run, and a :class:`StoreHeader` with what every
file says about the telescope, the time reference and the simulation.

Two layouts (:data:`Layout`): ``"dr1"``, one file per run as H.E.S.S. DL3
DR1, and ``"per-hdu"``, the Gammapy 0.6 tutorial layout (one file per HDU,
NUL-padded index strings, upper-case HDU names, no units on event columns or
in the obs-index, file sizes and MD5 sums in the HDU index).

The store is written into a hidden folder beside its destination and moved
into place at the end (:func:`staged_store`), so that an error never leaves a
partial store behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import xarray as xr
from astropy.io import fits
from numpy.typing import ArrayLike, NDArray

from xbkg.conventions import GADF_HDUDOC, GADF_HDUVERS, HDU_INDEX_FILE, OBS_DIM, OBS_INDEX_FILE
from xbkg.errors import OutputError, OutputExistsError
from xbkg.io.fitsfile import write_fits

__all__ = [
    "HESS_DR1_CREATOR",
    "HESS_DR1_HDUVERS",
    "OBS_COLUMNS",
    "Layout",
    "StoreHeader",
    "check_out_dir",
    "staged_store",
    "track_keywords",
    "write_indexes",
    "write_run",
]

#: ``"dr1"``: one file per run; ``"per-hdu"``: the Gammapy 0.6 tutorial layout.
Layout = Literal["dr1", "per-hdu"]

#: ``CREATOR`` and ``HDUVERS`` of the EVENTS headers of the H.E.S.S. DL3 DR1 release, for
#: which Gammapy 2.1 reads every background model of a run with ``REVERSE_LON_RADEC``.
HESS_DR1_CREATOR: Final = "SASH FITS::EventListWriter"
HESS_DR1_HDUVERS: Final = "0.2"
#: ``CREATOR`` of the EVENTS headers otherwise.
SIMULATE_CREATOR: Final = "xbkg.simulate"

#: obs-index columns in the order written, with FITS format and unit.
OBS_COLUMNS: Final[dict[str, tuple[str, str | None]]] = {
    "OBS_ID": ("K", None),
    "RA_PNT": ("D", "deg"),
    "DEC_PNT": ("D", "deg"),
    "GLON_PNT": ("D", "deg"),
    "GLAT_PNT": ("D", "deg"),
    "ZEN_PNT": ("D", "deg"),
    "ALT_PNT": ("D", "deg"),
    "AZ_PNT": ("D", "deg"),
    "ONTIME": ("D", "s"),
    "LIVETIME": ("D", "s"),
    "DEADC": ("D", None),
    "TSTART": ("D", "s"),
    "TSTOP": ("D", "s"),
    "N_TELS": ("K", None),
    "MUONEFF": ("D", None),
    "EVENT_COUNT": ("K", None),
    "SAFE_ENERGY_LO": ("D", "TeV"),
    "SAFE_ENERGY_HI": ("D", "TeV"),
    "OBJECT": ("A", None),
}


@dataclass(frozen=True)
class StoreHeader:
    """What the files of a simulated store say about their origin.

    Attributes
    ----------
    telescop, instrume, n_tels, geolon, geolat, altitude
        Identity and site of the telescope (deg East, deg, m).
    prefix
        File name prefix of the per-HDU layout.
    mjdrefi, mjdreff
        Mission time reference (integer and fractional MJD, TT).
    truth_cards
        FITS cards ``(key, value, comment)`` recording the truth model, among
        them ``SIMTRUTH``, which every HDU carries.
    seed
        Seed of the simulation (``SIMSEED``).
    like_hess_dr1
        Flag the store like the H.E.S.S. DL3 DR1 release: ``CREATOR =``
        :data:`HESS_DR1_CREATOR` in the EVENTS headers and ``HDUVERS =``
        :data:`HESS_DR1_HDUVERS` in those of every HDU of the runs (the EVENTS
        headers of the per-HDU layout then carry the ``HDUCLASS`` keywords too),
        as in DR1; ``SIMDR1 = T`` says it was done on purpose.
    """

    telescop: str
    instrume: str
    n_tels: int
    geolon: float
    geolat: float
    altitude: float
    prefix: str
    mjdrefi: int
    mjdreff: float
    truth_cards: tuple[tuple[str, object, str], ...]
    seed: int
    like_hess_dr1: bool = False

    @property
    def simtruth(self) -> tuple[str, object, str]:
        """The ``SIMTRUTH`` card."""
        return next(card for card in self.truth_cards if card[0] == "SIMTRUTH")


# --------------------------------------------------------------------------------------
# Headers and columns
# --------------------------------------------------------------------------------------


def _gadf_cards(
    hduclas: dict[str, str], old: bool, hduvers: str = GADF_HDUVERS
) -> list[tuple[str, object]]:
    if old:  # files of the GADF v0.1 era carry no HDUCLAS keywords
        return []
    cards: list[tuple[str, object]] = [
        ("HDUCLASS", "GADF"),
        ("HDUDOC", GADF_HDUDOC),
        ("HDUVERS", hduvers),
    ]
    return cards + list(hduclas.items())


def _hduvers(head: StoreHeader) -> str:
    return HESS_DR1_HDUVERS if head.like_hess_dr1 else GADF_HDUVERS


def _time_cards(head: StoreHeader) -> list[tuple[str, object, str]]:
    return [
        ("MJDREFI", head.mjdrefi, "int part of reference MJD for times"),
        ("MJDREFF", head.mjdreff, "fractional part of reference MJD"),
        ("TIMEUNIT", "s", "time unit"),
        ("TIMESYS", "TT", "time system"),
        ("TIMEREF", "LOCAL", "time reference"),
    ]


def _site_cards(head: StoreHeader) -> list[tuple[str, object, str]]:
    return [
        ("TELESCOP", head.telescop, "telescope (simulated)"),
        ("INSTRUME", head.instrume, "instrument (simulated)"),
        ("GEOLON", head.geolon, "[deg] longitude of observatory"),
        ("GEOLAT", head.geolat, "[deg] latitude of observatory"),
        ("ALTITUDE", head.altitude, "[m] altitude of observatory"),
    ]


def _header(cards: Sequence[tuple[Any, ...]]) -> fits.Header:
    header = fits.Header()
    for card in cards:
        header.append(card)
    return header


def _column(name: str, fmt: str, values: ArrayLike, unit: str | None) -> fits.Column:
    return fits.Column(name=name, format=fmt, unit=unit, array=values)


def _string_column(name: str, values: Sequence[str], min_width: int) -> fits.Column:
    # numpy byte strings are NUL-padded, and astropy writes them as they are: a
    # column wider than its longest entry gives the trailing NULs of old indexes.
    width = max(min_width, max((len(v) for v in values), default=1))
    return fits.Column(name=name, format=f"{width}A", array=np.array(values, dtype=f"S{width}"))


def _primary(head: StoreHeader) -> fits.PrimaryHDU:
    return fits.PrimaryHDU(
        header=_header([("TELESCOP", head.telescop, "telescope (simulated)"), head.simtruth])
    )


# --------------------------------------------------------------------------------------
# HDUs of a run
# --------------------------------------------------------------------------------------


def _events_hdus(
    runs: xr.Dataset,
    i: int,
    events: Mapping[str, NDArray[Any]],
    n_source: int,
    *,
    head: StoreHeader,
    old: bool,
) -> list[fits.BinTableHDU]:
    def unit(value: str) -> str | None:
        return None if old else value  # the old layout has no TUNIT on event columns

    def run(name: str) -> Any:
        return runs[name].values[i]

    obs_id = int(runs[OBS_DIM].values[i])
    columns = [
        _column("EVENT_ID", "K", events["EVENT_ID"], None),
        _column("TIME", "D", events["TIME"], unit("s")),
        _column("RA", "E", events["RA"], unit("deg")),
        _column("DEC", "E", events["DEC"], unit("deg")),
        _column("ENERGY", "E", events["ENERGY"], unit("TeV")),
    ]
    # Gammapy's test of a DR1 run reads CREATOR and HDUVERS of the EVENTS header alone.
    flagged = head.like_hess_dr1
    cards: list[tuple[Any, ...]] = [
        ("EXTNAME", "EVENTS"),
        *_gadf_cards({"HDUCLAS1": "EVENTS"}, old and not flagged, _hduvers(head)),
        (
            "CREATOR",
            HESS_DR1_CREATOR if flagged else SIMULATE_CREATOR,
            "program that created this file",
        ),
        ("OBS_ID", obs_id, "observation number"),
        ("OBJECT", str(run("object")), "observed field"),
        ("TSTART", run("tstart"), "[s] mission time of start of observation"),
        ("TSTOP", run("tstop"), "[s] mission time of end of observation"),
        *_time_cards(head),
        ("TELAPSE", run("tstop") - run("tstart"), "[s] TSTOP - TSTART"),
        ("ONTIME", run("ontime"), "[s] total good time including dead time"),
        ("LIVETIME", run("livetime"), "[s] total live time"),
        ("DEADC", run("deadc"), "dead time correction, LIVETIME / ONTIME"),
        ("RA_PNT", run("ra_pnt"), "[deg] pointing right ascension"),
        ("DEC_PNT", run("dec_pnt"), "[deg] pointing declination"),
        ("ALT_PNT", run("alt_pnt"), "[deg] altitude of pointing at mid-run"),
        ("AZ_PNT", run("az_pnt"), "[deg] azimuth of pointing at mid-run"),
        ("RADESYS", "ICRS", "equatorial system"),
        ("EQUINOX", 2000.0, "base equinox"),
        ("OBS_MODE", "POINTING", "observation mode"),
        ("N_TELS", head.n_tels, "number of telescopes"),
        *_site_cards(head),
        ("MUONEFF", run("muoneff"), "muon efficiency"),
        ("EUNIT", "TeV", "energy unit"),
        *head.truth_cards,
        ("SIMSEED", head.seed, "simulation seed"),
        ("SIMZEN", run("zen_pnt"), "[deg] zenith angle used for the truth rate"),
        ("SIMNBKG", int(run("n_background")), "number of simulated background events"),
        ("SIMNSRC", n_source, "number of injected source events"),
        *([("SIMDR1", True, "CREATOR, HDUVERS set like H.E.S.S. DL3 DR1")] if flagged else []),
    ]
    hdu_events = fits.BinTableHDU.from_columns(columns, header=_header(cards))
    gti_cards = [
        ("EXTNAME", "GTI"),
        *_gadf_cards({"HDUCLAS1": "GTI"}, old, _hduvers(head)),
        ("OBS_ID", obs_id, "observation number"),
        ("TSTART", run("tstart"), "[s] start of the GTI table"),
        ("TSTOP", run("tstop"), "[s] end of the GTI table"),
        *_time_cards(head),
    ]
    hdu_gti = fits.BinTableHDU.from_columns(
        [
            _column("START", "D", runs["tstart"].values[i : i + 1], unit("s")),
            _column("STOP", "D", runs["tstop"].values[i : i + 1], unit("s")),
        ],
        header=_header(gti_cards),
    )
    return [hdu_events, hdu_gti]


def track_keywords(runs: xr.Dataset, i: int, head: StoreHeader) -> dict[str, object]:
    """The keywords of run ``i``'s EVENTS header that place its field of view on the sky.

    The pointing, the run's times, the time reference and the site, with the
    values :func:`write_run` writes: what :func:`xbkg.fov.track_from_header`
    reads, so that events drawn in the ALTAZ field of view land where a reader
    of the files finds them.
    """
    cards: list[tuple[Any, ...]] = [
        ("RA_PNT", runs["ra_pnt"].values[i]),
        ("DEC_PNT", runs["dec_pnt"].values[i]),
        ("TSTART", runs["tstart"].values[i]),
        ("TSTOP", runs["tstop"].values[i]),
        *_time_cards(head),
        *_site_cards(head),
        ("OBS_MODE", "POINTING"),
    ]
    return {str(card[0]): card[1] for card in cards}


def _irf_columns(
    values: NDArray[np.float64], name: str, unit: str, irfs: Mapping[str, NDArray[np.float64]]
) -> list[fits.Column]:
    energy, theta = irfs["energy"], irfs["theta"]
    n_e, n_t = energy.size - 1, theta.size - 1
    return [
        _column("ENERG_LO", f"{n_e}E", energy[None, :-1], "TeV"),
        _column("ENERG_HI", f"{n_e}E", energy[None, 1:], "TeV"),
        _column("THETA_LO", f"{n_t}E", theta[None, :-1], "deg"),
        _column("THETA_HI", f"{n_t}E", theta[None, 1:], "deg"),
        fits.Column(
            name=name, format=f"{n_e * n_t}E", unit=unit, dim=f"({n_e},{n_t})", array=values[None]
        ),
    ]


def _aeff_hdu(
    runs: xr.Dataset,
    i: int,
    irfs: Mapping[str, NDArray[np.float64]],
    *,
    extname: str,
    point_like: bool,
    head: StoreHeader,
) -> fits.BinTableHDU:
    cards = [
        ("EXTNAME", extname),
        *_gadf_cards(
            {
                "HDUCLAS1": "RESPONSE",
                "HDUCLAS2": "EFF_AREA",
                "HDUCLAS3": "POINT-LIKE" if point_like else "FULL-ENCLOSURE",
                "HDUCLAS4": "AEFF_2D",
            },
            False,
            _hduvers(head),
        ),
        ("TELESCOP", head.telescop),
        ("OBS_ID", int(runs[OBS_DIM].values[i]), "observation number"),
        ("LO_THRES", runs["safe_energy_lo"].values[i], "[TeV] safe energy threshold"),
        ("HI_THRES", runs["safe_energy_hi"].values[i], "[TeV] upper safe energy limit"),
        head.simtruth,
    ]
    return fits.BinTableHDU.from_columns(
        _irf_columns(irfs["EFFAREA"], "EFFAREA", "m2", irfs), header=_header(cards)
    )


def _rad_max_hdu(
    runs: xr.Dataset,
    i: int,
    irfs: Mapping[str, NDArray[np.float64]],
    *,
    extname: str,
    head: StoreHeader,
) -> fits.BinTableHDU:
    cards = [
        ("EXTNAME", extname),
        *_gadf_cards(
            {
                "HDUCLAS1": "RESPONSE",
                "HDUCLAS2": "RAD_MAX",
                "HDUCLAS3": "POINT-LIKE",
                "HDUCLAS4": "RAD_MAX_2D",
            },
            False,
            _hduvers(head),
        ),
        ("TELESCOP", head.telescop),
        ("OBS_ID", int(runs[OBS_DIM].values[i]), "observation number"),
        head.simtruth,
    ]
    return fits.BinTableHDU.from_columns(
        _irf_columns(irfs["RAD_MAX"], "RAD_MAX", "deg", irfs), header=_header(cards)
    )


def write_run(
    directory: str | os.PathLike[str],
    runs: xr.Dataset,
    i: int,
    events: Mapping[str, NDArray[Any]],
    irfs: Mapping[str, NDArray[np.float64]],
    *,
    n_source: int,
    layout: Layout,
    point_like: bool,
    head: StoreHeader,
) -> list[dict[str, object]]:
    """Write the files of run ``i`` of ``runs`` into the store folder ``directory``.

    Parameters
    ----------
    directory
        The (staged) store folder.
    runs
        Run table along ``obs_id`` (:func:`xbkg.schedule.plan_runs`).
    i
        Position of the run in ``runs``.
    events
        Event columns ``EVENT_ID``, ``TIME``, ``RA``, ``DEC``, ``ENERGY``.
    irfs
        ``energy`` and ``theta`` edges (TeV, deg) and the ``EFFAREA`` (m2) and,
        if ``point_like``, ``RAD_MAX`` (deg) values along ``(theta, energy)``.
    n_source
        Number of injected source events among ``events`` (``SIMNSRC``).
    layout, point_like, head
        File layout, whether the IRFs are point-like (a ``RAD_MAX`` HDU), headers.

    Returns
    -------
    list of dict
        The run's rows of the HDU index.
    """
    tmp = Path(directory)
    obs_id = int(runs[OBS_DIM].values[i])
    old = layout == "per-hdu"
    ev_hdus = _events_hdus(runs, i, events, n_source, head=head, old=old)
    rows: list[dict[str, object]] = []
    if not old:
        # One file per run, as H.E.S.S. DR1; index names in lower case, sizes of the HDUs.
        irf_hdus = [_aeff_hdu(runs, i, irfs, extname="AEFF", point_like=point_like, head=head)]
        types = [("events", "events"), ("gti", "gti"), ("aeff", "aeff_2d")]
        if point_like:
            irf_hdus.append(_rad_max_hdu(runs, i, irfs, extname="RAD_MAX", head=head))
            types.append(("rad_max", "rad_max_2d"))
        hdus = [*ev_hdus, *irf_hdus]
        name = f"obs_{obs_id:06d}.fits.gz"
        write_fits(fits.HDUList([_primary(head), *hdus]), tmp / "data" / name)
        for hdu, (hdu_type, hdu_class) in zip(hdus, types, strict=True):
            rows.append(
                {
                    "OBS_ID": obs_id,
                    "HDU_TYPE": hdu_type,
                    "HDU_CLASS": hdu_class,
                    "FILE_DIR": "data",
                    "FILE_NAME": name,
                    "HDU_NAME": hdu.name.lower(),
                    "SIZE": hdu.filebytes(),
                }
            )
        return rows
    # Gammapy 0.6 tutorial layout: folders of 200 runs, one file per HDU (GTI beside
    # the events), upper-case HDU names, file sizes and MD5 sums in the index.
    first = obs_id // 200 * 200
    file_dir = f"run{first:06d}-{first + 199:06d}/run{obs_id:06d}"
    aeff = _aeff_hdu(runs, i, irfs, extname="AEFF_2D", point_like=point_like, head=head)
    files: list[tuple[str, list[fits.BinTableHDU], list[tuple[str, str]]]] = [
        (
            f"{head.prefix}_events_{obs_id:06d}.fits.gz",
            ev_hdus,
            [("gti", "gti"), ("events", "events")],
        ),
        (f"{head.prefix}_aeff_2d_{obs_id:06d}.fits.gz", [aeff], [("aeff", "aeff_2d")]),
    ]
    if point_like:
        files.append(
            (
                f"{head.prefix}_rad_max_2d_{obs_id:06d}.fits.gz",
                [_rad_max_hdu(runs, i, irfs, extname="RAD_MAX_2D", head=head)],
                [("rad_max", "rad_max_2d")],
            )
        )
    for name, hdus, types in files:
        path = write_fits(fits.HDUList([_primary(head), *hdus]), tmp / file_dir / name)
        data = path.read_bytes()
        by_type = {h.name.lower(): h for h in hdus}
        for hdu_type, hdu_class in types:
            hdu = by_type[hdu_type] if hdu_type in by_type else hdus[0]
            rows.append(
                {
                    "OBS_ID": obs_id,
                    "HDU_TYPE": hdu_type,
                    "HDU_CLASS": hdu_class,
                    "FILE_DIR": file_dir,
                    "FILE_NAME": name,
                    "HDU_NAME": hdu.name.upper(),
                    "SIZE": len(data),
                    "MD5": hashlib.md5(data).hexdigest(),
                }
            )
    return rows


# --------------------------------------------------------------------------------------
# Indexes
# --------------------------------------------------------------------------------------


def _obs_index_hdu(
    runs: xr.Dataset, *, missing: set[str], head: StoreHeader, old: bool
) -> fits.BinTableHDU:
    n = runs.sizes[OBS_DIM]
    values: dict[str, NDArray[Any]] = {
        "OBS_ID": runs[OBS_DIM].values,
        "N_TELS": np.full(n, head.n_tels, dtype=np.int64),
    }
    columns = []
    for name, (fmt, unit) in OBS_COLUMNS.items():
        if name in missing:
            continue
        if fmt == "A":
            text = [str(v) for v in runs[name.lower()].values]
            columns.append(_string_column(name, text, 16 if old else 1))
        else:
            column = values[name] if name in values else runs[name.lower()].values
            columns.append(_column(name, fmt, column, None if old else unit))
    cards: list[tuple[Any, ...]] = []
    if not old:  # the old tutorial store's indexes have no EXTNAME or HDUCLAS keywords
        cards += [
            ("EXTNAME", "OBS_INDEX"),
            *_gadf_cards({"HDUCLAS1": "INDEX", "HDUCLAS2": "OBS"}, False),
        ]
    cards += [*_time_cards(head), *_site_cards(head), *head.truth_cards, ("SIMSEED", head.seed)]
    return fits.BinTableHDU.from_columns(columns, header=_header(cards))


def _hdu_index_hdu(
    rows: list[dict[str, object]], *, old: bool, head: StoreHeader
) -> fits.BinTableHDU:
    def col(key: str) -> list[Any]:
        return [r[key] for r in rows]

    # The old layout's fixed, generous widths leave trailing NULs, as in the tutorial store.
    widths = {"HDU_TYPE": 6, "HDU_CLASS": 10, "FILE_DIR": 26, "FILE_NAME": 30, "HDU_NAME": 12}
    columns = [_column("OBS_ID", "K", np.array(col("OBS_ID"), dtype=np.int64), None)]
    for name, width in widths.items():
        columns.append(_string_column(name, col(name), width if old else 1))
    columns.append(_column("SIZE", "K", np.array(col("SIZE"), dtype=np.int64), None))
    if old:
        columns.append(_string_column("MD5", col("MD5"), 32))
    cards: list[tuple[Any, ...]] = []
    if not old:
        cards += [
            ("EXTNAME", "HDU_INDEX"),
            *_gadf_cards({"HDUCLAS1": "INDEX", "HDUCLAS2": "HDU"}, False),
        ]
    cards += [head.simtruth]
    return fits.BinTableHDU.from_columns(columns, header=_header(cards))


def write_indexes(
    directory: str | os.PathLike[str],
    runs: xr.Dataset,
    rows: list[dict[str, object]],
    *,
    missing: set[str],
    layout: Layout,
    head: StoreHeader,
) -> None:
    """Write the obs-index and the HDU index of the store folder ``directory``.

    Parameters
    ----------
    directory
        The (staged) store folder.
    runs
        Run table along ``obs_id`` with the lower-case obs-index columns,
        ``event_count`` among them.
    rows
        The HDU-index rows of every run (:func:`write_run`).
    missing
        obs-index columns (of :data:`OBS_COLUMNS`) to leave out.
    layout, head
        File layout and headers.
    """
    tmp = Path(directory)
    old = layout == "per-hdu"
    obs_index = _obs_index_hdu(runs, missing=missing, head=head, old=old)
    write_fits(fits.HDUList([_primary(head), obs_index]), tmp / OBS_INDEX_FILE)
    hdu_index = _hdu_index_hdu(rows, old=old, head=head)
    write_fits(fits.HDUList([_primary(head), hdu_index]), tmp / HDU_INDEX_FILE)


# --------------------------------------------------------------------------------------
# The store folder, all or nothing
# --------------------------------------------------------------------------------------


def check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse an ``out_dir`` that is a file, or not empty (unless ``overwrite`` and a store).

    Raises
    ------
    OutputError
        If ``out_dir`` exists and is not a folder.
    OutputExistsError
        If it is not empty and ``overwrite`` is false, or if it is not empty
        and holds no data store (which ``overwrite`` never replaces).
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: exists and is not a folder; choose another folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise OutputExistsError(
                f"{out_dir}: folder exists and is not empty; choose another folder or pass "
                "overwrite=True to replace the data store in it"
            )
        if not (out_dir / HDU_INDEX_FILE).exists():
            # Refuse to wipe a folder that does not hold a data store, even when asked to.
            raise OutputExistsError(
                f"{out_dir}: folder is not empty and holds no {HDU_INDEX_FILE}, so it is not "
                "a data store that overwrite=True may replace; choose another folder"
            )


def _install(tmp: Path, out_dir: Path) -> None:
    """Move the finished store into place; an earlier store there is removed only after."""
    old: Path | None = None
    if out_dir.is_dir():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, old / "store")
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        if old is not None:
            os.replace(old / "store", out_dir)
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged_store(out_dir: Path) -> Iterator[Path]:
    """A hidden folder beside ``out_dir`` to write the store into, moved into place at the end.

    On success the folder replaces ``out_dir`` (an earlier store there is
    removed only then); on any error it is removed and ``out_dir`` is left as it
    was. Check ``out_dir`` first (:func:`check_out_dir`).
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        yield tmp
        _install(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

"""Property and fuzz tests: readers read a file or fail with the documented error.

Every reader of user files is fed damaged versions of a real H.E.S.S. DR1 run,
the DR1 indexes, the GADF example background and small synthetic files written
here: truncated at any byte (of the gzip stream or of the FITS bytes), bytes
overwritten in a header or in a data unit, header cards deleted or garbled,
NAXIS2 / TFORMn / TTYPEn / TUNITn changed, columns removed. A reader must read
the file or raise the documented error of :mod:`xbkg.errors`, with a message
that names the file; anything else (IndexError, KeyError, struct.error,
EOFError, astropy's VerifyError, ...) is a bug.

Hypothesis runs derandomized and without example database, with bounded example
counts, so that CI is deterministic and this file takes well under a minute.
Warnings are ignored while a reader runs, as they are for a user: a warning
does not stop the job, only exceptions are checked.
"""

from __future__ import annotations

import gzip
import io
import re
import shutil
import string
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from conftest import require
from xbkg import axes
from xbkg.errors import CatalogError, ConfigError, DataStoreError
from xbkg.io.catalog import read_catalog
from xbkg.io.datastore import open_datastore, read_events
from xbkg.io.gadf import read_bkg, write_bkg_2d

hypothesis = require("hypothesis")
st = require("hypothesis.strategies")
hnp = require("hypothesis.extra.numpy")
HealthCheck, given, settings = hypothesis.HealthCheck, hypothesis.given, hypothesis.settings

#: The smallest run of DR1 (Arp 220, 4513 events): EVENTS, GTI and all IRFs.
DR1_RUN = "hess_dl3_dr1_obs_id_026791.fits.gz"

FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def reads_or_fails_cleanly(
    call: Callable[[], Any],
    allowed: type[Exception] | tuple[type[Exception], ...],
    names: str | Path,
) -> Any:
    """Result of ``call()``, or None if it raised ``allowed`` with a message naming ``names``.

    Any other exception propagates and fails the test (Hypothesis then shrinks
    the input).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return call()
        except allowed as exc:
            error: BaseException = exc
    assert str(names) in str(error), f"the message does not name {names}: {error}"
    return None


def config_error(call: Callable[[], Any]) -> tuple[Any, str | None]:
    """``(result, None)`` of ``call()``, or ``(None, message)`` if it raised ConfigError."""
    try:
        return call(), None
    except ConfigError as exc:
        return None, str(exc)


# --------------------------------------------------------------------------- FITS layout


def hdu_extents(raw: bytes) -> list[tuple[int, int, int]]:
    """``(header start, data start, data end)`` of every HDU of uncompressed FITS bytes."""
    with fits.open(io.BytesIO(raw), memmap=False) as hdul:
        out = []
        for i in range(len(hdul)):
            info = hdul.fileinfo(i)
            out.append((info["hdrLoc"], info["datLoc"], info["datLoc"] + info["datSpan"]))
    return out


def card_offsets(raw: bytes, start: int, stop: int) -> dict[str, int]:
    """Keyword -> byte offset of its card, for the header in ``raw[start:stop]``."""
    out: dict[str, int] = {}
    for pos in range(start, stop, 80):
        key = raw[pos : pos + 8].decode("ascii", "replace").strip()
        if key == "END":
            break
        out.setdefault(key, pos)
    return out


class Sample:
    """A FITS file as bytes, with the extents of its HDUs and the cards of one header."""

    def __init__(self, raw: bytes, hdu: int) -> None:
        self.raw = raw
        self.extents = hdu_extents(raw)
        header, data, _ = self.extents[hdu]
        self.cards = card_offsets(raw, header, data)
        self.hdu = hdu


# --------------------------------------------------------------------------- strategies

#: Values for header keywords: integers of any size, floats, FITS strings that
#: are valid, odd or broken, and bytes that are not text at all.
header_values = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["0", "-1", "1", "2", "3", "28", "4513", "1.5", "1E3", "T", "F", ""]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(
        [
            "'1E'",
            "'1D'",
            "'E'",
            "'2E'",
            "'1J'",
            "'1Q'",
            "'PE(10)'",
            "'1PE(99)'",
            "'-1E'",
            "'0E'",
            "'99999999999E'",
            "'X'",
            "'Z'",
            "'3A'",
            "''",
            "'",
            "'''",
            "'deg'",
            "'TeV'",
            "'MeV'",
            "'m'",
            "'foo'",
            "'s-1 MeV-1 sr-1'",
            "'RA'",
            "'ENERGY'",
            "'EVENTS'",
            "'BINTABLE'",
        ]
    ),
    st.text(string.printable, max_size=30),
    st.binary(max_size=20).map(lambda b: b.decode("latin-1")),
)

#: Keywords whose values the mutations change.
STRUCTURAL = [
    "XTENSION",
    "BITPIX",
    "NAXIS",
    "NAXIS1",
    "NAXIS2",
    "PCOUNT",
    "GCOUNT",
    "TFIELDS",
    "EXTNAME",
    "HDUNAME",
    "EUNIT",
    *(f"T{kind}{i}" for kind in ("TYPE", "FORM", "UNIT", "DIM") for i in range(1, 8)),
    *(f"CREF{i}" for i in range(1, 8)),
]


def _set_value(raw: bytearray, pos: int, value: str) -> None:
    card = raw[pos : pos + 8] + b"= " + value.encode("latin-1", "replace")
    raw[pos : pos + 80] = card[:80].ljust(80)


class Damaged:
    """Bytes of a damaged file, shown as what was done (the bytes are too long to print)."""

    def __init__(self, how: list[str], data: bytes) -> None:
        self.how, self.data = how, data

    def __repr__(self) -> str:
        return f"Damaged({'; '.join(self.how)}; {len(self.data)} bytes)"


@st.composite
def damaged(draw: st.DrawFn, sample: Sample) -> Damaged:
    """``sample`` damaged in one of several ways, gzipped or not."""
    return Damaged(*_damage(draw, sample))


def _damage(draw: st.DrawFn, sample: Sample) -> tuple[list[str], bytes]:
    raw = bytearray(sample.raw)
    header, data, end = sample.extents[sample.hdu]
    how = draw(
        st.sampled_from(
            [
                "truncate",
                "truncate-gzip",
                "overwrite-header",
                "overwrite-data",
                "delete-card",
                "blank-card",
                "garble-card",
                "set-keyword",
                "set-keywords",
            ]
        )
    )
    done = [how]
    if how == "truncate-gzip":
        packed = gzip.compress(bytes(raw), compresslevel=1, mtime=0)
        cut = draw(st.integers(0, len(packed) - 1))
        return [f"gzip cut at {cut} of {len(packed)}"], packed[:cut]
    if how == "truncate":
        cut = draw(st.integers(0, len(raw) - 1))
        raw, done = raw[:cut], [f"cut at {cut}"]
    elif how in ("overwrite-header", "overwrite-data"):
        lo, hi = (header, data) if how == "overwrite-header" else (data, end)
        for _ in range(draw(st.integers(1, 8 if how == "overwrite-header" else 50)) * (hi > lo)):
            pos, byte = draw(st.integers(lo, hi - 1)), draw(st.integers(0, 255))
            raw[pos] = byte
            done.append(f"[{pos}]={byte}")
    elif how in ("delete-card", "blank-card"):
        key, pos = draw(st.sampled_from(sorted(sample.cards.items())))
        done.append(key)
        if how == "blank-card":
            raw[pos : pos + 80] = b" " * 80
        else:
            # The card goes; the header keeps its length (a blank card before the end) or not.
            del raw[pos : pos + 80]
            if draw(st.booleans()):
                raw[data - 80 : data - 80] = b" " * 80
                done.append("padded")
    elif how == "garble-card":
        key, pos = draw(st.sampled_from(sorted(sample.cards.items())))
        pos += draw(st.integers(0, 79))
        text = draw(st.binary(min_size=1, max_size=30))[: data - pos]
        raw[pos : pos + len(text)] = text
        done.append(f"{key} [{pos}:]={text!r}")
    elif how in ("set-keyword", "set-keywords"):
        n = 1 if how == "set-keyword" else draw(st.integers(2, 4))
        present = [k for k in STRUCTURAL if k in sample.cards]
        for key in draw(st.lists(st.sampled_from(present), min_size=n, max_size=n)):
            value = draw(header_values)
            _set_value(raw, sample.cards[key], value)
            done.append(f"{key}={value!r}")
    if draw(st.booleans()):
        return [*done, "gzipped"], gzip.compress(bytes(raw), compresslevel=1, mtime=0)
    return done, bytes(raw)


def write_damaged(folder: Path, name: str, damage: Damaged) -> Path:
    """Write damaged bytes as ``name`` (``.fits.gz`` if gzipped, else ``.fits``)."""
    data = damage.data
    path = folder / (name + (".fits.gz" if data[:2] == b"\x1f\x8b" else ".fits"))
    for old in folder.glob(name + ".*"):
        old.unlink()
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def dr1_run(dr1_dir, scratch) -> Path:
    """A copy of one DR1 run file (never damaged in place)."""
    copy = scratch / DR1_RUN
    shutil.copyfile(dr1_dir / "data" / DR1_RUN, copy)
    return copy


@pytest.fixture(scope="module")
def dr1_events(dr1_run) -> Sample:
    """The DR1 run uncompressed, with the cards of its EVENTS header."""
    return Sample(gzip.decompress(dr1_run.read_bytes()), hdu=1)


@pytest.fixture(scope="module")
def dr1_bkg(dr1_run) -> Sample:
    """The DR1 run uncompressed, with the cards of its BKG (bkg_3d) header."""
    raw = gzip.decompress(dr1_run.read_bytes())
    with fits.open(io.BytesIO(raw)) as hdul:
        index = hdul.index_of("BKG")
    return Sample(raw, hdu=index)


@pytest.fixture(scope="module")
def gadf_bkg_2d(gadf_examples_dir) -> Sample:
    """The GADF example bkg_2d file (one table HDU)."""
    return Sample((gadf_examples_dir / "bkg_2d_full_example.fits").read_bytes(), hdu=1)


def synthetic_events(n: int = 40) -> bytes:
    rng = np.random.default_rng(1)
    columns = [
        fits.Column("EVENT_ID", "K", array=np.arange(n)),
        fits.Column("FLAGS", "3X", array=np.zeros((n, 3), bool)),
        fits.Column("RA", "D", unit="deg", array=rng.uniform(0, 360, n)),
        fits.Column("DEC", "D", unit="deg", array=rng.uniform(-90, 90, n)),
        fits.Column("ENERGY", "E", unit="TeV", array=rng.uniform(0.1, 100, n)),
        fits.Column("SCALED", "I", array=rng.integers(-100, 100, n)),
    ]
    table = fits.BinTableHDU.from_columns(columns, name="EVENTS")
    table.header["TSCAL6"] = 0.5
    table.header["TZERO6"] = 3.0
    out = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(out)
    return out.getvalue()


@pytest.fixture(scope="module")
def synthetic_events_sample() -> Sample:
    return Sample(synthetic_events(), hdu=1)


# --------------------------------------------------------------------------- edges


@FUZZ
@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=6)))
def test_validate_edges_accepts_usable_edges_and_refuses_the_rest(values):
    out, error = config_error(lambda: axes.validate_edges(values, "energy", positive=True))
    if error is not None:
        assert "energy edges" in error
        return
    assert out.ndim == 1
    assert out.size >= 2
    assert np.all(np.isfinite(out))
    assert np.all(np.diff(out) > 0)
    assert out[0] > 0


@FUZZ
@given(
    st.lists(st.floats(min_value=0, max_value=1e6), min_size=2, max_size=20, unique=True).map(
        sorted
    )
)
def test_validate_edges_keeps_increasing_edges(values):
    np.testing.assert_array_equal(axes.validate_edges(values, "offset"), values)


@FUZZ
@given(
    st.one_of(
        st.lists(
            st.one_of(st.floats(), st.integers(-5, 5), st.text(max_size=3), st.none()),
            max_size=8,
        ),
        st.lists(st.lists(st.floats(), max_size=3), max_size=3),
        st.text(max_size=5),
        st.none(),
        st.dictionaries(st.text(max_size=2), st.floats(), max_size=2),
    )
)
def test_validate_edges_refuses_what_is_not_numbers(values):
    out, error = config_error(lambda: axes.validate_edges(values, "offset"))
    if error is not None:
        assert "offset edges" in error
        return
    assert np.all(np.diff(out) > 0)


numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**6), 10**6),
    st.sampled_from([0.0, 1e-320, 1e-200, 1e200, 1e308, "1", "x", None]),
)


@FUZZ
@given(numbers, numbers, st.one_of(st.integers(-3, 300), st.floats(0, 10), st.none()))
def test_energy_edges_are_usable_or_refused(emin, emax, nbins):
    out, error = config_error(lambda: axes.energy_edges(emin, emax, nbins))
    if error is not None:
        return
    assert out.size == nbins + 1
    axes.validate_edges(out, "energy", positive=True)


@FUZZ
@given(numbers, st.one_of(st.integers(-3, 300), st.floats(0, 10), st.booleans()))
def test_offset_edges_are_usable_or_refused(offset_max, n_edges):
    out, error = config_error(lambda: axes.offset_edges(offset_max, n_edges))
    if error is not None:
        return
    assert out.size == n_edges
    assert out[0] == 0
    axes.validate_edges(out, "offset")


# --------------------------------------------------------------------------- event arrays

#: Column formats the fast reader decodes itself, and those it leaves to astropy.
EVENT_FORMATS = {"D": ">f8", "E": ">f4", "J": ">i4", "I": ">i2", "K": ">i8", "B": "u1"}


@st.composite
def event_tables(draw: st.DrawFn) -> tuple[dict[str, np.ndarray], dict[str, str], bytes]:
    """An EVENTS table of random columns, formats, units and values, as FITS bytes."""
    n = draw(st.integers(0, 30))
    names = ["RA", "DEC", "ENERGY"]
    present = draw(st.lists(st.sampled_from([*names, "TIME", "OTHER"]), unique=True, max_size=5))
    arrays, units, columns = {}, {}, []
    for name in present:
        code = draw(st.sampled_from(sorted(EVENT_FORMATS)))
        values = draw(hnp.arrays(np.dtype(EVENT_FORMATS[code]), n))
        unit = draw(st.sampled_from(["", "deg", "rad", "TeV", "GeV", "erg", "m", "foo"]))
        arrays[name], units[name] = values, unit
        columns.append(fits.Column(name, code, unit=unit or None, array=values))
    table = fits.BinTableHDU.from_columns(columns, name="EVENTS", nrows=n)
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits.HDUList([fits.PrimaryHDU(), table]).writeto(out)
    return arrays, units, out.getvalue()


@settings(FUZZ, max_examples=40)
@given(event_tables())
def test_read_events_reads_or_names_the_problem(scratch, table):
    arrays, units, data = table
    path = scratch / "events-any.fits"
    path.write_bytes(data)
    events = reads_or_fails_cleanly(lambda: read_events(path), DataStoreError, path)
    if events is None:
        return
    assert set(arrays) >= {"RA", "DEC", "ENERGY"}
    assert events.ra.shape == events.dec.shape == events.energy.shape
    if units["RA"] in ("", "deg"):
        np.testing.assert_array_equal(events.ra, arrays["RA"].astype(np.float64))


# --------------------------------------------------------------------------- event files


@settings(FUZZ, max_examples=60)
@given(st.data())
def test_read_events_on_damaged_dr1_run(scratch, dr1_events, data):
    path = write_damaged(scratch, "events", data.draw(damaged(dr1_events)))
    reads_or_fails_cleanly(lambda: read_events(path, "EVENTS"), DataStoreError, path)


@settings(FUZZ, max_examples=40)
@given(st.data())
def test_read_events_on_damaged_synthetic_file(scratch, synthetic_events_sample, data):
    path = write_damaged(scratch, "synthetic", data.draw(damaged(synthetic_events_sample)))
    reads_or_fails_cleanly(lambda: read_events(path, "EVENTS"), DataStoreError, path)


@pytest.mark.parametrize(
    "data",
    [b"", b"\x1f\x8b", b"\x1f\x8b\x08\x00garbage", b"SIMPLE  =", b"\x00" * 2880, b"x" * 5000],
    ids=["empty", "gzip-magic", "gzip-garbage", "cut-card", "zeros", "text"],
)
def test_garbage_files(scratch, data):
    path = scratch / "garbage.fits.gz"
    path.write_bytes(data)
    reads_or_fails_cleanly(lambda: read_events(path), DataStoreError, path)
    reads_or_fails_cleanly(lambda: read_bkg(path), DataStoreError, path)
    with pytest.raises(CatalogError, match="garbage"):
        read_catalog(path)


# --------------------------------------------------------------------------- edited headers
#
# One damaged file for each crash the fuzz tests once found in the event and
# index readers (now a DataStoreError naming the file).


def edited(raw: bytes, hdu: int, *edits: tuple[str, str | None]) -> bytes:
    """``raw`` with header cards of HDU ``hdu`` set to a value text, or blanked (None)."""
    out = bytearray(raw)
    cards = Sample(raw, hdu).cards
    for key, value in edits:
        if value is None:
            out[cards[key] : cards[key] + 80] = b" " * 80
        else:
            _set_value(out, cards[key], value)
    return bytes(out)


EVENT_FILE_CASES = [
    pytest.param(
        [("TTYPE1", None), ("NAXIS1", "29")],
        id="TTYPE1-blank-NAXIS1-29",
    ),
    pytest.param([("TFORM3", "'1Q'")], id="TFORM3-1Q"),
    pytest.param([("TFIELDS", "'x")], id="TFIELDS-'x"),
    pytest.param([("EXTNAME", ":")], id="EXTNAME-colon"),
    pytest.param(
        [("NAXIS2", str(10**10))],
        id="NAXIS2-1e10",
    ),
    pytest.param([("BITPIX", None)], id="BITPIX-blank"),
    pytest.param(
        [("NAXIS2", "-1")],
        id="NAXIS2-negative",
    ),
    pytest.param([("TUNIT5", "'m'")], id="ENERGY-in-m"),
    pytest.param([("TUNIT3", "'foo'")], id="RA-in-foo"),
    pytest.param([("TTYPE5", "'EN'")], id="no-ENERGY-column"),
]


@pytest.mark.parametrize("edits", EVENT_FILE_CASES)
def test_read_events_on_edited_dr1_header(scratch, dr1_events, edits):
    path = scratch / "edited-events.fits"
    path.write_bytes(edited(dr1_events.raw, dr1_events.hdu, *edits))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataStoreError, match=re.escape(path.name)):
            read_events(path, "EVENTS")


# --------------------------------------------------------------------------- index tables


INDEX_CASES = [
    pytest.param([("TTYPE1", "0")], id="TTYPE1-0"),
    pytest.param([("TFORM2", "'11?'")], id="TFORM2-11?"),
    pytest.param([("EXTNAME", ":")], id="EXTNAME-colon"),
    pytest.param(
        [("NAXIS2", str(10**10))],
        id="NAXIS2-1e10",
    ),
    pytest.param(
        [("TFORM2", "'6B'")],  # HDU_TYPE as bytes, not text
        id="HDU_TYPE-6B",
    ),
    pytest.param([("TFORM2", None)], id="TFORM2-blank"),
    pytest.param([("TTYPE1", "'obs'")], id="no-OBS_ID"),
]


@pytest.mark.parametrize("edits", INDEX_CASES)
def test_open_datastore_on_edited_hdu_index(scratch, dr1_indexes, edits):
    raw = edited(gzip.decompress(dr1_indexes["hdu-index.fits.gz"]), 1, *edits)
    folder = write_store(
        scratch / "edited-store",
        {
            "hdu-index.fits.gz": gzip.compress(raw, mtime=0),
            "obs-index.fits.gz": dr1_indexes["obs-index.fits.gz"],
        },
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataStoreError, match=r"hdu-index\.fits\.gz"):
            open_datastore(folder)


@pytest.fixture(scope="module")
def dr1_indexes(dr1_dir) -> dict[str, bytes]:
    return {
        name: (dr1_dir / name).read_bytes() for name in ("hdu-index.fits.gz", "obs-index.fits.gz")
    }


def write_store(folder: Path, files: dict[str, bytes]) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


@settings(FUZZ, max_examples=40)
@given(st.data(), st.sampled_from(["hdu-index.fits.gz", "obs-index.fits.gz"]))
def test_open_datastore_with_damaged_index(scratch, dr1_indexes, data, which):
    raw = gzip.decompress(dr1_indexes[which])
    damage = data.draw(damaged(Sample(raw, hdu=1)))
    files = dict(dr1_indexes)
    # The index is found by name: always .fits.gz, whether the bytes are gzipped or not.
    files[which] = damage.data
    folder = write_store(scratch / "store", files)
    reads_or_fails_cleanly(lambda: open_datastore(folder), DataStoreError, folder)


INDEX_COLUMNS = {
    "OBS_ID": st.sampled_from(["K", "J", "D", "10A"]),
    "HDU_TYPE": st.sampled_from(["8A", "J", "D"]),
    "HDU_CLASS": st.sampled_from(["8A", "J"]),
    "FILE_DIR": st.sampled_from(["20A", "J", "L"]),
    "FILE_NAME": st.sampled_from(["40A", "D"]),
    "HDU_NAME": st.sampled_from(["8A", "E"]),
    "RA_PNT": st.sampled_from(["D", "10A"]),
}


def _column(name: str, form: str, n: int, draw: st.DrawFn) -> fits.Column:
    if form.endswith("A"):
        text = st.text(string.ascii_letters + string.digits + "/._- \x00", max_size=int(form[:-1]))
        values = draw(st.lists(text, min_size=n, max_size=n))
        return fits.Column(name, form, array=np.array(values, dtype=f"U{int(form[:-1])}"))
    if form == "L":
        return fits.Column(
            name,
            form,
            array=np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool),
        )
    dtype = {"K": np.int64, "J": np.int32, "D": np.float64, "E": np.float32}[form]
    return fits.Column(name, form, array=draw(hnp.arrays(dtype, n)))


@st.composite
def index_tables(draw: st.DrawFn, extname: str) -> bytes:
    """An index table with some of the GADF columns, odd formats and any values."""
    n = draw(st.integers(0, 5))
    names = draw(st.lists(st.sampled_from(sorted(INDEX_COLUMNS)), unique=True))
    columns = [_column(name, draw(INDEX_COLUMNS[name]), n, draw) for name in names]
    if columns:
        table = fits.BinTableHDU.from_columns(columns, name=extname, nrows=n)
    else:
        table = fits.BinTableHDU(name=extname)
    if draw(st.booleans()):
        table.header["BASE_DIR"] = draw(st.text(string.printable.strip(), max_size=10))
    out = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(out)
    data = out.getvalue()
    return gzip.compress(data, mtime=0) if draw(st.booleans()) else data


@settings(FUZZ, max_examples=40)
@given(index_tables("HDU_INDEX"), index_tables("OBS_INDEX"))
def test_open_datastore_with_odd_index_tables(scratch, hdu_index, obs_index):
    folder = write_store(
        scratch / "odd-store", {"hdu-index.fits.gz": hdu_index, "obs-index.fits.gz": obs_index}
    )
    store = reads_or_fails_cleanly(lambda: open_datastore(folder), DataStoreError, folder)
    if store is not None:
        assert "OBS_ID" in store.obs_index.colnames


# --------------------------------------------------------------------------- background files


@settings(FUZZ, max_examples=40)
@given(st.data())
def test_read_bkg_on_damaged_gadf_bkg_2d(scratch, gadf_bkg_2d, data):
    path = write_damaged(scratch, "bkg2d", data.draw(damaged(gadf_bkg_2d)))
    reads_or_fails_cleanly(lambda: read_bkg(path), DataStoreError, path)


@settings(FUZZ, max_examples=40)
@given(st.data())
def test_read_bkg_on_damaged_dr1_bkg_3d(scratch, dr1_bkg, data):
    path = write_damaged(scratch, "bkg3d", data.draw(damaged(dr1_bkg)))
    rate = reads_or_fails_cleanly(lambda: read_bkg(path, "BKG"), DataStoreError, path)
    if rate is not None:
        assert rate.dims == ("energy", "fov_lon", "fov_lat")


@FUZZ
@given(
    st.integers(1, 4),
    st.integers(1, 4),
    st.sampled_from(["", "s-1 MeV-1 sr-1", "s-1 TeV-1 sr-1", "m", "foo", "1/(s MeV sr)"]),
)
def test_read_bkg_units_of_a_written_file(scratch, n_energy, n_offset, unit):
    import xarray as xr

    rate = xr.DataArray(
        np.ones((n_energy, n_offset)),
        dims=("energy", "offset"),
        coords=axes.binned_coords(
            axes.energy_edges(1, 10, n_energy), axes.offset_edges(2.0, n_offset + 1)
        ),
        attrs={"units": "s-1 MeV-1 sr-1"},
    )
    path = write_bkg_2d(rate, scratch / "written.fits", overwrite=True)
    with fits.open(path) as hdul:
        hdul[1].header["TUNIT5"] = unit
        hdul.writeto(path, overwrite=True)
    reads_or_fails_cleanly(lambda: read_bkg(path), DataStoreError, path)


# --------------------------------------------------------------------------- catalogues


def synthetic_catalog() -> bytes:
    table = Table(
        {
            "Name": ["src A", "src B", "src C"],
            "RA": [83.6, 266.4, 10.0],
            "DEC": [22.0, -29.0, 41.0],
            "Radius": [0.3, 0.5, 0.2],
        }
    )
    table["RA"].unit = table["DEC"].unit = table["Radius"].unit = "deg"
    out = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(table)]).writeto(out)
    return out.getvalue()


@pytest.fixture(scope="module")
def catalog_samples(gammacat_path) -> list[Sample]:
    return [
        Sample(synthetic_catalog(), hdu=1),
        Sample(gzip.decompress(gammacat_path.read_bytes()), hdu=1),
    ]


@settings(FUZZ, max_examples=40)
@given(st.data(), st.integers(0, 1))
def test_read_catalog_on_damaged_files(scratch, catalog_samples, data, which):
    path = write_damaged(scratch, "catalog", data.draw(damaged(catalog_samples[which])))
    reads_or_fails_cleanly(lambda: read_catalog(path), CatalogError, path)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "RA,DEC\n1,2\n",
        "# %ECSV 1.0\n# ---\n# datatype:\n# - {name: RA, datatype: float64}\nRA\n1\nx\n",
        "# %ECSV 1.0\n# ---\n# datatype:\n# - {name: RA, datatype: float64}\n# - {name: D\n",
    ],
    ids=["empty", "not-ecsv", "bad-value", "bad-yaml"],
)
def test_read_catalog_on_garbled_ecsv(scratch, text):
    """astropy's ECSV reader names these problems; they are reported with the file."""
    path = scratch / "catalog.ecsv"
    path.write_text(text)
    with pytest.raises(CatalogError, match=r"catalog\.ecsv"):
        read_catalog(path)


@pytest.mark.parametrize("packed", [False, True], ids=["fits", "gzip"])
@pytest.mark.parametrize(
    "edits",
    [[("NAXIS2", str(10**10))], [("NAXIS1", str(10**12))], [("NAXIS2", "-1")], [("TFORM5", None)]],
    ids=["NAXIS2-1e10", "NAXIS1-1e12", "NAXIS2-negative", "TFORM5-blank"],
)
def test_read_bkg_on_edited_header(scratch, gadf_bkg_2d, edits, packed):
    raw = edited(gadf_bkg_2d.raw, gadf_bkg_2d.hdu, *edits)
    path = scratch / ("edited-bkg.fits.gz" if packed else "edited-bkg.fits")
    path.write_bytes(gzip.compress(raw, mtime=0) if packed else raw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataStoreError, match=re.escape(path.name)):
            read_bkg(path)

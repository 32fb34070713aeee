"""Every bad input gets a clear answer, nothing is lost, every output is reproducible.

Each case feeds the real thing (a truncated gzip stream, a table without the
column, an index pointing nowhere, ...) to ``xbkg make`` and checks the
message, the exit status and that no partial output is left behind.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from astropy.io import fits
from astropy.table import Table

import xbkg
from xbkg import cli, cube
from xbkg.errors import DataStoreError
from xbkg.simulate import simulate_datastore

RUNS = (33001, 33004, 33006, 33007)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A small simulated store (4 runs, 3000 events each), never modified."""
    return simulate_datastore(
        tmp_path_factory.mktemp("pristine") / "store", n_runs=4, events_per_run=3000, seed=1
    )


@pytest.fixture
def store(pristine, tmp_path) -> Path:
    """A writable copy of the small store."""
    return Path(shutil.copytree(pristine, tmp_path / "store"))


def event_file(store: Path, obs_id: int) -> Path:
    return store / "data" / f"obs_{obs_id:06d}.fits.gz"


def make(store: Path, out: Path, *extra: object) -> int:
    return cli.main(["make", str(store), str(out), "-q", *map(str, extra)])


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) with its bytes."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def assert_failed(code: int, capsys, out: Path, *fragments: str, before=None) -> str:
    """Exit status 1, one ``xbkg: error:`` line per problem, and ``out`` as it was."""
    err = capsys.readouterr().err
    assert code == 1, err
    lines = err.strip().splitlines()
    assert lines, err
    assert all(line.startswith("xbkg: error: ") for line in lines), err
    for fragment in fragments:
        assert fragment in err, err
    assert snapshot(out) == (before or {}), "partial or changed outputs"
    return err


def edit_table(path: Path, hdu: str | int, edit) -> None:
    """Rewrite one table HDU of a FITS file through ``edit(Table) -> Table``."""
    with fits.open(path) as hdul:
        hdus = [h.copy() for h in hdul]
    index = next(i for i, h in enumerate(hdus) if h.name == hdu) if isinstance(hdu, str) else hdu
    table = edit(Table.read(hdus[index]))
    new = fits.table_to_hdu(table)
    new.header.update({k: v for k, v in hdus[index].header.items() if k not in new.header})
    hdus[index] = new
    fits.HDUList(hdus).writeto(path, overwrite=True)


def edit_header(path: Path, hdu: str, edit) -> None:
    with fits.open(path) as hdul:
        hdus = [h.copy() for h in hdul]
    edit(next(h for h in hdus if h.name == hdu).header)
    fits.HDUList(hdus).writeto(path, overwrite=True)


def edit_index(store: Path, name: str, edit) -> None:
    edit_table(store / f"{name}-index.fits.gz", 1, edit)


# --------------------------------------------------------------------------- indexes


def test_missing_hdu_index(store, tmp_path, capsys):
    (store / "hdu-index.fits.gz").unlink()
    out = tmp_path / "out"
    assert_failed(make(store, out), capsys, out, "hdu-index.fits.gz", "not found")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_unreadable_obs_index(store, tmp_path, capsys, damage):
    path = store / "obs-index.fits.gz"
    data = path.read_bytes()
    path.write_bytes(
        {"garbage": b"not a FITS file" * 100, "truncated": data[: len(data) // 2], "empty": b""}[
            damage
        ]
    )
    out = tmp_path / "out"
    assert_failed(make(store, out), capsys, out, "obs-index.fits.gz", "cannot read")


def test_index_row_points_at_missing_file(store, tmp_path, capsys):
    def rename(t):
        t["FILE_NAME"][t["OBS_ID"] == 33004] = "obs_999999.fits.gz"
        return t

    edit_index(store, "hdu", rename)
    out = tmp_path / "out"
    assert_failed(
        make(store, out), capsys, out, "obs_999999.fits.gz", "does not exist", "FILE_NAME"
    )


def test_run_in_obs_index_only(store, tmp_path, capsys):
    edit_index(store, "hdu", lambda t: t[t["OBS_ID"] != 33006])
    out = tmp_path / "out"
    assert_failed(make(store, out), capsys, out, "OBS_ID 33006", "no events row")


def test_run_in_hdu_index_only_is_reported_and_left_out(store, tmp_path, capsys):
    edit_index(store, "obs", lambda t: t[t["OBS_ID"] != 33006])
    out = tmp_path / "out"
    assert make(store, out) == 0
    err = capsys.readouterr().err
    assert "xbkg: warning:" in err
    assert "[33006]" in err
    assert "not used" in err
    assert 33006 not in xbkg.read_archive(out / "background.nc").cube["obs_id"].values


def test_duplicate_obs_ids(store, tmp_path, capsys):
    edit_index(store, "obs", lambda t: Table(np.concatenate([t.as_array(), t.as_array()[:1]])))
    out = tmp_path / "out"
    assert_failed(make(store, out), capsys, out, "obs-index.fits.gz", "duplicate OBS_IDs [33001]")


def test_duplicate_events_rows(store, tmp_path, capsys):
    def duplicate(t):
        rows = t.as_array()
        return Table(np.concatenate([rows, rows[(rows["OBS_ID"] == 33007)][:1]]))

    edit_index(store, "hdu", duplicate)
    out = tmp_path / "out"
    assert_failed(make(store, out), capsys, out, "OBS_ID 33007 has 2 events rows")


# --------------------------------------------------------------------------- event files


def _truncated_gzip(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _corrupt_gzip(data: bytes) -> bytes:
    damaged = bytearray(data)
    for i in range(len(data) // 3, len(data) // 3 + 64):
        damaged[i] ^= 0xFF
    return bytes(damaged)


def _not_fits(data: bytes) -> bytes:
    return gzip.compress(b"this is not a FITS file\n" * 500, mtime=0)


def _truncated_fits(data: bytes) -> bytes:
    raw = gzip.decompress(data)
    return gzip.compress(raw[: 2880 * 3 + 100], mtime=0)


@pytest.mark.parametrize(
    "damage", [_truncated_gzip, _corrupt_gzip, _not_fits, _truncated_fits], ids=lambda f: f.__name__
)
def test_damaged_event_file(store, tmp_path, capsys, damage):
    path = event_file(store, 33004)
    path.write_bytes(damage(path.read_bytes()))
    out = tmp_path / "out"
    err = assert_failed(make(store, out), capsys, out, "OBS_ID 33004", "obs_033004.fits.gz")
    assert "damaged or incomplete" in err or "cannot read" in err or "EVENTS" in err, err


def test_checksum_covers_the_whole_file(store):
    """Damage after the EVENTS table is found by the gzip check, and only by it."""
    path = event_file(store, 33001)
    data = bytearray(path.read_bytes())
    data[-12] ^= 0xFF  # in the last deflate block (the last HDU), before the gzip trailer
    path.write_bytes(bytes(data))
    events = xbkg.read_events(path, verify=False)
    assert events.energy.size == 3000
    with pytest.raises(DataStoreError, match=r"obs_033001\.fits\.gz.*damaged"):
        xbkg.read_events(path)


def test_events_hdu_missing(store, tmp_path, capsys):
    edit_header(event_file(store, 33001), "EVENTS", lambda h: h.update(EXTNAME="SOMETHING"))
    out = tmp_path / "out"
    assert_failed(make(store, out), capsys, out, "obs_033001.fits.gz", "no HDU named 'events'")


@pytest.mark.parametrize("column", ["ENERGY", "RA", "DEC"])
def test_required_column_missing(store, tmp_path, capsys, column):
    edit_table(
        event_file(store, 33006), "EVENTS", lambda t: t[[c for c in t.colnames if c != column]]
    )
    out = tmp_path / "out"
    assert_failed(make(store, out), capsys, out, "obs_033006.fits.gz", column)


def test_pointing_missing_in_index_and_header(store, tmp_path, capsys):
    def drop_pointing(t):
        t["RA_PNT"] = t["RA_PNT"].astype(float)
        t["RA_PNT"][t["OBS_ID"] == 33007] = np.nan
        return t

    edit_index(store, "obs", drop_pointing)
    edit_header(
        event_file(store, 33007), "EVENTS", lambda h: h.remove("RA_PNT", ignore_missing=True)
    )
    out = tmp_path / "out"
    assert_failed(make(store, out), capsys, out, "OBS_ID 33007", "no pointing RA_PNT/DEC_PNT")


def test_nan_and_infinite_values_are_dropped_counted_and_reported(store, tmp_path, capsys):
    def poison(t):
        t["ENERGY"][:5] = np.nan
        t["RA"][5:8] = np.inf
        t["DEC"][8:10] = -np.inf
        t["ENERGY"][10] = np.inf
        return t

    edit_table(event_file(store, 33004), "EVENTS", poison)
    out = tmp_path / "out"
    assert cli.main(["make", str(store), str(out)]) == 0
    text = capsys.readouterr().out
    assert "11 with NaN or infinite values" in text
    assert "runs with NaN or infinite values (events dropped): 33004 (11)" in text
    run_cube = xbkg.read_archive(out / "background.nc").cube
    assert run_cube["n_invalid"].sel(obs_id=33004) == 11
    assert run_cube["n_invalid"].sel(obs_id=33001) == 0


def test_events_outside_the_binning_are_counted(store, tmp_path, capsys):
    out = tmp_path / "out"
    assert make(store, out, "--energy-edges", "1,3,10", "--offset-edges", "0,0.5,1") == 0
    events = xbkg.read_events(event_file(store, 33001))
    run_cube = xbkg.read_archive(out / "background.nc").cube.sel(obs_id=33001)
    offset = np.rad2deg(
        2
        * np.arcsin(
            np.sqrt(
                cube._haversine(
                    float(run_cube["ra_pnt"]), float(run_cube["dec_pnt"]), events.ra, events.dec
                )
            )
        )
    )
    inside = (events.energy >= 1) & (events.energy < 10) & (offset < 1)
    assert int(run_cube["n_outside"]) == int((~inside).sum())


def test_empty_run(store, tmp_path, capsys):
    edit_table(event_file(store, 33006), "EVENTS", lambda t: t[:0])
    out = tmp_path / "out"
    assert_failed(make(store, out), capsys, out, "OBS_ID 33006", "obs_033006.fits.gz", "no events")


@pytest.mark.parametrize(("column", "value"), [("ONTIME", 0.0), ("LIVETIME", -5.0)])
def test_zero_or_negative_duration(store, tmp_path, capsys, column, value):
    def set_value(t):
        t[column][t["OBS_ID"] == 33001] = value
        return t

    edit_index(store, "obs", set_value)
    out = tmp_path / "out"
    assert_failed(
        make(store, out), capsys, out, "OBS_ID 33001", f"{column} is {value:g}", "obs-index"
    )


def _rescaled(factor: float, unit: str | None, column: str = "ENERGY"):
    def edit(t):
        t[column] = np.asarray(t[column], dtype=np.float64) * factor
        t[column].unit = unit
        return t

    return edit


@pytest.mark.parametrize(
    ("edit", "what"),
    [
        (_rescaled(1e3, "GeV"), "energy in GeV"),
        (_rescaled(1e6, "MeV"), "energy in MeV"),
        (_rescaled(1.0, None), "energy without a unit (TeV)"),
        (_rescaled(np.pi / 180, "rad", "RA"), "RA in radians"),
        (_rescaled(np.pi / 180, "rad", "DEC"), "DEC in radians"),
    ],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_column_units_are_converted(store, edit, what):
    path = event_file(store, 33004)
    before = xbkg.read_events(path)
    edit_table(path, "EVENTS", edit)
    after = xbkg.read_events(path)
    for name in ("energy", "ra", "dec"):
        np.testing.assert_allclose(getattr(after, name), getattr(before, name), rtol=1e-6)


def edit_bytes(path: Path, old: bytes, new: bytes) -> None:
    """Replace bytes of the uncompressed file (a card, a value) in place, same length."""
    assert len(old) == len(new)
    raw = gzip.decompress(path.read_bytes())
    assert raw.count(old) == 1
    path.write_bytes(gzip.compress(raw.replace(old, new), mtime=0))


def test_unknown_unit(store, tmp_path, capsys):
    edit_bytes(event_file(store, 33004), b"TUNIT5  = 'TeV     '", b"TUNIT5  = 'furlong '")
    out = tmp_path / "out"
    assert_failed(make(store, out), capsys, out, "obs_033004.fits.gz", "ENERGY", "'furlong'")


# --------------------------------------------------------------------------- options


def test_malformed_catalogue(store, tmp_path, capsys):
    catalog = tmp_path / "catalog.fits"
    catalog.write_bytes(b"SIMPLE  = T" + b" " * 3000)
    out = tmp_path / "out"
    assert_failed(make(store, out, "--exclude", catalog), capsys, out, "catalog.fits")


def test_catalogue_without_positions(store, tmp_path, capsys):
    catalog = tmp_path / "catalog.fits"
    Table({"NAME": ["a", "b"], "FLUX": [1.0, 2.0]}).write(catalog)
    out = tmp_path / "out"
    assert_failed(make(store, out, "--exclude", catalog), capsys, out, "catalog.fits")


@pytest.mark.parametrize("circle", ["83.6,22.0,-0.3", "83.6,nan,0.3", "83.6,22.0"])
def test_bad_exclusion_circle(store, tmp_path, capsys, circle):
    out = tmp_path / "out"
    assert_failed(make(store, out, "--exclude-circle", circle), capsys, out, "circle")


@pytest.mark.parametrize(
    ("option", "edges"),
    [
        ("--energy-edges", "1,0.5,2"),
        ("--energy-edges", "1,1,2"),
        ("--energy-edges", "-1,1,2"),
        ("--offset-edges", "-0.5,1,2"),
        ("--offset-edges", "0,2,1"),
        ("--energy-edges", "1"),
    ],
)
def test_bad_edges(store, tmp_path, capsys, option, edges):
    out = tmp_path / "out"
    err = assert_failed(make(store, out, f"{option}={edges}"), capsys, out)
    assert "edges" in err, err


def test_empty_energy_range_on_the_command_line(store, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        make(store, out, "--energy-edges", "10:1:5")
    assert exc.value.code == 2
    assert "START < STOP" in capsys.readouterr().err
    assert not out.exists()


def test_no_run_in_any_group(store, tmp_path, capsys):
    out = tmp_path / "out"
    assert_failed(
        make(store, out, "--group", "ZEN_PNT=80,85"),
        capsys,
        out,
        "no run falls into any group",
        "ZEN_PNT",
    )


def test_unknown_group_column(store, tmp_path, capsys):
    out = tmp_path / "out"
    assert_failed(make(store, out, "--group", "WEATHER=0,1"), capsys, out, "'WEATHER'", "ZEN_PNT")


def test_unknown_selection_column(store, tmp_path, capsys):
    out = tmp_path / "out"
    assert_failed(make(store, out, "--select", "WEATHER=0:1"), capsys, out, "'WEATHER'")


# --------------------------------------------------------------------------- outputs


def test_existing_output_folder_is_refused_and_untouched(store, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    assert_failed(make(store, out), capsys, out, "not empty", "--overwrite", before=before)


def test_previous_outputs_need_overwrite(store, tmp_path, capsys):
    out = tmp_path / "out"
    assert make(store, out) == 0
    before = snapshot(out)
    assert_failed(make(store, out), capsys, out, "would overwrite", before=before)
    assert make(store, out, "--overwrite") == 0
    assert snapshot(out) == before  # the same inputs give the same bytes


@pytest.mark.parametrize("where", ["file", "below_file"])
def test_output_path_cannot_be_written(store, tmp_path, capsys, where):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    out = blocker if where == "file" else blocker / "out"
    err = capsys.readouterr().err
    code = make(store, out)
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.startswith("xbkg: error:"), err
    assert "blocker" in err, err
    assert blocker.read_text() == "a file"


class _DiskFull:
    """``os.fdopen`` whose files accept ``budget`` bytes in total, then fail with ENOSPC."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.fdopen = os.fdopen

    def __call__(self, fd, *args, **kwargs):
        f = self.fdopen(fd, *args, **kwargs)
        outer = self
        write = f.write

        def limited(data):
            if len(data) > outer.budget:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            outer.budget -= len(data)
            return write(data)

        f.write = limited
        return f


def test_full_disk_leaves_previous_outputs_intact(store, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert make(store, out) == 0
    before = snapshot(out)
    monkeypatch.setattr(os, "fdopen", _DiskFull(budget=20_000))
    err = assert_failed(
        make(store, out, "--overwrite"), capsys, out, "No space left on device", before=before
    )
    assert "nothing was written" in err


def test_full_disk_on_a_fresh_folder(store, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(os, "fdopen", _DiskFull(budget=20_000))
    assert_failed(make(store, out), capsys, out, "No space left on device", before={})
    assert not out.exists()  # not even an empty folder


def test_interrupt_while_swapping_in_restores_previous_outputs(
    store, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "out"
    assert make(store, out) == 0
    before = snapshot(out)
    real_replace = Path.replace
    calls = []

    def interrupted(self, target):
        calls.append(self)
        if len(calls) == 7:  # in the middle of moving the new files into place
            raise KeyboardInterrupt
        return real_replace(self, target)

    monkeypatch.setattr(Path, "replace", interrupted)
    assert make(store, out, "--overwrite") == cli.EXIT_INTERRUPTED
    assert "interrupted" in capsys.readouterr().err
    assert len(calls) > 7  # and the previous files were put back
    assert snapshot(out) == before


def test_interrupt_while_binning(store, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    real = cube.bin_run

    def interrupted(spec, **kwargs):
        if spec.obs_id == 33006:
            raise KeyboardInterrupt
        return real(spec, **kwargs)

    monkeypatch.setattr(cube, "bin_run", interrupted)  # a local function: one process only
    assert make(store, out, "--workers", "1") == cli.EXIT_INTERRUPTED
    assert "no output was written" in capsys.readouterr().err
    assert snapshot(out) == {}


_SLOW_MAKE = textwrap.dedent(
    """
    import signal, sys, time
    from pathlib import Path
    from xbkg import cli, cube

    # Ctrl-C acts as in a terminal even if the test runner was started with
    # SIGINT ignored (as a background job), which its children would inherit.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    real = cube.bin_run

    def slow(spec, **kwargs):
        Path(sys.argv[3]).touch()  # the job is under way
        time.sleep(0.5)  # a slow file system
        return real(spec, **kwargs)

    cube.bin_run = slow
    sys.exit(cli.main(["make", sys.argv[1], sys.argv[2], "-q", *sys.argv[4:]]))
    """
)


@pytest.mark.parametrize(
    ("sig", "workers"),
    [(signal.SIGINT, "1"), (signal.SIGTERM, "1"), (signal.SIGINT, "2"), (signal.SIGTERM, "2")],
)
def test_signal_in_the_middle_of_a_run(store, tmp_path, sig, workers):
    out = tmp_path / "out"
    assert make(store, out) == 0
    before = snapshot(out)
    started = tmp_path / "started"
    script = tmp_path / "slow_make.py"
    script.write_text(_SLOW_MAKE)
    args = [sys.executable, str(script), str(store), str(out), str(started)]
    proc = subprocess.Popen(
        [*args, "--overwrite", "--workers", workers], stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == cli.EXIT_INTERRUPTED, err
    assert "interrupted" in err, err
    assert "Traceback" not in err, err
    assert snapshot(out) == before


# --------------------------------------------------------------------------- keep going


def test_skip_bad_runs(store, tmp_path, capsys):
    path = event_file(store, 33004)
    path.write_bytes(_truncated_gzip(path.read_bytes()))
    event_file(store, 33007).unlink()
    out = tmp_path / "out"
    code = cli.main(["make", str(store), str(out), "--skip-bad-runs"])
    captured = capsys.readouterr()
    assert code == cli.EXIT_SKIPPED, captured.err
    assert "xbkg: skipped: OBS_ID 33004" in captured.err
    assert "xbkg: skipped: OBS_ID 33007" in captured.err
    assert "2 runs skipped" in captured.err
    assert "2 selected runs (2 skipped)" in captured.out
    archive = xr.open_dataset(out / "background.nc")
    assert archive["obs_id_skipped"].values.tolist() == [33004, 33007]
    assert "obs_033007.fits.gz" in str(archive["skip_reason"].values[1])
    bkg = xbkg.read_archive(out / "background.nc")
    assert bkg.cube["obs_id"].values.tolist() == [33001, 33006]
    assert set(json.loads(bkg.cube.attrs["skipped_runs"])) == {"33004", "33007"}
    # the same build from Python
    store_ = xbkg.open_datastore(store)
    built = xbkg.build_background(store_, xbkg.run_table(store_), skip_bad_runs=True)
    xr.testing.assert_identical(built.cube.drop_attrs(), bkg.cube.drop_attrs())


def test_validate_skips_bad_runs_when_asked(store, tmp_path, capsys):
    out = tmp_path / "out"
    assert make(store, out) == 0  # a store whose HDU index gives every run a model
    event_file(store, 33006).unlink()
    code = cli.main(["validate", str(out), "--skip-bad-runs", "-q"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_SKIPPED, err
    assert "xbkg: skipped: OBS_ID 33006" in err
    assert cli.main(["validate", str(out), "-q"]) == 1
    assert "obs_033006.fits.gz" in capsys.readouterr().err


def test_without_skip_the_first_bad_run_stops_everything(store, tmp_path, capsys):
    event_file(store, 33004).write_bytes(b"")
    out = tmp_path / "out"
    assert_failed(make(store, out), capsys, out, "obs_033004.fits.gz")
    store_ = xbkg.open_datastore(store)
    with pytest.raises(DataStoreError, match=r"obs_033004\.fits\.gz"):
        xbkg.build_background(store_, xbkg.run_table(store_))


def test_all_runs_bad(store, tmp_path, capsys):
    for obs_id in RUNS:
        event_file(store, obs_id).unlink()
    out = tmp_path / "out"
    err = assert_failed(
        make(store, out, "--skip-bad-runs"),
        capsys,
        out,
        "4 runs could not be used",
        "no run is left",
    )
    assert len(err.strip().splitlines()) == 6  # the count, one line per run, what to do


def test_index_problems_listed_one_line_each(store, tmp_path, capsys):
    def set_value(t):
        t["ONTIME"][t["OBS_ID"] == 33001] = 0
        t["LIVETIME"][t["OBS_ID"] == 33006] = -1
        return t

    edit_index(store, "obs", set_value)
    out = tmp_path / "out"
    err = assert_failed(make(store, out), capsys, out, "OBS_ID 33001", "OBS_ID 33006")
    assert len(err.strip().splitlines()) == 4


# --------------------------------------------------------------------------- paths


def test_copy_refuses_paths_leaving_the_output_folder(store, tmp_path, capsys):
    outside = tmp_path / "escaped"
    outside.mkdir()
    shutil.copy(event_file(store, 33001), outside / "obs_033001.fits.gz")

    def escape(t):
        t["FILE_DIR"] = t["FILE_DIR"].astype("U64")
        t["FILE_DIR"][t["OBS_ID"] == 33001] = "../escaped"
        return t

    edit_index(store, "hdu", escape)
    out = tmp_path / "copy" / "inner"
    code = cli.main(["copy", str(store), str(out), "--obs-id", "33001"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "outside the output folder" in err, err
    assert snapshot(tmp_path / "copy") == {}


def test_names_from_indexes_never_leave_the_output_folder(store, tmp_path):
    def hostile(t):
        t["OBJECT"] = t["OBJECT"].astype("U64")
        t["OBJECT"] = ["../../evil", "/tmp/evil", "a/b", "..", "."][: len(t)]
        return t

    edit_index(store, "obs", hostile)
    out = tmp_path / "deep" / "out"
    before = {p for p in tmp_path.rglob("*") if not p.is_relative_to(out)}
    values = "../../evil,/tmp/evil,a/b,.."
    assert make(store, out, "--group-values", f"OBJECT={values}") == 0
    after = {p for p in tmp_path.rglob("*") if not p.is_relative_to(out)}
    assert after - before == {tmp_path / "deep"}
    assert all(p.parent == out for p in out.rglob("*"))


# --------------------------------------------------------------------------- reproducible


def test_outputs_do_not_depend_on_index_order_or_workers(store, tmp_path, capsys):
    out = tmp_path / "out"
    assert make(store, out) == 0
    reference = snapshot(out)
    rng = np.random.default_rng(3)
    edit_index(store, "obs", lambda t: t[rng.permutation(len(t))])
    edit_index(store, "hdu", lambda t: t[rng.permutation(len(t))])
    for workers in ("1", "2"):
        again = tmp_path / f"again{workers}"
        assert make(store, again, "--workers", workers) == 0
        assert snapshot(again) == reference

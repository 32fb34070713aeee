"""The command line: options, summary, and clean failures on bad input."""

import gzip
import shutil
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from xbkg import simulate
from xbkg.cli import main
from xbkg.io.datastore import copy_runs, open_datastore
from xbkg.io.netcdf import read_archive


def run(*args):
    return main([str(a) for a in args])


@pytest.fixture
def crab_copy(crab4_dir, tmp_path):
    """A writable copy of the tutorial store."""
    return copy_runs(
        open_datastore(crab4_dir), [23523, 23526, 23559, 23592], tmp_path / "store"
    ).path


def test_help_is_fast_and_lists_commands():
    out = subprocess.run(
        [sys.executable, "-m", "xbkg", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("make", "simulate", "copy"):
        assert command in out.stdout
    # printing the help needs xarray (import xbkg registers the accessor) but none of
    # what the commands use: astropy, scipy, matplotlib, dask, netCDF4
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, xbkg.cli; xbkg.cli.build_parser();"
            "print([m for m in ('astropy', 'scipy', 'matplotlib', 'dask', 'netCDF4') "
            "if m in sys.modules])",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "[]"


def test_version_is_the_installed_one(capsys):
    from importlib.metadata import version

    import xbkg

    assert xbkg.__version__ == version("xbkg")
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"xbkg {xbkg.__version__}"


def test_make_preset_and_summary(crab4_dir, gammacat_path, tmp_path, capsys):
    out = tmp_path / "out"
    code = run("make", crab4_dir, out, "--preset", "gammapy-0.6", "--exclude", gammacat_path)
    assert code == 0
    text = capsys.readouterr().out
    assert "4 selected runs" in text
    assert "group   0" in text
    assert "3 runs" in text
    assert "in exclusion regions" in text
    header = fits.getheader(out / "smooth_background_2D_group_001_table.fits.gz", "BACKGROUND")
    assert header["BKGTIME"] == "LIVETIME"
    assert header["SMOOTHED"] == "gammapy-0.6"
    hdu = Table.read(out / "hdu-index.fits.gz")
    assert np.sum(hdu["HDU_TYPE"] == "bkg") == 4


def test_make_options(crab4_dir, tmp_path):
    out = tmp_path / "out"
    code = run(
        "make", crab4_dir, out,
        "--obs-id", 23523, 23526,
        "--group", "ZEN_PNT=40,47,50",
        "--group-values", "N_TELS=3,4",
        "--energy-edges", "0.5:50:10",
        "--offset-edges", "0,0.5,1,2,3",
        "--time", "livetime",
        "--exclude-circle", "83.633,22.0145,0.4",
        "--index-model", "raw",
        "-q",
    )  # fmt: skip
    assert code == 0
    groups = Table.read(out / "group-def.fits")
    assert groups.colnames == ["GROUP_ID", "ZEN_PNT_MIN", "ZEN_PNT_MAX", "N_TELS"]
    assert len(groups) == 4
    t = Table.read(out / "background_2D_group_001_table.fits.gz", hdu="BACKGROUND")
    np.testing.assert_allclose(t["THETA_LO"][0], [0, 0.5, 1, 2])
    assert len(t["ENERG_LO"][0]) == 10
    hdu = Table.read(out / "hdu-index.fits.gz")
    bkg_rows = hdu[hdu["HDU_TYPE"] == "bkg"]
    # 23523 (49.4 deg) -> group (47-50, 4 tels) = 3; 23526 (46.8) -> group 1
    assert dict(zip(bkg_rows["OBS_ID"], bkg_rows["FILE_NAME"], strict=True)) == {
        23523: "background_2D_group_003_table.fits.gz",
        23526: "background_2D_group_001_table.fits.gz",
        # runs not used to build the models still get one (the nearest populated group)
        23559: "background_2D_group_001_table.fits.gz",
        23592: "background_2D_group_003_table.fits.gz",
    }


def test_existing_outputs_are_kept(crab4_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert run("make", crab4_dir, out, "-q") == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert run("make", crab4_dir, out, "-q", "--time", "livetime") == 1
    err = capsys.readouterr().err
    assert "--overwrite" in err
    assert str(out) in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert run("make", crab4_dir, out, "-q", "--time", "livetime", "--overwrite") == 0
    assert fits.getheader(out / "background_2D_group_000_table.fits.gz", 1)["BKGTIME"] == "LIVETIME"


def assert_failed_cleanly(out, capsys, *fragments):
    err = capsys.readouterr().err
    assert err.startswith("xbkg: error:"), err
    for fragment in fragments:
        assert fragment in err, err
    assert not out.exists() or not any(out.iterdir()), list(out.iterdir())


def test_missing_store(tmp_path, capsys):
    out = tmp_path / "out"
    assert run("make", tmp_path / "nowhere", out) == 1
    assert_failed_cleanly(out, capsys, "nowhere", "not found")


def test_corrupt_event_file(crab_copy, tmp_path, capsys):
    events = next(crab_copy.rglob("hess_events_023559.fits.gz"))
    events.write_bytes(gzip.compress(b"SIMPLE  =   garbage" * 10))
    out = tmp_path / "out"
    assert run("make", crab_copy, out) == 1
    assert_failed_cleanly(out, capsys, "hess_events_023559.fits.gz")


def test_missing_event_file(crab_copy, tmp_path, capsys):
    events = next(crab_copy.rglob("hess_events_023526.fits.gz"))
    events.unlink()
    out = tmp_path / "out"
    assert run("make", crab_copy, out) == 1
    assert_failed_cleanly(out, capsys, "hess_events_023526.fits.gz", "does not exist")


def test_event_file_missing_column(crab_copy, tmp_path, capsys):
    events = next(crab_copy.rglob("hess_events_023523.fits.gz"))
    with fits.open(events) as hdul:
        hdul["EVENTS"].columns.del_col("ENERGY")
        hdul.writeto(events.with_suffix(".tmp.gz"))
    shutil.move(events.with_suffix(".tmp.gz"), events)
    out = tmp_path / "out"
    assert run("make", crab_copy, out) == 1
    assert_failed_cleanly(out, capsys, "hess_events_023523.fits.gz", "ENERGY")


def test_run_without_events(crab_copy, tmp_path, capsys):
    events = next(crab_copy.rglob("hess_events_023592.fits.gz"))
    with fits.open(events) as hdul:
        hdul["EVENTS"].data = hdul["EVENTS"].data[:0]
        hdul.writeto(events, overwrite=True)
    out = tmp_path / "out"
    assert run("make", crab_copy, out) == 1
    assert_failed_cleanly(out, capsys, "hess_events_023592.fits.gz", "no events")


def test_bad_arguments(crab4_dir, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        run("make", crab4_dir, out, "--energy-edges", "1,x")
    assert exc.value.code == 2
    assert "expected comma-separated numbers" in capsys.readouterr().err
    assert run("make", crab4_dir, out, "--energy-edges", "10,1") == 1
    assert_failed_cleanly(out, capsys, "energy edges must be strictly increasing")
    assert run("make", crab4_dir, out, "--group", "NOPE=0,1") == 1
    assert_failed_cleanly(out, capsys, "NOPE")
    assert run("make", crab4_dir, out, "--obs-id", "1") == 1
    assert_failed_cleanly(out, capsys, "OBS_IDs not in the data store: [1]")
    assert run("make", crab4_dir, out, "--exclude", tmp_path / "cat.fits") == 1
    assert_failed_cleanly(out, capsys, "cat.fits")


def test_copy_command(crab4_dir, tmp_path, capsys):
    assert run("copy", crab4_dir, tmp_path / "c", "--obs-id", 23523) == 0
    assert open_datastore(tmp_path / "c").obs_ids.tolist() == [23523]
    assert "1 run copied" in capsys.readouterr().out


def test_runs_from_a_thread(tmp_path):
    """Signal handlers can only be set in the main thread; a thread still runs commands."""
    import threading

    codes = []
    args = ["simulate", str(tmp_path / "store"), "--runs", "2"]
    thread = threading.Thread(target=lambda: codes.append(main(args)))
    thread.start()
    thread.join()
    assert codes == [0]


def test_a_closed_pipe_ends_the_program_quietly(tmp_path) -> None:
    """``xbkg ... | head``: no error message when the reader stops reading, SIGPIPE's status."""
    import signal

    args = ["simulate", str(tmp_path / "store"), "--runs", "2", "--events-per-run", "1000"]
    child = subprocess.Popen(
        [sys.executable, "-m", "xbkg", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert child.stdout is not None
    child.stdout.close()  # before the program prints its summary
    _, err = child.communicate()
    assert child.returncode == 128 + signal.SIGPIPE
    assert err.decode() == ""
    assert (tmp_path / "store" / "hdu-index.fits.gz").is_file()  # the work was done


def test_make_energy_nodes_from_the_command_line(tmp_path) -> None:
    """--energy-nodes mean writes the bin means (no BKGENODE); the default the log-log nodes."""
    store = simulate.simulate_datastore(tmp_path / "store", n_runs=4, events_per_run=4000)
    for nodes, expected in (("mean", None), ("loglog", "LOGLOG")):
        out = tmp_path / nodes
        assert main(["make", str(store), str(out), "--energy-nodes", nodes, "-q"]) == 0
        name = sorted(p.name for p in out.glob("background_run_*.fits.gz"))[0]
        assert fits.getheader(out / name, "BACKGROUND").get("BKGENODE") == expected
        assert read_archive(out / "background.nc").options.energy_nodes == nodes

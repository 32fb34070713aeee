"""Early gzip checks: what they find, that they only save work, and how ``xbkg make`` uses them."""

from __future__ import annotations

import errno
import gzip
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import xbkg
from xbkg import cli
from xbkg.cube import make_run_cube
from xbkg.datastore import event_locations, open_datastore, run_table
from xbkg.io.gzipcheck import GzipChecks, available, gzip_intact
from xbkg.simulate import simulate_datastore

pytestmark = pytest.mark.skipif(not available(), reason="the checks need fork()")

RUNS = (33002, 33005, 33006, 33008)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """Four simulated runs, ``RUNS``."""
    path = simulate_datastore(
        tmp_path_factory.mktemp("pristine") / "store", n_runs=4, events_per_run=2000, seed=1
    )
    assert sorted(event_locations(open_datastore(path))) == list(RUNS)
    return path


@pytest.fixture
def store(pristine, tmp_path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "store"))


def event_file(store: Path, obs_id: int) -> Path:
    return store / "data" / f"obs_{obs_id:06d}.fits.gz"


def damage_last_block(path: Path) -> None:
    """Flip a byte in the last deflate block: the EVENTS table still reads, the CRC fails."""
    data = bytearray(path.read_bytes())
    data[-12] ^= 0xFF
    path.write_bytes(bytes(data))


def test_gzip_intact(store, tmp_path):
    good = event_file(store, 33002)
    assert gzip_intact(str(good))
    damaged = event_file(store, 33005)
    damage_last_block(damaged)
    assert not gzip_intact(str(damaged))
    truncated = tmp_path / "truncated.fits.gz"
    truncated.write_bytes(good.read_bytes()[:-100])
    assert not gzip_intact(str(truncated))
    # Nothing to learn from a file that is not compressed, or not there: the reader checks it.
    plain = tmp_path / "plain.fits"
    plain.write_bytes(b"SIMPLE  =                    T" + b" " * 2850)
    assert not gzip_intact(str(plain))
    assert not gzip_intact(str(tmp_path / "missing.fits.gz"))


@pytest.mark.parametrize("processes", [1, 2, 3])
def test_checks_report_the_intact_files(store, processes):
    damage_last_block(event_file(store, 33005))
    paths = [str(event_file(store, o)) for o in RUNS] + [str(store / "missing.fits.gz")]
    with GzipChecks(paths, processes) as checks:
        intact = checks.stop(wait=True)
    assert intact == {str(event_file(store, o)) for o in (33002, 33006, 33008)}
    assert not multiprocessing.active_children()


def test_stopping_at_once_leaves_no_process(store):
    paths = [str(event_file(store, o)) for o in RUNS] * 50
    checks = GzipChecks(paths, 2)
    intact = checks.stop()
    assert intact <= set(paths)
    assert not multiprocessing.active_children()
    assert checks.stop() == frozenset()  # stopping twice is harmless
    assert GzipChecks([], 2).stop(wait=True) == frozenset()


def test_waiting_for_more_results_than_a_pipe_holds(tmp_path):
    """Thousands of results fill the pipe: waiting must read while the worker writes."""
    tiny = tmp_path / "tiny.gz"
    tiny.write_bytes(gzip.compress(b"x", mtime=0))
    script = (
        "import sys; from xbkg.io.gzipcheck import GzipChecks; "
        "print(sorted(GzipChecks([sys.argv[1]] * 20000, 1).stop(wait=True)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tiny)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert result.stdout.strip() == repr([str(tiny)])


def test_no_process_left_when_starting_fails(store, monkeypatch):
    """A limit on processes reached while starting: the started ones are stopped."""
    start = multiprocessing.get_context("fork").Process.start
    started = []

    def limited(self):
        if started:
            raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))
        started.append(self)
        start(self)

    monkeypatch.setattr(multiprocessing.get_context("fork").Process, "start", limited)
    paths = [str(event_file(store, o)) for o in RUNS] * 50
    with pytest.raises(OSError, match="temporarily unavailable"):
        GzipChecks(paths, 2)
    assert len(started) == 1
    assert not started[0].is_alive()
    assert not multiprocessing.active_children()


def test_verified_files_are_not_checked_again(store):
    """``verified`` skips the checksum of those files only; damage elsewhere is still found."""
    damaged = event_file(store, 33005)
    damage_last_block(damaged)
    datastore = open_datastore(store)
    runs = run_table(datastore)
    with pytest.raises(xbkg.DataStoreError, match=r"OBS_ID 33005: .*gzip check failed"):
        make_run_cube(datastore, runs)
    others = [str(event_file(store, o)) for o in RUNS if o != 33005]
    with pytest.raises(xbkg.DataStoreError, match=r"OBS_ID 33005: .*gzip check failed"):
        make_run_cube(datastore, runs, verified=others)
    cube = make_run_cube(datastore, runs, verified=[str(damaged)])
    assert cube.sizes["obs_id"] == len(RUNS)


def _started_checks(args: list[str]) -> object:
    """What ``xbkg make ARGS`` checks early, found in a fresh process (where it checks at all)."""
    script = textwrap.dedent(
        """
        import json, sys
        from xbkg import cli
        args = cli.build_parser().parse_args(sys.argv[1:])
        checks = cli._start_gzip_checks(args)
        print(json.dumps(None if checks is None else sorted(checks.stop(wait=True))))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout)


def test_make_checks_the_files_of_the_selected_runs(store, tmp_path):
    locations = event_locations(open_datastore(store))
    paths = {o: str(p) for o, (p, _) in locations.items()}
    out = str(tmp_path / "out")
    assert _started_checks(["make", str(store), out]) == sorted(paths.values())
    assert _started_checks(["make", str(store), out, "--obs-id", "33006", "33002"]) == sorted(
        [paths[33002], paths[33006]]
    )
    zenith = run_table(open_datastore(store))["zen_pnt"].values
    lo = float(sorted(zenith)[2])
    selected = [o for o, z in zip(RUNS, zenith, strict=True) if z >= lo]
    assert _started_checks(["make", str(store), out, "--select", f"ZEN_PNT={lo}:"]) == sorted(
        paths[o] for o in selected
    )
    # Nothing to gain, or a store the build itself will refuse: no checks.
    assert _started_checks(["make", str(store), out, "--no-verify"]) is None
    assert _started_checks(["make", str(tmp_path / "nowhere"), out]) is None
    assert _started_checks(["make", str(store), out, "--select", "NO_SUCH=1:2"]) is None


def test_make_in_its_own_process(store, tmp_path):
    """The program (with early checks) writes what :func:`xbkg.cli.main` writes, and fails alike."""
    reference = tmp_path / "reference"
    assert cli.main(["make", str(store), str(reference), "-q"]) == 0
    out = tmp_path / "out"
    command = [sys.executable, "-m", "xbkg", "make", str(store), str(out), "-q"]
    subprocess.run(command, check=True)
    files = sorted(p.name for p in reference.iterdir())
    assert sorted(p.name for p in out.iterdir()) == files
    for name in files:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name

    damage_last_block(event_file(store, 33006))
    failed = tmp_path / "failed"
    result = subprocess.run([*command[:-2], str(failed), "-q"], capture_output=True, text=True)
    assert result.returncode == 1
    assert "OBS_ID 33006" in result.stderr
    assert "gzip check failed" in result.stderr
    assert not failed.exists()

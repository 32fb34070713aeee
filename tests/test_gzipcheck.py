"""The gzip check of whole event files: what it finds, and that ``xbkg make`` reports it."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from xbkg import cli
from xbkg.errors import DataStoreError
from xbkg.io.datastore import read_events
from xbkg.simulate import simulate_datastore

RUNS = (33002, 33005, 33006, 33008)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """Four simulated runs, ``RUNS``."""
    return simulate_datastore(
        tmp_path_factory.mktemp("pristine") / "store", n_runs=4, events_per_run=2000, seed=1
    )


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


def test_checksum_of_the_whole_file(store, tmp_path):
    read_events(event_file(store, 33002))
    damaged = event_file(store, 33005)
    damage_last_block(damaged)
    assert read_events(damaged, verify=False).energy.size == 2000  # EVENTS reads
    with pytest.raises(DataStoreError, match=r"obs_033005\.fits\.gz: .*gzip check failed"):
        read_events(damaged)
    truncated = tmp_path / "truncated.fits.gz"
    truncated.write_bytes(event_file(store, 33002).read_bytes()[:-100])
    with pytest.raises(DataStoreError, match=r"truncated\.fits\.gz: .*truncated"):
        read_events(truncated)
    # Nothing to check in a file that is not compressed: it is read the same way.
    plain = tmp_path / "plain.fits"
    plain.write_bytes(gzip.decompress(event_file(store, 33002).read_bytes()))
    assert read_events(plain).energy.size == 2000
    with pytest.raises(DataStoreError, match="does not exist"):
        read_events(tmp_path / "missing.fits.gz")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_make_in_its_own_process(store, tmp_path, workers):
    """The program writes what :func:`xbkg.cli.main` writes, and names a damaged file, with
    the fix, whichever process reads it."""
    reference = tmp_path / "reference"
    assert cli.main(["make", str(store), str(reference), "-q"]) == 0
    out = tmp_path / "out"
    command = [sys.executable, "-m", "xbkg", "make", str(store), str(out), "-q"]
    subprocess.run([*command, "--workers", workers], check=True)
    files = sorted(p.name for p in reference.iterdir())
    assert sorted(p.name for p in out.iterdir()) == files
    for name in files:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name

    damage_last_block(event_file(store, 33006))
    failed = tmp_path / "failed"
    command[-2] = str(failed)
    result = subprocess.run([*command, "--workers", workers], capture_output=True, text=True)
    assert result.returncode == 1, result.stderr
    assert "OBS_ID 33006" in result.stderr
    assert "obs_033006.fits.gz" in result.stderr
    assert "gzip check failed" in result.stderr
    assert "copy it again, or leave the run out" in result.stderr
    assert not failed.exists()
    # Without the check, the damage after the EVENTS table goes unnoticed.
    subprocess.run([*command, "--workers", workers, "--no-verify"], check=True)

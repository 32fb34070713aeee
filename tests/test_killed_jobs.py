"""Jobs killed at any moment leave no process behind, and nothing that blocks a rerun.

A batch system stops a job with SIGTERM, and with SIGKILL when it does not end
in time or runs over its limits. ``xbkg make`` runs in a process of its own,
killed at a few moments: while its workers bin runs, while it writes its
outputs, and at fractions of the time a whole job takes. Afterwards no process
of the job may live on (the workers die with their parent), and a rerun into
the same output folder must succeed as if the killed job had never run: the
staging folder it left is recognised as a killed job's and removed.

The command also leaves the Python process that calls it as it was: no module
hidden from imports, the garbage collector running.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import require
from xbkg import cli, cube
from xbkg.cube import RunSpec
from xbkg.io.outputs import STAGE_PREFIX

psutil = require("psutil")

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL and SIGSTOP")

#: How long a process may outlive the job's main process (s).
GRACE = 5.0

#: ``xbkg make`` with the workers' own safeguard (prctl on Linux) switched off:
#: the portable one, a thread watching the parent, must end them alone.
_WATCHDOG_ONLY = textwrap.dedent(
    """
    import sys
    from xbkg import cli, cube

    cube._killed_with_parent = lambda: False
    sys.exit(cli.main(sys.argv[1:]))
    """
)


def make_command(store: Path, out: Path, *extra: object, watchdog_only: bool = False) -> list[str]:
    program = ["-c", _WATCHDOG_ONLY] if watchdog_only else ["-m", "xbkg"]
    command = [sys.executable, *program, "make", str(store), str(out), "-q", "--workers", "2"]
    return command + [str(e) for e in extra]


def stages(out: Path) -> list[Path]:
    return sorted(out.glob(STAGE_PREFIX + "*")) if out.is_dir() else []


def alive(process: psutil.Process) -> bool:
    """Running, and not a zombie (an orphan may wait for a reaper that never comes)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Job:
    """``xbkg make`` in a process of its own, and every process it started, as seen."""

    def __init__(self, command: list[str], log: Path) -> None:
        with log.open("w") as err:
            self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
        self.started = time.monotonic()
        self.main = psutil.Process(self.proc.pid)
        self.children: dict[int, psutil.Process] = {}

    def look(self) -> list[psutil.Process]:
        """The job's processes now (kept, to be checked once the job is killed)."""
        try:
            now = self.main.children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        for child in now:
            self.children.setdefault(child.pid, child)
        return now

    def wait_until(self, moment: Callable[[], bool], timeout: float = 60) -> bool:
        """Watch the job until ``moment()``, then stop its main process; False if it ended."""
        deadline = time.monotonic() + timeout
        while not moment():
            self.look()
            if self.proc.poll() is not None:
                return False
            assert time.monotonic() < deadline, "the moment never came"
            time.sleep(0.005)
        self.proc.send_signal(signal.SIGSTOP)  # frozen at that moment, until killed
        self.look()
        return True

    def kill(self) -> list[psutil.Process]:
        """SIGKILL the main process; the processes still running after the grace time."""
        self.look()
        self.proc.kill()
        self.proc.wait()
        deadline = time.monotonic() + GRACE
        while True:
            left = [p for p in self.children.values() if alive(p)]
            if not left or time.monotonic() > deadline:
                return left


def assert_rerun_succeeds(store: Path, out: Path, capsys, *extra: str) -> None:
    """A rerun into ``out`` succeeds, without ``--overwrite`` if the killed job wrote nothing.

    The killed job's staging folder is no obstacle: it is removed, with a warning.
    """
    left = stages(out)
    if out.exists() and sorted(out.iterdir()) != left:  # killed once its outputs were placed
        extra = (*extra, "--overwrite")
    capsys.readouterr()
    code = cli.main(["make", str(store), str(out), "-q", "--workers", "1", *extra])
    err = capsys.readouterr().err
    assert code == 0, err
    assert stages(out) == []
    assert (out / "background.nc").is_file()
    lines = [line for line in err.splitlines() if "removed" in line]
    assert len(lines) == len(left), err
    for line, stage in zip(lines, left, strict=True):
        assert line.startswith("xbkg: warning: "), err
        assert stage.name in line, err


@pytest.fixture
def sim_dir(sim_store) -> Path:
    return sim_store[0].path


@pytest.mark.parametrize("watchdog_only", [False, True], ids=["default", "watchdog-only"])
def test_killed_while_binning(sim_dir, tmp_path, watchdog_only):
    out = tmp_path / "out"
    job = Job(make_command(sim_dir, out, watchdog_only=watchdog_only), tmp_path / "log")
    assert job.wait_until(lambda: len(job.look()) >= 2), (tmp_path / "log").read_text()
    assert len(job.children) == 2  # the two workers, nothing else
    assert job.kill() == []
    assert not out.exists()  # nothing written yet


def test_killed_while_writing(sim_dir, tmp_path, capsys):
    out = tmp_path / "out"
    job = Job(make_command(sim_dir, out), tmp_path / "log")
    assert job.wait_until(lambda: bool(stages(out))), (tmp_path / "log").read_text()
    assert job.main.children() == []  # the outputs are written by the main process alone
    assert job.kill() == []
    assert [p.name for p in out.iterdir()] == [p.name for p in stages(out)]
    assert len(stages(out)) == 1
    assert_rerun_succeeds(sim_dir, out, capsys)


def test_killed_at_any_moment(sim_dir, tmp_path, capsys):
    """Killed at fractions of the time a whole job takes, whatever it was doing: starting,
    binning, writing, or ending after its outputs were in place."""
    whole = tmp_path / "whole"
    start = time.monotonic()
    subprocess.run(make_command(sim_dir, whole), check=True)
    duration = time.monotonic() - start
    for fraction in (0.4, 0.8):
        out = tmp_path / f"out-{fraction}"
        job = Job(make_command(sim_dir, out), tmp_path / "log")
        moment = job.started + fraction * duration
        if not job.wait_until(lambda: time.monotonic() >= moment):  # noqa: B023
            continue  # finished already: nothing was killed
        assert job.kill() == [], fraction
        assert_rerun_succeeds(sim_dir, out, capsys)


def test_sigterm_stops_the_workers_and_writes_nothing(sim_dir, tmp_path):
    out = tmp_path / "out"
    job = Job(make_command(sim_dir, out), tmp_path / "log")
    deadline = time.monotonic() + 60
    while len(job.look()) < 2:
        assert job.proc.poll() is None
        assert time.monotonic() < deadline
        time.sleep(0.005)
    job.proc.terminate()
    assert job.proc.wait(timeout=60) == cli.EXIT_INTERRUPTED, (tmp_path / "log").read_text()
    # The pool was shut down before the job ended: no worker outlives it at all.
    assert [p for p in job.children.values() if alive(p)] == []
    assert "interrupted" in (tmp_path / "log").read_text()
    assert not out.exists()


def _slow_run(spec: RunSpec) -> int:
    time.sleep(0.001)
    return spec.obs_id


@pytest.mark.parametrize("threads", [1, 2])
def test_an_interrupt_while_the_pool_starts_stops_it(tmp_path, threads):
    """SIGTERM at any moment while the pool starts: an interrupt, and no worker left behind
    (none unknown yet to the pool, no interrupt lost in a hook run after forking), also
    when the signal reaches another thread of the process."""
    specs = [RunSpec(i, str(tmp_path), "EVENTS", 1.0, 0.0, 0.0) for i in range(200)]
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGALRM)}
    signal.signal(signal.SIGTERM, cli._interrupt)
    signal.signal(signal.SIGALRM, lambda *args: os.kill(os.getpid(), signal.SIGTERM))
    idle = threading.Event()
    other = [threading.Thread(target=idle.wait) for _ in range(threads - 1)]
    for thread in other:
        thread.start()
    try:
        for k in range(40):  # 0.2 to 8 ms after the start; the runs take 100 ms
            signal.setitimer(signal.ITIMER_REAL, 0.0002 * (k + 1))
            with pytest.raises(KeyboardInterrupt):
                list(cube._map_runs(_slow_run, specs, workers=2, scheduler=None))
            assert multiprocessing.active_children() == [], k
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        idle.set()
        for thread in other:
            thread.join()


@pytest.mark.parametrize("moment", ["binning", "writing"])
def test_killed_dr1_job(dr1_dir, gammacat_path, tmp_path, capsys, moment):
    out = tmp_path / "out"
    extra = ["--exclude", str(gammacat_path)]
    job = Job(make_command(dr1_dir, out, *extra), tmp_path / "log")
    if moment == "binning":
        reached = job.wait_until(lambda: len(job.look()) >= 2)
    else:
        reached = job.wait_until(lambda: bool(stages(out)))
    assert reached, (tmp_path / "log").read_text()
    assert job.kill() == []
    if moment == "binning":
        assert len(job.children) == 2
        assert not out.exists()
    else:
        assert [p.name for p in out.iterdir()] == [p.name for p in stages(out)]
        assert len(stages(out)) == 1
        assert_rerun_succeeds(dr1_dir, out, capsys, *extra)


def test_the_command_changes_nothing_in_the_calling_process(sim_dir, tmp_path):
    """:func:`xbkg.cli.main` leaves imports and the garbage collector as they were."""
    script = textwrap.dedent(
        """
        import gc, sys
        import xbkg.cli
        code = xbkg.cli.main(sys.argv[1:])
        import dask, dask.array, distributed
        print(code, gc.isenabled(), gc.get_freeze_count())
        print([name for name, module in sys.modules.items() if module is None])
        """
    )
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-c", script, "make", str(sim_dir), str(out), "-q", "--workers", "2"],
        capture_output=True,
        text=True,
        check=True,
    )
    status, hidden = result.stdout.splitlines()
    assert status == "0 True 0"
    assert "dask" not in hidden
    assert "distributed" not in hidden
    assert (out / "background.nc").is_file()

"""Helpers shared by the benchmarks: data location, timing, child processes."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("XBKG_DATA", ROOT.parent / "shared" / "data")).resolve()


def data_path(*parts: str) -> Path:
    """A path in the public test data, or exit with a clear message."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        sys.exit(f"benchmark data not found at {path}; set XBKG_DATA")
    return path


def timed(func: Callable[[], object]) -> float:
    """Wall time of one call in seconds."""
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def run_process(args: Sequence[str]) -> tuple[float, float]:
    """Wall time in s and peak resident memory in MB of a child process (which must succeed)."""
    start = time.perf_counter()
    child = subprocess.Popen(list(args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # wait4 gives the resource usage of this one child (ru_maxrss in kB on Linux).
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    err = child.stderr.read().decode() if child.stderr else ""
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({child.returncode}): {err[-2000:]}")
    return elapsed, usage.ru_maxrss / 1024


def interleaved(contenders: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Median time of each contender, run in turns so that machine noise hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, measure in contenders.items():
            times[name].append(measure())
    return {name: statistics.median(values) for name, values in times.items()}

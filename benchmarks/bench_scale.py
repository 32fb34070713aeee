"""Scaling of xbkg make with the number of runs, its peak memory, and 1 vs 2 workers.

Synthetic stores of N runs x 50,000 events (``xbkg simulate``) are built once
in WORK_DIR and reused. Prints, measured in one run:

- time(2000 runs) / time(200 runs)            (target <= 11, i.e. linear)
- peak memory of xbkg make on 2000 runs (1e8 events)   (target < 1 GB)
- throughput with 2 workers / with 1 worker    (target >= 1.6 on 2 cores)

Memory is that of all processes together: the resident memory (RSS) of the
``xbkg make`` process and all its descendants (the worker processes), summed
and sampled every 0.1 s with psutil; the peak of that sum is printed. Pages
that forked workers share with the parent are counted once per process, so
the sum is an upper bound of the memory really used. The largest RSS of a
single process (``ru_maxrss``) is printed next to it. The number of worker
processes is the ``--workers`` given and the most child processes seen alive
at once.

Usage: python benchmarks/bench_scale.py [--work-dir DIR] [--runs 200 2000] [--events 50000]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from _common import interleaved, run_process

try:
    import psutil
except ImportError:
    sys.exit("bench_scale.py needs psutil to measure the memory of all processes together")

#: Interval of the memory samples, in s.
SAMPLE_INTERVAL = 0.1


@dataclass
class TreeUsage:
    """Wall time and memory of a process and its descendants."""

    elapsed: float  # s
    tree_peak_mb: float  # peak of the summed RSS of the process and all its descendants
    single_peak_mb: float  # largest RSS of one process (ru_maxrss of the process and its children)
    max_children: int  # most child processes alive at once


def _tree_rss(proc: psutil.Process) -> tuple[int, int]:
    """Summed RSS in bytes of ``proc`` and its descendants, and how many descendants."""
    try:
        members = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    total = 0
    for member in members:
        # a worker may end between the listing and the reading
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += member.memory_info().rss
    return total, len(members) - 1


def run_tree(args: Sequence[str]) -> TreeUsage:
    """Run a child process (which must succeed) and measure it with all its descendants."""
    start = time.perf_counter()
    child = subprocess.Popen(list(args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    proc = psutil.Process(child.pid)
    peak = most = 0
    while True:
        # WNOHANG: not reaped before it ends, so that its resource usage is kept.
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        total, n_children = _tree_rss(proc)
        peak, most = max(peak, total), max(most, n_children)
        time.sleep(SAMPLE_INTERVAL)
    elapsed = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    err = child.stderr.read().decode() if child.stderr else ""
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({child.returncode}): {err[-2000:]}")
    # ru_maxrss (kB on Linux) of wait4: the largest RSS of the child or of one of its
    # waited-for descendants, not their sum.
    single = usage.ru_maxrss / 1024
    # The samples may miss a short peak of one process: the sum is at least that peak.
    return TreeUsage(elapsed, max(peak / 2**20, single), single, most)


def store(work: Path, n_runs: int, events: int) -> Path:
    path = work / f"store-{n_runs}x{events}"
    if not (path / "hdu-index.fits.gz").is_file():
        run_process(
            [sys.executable, "-m", "xbkg", "simulate", str(path), "--runs", str(n_runs),
             "--events-per-run", str(events), "--seed", "1", "--overwrite"]
        )  # fmt: skip
    return path


def make(path: Path, out: Path, workers: int) -> TreeUsage:
    shutil.rmtree(out, ignore_errors=True)
    return run_tree(
        [sys.executable, "-m", "xbkg", "make", str(path), str(out), "-q", "--overwrite",
         "--workers", str(workers)]
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=Path("xbkg-bench-stores"))
    parser.add_argument("--runs", type=int, nargs=2, default=[200, 2000])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    small_n, large_n = args.runs
    small = store(args.work_dir, small_n, args.events)
    large = store(args.work_dir, large_n, args.events)
    out = args.work_dir / "out"
    results: dict[str, list[TreeUsage]] = {}
    workers = {"small": 1, "large": 1, "large2": 2}

    def measure(name: str, path: Path, n_workers: int) -> float:
        usage = make(path, out, n_workers)
        results.setdefault(name, []).append(usage)
        return usage.elapsed

    def memory(name: str) -> str:
        tree = max(u.tree_peak_mb for u in results[name])
        single = max(u.single_peak_mb for u in results[name])
        return f"{tree:.0f} MB (largest single process {single:.0f} MB)"

    def processes(name: str) -> str:
        seen = max(u.max_children for u in results[name])
        return f"--workers {workers[name]}, at most {seen} child process(es) alive at once"

    times = interleaved(
        {
            "small": lambda: measure("small", small, workers["small"]),
            "large": lambda: measure("large", large, workers["large"]),
            "large2": lambda: measure("large2", large, workers["large2"]),
        },
        args.repeats,
    )
    events = large_n * args.events
    print(f"stores of {small_n} and {large_n} runs x {args.events} events; "
          f"median of {args.repeats} interleaved runs")  # fmt: skip
    print(f"time: {small_n} runs {times['small']:.1f} s, {large_n} runs {times['large']:.1f} s "
          f"(1 worker), {times['large2']:.1f} s (2 workers)")  # fmt: skip
    ratio = times["large"] / times["small"]
    print(f"  time({large_n}) / time({small_n})  = {ratio:.2f}  "
          f"(runs x {large_n / small_n:g}; target <= 11)")  # fmt: skip
    labels = {"small": f"{small_n} runs", "large": f"{large_n} runs", "large2": f"{large_n} runs"}
    for name in workers:
        print(f"  worker processes, {labels[name]}: {processes(name)}")
    print("memory: peak of the summed RSS of xbkg make and all its worker processes "
          f"(sampled every {SAMPLE_INTERVAL:g} s; shared pages counted per process)")  # fmt: skip
    print(f"  peak memory, {large_n} runs ({events:.1e} events), 1 worker = "
          f"{memory('large')}  (target < 1024 MB)")  # fmt: skip
    print(f"  peak memory, {large_n} runs, 2 workers, all processes = {memory('large2')}")
    print(f"  throughput 2 workers / 1 worker = {times['large'] / times['large2']:.2f}  "
          "(target >= 1.6)")  # fmt: skip


if __name__ == "__main__":
    main()

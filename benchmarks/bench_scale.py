"""Scaling of xbkg make with the number of runs, its peak memory, and 1 vs 2 workers.

Synthetic stores of N runs x 50,000 events (``xbkg simulate``) are built once
in WORK_DIR and reused. Prints, measured in one run:

- time(2000 runs) / time(200 runs)            (target <= 11, i.e. linear)
- peak RSS of xbkg make on 2000 runs (1e8 events)   (target < 1 GB)
- throughput with 2 workers / with 1 worker    (target >= 1.6 on 2 cores)

Usage: python benchmarks/bench_scale.py [--work-dir DIR] [--runs 200 2000] [--events 50000]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from _common import interleaved, run_process


def store(work: Path, n_runs: int, events: int) -> Path:
    path = work / f"store-{n_runs}x{events}"
    if not (path / "hdu-index.fits.gz").is_file():
        run_process(
            [sys.executable, "-m", "xbkg", "simulate", str(path), "--runs", str(n_runs),
             "--events-per-run", str(events), "--seed", "1", "--overwrite"]
        )  # fmt: skip
    return path


def make(path: Path, out: Path, workers: int) -> tuple[float, float]:
    shutil.rmtree(out, ignore_errors=True)
    return run_process(
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
    results: dict[str, tuple[float, float]] = {}

    def measure(name: str, path: Path, workers: int) -> float:
        elapsed, rss = make(path, out, workers)
        results[name] = (min(elapsed, results.get(name, (elapsed, 0))[0]), rss)
        return elapsed

    times = interleaved(
        {
            "small": lambda: measure("small", small, 1),
            "large": lambda: measure("large", large, 1),
            "large2": lambda: measure("large2", large, 2),
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
    print(f"  peak RSS, {large_n} runs ({events:.1e} events), 1 worker = "
          f"{results['large'][1]:.0f} MB  (target < 1024 MB)")  # fmt: skip
    print(f"  peak RSS, 2 workers (main process) = {results['large2'][1]:.0f} MB")
    print(f"  throughput 2 workers / 1 worker = {times['large'] / times['large2']:.2f}  "
          "(target >= 1.6)")  # fmt: skip


if __name__ == "__main__":
    main()

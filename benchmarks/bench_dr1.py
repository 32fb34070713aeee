"""xbkg make on all 105 H.E.S.S. DR1 runs with gamma-cat exclusion, against baselines.

Prints, measured in one run with the contenders taking turns:

- in-process on one core (``--workers 1``), against what zlib alone needs:
  ``--no-verify`` / decompressing each event file up to the end of its EVENTS
  table (target <= 2.5), and the default (the gzip checksum verified) /
  decompressing the whole files (target <= 1.5); where the time goes;
- in-process with the default workers: xbkg make / reading only the EVENTS
  tables with astropy, then the Gammapy 2.1 equivalent;
- as whole processes: Gammapy 2.1 equivalent / xbkg make, and xbkg make / floor;
- each for the default ``xbkg make``, which also checks the gzip checksum of every
  event file (decompressing it to the end), and for ``--no-verify``, which like the
  floor and Gammapy decompresses only up to the end of the EVENTS table;
- ``xbkg --help`` as a process;
- for every timing, the number of processes doing the work: 1 for the floor,
  Gammapy and ``--help``, and for ``xbkg make`` the worker processes binning
  the runs (the number it chooses without ``--workers``: one per core, at most
  8, and 1 in a process running other threads).

xbkg is timed as installed: its bytecode is written first, as ``pip install``
does. An editable install in an environment that sets PYTHONDONTWRITEBYTECODE
would otherwise compile every xbkg module at every start (about 0.1 s), while
Gammapy, installed, does not.

In-process, Gammapy runs after xbkg's turns, not between them: it leaves a
thread running (tqdm's monitor), and in a process with other threads xbkg forks
no worker processes, so that taking turns would time xbkg on one core.

Usage: python benchmarks/bench_dr1.py [--repeats N]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

from _common import ROOT, data_path, interleaved, run_process, timed

FLOOR = """
import sys
from pathlib import Path
from astropy.io import fits
for path in sorted(Path(sys.argv[1]).glob("data/*.fits.gz")):
    with fits.open(path) as hdul:
        hdul["EVENTS"].data["ENERGY"]
"""


#: What ``xbkg make`` imports, with xarray's first array (which imports dask.array if installed).
IMPORTS = (
    "import xarray as xr, netCDF4, scipy.linalg, astropy.table; "
    "import xbkg.cli, xbkg.pipeline, xbkg.conditions, xbkg.io.netcdf; xr.Variable('x', [1.0])"
)
#: Seconds that importing dask.array takes after xarray: xarray imports it on its first array.
DASK_IMPORT = (
    "import importlib.util, time, xarray\n"
    "if importlib.util.find_spec('dask') is None:\n    print(0.0)\nelse:\n"
    "    start = time.perf_counter(); import dask.array; print(time.perf_counter() - start)"
)


def read_floor(store: Path) -> None:
    from astropy.io import fits

    for path in sorted(store.glob("data/*.fits.gz")):
        with fits.open(path) as hdul:
            hdul["EVENTS"].data["ENERGY"]


def events_ends(store: Path) -> list[tuple[Path, int]]:
    """Each event file and the uncompressed byte where its EVENTS table ends."""
    from astropy.io import fits

    ends = []
    for path in sorted(store.glob("data/*.fits.gz")):
        with fits.open(path) as hdul:
            info = hdul["EVENTS"].fileinfo()
            ends.append((path, info["datLoc"] + info["datSpan"]))
    return ends


def zlib_to_events_end(ends: list[tuple[Path, int]]) -> None:
    """zlib alone: decompress each file up to the end of its EVENTS table."""
    for path, end in ends:
        stream, done = zlib.decompressobj(31), 0
        with path.open("rb") as f:
            while done < end and (chunk := f.read(1 << 16)):
                done += len(stream.decompress(chunk))


def zlib_whole(store: Path) -> None:
    """zlib alone: decompress the whole files (which checks their CRC-32)."""
    for path in sorted(store.glob("data/*.fits.gz")):
        zlib.decompress(path.read_bytes(), 31)


#: The steps of ``xbkg make`` timed apart: (module, function, label).
PHASES = (
    ("xbkg.pipeline", "make_run_cube", "read and bin the runs"),
    ("xbkg.pipeline", "models_from_cube", "condition model, smoothing"),
    ("xbkg.pipeline", "run_models", "per-run models"),
    ("xbkg.io.netcdf", "write_archive", "netCDF archive"),
    ("xbkg.pipeline", "write_model_files", "bkg_2d files"),
)


@contextlib.contextmanager
def phase_timer(totals: dict[str, float]) -> Iterator[None]:
    """Add the wall time of each step of :data:`PHASES` to ``totals`` while active."""

    def timing(label: str, func: Callable) -> Callable:
        def timed_func(*args, **kwargs):
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                totals[label] = totals.get(label, 0.0) + time.perf_counter() - start

        return timed_func

    import importlib

    with contextlib.ExitStack() as stack:
        for module, name, label in PHASES:
            target = importlib.import_module(module)
            wrapped = timing(label, getattr(target, name))
            stack.enter_context(mock.patch.object(target, name, wrapped))
        yield


N_RUNS = 105


def workers_here() -> int:
    """Worker processes ``xbkg make`` (without ``--workers``) uses for DR1 in this process now."""
    from xbkg.cli import _default_workers

    return _default_workers(N_RUNS)


def workers_in_a_process() -> int:
    """Worker processes ``xbkg make`` (without ``--workers``) uses for DR1 as a process."""
    script = f"from xbkg.cli import _default_workers; print(_default_workers({N_RUNS}))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    return int(result.stdout)


def processes(counts: set[int]) -> str:
    """``[2 worker processes]``, ``[1 process]``; every count seen over the repeats."""
    text = "/".join(str(n) for n in sorted(counts))
    return f"[{text} worker processes]" if counts != {1} else "[1 process]"


def compile_xbkg() -> None:
    """Write the bytecode of the xbkg package, as installing it does."""
    import compileall

    import xbkg

    compileall.compile_dir(Path(xbkg.__file__).parent, quiet=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    store = data_path("hess-dl3-dr1")
    catalog = data_path("catalogs", "gammacat", "gammacat.fits.gz")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gammapy_equivalent

    from xbkg.cli import main as xbkg_main

    compile_xbkg()

    work = Path(tempfile.mkdtemp(prefix="xbkg-bench-"))
    make_args = ["make", str(store), str(work / "inproc"), "--exclude", str(catalog)]
    make_args += ["-q", "--overwrite"]
    try:
        # warm up: imports and file cache
        read_floor(store)
        xbkg_main(make_args)
        if threading.active_count() > 1:
            print("warning: threads are running: xbkg make runs on one core", file=sys.stderr)
        seen: dict[str, set[int]] = {"xbkg": set(), "noverify": set()}
        ends = events_ends(store)
        one_core = [*make_args, "--workers", "1"]
        single = interleaved(
            {
                "zlib_events": lambda: timed(lambda: zlib_to_events_end(ends)),
                "zlib_whole": lambda: timed(lambda: zlib_whole(store)),
                "noverify": lambda: timed(lambda: xbkg_main([*one_core, "--no-verify"])),
                "verify": lambda: timed(lambda: xbkg_main(one_core)),
            },
            args.repeats,
        )
        phases: dict[str, float] = {}
        with phase_timer(phases):
            total = timed(lambda: xbkg_main([*one_core, "--no-verify"]))

        def xbkg_timed(key: str, extra: list[str]) -> float:
            seen[key].add(workers_here())
            return timed(lambda: xbkg_main([*make_args, *extra]))

        inproc = interleaved(
            {
                "floor": lambda: timed(lambda: read_floor(store)),
                "xbkg": lambda: xbkg_timed("xbkg", []),
                "noverify": lambda: xbkg_timed("noverify", ["--no-verify"]),
            },
            args.repeats,
        )
        # Gammapy after xbkg: it leaves a thread running (tqdm's monitor), and in a
        # process with other threads xbkg forks no worker processes (a forked
        # thread's locks stay held), which would time xbkg on one core.
        inproc |= interleaved(
            {
                "gammapy": lambda: timed(
                    lambda: gammapy_equivalent.main(str(store), str(catalog), str(work / "gp"))
                )
            },
            args.repeats,
        )
        py = sys.executable
        as_process = workers_in_a_process()
        proc = interleaved(
            {
                "floor": lambda: run_process([py, "-c", FLOOR, str(store)])[0],
                "xbkg": lambda: run_process([py, "-m", "xbkg", *make_args])[0],
                "noverify": lambda: run_process([py, "-m", "xbkg", *make_args, "--no-verify"])[0],
                "gammapy": lambda: run_process(
                    [py, str(ROOT / "benchmarks" / "gammapy_equivalent.py"), str(store),
                     str(catalog), str(work / "gp")]
                )[0],
                "help": lambda: run_process([py, "-m", "xbkg", "--help"])[0],
                "imports": lambda: run_process([py, "-c", IMPORTS])[0],
            },
            args.repeats,
        )  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"all 105 DR1 runs, gamma-cat exclusion; median of {args.repeats} interleaved runs")
    one = processes({1})
    print(
        f"in-process, --workers 1 {one}: zlib to the end of EVENTS {single['zlib_events']:.2f} s, "
        f"zlib whole files {single['zlib_whole']:.2f} s, xbkg make --no-verify "
        f"{single['noverify']:.2f} s, xbkg make {single['verify']:.2f} s"
    )
    ratio = single["noverify"] / single["zlib_events"]
    print(f"  {'--no-verify / zlib to EVENTS end':36s} = {ratio:.2f}  (target <= 2.5)")
    ratio = single["verify"] / single["zlib_whole"]
    print(f"  {'default / zlib whole files':36s} = {ratio:.2f}  (target <= 1.5)")
    print(f"  where the time goes (one run of --workers 1 --no-verify, {total:.2f} s):")
    for _, _, label in PHASES:
        print(f"    {label:32s} {phases.get(label, 0.0):.3f} s")
    print(f"    {'the rest':32s} {total - sum(phases.values()):.3f} s")
    print(
        f"in-process: floor {inproc['floor']:.2f} s {one}, "
        f"xbkg make {inproc['xbkg']:.2f} s {processes(seen['xbkg'])} "
        f"(--no-verify {inproc['noverify']:.2f} s {processes(seen['noverify'])}), "
        f"Gammapy 2.1 equivalent {inproc['gammapy']:.2f} s {one}"
    )
    for key, label in (("xbkg", "xbkg"), ("noverify", "xbkg --no-verify")):
        print(f"  {label + ' / floor':28s} = {inproc[key] / inproc['floor']:.2f}  (target <= 1.3)")
        print(f"  {'Gammapy 2.1 / ' + label:28s} = {inproc['gammapy'] / inproc[key]:.1f}")
    workers = processes({as_process})
    print(
        f"process: floor {proc['floor']:.2f} s {one}, xbkg make {proc['xbkg']:.2f} s {workers} "
        f"(--no-verify {proc['noverify']:.2f} s {workers}), "
        f"Gammapy 2.1 equivalent {proc['gammapy']:.2f} s {one}, "
        f"xbkg --help {proc['help']:.2f} s {one}"
    )
    for key, label in (("xbkg", "xbkg"), ("noverify", "xbkg --no-verify")):
        ratio = proc["gammapy"] / proc[key]
        print(f"  {'Gammapy 2.1 / ' + label:28s} = {ratio:.1f}  (target >= 5)")
        print(f"  {label + ' / floor':28s} = {proc[key] / proc['floor']:.2f}")
    print(f"  {'xbkg --help':28s} = {proc['help']:.2f} s  (target < 0.5 s)")
    dask_import = float(subprocess.run([py, "-c", DASK_IMPORT], capture_output=True).stdout)
    print(
        f"  where the time goes: Python and the imports of xbkg make {proc['imports']:.2f} s, "
        f"of which xarray importing dask.array {dask_import:.2f} s (dask is installed here; "
        "the README's install has no dask)"
    )


if __name__ == "__main__":
    main()

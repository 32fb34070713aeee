"""xbkg make --bkg-class bkg_3d on all 105 H.E.S.S. DR1 runs, against the 2D build.

Prints, measured in one process with the two builds taking turns (gamma-cat
exclusion, the default options otherwise):

- in-process with ``--workers 1 --no-verify``: time of the 3D build / time of
  the 2D build (target <= 2);
- the same with the default workers and checksum verification;
- where the 3D build spends the time the 2D build does not (one profiled run);
- whether the 3D files are byte-identical with 1 and 2 workers (and on a
  local dask.distributed cluster of 2 processes, when distributed is installed).

Both builds are warmed up first: imports, the file cache, and astropy's Earth
orientation table (IERS, about 0.7 s), which the 3D build loads once per
process to place the pointing in the sky.

Usage: python benchmarks/bench_3d.py [--repeats N] [--no-identity]
"""

from __future__ import annotations

import argparse
import cProfile
import filecmp
import pstats
import shutil
import sys
import tempfile
from pathlib import Path

from _common import data_path, interleaved, timed

#: The steps of the 3D build printed with their cumulative time (where the 3D build
#: spends what the 2D build does not, and the shared steps for comparison).
STEPS = (
    ("cube.py", "make_run_cube"),
    ("cube.py", "_with_tracks"),
    ("fov.py", "fov_coordinates"),
    ("fov_model.py", "unexcluded_fraction"),
    ("fov_model.py", "bin_fov"),
    ("pipeline.py", "build_background"),
    ("pipeline.py", "write_background"),
    ("pipeline.py", "_with_fov_orientation"),
    ("fov_model.py", "fov_rates"),
    ("prediction.py", "loglog_nodes"),
    ("gadf.py", "write_bkg_3d_files"),
)


def profile_steps(args: list[str]) -> str:
    """Cumulative time of the :data:`STEPS` in one profiled run."""
    from xbkg.cli import main as xbkg_main

    profiler = cProfile.Profile()
    profiler.runcall(xbkg_main, args)
    found = {
        (Path(path).name, name): cumulative
        for (path, _, name), (_, _, _, cumulative, _) in pstats.Stats(profiler).stats.items()  # type: ignore[attr-defined]
        if "xbkg" in path
    }
    total = sum(v for (f, n), v in found.items() if n == "main" and f == "cli.py")
    lines = [f"  {found.get(step, 0.0):6.2f} s  {step[0]}:{step[1]}" for step in STEPS]
    return "\n".join([f"  {total:6.2f} s  the whole build (profiled)", *lines])


def identical(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    _, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    return not mismatch and not errors and sorted(p.name for p in b.iterdir()) == names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-identity", action="store_true", help="skip the byte-identity runs")
    args = parser.parse_args()
    store = data_path("hess-dl3-dr1")
    catalog = data_path("catalogs", "gammacat", "gammacat.fits.gz")
    from xbkg.cli import main

    def xbkg_main(args: list[str]) -> None:
        if main(args) != 0:
            raise RuntimeError(f"xbkg {' '.join(args)} failed")

    work = Path(tempfile.mkdtemp(prefix="xbkg-bench-3d-"))

    def make(out: str, *extra: str) -> list[str]:
        return ["make", str(store), str(work / out), "--exclude", str(catalog), "-q",
                "--overwrite", *extra]  # fmt: skip

    one = ["--workers", "1", "--no-verify"]
    three_d = ["--bkg-class", "bkg_3d"]
    try:
        xbkg_main(make("2d", *one))
        xbkg_main(make("3d", *one, *three_d))
        single = interleaved(
            {
                "2d": lambda: timed(lambda: xbkg_main(make("2d", *one))),
                "3d": lambda: timed(lambda: xbkg_main(make("3d", *one, *three_d))),
            },
            args.repeats,
        )
        default = interleaved(
            {
                "2d": lambda: timed(lambda: xbkg_main(make("2d"))),
                "3d": lambda: timed(lambda: xbkg_main(make("3d", *three_d))),
            },
            args.repeats,
        )
        top = profile_steps(make("3d", *one, *three_d))
        same: dict[str, bool] = {}
        if not args.no_identity:
            xbkg_main(make("w1", *three_d, "--workers", "1"))
            xbkg_main(make("w2", *three_d, "--workers", "2"))
            same["2 workers"] = identical(work / "w1", work / "w2")
            try:
                from distributed import LocalCluster
            except ImportError:
                print("distributed is not installed: no dask comparison", file=sys.stderr)
            else:
                with LocalCluster(
                    n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
                ) as cluster:
                    xbkg_main(make("dask", *three_d, "--scheduler", cluster.scheduler_address))
                same["dask, 2 processes"] = identical(work / "w1", work / "dask")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"all 105 DR1 runs, gamma-cat exclusion; median of {args.repeats} interleaved runs")
    ratio = single["3d"] / single["2d"]
    print(
        f"in-process, --workers 1 --no-verify: 2D {single['2d']:.2f} s, 3D {single['3d']:.2f} s; "
        f"3D / 2D = {ratio:.2f}  (target <= 2)"
    )
    print(
        f"in-process, default workers and verification: 2D {default['2d']:.2f} s, "
        f"3D {default['3d']:.2f} s; 3D / 2D = {default['3d'] / default['2d']:.2f}"
    )
    print("3D build, --workers 1 --no-verify, cumulative time of its steps:")
    print(top)
    for what, ok in same.items():
        print(f"3D files with {what} byte-identical to 1 worker: {ok}")


if __name__ == "__main__":
    main()

"""``xbkg make --bkg-class bkg_3d`` on the 105 H.E.S.S. DR1 runs against the 2D build.

Prints, in-process on one core (``--workers 1 --no-verify``, gamma-cat exclusion):

- the wall time of the 2D (``bkg_2d``) and the 3D (``bkg_3d``) build, median of
  ``--repeats`` taken in turns, and their ratio (target: 3D <= 2 x 2D);
- where one 3D build spends its time in :mod:`xbkg.fov_model` (cumulative
  times under cProfile, which slows the calls down, so compare them with
  each other rather than with the wall times).

Usage: python benchmarks/bench_fov_model.py [--repeats N]
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import pstats
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from _common import data_path, interleaved, timed


def make(store: Path, catalog: Path, out: Path, bkg_class: str) -> None:
    from xbkg.cli import main

    shutil.rmtree(out, ignore_errors=True)
    args = ["make", str(store), str(out), "--workers", "1", "--no-verify", "-q"]
    code = main([*args, "--bkg-class", bkg_class, "--exclude", str(catalog)])
    if code != 0:
        raise RuntimeError(f"xbkg make --bkg-class {bkg_class} failed ({code})")


def fov_model_profile(store: Path, catalog: Path, out: Path) -> list[tuple[str, int, float]]:
    """``(function, calls, cumulative s)`` of the xbkg.fov_model functions in one 3D build."""
    profile = cProfile.Profile()
    profile.enable()
    make(store, catalog, out, "bkg_3d")
    profile.disable()
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    rows = [
        (name, calls, cumulative)
        for (path, _, name), (_, calls, _, cumulative, _) in stats.items()
        if Path(path).name == "fov_model.py" and not name.startswith("<")
    ]
    return sorted(rows, key=lambda row: -row[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    store = data_path("hess-dl3-dr1")
    catalog = data_path("catalogs", "gammacat", "gammacat.fits.gz")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model"
        make(store, catalog, out, "bkg_3d")  # imports and caches warm for both
        contenders: dict[str, Callable[[], float]] = {
            c: functools.partial(timed, functools.partial(make, store, catalog, out, c))
            for c in ("bkg_2d", "bkg_3d")
        }
        times = interleaved(contenders, args.repeats)
        print(f"bkg_2d {times['bkg_2d']:.2f} s, bkg_3d {times['bkg_3d']:.2f} s, ", end="")
        print(f"ratio {times['bkg_3d'] / times['bkg_2d']:.2f} (target <= 2)")
        print("xbkg.fov_model in one bkg_3d build (cProfile, cumulative):")
        for name, calls, cumulative in fov_model_profile(store, catalog, out):
            print(f"  {name:24s} {calls:6d} calls {cumulative:7.3f} s")


if __name__ == "__main__":
    main()

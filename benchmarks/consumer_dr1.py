"""How Gammapy reads the models of ``xbkg make`` on H.E.S.S. DR1: the numbers of the tests.

Builds the default model (every run a model of its own, gamma-cat excluded) twice,
with and without filling the bins the data do not constrain, and for each prints:

- one run's ``Observation.bkg.evaluate`` at 0.5 deg around its threshold (Gammapy 2.1);
- per run, Gammapy's ``MapDatasetMaker`` background summed per energy bin against
  xbkg's own prediction of the consumer's integration (largest relative difference);
- observed/predicted through ``MapDatasetMaker`` for the off-plane runs
  (|GLAT_PNT| > 10 deg), inside 2.5 deg and outside the exclusion regions, in every
  energy bin above the run's safe threshold holding at least 100 events.

Usage: ``python benchmarks/consumer_dr1.py [--data DIR] [--run OBS_ID]`` (about 4 minutes).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import xbkg
from test_consumer_dr1 import consumer_view
from xbkg.cli import main


def summarise(label: str, view: dict, run: int) -> None:
    with np.errstate(divide="ignore", invalid="ignore"):
        worst_diff = max(
            float(np.max(np.abs(ours / theirs - 1)[theirs > 0]))
            for ours, theirs, *_ in view.values()
        )
    ratios = []
    for _, _, observed, predicted, safe_lo, glat in view.values():
        if abs(glat) <= 10:
            continue
        edges = np.geomspace(0.1, 100, 16)
        keep = (edges[:-1] >= safe_lo * (1 - 1e-5)) & (observed >= 100)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios.append(observed[keep] / predicted[keep])
    r = np.concatenate(ratios)
    outside = sum(bool(np.any((x < 0.6) | (x > 1.6))) for x in ratios)
    print(f"{label}:")
    print(
        f"  Gammapy MapDatasetMaker vs xbkg's consumer prediction, {len(view)} runs: "
        f"largest relative difference per energy bin {worst_diff:.1e}"
    )
    print(
        f"  observed/predicted, {len(ratios)} off-plane runs, {r.size} bins: "
        f"{np.nanmin(r):.2f} to {np.nanmax(r):.2f}; runs with a bin outside 0.6-1.6: {outside}"
    )


def evaluate(out: Path, run: int) -> str:
    import astropy.units as u
    from gammapy.data import DataStore

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        obs = DataStore.from_dir(out).obs(run)
        values = obs.bkg.evaluate(energy=[0.25, 0.28, 0.32] * u.TeV, offset=0.5 * u.deg)
    return ", ".join(f"{v:.2g}" for v in values.to_value("s-1 MeV-1 sr-1"))


def run(data: Path, obs_id: int) -> None:
    store = data / "hess-dl3-dr1"
    regions = xbkg.read_catalog("gammacat")
    with tempfile.TemporaryDirectory() as tmp:
        for label, extra in (
            ("filled (default)", []),
            ("zeros kept (as before the fill)", ["--no-fill"]),
        ):
            out = Path(tmp) / label.split()[0]
            code = main(["make", str(store), str(out), "-q", *extra])
            if code != 0:
                raise SystemExit(code)
            print(
                f"OBS_ID {obs_id}, {label}: bkg.evaluate at 0.25, 0.28, 0.32 TeV, 0.5 deg: "
                f"{evaluate(out, obs_id)} s-1 MeV-1 sr-1"
            )
            summarise(label, consumer_view(out, regions=regions), obs_id)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(
        os.environ.get("XBKG_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
    )
    parser.add_argument("--data", type=Path, default=default, help="folder holding hess-dl3-dr1")
    parser.add_argument("--run", type=int, default=33787, help="run whose rate is evaluated")
    args = parser.parse_args()
    run(args.data, args.run)

"""bkg_3d models built by xbkg, read by Gammapy 2.1, against events with a known asymmetry.

A simulated store has a background asymmetric in the ALTAZ field of view
(a gradient along altitude that grows with the zenith angle, and a
camera-fixed one). ``xbkg make --bkg-class bkg_3d`` builds the models;
Gammapy's ``MapDatasetMaker`` makes each run's counts and background maps, as
every 3D analysis does. The pulls ``(n - b) / sqrt(b)`` of 0.2 deg pixels
within 1.8 deg of the pointing, energies above the run's threshold, must
have mean 0 +- 0.1 and width 1 +- 0.1, for ALTAZ and RADEC models, on a
plain GADF store and on one flagged like the H.E.S.S. DL3 DR1 release
(which Gammapy reads with fov_lon reversed). The same models mirrored along
fov_lon or turned by 180 deg, and a radial model, fail.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from conftest import require

#: Strong enough that a model without it (or mirrored) fails the pull width.
GRADIENT, CAMERA = 0.08, 0.06
#: Runs whose maps are checked (Gammapy's maps take about a second per run).
CHECKED = 6


@pytest.fixture(scope="module")
def asymmetric_stores(tmp_path_factory):
    from xbkg.simulate import simulate_datastore

    root = tmp_path_factory.mktemp("asym")
    return {
        flagged: simulate_datastore(
            root / f"store-{flagged}",
            n_runs=16,
            events_per_run=80_000,
            seed=5,
            fov_gradient=GRADIENT,
            camera_asymmetry=CAMERA,
            flag_like_hess_dr1=flagged,
        )
        for flagged in (False, True)
    }


def build(store_dir, out, *extra: str) -> None:
    from xbkg.cli import main

    args = ["make", str(store_dir), str(out), "--exclude", "none", "--workers", "1", "-q"]
    assert main([*args, *extra]) == 0


def pulls(out) -> np.ndarray:
    """Pulls of each checked run's counts against Gammapy's background map."""
    require("gammapy")
    from gammapy.data import DataStore
    from gammapy.datasets import MapDataset
    from gammapy.makers import MapDatasetMaker
    from gammapy.maps import MapAxis, WcsGeom

    logging.getLogger("gammapy").setLevel(logging.ERROR)
    store = DataStore.from_dir(out)
    values = []
    for obs_id in store.obs_ids[:CHECKED]:
        obs = store.obs(obs_id, required_irf="all-optional")
        row = store.obs_table[store.obs_table["OBS_ID"] == obs_id]
        threshold = float(row["SAFE_ENERGY_LO"][0])
        # Map bins of 0.1 decade (Gammapy integrates log-log within each), from the
        # first model bin edge (0.2 decade) at or above the run's threshold.
        start = min(e for e in 10 ** (np.arange(-10, 11) / 5) if e >= threshold * 0.9999)
        grid = 10 ** (np.arange(-20, 21) / 10)
        axis = MapAxis.from_edges(grid[grid >= start * 0.9999], unit="TeV", name="energy")
        geom = WcsGeom.create(
            skydir=obs.pointing.fixed_icrs, width=4, binsz=0.1, frame="icrs", axes=[axis]
        )
        maps = MapDatasetMaker(selection=["counts", "background"]).run(MapDataset.create(geom), obs)
        counts = maps.counts.data.sum(0).reshape(20, 2, 20, 2).sum((1, 3))
        background = maps.background.data.sum(0).reshape(20, 2, 20, 2).sum((1, 3))
        y, x = np.mgrid[0:20, 0:20]
        inside = (np.hypot(x - 9.5, y - 9.5) * 0.2 < 1.8) & (background > 20)
        values.append((counts - background)[inside] / np.sqrt(background[inside]))
    return np.concatenate(values)


def reorient_run_models(out, *, lon: bool, lat: bool) -> None:
    """Rewrite every run's bkg_3d file flipped along fov_lon and/or fov_lat (wrong orientations).

    Flipping both turns the model by 180 deg.
    """
    from astropy.io import fits

    from xbkg.io.gadf import read_bkg, write_bkg_3d

    for path in sorted(out.glob("background_run_*.fits.gz")):
        rate = read_bkg(path)  # in the GADF orientation, whatever the file's REVLON
        values = rate.transpose("energy", "fov_lon", "fov_lat").values
        flipped = rate.copy(data=values[:, :: -1 if lon else 1, :: -1 if lat else 1])
        stored_reversed = bool(fits.getheader(path, "BACKGROUND")["REVLON"])
        write_bkg_3d(flipped, path, reverse_lon=stored_reversed, overwrite=True)


@pytest.mark.parametrize(
    ("flagged", "alignment"),
    [(False, "ALTAZ"), (False, "RADEC"), (True, None)],
    ids=["gadf-altaz", "gadf-radec", "dr1-flagged-default"],
)
def test_gammapy_maps_of_our_models_match_the_events(
    asymmetric_stores, tmp_path, flagged, alignment
) -> None:
    out = tmp_path / "model"
    extra = ["--bkg-class", "bkg_3d"]
    if alignment is not None:
        extra += ["--fov-alignment", alignment]
    build(asymmetric_stores[flagged], out, *extra)
    good = pulls(out)
    assert abs(good.mean()) < 0.1, good.mean()
    assert abs(good.std() - 1) < 0.1, good.std()
    reorient_run_models(out, lon=True, lat=False)
    mirrored = pulls(out)
    assert mirrored.std() > 1.2, mirrored.std()  # far outside the band (1 +- 0.1)
    reorient_run_models(out, lon=False, lat=True)  # now mirrored in both: turned by 180 deg
    turned = pulls(out)
    assert turned.std() > 1.2, turned.std()


def test_a_radial_model_cannot_follow_the_asymmetry(asymmetric_stores, tmp_path) -> None:
    out = tmp_path / "model"
    build(asymmetric_stores[False], out)
    # Outside the band the 3D models pass (width 1 +- 0.1).
    assert pulls(out).std() > 1.1

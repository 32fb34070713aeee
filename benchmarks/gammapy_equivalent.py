"""The xbkg job written with Gammapy 2.1 as a user would today (the comparison baseline).

Zenith groups [0, 49, 90) deg, gamma-cat sources excluded (events within
max(morph_sigma, 0.3 deg) removed, exposure not corrected), counts and
LIVETIME summed per group, rate written with ``Background2D``.

Usage: python benchmarks/gammapy_equivalent.py DATA_STORE CATALOG OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from gammapy.catalog import SourceCatalogGammaCat
from gammapy.data import DataStore
from gammapy.irf import Background2D
from gammapy.maps import MapAxis


def main(store_dir: str, catalog: str, out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    store = DataStore.from_dir(store_dir)
    table = SourceCatalogGammaCat(catalog).table
    sources = SkyCoord(table["ra"], table["dec"], frame="icrs")
    sigma = np.ma.filled(np.ma.asarray(table["morph_sigma"], dtype=float), np.nan)
    radius = np.maximum(np.nan_to_num(sigma, nan=0.3), 0.3) * u.deg

    energy = MapAxis.from_energy_bounds(0.1, 100, 15, unit="TeV", name="energy")
    offset = MapAxis.from_bounds(0, 2.5, 99, interp="sqrt", unit="deg", name="offset")
    zenith_edges = [0, 49, 90]
    counts = np.zeros((2, energy.nbin, offset.nbin))
    livetime = np.zeros(2)

    zenith_of = dict(zip(store.obs_table["OBS_ID"], store.obs_table["ZEN_PNT"], strict=True))
    observations = store.get_observations(required_irf=[])
    for obs in observations:
        zenith = zenith_of[obs.obs_id]
        group = np.searchsorted(zenith_edges, zenith, side="right") - 1
        if not 0 <= group < 2:
            continue
        events = obs.events
        pointing = obs.pointing.fixed_icrs
        near = sources.separation(pointing) < 2.5 * u.deg + radius
        keep = np.ones(len(events.table), dtype=bool)
        for src, r in zip(sources[near], radius[near], strict=True):
            keep &= events.radec.separation(src) > r
        offsets = events.radec.separation(pointing)[keep]
        hist, _, _ = np.histogram2d(
            events.energy[keep].to_value("TeV"),
            offsets.to_value("deg"),
            bins=[energy.edges.to_value("TeV"), offset.edges.to_value("deg")],
        )
        counts[group] += hist
        livetime[group] += obs.observation_live_time_duration.to_value("s")

    solid_angle = 2 * np.pi * (1 - np.cos(offset.edges.to_value("rad")))
    solid_angle = np.diff(solid_angle) * u.sr
    for group in range(2):
        if livetime[group] == 0:
            continue
        rate = counts[group] / (livetime[group] * u.s * energy.bin_width[:, None] * solid_angle)
        bkg = Background2D(axes=[energy, offset], data=rate.to("MeV-1 s-1 sr-1"))
        bkg.write(out / f"bkg_group_{group}.fits", overwrite=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])

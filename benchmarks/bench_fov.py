"""Field-of-view coordinates of all H.E.S.S. DR1 events: xbkg.fov against astropy per event.

Prints, measured in one process with the contenders taking turns (median of
``--repeats``):

- xbkg: ALTAZ coordinates of every event of the 105 runs, the tracks of the runs
  (astropy at their nodes, :func:`xbkg.fov.tracks_from_headers`) built from the
  EVENTS headers included; then the tracks and the events apart, and the events
  in RADEC;
- astropy: the per-event transformation (``AltAz`` at each event's time, then
  ``SkyOffsetFrame`` on the pointing's AltAz position, longitude reversed: what
  Gammapy 2.1's ``FoVAltAzFrame`` does) on all events of every ``--every``-th
  run (one call per run: astropy at its quickest per event), and its time per
  event scaled to all events;
- the ratio of the times per event, and the largest difference between the two
  on the subsample.

The events are read before timing (reading is the cube's job, not this one's).

Usage: python benchmarks/bench_fov.py [--repeats N] [--every N]
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
from _common import data_path, interleaved, timed


def read_dr1(store: Any) -> list[tuple[Any, dict[str, np.ndarray], str]]:
    from xbkg.io.datastore import event_locations, open_datastore
    from xbkg.io.fitsread import read_table

    runs = []
    for _, (path, hdu) in sorted(event_locations(open_datastore(store)).items()):
        cards, values, _ = read_table(path, hdu, ("RA", "DEC", "TIME"), verify=False)
        runs.append((cards.header, values, str(path)))
    return runs


def xbkg_tracks(runs: list) -> list:
    from xbkg import fov

    return fov.tracks_from_headers([h for h, _, _ in runs], [p for _, _, p in runs])


def xbkg_events(runs: list, tracks: list, alignment: str) -> list:
    out = []
    for (_, values, _), track in zip(runs, tracks, strict=True):
        out.append(track.fov_coordinates(values["RA"], values["DEC"], values["TIME"], alignment))
    return out


def xbkg_all(runs: list, alignment: str) -> list[tuple[np.ndarray, np.ndarray]]:
    return xbkg_events(runs, xbkg_tracks(runs), alignment)


def astropy_subsample(runs: list, picks: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    import astropy.units as u
    from astropy.coordinates import AltAz, SkyCoord, SkyOffsetFrame
    from astropy.time import TimeDelta

    from xbkg import fov

    out = []
    for (header, values, _), pick in zip(runs, picks, strict=True):
        if not pick.size:
            out.append((np.zeros(0), np.zeros(0)))
            continue
        time_ref = fov.time_reference(header)
        location = fov.observatory_location(header)
        obstime = time_ref + TimeDelta(values["TIME"][pick], format="sec")
        frame = AltAz(obstime=obstime, location=location)
        pointing = SkyCoord(header["RA_PNT"] * u.deg, header["DEC_PNT"] * u.deg).transform_to(frame)
        events = SkyCoord(values["RA"][pick] * u.deg, values["DEC"][pick] * u.deg)
        offset = events.transform_to(frame).transform_to(SkyOffsetFrame(origin=pointing))
        out.append((-offset.lon.deg, offset.lat.deg))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--every", type=int, default=10, help="astropy on every N-th run")
    args = parser.parse_args()

    runs = read_dr1(data_path("hess-dl3-dr1"))
    n_events = sum(values["RA"].size for _, values, _ in runs)
    picks = [
        np.arange(v["RA"].size) if i % args.every == 0 else np.zeros(0, np.int64)
        for i, (_, v, _) in enumerate(runs)
    ]
    n_sub = sum(p.size for p in picks)
    # Warm up both (astropy loads its Earth orientation tables at the first transformation).
    ours = xbkg_all(runs, "ALTAZ")
    theirs = astropy_subsample(runs, picks)

    tracks = xbkg_tracks(runs)
    times = interleaved(
        {
            "xbkg ALTAZ": lambda: timed(lambda: xbkg_all(runs, "ALTAZ")),
            "tracks": lambda: timed(lambda: xbkg_tracks(runs)),
            "events ALTAZ": lambda: timed(lambda: xbkg_events(runs, tracks, "ALTAZ")),
            "events RADEC": lambda: timed(lambda: xbkg_events(runs, tracks, "RADEC")),
            "astropy ALTAZ": lambda: timed(lambda: astropy_subsample(runs, picks)),
        },
        args.repeats,
    )
    per_event = {
        "xbkg ALTAZ": times["xbkg ALTAZ"] / n_events,
        "astropy ALTAZ": times["astropy ALTAZ"] / n_sub,
    }
    diff = 0.0
    for (lon, lat), (ref_lon, ref_lat), pick in zip(ours, theirs, picks, strict=True):
        if not pick.size:
            continue
        a = np.deg2rad([lon[pick], lat[pick]])
        b = np.deg2rad([ref_lon, ref_lat])
        cos = np.sin(a[1]) * np.sin(b[1]) + np.cos(a[1]) * np.cos(b[1]) * np.cos(a[0] - b[0])
        sin = np.hypot(
            np.cos(b[1]) * np.sin(a[0] - b[0]),
            np.cos(a[1]) * np.sin(b[1]) - np.sin(a[1]) * np.cos(b[1]) * np.cos(a[0] - b[0]),
        )
        diff = max(diff, float(np.rad2deg(np.arctan2(sin, cos)).max()))

    n_nodes = sum(t.times.size for t in tracks)
    print(f"DR1: {len(runs)} runs, {n_events} events; astropy on {n_sub} of them")
    print(f"xbkg ALTAZ, all events, tracks included: {times['xbkg ALTAZ']:7.3f} s")
    print(f"  the tracks of the runs ({n_nodes} nodes):  {times['tracks']:7.3f} s")
    print(f"  the events, ALTAZ:                     {times['events ALTAZ']:7.3f} s")
    print(f"  the events, RADEC (no track needed):   {times['events RADEC']:7.3f} s")
    print(f"astropy ALTAZ, subsample:                {times['astropy ALTAZ']:7.3f} s")
    print(
        f"astropy ALTAZ, all events (scaled):      {per_event['astropy ALTAZ'] * n_events:7.1f} s"
    )
    for name, seconds in per_event.items():
        print(f"  {name:14s} {seconds * 1e9:10.0f} ns per event")
    ratio = per_event["astropy ALTAZ"] / per_event["xbkg ALTAZ"]
    print(f"ratio astropy / xbkg per event (ALTAZ): {ratio:.0f}")
    print(f"largest difference on the subsample: {diff:.2e} deg")


if __name__ == "__main__":
    main()

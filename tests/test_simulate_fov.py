"""Simulated stores with a known field-of-view asymmetry, and stores flagged like H.E.S.S. DR1.

The truth is fixed in the ALTAZ field of view (``1 + G tan(zenith) fov_lat + C
fov_lon`` times the radial rate): the events must follow it there, with a
gradient along altitude that grows with the zenith angle, and in the RADEC
frame they must show it turned and smeared by the rotation of the field during
each run exactly as :func:`xbkg.truth.true_fov_counts` predicts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import AltAz, SkyCoord
from astropy.io import fits
from astropy.time import TimeDelta

from conftest import require
from xbkg.cli import main
from xbkg.fov import pointing_track, radec_to_fov
from xbkg.io.datastore import gammapy_reversed_lon, open_datastore
from xbkg.simulate import simulate_datastore
from xbkg.truth import (
    FovAsymmetry,
    RunTruth,
    expected_counts,
    separation,
    true_altaz_rate,
    true_fov_counts,
    true_fov_rate,
    true_sky_counts,
)

# The asymmetry of the stores: G (per deg at 45 deg zenith) and C (per deg).
GRADIENT, CAMERA = -0.08, 0.03
ENERGY_RANGE = [0.05, 200.0]  # TeV, the simulated range: one bin holds every event
SQUARE = np.linspace(-2.0, 2.0, 21)  # fov bins of 0.2 deg, inside the 3-deg field of view
# Chi2 of a histogram of n bins: within this many standard deviations sqrt(2 n) of n.
CHI2_SIGMAS = 5.0
PULL_LIMIT = 4.0  # standard errors allowed between an estimate and the truth


# --------------------------------------------------------------------------------------
# helpers and stores
# --------------------------------------------------------------------------------------


def runs(store: Path) -> Iterator[tuple[fits.Header, fits.FITS_rec]]:
    """The EVENTS header and table of each run of a store (one file per run)."""
    for path in sorted((store / "data").glob("obs_*.fits.gz")):
        with fits.open(path) as hdus:
            yield hdus["EVENTS"].header.copy(), hdus["EVENTS"].data.copy()


def altaz_fov(run: RunTruth, events: fits.FITS_rec) -> tuple[np.ndarray, np.ndarray]:
    return run.track.fov_coordinates(
        events["RA"].astype(float), events["DEC"].astype(float), events["TIME"], "ALTAZ"
    )


def radec_fov(run: RunTruth, events: fits.FITS_rec) -> tuple[np.ndarray, np.ndarray]:
    return radec_to_fov(
        events["RA"].astype(float), events["DEC"].astype(float), run.track.ra_pnt, run.track.dec_pnt
    )


def gradient_estimate(x: np.ndarray) -> tuple[float, float]:
    """Gradient ``s`` of a density ``radial * (1 + s x + ...)`` with a symmetric radial part,
    and its standard error: E[x] = s E[x**2] and E[x**2] does not depend on s."""
    return float(x.mean() / np.mean(x**2)), float(x.std() / np.sqrt(x.size) / np.mean(x**2))


def chi2(counts: np.ndarray, expected: np.ndarray) -> float:
    return float(np.sum((counts - expected) ** 2 / expected))


def assert_chi2_fits(counts: np.ndarray, expected: np.ndarray, what: str) -> None:
    n = counts.size
    value = chi2(counts, expected)
    assert abs(value - n) < CHI2_SIGMAS * np.sqrt(2 * n), f"{what}: chi2 {value:.0f} for {n} bins"


def mean_position(
    counts: np.ndarray, lon_edges: np.ndarray, lat_edges: np.ndarray
) -> tuple[float, float]:
    """Mean (fov_lon, fov_lat) of a binned expectation, at bin centres."""
    lon = 0.5 * (lon_edges[1:] + lon_edges[:-1])
    lat = 0.5 * (lat_edges[1:] + lat_edges[:-1])
    total = counts.sum()
    return float(counts.sum(axis=1) @ lat / total), float(counts.sum(axis=0) @ lon / total)


@pytest.fixture(scope="module")
def zenith_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four runs spread over 15-60 deg zenith with the asymmetry, 2e4 events each."""
    return simulate_datastore(
        tmp_path_factory.mktemp("fov") / "zenith",
        n_runs=4,
        events_per_run=20000,
        seed=11,
        zenith_range=(15.0, 60.0),
        fov_gradient=GRADIENT,
        camera_asymmetry=CAMERA,
    )


@pytest.fixture(scope="module")
def rotating_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Long runs near the zenith, where the field turns by 100-180 deg during a run; the
    camera-fixed gradient is then smeared out in the RADEC frame. Flagged like DR1."""
    return simulate_datastore(
        tmp_path_factory.mktemp("fov") / "rotating",
        n_runs=3,
        events_per_run=30000,
        seed=2,
        zenith_range=(1.0, 12.0),
        fov_gradient=GRADIENT,
        camera_asymmetry=0.08,
        flag_like_hess_dr1=True,
    )


# --------------------------------------------------------------------------------------
# the events follow the truth in the ALTAZ field of view
# --------------------------------------------------------------------------------------


def test_altitude_gradient_of_the_events_grows_with_zenith(zenith_store: Path) -> None:
    tan_z, slopes, errors = [], [], []
    for header, events in runs(zenith_store):
        run = RunTruth.from_header(header)
        assert (run.asymmetry.gradient, run.asymmetry.camera) == (GRADIENT, CAMERA)
        lon, lat = altaz_fov(run, events)
        slope, error = gradient_estimate(lat)
        truth = float(run.asymmetry.altitude_gradient(run.zenith))
        assert abs(slope - truth) < PULL_LIMIT * error, (run.zenith, slope, truth, error)
        camera, camera_error = gradient_estimate(lon)
        assert abs(camera - CAMERA) < PULL_LIMIT * camera_error, (run.zenith, camera)
        tan_z.append(np.tan(np.deg2rad(run.zenith)))
        slopes.append(slope)
        errors.append(error)
    # The gradient grows as tan(zenith): fit slope = G tan(z) over the runs.
    t, s, w = np.array(tan_z), np.array(slopes), 1.0 / np.array(errors) ** 2
    g_fit = float(np.sum(w * t * s) / np.sum(w * t**2))
    g_error = float(1.0 / np.sqrt(np.sum(w * t**2)))
    assert abs(g_fit - GRADIENT) < PULL_LIMIT * g_error
    assert abs(g_fit) > 5 * g_error  # the zenith dependence is measured, not noise
    # and seen directly: the gradient is steeper at the largest zenith angle than at the smallest
    low, high = np.argmin(t), np.argmax(t)
    assert slopes[high] - slopes[low] < -PULL_LIMIT * np.hypot(errors[high], errors[low])


def test_event_maps_match_the_truth_in_both_frames(zenith_store: Path) -> None:
    log_ratio = {"mirrored": 0.0, "turned by 180 deg": 0.0, "RADEC truth read as ALTAZ": 0.0}
    for header, events in runs(zenith_store):
        run = RunTruth.from_header(header)
        maps = {}
        for frame, (lon, lat) in (
            ("ALTAZ", altaz_fov(run, events)),
            ("RADEC", radec_fov(run, events)),
        ):
            counts, _, _ = np.histogram2d(lon, lat, bins=[SQUARE, SQUARE])
            expected = true_fov_counts(run, ENERGY_RANGE, SQUARE, SQUARE, frame).values[0]
            assert_chi2_fits(counts, expected, f"{frame} map of run {header['OBS_ID']}")
            maps[frame] = counts, expected
        # Poisson log-likelihood ratio of the truth over wrong orientations of it.
        counts, expected = maps["ALTAZ"]
        for name, wrong in (
            ("mirrored", expected[::-1, :]),
            ("turned by 180 deg", expected[::-1, ::-1]),
            ("RADEC truth read as ALTAZ", maps["RADEC"][1]),
        ):
            log_ratio[name] += float(np.sum(counts * np.log(expected / wrong) - expected + wrong))
    # Expected: several tens per run; a wrong orientation would make them negative.
    assert all(value > 25.0 for value in log_ratio.values()), log_ratio


def test_offsets_keep_the_radial_truth(zenith_store: Path) -> None:
    """The linear factor averages to 1 on every ring: expected_counts still holds."""
    rings = np.linspace(0.0, 3.0, 16)
    for header, events in runs(zenith_store):
        offset = separation(
            events["RA"].astype(float),
            events["DEC"].astype(float),
            header["RA_PNT"],
            header["DEC_PNT"],
        )
        counts, _ = np.histogram(offset, bins=rings)
        mu = expected_counts(
            ENERGY_RANGE, rings, header["SIMZEN"], header["LIVETIME"], header["MUONEFF"]
        ).values[0]
        assert_chi2_fits(counts, mu, f"offsets of run {header['OBS_ID']}")


def test_the_altaz_frame_is_astropys(zenith_store: Path) -> None:
    """Events sit at the ALTAZ coordinates astropy gives, fov_lat towards higher altitude
    and fov_lon towards lower azimuth, independently of xbkg.fov."""
    header, events = next(runs(zenith_store))
    run = RunTruth.from_header(header)
    events = events[:: max(1, len(events) // 300)]
    lon, lat = altaz_fov(run, events)
    obstime = run.track.time_ref + TimeDelta(events["TIME"], format="sec")
    frame = AltAz(obstime=obstime, location=run.track.location)
    event = SkyCoord(events["RA"].astype(float), events["DEC"].astype(float), unit="deg")
    pointing = SkyCoord(run.track.ra_pnt, run.track.dec_pnt, unit="deg")
    ev, pnt = event.transform_to(frame), pointing.transform_to(frame)
    alt = ev.alt.rad
    alt0, daz = pnt.alt.rad, ev.az.rad - pnt.az.rad
    # The spherical offset frame centred on the pointing (astropy's SkyOffsetFrame),
    # with the GADF longitude reversed.
    expected_lat = np.arcsin(np.sin(alt) * np.cos(alt0) - np.cos(alt) * np.sin(alt0) * np.cos(daz))
    expected_lon = -np.arctan2(
        np.cos(alt) * np.sin(daz),
        np.sin(alt) * np.sin(alt0) + np.cos(alt) * np.cos(alt0) * np.cos(daz),
    )
    # RA and DEC are stored as float32: ~1e-5 deg.
    np.testing.assert_allclose(lat, np.rad2deg(expected_lat), atol=1e-3)
    np.testing.assert_allclose(lon, np.rad2deg(expected_lon), atol=1e-3)
    assert np.ptp(lat) > 3.0  # the events fill the field of view


# --------------------------------------------------------------------------------------
# the RADEC frame sees the asymmetry turned and smeared
# --------------------------------------------------------------------------------------


def test_radec_gradient_is_smeared_by_the_rotation_as_predicted(rotating_store: Path) -> None:
    edges = np.linspace(-2.5, 2.5, 26)
    largest_rotation, best_distance = 0.0, 0.0
    for header, events in runs(rotating_store):
        run = RunTruth.from_header(header)
        lon, lat = radec_fov(run, events)
        inside = (np.abs(lon) < 2.5) & (np.abs(lat) < 2.5)
        lon, lat = lon[inside], lat[inside]
        observed = np.array([lat.mean(), lon.mean()])
        error = np.array([lat.std(), lon.std()]) / np.sqrt(lat.size)
        smeared = true_fov_counts(run, ENERGY_RANGE, edges, edges, "RADEC").values[0]
        predicted = np.array(mean_position(smeared.T, edges, edges))
        assert np.all(np.abs(observed - predicted) < PULL_LIMIT * error), (observed, predicted)
        # Without the time average (the field as it was at mid-run) the prediction is
        # wrong by many standard errors: the test sees the smearing.
        t_mid = 0.5 * (run.tstart + run.tstop)
        frozen = true_fov_counts(run, ENERGY_RANGE, edges, edges, "RADEC", times=[t_mid])
        frozen_mean = np.array(mean_position(frozen.values[0].T, edges, edges))
        distance = float(np.hypot(*((frozen_mean - predicted) / error)))
        psi = run.track.rotation_angle(np.linspace(run.tstart, run.tstop, 200))
        rotation = float(np.ptp(np.rad2deg(np.unwrap(np.deg2rad(psi)))))
        if rotation > largest_rotation:
            largest_rotation, best_distance = rotation, distance
        # The time average shrinks the gradient: |mean position| drops.
        assert np.hypot(*predicted) < np.hypot(*frozen_mean)
    assert largest_rotation > 90.0
    assert best_distance > 2 * PULL_LIMIT  # the frozen field would fail by far


# --------------------------------------------------------------------------------------
# the truth functions
# --------------------------------------------------------------------------------------


def test_truth_functions_agree(zenith_store: Path) -> None:
    header, _ = next(runs(zenith_store))
    run = RunTruth.from_header(header)
    energy = [0.1, 1.0, 10.0]
    # Over a square of +-10 deg (the whole acceptance) the linear factor averages out: the
    # counts are the radial total.
    wide = np.linspace(-10.0, 10.0, 11)
    total = expected_counts(energy, [0.0, 180.0], run.zenith, run.livetime, run.muoneff)
    counts = true_fov_counts(run, energy, wide, wide, "ALTAZ")
    assert counts.dims == ("energy", "fov_lon", "fov_lat")
    assert counts.attrs["fov_alignment"] == "ALTAZ"
    np.testing.assert_allclose(counts.sum(("fov_lon", "fov_lat")), total[:, 0], rtol=1e-6)
    # Turned and averaged in the RADEC frame, it still averages out over a square (up to the
    # differential aberration between the frames).
    square = np.linspace(-3.0, 3.0, 7)
    altaz = true_fov_counts(run, energy, square, square, "ALTAZ")
    radec = true_fov_counts(run, energy, square, square, "RADEC")
    assert radec.attrs["fov_alignment"] == "RADEC"
    np.testing.assert_allclose(
        radec.sum(("fov_lon", "fov_lat")), altaz.sum(("fov_lon", "fov_lat")), rtol=1e-7
    )
    assert not np.allclose(radec, altaz, rtol=1e-2)
    # The bin average of the rate approaches the rate at the centre of small bins.
    small = np.linspace(-1.5, 1.5, 61)
    rate = true_fov_rate(run, [0.999, 1.001], small, small, "ALTAZ")
    centre = 0.5 * (small[1:] + small[:-1])
    at_centre = true_altaz_rate(
        1.0, centre[:, None], centre[None, :], run.zenith, run.muoneff, run.asymmetry
    )
    np.testing.assert_allclose(rate.values[0], at_centre, rtol=1e-4)
    assert rate.attrs["units"] == "s-1 MeV-1 sr-1"
    # The sky map at the centres of fine RADEC bins gives the counts of those bins.
    fine = np.linspace(-2.0, 2.0, 41)
    binned = true_fov_counts(run, energy, fine, fine, "RADEC").values
    from xbkg.fov import fov_to_radec

    c = 0.5 * (fine[1:] + fine[:-1])
    ra, dec = fov_to_radec(c[:, None], c[None, :], run.track.ra_pnt, run.track.dec_pnt)
    width = np.deg2rad(np.diff(fine)[0])
    omega = width * (np.sin(np.deg2rad(fine[1:])) - np.sin(np.deg2rad(fine[:-1])))[None, :]
    sky = true_sky_counts(run, energy, ra, dec, np.broadcast_to(omega, ra.shape))
    assert sky.shape == (2, 40, 40)
    np.testing.assert_allclose(sky, binned, rtol=2e-3)  # the midpoint rule


def test_the_truth_of_a_symmetric_run_is_the_same_in_both_frames() -> None:
    from astropy.coordinates import EarthLocation
    from astropy.time import Time

    site = EarthLocation.from_geodetic(16.5 * u.deg, -23.27 * u.deg, 1835 * u.m)
    track = pointing_track(83.6, -5.0, 0.0, 1800.0, Time(58000.0, format="mjd", scale="tt"), site)
    run = RunTruth(zenith=30.0, muoneff=0.9, livetime=1700.0, tstart=0.0, tstop=1800.0, track=track)
    edges = np.linspace(-2.0, 2.0, 9)
    altaz = true_fov_counts(run, [0.5, 2.0], edges, edges, "ALTAZ")
    radec = true_fov_counts(run, [0.5, 2.0], edges, edges, "RADEC")
    np.testing.assert_allclose(altaz, radec, rtol=1e-12)
    np.testing.assert_allclose(altaz.values, altaz.values[:, ::-1, ::-1], rtol=1e-12)
    # An asymmetric one is not: the RADEC frame sees the turned, averaged factor.
    turned = RunTruth(**{**run.__dict__, "asymmetry": FovAsymmetry(GRADIENT, CAMERA)})
    assert not np.allclose(
        true_fov_counts(turned, [0.5, 2.0], edges, edges, "ALTAZ"),
        true_fov_counts(turned, [0.5, 2.0], edges, edges, "RADEC"),
        rtol=1e-3,
    )


# --------------------------------------------------------------------------------------
# Gammapy's map of the true model is the truth's sky map
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_run_stores(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Path]:
    """One run at 30-45 deg zenith with the asymmetry, plain and flagged like DR1."""
    root = tmp_path_factory.mktemp("gammapy")
    return {
        flagged: simulate_datastore(
            root / f"store_{flagged}",
            n_runs=1,
            events_per_run=500,
            seed=4,
            zenith_range=(30.0, 45.0),
            fov_gradient=-0.1,
            camera_asymmetry=0.08,
            flag_like_hess_dr1=flagged,
        )
        for flagged in (False, True)
    }


def gammapy_over_truth(
    store_dir: Path, out_dir: Path, alignment: str, reverse_lon: bool
) -> np.ndarray:
    """Gammapy 2.1's background map of the run from its true model written as bkg_3d, over
    true_sky_counts, within 2 deg of the pointing (energy, pixel)."""
    data, makers = require("gammapy.data"), require("gammapy.makers")
    maps, datasets = require("gammapy.maps"), require("gammapy.datasets")
    from xbkg import conventions
    from xbkg.io.datastore import hdu_location, write_index
    from xbkg.io.gadf import write_bkg_3d
    from xbkg.io.hdu_index import make_hdu_index, make_obs_index

    store = open_datastore(store_dir)
    obs_id = int(store.obs_ids[0])
    events_file, _ = hdu_location(store, obs_id)
    run = RunTruth.from_header(fits.getheader(events_file, "EVENTS"))
    fov = np.linspace(-3.0, 3.0, 31)
    rate = true_fov_rate(run, np.geomspace(0.5, 50.0, 21), fov, fov, alignment)
    rate.attrs[conventions.FOVALIGN_KEYWORD] = alignment
    name = conventions.run_model_filename(obs_id)
    write_bkg_3d(rate, out_dir / name, reverse_lon=reverse_lon, header={"OBS_ID": obs_id})
    index = make_hdu_index(store, out_dir, {obs_id: name}, hdu_class="bkg_3d")
    write_index(index, out_dir / conventions.HDU_INDEX_FILE, "HDU_INDEX")
    write_index(make_obs_index(store), out_dir / conventions.OBS_INDEX_FILE, "OBS_INDEX")
    obs = data.DataStore.from_dir(out_dir).obs(obs_id, required_irf="all-optional")
    # Above the turn-on (about 0.6 TeV at 45 deg), where Gammapy's log-log integration
    # of each energy bin between its edges is exact for the power law.
    energy = maps.MapAxis.from_edges([2.0, 4.0, 8.0], unit="TeV", name="energy", interp="log")
    geom = maps.WcsGeom.create(
        skydir=obs.get_pointing_icrs(obs.tmid), width=4.4, binsz=0.1, axes=[energy]
    )
    maker = makers.MapDatasetMaker(selection=["background"])
    background = maker.run(datasets.MapDataset.create(geom), obs).background.data
    image = geom.to_image()
    sky = image.get_coord().skycoord
    truth = true_sky_counts(
        run, [2.0, 4.0, 8.0], sky.ra.deg, sky.dec.deg, image.solid_angle().to_value("sr")
    )
    inside = image.separation(obs.get_pointing_icrs(obs.tmid)).deg < 2.0
    # Gammapy multiplies the rate by the run's duration, the truth by its live time.
    return background[:, inside] / truth[:, inside] * (run.livetime / (run.tstop - run.tstart))


@pytest.mark.parametrize(
    ("flagged", "alignment", "reverse_lon", "right"),
    [
        (False, "ALTAZ", False, True),
        (False, "RADEC", False, True),
        (True, "RADEC", True, True),
        # Gammapy reads every model of a flagged run as RADEC with fov_lon reversed:
        (True, "RADEC", False, False),
        (True, "ALTAZ", False, False),
    ],
    ids=["altaz", "radec", "flagged-radec-reversed", "flagged-radec", "flagged-altaz"],
)
def test_gammapy_map_of_the_true_model_is_the_truth(
    one_run_stores: dict[bool, Path],
    tmp_path: Path,
    flagged: bool,
    alignment: str,
    reverse_lon: bool,
    right: bool,
) -> None:
    ratio = gammapy_over_truth(one_run_stores[flagged], tmp_path, alignment, reverse_lon)
    # Measured: within 3e-3 where the orientation is right (bins of 0.2 deg hold bin
    # averages that Gammapy interpolates between centres), off by ~50 % where not.
    worst = float(np.max(np.abs(ratio - 1.0)))
    assert (worst < 0.01) if right else (worst > 0.05), worst


# --------------------------------------------------------------------------------------
# determinism, stores flagged like H.E.S.S. DR1, command line, bad input
# --------------------------------------------------------------------------------------


def small_store(path: Path, **kwargs: object) -> Path:
    options: dict[str, object] = {
        "n_runs": 2,
        "events_per_run": 2000,
        "seed": 5,
        "fov_gradient": GRADIENT,
        "camera_asymmetry": CAMERA,
    }
    options.update(kwargs)
    return simulate_datastore(path, **options)


def files(store: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()
    }


def test_same_seed_gives_same_bytes(tmp_path: Path) -> None:
    first = files(small_store(tmp_path / "a", flag_like_hess_dr1=True))
    again = files(small_store(tmp_path / "b", flag_like_hess_dr1=True))
    assert first == again
    other = files(small_store(tmp_path / "c", flag_like_hess_dr1=True, seed=6))
    assert other != first


def test_flag_like_hess_dr1(tmp_path: Path, rotating_store: Path) -> None:
    flagged = small_store(tmp_path / "flagged", flag_like_hess_dr1=True)
    plain = small_store(tmp_path / "plain")
    for (h_flag, ev_flag), (h_plain, ev_plain) in zip(runs(flagged), runs(plain), strict=True):
        assert (h_flag["CREATOR"], h_flag["HDUVERS"], h_flag["SIMDR1"]) == (
            "SASH FITS::EventListWriter",
            "0.2",
            True,
        )
        assert h_plain["CREATOR"] == "xbkg.simulate"
        assert h_plain["HDUVERS"] == "0.3"
        assert "SIMDR1" not in h_plain
        assert ev_flag.tobytes() == ev_plain.tobytes()  # the flag changes headers only
    for path in (flagged / "data").glob("*.fits.gz"):
        with fits.open(path) as hdus:
            assert {h.header["HDUVERS"] for h in hdus[1:]} == {"0.2"}
    assert set(gammapy_reversed_lon(open_datastore(flagged)).values()) == {True}
    assert set(gammapy_reversed_lon(open_datastore(plain)).values()) == {False}
    # The Gammapy 0.6 layout has no HDUCLASS keywords, but a flagged EVENTS header must
    # carry HDUVERS for Gammapy's test.
    old = small_store(tmp_path / "old", flag_like_hess_dr1=True, layout="per-hdu")
    assert set(gammapy_reversed_lon(open_datastore(old)).values()) == {True}


def test_gammapy_opens_a_flagged_store(rotating_store: Path) -> None:
    data = require("gammapy.data")
    store = data.DataStore.from_dir(rotating_store)
    for header, events in runs(rotating_store):
        obs = store.obs(header["OBS_ID"], required_irf=["aeff"])
        assert len(obs.events.table) == len(events)
        pointing = obs.get_pointing_icrs(obs.tmid)
        assert pointing.ra.deg == pytest.approx(header["RA_PNT"])
        assert pointing.dec.deg == pytest.approx(header["DEC_PNT"])


def test_command_line_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["simulate", "--runs", "1", "--events-per-run", "300"]
    assert main([*args, str(tmp_path / "plain")]) == 0
    assert (
        main(
            [
                *args,
                str(tmp_path / "asym"),
                "--fov-gradient",
                "-0.05",
                "--camera-asymmetry",
                "0.02",
                "--flag-like-hess-dr1",
            ]
        )
        == 0
    )
    capsys.readouterr()
    (plain, _), (asym, _) = next(runs(tmp_path / "plain")), next(runs(tmp_path / "asym"))
    assert "SIMFOVG" not in plain
    assert plain["CREATOR"] == "xbkg.simulate"
    assert (asym["SIMFOVG"], asym["SIMFOVC"], asym["SIMFOVAL"]) == (-0.05, 0.02, "ALTAZ")
    assert asym["CREATOR"] == "SASH FITS::EventListWriter"
    assert main([*args, str(tmp_path / "bad"), "--fov-gradient", "-0.9"]) == 1
    assert "fov_gradient" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fov_gradient": -0.5}, "fov_gradient -0.5 and camera_asymmetry 0"),
        ({"camera_asymmetry": 0.4}, "offset_max"),
        ({"fov_gradient": float("nan")}, "fov_gradient .* finite"),
        ({"camera_asymmetry": "x"}, "camera_asymmetry .* finite"),
    ],
)
def test_bad_asymmetries_are_named(tmp_path: Path, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        simulate_datastore(tmp_path / "s", n_runs=1, events_per_run=10, **kwargs)
    assert not (tmp_path / "s").exists()


def test_truth_of_a_real_run_is_refused() -> None:
    with pytest.raises(ValueError, match=r"not a run simulated by xbkg\.simulate"):
        RunTruth.from_header({"CREATOR": "SASH FITS::EventListWriter"}, "obs_023523.fits.gz")

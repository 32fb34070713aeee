"""Tests of the simulated data stores: the truth model, the files, and the statistics."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from astropy import units as u
from astropy.coordinates import AltAz, EarthLocation, SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time
from astropy.utils import iers
from scipy import integrate

import xbkg.io.simstore as simstore
from conftest import require
from xbkg.axes import energy_edges, energy_width_mev, offset_edges, ring_solid_angle
from xbkg.simulate import simulate_datastore
from xbkg.truth import TRUTH_VERSION, expected_counts, true_binned_rate, true_rate

# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def read_index(store: Path, name: str) -> Table:
    return Table.read(store / name, hdu=1)


def event_file(store: Path, obs_id: int) -> Path:
    hdu_index = read_index(store, "hdu-index.fits.gz")
    row = hdu_index[(hdu_index["OBS_ID"] == obs_id) & (hdu_index["HDU_TYPE"] == "events")][0]
    return store / row["FILE_DIR"] / row["FILE_NAME"]


def offsets(events: fits.FITS_rec, header: fits.Header) -> np.ndarray:
    pointing = SkyCoord(header["RA_PNT"], header["DEC_PNT"], unit="deg")
    return SkyCoord(events["RA"], events["DEC"], unit="deg").separation(pointing).deg


def all_bytes(store: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default store, as the README's main command makes it."""
    return simulate_datastore(tmp_path_factory.mktemp("sim") / "store")


@pytest.fixture(scope="module")
def long_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[fits.FITS_rec, fits.Header]:
    """One long run (about 200,000 events) for the statistical tests."""
    path = simulate_datastore(
        tmp_path_factory.mktemp("sim") / "long",
        n_runs=1,
        livetime=40000.0,
        zenith_range=(20.0, 35.0),
        seed=7,
    )
    obs_id = int(read_index(path, "obs-index.fits.gz")["OBS_ID"][0])
    with fits.open(event_file(path, obs_id)) as hdus:
        return hdus["EVENTS"].data.copy(), hdus["EVENTS"].header.copy()


# --------------------------------------------------------------------------------------
# truth model
# --------------------------------------------------------------------------------------


def test_true_rate_is_physically_plausible() -> None:
    # H.E.S.S. DR1 bkg_3d templates: a few 1e-4 s-1 MeV-1 sr-1 at 1 TeV near the centre.
    for zenith in (20.0, 40.0):
        assert 1e-4 < true_rate(1.0, 0.0, zenith) < 1e-3
    rate_vs_offset = true_rate(1.0, np.linspace(0, 3, 31), 30.0)
    assert np.all(np.diff(rate_vs_offset) < 0)
    # power law of index 2.7 well above threshold
    slope = np.log(true_rate(20.0, 0.0, 20.0) / true_rate(10.0, 0.0, 20.0)) / np.log(2.0)
    assert slope == pytest.approx(-2.7 + 0.0, abs=0.02)
    # the low-energy turn-on moves up with zenith angle
    assert true_rate(0.2, 0.0, 55.0) < 0.05 * true_rate(0.2, 0.0, 20.0)
    # the field of view widens with energy
    ratio_low = true_rate(0.5, 2.0, 20.0) / true_rate(0.5, 0.0, 20.0)
    ratio_high = true_rate(20.0, 2.0, 20.0) / true_rate(20.0, 0.0, 20.0)
    assert ratio_low < ratio_high
    assert true_rate(1.0, 0.5, 30.0, muoneff=0.8) == pytest.approx(0.8 * true_rate(1.0, 0.5, 30.0))


def test_true_rate_broadcasts_dataarrays_by_name() -> None:
    energy = xr.DataArray([0.5, 1.0, 2.0], dims="energy")
    zenith = xr.DataArray([20.0, 50.0], dims="obs_id")
    rate = true_rate(energy, 0.3, zenith)
    assert isinstance(rate, xr.DataArray)
    assert set(rate.dims) == {"energy", "obs_id"}
    assert rate.attrs["units"] == "s-1 MeV-1 sr-1"
    assert rate.sel(obs_id=1).isel(energy=1) == pytest.approx(true_rate(1.0, 0.3, 50.0))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"energy": -1.0, "offset": 0.0, "zenith": 20.0},
        {"energy": 1.0, "offset": -0.1, "zenith": 20.0},
        {"energy": 1.0, "offset": 0.0, "zenith": 95.0},
        {"energy": 1.0, "offset": 0.0, "zenith": 20.0, "muoneff": 0.0},
    ],
)
def test_true_rate_rejects_unphysical_input(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must"):
        true_rate(**kwargs)


def test_expected_counts_equals_direct_integration() -> None:
    e, o = energy_edges(), offset_edges()
    zenith, livetime, muoneff = 35.0, 1000.0, 0.9
    counts = expected_counts(e, o, zenith, livetime, muoneff)
    for ie, io in [(0, 0), (2, 5), (3, 50), (10, 98), (14, 30)]:

        def integrand(theta: float, energy: float) -> float:
            solid = 2 * np.pi * np.sin(np.deg2rad(theta)) * np.deg2rad(1.0)
            return float(true_rate(energy, theta, zenith, muoneff)) * solid * 1e6  # TeV -> MeV

        value, _ = integrate.dblquad(
            integrand, e[ie], e[ie + 1], o[io], o[io + 1], epsabs=0, epsrel=1e-10
        )
        assert counts.values[ie, io] == pytest.approx(value * livetime, rel=1e-8)


def test_expected_counts_is_additive_over_bins() -> None:
    # Exact integrals: fine bins sum to the coarse bin that contains them.
    fine_e, fine_o = np.geomspace(0.1, 100.0, 61), np.linspace(0.0, 2.5, 41)
    fine = expected_counts(fine_e, fine_o, 45.0, 1500.0)
    coarse = expected_counts(fine_e[::4], fine_o[::8], 45.0, 1500.0)
    summed = fine.values.reshape(15, 4, 5, 8).sum(axis=(1, 3))
    np.testing.assert_allclose(summed, coarse.values, rtol=1e-10)


def test_expected_counts_labels_and_rate_relation() -> None:
    e, o = energy_edges(), offset_edges()
    counts = expected_counts(e, o, 30.0, 2000.0)
    assert counts.dims == ("energy", "offset")
    np.testing.assert_allclose(counts["energy_lo"], e[:-1])
    np.testing.assert_allclose(counts["offset_hi"], o[1:])
    rate = true_binned_rate(e, o, 30.0)
    assert rate.attrs["units"] == "s-1 MeV-1 sr-1"
    rebuilt = rate * 2000.0 * energy_width_mev(rate) * ring_solid_angle(rate)
    np.testing.assert_allclose(rebuilt.values, counts.values, rtol=1e-12)
    # a bin average of a smooth function lies close to its value at the bin centre
    centre = true_rate(counts["energy"], counts["offset"], 30.0)
    mid = rate.isel(energy=slice(6, 12))
    np.testing.assert_allclose(mid, centre.isel(energy=slice(6, 12)), rtol=0.05)


def test_expected_counts_along_runs() -> None:
    e, o = energy_edges(), offset_edges()
    zenith = xr.DataArray([20.0, 50.0], dims="obs_id", coords={"obs_id": [1, 2]})
    livetime = xr.DataArray([1000.0, 2000.0], dims="obs_id", coords={"obs_id": [1, 2]})
    counts = expected_counts(e, o, zenith, livetime)
    assert counts.dims == ("obs_id", "energy", "offset")
    np.testing.assert_allclose(
        counts.sel(obs_id=2).values, expected_counts(e, o, 50.0, 2000.0).values, rtol=1e-14
    )


# --------------------------------------------------------------------------------------
# the default store: indexes, files and headers
# --------------------------------------------------------------------------------------


def test_default_store_is_small(store: Path) -> None:
    size = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
    assert 0.5e6 < size < 3e6
    assert not any(p.name.startswith(".") for p in store.parent.iterdir())


def test_hdu_index_points_at_existing_hdus(store: Path) -> None:
    hdu_index = read_index(store, "hdu-index.fits.gz")
    obs_index = read_index(store, "obs-index.fits.gz")
    assert set(hdu_index["OBS_ID"]) == set(obs_index["OBS_ID"])
    for row in hdu_index:
        path = store / row["FILE_DIR"] / row["FILE_NAME"]
        assert path.is_file()
        assert row["HDU_NAME"] == row["HDU_NAME"].lower()  # DR1 style
        with fits.open(path) as hdus:
            hdu = hdus[row["HDU_NAME"].upper()]
            assert hdu.filebytes() == row["SIZE"]
    for obs_id in obs_index["OBS_ID"]:
        types = sorted(hdu_index["HDU_TYPE"][hdu_index["OBS_ID"] == obs_id])
        assert types == ["aeff", "events", "gti"]
    with fits.open(store / "hdu-index.fits.gz") as hdus:
        assert hdus[1].name == "HDU_INDEX"
        assert hdus[1].header["HDUCLAS2"] == "HDU"


def test_obs_index_is_consistent_with_event_files(store: Path) -> None:
    obs = read_index(store, "obs-index.fits.gz")
    assert len(np.unique(obs["OBS_ID"])) == len(obs) == 12
    assert np.all(np.diff(obs["OBS_ID"]) > 0)
    assert np.all(np.diff(obs["TSTART"]) > 0)
    assert np.all(obs["TSTART"][1:] > obs["TSTOP"][:-1])  # runs do not overlap
    assert str(obs["LIVETIME"].unit) == "s"
    assert str(obs["ZEN_PNT"].unit) == "deg"
    np.testing.assert_allclose(obs["ONTIME"] * obs["DEADC"], obs["LIVETIME"], rtol=1e-12)
    np.testing.assert_allclose(obs["TSTOP"] - obs["TSTART"], obs["ONTIME"], rtol=1e-9)
    np.testing.assert_allclose(obs["ZEN_PNT"] + obs["ALT_PNT"], 90.0)
    assert np.all((obs["DEADC"] > 0.88) & (obs["DEADC"] < 0.96))
    assert np.all(obs["SAFE_ENERGY_HI"] == 100.0)
    order = np.argsort(obs["ZEN_PNT"])
    assert np.all(np.diff(obs["SAFE_ENERGY_LO"][order]) > 0)
    for row in obs:
        with fits.open(event_file(store, row["OBS_ID"])) as hdus:
            header, events = hdus["EVENTS"].header, hdus["EVENTS"].data
            gti = hdus["GTI"].data
        assert len(events) == row["EVENT_COUNT"]
        for key in ("RA_PNT", "DEC_PNT", "ALT_PNT", "LIVETIME", "ONTIME", "TSTART", "MUONEFF"):
            assert header[key] == pytest.approx(row[key], rel=1e-12)
        assert header["SIMTRUTH"] == TRUTH_VERSION
        assert header["SIMNBKG"] == len(events)
        assert "DATE" not in header
        assert np.all(np.diff(events["TIME"]) >= 0)
        assert gti["START"][0] <= events["TIME"].min()
        assert events["TIME"].max() <= gti["STOP"][0]
        formats = {c.name: c.format for c in events.columns}
        assert formats == {"EVENT_ID": "K", "TIME": "D", "RA": "E", "DEC": "E", "ENERGY": "E"}
        assert np.all((events["ENERGY"] >= 0.05) & (events["ENERGY"] <= 200.0))
        assert offsets(events, header).max() <= 3.0 + 1e-4
        # safe threshold above the background turn-on: the rate peaks below it
        peak = energy_edges(0.05, 10.0, 200)
        rate = true_rate(peak, 0.0, row["ZEN_PNT"])
        assert peak[np.argmax(rate)] < row["SAFE_ENERGY_LO"] < 1.5 * peak[np.argmax(rate)]


def test_default_store_suits_the_default_grouping(store: Path) -> None:
    obs = read_index(store, "obs-index.fits.gz")
    # zenith edges [0, 49, 90]: several runs in each group
    assert np.sum(obs["ZEN_PNT"] < 49) >= 3
    assert np.sum(obs["ZEN_PNT"] >= 49) >= 3
    assert np.all((obs["ZEN_PNT"] >= 10) & (obs["ZEN_PNT"] <= 60))
    # fields away from the Galactic plane and on it
    assert np.sum(np.abs(obs["GLAT_PNT"]) > 10) >= 3
    assert np.sum(np.abs(obs["GLAT_PNT"]) < 3) >= 3


def test_pointing_altaz_agrees_with_astropy(store: Path) -> None:
    obs = read_index(store, "obs-index.fits.gz")
    header = fits.getheader(store / "obs-index.fits.gz", 1)
    site = EarthLocation(
        lon=header["GEOLON"] * u.deg, lat=header["GEOLAT"] * u.deg, height=header["ALTITUDE"] * u.m
    )
    reference = Time(header["MJDREFI"] + header["MJDREFF"], format="mjd", scale="tt")
    mid = reference + 0.5 * (obs["TSTART"].quantity + obs["TSTOP"].quantity)
    with iers.conf.set_temp("auto_download", False):
        altaz = SkyCoord(obs["RA_PNT"], obs["DEC_PNT"], unit="deg").transform_to(
            AltAz(obstime=mid, location=site)
        )
    # the simulation uses mean sidereal time without precession or refraction
    np.testing.assert_allclose(altaz.alt.deg, obs["ALT_PNT"], atol=0.3)
    daz = (altaz.az.deg - obs["AZ_PNT"] + 180.0) % 360.0 - 180.0
    assert np.all(np.abs(daz) * np.cos(np.deg2rad(altaz.alt.deg)) < 0.3)
    local_hour = (mid.mjd + header["GEOLON"] / 360.0) % 1.0 * 24.0
    assert np.all((local_hour > 19.5) | (local_hour < 4.5))  # at night


def test_same_arguments_give_same_bytes(tmp_path: Path) -> None:
    first = simulate_datastore(tmp_path / "a", n_runs=3, seed=5)
    second = simulate_datastore(tmp_path / "b", n_runs=3, seed=5)
    other = simulate_datastore(tmp_path / "c", n_runs=3, seed=6)
    files = all_bytes(first)
    assert files == all_bytes(second)
    assert files["obs-index.fits.gz"] != all_bytes(other)["obs-index.fits.gz"]


# --------------------------------------------------------------------------------------
# statistics: events follow the truth
# --------------------------------------------------------------------------------------


def test_event_histogram_matches_expected_counts(
    long_run: tuple[fits.FITS_rec, fits.Header],
) -> None:
    events, header = long_run
    e, o = energy_edges(0.1, 100.0, 30), offset_edges(2.5, 26)
    counts, _, _ = np.histogram2d(events["ENERGY"], offsets(events, header), bins=[e, o])
    mu = expected_counts(e, o, header["SIMZEN"], header["LIVETIME"], header["MUONEFF"]).values
    used = mu >= 25
    assert used.sum() > 350
    pulls = (counts[used] - mu[used]) / np.sqrt(mu[used])
    assert abs(pulls.mean()) < 0.1
    assert abs(pulls.std() - 1.0) < 0.1
    # and nothing is lost in the bins with few counts
    assert counts[~used].sum() == pytest.approx(mu[~used].sum(), abs=4 * np.sqrt(mu[~used].sum()))
    # and the total number of events in the whole simulated range
    total = expected_counts([0.05, 200.0], [0.0, 3.0], header["SIMZEN"], header["LIVETIME"])
    expected_total = float(total.values.sum()) * header["MUONEFF"]
    assert abs(len(events) - expected_total) < 4 * np.sqrt(expected_total)


def test_offsets_follow_the_radial_acceptance(
    long_run: tuple[fits.FITS_rec, fits.Header],
) -> None:
    events, header = long_run
    o = offset_edges(3.0, 31)
    counts, _ = np.histogram(offsets(events, header), bins=o)
    mu = expected_counts([0.05, 200.0], o, header["SIMZEN"], header["LIVETIME"], header["MUONEFF"])
    mu = mu.values[0]
    chi2 = np.sum((counts - mu) ** 2 / mu)
    assert chi2 < 30 + 5 * np.sqrt(2 * 30)
    # equal-area rings: the acceptance falls, so the counts fall too
    assert counts[0] > 2 * counts[-1]


def test_events_per_run_sets_exact_counts_and_livetime(tmp_path: Path) -> None:
    store = simulate_datastore(tmp_path / "s", n_runs=2, events_per_run=[1000, 2500])
    obs = read_index(store, "obs-index.fits.gz")
    np.testing.assert_array_equal(obs["EVENT_COUNT"], [1000, 2500])
    for row in obs:
        expected = expected_counts(
            [0.05, 200.0], [0.0, 3.0], row["ZEN_PNT"], row["LIVETIME"], row["MUONEFF"]
        )
        assert float(expected.sum()) == pytest.approx(row["EVENT_COUNT"], rel=1e-9)


# --------------------------------------------------------------------------------------
# interoperability and variants
# --------------------------------------------------------------------------------------


def test_gammapy_reads_the_store(store: Path, tmp_path: Path) -> None:
    gammapy_data = require("gammapy.data")
    point_like = simulate_datastore(tmp_path / "s", n_runs=2, point_like=True)
    for path, irfs in [(store, ["aeff"]), (point_like, ["aeff", "rad_max"])]:
        data_store = gammapy_data.DataStore.from_dir(path)
        for row in read_index(path, "obs-index.fits.gz"):
            obs = data_store.obs(int(row["OBS_ID"]), required_irf=irfs)
            assert len(obs.events.table) == row["EVENT_COUNT"]
            assert obs.events.energy.unit == u.TeV
            live = obs.observation_live_time_duration.to_value("s")
            assert live == pytest.approx(row["LIVETIME"])
            pointing = obs.get_pointing_icrs(obs.tmid)
            assert pointing.ra.deg == pytest.approx(row["RA_PNT"])
            assert pointing.dec.deg == pytest.approx(row["DEC_PNT"])
            assert obs.aeff.is_pointlike == ("rad_max" in irfs)
            if "rad_max" in irfs:
                assert obs.rad_max.quantity.unit == u.deg


def test_missing_columns_are_left_out(tmp_path: Path) -> None:
    missing = ("ZEN_PNT", "SAFE_ENERGY_LO", "MUONEFF", "LIVETIME")
    store = simulate_datastore(tmp_path / "s", n_runs=2, missing_columns=missing)
    columns = read_index(store, "obs-index.fits.gz").colnames
    assert not set(missing) & set(columns)
    assert {"OBS_ID", "ONTIME", "ALT_PNT", "EVENT_COUNT"} <= set(columns)
    with pytest.raises(ValueError, match="NOT_A_COLUMN"):
        simulate_datastore(tmp_path / "t", n_runs=1, missing_columns=("NOT_A_COLUMN",))


def test_per_hdu_layout_like_the_tutorial_store(tmp_path: Path) -> None:
    store = simulate_datastore(tmp_path / "s", n_runs=2, layout="per-hdu", point_like=True)
    raw = gzip.decompress((store / "hdu-index.fits.gz").read_bytes())
    # NUL-padded strings, as in the Gammapy 0.6 tutorial store
    assert b"EVENTS\x00" in raw
    assert b"GTI\x00" in raw
    hdu_index = read_index(store, "hdu-index.fits.gz")
    assert "rad_max" in set(hdu_index["HDU_TYPE"])
    for row in hdu_index:
        assert row["HDU_NAME"] == row["HDU_NAME"].upper()
        obs_id = int(row["OBS_ID"])
        first = obs_id // 200 * 200
        assert row["FILE_DIR"] == f"run{first:06d}-{first + 199:06d}/run{obs_id:06d}"
        path = store / row["FILE_DIR"] / row["FILE_NAME"]
        data = path.read_bytes()
        assert row["SIZE"] == len(data)
        assert row["MD5"] == hashlib.md5(data).hexdigest()
        with fits.open(path) as hdus:
            assert row["HDU_NAME"] in hdus
            if row["HDU_TYPE"] == "events":
                events = hdus["EVENTS"]
                assert all(c.unit is None for c in events.columns)
                assert events.header["EUNIT"] == "TeV"
                assert len(events.data) > 0


def test_point_like_irfs(tmp_path: Path) -> None:
    store = simulate_datastore(tmp_path / "s", n_runs=1, point_like=True)
    hdu_index = read_index(store, "hdu-index.fits.gz")
    row = hdu_index[hdu_index["HDU_TYPE"] == "rad_max"][0]
    assert row["HDU_CLASS"] == "rad_max_2d"
    with fits.open(store / row["FILE_DIR"] / row["FILE_NAME"]) as hdus:
        assert hdus[row["HDU_NAME"].upper()].header["HDUCLAS4"] == "RAD_MAX_2D"
        assert hdus["AEFF"].header["HDUCLAS3"] == "POINT-LIKE"


def test_other_telescopes(tmp_path: Path) -> None:
    store = simulate_datastore(tmp_path / "s", n_runs=2, telescope="VERITAS")
    header = fits.getheader(store / "obs-index.fits.gz", 1)
    assert header["TELESCOP"] == "VERITAS"
    assert header["GEOLAT"] == pytest.approx(31.675)
    with pytest.raises(ValueError, match="unknown telescope"):
        simulate_datastore(tmp_path / "t", telescope="FERMI")


def test_injected_sources_appear_at_their_position(tmp_path: Path) -> None:
    crab = (83.633, 22.014, 0.0, 600)
    store = simulate_datastore(tmp_path / "s", n_runs=4, sources=[crab])
    obs = read_index(store, "obs-index.fits.gz")
    source = SkyCoord(crab[0], crab[1], unit="deg")
    n_on_source = 0
    for row in obs:
        with fits.open(event_file(store, row["OBS_ID"])) as hdus:
            events, header = hdus["EVENTS"].data, hdus["EVENTS"].header
        pointing = SkyCoord(row["RA_PNT"], row["DEC_PNT"], unit="deg")
        if row["OBJECT"] != "Source 1":
            assert header["SIMNSRC"] == 0
            continue
        n_on_source += 1
        assert pointing.separation(source).deg == pytest.approx(0.7, abs=1e-6)
        assert header["SIMNSRC"] == crab[3]
        assert len(events) == header["SIMNBKG"] + header["SIMNSRC"]
        # On region at the source against the reflected region at the same offset.
        reflected = pointing.directional_offset_by(
            pointing.position_angle(source) + 180 * u.deg, pointing.separation(source)
        )
        coords = SkyCoord(events["RA"], events["DEC"], unit="deg")
        n_on = np.sum(coords.separation(source).deg < 0.25)
        n_off = np.sum(coords.separation(reflected).deg < 0.25)
        # 0.25 deg holds 1 - exp(-0.25**2 / (2 * 0.07**2)) = 99.8 % of the source events
        excess = n_on - n_off
        assert abs(excess - 0.998 * crab[3]) < 5 * np.sqrt(n_on + n_off)
    assert n_on_source == 2


def test_source_that_never_rises_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="never rise"):
        simulate_datastore(tmp_path / "s", n_runs=2, sources=[(10.0, 80.0, 0.1, 100)])


# --------------------------------------------------------------------------------------
# safety
# --------------------------------------------------------------------------------------


def test_refuses_to_write_into_a_non_empty_folder(tmp_path: Path) -> None:
    target = tmp_path / "busy"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="busy"):
        simulate_datastore(target, n_runs=1)
    # not even with overwrite: the folder does not hold a data store
    with pytest.raises(FileExistsError, match="not a data store"):
        simulate_datastore(target, n_runs=1, overwrite=True)
    assert (target / "notes.txt").read_text() == "keep me"


def test_overwrite_replaces_an_earlier_store(tmp_path: Path) -> None:
    target = tmp_path / "store"
    simulate_datastore(target, n_runs=2, seed=1)
    with pytest.raises(FileExistsError, match="overwrite"):
        simulate_datastore(target, n_runs=1, seed=2)
    simulate_datastore(target, n_runs=1, seed=2, overwrite=True)
    assert len(read_index(target, "obs-index.fits.gz")) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]
    # an existing empty folder is fine
    (tmp_path / "empty").mkdir()
    simulate_datastore(tmp_path / "empty", n_runs=1)


def test_failure_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real_write = simstore.write_fits

    def failing_write(*args: object, **kwargs: object) -> Path:
        calls.append(args)
        if len(calls) == 3:
            raise OSError("disk full")
        return real_write(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(simstore, "write_fits", failing_write)
    with pytest.raises(OSError, match="disk full"):
        simulate_datastore(tmp_path / "store", n_runs=4)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_runs": 0}, "n_runs"),
        ({"livetime": 100.0, "events_per_run": 10}, "not both"),
        ({"livetime": [1.0, 2.0, 3.0]}, "livetime"),
        ({"layout": "flat"}, "layout"),
        ({"zenith_range": (50.0, 20.0)}, "zenith_range"),
        ({"sources": [(1.0, 2.0, 3.0)]}, "source"),
    ],
)
def test_bad_arguments_are_named(tmp_path: Path, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        simulate_datastore(tmp_path / "s", **kwargs)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []

"""Field-of-view (``bkg_3d``) models: data model, GADF files, and their orientation in Gammapy.

The orientation is checked where it matters, through Gammapy 2.1: a model with a
known asymmetry (brighter towards positive ``fov_lon``, i.e. West of the pointing
in RADEC, and towards negative ``fov_lat``, South) is written, read with
``Background3D.read``, then used by ``MapDatasetMaker`` on the runs of a
simulated store, once in the plain GADF convention and once flagged like the
H.E.S.S. DL3 DR1 release (whose runs Gammapy reads with ``fov_lon`` reversed).
The expected map is computed independently, with astropy's offset frame and the
GADF sign of ``fov_lon``; a model mirrored on purpose fails the same check.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from astropy.io import fits

from conftest import require
from xbkg import axes, conventions, simulate
from xbkg.errors import ConfigError, DataStoreError
from xbkg.io.datastore import (
    gammapy_reversed_lon,
    hdu_location,
    open_datastore,
    write_index,
)
from xbkg.io.fitsfile import fits_bytes
from xbkg.io.gadf import bkg_3d_hdu, read_bkg, write_bkg_3d, write_bkg_3d_files
from xbkg.io.hdu_index import make_hdu_index, make_obs_index

DIMS = ("energy", "fov_lon", "fov_lat")
#: The known asymmetry: rate ~ E**-INDEX * exp(LON_SLOPE * fov_lon + LAT_SLOPE * fov_lat).
#: Gammapy interpolates log(rate) linearly in fov_lon and fov_lat and integrates
#: log-log in energy, so it reproduces this model exactly between bin centres.
NORM, INDEX, LON_SLOPE, LAT_SLOPE = 1e-6, 2.7, 0.3, -0.15
FLAGGED = {"CREATOR": "SASH FITS::EventListWriter", "HDUVERS": "0.2"}


def known_rate(energy, lon, lat):
    """The true rate (s-1 MeV-1 sr-1) at energy (TeV) and GADF field-of-view coordinates (deg)."""
    return NORM * energy**-INDEX * np.exp(LON_SLOPE * lon + LAT_SLOPE * lat)


def asymmetric_model(
    align="RADEC", n_energy=12, lon=(-3.0, 3.0, 30), lat=(-3.0, 3.0, 24)
) -> xr.DataArray:
    """The known rate sampled at bin centres, on (energy, fov_lon, fov_lat) with edges."""
    coords = {
        k: v
        for k, v in axes.binned_coords(np.geomspace(0.1, 100.0, n_energy + 1)).items()
        if k.startswith("energy")
    }
    coords.update(axes.fov_coords(np.linspace(*lon), np.linspace(*lat)))
    e, x, y = (coords[d].values for d in DIMS)
    values = known_rate(e[:, None, None], x[None, :, None], y[None, None, :])
    return xr.DataArray(
        values,
        dims=DIMS,
        coords=coords,
        attrs={"units": conventions.RATE_UNIT, "FOVALIGN": align},
    )


def without_attrs(rate: xr.DataArray) -> xr.DataArray:
    out = rate.copy()
    out.attrs = {}
    return out.rename(None)


def as_stored(rate: xr.DataArray) -> xr.DataArray:
    """``rate`` as a bkg_3d file holds it: the values rounded to float32."""
    return rate.copy(data=rate.values.astype(np.float32).astype(np.float64))


# --------------------------------------------------------------------------- data model, files


def test_fov_coords_carry_edges():
    coords = axes.fov_coords(np.array([-1.0, 0.5, 2.0]))
    np.testing.assert_array_equal(coords["fov_lon_lo"].values, [-1.0, 0.5])
    np.testing.assert_array_equal(coords["fov_lon_hi"].values, [0.5, 2.0])
    np.testing.assert_array_equal(coords["fov_lon"].values, [-0.25, 1.25])
    np.testing.assert_array_equal(
        axes.edges(xr.Dataset(coords=coords), "fov_lat"), axes.fov_edges()
    )
    assert coords["fov_lat"].attrs["units"] == "deg"
    assert axes.fov_edges().size == conventions.DEFAULT_FOV_BINS + 1
    with pytest.raises(ConfigError, match="fov_lon edges must be strictly increasing"):
        axes.fov_coords([0.0, -1.0])
    with pytest.raises(ConfigError, match="half_width"):
        axes.fov_edges(-1.0)


@pytest.mark.parametrize("reverse_lon", [False, True])
@pytest.mark.parametrize("n_energy", [12, 24])  # 24 = n_fov_lat: the layout Gammapy writes
def test_round_trip(tmp_path, reverse_lon, n_energy):
    rate = asymmetric_model(n_energy=n_energy)
    # any dimension order is accepted; the file is read back in (energy, fov_lon, fov_lat)
    path = write_bkg_3d(
        rate.transpose("fov_lat", "energy", "fov_lon"),
        tmp_path / "bkg.fits.gz",
        reverse_lon=reverse_lon,
        header={"OBS_ID": 7, "BKGTIME": ("ONTIME", "rate per observation time")},
    )
    back = read_bkg(path)
    xr.testing.assert_identical(without_attrs(back), without_attrs(as_stored(rate)))
    assert back.dims == DIMS
    assert back.attrs["FOVALIGN"] == "RADEC"
    assert back.attrs["HDUCLAS4"] == "BKG_3D"
    assert back.attrs["OBS_ID"] == 7
    assert conventions.REVERSED_LON_KEYWORD not in back.attrs
    header = fits.getheader(path, "BACKGROUND")
    assert header["REVLON"] is reverse_lon
    assert header["FOVALIGN"] == "RADEC"
    for key, value in conventions.BKG_3D_HDUCLAS.items():
        assert header[key] == value
    stored = fits.getdata(path, "BACKGROUND")
    detx = np.append(stored["DETX_LO"][0], stored["DETX_HI"][0][-1])
    lon = axes.edges(rate, "fov_lon")
    np.testing.assert_array_equal(detx, -lon[::-1] if reverse_lon else lon)
    # the same inputs give the same bytes
    again = write_bkg_3d(
        rate,
        tmp_path / "again.fits.gz",
        reverse_lon=reverse_lon,
        header={"OBS_ID": 7, "BKGTIME": ("ONTIME", "rate per observation time")},
    )
    assert again.read_bytes() == path.read_bytes()


def test_altaz_round_trip_and_units(tmp_path):
    rate = asymmetric_model("ALTAZ")
    per_tev = rate * 1e6
    per_tev.attrs = {**rate.attrs, "units": "s-1 TeV-1 sr-1"}
    path = write_bkg_3d(per_tev, tmp_path / "altaz.fits")
    back = read_bkg(path)
    assert back.attrs["FOVALIGN"] == "ALTAZ"
    xr.testing.assert_allclose(without_attrs(back), without_attrs(rate), rtol=1e-7)


def test_per_run_files_are_what_write_bkg_3d_writes(tmp_path):
    one = asymmetric_model()
    rates = xr.concat([one, 2.0 * one], dim=xr.DataArray([11, 12], dims="obs_id", name="obs_id"))
    rates.attrs = one.attrs
    headers = [{"OBS_ID": 11}, {"OBS_ID": 12}]
    paths = [tmp_path / "a.fits.gz", tmp_path / "b.fits.gz"]
    written = write_bkg_3d_files(rates, "obs_id", paths, headers, reverse_lon=[False, True])
    assert written == paths
    for i, flag in enumerate([False, True]):
        reference = fits.HDUList(
            [
                fits.PrimaryHDU(),
                bkg_3d_hdu(rates.isel(obs_id=i), reverse_lon=flag, header=headers[i]),
            ]
        )
        assert paths[i].read_bytes() == fits_bytes(reference, compress=True)
        single = write_bkg_3d(
            rates.isel(obs_id=i),
            tmp_path / f"single{i}.fits.gz",
            reverse_lon=flag,
            header=headers[i],
        )
        assert single.read_bytes() == paths[i].read_bytes()
        back = read_bkg(paths[i])
        xr.testing.assert_identical(
            without_attrs(back), without_attrs(as_stored(rates.isel(obs_id=i, drop=True)))
        )
    with pytest.raises(ValueError, match="one path, one header and one reverse_lon"):
        write_bkg_3d_files(rates, "obs_id", paths[:1], headers, overwrite=True)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.assign_attrs(FOVALIGN="GALACTIC"), "GADF knows"),
        (lambda r: r.drop_attrs(deep=False).assign_attrs(units=conventions.RATE_UNIT), "FOVALIGN"),
        (lambda r: r.drop_vars("fov_lat_hi"), "no bin edges"),
        (lambda r: r.isel(fov_lat=0), "exactly the dimensions"),
        (lambda r: r.where(r.fov_lon < 2.5), "non-finite"),
        (lambda r: r.assign_attrs(units="m"), "cannot be converted"),
    ],
)
def test_writer_refuses_unusable_models(tmp_path, change, message):
    path = tmp_path / "bad.fits"
    with pytest.raises(ValueError, match=message):
        write_bkg_3d(change(asymmetric_model()), path)
    assert not path.exists()


def test_writer_refuses_keywords_it_sets_and_altaz_reversed(tmp_path):
    rate = asymmetric_model()
    for key in ("FOVALIGN", "REVLON", "CREF7", "TDIM7"):
        with pytest.raises(ValueError, match="set by the writer"):
            bkg_3d_hdu(rate, header={key: "x"})
    with pytest.raises(ConfigError, match="reverse_lon is for RADEC models"):
        write_bkg_3d(asymmetric_model("ALTAZ"), tmp_path / "x.fits", reverse_lon=True)
    assert not (tmp_path / "x.fits").exists()


def test_reader_refuses_a_reversed_altaz_file(tmp_path):
    path = write_bkg_3d(asymmetric_model("ALTAZ"), tmp_path / "altaz.fits")
    with fits.open(path, mode="update") as hdulist:
        hdulist[1].header["REVLON"] = True
    with pytest.raises(DataStoreError, match="FOVALIGN = 'ALTAZ' with a reversed fov_lon"):
        read_bkg(path)
    # the caller can say how to take it
    assert read_bkg(path, reverse_lon=False).attrs["FOVALIGN"] == "ALTAZ"


# --------------------------------------------------------------------------- Gammapy reads them


@pytest.mark.parametrize("align", ["RADEC", "ALTAZ"])
@pytest.mark.parametrize("n_energy", [12, 24])
def test_gammapy_evaluates_our_values(tmp_path, align, n_energy):
    """Background3D.read gives our rate at every (energy, fov_lon, fov_lat) bin centre."""
    require("gammapy")
    import astropy.units as u
    from gammapy.irf import Background3D

    rate = asymmetric_model(align, n_energy=n_energy)
    path = write_bkg_3d(rate, tmp_path / "bkg.fits")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Gammapy logs the ambiguous 24 x 24 layout
        bkg = Background3D.read(path, hdu="BACKGROUND")
    assert bkg.fov_alignment.value == align
    assert [ax.name for ax in bkg.axes] == list(DIMS)
    e, x, y = (rate[d].values for d in DIMS)
    values = bkg.evaluate(
        energy=e[:, None, None] * u.TeV,
        fov_lon=x[None, :, None] * u.deg,
        fov_lat=y[None, None, :] * u.deg,
    )
    # float32 cells, which Gammapy interpolates in float32 (one part in 1e6)
    stored = as_stored(rate).values
    np.testing.assert_allclose(values.to_value(conventions.RATE_UNIT), stored, rtol=1e-5)
    # and between the centres, the known rate (log-linear in fov_lon and fov_lat)
    probe = bkg.evaluate(energy=1.0 * u.TeV, fov_lon=1.23 * u.deg, fov_lat=-0.77 * u.deg)
    np.testing.assert_allclose(
        probe.to_value(conventions.RATE_UNIT), known_rate(1.0, 1.23, -0.77), rtol=1e-3
    )


# --------------------------------------------------------------------------- end to end


def simulated_store(path: Path, flagged: bool) -> Path:
    """One simulated run; its EVENTS header flagged like H.E.S.S. DR1 if ``flagged``."""
    simulate.simulate_datastore(path, n_runs=1, events_per_run=200, seed=3)
    if flagged:
        store = open_datastore(path)
        events, hdu = hdu_location(store, int(store.obs_ids[0]))
        with fits.open(events) as hdulist:
            hdulist[hdu].header.update(FLAGGED)
            hdulist.writeto(events.with_suffix(".tmp"), output_verify="ignore")
        events.with_suffix(".tmp").replace(events)
    return path


def model_store(store_dir: Path, out_dir: Path, model: xr.DataArray, reverse_lon: bool) -> int:
    """An output store: the runs of ``store_dir`` with ``model`` as their bkg_3d rows."""
    store = open_datastore(store_dir)
    obs_id = int(store.obs_ids[0])
    name = conventions.run_model_filename(obs_id)
    write_bkg_3d(model, out_dir / name, reverse_lon=reverse_lon, header={"OBS_ID": obs_id})
    index = make_hdu_index(store, out_dir, {obs_id: name}, hdu_class="bkg_3d")
    write_index(index, out_dir / conventions.HDU_INDEX_FILE, "HDU_INDEX")
    write_index(make_obs_index(store), out_dir / conventions.OBS_INDEX_FILE, "OBS_INDEX")
    return obs_id


def gammapy_background(out_dir: Path, obs_id: int):
    """Gammapy 2.1's background map of the run, the run's observation, and the map geometry."""
    data = require("gammapy.data")
    datasets = require("gammapy.datasets")
    makers = require("gammapy.makers")
    maps = require("gammapy.maps")
    from gammapy.irf import Background3D

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        obs = data.DataStore.from_dir(out_dir).obs(obs_id, required_irf="all-optional")
        assert isinstance(obs.bkg, Background3D)
        energy = maps.MapAxis.from_edges([0.5, 1.0, 5.0], unit="TeV", name="energy", interp="log")
        geom = maps.WcsGeom.create(
            skydir=obs.get_pointing_icrs(obs.tmid), width=4.4, binsz=0.1, axes=[energy]
        )
        maker = makers.MapDatasetMaker(selection=["background"])
        dataset = maker.run(datasets.MapDataset.create(geom), obs)
    return dataset.background, obs


def expected_background(obs, geom) -> np.ndarray:
    """Counts of the known rate in each pixel: astropy's offset frame with the GADF sign.

    GADF RADEC: fov_lat towards North, fov_lon towards lower RA (West), i.e. minus the
    longitude of astropy's SkyOffsetFrame centred on the pointing.
    """
    from astropy.coordinates import SkyOffsetFrame

    pointing = obs.get_pointing_icrs(obs.tmid)
    sky = geom.to_image().get_coord().skycoord
    offset = sky.transform_to(SkyOffsetFrame(origin=pointing))
    lon, lat = -offset.lon.wrap_at("180d").deg, offset.lat.deg
    e = geom.axes["energy"].edges.to_value("TeV")
    # integral of E**-INDEX over each bin, E in TeV, rate per MeV
    spectrum = (e[:-1] ** (1 - INDEX) - e[1:] ** (1 - INDEX)) / (INDEX - 1) * 1e6
    spatial = np.exp(LON_SLOPE * lon + LAT_SLOPE * lat)
    solid_angle = geom.to_image().solid_angle().to_value("sr")
    time = obs.observation_time_duration.to_value("s")
    return NORM * spectrum[:, None, None] * (spatial * solid_angle)[None] * time


def orientation_problems(background, obs) -> list[str]:
    """What is wrong with Gammapy's map of the known model (empty if it is right)."""
    geom = background.geom
    expected = expected_background(obs, geom)
    ratio = background.data / expected
    offset = geom.to_image().separation(obs.get_pointing_icrs(obs.tmid)).deg
    inside = offset < 2.0
    problems = []
    worst = float(np.max(np.abs(ratio[:, inside] - 1)))
    # Gammapy reproduces the known rate exactly (measured: 1e-14), see known_rate.
    if worst > 1e-6:
        problems.append(f"map/expected off by up to {worst:.3f} within 2 deg")
    # The sky sides, as a user would look at the map: the model is brighter at
    # positive fov_lon (West, lower RA) and at negative fov_lat (South).
    sky = geom.to_image().get_coord().skycoord
    pointing = obs.get_pointing_icrs(obs.tmid)
    east = (sky.ra - pointing.ra).wrap_at("180d").deg > 0.2
    west = (sky.ra - pointing.ra).wrap_at("180d").deg < -0.2
    north, south = sky.dec.deg > pointing.dec.deg + 0.2, sky.dec.deg < pointing.dec.deg - 0.2
    image = background.data.sum(axis=0)
    if not image[west & inside].sum() > 1.2 * image[east & inside].sum():
        problems.append("the map is not brighter West of the pointing (positive fov_lon)")
    if not image[south & inside].sum() > 1.1 * image[north & inside].sum():
        problems.append("the map is not brighter South of the pointing (negative fov_lat)")
    return problems


@pytest.mark.parametrize("flagged", [False, True], ids=["gadf-store", "dr1-like-store"])
def test_orientation_in_gammapy_maps(tmp_path, flagged):
    """Written as the store needs, the model's map in Gammapy is right; mirrored, it is not."""
    require("gammapy")
    store_dir = simulated_store(tmp_path / "store", flagged)
    store = open_datastore(store_dir)
    reverse = gammapy_reversed_lon(store)
    assert reverse == {int(store.obs_ids[0]): flagged}

    model = asymmetric_model("RADEC")
    out = tmp_path / "right"
    obs_id = model_store(store_dir, out, model, reverse_lon=reverse[int(store.obs_ids[0])])
    background, obs = gammapy_background(out, obs_id)
    # what our detection says is what Gammapy does
    assert (obs.bkg.fov_alignment.value == "REVERSE_LON_RADEC") is flagged
    assert orientation_problems(background, obs) == []

    # The same model written the other way round (the mirror image in Gammapy's eyes) fails.
    wrong = tmp_path / "mirrored"
    model_store(store_dir, wrong, model, reverse_lon=not reverse[obs_id])
    background, obs = gammapy_background(wrong, obs_id)
    problems = orientation_problems(background, obs)
    assert any("off by" in p for p in problems)
    assert any("West" in p for p in problems)
    assert not any("South" in p for p in problems)  # mirrored in fov_lon only

    # So does a model with fov_lon and fov_lat swapped (turned and mirrored).
    swapped = model.rename(
        {"fov_lon": "fov_lat", "fov_lat": "fov_lon"}
        | {f"fov_lon_{s}": f"fov_lat_{s}" for s in ("lo", "hi")}
        | {f"fov_lat_{s}": f"fov_lon_{s}" for s in ("lo", "hi")}
    )
    model_store(store_dir, tmp_path / "swapped", swapped, reverse_lon=reverse[obs_id])
    background, obs = gammapy_background(tmp_path / "swapped", obs_id)
    assert any("off by" in p for p in orientation_problems(background, obs))

    # read back, both files give the same model: read_bkg undoes what the writer did
    for folder in (out, wrong):
        back = read_bkg(folder / conventions.run_model_filename(obs_id))
        xr.testing.assert_identical(without_attrs(back), without_attrs(as_stored(model)))


def test_altaz_models_are_read_as_radec_on_flagged_stores(tmp_path):
    """The trap, as Gammapy 2.1 springs it: FOVALIGN = ALTAZ is overridden on DR1-like runs."""
    require("gammapy")
    from gammapy.data import DataStore

    for flagged in (False, True):
        store_dir = simulated_store(tmp_path / f"store{flagged}", flagged)
        out = tmp_path / f"out{flagged}"
        obs_id = model_store(store_dir, out, asymmetric_model("ALTAZ"), reverse_lon=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obs = DataStore.from_dir(out).obs(obs_id, required_irf="all-optional")
            align = obs.bkg.fov_alignment.value
        assert align == ("REVERSE_LON_RADEC" if flagged else "ALTAZ")
        assert gammapy_reversed_lon(open_datastore(store_dir))[obs_id] is flagged


def test_flag_needs_the_exact_values(tmp_path):
    """HDUVERS 0.2 as a number, or another CREATOR, is not what Gammapy looks for."""
    store_dir = simulated_store(tmp_path / "store", flagged=True)
    store = open_datastore(store_dir)
    obs_id = int(store.obs_ids[0])
    assert gammapy_reversed_lon(store, [obs_id]) == {obs_id: True}
    events, hdu = hdu_location(store, obs_id)
    for key, value in (("HDUVERS", 0.2), ("CREATOR", "SASH FITS::EventListWriter v2")):
        with fits.open(events) as hdulist:
            hdulist[hdu].header.update(FLAGGED)
            hdulist[hdu].header[key] = value
            hdulist.writeto(tmp_path / "tmp.fits.gz", output_verify="ignore", overwrite=True)
        shutil.copyfile(tmp_path / "tmp.fits.gz", events)
        assert gammapy_reversed_lon(open_datastore(store_dir)) == {obs_id: False}


def test_flag_of_a_run_without_events_row(tmp_path):
    store_dir = simulated_store(tmp_path / "store", flagged=False)
    with pytest.raises(DataStoreError, match="no 'events' HDU listed for OBS_ID 1"):
        gammapy_reversed_lon(open_datastore(store_dir), [1])


def test_hdu_index_refuses_unknown_classes(tmp_path):
    store = open_datastore(simulated_store(tmp_path / "store", flagged=False))
    obs_id = int(store.obs_ids[0])
    with pytest.raises(ConfigError, match="hdu_class must be one of"):
        make_hdu_index(store, tmp_path, {obs_id: "model.fits"}, hdu_class="bkg_4d")


# --------------------------------------------------------------------------- H.E.S.S. DR1


def test_dr1_runs_are_flagged_and_their_templates_read_as_gammapy_uses_them(dr1_dir):
    """Every DR1 run is flagged; read_bkg gives the template the way Gammapy evaluates it."""
    require("gammapy")
    import astropy.units as u
    from gammapy.data import DataStore

    store = open_datastore(dr1_dir)
    flags = gammapy_reversed_lon(store)
    assert len(flags) == 105
    assert all(flags.values())

    obs_id = 20136
    path, hdu = hdu_location(store, obs_id, "bkg")
    ours = read_bkg(path, hdu)
    assert ours.dims == DIMS
    assert ours.attrs["FOVALIGN"] == "RADEC"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bkg = DataStore.from_dir(dr1_dir).obs(obs_id).bkg
    assert bkg.fov_alignment.value == "REVERSE_LON_RADEC"
    # make_map_background_irf evaluates the template at -fov_lon for such runs
    e, x, y = (ours[d].values for d in DIMS)
    theirs = bkg.evaluate(
        energy=e[:, None, None] * u.TeV,
        fov_lon=-x[None, :, None] * u.deg,
        fov_lat=y[None, None, :] * u.deg,
    ).to_value(conventions.RATE_UNIT)
    # (float32 cells; Gammapy puts a tiny floor under zeros for its log interpolation)
    np.testing.assert_allclose(theirs, ours.values, rtol=1e-5, atol=1e-30)
    # the template is not symmetric in fov_lon: the mirroring is seen
    assert not np.allclose(ours.values, ours.values[:, ::-1, :], rtol=1e-3)

"""Figures of field-of-view (bkg_3d) models: what is drawn is the product, the axes name the
frame and its orientation, and xbkg plot writes the figures of a bkg_3d build."""

import shutil

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import xarray as xr

from xbkg import plotting, products
from xbkg.axes import edges
from xbkg.cli import main
from xbkg.io.netcdf import read_archive
from xbkg.pipeline import run_fov_rates

PNG = b"\x89PNG\r\n\x1a\n"
RATE_LABEL = r"Background rate [s$^{-1}$ MeV$^{-1}$ sr$^{-1}$]"
ALTAZ_X = "fov_lon [deg], ALTAZ: azimuth grows to the left"
ALTAZ_Y = "fov_lat [deg], ALTAZ: altitude grows upwards"
RADEC_X = "fov_lon [deg], RADEC: RA grows to the left (east)"
RADEC_Y = "fov_lat [deg], RADEC: Dec grows upwards (north)"
TWO_D = [
    f"plot_group_{g:03d}_{kind}.png"
    for g in (0, 1)
    for kind in ("overview", "acceptance", "spectrum", "image")
] + ["plot_run_models.png"]


def make_3d(root, *extra_simulate):
    """``xbkg simulate`` (with a field-of-view gradient) and ``xbkg make --bkg-class bkg_3d``."""
    store, out = root / "store", root / "out"
    simulate = ["simulate", str(store), "--runs", "4", "--seed", "6", "--events-per-run", "4000"]
    assert main([*simulate, "--fov-gradient", "-0.1", *extra_simulate]) == 0
    make = ["make", str(store), str(out), "--bkg-class", "bkg_3d", "--fov-bins", "20", "-q"]
    assert main(make) == 0
    return out


@pytest.fixture(scope="module")
def out_3d(tmp_path_factory):
    return make_3d(tmp_path_factory.mktemp("altaz"))


@pytest.fixture(scope="module")
def bkg_3d(out_3d):
    return read_archive(out_3d / "background.nc")


@pytest.fixture
def ax():
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


def counts_weights(bkg):
    return bkg.cube["fov_counts"].sum(["obs_id", "fov_lon", "fov_lat"])


def test_shape_image_is_the_product(bkg_3d, ax):
    weights = counts_weights(bkg_3d)
    out = plotting.plot_fov_image(bkg_3d.fov_shape, slice(1.0, 10.0), weights=weights, ax=ax)
    assert out is ax
    image = products.fov_image(bkg_3d.fov_shape, slice(1.0, 10.0), weights=weights)
    (mesh,) = ax.collections
    # rows along fov_lat (y), columns along fov_lon (x), with the true pixel edges
    np.testing.assert_array_equal(mesh.get_array().reshape(20, 20), image.values.T)
    corners = mesh.get_coordinates()
    np.testing.assert_array_equal(corners[0, :, 0], edges(image, "fov_lon"))
    np.testing.assert_array_equal(corners[:, 0, 1], edges(image, "fov_lat"))
    assert ax.get_xlabel() == ALTAZ_X
    assert ax.get_ylabel() == ALTAZ_Y
    assert ax.get_aspect() == 1.0
    assert ax.get_xlim() == (-2.5, 2.5)
    # a shape factor: a diverging scale centred on 1, reaching the largest deviation
    low, high = mesh.norm.vmin, mesh.norm.vmax
    assert low + high == pytest.approx(2.0)
    assert high - 1 == pytest.approx(float(np.abs(image - 1).max()))
    assert mesh.get_cmap().name == "RdBu_r"
    assert ax.figure.axes[-1].get_ylabel() == "Field-of-view shape factor"
    assert ax.get_title() == "Energy 1–10 TeV"


def test_run_rate_image_and_profiles(bkg_3d):
    obs_id = int(bkg_3d.run_models["obs_id"][1])
    rate = run_fov_rates(bkg_3d, [obs_id]).sel(obs_id=obs_id)
    fig, (image_ax, lon_ax, lat_ax) = plt.subplots(1, 3)
    plotting.plot_fov_image(rate, 1.0, ax=image_ax)
    (mesh,) = image_ax.collections
    image = products.fov_image(rate, 1.0)
    np.testing.assert_array_equal(mesh.get_array().reshape(20, 20), image.values.T)
    assert (mesh.norm.vmin, mesh.norm.vmax) == (image.min(), image.max())
    assert fig.axes[-1].get_ylabel() == RATE_LABEL
    assert image_ax.get_title().startswith(f"OBS_ID {obs_id}, Energy ")
    for ax, along in ((lon_ax, "fov_lon"), (lat_ax, "fov_lat")):
        plotting.plot_fov_profile(rate, along, slice(1.0, 10.0), ax=ax)
        profile = products.fov_profile(rate, along, slice(1.0, 10.0))
        (line,) = ax.lines
        np.testing.assert_array_equal(line.get_xdata(), profile[along].values)
        np.testing.assert_array_equal(line.get_ydata(), profile.values)
        assert ax.get_ylabel() == RATE_LABEL
        assert ax.get_xlim() == (-2.5, 2.5)
        assert ax.get_legend_handles_labels()[1] == ["Energy 1–10 TeV"]
    assert lon_ax.get_xlabel() == ALTAZ_X
    # on the x axis, altitude grows to the right
    assert lat_ax.get_xlabel() == "fov_lat [deg], ALTAZ: altitude grows to the right"
    assert lon_ax.get_title() == f"OBS_ID {obs_id}, Energy 1–10 TeV, fov_lat -0.25–0.25 deg"
    plt.close(fig)


def test_frame_from_the_file_and_accessor(out_3d, tmp_path, ax):
    from xbkg.io.gadf import read_bkg, write_bkg_3d

    rate = read_bkg(sorted(out_3d.glob("background_run_*.fits.gz"))[0])
    radec = rate.assign_attrs(FOVALIGN="RADEC")
    path = write_bkg_3d(radec, tmp_path / "radec.fits.gz", reverse_lon=True)
    ds = xr.open_dataset(path, engine="gadf")
    assert ds.bkg.plot_fov_image(energy=1.0, ax=ax) is ax
    assert ax.get_xlabel() == RADEC_X
    assert ax.get_ylabel() == RADEC_Y
    fig, other = plt.subplots()
    ds.bkg.plot_fov_profile("fov_lat", ax=other, alignment="ALTAZ")
    assert other.get_xlabel() == "fov_lat [deg], ALTAZ: altitude grows to the right"
    plt.close(fig)


def test_fov_axis_labels_and_errors(bkg_3d, ax):
    assert plotting.fov_axis_label("fov_lon", "RADEC", "x") == RADEC_X
    assert plotting.fov_axis_label("fov_lat", "ALTAZ", "y") == ALTAZ_Y
    assert plotting.fov_axis_label("fov_lon", "ALTAZ", "y").endswith("azimuth grows downwards")
    with pytest.raises(ValueError, match="unknown field-of-view alignment"):
        plotting.fov_axis_label("fov_lon", "GALACTIC")
    with pytest.raises(ValueError, match="unknown field-of-view alignment 'GALACTIC'"):
        plotting.plot_fov_image(bkg_3d.fov_shape, ax=ax, alignment="galactic")
    rates = run_fov_rates(bkg_3d, list(bkg_3d.run_models["obs_id"].values[:2]))
    with pytest.raises(ValueError, match=r"extra dimension\(s\) \('obs_id',\)"):
        plotting.plot_fov_image(rates, ax=ax)
    with pytest.raises(ValueError, match="needs the dimensions energy, fov_lon, fov_lat"):
        plotting.plot_fov_profile(bkg_3d.smoothed.sel(group=0), "fov_lon", ax=ax)


def test_xbkg_plot_writes_the_3d_figures(out_3d, bkg_3d, tmp_path, capsys):
    out = tmp_path / "model"
    out.mkdir()
    shutil.copy(out_3d / "background.nc", out / "background.nc")
    assert main(["plot", str(out)]) == 0
    # the default run: the median zenith angle of the runs with models
    zenith = bkg_3d.cube["zen_pnt"].sortby(bkg_3d.cube["zen_pnt"])
    median = int(zenith["obs_id"][(zenith.size - 1) // 2])
    fov = [
        "plot_fov_shape_image.png",
        "plot_fov_shape_profiles.png",
        f"plot_fov_run_{median:06d}_image.png",
        f"plot_fov_run_{median:06d}_profiles.png",
    ]
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == sorted(TWO_D + fov)
    assert f"wrote {len(names)} figures" in capsys.readouterr().out
    for name in names:
        assert (out / name).read_bytes()[:8] == PNG
    # never overwritten without --overwrite
    before = {n: (out / n).read_bytes() for n in names}
    assert main(["plot", str(out)]) == 1
    err = capsys.readouterr().err
    assert "--overwrite" in err
    assert "plot_fov_shape_image.png" in err
    assert {n: (out / n).read_bytes() for n in names} == before
    # byte for byte the same figures from the same archive
    again = tmp_path / "again"
    again.mkdir()
    shutil.copy(out_3d / "background.nc", again / "background.nc")
    assert main(["plot", str(again)]) == 0
    assert {n: (again / n).read_bytes() for n in names} == before
    # other runs, by OBS_ID
    chosen = [int(o) for o in bkg_3d.run_models["obs_id"].values[:2]]
    argv = ["plot", str(out), "--overwrite", "--obs-id", *map(str, chosen)]
    assert main(argv) == 0
    for obs_id in chosen:
        for kind in ("image", "profiles"):
            assert (out / f"plot_fov_run_{obs_id:06d}_{kind}.png").read_bytes()[:8] == PNG


def test_xbkg_plot_refuses_unknown_runs(out_3d, tmp_path, capsys):
    out = tmp_path / "model"
    out.mkdir()
    shutil.copy(out_3d / "background.nc", out / "background.nc")
    assert main(["plot", str(out), "--obs-id", "1"]) == 1
    assert "no bkg_3d model for OBS_ID 1: the models are for 4 runs" in capsys.readouterr().err
    assert not list(out.glob("*.png"))


def test_2d_builds_have_no_fov_figures(tmp_path, capsys):
    store, out = tmp_path / "store", tmp_path / "out"
    assert (
        main(["simulate", str(store), "--runs", "2", "--seed", "1", "--events-per-run", "500"]) == 0
    )
    assert main(["make", str(store), str(out), "--group", "ZEN_PNT=0,90", "-q"]) == 0
    bkg = read_archive(out / "background.nc")
    assert plotting.fov_runs(bkg) == []
    assert not any("fov" in name for name in plotting.plot_files(bkg))
    assert main(["plot", str(out), "--obs-id", "33001"]) == 1
    assert "need a bkg_3d build with per-run models" in capsys.readouterr().err


def test_figures_of_a_store_flagged_like_hess_dr1(tmp_path):
    # RADEC models stored mirrored for Gammapy: drawn in the GADF orientation, and said so
    out = make_3d(tmp_path, "--flag-like-hess-dr1")
    bkg = read_archive(out / "background.nc")
    assert bkg.options.fov_alignment == "RADEC"
    obs_id = plotting.fov_runs(bkg)[0]
    figures = dict((name, fig) for fig, name in plotting._fov_figures(bkg, [obs_id]))
    assert sorted(figures) == sorted(plotting.plot_files(bkg, [obs_id])[-4:])
    image = figures[f"plot_fov_run_{obs_id:06d}_image.png"]
    assert "RADEC; stored mirrored for Gammapy (REVLON)" in image.get_suptitle()
    assert image.axes[0].get_xlabel() == RADEC_X
    assert image.axes[0].get_ylabel() == RADEC_Y
    # the shape factor is the build's, measured in the ALTAZ frame
    shape = figures["plot_fov_shape_image.png"]
    assert shape.axes[0].get_xlabel() == ALTAZ_X
    assert "ALTAZ" in shape.get_suptitle()
    profiles = figures[f"plot_fov_run_{obs_id:06d}_profiles.png"]
    rate = run_fov_rates(bkg, [obs_id]).sel(obs_id=obs_id)
    # one column per decade of energy, the lowest first
    lowest = rate["energy_lo"].values < rate["energy_lo"].values[0] * 10 * (1 - 1e-9)
    first = products.fov_profile(rate, "fov_lon", energy_index=slice(0, int(lowest.sum())))
    assert first["energy_hi"] == pytest.approx(rate["energy_lo"].values[0] * 10)
    np.testing.assert_array_equal(profiles.axes[0].lines[0].get_ydata(), first.values)

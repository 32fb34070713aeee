"""Plots: what is drawn is the product (values, edges, units); xbkg plot writes the PNGs."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import QuadMesh
from matplotlib.colors import LogNorm

from xbkg import plotting, products
from xbkg.axes import edges
from xbkg.cli import main
from xbkg.io.datastore import open_datastore, run_table
from xbkg.pipeline import build_background
from xbkg.simulate import simulate_datastore


@pytest.fixture(scope="module")
def sim_bkg(tmp_path_factory):
    path = simulate_datastore(tmp_path_factory.mktemp("sim") / "store", n_runs=6, seed=1)
    store = open_datastore(path)
    return build_background(store, run_table(store))


@pytest.fixture
def ax():
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


def test_acceptance_curve_line_is_the_product(sim_bkg, ax):
    smoothed = sim_bkg.smoothed.sel(group=0)
    out = plotting.plot_acceptance_curve(smoothed, slice(1, 10), ax=ax)
    assert out is ax
    curve = products.acceptance_curve(smoothed, slice(1, 10))
    (line,) = ax.lines
    np.testing.assert_array_equal(line.get_xdata(), curve["offset"].values)
    np.testing.assert_array_equal(line.get_ydata(), curve.values)
    assert ax.get_xlabel() == "Offset [deg]"
    assert ax.get_ylabel() == r"Background rate [s$^{-1}$ MeV$^{-1}$ sr$^{-1}$]"
    assert ax.get_xlim() == (0.0, 2.5)
    assert "Group 0 (ZEN_PNT 0–49)" in ax.get_title()
    assert "Energy 1–10 TeV" in ax.get_title()


def test_raw_models_are_points_with_errors_and_bin_widths(sim_bkg, ax):
    raw = sim_bkg.model.sel(group=0)
    plotting.plot_acceptance_curve(raw, energy_index=6, ax=ax, label="raw")
    result = products.integrate(raw, "energy", energy_index=6)
    container = ax.containers[0]
    data_line, _caps, (xbars, ybars) = container
    np.testing.assert_array_equal(data_line.get_ydata(), result["rate"].values)
    # horizontal bars span exactly the bins, vertical bars the Poisson errors
    segments = xbars.get_segments()
    np.testing.assert_allclose([s[0][0] for s in segments], raw["offset_lo"].values)
    np.testing.assert_allclose([s[1][0] for s in segments], raw["offset_hi"].values)
    heights = [s[1][1] - s[0][1] for s in ybars.get_segments()]
    np.testing.assert_allclose(heights, 2 * result["rate_error"].values)
    assert ax.get_legend_handles_labels()[1] == ["raw"]


def test_spectrum_is_log_log(sim_bkg, ax):
    smoothed = sim_bkg.smoothed.sel(group=1)
    plotting.plot_spectrum(smoothed, slice(0.5, 1.0), ax=ax)
    spec = products.spectrum(smoothed, slice(0.5, 1.0))
    (line,) = ax.lines
    np.testing.assert_array_equal(line.get_xdata(), spec["energy"].values)
    np.testing.assert_array_equal(line.get_ydata(), spec.values)
    assert ax.get_xscale() == "log"
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel() == "Energy [TeV]"
    assert ax.get_xlim() == pytest.approx((0.1, 100.0))


def test_image_uses_true_edges_and_log_scales(sim_bkg, ax):
    smoothed = sim_bkg.smoothed.sel(group=0)
    plotting.plot_image(smoothed, ax=ax)
    (mesh,) = [c for c in ax.collections if isinstance(c, QuadMesh)]
    corners = mesh.get_coordinates()  # (n_energy + 1, n_offset + 1, 2)
    np.testing.assert_array_equal(corners[0, :, 0], edges(smoothed, "offset"))
    np.testing.assert_array_equal(corners[:, 0, 1], edges(smoothed, "energy"))
    image = products.image(smoothed)
    shown = mesh.get_array()
    np.testing.assert_array_equal(shown.ravel(), np.ma.masked_invalid(image.values).ravel())
    # empty or unexposed bins are blank, not zero on a log scale
    assert np.all(shown.mask.ravel() == ~(image.values > 0).ravel())
    assert isinstance(mesh.norm, LogNorm)
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel() == "Offset [deg]"
    assert ax.get_ylabel() == "Energy [TeV]"
    colorbar = ax.figure.axes[-1]
    assert colorbar.get_ylabel() == r"Background rate [s$^{-1}$ MeV$^{-1}$ sr$^{-1}$]"


def test_overview_draws_three_panels(sim_bkg):
    raw, smoothed = sim_bkg.model.sel(group=0), sim_bkg.smoothed.sel(group=0)
    axes = plotting.plot_overview(smoothed, raw=raw, energy=1.0)
    assert len(axes) == 3
    curve_ax, spectrum_ax, image_ax = axes
    np.testing.assert_array_equal(
        curve_ax.lines[-1].get_ydata(), products.acceptance_curve(smoothed, 1.0).values
    )
    np.testing.assert_array_equal(
        spectrum_ax.lines[-1].get_ydata(), products.spectrum(smoothed).values
    )
    assert len(curve_ax.containers) == 1  # the raw points
    assert any(isinstance(c, QuadMesh) for c in image_ax.collections)
    assert curve_ax.figure._suptitle.get_text().startswith("Group 0")
    plt.close(curve_ax.figure)
    with pytest.raises(ValueError, match="3 axes"):
        plotting.plot_overview(smoothed, axes=[curve_ax])


def test_plots_need_one_curve(sim_bkg, ax):
    with pytest.raises(ValueError, match=r"extra dimension\(s\) \('group',\).*sel\(group=...\)"):
        plotting.plot_acceptance_curve(sim_bkg.model, 1.0, ax=ax)
    with pytest.raises(ValueError, match="extra dimension"):
        plotting.plot_image(sim_bkg.cube, ax=ax)
    # a run cube summed over runs is one curve
    plotting.plot_spectrum(sim_bkg.cube, sum_over="obs_id", ax=ax)
    with pytest.raises(ValueError, match="needs counts"):
        plotting.plot_spectrum(sim_bkg.model[["rate"]].sel(group=0), ax=ax, errors=True)


def test_unit_label():
    assert plotting.unit_label("s-1 MeV-1 sr-1") == r"s$^{-1}$ MeV$^{-1}$ sr$^{-1}$"
    assert plotting.unit_label("deg") == "deg"
    assert plotting.unit_label("1") == ""


def test_xbkg_plot_writes_every_group(dr1_make_dir, tmp_path, capsys):
    out = tmp_path / "model"
    out.mkdir()
    (out / "background.nc").symlink_to(dr1_make_dir / "background.nc")
    assert main(["plot", str(out)]) == 0
    names = sorted(p.name for p in out.glob("*.png"))
    # every group's models, and a few of the per-run models the HDU index uses
    assert names == sorted(
        [
            f"plot_group_{g:03d}_{kind}.png"
            for g in (0, 1)
            for kind in ("overview", "acceptance", "spectrum", "image")
        ]
        + ["plot_run_models.png"]
    )
    assert "wrote 9 figures" in capsys.readouterr().out
    for name in names:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = {n: (out / n).stat().st_mtime_ns for n in names}
    assert main(["plot", str(out)]) == 1
    err = capsys.readouterr().err
    assert "--overwrite" in err
    assert "plot_group_000_overview.png" in err
    assert {n: (out / n).stat().st_mtime_ns for n in names} == before


def test_xbkg_plot_overwrite(tmp_path, capsys):
    store = simulate_datastore(tmp_path / "store", n_runs=3, seed=2)
    out = tmp_path / "model"
    assert main(["make", str(store), str(out), "--group", "ZEN_PNT=0,90", "-q"]) == 0
    (out / "plot_group_000_spectrum.png").write_bytes(b"old")
    assert main(["plot", str(out)]) == 1
    assert (out / "plot_group_000_spectrum.png").read_bytes() == b"old"
    assert not (out / "plot_group_000_image.png").exists()  # all or nothing
    assert main(["plot", str(out), "--overwrite"]) == 0
    assert (out / "plot_group_000_spectrum.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in out.glob("*.png")) == [
        f"plot_group_000_{kind}.png" for kind in ("acceptance", "image", "overview", "spectrum")
    ]


def test_xbkg_plot_without_archive(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 1
    assert "background.nc: archive not found" in capsys.readouterr().err


def test_shown_runs_span_the_zenith_angles(dr1_make_dir):
    from xbkg.io.netcdf import read_archive
    from xbkg.plotting import shown_runs

    bkg = read_archive(dr1_make_dir / "background.nc")
    shown = shown_runs(bkg.run_models, bkg.cube)
    assert len(shown) == 4
    zenith = bkg.cube["zen_pnt"].sel(obs_id=shown).values
    assert zenith[0] == bkg.cube["zen_pnt"].min()
    assert zenith[-1] == bkg.cube["zen_pnt"].max()
    assert np.all(np.diff(zenith) >= 0)

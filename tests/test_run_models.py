"""Each run gets a model of its own: the condition model in ``xbkg make`` and its files."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from conftest import require
from xbkg import simulate
from xbkg.cli import main
from xbkg.conditions import run_rate
from xbkg.conventions import run_model_filename
from xbkg.errors import BackgroundWarning
from xbkg.io.datastore import open_datastore, run_table
from xbkg.io.gadf import read_bkg
from xbkg.options import options_for
from xbkg.pipeline import build_background, write_background
from xbkg.prediction import loglog_nodes


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    return simulate.simulate_datastore(
        tmp_path_factory.mktemp("sim") / "store", n_runs=8, seed=11, events_per_run=5_000
    )


def bkg_rows(out):
    hdu = Table.read(out / "hdu-index.fits.gz")
    rows = hdu[hdu["HDU_TYPE"] == "bkg"]
    return {int(o): str(f) for o, f in zip(rows["OBS_ID"], rows["FILE_NAME"], strict=True)}


def test_every_run_points_at_its_own_model(store_path, tmp_path):
    store = open_datastore(store_path)
    runs = run_table(store)
    bkg = build_background(store, runs, options=options_for(model="conditions"))
    assert bkg.conditions is not None
    out = tmp_path / "out"
    result = write_background(bkg, store, out, all_runs=runs)
    rows = bkg_rows(out)
    assert rows == {int(o): run_model_filename(int(o)) for o in runs["obs_id"].values}
    for name in rows.values():
        assert name in result["files"]
    # the group models are still written (archive, plots, export)
    assert (out / "smooth_background_2D_group_000_table.fits.gz").is_file()
    # the file holds the run's rate for its conditions, per ONTIME
    obs_id = int(runs["obs_id"][3])
    rate = read_bkg(out / run_model_filename(obs_id))
    expected = run_rate(bkg.conditions, runs.sel(obs_id=[obs_id]), time="ontime")[0]
    filled = result["background"].run_models["filled"].sel(obs_id=obs_id)
    mean = result["background"].run_models["rate"].sel(obs_id=obs_id)
    np.testing.assert_allclose(
        mean.values[~filled.values], expected.values[~filled.values], rtol=1e-12
    )
    # the file holds the nodes whose log-log integral (Gammapy's) is that mean
    np.testing.assert_allclose(rate.values, loglog_nodes(mean).values, rtol=1e-12)
    # below the run's own safe threshold every bin is a continuation, marked as filled
    below = (rate["energy_hi"] <= float(runs["safe_energy_lo"].sel(obs_id=obs_id))).values
    assert below.any()
    assert filled.values[below].all()
    assert np.all(rate.values > 0)
    header = fits.getheader(out / run_model_filename(obs_id), "BACKGROUND")
    assert header["NFILLED"] == int(filled.sum())
    assert header["OBS_ID"] == obs_id
    assert header["BKGTIME"] == "ONTIME"
    assert header["BKGMODEL"] == "conditions"
    assert header["SMOOTHED"] == "poisson"
    # inside the exposed range no exact zeros (science tools interpolate in log)
    exposed = bkg.conditions["exposure_time"] > 0
    assert float(rate.where(exposed.values).min()) > 0
    # reproducible, byte for byte
    again = tmp_path / "again"
    write_background(bkg, store, again, all_runs=runs)
    for name in rows.values():
        assert (out / name).read_bytes() == (again / name).read_bytes()


def test_gammapy_reads_the_run_models(store_path, tmp_path):
    gammapy_data = require("gammapy.data")
    import astropy.units as u

    store = open_datastore(store_path)
    runs = run_table(store)
    bkg = build_background(store, runs, options=options_for(model="conditions"))
    result = write_background(bkg, store, tmp_path / "out", all_runs=runs)
    obs_id = int(runs["obs_id"][0])
    obs = gammapy_data.DataStore.from_dir(tmp_path / "out").obs(obs_id, required_irf="all-optional")
    rate = loglog_nodes(result["background"].run_models["rate"].sel(obs_id=obs_id))
    e, o = float(rate["energy"][9]), float(rate["offset"][10])
    value = obs.bkg.evaluate(energy=e * u.TeV, offset=o * u.deg).to_value("MeV-1 s-1 sr-1")
    assert value == pytest.approx(float(rate.sel(energy=e, offset=o)), rel=1e-6)


def test_runs_without_conditions_keep_their_group_model(store_path, tmp_path):
    store = open_datastore(store_path)
    runs = run_table(store)
    bkg = build_background(store, runs, options=options_for(model="conditions"))
    lacking = runs.copy()
    first = int(runs["obs_id"][0])
    lacking["muoneff"] = lacking["muoneff"].where(lacking["obs_id"] != first)
    with pytest.warns(BackgroundWarning, match=f"OBS_IDs \\[{first}\\]"):
        write_background(bkg, store, tmp_path / "out", all_runs=lacking)
    rows = bkg_rows(tmp_path / "out")
    assert rows[first].startswith("smooth_background_2D_group_")
    assert sum(name.startswith("background_run_") for name in rows.values()) == 7


def test_raw_index_and_livetime(store_path, tmp_path):
    store = open_datastore(store_path)
    runs = run_table(store)
    options = options_for(model="conditions", index_model="raw", time="livetime")
    bkg = build_background(store, runs, options=options)
    result = write_background(bkg, store, tmp_path / "out", all_runs=runs)
    obs_id = int(runs["obs_id"][2])
    rate = read_bkg(tmp_path / "out" / run_model_filename(obs_id))
    assert rate.attrs["BKGTIME"] == "LIVETIME"
    raw = bkg.conditions.assign(rate=bkg.conditions["rate_raw"])
    expected = run_rate(raw, runs.sel(obs_id=[obs_id]), time="livetime")[0]
    mean = result["background"].run_models["rate"].sel(obs_id=obs_id)
    constrained = (rate.attrs["DATA_ELO"] <= rate["energy_lo"].values)[:, None]
    constrained = constrained & (expected.values > 0)  # raw: bins without counts are filled
    np.testing.assert_allclose(mean.values[constrained], expected.values[constrained], rtol=1e-12)
    np.testing.assert_allclose(rate.values, loglog_nodes(mean).values, rtol=1e-12)


def test_cli_make_defaults(store_path, tmp_path, capsys):
    out = tmp_path / "default"
    assert main(["make", str(store_path), str(out)]) == 0
    text = capsys.readouterr().out
    assert "per-run models of the condition model" in text
    assert "for 8 runs of the data store" in text
    assert all(name.startswith("background_run_") for name in bkg_rows(out).values())
    # asking for groups, or for the Gammapy 0.6 preset, keeps the group models in the index
    for extra in (
        ["--group", "ZEN_PNT=0,40,90"],
        ["--preset", "gammapy-0.6"],
        ["--model", "groups"],
    ):
        out = tmp_path / extra[-1].replace(",", "_").replace(".", "_")
        assert main(["make", str(store_path), str(out), "-q", *extra]) == 0
        assert not list(out.glob("background_run_*"))
        assert all("_group_" in name for name in bkg_rows(out).values())


def test_python_example_and_cli_write_the_same_files(store_path, tmp_path):
    """One set of defaults: ``Options()`` and ``xbkg make`` build the same models."""
    assert main(["make", str(store_path), str(tmp_path / "cli"), "-q"]) == 0
    store = open_datastore(store_path)
    bkg = build_background(store, run_table(store))
    write_background(bkg, store, tmp_path / "python")
    names = sorted(p.name for p in (tmp_path / "cli").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "python").iterdir())
    assert any(n.startswith("background_run_") for n in names)
    for name in names:
        assert (tmp_path / "cli" / name).read_bytes() == (tmp_path / "python" / name).read_bytes()

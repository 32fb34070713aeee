"""Known sources are excluded by default: the shipped gamma-cat, the same for every entry point."""

import json
from importlib.resources import files

import numpy as np
import pytest
from astropy.table import Table

from xbkg import simulate
from xbkg.cli import main
from xbkg.conventions import ARCHIVE_FILE
from xbkg.io import catalog
from xbkg.io.datastore import open_datastore, run_table
from xbkg.io.netcdf import from_archive, read_archive, to_archive
from xbkg.options import PRESETS, Options, options_for
from xbkg.pipeline import build_background
from xbkg.regions import exclusion_circles


def test_shipped_catalogue(gammacat_path):
    folder = files("xbkg").joinpath("catalogs", "gammacat")
    # the catalogue's exclusion columns, unchanged
    shipped = Table.read(str(folder.joinpath("gammacat-exclusion.ecsv")))
    original = Table.read(gammacat_path)
    assert shipped.colnames == ["ra", "dec", "morph_sigma", "common_name"]
    for name in shipped.colnames:
        assert shipped[name].unit == original[name].unit
        assert shipped[name].tolist() == original[name].tolist(), name
    assert "NonCommercial-ShareAlike 4.0" in folder.joinpath("LICENCE.rst").read_text()
    notice = folder.joinpath("README.md").read_text()
    assert "Gammapy Coordination Committee" in notice
    assert "Citation" in notice
    regions = catalog.read_catalog("gammacat")
    assert regions.attrs["catalog"] == "gammacat"
    assert regions.sizes["source"] == 162
    from_file = catalog.read_catalog(gammacat_path)
    for name in ("ra", "dec", "radius"):
        np.testing.assert_array_equal(regions[name], from_file[name])


def test_catalog_regions():
    assert catalog.catalog_regions(["none"]) is None
    assert catalog.catalog_regions([]) is None
    both = catalog.catalog_regions(["gammacat", "gammacat"], min_radius=0.5)
    assert both.sizes["source"] == 324
    assert float(both["radius"].min()) == 0.5
    with pytest.raises(ValueError, match="'none' cannot be combined"):
        catalog.catalog_regions(["none", "gammacat"])


def test_options_default_exclusion():
    assert Options().exclude == ("gammacat",)
    assert PRESETS["default"].exclude == ("gammacat",)
    assert PRESETS["gammapy-0.6"].exclude == ()  # Gammapy 0.6 excluded only what it was given
    assert Options(exclude="none").exclude == ()
    assert Options(exclude=["none"]).exclude == ()
    assert options_for(exclude=["my.fits", "gammacat"]).exclude == ("my.fits", "gammacat")
    assert json.loads(Options().to_json())["exclude"] == ["gammacat"]


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    path = simulate.simulate_datastore(
        tmp_path_factory.mktemp("excl") / "store", n_runs=4, seed=11, events_per_run=2000
    )
    store = open_datastore(path)
    return store, run_table(store)


def test_build_background_excludes_gammacat_by_default(small_store):
    store, runs = small_store
    options = options_for(model="groups")
    bkg = build_background(store, runs, options=options)
    assert bkg.options.exclude == ("gammacat",)
    assert bkg.regions.sizes["source"] == 162
    archive = to_archive(bkg)
    assert json.loads(archive.attrs["options"])["exclude"] == ["gammacat"]
    assert archive["regions"].attrs["catalog"] == "gammacat"
    assert from_archive(archive).options == bkg.options
    # given regions are excluded as well
    circle = exclusion_circles([10.0], [-30.0], [1.0], name="mine")
    both = build_background(store, runs, regions=circle, options=options)
    assert both.regions.sizes["source"] == 163
    # the catalogue given again (as scripts did before it was the default) counts once
    again = build_background(store, runs, regions=catalog.read_catalog("gammacat"), options=options)
    assert again.regions.sizes["source"] == 162
    np.testing.assert_array_equal(again.cube["counts"], bkg.cube["counts"])
    # none: no regions at all
    none = build_background(store, runs, options=options_for(model="groups", exclude="none"))
    assert none.regions is None
    assert int(none.cube["n_excluded"].sum()) == 0


def test_old_archive_without_exclude_reads_as_given_regions(small_store):
    store, runs = small_store
    bkg = build_background(store, runs, options=options_for(model="groups", exclude=()))
    archive = to_archive(bkg)
    raw = json.loads(archive.attrs["options"])
    del raw["exclude"]
    archive.attrs["options"] = json.dumps(raw)
    assert from_archive(archive).options.exclude == ()


def test_cli_make_and_validate(small_store, tmp_path, capsys):
    store, _ = small_store
    out = tmp_path / "model"
    assert main(["make", str(store.path), str(out), "--model", "groups"]) == 0
    text = capsys.readouterr().out
    assert "exclusion of gammacat (162 circles, exact)" in text
    assert "energy bins: 15 from 0.1 to 100 TeV (from the data: lowest SAFE_ENERGY_LO" in text
    options = read_archive(out / ARCHIVE_FILE).options
    # the command line and the Python API have the same defaults
    assert (
        options
        == build_background(store, run_table(store), options=options_for(model="groups")).options
    )
    assert options.exclude == ("gammacat",)

    none = tmp_path / "none"
    assert main(["make", str(store.path), str(none), "--model", "groups", "--exclude", "none"]) == 0
    assert "no exclusion (no catalogue)" in capsys.readouterr().out
    assert read_archive(none / ARCHIVE_FILE).options.exclude == ()

    # validate excludes the same sources by default, and warns when told to exclude none
    assert main(["validate", str(out), "-q"]) == 0
    assert "no exclusion" not in capsys.readouterr().err
    assert main(["validate", str(out), "-q", "--exclude", "none"]) == 0
    err = capsys.readouterr().err
    assert "xbkg: warning: no exclusion: the events of known gamma-ray sources count" in err

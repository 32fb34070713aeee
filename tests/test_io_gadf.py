"""GADF background tables: our writer, our reader, real files and Gammapy interop."""

from __future__ import annotations

import itertools
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from astropy.io import fits

from conftest import require
from xbkg import conventions
from xbkg.axes import binned_coords, edges
from xbkg.io.gadf import bkg_2d_hdu, read_bkg, write_bkg_2d, write_bkg_2d_files

GADF_2D_ORDER = ("energy", "offset")
GADF_3D_ORDER = ("energy", "fov_lon", "fov_lat")


def make_rate(n_energy: int, n_offset: int, seed: int = 0) -> xr.DataArray:
    """A rate with distinct values everywhere, so that any transposition shows."""
    rng = np.random.default_rng(seed)
    coords = binned_coords(
        np.geomspace(0.1, 100.0, n_energy + 1), np.sqrt(np.linspace(0.0, 2.5**2, n_offset + 1))
    )
    values = rng.uniform(1e-9, 1e-5, size=(n_energy, n_offset))
    return xr.DataArray(
        values, dims=GADF_2D_ORDER, coords=coords, attrs={"units": conventions.RATE_UNIT}
    )


def cell_column(name: str, cell: np.ndarray, unit: str | None = None) -> fits.Column:
    """One-row column holding ``cell``; TDIM is the numpy shape reversed, as FITS wants."""
    cell = np.asarray(cell, dtype=np.float64)
    dim = "(" + ",".join(str(n) for n in cell.shape[::-1]) + ")" if cell.ndim > 1 else None
    return fits.Column(name=name, format=f"{cell.size}D", unit=unit, dim=dim, array=cell[None])


def write_table(
    path: Path, columns: list[fits.Column], header: dict | None = None, name: str | None = None
) -> Path:
    hdr = fits.Header()
    for key, value in (header or {}).items():
        hdr[key] = value
    table = fits.BinTableHDU.from_columns(columns, header=hdr, name=name)
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)
    return path


def edge_columns(stem: str, bin_edges: np.ndarray, unit: str | None) -> list[fits.Column]:
    return [
        cell_column(f"{stem}_LO", bin_edges[:-1], unit),
        cell_column(f"{stem}_HI", bin_edges[1:], unit),
    ]


def cref(stems_numpy_order: tuple[str, ...]) -> str:
    """CREF value for a cell stored in the given numpy order (CREF lists FITS order)."""
    return "(" + ",".join(f"{s}_LO:{s}_HI" for s in reversed(stems_numpy_order)) + ")"


# ----------------------------------------------------------------------------- round trip


@pytest.mark.parametrize(("n_energy", "n_offset"), [(4, 7), (7, 4), (5, 5), (1, 1), (1, 3)])
@pytest.mark.parametrize("suffix", [".fits", ".fits.gz"])
def test_round_trip(tmp_path, n_energy, n_offset, suffix):
    rate = make_rate(n_energy, n_offset)
    path = write_bkg_2d(rate, tmp_path / f"bkg{suffix}")
    back = read_bkg(path)
    assert back.dims == GADF_2D_ORDER
    assert back.name == "bkg"
    assert back.attrs["units"] == conventions.RATE_UNIT
    # float64 through FITS is exact: equal, not close
    xr.testing.assert_equal(back, rate)
    for dim in GADF_2D_ORDER:
        np.testing.assert_array_equal(edges(back, dim), edges(rate, dim))
        for coord in (dim, f"{dim}_lo", f"{dim}_hi"):
            assert back[coord].attrs == rate[coord].attrs


def test_round_trip_of_transposed_input(tmp_path):
    rate = make_rate(3, 6)
    write_bkg_2d(rate.transpose("offset", "energy"), tmp_path / "t.fits")
    write_bkg_2d(rate, tmp_path / "e.fits")
    assert (tmp_path / "t.fits").read_bytes() == (tmp_path / "e.fits").read_bytes()
    xr.testing.assert_equal(read_bkg(tmp_path / "t.fits"), rate)


def test_file_layout_is_gadf_recommended(tmp_path):
    rate = make_rate(3, 6)
    path = write_bkg_2d(rate, tmp_path / "bkg.fits.gz", header={"GROUP_ID": 7, "BKGTIME": "ONTIME"})
    with fits.open(path) as hdulist:
        assert len(hdulist) == 2
        assert hdulist[0].data is None
        table = hdulist["BACKGROUND"]
        header = table.header
        assert table.columns.names == ["ENERG_LO", "ENERG_HI", "THETA_LO", "THETA_HI", "BKG"]
        assert [c.unit for c in table.columns] == ["TeV", "TeV", "deg", "deg", "s-1 MeV-1 sr-1"]
        # all float64; BKG holds 3 x 6 values
        assert [c.format for c in table.columns] == ["3D", "3D", "6D", "6D", "18D"]
        assert len(table.data) == 1
        assert header["TDIM5"] == "(6,3)"
        assert header["CREF5"] == "(THETA_LO:THETA_HI,ENERG_LO:ENERG_HI)"
        for key, value in conventions.BKG_2D_HDUCLAS.items():
            assert header[key] == value
        assert header["EXTNAME"] == "BACKGROUND"
        assert header["GROUP_ID"] == 7
        assert header["BKGTIME"] == "ONTIME"
        assert "DATE" not in header
        assert "CHECKSUM" not in header
        np.testing.assert_array_equal(table.data["BKG"][0], rate.values)
        np.testing.assert_array_equal(table.data["THETA_HI"][0], rate["offset_hi"].values)


def test_header_items_come_back_as_attrs(tmp_path):
    path = write_bkg_2d(
        make_rate(2, 3),
        tmp_path / "bkg.fits",
        extname="BKG",
        header={"GROUP_ID": 7, "BKGTIME": ("LIVETIME", "run time normalising the rate")},
    )
    back = read_bkg(path, "bkg")
    assert back.attrs["GROUP_ID"] == 7
    assert back.attrs["BKGTIME"] == "LIVETIME"
    assert back.attrs["HDUCLAS4"] == "BKG_2D"
    assert back.attrs["source_file"] == "bkg.fits"
    assert back.attrs["source_hdu"] == "BKG"
    assert not any(key.startswith(("TTYPE", "TFORM", "NAXIS", "CREF")) for key in back.attrs)


def test_same_inputs_give_identical_bytes(tmp_path):
    rate = make_rate(4, 9)
    header = {"GROUP_ID": 1, "BKGTIME": "ONTIME"}
    first = write_bkg_2d(rate, tmp_path / "a.fits.gz", header=header).read_bytes()
    second = write_bkg_2d(rate.copy(), tmp_path / "b.fits.gz", header=header).read_bytes()
    assert first == second
    again = write_bkg_2d(rate, tmp_path / "a.fits.gz", header=header, overwrite=True)
    assert again.read_bytes() == first
    # and the bytes depend on the values: a different rate gives a different file
    other = write_bkg_2d(rate * 2, tmp_path / "c.fits.gz", header=header).read_bytes()
    assert other != first


def test_many_files_equal_one_by_one(tmp_path):
    """The per-run writer gives each file the bytes of write_bkg_2d."""
    rates = xr.concat([make_rate(6, 4, seed=s) for s in range(3)], dim="obs_id")
    rates = rates.assign_coords(obs_id=[7, 8, 9]).transpose("energy", "obs_id", "offset")
    headers = [{"OBS_ID": (int(o), "run")} for o in rates["obs_id"].values]
    # One table is written again and again: keywords of one file must not stay in the next.
    headers[1].update({"DATA_ELO": (0.5, "lowest energy"), "HIERARCH ZEN_PNT_MIN": 12.5})
    paths = [tmp_path / f"many_{o}.fits.gz" for o in rates["obs_id"].values]
    assert write_bkg_2d_files(rates, "obs_id", paths, headers) == paths
    for i, path in enumerate(paths):
        one = write_bkg_2d(rates.isel(obs_id=i), tmp_path / f"one_{i}.fits.gz", header=headers[i])
        assert path.read_bytes() == one.read_bytes()
    with pytest.raises(ValueError, match="one path and one header"):
        write_bkg_2d_files(rates, "obs_id", paths[:2], headers)


def test_overwrite_is_refused(tmp_path):
    path = write_bkg_2d(make_rate(2, 3), tmp_path / "bkg.fits.gz")
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite"):
        write_bkg_2d(make_rate(2, 3, seed=1), path)
    assert path.read_bytes() == before
    write_bkg_2d(make_rate(2, 3, seed=1), path, overwrite=True)
    assert path.read_bytes() != before


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rate_is_refused(tmp_path, bad):
    rate = make_rate(3, 4)
    rate[1, 2] = bad
    with pytest.raises(ValueError, match=r"non-finite.*\(1, 2\).*[Ff]ill"):
        write_bkg_2d(rate, tmp_path / "bkg.fits")
    assert not (tmp_path / "bkg.fits").exists()


def test_rate_units_are_converted_on_write(tmp_path):
    rate = make_rate(3, 4)
    per_tev = rate.copy()
    per_tev.attrs["units"] = "1 / (s TeV sr)"
    gev = rate.copy()
    for coord in ("energy_lo", "energy_hi"):
        gev[coord] = gev[coord] * 1000.0
        gev[coord].attrs["units"] = "GeV"
    back = read_bkg(write_bkg_2d(per_tev, tmp_path / "per_tev.fits"))
    np.testing.assert_allclose(back.values, rate.values * 1e-6, rtol=1e-15)
    back = read_bkg(write_bkg_2d(gev, tmp_path / "gev.fits"))
    np.testing.assert_allclose(edges(back, "energy"), edges(rate, "energy"), rtol=1e-15)


def test_bad_units_are_refused():
    rate = make_rate(2, 2)
    rate.attrs["units"] = "m-2 s-1"
    with pytest.raises(ValueError, match="cannot be converted"):
        bkg_2d_hdu(rate)
    del rate.attrs["units"]
    with pytest.raises(ValueError, match="no 'units' attribute"):
        bkg_2d_hdu(rate)


def test_missing_dims_or_edges_are_refused():
    rate = make_rate(2, 3)
    with pytest.raises(ValueError, match="exactly the dimensions"):
        bkg_2d_hdu(rate.isel(offset=0))
    with pytest.raises(ValueError, match="exactly the dimensions"):
        bkg_2d_hdu(rate.expand_dims(group=[0]))
    with pytest.raises(ValueError, match="'offset' has no bin edges"):
        bkg_2d_hdu(rate.drop_vars("offset_hi"))


@pytest.mark.parametrize("key", ["EXTNAME", "TDIM5", "CREF5", "naxis1", "TUNIT1"])
def test_structural_header_keywords_are_refused(key):
    with pytest.raises(ValueError, match="set by the writer"):
        bkg_2d_hdu(make_rate(2, 3), header={key: "x"})


# ----------------------------------------------------------------------------- real files


def test_gadf_example_bkg_2d(gadf_examples_dir):
    path = gadf_examples_dir / "bkg_2d_full_example.fits"
    raw = fits.getdata(path, "BACKGROUND")
    da = read_bkg(path)
    assert da.dims == GADF_2D_ORDER
    assert da.shape == (20, 5)
    np.testing.assert_array_equal(da.energy_lo, raw["ENERG_LO"][0])
    np.testing.assert_array_equal(da.energy_hi, raw["ENERG_HI"][0])
    np.testing.assert_array_equal(da.offset_lo, raw["THETA_LO"][0])
    np.testing.assert_array_equal(da.offset_hi, raw["THETA_HI"][0])
    # TDIM5 = '(5,20)': numpy cell (energy, theta), as GADF recommends
    np.testing.assert_array_equal(da.values, raw["BKG"][0])
    np.testing.assert_allclose(da.energy, np.sqrt(raw["ENERG_LO"][0] * raw["ENERG_HI"][0]))
    assert da.attrs["HDUCLAS4"] == "BKG_2D"
    assert da.attrs["OBS_ID"] == 31415


def test_gadf_example_bkg_3d(gadf_examples_dir):
    path = gadf_examples_dir / "bkg_3d_full_example.fits"
    # 15 DETX and 15 DETY bins and no CREF: the GADF-recommended order is assumed
    raw = fits.getdata(path, "BACKGROUND")
    da = read_bkg(path)
    xr.testing.assert_identical(read_bkg(path, axis_order=GADF_3D_ORDER), da)
    assert da.dims == GADF_3D_ORDER
    assert da.shape == (20, 15, 15)
    for dim, stem in [("energy", "ENERG"), ("fov_lon", "DETX"), ("fov_lat", "DETY")]:
        np.testing.assert_array_equal(da[f"{dim}_lo"], raw[f"{stem}_LO"][0])
        np.testing.assert_array_equal(da[f"{dim}_hi"], raw[f"{stem}_HI"][0])
    np.testing.assert_array_equal(da.values, raw["BKG"][0])
    np.testing.assert_allclose(da.fov_lon, 0.5 * (raw["DETX_LO"][0] + raw["DETX_HI"][0]))
    assert da.fov_lon.attrs["units"] == "deg"
    # the file has no FOVALIGN; GADF says ALTAZ then
    assert da.attrs["FOVALIGN"] == "ALTAZ"
    assert da.attrs["HDUCLAS4"] == "BKG_3D"


def test_hess_dr1_bkg_3d(dr1_dir):
    path = dr1_dir / "data" / "hess_dl3_dr1_obs_id_020136.fits.gz"
    # the DR1 index says HDU_NAME 'bkg', the file's EXTNAME is 'BKG'
    da = read_bkg(path, "bkg", axis_order=GADF_3D_ORDER)
    raw = fits.getdata(path, "BKG")
    assert da.shape == (20, 50, 50)
    assert raw["BKG"][0].dtype == np.dtype(">f4")
    # The file's EVENTS header is flagged like the DR1 release, for which Gammapy
    # evaluates the template at -fov_lon: it is read mirrored back along DETX.
    np.testing.assert_array_equal(da.values, raw["BKG"][0][:, ::-1, :].astype(np.float64))
    as_stored = read_bkg(path, "bkg", reverse_lon=False)
    np.testing.assert_array_equal(as_stored.values, raw["BKG"][0].astype(np.float64))
    np.testing.assert_array_equal(da.fov_lon_lo, -as_stored.fov_lon_hi[::-1])
    np.testing.assert_array_equal(da.energy_lo, raw["ENERG_LO"][0].astype(np.float64))
    np.testing.assert_array_equal(da.fov_lat_hi, raw["DETY_HI"][0].astype(np.float64))
    assert da.attrs["FOVALIGN"] == "RADEC"
    assert da.attrs["units"] == conventions.RATE_UNIT
    assert da.attrs["source_hdu"] == "BKG"
    # found without a name too (HDUCLAS2 = 'BKG'); square 50 x 50 FoV bins in the GADF order
    xr.testing.assert_identical(read_bkg(path), da)


# ----------------------------------------------------------------------------- other layouts


@pytest.mark.parametrize("with_unit", [True, False])
def test_gammapy_06_file(tmp_path, with_unit):
    """Gammapy 0.6 wrote lower-case ``bkg``, extra columns, HDUNAME but no EXTNAME."""
    e = np.geomspace(0.1, 100.0, 4)
    o = np.sqrt(np.linspace(0.0, 2.5**2, 6))
    rng = np.random.default_rng(3)
    bkg = rng.uniform(0, 1e-6, size=(3, 5))
    columns = [
        *edge_columns("THETA", o, "deg"),
        *edge_columns("ENERG", e, "TeV"),
        cell_column("counts", rng.poisson(10, size=(3, 5))),
        cell_column("livetime", np.full((3, 5), 1800.0), "s"),
        cell_column("bkg", bkg, "MeV-1 s-1 sr-1" if with_unit else None),
        cell_column("bkg_err", bkg / 10, "MeV-1 s-1 sr-1" if with_unit else None),
    ]
    path = write_table(
        tmp_path / "background_2D_group_000_table.fits.gz", columns, {"HDUNAME": "bkg_2d"}
    )
    assert "EXTNAME" not in fits.getheader(path, 1)
    for hdu in (None, "bkg_2d", "BKG_2D", 1):
        da = read_bkg(path, hdu)
        assert da.dims == GADF_2D_ORDER
        np.testing.assert_array_equal(da.values, bkg)
        np.testing.assert_array_equal(edges(da, "energy"), e)
        np.testing.assert_array_equal(edges(da, "offset"), o)
        assert da.attrs["units"] == conventions.RATE_UNIT
        assert da.attrs["HDUNAME"] == "bkg_2d"
        assert da.attrs["source_hdu"] == "#1"


def test_units_are_converted_on_read(tmp_path):
    e_tev = np.geomspace(0.1, 100.0, 4)
    o_deg = np.linspace(0.0, 2.0, 5)
    bkg = np.arange(12.0).reshape(3, 4) + 1.0
    columns = [
        *edge_columns("ENERG", e_tev * 1000.0, "GeV"),
        *edge_columns("THETA", np.deg2rad(o_deg), "rad"),
        cell_column("BKG", bkg, "1 / (TeV s sr)"),
    ]
    da = read_bkg(write_table(tmp_path / "units.fits", columns, name="BACKGROUND"))
    np.testing.assert_allclose(edges(da, "energy"), e_tev, rtol=1e-14)
    np.testing.assert_allclose(edges(da, "offset"), o_deg, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(da.values, bkg * 1e-6, rtol=1e-15)
    assert da.energy_lo.attrs["units"] == "TeV"


def test_transposed_layout_is_detected_from_lengths(tmp_path):
    rate = make_rate(3, 5)
    columns = [
        *edge_columns("ENERG", edges(rate, "energy"), "TeV"),
        *edge_columns("THETA", edges(rate, "offset"), "deg"),
        cell_column("BKG", rate.values.T, conventions.RATE_UNIT),
    ]
    da = read_bkg(write_table(tmp_path / "t.fits", columns, name="BACKGROUND"))
    xr.testing.assert_equal(da, rate)
    with pytest.raises(ValueError, match="does not fit the data shape"):
        read_bkg(tmp_path / "t.fits", axis_order=GADF_2D_ORDER)


@pytest.mark.parametrize("stored", [("energy", "offset"), ("offset", "energy")])
def test_square_layout_needs_cref_or_axis_order(tmp_path, stored):
    rate = make_rate(4, 4)
    cell = rate.transpose(*stored).values
    stems = {"energy": "ENERG", "offset": "THETA"}
    columns = [
        *edge_columns("ENERG", edges(rate, "energy"), "TeV"),
        *edge_columns("THETA", edges(rate, "offset"), "deg"),
        cell_column("BKG", cell, conventions.RATE_UNIT),
    ]
    bare = write_table(tmp_path / "bare.fits", columns, name="BACKGROUND")
    with pytest.raises(ValueError, match=re.escape(str(bare)) + ".*no CREF.*axis_order"):
        read_bkg(bare)
    xr.testing.assert_equal(read_bkg(bare, axis_order=stored), rate)
    # CREF5 settles it without help, and a contradicting axis_order is refused
    header = {"CREF5": cref(tuple(stems[d] for d in stored))}
    declared = write_table(tmp_path / "cref.fits", columns, header, name="BACKGROUND")
    xr.testing.assert_equal(read_bkg(declared), rate)
    with pytest.raises(ValueError, match="contradicts"):
        read_bkg(declared, axis_order=stored[::-1])


@pytest.mark.parametrize("stored", list(itertools.permutations(GADF_3D_ORDER)))
def test_bkg_3d_any_permutation(tmp_path, stored):
    sizes = {"energy": 2, "fov_lon": 3, "fov_lat": 4}
    stems = {"energy": "ENERG", "fov_lon": "DETX", "fov_lat": "DETY"}
    bin_edges = {
        "energy": np.geomspace(0.1, 10.0, 3),
        "fov_lon": np.linspace(-1.5, 1.5, 4),
        "fov_lat": np.linspace(-2.0, 2.0, 5),
    }
    # value 100 * i_energy + 10 * i_detx + i_dety: any mix-up of axes shows
    ie, ix, iy = np.indices(tuple(sizes.values()))
    expected = 100.0 * ie + 10.0 * ix + iy
    cell = np.transpose(expected, [GADF_3D_ORDER.index(d) for d in stored])
    columns = [c for d in GADF_3D_ORDER for c in edge_columns(stems[d], bin_edges[d], None)]
    columns.append(cell_column("BKG", cell, "s-1 MeV-1 sr-1"))
    path = write_table(tmp_path / "bkg3d.fits", columns, {"FOVALIGN": "RADEC"}, name="BKG_3D")
    da = read_bkg(path)
    assert da.dims == GADF_3D_ORDER
    np.testing.assert_array_equal(da.values, expected)
    for dim in GADF_3D_ORDER:
        np.testing.assert_array_equal(edges(da, dim), bin_edges[dim])
    assert da.attrs["FOVALIGN"] == "RADEC"

    # square FoV binning: ambiguous between detx and dety unless CREF7 says
    square = {**bin_edges, "fov_lat": bin_edges["fov_lon"]}
    units = {"energy": "TeV", "fov_lon": "deg", "fov_lat": "deg"}
    columns = [c for d in GADF_3D_ORDER for c in edge_columns(stems[d], square[d], units[d])]
    expected = expected[:, :, :3]
    cell = np.transpose(expected, [GADF_3D_ORDER.index(d) for d in stored])
    columns.append(cell_column("BKG", cell, "s-1 MeV-1 sr-1"))
    header = {"CREF7": cref(tuple(stems[d] for d in stored))}
    path = write_table(tmp_path / "square.fits", columns, header, name="BACKGROUND")
    np.testing.assert_array_equal(read_bkg(path).values, expected)


# ----------------------------------------------------------------------------- errors


def test_missing_file_is_named(tmp_path):
    path = tmp_path / "nowhere.fits.gz"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        read_bkg(path)


def _table_2d(path: Path, *, drop: str | None = None, theta_edges: int = 5) -> Path:
    columns = [
        *edge_columns("ENERG", np.geomspace(0.1, 10.0, 4), "TeV"),
        *edge_columns("THETA", np.linspace(0.0, 2.0, theta_edges), "deg"),
        cell_column("BKG", np.ones((3, 4)), conventions.RATE_UNIT),
    ]
    columns = [c for c in columns if c.name != drop]
    return write_table(path, columns, name="BACKGROUND")


def test_missing_column_is_named(tmp_path):
    path = _table_2d(tmp_path / "no_theta_hi.fits", drop="THETA_HI")
    with pytest.raises(ValueError, match=re.escape(str(path)) + r".*missing column THETA_HI"):
        read_bkg(path)
    path = _table_2d(tmp_path / "no_bkg.fits", drop="BKG")
    # without a data column the table is still found by its EXTNAME
    with pytest.raises(ValueError, match=re.escape(str(path)) + r".*no background data column"):
        read_bkg(path)


def test_bad_lengths_are_named(tmp_path):
    path = _table_2d(tmp_path / "short_theta.fits", theta_edges=4)
    with pytest.raises(ValueError, match=re.escape(str(path)) + r".*BACKGROUND.*fits no order"):
        read_bkg(path)


def test_lo_hi_length_mismatch_is_named(tmp_path):
    columns = [
        *edge_columns("ENERG", np.geomspace(0.1, 10.0, 4), "TeV"),
        cell_column("THETA_LO", np.linspace(0.0, 1.5, 4), "deg"),
        cell_column("THETA_HI", np.linspace(0.5, 1.5, 3), "deg"),
        cell_column("BKG", np.ones((3, 4)), conventions.RATE_UNIT),
    ]
    path = write_table(tmp_path / "lohi.fits", columns, name="BACKGROUND")
    with pytest.raises(ValueError, match=re.escape(str(path)) + r".*lengths 4 and 3"):
        read_bkg(path)


def test_hdu_not_found_is_named(tmp_path):
    path = write_bkg_2d(make_rate(2, 3), tmp_path / "bkg.fits")
    with pytest.raises(ValueError, match=re.escape(str(path)) + r".*no HDU named 'aeff'"):
        read_bkg(path, "aeff")
    events = write_table(
        tmp_path / "events.fits", [fits.Column(name="ENERGY", format="D", array=[1.0])]
    )
    with pytest.raises(ValueError, match=re.escape(str(events)) + r".*no background HDU"):
        read_bkg(events)
    with pytest.raises(ValueError, match="not a binary table"):
        read_bkg(path, 0)


def test_bad_axis_order_is_refused(tmp_path):
    path = write_bkg_2d(make_rate(3, 3), tmp_path / "bkg.fits")
    with pytest.raises(ValueError, match="ordering of"):
        read_bkg(path, axis_order=GADF_3D_ORDER)
    with pytest.raises(TypeError, match="sequence of dimension names"):
        read_bkg(path, axis_order="energy")


# ----------------------------------------------------------------------------- Gammapy 2.x


def assert_gammapy_equal(da: xr.DataArray, rate: xr.DataArray) -> None:
    """Values exact; edges to rounding, since Gammapy recomputes log edges from its nodes."""
    assert da.dims == rate.dims
    np.testing.assert_array_equal(da.values, rate.values)
    for dim in rate.dims:
        np.testing.assert_allclose(edges(da, dim), edges(rate, dim), rtol=1e-12, atol=1e-15)


def _gammapy_background(rate: xr.DataArray):
    require("gammapy")
    from gammapy.irf import Background2D
    from gammapy.maps import MapAxis

    energy = MapAxis.from_edges(edges(rate, "energy"), unit="TeV", name="energy", interp="log")
    offset = MapAxis.from_edges(edges(rate, "offset"), unit="deg", name="offset")
    return Background2D(axes=[energy, offset], data=rate.values, unit=rate.attrs["units"])


def test_we_read_what_gammapy_writes(tmp_path):
    require("gammapy")
    rate = make_rate(4, 7)
    path = tmp_path / "gammapy.fits.gz"
    _gammapy_background(rate).write(path)
    header = fits.getheader(path, "BACKGROUND")
    # Gammapy writes the transpose of the GADF-recommended layout, and says nothing about it
    assert header["TDIM5"] == "(4,7)"
    assert not any(key.startswith("CREF") for key in header)
    da = read_bkg(path)
    assert_gammapy_equal(da, rate)
    assert da.attrs["HDUCLAS2"] == "BKG"


def test_square_file_from_gammapy_needs_axis_order(tmp_path):
    require("gammapy")
    rate = make_rate(5, 5)
    path = tmp_path / "gammapy_square.fits"
    hdu = _gammapy_background(rate).to_table_hdu()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*axis_order"):
        read_bkg(path)
    assert_gammapy_equal(read_bkg(path, axis_order=("offset", "energy")), rate)
    # reading it as the GADF layout would silently transpose: the values are not symmetric
    assert not np.array_equal(read_bkg(path, axis_order=GADF_2D_ORDER).values, rate.values)


def test_gammapy_reads_what_we_write(tmp_path):
    require("gammapy")
    import astropy.units as u
    from gammapy.irf import Background2D

    rate = make_rate(6, 9)
    path = write_bkg_2d(rate, tmp_path / "ours.fits.gz")
    bkg = Background2D.read(path, hdu="BACKGROUND")
    np.testing.assert_array_equal(bkg.quantity.to_value(conventions.RATE_UNIT), rate.values)
    np.testing.assert_allclose(bkg.axes["energy"].edges.to_value("TeV"), edges(rate, "energy"))
    np.testing.assert_allclose(bkg.axes["offset"].edges.to_value("deg"), edges(rate, "offset"))
    at_nodes = bkg.evaluate(
        energy=rate.energy.values[:, None] * u.TeV, offset=rate.offset.values[None, :] * u.deg
    )
    np.testing.assert_allclose(at_nodes.to_value(conventions.RATE_UNIT), rate.values, rtol=1e-10)


def test_gammapy_misreads_square_gadf_layout(tmp_path, caplog):
    """Characterises Gammapy 2.x, not us: it ignores CREF and assumes its own layout.

    For a square table in the GADF-recommended layout (ours, the GADF example's,
    H.E.S.S. DR1's) Gammapy returns the transpose and only logs an error. If this
    test starts failing, Gammapy has learnt to read CREF: update the docs.
    """
    require("gammapy")
    from gammapy.irf import Background2D

    rate = make_rate(5, 5)
    path = write_bkg_2d(rate, tmp_path / "square.fits")
    with caplog.at_level(logging.ERROR):
        bkg = Background2D.read(path, hdu="BACKGROUND")
    assert "Ambiguous axes order" in caplog.text
    np.testing.assert_array_equal(bkg.quantity.to_value(conventions.RATE_UNIT), rate.values.T)


def test_gammapy_reads_dr1_in_the_gadf_order(dr1_dir):
    """Gammapy takes a DR1 cell as (energy, DETX, DETY): the order we are told to pass."""
    require("gammapy")
    from gammapy.irf import Background3D

    path = dr1_dir / "data" / "hess_dl3_dr1_obs_id_020136.fits.gz"
    ours = read_bkg(path, "bkg", axis_order=GADF_3D_ORDER, reverse_lon=False)
    theirs = Background3D.read(path, hdu="BKG")
    assert [ax.name for ax in theirs.axes] == ["energy", "fov_lon", "fov_lat"]
    np.testing.assert_array_equal(theirs.quantity.to_value(conventions.RATE_UNIT), ours.values)


@pytest.mark.parametrize("shape", [(15, 99), (5, 5), (1, 1), (3, 7)])
def test_writer_matches_the_hdu_bytes(tmp_path, shape):
    """write_bkg_2d reuses one table for many files; it writes what bkg_2d_hdu holds."""
    from xbkg.io.fitsfile import fits_bytes

    rate = make_rate(*shape)
    header = {
        "GROUP_ID": (3, "a comment"),
        "BKGTIME": "ONTIME",
        "HIERARCH ZEN_PNT_MIN": 12.5,
        "LONGTEXT": "x" * 60,
        "FLAG": True,
        "HDUCLAS3": "POINT-LIKE",
    }
    path = write_bkg_2d(rate, tmp_path / "fast.fits", header=header)
    reference = fits.HDUList([fits.PrimaryHDU(), bkg_2d_hdu(rate, header=header)])
    assert path.read_bytes() == fits_bytes(reference, compress=False)

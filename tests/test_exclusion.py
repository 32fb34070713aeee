"""Exclusion regions: catalogues, event masks, exact ring fractions, the Gammapy 0.6 wedge."""

from __future__ import annotations

import itertools
import re

import astropy.units as u
import numpy as np
import pytest
import xarray as xr
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table

from conftest import require
from xbkg import exclusion as ex
from xbkg.axes import offset_edges, ring_solid_angle
from xbkg.errors import CatalogError
from xbkg.io import catalog
from xbkg.regions import combine_regions, exclusion_circles

hypothesis = require("hypothesis")
st = require("hypothesis.strategies")
given, settings = hypothesis.given, hypothesis.settings

CRAB = (83.633, 22.0145)
#: Crab position angle seen from each crab4 run pointing (Gammapy 0.6 analysis).
CRAB_PA = {23523: 359.97, 23526: 180.03, 23559: 270.31, 23592: 89.69}


def _angle_diff(a, b):
    """Smallest difference between two angles in deg (handles the 0/360 wrap)."""
    d = np.abs(np.asarray(a) - np.asarray(b)) % 360.0
    return np.minimum(d, 360.0 - d)


def _offset_point(ra, dec, pa, sep):
    """Position at angle ``pa`` and distance ``sep`` (deg) from (ra, dec), computed by astropy."""
    c = SkyCoord(ra * u.deg, dec * u.deg).directional_offset_by(pa * u.deg, sep * u.deg)
    return c.ra.deg, c.dec.deg


def _circle_at(ra_pnt, dec_pnt, pa, sep, radius, name="c"):
    ra, dec = _offset_point(ra_pnt, dec_pnt, pa, sep)
    return exclusion_circles(ra, dec, radius, name)


def _excluded_area(edges, regions, ra_pnt, dec_pnt, **kwargs):
    """Excluded solid angle (sr) summed over the rings."""
    frac = ex.ring_excluded_fraction(edges, regions, ra_pnt, dec_pnt, **kwargs)
    return float(np.sum(frac * ring_solid_angle(offset=edges).values))


def _cap(radius_deg):
    """Solid angle of a cap, 2 pi (1 - cos R), written without cancellation."""
    return 4 * np.pi * np.sin(0.5 * np.deg2rad(radius_deg)) ** 2


def _lens(r1, r2, dist):
    """Area (sr) of the intersection of two spherical caps (radii r1, r2, centres dist apart).

    Gauss-Bonnet on the lens: with a1, a2, b the angles of the spherical triangle
    (centre 1, centre 2, crossing point) at its three corners,
    area = 2 pi - 2 a1 cos r1 - 2 a2 cos r2 - 2 b
         = 4 a1 sin²(r1/2) + 4 a2 sin²(r2/2) - 2 E,
    E = a1 + a2 + b - pi being the triangle's spherical excess, which
    L'Huilier's formula gives without cancellation.
    """
    r1, r2, dist = np.deg2rad([r1, r2, dist])
    a1 = np.arccos((np.cos(r2) - np.cos(r1) * np.cos(dist)) / (np.sin(r1) * np.sin(dist)))
    a2 = np.arccos((np.cos(r1) - np.cos(r2) * np.cos(dist)) / (np.sin(r2) * np.sin(dist)))
    s = 0.5 * (r1 + r2 + dist)
    excess = 4 * np.arctan(
        np.sqrt(
            np.tan(s / 2) * np.tan((s - r1) / 2) * np.tan((s - r2) / 2) * np.tan((s - dist) / 2)
        )
    )
    return 4 * a1 * np.sin(r1 / 2) ** 2 + 4 * a2 * np.sin(r2 / 2) ** 2 - 2 * excess


def _grid_fraction(edges, regions, ra_pnt, dec_pnt, n_u=60, n_az=1440):
    """Brute force: fraction of a fine equal-area grid in each ring inside any circle (astropy)."""
    out = []
    centres = SkyCoord(regions.ra.values * u.deg, regions.dec.values * u.deg)
    pointing = SkyCoord(ra_pnt * u.deg, dec_pnt * u.deg)
    for t1, t2 in itertools.pairwise(edges):
        # Midpoints in cos(offset) and azimuth: cells of equal solid angle.
        c1, c2 = np.cos(np.deg2rad([t1, t2]))
        cos_r = c1 + (np.arange(n_u) + 0.5) / n_u * (c2 - c1)
        az = (np.arange(n_az) + 0.5) / n_az * 360.0
        sep, pa = np.meshgrid(np.rad2deg(np.arccos(cos_r)), az)
        points = pointing.directional_offset_by(pa.ravel() * u.deg, sep.ravel() * u.deg)
        inside = np.zeros(points.shape, dtype=bool)
        for centre, radius in zip(centres, regions.radius.values, strict=True):
            inside |= points.separation(centre).deg <= radius
        out.append(inside.mean())
    return np.array(out)


@pytest.fixture(scope="module")
def crab4_pointings(crab4_dir):
    obs = Table.read(crab4_dir / "obs-index.fits.gz")
    return {int(r["OBS_ID"]): (float(r["RA_PNT"]), float(r["DEC_PNT"])) for r in obs}


# ---------------------------------------------------------------------------
# geometry helpers against astropy
# ---------------------------------------------------------------------------


def test_separation_and_position_angle_match_astropy():
    rng = np.random.default_rng(42)
    n = 20000
    ra1, ra2 = rng.uniform(0, 360, (2, n))
    dec1 = np.rad2deg(np.arcsin(rng.uniform(-1, 1, n)))
    dec2 = np.rad2deg(np.arcsin(rng.uniform(-1, 1, n)))
    # Include tiny separations, the poles and the RA wrap, where naive formulas fail.
    ra2[:5000] = ra1[:5000] + rng.normal(0, 1e-4, 5000)
    dec2[:5000] = np.clip(dec1[:5000] + rng.normal(0, 1e-4, 5000), -90, 90)
    dec1[5000:5100] = 90.0
    ra1[5100:5200], ra2[5100:5200] = 359.9999, 0.0001
    c1 = SkyCoord(ra1 * u.deg, dec1 * u.deg)
    c2 = SkyCoord(ra2 * u.deg, dec2 * u.deg)
    np.testing.assert_allclose(
        ex.separation(ra1, dec1, ra2, dec2), c1.separation(c2).deg, atol=1e-9
    )
    pa = ex.position_angle(ra1, dec1, ra2, dec2)
    assert np.all((pa >= 0) & (pa < 360))
    diff = _angle_diff(pa, c1.position_angle(c2).deg)
    assert np.max(diff[5000:]) < 1e-9
    # At 1e-4 deg separation the position angle is ill-conditioned (an RA rounding
    # of 6e-14 deg turns it by 3e-8 deg); both codes agree as well as that allows.
    assert np.max(diff[:5000]) < 1e-6


def test_position_angle_wraps_negative_zero_to_zero():
    # Straight North but a hair West: atan2 gives -tiny, which must wrap to [0, 360).
    pa = ex.position_angle(10.0, 0.0, 10.0 - 1e-15, 1.0)
    assert 0 <= pa < 360
    assert ex.position_angle(10.0, 0.0, 10.0, 1.0) == 0.0


# ---------------------------------------------------------------------------
# region lists
# ---------------------------------------------------------------------------


def test_exclusion_circles_layout():
    reg = exclusion_circles([10.0, -20.0], [5.0, -30.0], 0.5, ["a", "b"])
    assert reg.sizes == {"source": 2}
    assert set(reg.data_vars) == {"ra", "dec", "radius", "name"}
    np.testing.assert_array_equal(reg.ra.values, [10.0, 340.0])  # RA wrapped into [0, 360)
    np.testing.assert_array_equal(reg.radius.values, [0.5, 0.5])
    assert list(reg.name.values) == ["a", "b"]
    for v in ("ra", "dec", "radius"):
        assert reg[v].attrs["units"] == "deg"
    single = exclusion_circles(1.0, 2.0, 0.3)
    assert list(single.name.values) == ["circle 0"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (([1.0], [95.0], [0.3]), r"\|dec\| > 90"),
        (([1.0], [0.0], [0.0]), r"radius not in \(0, 180\)"),
        (([1.0, 2.0], [0.0, 0.0], [0.3, -1.0]), r"circles 1 \('circle 1'\)"),
        (([np.nan], [0.0], [0.3]), "non-finite"),
        (([1.0, 2.0], [0.0, 0.0], [0.3, 0.3, 0.3]), "one value per circle"),
    ],
)
def test_exclusion_circles_validation(args, message):
    with pytest.raises(ValueError, match=message):
        exclusion_circles(*args)


def test_exclusion_circles_name_count():
    with pytest.raises(ValueError, match="2 names for 1 circles"):
        exclusion_circles(1.0, 2.0, 0.3, ["a", "b"])


def test_combine_regions_and_netcdf_round_trip(tmp_path):
    a = exclusion_circles([1.0, 2.0], [3.0, 4.0], 0.5, ["a", "bb"])
    b = exclusion_circles(5.0, 6.0, 1.0, "a much longer name")
    both = combine_regions(a, b)
    assert both.sizes["source"] == 3
    assert list(both.name.values) == ["a", "bb", "a much longer name"]
    np.testing.assert_array_equal(both.radius.values, [0.5, 0.5, 1.0])
    path = tmp_path / "regions.nc"
    both.to_netcdf(path, engine="netcdf4")
    xr.testing.assert_identical(xr.load_dataset(path, engine="netcdf4"), both)


def test_combine_regions_empty():
    empty = combine_regions()
    assert empty.sizes["source"] == 0
    assert set(empty.data_vars) == {"ra", "dec", "radius", "name"}
    assert empty.radius.attrs["units"] == "deg"
    # An empty list behaves everywhere as "no exclusion".
    assert combine_regions(empty, empty).sizes["source"] == 0
    assert ex.outside_regions([1.0, 2.0], [3.0, 4.0], empty).all()
    np.testing.assert_array_equal(ex.ring_excluded_fraction([0, 1, 2], empty, 0.0, 0.0), [0, 0])
    assert ex.nearest_source_wedge(empty, 0.0, 0.0) is None
    assert ex.regions_in_fov(empty, 0.0, 0.0, 2.5).sizes["source"] == 0


def test_combine_regions_rejects_non_regions():
    with pytest.raises(TypeError, match=r"xarray\.Dataset"):
        combine_regions([exclusion_circles(1.0, 2.0, 0.3)])
    with pytest.raises(ValueError, match="missing"):
        combine_regions(xr.Dataset({"ra": ("source", [1.0])}))


def test_regions_in_fov_is_strict():
    reg = combine_regions(
        _circle_at(50.0, 10.0, 30.0, 3.0, 0.5, "touching"),
        _circle_at(50.0, 10.0, 60.0, 2.9, 0.5, "inside"),
        _circle_at(50.0, 10.0, 90.0, 10.0, 0.5, "far"),
    )
    # The first circle's edge is at 2.5 deg from the pointing (up to rounding).
    reach = float(ex.separation(50.0, 10.0, reg.ra[0], reg.dec[0]) - 0.5)
    np.testing.assert_allclose(reach, 2.5, atol=1e-9)
    names = list(ex.regions_in_fov(reg, 50.0, 10.0, reach).name.values)
    assert names == ["inside"]
    names = list(ex.regions_in_fov(reg, 50.0, 10.0, reach + 1e-9).name.values)
    assert names == ["touching", "inside"]


def test_regions_in_fov_crab_runs(gammacat_path, crab4_pointings):
    regions = catalog.read_catalog(gammacat_path)
    found = {
        obs_id: sorted(ex.regions_in_fov(regions, ra, dec, 2.5).name.values)
        for obs_id, (ra, dec) in crab4_pointings.items()
    }
    assert found == {
        23523: ["Crab nebula"],
        23526: ["Crab nebula"],
        23559: ["Crab nebula"],
        # Gammapy 0.6 ignored RGB J0521+212 here because the Crab is nearer.
        23592: ["Crab nebula", "RGB J0521+212"],
    }


# ---------------------------------------------------------------------------
# catalogues
# ---------------------------------------------------------------------------


def test_read_gammacat(gammacat_path):
    regions = catalog.read_catalog(gammacat_path)
    raw = Table.read(gammacat_path)
    assert regions.sizes["source"] == len(raw) == 162
    assert regions.attrs["catalog"] == "gammacat.fits.gz"
    crab = regions.isel(source=list(regions.name.values).index("Crab nebula"))
    np.testing.assert_allclose([crab.ra, crab.dec], CRAB, atol=1e-3)
    # gamma-cat gives the Crab no morph_sigma, so it gets the default radius.
    assert np.ma.is_masked(raw["morph_sigma"][list(raw["common_name"]).index("Crab nebula")])
    assert float(crab.radius) == 0.3
    # Minimum radius: every radius >= 0.3; sigmas above it are kept as they are.
    sigma = raw["morph_sigma"].filled(np.nan).astype(float)
    assert regions.radius.min() == 0.3
    big = sigma > 0.3
    assert big.sum() > 0
    np.testing.assert_allclose(regions.radius.values[big], sigma[big], rtol=1e-7)
    np.testing.assert_array_equal(regions.radius.values[~big], 0.3)


def test_read_catalog_missing_file_is_a_catalog_error(tmp_path):
    """As documented: a CatalogError (a ValueError) naming the file, like every other problem."""
    path = tmp_path / "no-such-catalogue.fits.gz"
    with pytest.raises(CatalogError, match=re.escape(str(path)) + ": catalogue file not found"):
        catalog.read_catalog(path)


def test_read_gammacat_without_minimum(gammacat_path):
    regions = catalog.read_catalog(gammacat_path, min_radius=0.0, default_radius=0.2)
    sigma = Table.read(gammacat_path)["morph_sigma"].filled(np.nan).astype(float)
    known = np.isfinite(sigma)
    np.testing.assert_allclose(regions.radius.values[known], sigma[known], rtol=1e-7)
    np.testing.assert_array_equal(regions.radius.values[~known], 0.2)
    assert regions.radius.min() < 0.1  # small measured sizes are not raised


def test_read_hgps(hgps_path):
    # The file holds several tables; the sources are in HGPS_SOURCES (78 rows).
    regions = catalog.read_catalog(hgps_path, min_radius=0.0)
    assert regions.sizes["source"] == 78
    names = list(regions.name.values)
    vela = regions.isel(source=names.index("HESS J0835-455"))
    np.testing.assert_allclose(
        [vela.ra, vela.dec, vela.radius], [128.8867, -45.6589, 0.5848], atol=1e-4
    )
    # Sources without Size get the default radius.
    size = Table.read(hgps_path, hdu="HGPS_SOURCES")["Size"]
    missing = np.ma.getmaskarray(size) | ~np.isfinite(np.ma.getdata(size))
    assert missing.sum() > 0
    np.testing.assert_array_equal(regions.radius.values[missing], 0.3)
    assert catalog.read_catalog(hgps_path).radius.min() == 0.3


def test_read_hgps_with_other_radius_column(hgps_path):
    with pytest.raises(ValueError, match=r"size \(morph_sigma\)"):
        catalog.read_catalog(hgps_path, radius_column="morph_sigma")
    regions = catalog.read_catalog(hgps_path, radius_column="Size_UL", min_radius=0.0)
    assert regions.sizes["source"] == 78


def _generic_table(radius_unit="arcmin"):
    table = Table()
    table["Name"] = ["src A", "src B", "src C"]
    table["RA"] = [10.0, 20.0, 30.0] * u.deg
    table["DEC"] = [-5.0, 0.0, 5.0] * u.deg
    table["Radius"] = u.Quantity([12.0, 30.0, np.nan], radius_unit)
    return table


def test_read_generic_fits_table_with_units(tmp_path):
    path = tmp_path / "exclusion.fits"
    # A first table without the needed columns: the right one must be found.
    other = fits.BinTableHDU(Table({"X": [1.0]}), name="OTHER")
    hdus = fits.HDUList([fits.PrimaryHDU(), other, fits.table_to_hdu(_generic_table())])
    hdus.writeto(path)
    regions = catalog.read_catalog(path, min_radius=0.25)
    assert list(regions.name.values) == ["src A", "src B", "src C"]
    np.testing.assert_allclose(regions.ra.values, [10.0, 20.0, 30.0])
    # 12 arcmin = 0.2 deg -> raised to 0.25; 30 arcmin = 0.5 deg; NaN -> default 0.3.
    np.testing.assert_allclose(regions.radius.values, [0.25, 0.5, 0.3])


def test_read_generic_ecsv_unitless_and_lowercase(tmp_path):
    table = Table({"ra": [350.0, -10.0], "dec": [1.0, 2.0], "radius": [0.4, 0.1]})
    path = tmp_path / "circles.ecsv"
    table.write(path)
    regions = catalog.read_catalog(path, min_radius=0.0)
    np.testing.assert_allclose(regions.ra.values, [350.0, 350.0])
    np.testing.assert_allclose(regions.radius.values, [0.4, 0.1])  # unitless = deg
    assert list(regions.name.values) == ["row 0", "row 1"]


def test_regions_from_table_in_memory():
    regions = catalog.regions_from_table(_generic_table("deg"), min_radius=0.0)
    np.testing.assert_allclose(regions.radius.values, [12.0, 30.0, 0.3])


def test_catalogue_errors_name_file_and_columns(tmp_path):
    path = tmp_path / "bad.fits"
    Table({"GLON": [1.0], "GLAT": [2.0], "Size": [0.1]}).write(path)
    with pytest.raises(ValueError, match=r"bad\.fits") as err:
        catalog.read_catalog(path)
    text = str(err.value)
    assert "position (RA/DEC)" in text
    assert "RAJ2000/DEJ2000 or RA/DEC" in text
    assert "Radius or Size or morph_sigma" in text

    ecsv = tmp_path / "nosize.ecsv"
    Table({"RA": [1.0], "DEC": [2.0]}).write(ecsv)
    with pytest.raises(ValueError, match=r"nosize\.ecsv lacks the size column") as err:
        catalog.read_catalog(ecsv)
    assert "'RA', 'DEC'" in str(err.value)

    with pytest.raises(CatalogError, match=r"missing\.fits.*not found"):
        catalog.read_catalog(tmp_path / "missing.fits")


def test_catalogue_bad_rows_are_errors(tmp_path):
    table = _generic_table()
    table["DEC"][1] = np.nan
    with pytest.raises(ValueError, match=r"invalid positions in rows 1 \('src B'\)"):
        catalog.regions_from_table(table)
    table = _generic_table()
    table["Radius"][0] = -1.0
    with pytest.raises(ValueError, match=r"rows 0 \('src A'\)"):
        catalog.regions_from_table(table, min_radius=0.0)
    table = _generic_table()
    table["Radius"].unit = u.m
    with pytest.raises(ValueError, match="'Radius' of the table has unit m, which is not an angle"):
        catalog.regions_from_table(table)
    table = _generic_table()
    table["RA"] = ["00:40:00", "01:20:00", "02:00:00"]
    with pytest.raises(ValueError, match="'RA' of the table is not numeric"):
        catalog.regions_from_table(table)
    with pytest.raises(ValueError, match="min_radius >= 0"):
        catalog.regions_from_table(_generic_table(), min_radius=-1.0)


# ---------------------------------------------------------------------------
# outside_regions
# ---------------------------------------------------------------------------


def test_outside_regions_matches_astropy():
    rng = np.random.default_rng(1)
    n = 200_000
    ra = (CRAB[0] + rng.uniform(-3, 3, n)).astype(np.float32)
    dec = (CRAB[1] + rng.uniform(-3, 3, n)).astype(np.float32)
    regions = combine_regions(
        exclusion_circles(*CRAB, 0.3, "Crab"),
        exclusion_circles([80.4415, 84.0], [21.2143, 22.5], [0.3, 0.5]),
        exclusion_circles(200.0, -40.0, 1.0, "elsewhere"),
    )
    keep = ex.outside_regions(ra, dec, regions)
    events = SkyCoord(ra.astype(float) * u.deg, dec.astype(float) * u.deg)
    inside = np.zeros(n, dtype=bool)
    margin = np.zeros(n, dtype=bool)
    for r in range(regions.sizes["source"]):
        c = SkyCoord(regions.ra.values[r] * u.deg, regions.dec.values[r] * u.deg)
        sep = events.separation(c).deg
        inside |= sep <= regions.radius.values[r]
        margin |= np.abs(sep - regions.radius.values[r]) < 1e-9
    assert keep.dtype == bool
    assert 0.02 < inside.mean() < 0.1
    np.testing.assert_array_equal(keep[~margin], ~inside[~margin])


def test_outside_regions_edge_counts_as_inside():
    regions = exclusion_circles(10.0, 0.0, 0.5)
    keep = ex.outside_regions([10.0, 10.0, 10.0, 10.0], [0.5, 0.5000001, 0.4999999, -0.5], regions)
    np.testing.assert_array_equal(keep, [False, True, False, False])


def test_outside_regions_shapes_poles_and_nan():
    regions = exclusion_circles([0.0, 123.0], [90.0, -10.0], [1.0, 0.2])
    ra = np.array([[45.0, 270.0], [123.0, np.nan]])
    dec = np.array([[89.5, 88.9], [-10.1, 0.0]])
    keep = ex.outside_regions(ra, dec, regions)
    assert keep.shape == (2, 2)
    # Near the pole the RA difference is large but the distance small.
    np.testing.assert_array_equal(keep, [[False, True], [False, True]])
    with pytest.raises(ValueError, match="same shape"):
        ex.outside_regions([1.0, 2.0], [1.0], regions)


# ---------------------------------------------------------------------------
# ring_excluded_fraction
# ---------------------------------------------------------------------------


def test_ring_fraction_source_at_centre_is_analytic():
    edges = offset_edges()
    radius = 0.3
    frac = ex.ring_excluded_fraction(edges, exclusion_circles(*CRAB, radius), *CRAB)
    t = np.deg2rad(edges)
    expected = np.clip(
        (np.cos(t[:-1]) - np.cos(np.clip(np.deg2rad(radius), t[:-1], t[1:])))
        / (np.cos(t[:-1]) - np.cos(t[1:])),
        0,
        1,
    )
    np.testing.assert_allclose(frac, expected, atol=1e-12)
    assert frac[0] == pytest.approx(1.0, abs=1e-12)  # a quadrature, clipped to [0, 1]
    assert 0 < frac[1] < 1  # 0.3 deg lies inside the second ring
    assert np.all(frac[2:] == 0)


@pytest.mark.parametrize(
    ("sep", "radius"),
    [
        (0.5, 0.3),  # straddles several rings
        (0.3, 0.3),  # the circle passes through the pointing
        (0.1, 0.3),  # the circle contains the pointing
        (1.2, 0.25),  # off axis
        (4.3, 0.6),  # large offsets (rings out to 5 deg)
        (2.0, 1.5),  # large circle containing the pointing
    ],
)
def test_ring_fraction_single_circle_total_is_cap_area(sep, radius):
    edges = offset_edges(5.0, 150)
    regions = _circle_at(*CRAB, 37.0, sep, radius)
    frac = ex.ring_excluded_fraction(edges, regions, *CRAB)
    assert np.all((frac >= 0) & (frac <= 1))
    np.testing.assert_allclose(_excluded_area(edges, regions, *CRAB), _cap(radius), rtol=1e-9)
    # The rings touched are exactly those within [sep - radius, sep + radius].
    lo, hi = edges[:-1], edges[1:]
    reached = (lo < sep + radius) & (hi > sep - radius)
    assert np.all(frac[~reached] == 0)
    assert np.all(frac[reached] > 0)


@pytest.mark.parametrize(("sep", "radius"), [(90.0, 100.0), (10.0, 170.0), (179.0, 5.0)])
def test_ring_fraction_whole_sphere(sep, radius):
    # Circles reaching past the antipode of the pointing; rings cover the sphere.
    edges = np.linspace(0.0, 180.0, 37)
    regions = _circle_at(0.0, 90.0, 0.0, sep, radius)
    np.testing.assert_allclose(_excluded_area(edges, regions, 0.0, 90.0), _cap(radius), rtol=1e-12)


def test_ring_fraction_tangent_to_ring_edges():
    # Circle edges exactly on ring edges: |d - R| = 1.0 and d + R = 1.5 are both edges.
    edges = np.array([0.0, 0.5, 1.0, 1.25, 1.5, 2.0])
    regions = _circle_at(*CRAB, 200.0, 1.25, 0.25)
    frac = ex.ring_excluded_fraction(edges, regions, *CRAB)
    assert frac[0] == frac[1] == frac[4] == 0
    np.testing.assert_allclose(frac[2:4], _grid_fraction(edges, regions, *CRAB)[2:4], atol=5e-4)
    np.testing.assert_allclose(_excluded_area(edges, regions, *CRAB), _cap(0.25), rtol=1e-9)


def test_two_overlapping_circles_give_the_union():
    edges = offset_edges(3.0, 120)
    r1, r2 = 0.4, 0.3
    a = _circle_at(*CRAB, 30.0, 0.8, r1, "a")
    b = _circle_at(*CRAB, 50.0, 1.1, r2, "b")
    both = combine_regions(a, b)
    dist = float(ex.separation(a.ra, a.dec, b.ra, b.dec)[0])
    assert abs(r1 - r2) < dist < r1 + r2  # they do overlap
    union = _cap(r1) + _cap(r2) - _lens(r1, r2, dist)
    np.testing.assert_allclose(_excluded_area(edges, both, *CRAB), union, rtol=1e-9)
    fa = ex.ring_excluded_fraction(edges, a, *CRAB)
    fb = ex.ring_excluded_fraction(edges, b, *CRAB)
    fab = ex.ring_excluded_fraction(edges, both, *CRAB)
    assert np.all(fab <= fa + fb + 1e-12)
    assert np.any(fab < fa + fb - 1e-3)  # not the sum where they overlap
    assert np.all(fab >= np.maximum(fa, fb) - 1e-12)


def test_duplicate_and_nested_circles_count_once():
    edges = offset_edges()
    big = _circle_at(*CRAB, 100.0, 1.0, 0.5, "big")
    small = _circle_at(*CRAB, 110.0, 1.1, 0.2, "small")  # inside big
    f_big = ex.ring_excluded_fraction(edges, big, *CRAB)
    for regions in (combine_regions(big, big), combine_regions(small, big)):
        np.testing.assert_allclose(
            ex.ring_excluded_fraction(edges, regions, *CRAB), f_big, atol=1e-9
        )


def test_circle_outside_the_rings_excludes_nothing():
    edges = offset_edges()
    regions = combine_regions(
        _circle_at(*CRAB, 45.0, 2.9, 0.39),  # reaches 2.51 deg: just outside 2.5
        _circle_at(*CRAB, 45.0, 120.0, 5.0),  # far away
    )
    np.testing.assert_array_equal(ex.ring_excluded_fraction(edges, regions, *CRAB), 0.0)
    # Rings that start above the circle.
    inner = _circle_at(*CRAB, 45.0, 0.5, 0.3)
    np.testing.assert_array_equal(ex.ring_excluded_fraction([1.0, 2.0, 2.5], inner, *CRAB), 0.0)


@pytest.mark.parametrize(
    "circles",
    [
        [(10.0, 0.5, 0.3)],  # straddling rings
        [(300.0, 0.15, 0.3)],  # containing the pointing
        [(10.0, 0.8, 0.4), (60.0, 1.1, 0.3), (200.0, 3.5, 1.2)],  # overlap + large offsets
    ],
)
def test_ring_fraction_against_brute_force_grid(circles):
    edges = np.array([0.0, 0.1, 0.25, 0.5, 0.8, 1.0, 1.5, 2.5, 3.5, 5.0])
    ra_pnt, dec_pnt = 200.0, -60.0
    regions = combine_regions(*(_circle_at(ra_pnt, dec_pnt, *c) for c in circles))
    exact = ex.ring_excluded_fraction(edges, regions, ra_pnt, dec_pnt)
    brute = _grid_fraction(edges, regions, ra_pnt, dec_pnt)
    np.testing.assert_allclose(exact, brute, atol=5e-4)


def test_ring_fraction_quadrature_converged():
    edges = offset_edges()
    regions = combine_regions(
        _circle_at(*CRAB, 10.0, 0.8, 0.4),
        _circle_at(*CRAB, 60.0, 1.1, 0.3),
        _circle_at(*CRAB, 62.0, 0.2, 0.25),
        _circle_at(*CRAB, 250.0, 2.3, 0.5),
    )
    default = ex.ring_excluded_fraction(edges, regions, *CRAB)
    fine = ex.ring_excluded_fraction(edges, regions, *CRAB, n_nodes=64)
    assert np.max(np.abs(default - fine)) < 1e-8
    assert np.count_nonzero(default) > 30


def test_ring_fraction_crab_run_23592_uses_every_source(gammacat_path, crab4_pointings):
    regions = catalog.read_catalog(gammacat_path)
    ra, dec = crab4_pointings[23592]
    near = ex.regions_in_fov(regions, ra, dec, 2.5)
    edges = offset_edges()
    both = ex.ring_excluded_fraction(edges, near, ra, dec)
    crab_only = ex.ring_excluded_fraction(
        edges, near.isel(source=near.name == "Crab nebula"), ra, dec
    )
    assert np.all(both >= crab_only - 1e-12)
    assert np.any(both > crab_only + 0.01)
    # Equal to passing the whole catalogue: far sources are skipped.
    np.testing.assert_allclose(ex.ring_excluded_fraction(edges, regions, ra, dec), both, atol=1e-15)


def test_ring_fraction_input_validation():
    regions = exclusion_circles(0.0, 0.0, 0.3)
    with pytest.raises(ValueError, match="increasing"):
        ex.ring_excluded_fraction([0.0, 2.0, 1.0], regions, 0.0, 0.0)
    with pytest.raises(ValueError, match="180"):
        ex.ring_excluded_fraction([0.0, 200.0], regions, 0.0, 0.0)


circle_strategy = st.tuples(
    st.floats(0.0, 360.0),  # position angle from the pointing
    st.floats(0.0, 3.0),  # separation
    st.floats(0.01, 1.5),  # radius
)


@settings(max_examples=60, deadline=None)
@given(
    circles=st.lists(circle_strategy, min_size=1, max_size=4),
    dec_pnt=st.floats(-85.0, 85.0),
    scale=st.floats(1.0, 2.0),
)
def test_ring_fraction_properties(circles, dec_pnt, scale):
    edges = offset_edges(3.0, 40)
    ra_pnt = 30.0
    pa, sep, radius = (np.array(v) for v in zip(*circles, strict=True))
    # Centres placed with the module's own inverse would be circular; a simple
    # destination-point formula is enough to get valid positions here.
    p, s, d0 = np.deg2rad(pa), np.deg2rad(sep), np.deg2rad(dec_pnt)
    dec = np.arcsin(np.sin(d0) * np.cos(s) + np.cos(d0) * np.sin(s) * np.cos(p))
    ra = ra_pnt + np.rad2deg(
        np.arctan2(np.sin(p) * np.sin(s) * np.cos(d0), np.cos(s) - np.sin(d0) * np.sin(dec))
    )
    dec = np.rad2deg(dec)
    regions = exclusion_circles(ra, dec, radius)
    frac = ex.ring_excluded_fraction(edges, regions, ra_pnt, dec_pnt)
    assert frac.shape == (39,)
    assert np.all((frac >= 0) & (frac <= 1))
    # Monotonic in the radius.
    larger = exclusion_circles(ra, dec, np.minimum(radius * scale, 179.0))
    assert np.all(ex.ring_excluded_fraction(edges, larger, ra_pnt, dec_pnt) >= frac - 1e-8)
    # A union: at least each circle alone, at most their sum (within the documented
    # quadrature accuracy, a few 1e-9 for nearly tangent circles).
    singles = np.array(
        [
            ex.ring_excluded_fraction(edges, regions.isel(source=[k]), ra_pnt, dec_pnt)
            for k in range(len(pa))
        ]
    )
    assert np.all(frac >= singles.max(axis=0) - 1e-8)
    assert np.all(frac <= singles.sum(axis=0) + 1e-8)
    # A single circle well inside the rings covers exactly its cap area.
    if len(pa) == 1 and sep[0] + radius[0] < 2.9:
        np.testing.assert_allclose(
            _excluded_area(edges, regions, ra_pnt, dec_pnt), _cap(radius[0]), rtol=1e-8
        )


# ---------------------------------------------------------------------------
# Gammapy 0.6 wedge
# ---------------------------------------------------------------------------


def test_wedge_for_crab_runs(gammacat_path, crab4_pointings):
    # Gammapy 0.6: gamma-cat radii without a minimum (the Crab gets the 0.3 default).
    regions = catalog.read_catalog(gammacat_path, min_radius=0.0)
    k = list(regions.name.values).index("Crab nebula")
    crab = SkyCoord(regions.ra.values[k], regions.dec.values[k], unit="deg")
    for obs_id, (ra, dec) in crab4_pointings.items():
        wedge = ex.nearest_source_wedge(regions, ra, dec)
        assert wedge is not None
        phi, half = wedge
        assert _angle_diff(phi, CRAB_PA[obs_id]) < 0.01
        pointing = SkyCoord(ra, dec, unit="deg")
        assert _angle_diff(phi, pointing.position_angle(crab).deg) < 1e-9
        sep = pointing.separation(crab).deg
        np.testing.assert_allclose(half, np.rad2deg(np.arctan(0.3 / sep)), rtol=1e-12)
        np.testing.assert_allclose(ex.wedge_fraction(wedge), 2 * half / 360)
    # 0.5 deg from the Crab: arctan(0.3 / 0.5) = 30.96 deg, a fraction of 0.172.
    phi, half = ex.nearest_source_wedge(regions, *crab4_pointings[23523])
    np.testing.assert_allclose(half, 30.96, atol=0.01)
    assert phi + half > 360  # the branch with the (correct) wrap


def test_nearest_source_wedge_only_nearest_and_strict_fov():
    ra_pnt, dec_pnt = 40.0, 20.0
    regions = combine_regions(
        _circle_at(ra_pnt, dec_pnt, 90.0, 1.5, 0.3, "near"),
        _circle_at(ra_pnt, dec_pnt, 270.0, 1.6, 1.0, "second"),
    )
    phi, half = ex.nearest_source_wedge(regions, ra_pnt, dec_pnt)
    np.testing.assert_allclose([phi, half], [90.0, np.rad2deg(np.arctan(0.3 / 1.5))], atol=1e-9)
    assert ex.nearest_source_wedge(regions, ra_pnt, dec_pnt, fov_radius=1.4) is None
    far = _circle_at(ra_pnt, dec_pnt, 0.0, 2.6, 0.3)
    assert ex.nearest_source_wedge(far, ra_pnt, dec_pnt) is None
    assert ex.wedge_fraction(None) == 0.0
    centred = exclusion_circles(ra_pnt, dec_pnt, 0.3)
    assert ex.nearest_source_wedge(centred, ra_pnt, dec_pnt)[1] == 90.0
    assert ex.wedge_fraction(ex.nearest_source_wedge(centred, ra_pnt, dec_pnt)) == 0.5


def _events_at(ra_pnt, dec_pnt, pa, sep=1.0):
    return _offset_point(ra_pnt, dec_pnt, np.asarray(pa, dtype=float), sep)


def test_wedge_keep_normal_and_wrapping_branch():
    ra_pnt, dec_pnt = 83.63, 21.51
    pa = [5.0, 15.0, 100.0, 329.0, 335.0, 355.0]
    ra, dec = _events_at(ra_pnt, dec_pnt, pa)
    # phi + half > 360: keep 10 < pa < 330.
    keep = ex.wedge_keep(ra, dec, ra_pnt, dec_pnt, (350.0, 20.0))
    np.testing.assert_array_equal(keep, [False, True, True, True, False, False])
    # Ordinary wedge [80, 120]: keep pa > 120 or pa < 80.
    keep = ex.wedge_keep(ra, dec, ra_pnt, dec_pnt, (100.0, 20.0))
    np.testing.assert_array_equal(keep, [True, True, False, True, True, True])
    assert ex.wedge_keep(ra, dec, ra_pnt, dec_pnt, None).all()


def test_wedge_keep_reproduces_the_missing_wrap():
    # phi - half = -10 < 0: Gammapy 0.6 does not wrap, so events at pa in
    # [350, 360) stay although they are in the wedge [350, 30].
    ra_pnt, dec_pnt = 10.0, -30.0
    ra, dec = _events_at(ra_pnt, dec_pnt, [345.0, 355.0, 5.0, 25.0, 35.0])
    keep = ex.wedge_keep(ra, dec, ra_pnt, dec_pnt, (10.0, 20.0))
    np.testing.assert_array_equal(keep, [True, True, False, False, True])


def test_wedge_keep_uses_astropy_position_angles():
    rng = np.random.default_rng(3)
    ra_pnt, dec_pnt = 83.63, 22.51
    ra = (ra_pnt + rng.uniform(-3, 3, 50_000)).astype(np.float32)
    dec = (dec_pnt + rng.uniform(-3, 3, 50_000)).astype(np.float32)
    wedge = (180.03, 30.97)
    keep = ex.wedge_keep(ra, dec, ra_pnt, dec_pnt, wedge)
    pa = (
        SkyCoord(ra_pnt, dec_pnt, unit="deg")
        .position_angle(SkyCoord(ra.astype(float), dec.astype(float), unit="deg"))
        .deg
    )
    expected = (pa > wedge[0] + wedge[1]) | (pa < wedge[0] - wedge[1])
    near_edge = np.minimum(_angle_diff(pa, 149.06), _angle_diff(pa, 211.0)) < 1e-8
    np.testing.assert_array_equal(keep[~near_edge], expected[~near_edge])
    assert 0.05 < 1 - keep.mean() < 0.3

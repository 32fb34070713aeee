import numpy as np
import pytest
import xarray as xr

from xbkg import grouping as g
from xbkg.errors import ConfigError
from xbkg.io import store


def runs(**columns):
    n = len(next(iter(columns.values())))
    return xr.Dataset(
        {k: ("obs_id", np.asarray(v)) for k, v in columns.items()},
        coords={"obs_id": np.arange(100, 100 + n)},
    )


def test_cartesian_product_first_axis_slowest():
    axes = [g.GroupAxis("ZENITH", edges=(0, 30, 40, 50)), g.GroupAxis("N_TELS", values=(3, 4))]
    groups = g.group_definitions(axes)
    assert groups.sizes["group"] == 6
    assert groups["zenith_min"].values.tolist() == [0, 0, 30, 30, 40, 40]
    assert groups["n_tels_value"].values.tolist() == [3, 4, 3, 4, 3, 4]
    r = runs(zenith=[10, 35, 45, 45, 55, 49.999], n_tels=[4, 3, 3, 4, 4, 2])
    gid = g.assign_groups(r, groups)
    assert gid.values.tolist() == [1, 2, 4, 5, -1, -1]


def test_half_open_edges():
    groups = g.group_definitions(g.default_grouping())
    gid = g.assign_groups(runs(zen_pnt=[0.0, 48.999, 49.0, 89.99, 90.0, -1, np.nan]), groups)
    assert gid.values.tolist() == [0, 0, 1, 1, -1, -1, -1]


def test_unknown_column_message():
    groups = g.group_definitions([g.GroupAxis("MUONEFF", edges=(0, 1))])
    with pytest.raises(ConfigError, match="cannot group on 'MUONEFF'"):
        g.assign_groups(runs(zen_pnt=[1.0]), groups)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"edges": (1, 0)}, {"edges": (1,)}, {"values": (3, 3)}, {"edges": (0, 1), "values": (1,)}],
)
def test_invalid_axes(kwargs):
    with pytest.raises(ValueError, match="group axis"):
        g.GroupAxis("X", **kwargs)


def test_group_def_file_roundtrip(tmp_path):
    axes = [g.GroupAxis("ZEN_PNT", edges=(0, 20, 49, 90)), g.GroupAxis("N_TELS", values=(3, 4))]
    groups = g.group_definitions(axes)
    path = store.write_group_def(groups, tmp_path / "group-def.fits")
    from astropy.table import Table

    t = Table.read(path)
    assert t.colnames == ["GROUP_ID", "ZEN_PNT_MIN", "ZEN_PNT_MAX", "N_TELS"]
    assert t["GROUP_ID"].tolist() == list(range(6))
    back = store.read_group_def(path)
    xr.testing.assert_equal(back, groups)
    with pytest.raises(FileExistsError):
        store.write_group_def(groups, path)


def test_group_def_not_in_row_major_order_is_refused(tmp_path):
    from astropy.table import Table

    # Gammapy 0.6's layout, but group 0 is the upper zenith range
    path = tmp_path / "group-def.fits"
    Table({"GROUP_ID": [0, 1], "ZEN_PNT_MIN": [49, 0], "ZEN_PNT_MAX": [90, 49]}).write(path)
    with pytest.raises(ConfigError) as info:
        store.read_group_def(path)
    message = str(info.value)
    assert str(path) in message
    assert "row 0 (GROUP_ID 0) is ZEN_PNT_MIN 49, ZEN_PNT_MAX 90" in message
    assert "in row-major order is ZEN_PNT_MIN 0, ZEN_PNT_MAX 49" in message
    assert "write_group_def" in message
    # the same groups in row-major order are read as they are
    Table({"GROUP_ID": [0, 1], "ZEN_PNT_MIN": [0, 49], "ZEN_PNT_MAX": [49, 90]}).write(
        path, overwrite=True
    )
    assert store.read_group_def(path)["zen_pnt_min"].values.tolist() == [0, 49]
    # two axes: the second axis must vary fastest
    Table(
        {
            "GROUP_ID": [0, 1, 2, 3],
            "ZEN_PNT_MIN": [0, 49, 0, 49],
            "ZEN_PNT_MAX": [49, 90, 49, 90],
            "N_TELS": [3, 3, 4, 4],
        }
    ).write(path, overwrite=True)
    with pytest.raises(ConfigError, match=r"row 1 \(GROUP_ID 1\) is ZEN_PNT_MIN 49"):
        store.read_group_def(path)
    # GROUP_IDs that do not count 0, 1, ... are refused too
    Table({"GROUP_ID": [1, 0], "ZEN_PNT_MIN": [0, 49], "ZEN_PNT_MAX": [49, 90]}).write(
        path, overwrite=True
    )
    with pytest.raises(ConfigError, match=r"GROUP_IDs \[1, 0\] are not.*row-major order"):
        store.read_group_def(path)


def test_nearest_group():
    groups = g.group_definitions([g.GroupAxis("ZEN_PNT", edges=(0, 20, 40, 60))])
    r = runs(zen_pnt=[10.0, 30.0, 70.0, 45.0])
    nearest = g.nearest_group(r, groups, candidates=[0, 2])
    # 30 deg lies 10 deg above group 0 and 10 deg below group 2: tie -> lower id
    assert nearest.values.tolist() == [0, 0, 2, 2]

"""Options print short: bin edges as their range and spacing, never as long tuples of numbers."""

import numpy as np
import pytest

import xbkg
from xbkg.options import PRESETS


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_print_in_one_short_line(name):
    text = repr(PRESETS[name])
    assert "\n" not in text
    assert len(text) < 600, text
    assert "np.float64" not in text
    # every field is named, in the order of the dataclass
    names = [
        part.split("=")[0] for part in text.removeprefix("Options(").split(", ") if "=" in part
    ]
    assert names[0] == "energy_edges"
    assert "fill_unconstrained" in names


def test_edges_are_shown_as_ranges_with_their_spacing():
    text = repr(xbkg.options_for("gammapy-0.6"))
    assert "energy_edges=0.1-100 TeV (15 log bins)" in text
    assert "offset_edges=0-2.5 deg (99 equal-area bins)" in text


def test_edges_chosen_from_the_data_say_so():
    assert "energy_edges=<from the data>" in repr(xbkg.Options())


@pytest.mark.parametrize(
    ("edges", "shown"),
    [
        (np.geomspace(0.5, 50, 9), "energy_edges=0.5-50 TeV (8 log bins)"),
        ([1.0, 2.0, 5.0], "energy_edges=1-5 TeV (2 bins)"),
        ([1.0, 3.0], "energy_edges=1-3 TeV (1 bin)"),
    ],
)
def test_energy_edges_given_as_numpy_values(edges, shown):
    assert shown in repr(xbkg.Options(energy_edges=edges))


def test_linear_offset_edges():
    text = repr(xbkg.Options(offset_edges=tuple(np.linspace(0.0, 2.0, 5))))
    assert "offset_edges=0-2 deg (4 linear bins)" in text


def test_other_fields_keep_their_repr():
    options = xbkg.Options(time="livetime", exclude=("gammacat", "none.fits"), min_radius=0.4)
    text = repr(options)
    assert "time='livetime'" in text
    assert "exclude=('gammacat', 'none.fits')" in text
    assert "min_radius=0.4" in text

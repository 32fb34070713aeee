# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Comparing an xbkg model with the H.E.S.S. DR1 templates
#
# Every run of the H.E.S.S. DL3 DR1 release ships the collaboration's own
# background template (Mohrmann et al. 2019, A&A 632, A72): a `bkg_3d` rate
# over energy and two field-of-view coordinates, made from a large set of
# off runs. Here we build an xbkg model from the DR1 runs themselves and
# compare the two, for the same runs and the same exposure:
#
# 1. build the xbkg model on the DR1 energy binning, normalised per live time
#    as the DR1 templates are;
# 2. average each run's template over our offset rings (`radial_profile`);
# 3. weight the runs' template profiles by the exposure each bin of our model
#    saw, which gives the rate the templates predict for exactly the data our
#    model was made from;
# 4. compare acceptance curves and spectra.
#
# The data are found through `XBKG_DATA` (default `../shared/data` next to
# the repository).

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import xarray as xr

import xbkg
from xbkg.axes import edges


def data_dir() -> Path:
    """``$XBKG_DATA``, or ``../shared/data`` relative to the repository root."""
    if "XBKG_DATA" in os.environ:
        return Path(os.environ["XBKG_DATA"])
    for folder in (Path.cwd(), *Path.cwd().parents):
        if (folder / "pyproject.toml").is_file():
            return folder.parent / "shared" / "data"
    raise FileNotFoundError(
        "set XBKG_DATA to the folder holding hess-dl3-dr1 (see Getting the data)"
    )


DATA = data_dir()
store = xbkg.open_datastore(DATA / "hess-dl3-dr1")

# %% [markdown]
# ## The DR1 templates
#
# xarray opens a template directly with xbkg's `gadf` engine:

# %%
def template_path(obs_id: int) -> Path:
    return store.path / "data" / f"hess_dl3_dr1_obs_id_{obs_id:06d}.fits.gz"


first = xr.open_dataset(template_path(20136), engine="gadf", hdu="bkg")
first["rate"]

# %% [markdown]
# ## An xbkg model on the same binning
#
# We use the extragalactic runs (|b| >= 10 deg), exclude the gamma-cat
# sources, take the energy bins of the templates, and normalise by LIVETIME.

# %%
runs = xbkg.select_runs(xbkg.run_table(store), ranges={"|GLAT_PNT|": (10, None)})
regions = xbkg.read_catalog("gammacat")  # shipped with xbkg
options = xbkg.options_for(energy_edges=edges(first, "energy"), time="livetime")
bkg = xbkg.build_background(store, runs, regions=regions, options=options)
group = 0
members = bkg.cube["obs_id"].values[bkg.cube["group_id"].values == group]
print(f"group {group}: {members.size} runs")

# %% [markdown]
# ## Template profiles, weighted by our exposure
#
# `radial_profile` averages a template over offset rings (exactly, by area);
# it keeps the `obs_id` dimension, so all runs are done at once. Weighting by
# the exposure time of our cube and setting the rate of the prediction as
# the exposure-weighted mean makes the products of the two models directly
# comparable: both are "counts / (exposure x solid angle x energy width)"
# for the same exposure.

# %%
templates = xr.concat(
    [xbkg.read_bkg(template_path(int(o)), "bkg") for o in members], dim="obs_id"
).assign_coords(obs_id=members)
profiles = xbkg.radial_profile(templates, edges(bkg.model, "offset"))

runs_cube = bkg.cube.sel(obs_id=members)
exposure = runs_cube["exposure_time"].sum("obs_id")
weighted = (profiles * runs_cube["exposure_time"]).sum("obs_id")
weighted = weighted / exposure.where(exposure > 0)
dr1 = xr.Dataset(
    {"rate": weighted.assign_attrs(units="s-1 MeV-1 sr-1"), "exposure_time": exposure},
    attrs={"smoothing": "DR1 templates", "solid_angle": bkg.model.attrs["solid_angle"]},
)
ours_raw = bkg.model.sel(group=group)
ours = bkg.smoothed.sel(group=group)

# %% [markdown]
# ## Acceptance curves
#
# Points: xbkg raw model; solid lines: xbkg smoothed; dashed: DR1 templates.

# %%
fig, ax = plt.subplots(figsize=(7, 5))
# energy bands by bin index: 0.40-1.12, 1.12-3.16, 3.16-12.6 and 12.6-100 TeV
bands = [slice(4, 7), slice(7, 10), slice(10, 14), slice(14, 20)]
for i, band in enumerate(bands):
    color = f"C{i}"
    ours_raw.bkg.plot_acceptance_curve(
        energy_index=band, ax=ax, color=color, alpha=0.5, label="_"
    )
    ours.bkg.plot_acceptance_curve(energy_index=band, ax=ax, color=color)
    dr1.bkg.plot_acceptance_curve(
        energy_index=band, ax=ax, color=color, linestyle="--", label="_"
    )
ax.set_yscale("log")
ax.set_title(f"Group {group}: xbkg (points raw, lines smoothed), DR1 templates dashed")
ax.legend(frameon=False);

# %% [markdown]
# ## Spectra
#
# Over the whole field of view, and the ratio of the two models:

# %%
fig, (top, bottom) = plt.subplots(
    2, 1, figsize=(7, 6), sharex=True, height_ratios=[3, 1], layout="constrained"
)
ours_raw.bkg.plot_spectrum(ax=top, color="k", label="xbkg raw")
ours.bkg.plot_spectrum(ax=top, color="C0", label="xbkg smoothed")
dr1.bkg.plot_spectrum(ax=top, color="C1", linestyle="--", label="DR1 templates")
top.legend(frameon=False)
top.set_xlabel("")
ratio = ours.bkg.spectrum() / dr1.bkg.spectrum()
bottom.axhline(1.0, color="0.6", linewidth=0.8)
bottom.plot(ratio["energy"], ratio, "o-", color="C0")
bottom.set_xscale("log")
bottom.set_ylim(0.5, 1.5)
bottom.set_xlabel("Energy [TeV]")
bottom.set_ylabel("xbkg / DR1");

# %% [markdown]
# ## Numbers
#
# Predicted counts over the energy range where both are defined: the ratio of
# the totals measures the overall normalisation of the templates for these
# runs, and the ratio per offset range shows the difference in shape.

# %%
for band in (slice(0.0, 1.0), slice(1.0, 2.0), slice(2.0, 2.5)):
    a = ours.bkg.integrate(("energy", "offset"), energy=slice(1, 10), offset=band)
    b = dr1.bkg.integrate(("energy", "offset"), energy=slice(1, 10), offset=band)
    ratio_band = float(a["predicted_counts"] / b["predicted_counts"])
    where = f"offset {band.start}-{band.stop} deg, 1-10 TeV"
    print(f"{where}: xbkg / DR1 = {ratio_band:.3f}")

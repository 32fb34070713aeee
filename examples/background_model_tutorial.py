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
# # Template background model production
#
# This tutorial builds a template background model in the GADF
# [`bkg_2d`](https://gamma-astro-data-formats.readthedocs.io) format: a
# background rate as a function of reconstructed energy and field-of-view
# offset, for groups of runs taken under similar conditions. It follows,
# step by step, the Gammapy 0.6 tutorial "Template background model
# production with Gammapy", which used four Crab Nebula runs; here we use
# the public H.E.S.S. DL3 data release 1 (DR1), whose 105 runs include many
# fields without bright gamma-ray sources, which is what a background model
# needs.
#
# Every intermediate product is an `xarray.Dataset` with named dimensions
# (`obs_id`, `group`, `energy`, `offset`), bin edges and units, so it can be
# inspected, sliced and plotted at each step.
#
# The data are found through the `XBKG_DATA` environment variable (by
# default `../shared/data` next to the repository), which holds
# `hess-dl3-dr1/` (see *Getting the data*).

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

import xbkg


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
OUT = Path("background")  # the output folder, in the working directory

# %% [markdown]
# ## The data store
#
# A GADF data store is a folder with an observation index (one row per run)
# and an HDU index (where each run's events and responses are). The run
# table is the observation index as a Dataset along `obs_id`, with the
# columns as run coordinates in lower case.

# %%
store = xbkg.open_datastore(DATA / "hess-dl3-dr1")
all_runs = xbkg.run_table(store)
hours = float(all_runs["livetime"].sum()) / 3600
print(f"{all_runs.sizes['obs_id']} runs, {hours:.1f} h live time")
columns = ["object", "zen_pnt", "glat_pnt", "livetime"]
all_runs.reset_coords()[columns].to_dataframe().head()

# %% [markdown]
# A background model should be built from fields without strong sources.
# We keep the runs pointed at least 10 degrees away from the Galactic plane:
# mostly extragalactic targets and empty fields.

# %%
runs = xbkg.select_runs(all_runs, ranges={"|GLAT_PNT|": (10, None)})
print(f"{runs.sizes['obs_id']} runs selected")

# %% [markdown]
# ## Grouping
#
# Runs are grouped by observing conditions. As in the original tutorial we
# use two zenith-angle bands, `[0, 49)` and `[49, 90)` degrees. Several axes
# (muon efficiency, number of telescopes, ...) would make the cartesian
# product. The groups are a Dataset along `group` whose coordinates describe
# each one.

# %%
grouping = [xbkg.GroupAxis("ZEN_PNT", edges=(0, 49, 90))]
groups = xbkg.group_definitions(grouping)
groups

# %%
group_id = xbkg.assign_groups(runs, groups)
print("runs per group:", {int(g): int((group_id == g).sum()) for g in groups["group"]})

# %% [markdown]
# ## Exclusion regions
#
# Known gamma-ray sources are cut out of the field of view: events inside a
# circle around each source of the gamma-cat catalogue are dropped, and the
# exposure of each offset ring is reduced by the fraction of the ring the
# circles cover. The radius is the source size, at least 0.3 degrees.
# gamma-cat's positions and sizes are shipped with xbkg (the name
# `"gammacat"`); any catalogue file can be given instead.

# %%
regions = xbkg.read_catalog("gammacat", min_radius=0.3)
print(f"{regions.sizes['source']} exclusion circles")
regions.to_dataframe().head()

# %% [markdown]
# ## The model
#
# The one expensive step reads the events of each run once and histograms
# them in energy x offset: the per-run cube holds the counts and the
# exposure time each bin really saw (the run's observation time, reduced by
# the excluded sky and set to zero below the run's safe energy threshold).
# The binning is the tutorial's: 15 logarithmic energy bins from 0.1 to 100
# TeV and 99 rings of equal solid angle out to 2.5 degrees.

# %%
cube = xbkg.make_run_cube(store, runs, regions=regions)
cube

# %% [markdown]
# Stacking sums the counts and the exposure of the runs of each group; the
# rate is counts / (exposure time x solid angle x energy width) in
# s-1 MeV-1 sr-1.

# %%
model = xbkg.compute_rate(xbkg.stack_groups(cube, groups))
model["rate"]

# %% [markdown]
# ## Smoothing
#
# With finite statistics the raw rate is noisy. `xbkg.smooth(model, method)`
# returns a new, smoothed model (the raw one is unchanged); its
# documentation describes the methods. We use the method of xbkg's default
# options, which scales each energy row to predict exactly its observed
# counts.

# %%
options = xbkg.options_for(grouping=grouping)
smoothed = xbkg.smooth(model, options.smoothing)
print("smoothing:", smoothed.attrs["smoothing"])
predicted = smoothed.bkg.integrate("offset")["predicted_counts"]
print("counts conserved:", np.allclose(predicted, model["counts"].sum("offset")))

# %% [markdown]
# ## What the science tool reads
#
# Gammapy does not read the bins as steps: it integrates each energy bin
# log-log between rates interpolated from the bin centres. An exact zero (a
# bin below every run's safe threshold, or without exposure) next to a
# populated bin would take half of that bin with it. The files therefore
# hold a smooth, positive continuation in the bins the data do not
# constrain, and say which (`filled`, and `NFILLED` in the FITS header):

# %%
from xbkg.pipeline import fill_model

filled = fill_model(smoothed)
print(int(filled["filled"].sum()), "of", filled["filled"].size, "bins filled")
rows = filled["filled"].sel(group=0).any("offset")
print("energy bins (TeV) with filled values:", rows["energy"][rows].values.round(3))

# %% [markdown]
# ## Inspecting the model
#
# The tutorial's three plots: the acceptance curve (rate versus offset for an
# energy band), the rate spectrum (rate versus energy for an offset) and the
# rate image. Each is a labelled product with its bin edges, computed by
# summing counts and exposure over the band before dividing; the `.bkg`
# accessor gives them as methods. As in the tutorial we look at group 0,
# energy bin 6 and offset bin 10.

# %%
raw0, smooth0 = model.sel(group=0), smoothed.sel(group=0)
curve = smooth0.bkg.acceptance_curve(energy_index=6)
curve

# %%
fig, ax = plt.subplots(figsize=(7, 4.5))
raw0.bkg.plot_acceptance_curve(energy_index=6, ax=ax, label="raw")
smooth0.bkg.plot_acceptance_curve(energy_index=6, ax=ax, label="smoothed")
ax.legend();

# %% [markdown]
# The rate spectrum in the ring of offset bin 10, and over the whole field
# of view:

# %%
fig, ax = plt.subplots(figsize=(7, 4.5))
smooth0.bkg.plot_spectrum(offset_index=10, ax=ax)
raw0.bkg.plot_spectrum(ax=ax, color="k", label="raw, whole field of view")
smooth0.bkg.plot_spectrum(ax=ax, color="k", label="smoothed, whole field of view")
ax.set_title("Group 0")
ax.legend();

# %% [markdown]
# The rate image, with the true bin edges on a logarithmic energy axis:

# %%
fig, ax = plt.subplots(figsize=(7, 4.5))
smooth0.bkg.plot_image(ax=ax);

# %% [markdown]
# All three at once, the raw model as points under the smoothed one:

# %%
smooth0.bkg.plot_overview(raw=raw0, energy=1.0);

# %% [markdown]
# Products are plain DataArrays: energy and offset are selected by value
# (the bin containing 1 TeV; every bin overlapping 1-10 TeV) or by index,
# and other dimensions are kept, so one call gives every group.

# %%
curves = xbkg.acceptance_curve(smoothed, energy=slice(1, 10))
curves.sel(offset=[0.5, 1.0, 2.0], method="nearest")

# %% [markdown]
# ## Writing the model
#
# `xbkg.build_background` does all of the above in one call, with every
# choice recorded in its options, and `xbkg.write_background` writes the
# `bkg_2d` files (raw and smoothed) of every group, `group-def.fits`, an
# observation and an HDU index, and the netCDF archive. The same from the
# command line:
# `xbkg make hess-dl3-dr1 background --select '|GLAT_PNT|=10:' --group ZEN_PNT=0,49,90`
# (gamma-cat, shipped with xbkg, is excluded by default).

# %%
bkg = xbkg.build_background(store, runs, regions=regions, options=options)
xr.testing.assert_identical(bkg.smoothed["rate"], filled["rate"])
result = xbkg.write_background(bkg, store, OUT, all_runs=all_runs, overwrite=True)
sorted(path.name for path in OUT.iterdir())

# %% [markdown]
# Unlike Gammapy 0.6, the raw and the smoothed files differ, and a file
# reads back as a Dataset with xarray through xbkg's `gadf` engine:

# %%
path = OUT / "smooth_background_2D_group_000_table.fits.gz"
with xr.open_dataset(path, engine="gadf") as ds:
    print(ds)

# %% [markdown]
# ## The HDU index
#
# The output folder is itself a data store: its HDU index points the events
# and responses of every run at the original files, and each run's `bkg` row
# at the smoothed model of its group. Science tools (e.g. Gammapy's
# `DataStore.from_dir`) use it to predict the background of each run.

# %%
from astropy.table import Table

index = Table.read(OUT / "hdu-index.fits.gz")
index[index["HDU_TYPE"] == "bkg"]["OBS_ID", "HDU_CLASS", "FILE_NAME"][:5]

# %% [markdown]
# ## The archive
#
# `background.nc` holds everything: the per-run cube, the raw and smoothed
# models, the group definitions, the exclusion regions, the options and the
# provenance (which runs were used, and why others were not). It follows the
# CF conventions, so plain xarray reads it (`xr.open_datatree`: one group per
# product); `xbkg.read_archive` rebuilds the products exactly, and the FITS
# files can be written again from it alone
# (`xbkg export background/background.nc exported`).

# %%
archive = xbkg.read_archive(OUT / "background.nc")
xr.testing.assert_identical(archive.smoothed, bkg.smoothed)
with xr.open_datatree(OUT / "background.nc") as tree:
    status = tree["runs/run_status"]
    print(status.attrs["flag_meanings"], np.bincount(status.values))
    print(tree.attrs["time_convention"], tree.attrs["source"])

# %%
exported = xbkg.export_models(archive, "exported", overwrite=True)
print(all((OUT / p.name).read_bytes() == p.read_bytes() for p in exported))

# %% [markdown]
# ## Exercises
#
# - Group by muon efficiency as well: `xbkg.GroupAxis("MUONEFF", edges=...)`.
# - Change the energy and offset binning (`xbkg.options_for(energy_edges=...,
#   offset_edges=...)`).
# - Compare the model with the H.E.S.S. DR1 per-run templates: see the
#   example `compare_dr1_templates.py`.

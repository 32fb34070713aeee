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
# # How well do background models predict runs? Validation on H.E.S.S. DR1
#
# A background model is only as good as its predictions for the runs it is
# used on. Here we measure three models on the same 61 extragalactic runs of
# the H.E.S.S. DL3 DR1 release (`|GLAT_PNT| > 10 deg`):
#
# 1. the collaboration's own per-run templates shipped inside every DR1 file
#    (`bkg_3d`, per live time), integrated over the unexcluded part of each
#    offset ring;
# 2. the classic method of the Gammapy 0.6 tutorial: two zenith groups, one
#    smoothing per energy row, built from these very runs (in-sample, so it
#    is flattered);
# 3. xbkg's default model: the dependence on zenith angle, muon efficiency
#    and the run's safe threshold fitted per energy bin, an observing-period
#    correction, Poisson smoothing — measured by 5-fold cross-validation, i.e.
#    each run is predicted by a model built without it.
#
# For every run we compare the observed counts with the predicted ones in
# energy x offset bins above the run's safe threshold, outside the gamma-cat
# sources, up to 2 deg: the ratio obs/pred, its run-to-run scatter (standard
# deviation over mean), and the shape chi2/dof after scaling the prediction to
# the run's total.
#
# The data are found through `XBKG_DATA` (default `../shared/data` next to
# the repository).

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import xbkg
from xbkg.cube import make_run_cube
from xbkg.io.datastore import read_run_templates
from xbkg.pipeline import builder_for
from xbkg.plotting import plot_validation
from xbkg.validation import (
    crossval,
    predict_counts,
    run_rates,
    template_predictions,
    validate,
)


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
runs = xbkg.select_runs(xbkg.run_table(store), ranges={"|GLAT_PNT|": (10, None)})
regions = xbkg.read_catalog("gammacat")  # shipped with xbkg
print(f"{runs.sizes['obs_id']} runs")

# %% [markdown]
# ## The run cube
#
# One pass over the events gives counts and exposure per run, energy and
# offset ring. The exposure already holds everything the comparison needs:
# the run time, times the unexcluded fraction of each ring, times the
# safe-energy mask. Everything below works on this cube and never reads
# events again.

# %%
cube = make_run_cube(store, runs, regions=regions)
cube[["counts", "exposure_time"]]

# %% [markdown]
# ## 1. The DR1 templates
#
# Each run's template is integrated over the unexcluded part of every offset
# ring and over each energy bin, and multiplied by the run's live time.

# %%
templates = read_run_templates(store, cube["obs_id"].values)
dr1 = validate(cube, template_predictions(templates, cube, regions))
columns = ["ratio", "chi2_dof", "significance"]
dr1[columns].reset_coords(drop=True).to_dataframe().describe().round(3)

# %% [markdown]
# ## 2. Two zenith groups (the seed's method), in-sample

# %%
options = xbkg.options_for(smoothing="adaptive")
seed = xbkg.build_background(store, runs, regions=regions, options=options)
groups = validate(cube, predict_counts(run_rates(seed.smoothed, cube), cube))

# %% [markdown]
# ## 3. xbkg's default model, 5-fold cross-validation
#
# Each run is predicted by the model that `xbkg make` builds, with the default
# options, from the runs of the other four folds (`builder_for`).

# %%
default = crossval(cube, builder_for(xbkg.Options()), k=5, seed=0)

# %% [markdown]
# ## The numbers

# %%
tables = {
    "DR1 templates": dr1,
    "two zenith groups (in-sample)": groups,
    "xbkg default (5-fold)": default,
}
print(f"{'model':32s} {'scatter':>8s} {'chi2/dof':>9s} {'norm':>6s}")
for name, table in tables.items():
    s = table.attrs
    numbers = f"{s['scatter']:8.3f} {s['chi2_dof']:9.3f} {s['normalisation']:6.3f}"
    print(f"{name:32s} {numbers}")

# %% [markdown]
# ## The comparison in plots
#
# Per run obs/pred against zenith angle, the distributions of the shape
# chi2/dof and of the per-run significance, and obs/pred per energy bin.
# The grouped model's ratio follows the zenith angle: one rate per group
# cannot follow the rise of the threshold and of the rate with zenith angle.

# %%
fig, ax = plt.subplots(2, 2, figsize=(11, 8), constrained_layout=True)
for name, table in tables.items():
    plot_validation(table, label=name, axes=ax)
ax[0, 1].set_ylabel("runs")
ax[1, 0].set_ylabel("runs")
ax[0, 1].legend(fontsize="small");

# %% [markdown]
# ## Run by run: the DR1 templates and the default model
#
# Both models miss the same runs in the same direction: what is left is
# run-to-run variation that no column of the obs-index describes (the
# atmosphere, for one).

# %%
fig, ax = plt.subplots(figsize=(5, 5))
ax.plot(dr1["ratio"], default["ratio"], "o")
lims = [0.6, 1.8]
ax.plot(lims, lims, color="0.5", lw=0.8)
ax.set_xlabel("obs / pred, DR1 templates")
ax.set_ylabel("obs / pred, xbkg default (held out)")
r = np.corrcoef(np.log(dr1["ratio"]), np.log(default["ratio"]))[0, 1]
ax.set_title(f"correlation of log ratios: {r:.2f}")
plt.show()

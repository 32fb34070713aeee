"""Command line: a thin layer over the public API.

``xbkg make DATA_STORE OUT_DIR`` builds models; ``xbkg simulate OUT_DIR``
writes a synthetic data store; ``xbkg copy`` copies runs to a new store.
Heavy modules are imported inside the commands so that ``xbkg --help`` is fast.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from xbkg.conventions import DEFAULT_SMOOTHING
from xbkg.errors import XbkgError, XbkgWarning, plural

__all__ = ["main"]

EXIT_ERROR = 1
#: The job finished, but ``--skip-bad-runs`` left some runs out.
EXIT_SKIPPED = 3
#: Interrupted (Ctrl-C, SIGTERM); nothing was written.
EXIT_INTERRUPTED = 130

EXIT_STATUS_HELP = (
    "exit status: 0 success; 1 error (one 'xbkg: error:' line per problem, nothing "
    "written); 2 bad command line; 3 finished, but --skip-bad-runs left runs out (listed in "
    "the summary and the archive); 130 interrupted (nothing written)"
)


class _Fail(Exception):
    """An error to report as ``xbkg: error: ...`` with a non-zero exit code."""


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc


def _edges(kind: str):
    """Parse ``a,b,c`` (explicit edges) or ``START:STOP:NBINS`` (log energy, sqrt offset)."""

    def parse(text: str) -> list[float]:
        if ":" in text:
            parts = text.split(":")
            if len(parts) != 3:
                raise argparse.ArgumentTypeError(f"expected START:STOP:NBINS, got {text!r}")
            try:
                start, stop, n = float(parts[0]), float(parts[1]), int(parts[2])
            except ValueError as exc:
                raise argparse.ArgumentTypeError(
                    f"expected START:STOP:NBINS, got {text!r}"
                ) from exc
            import numpy as np

            if kind == "energy":
                if not 0 < start < stop or n < 1:
                    raise argparse.ArgumentTypeError(
                        f"need 0 < START < STOP and NBINS >= 1: {text}"
                    )
                return list(np.geomspace(start, stop, n + 1))
            if not 0 <= start < stop or n < 1:
                raise argparse.ArgumentTypeError(f"need 0 <= START < STOP and NBINS >= 1: {text}")
            return list(np.sqrt(np.linspace(start**2, stop**2, n + 1)))
        return _floats(text)

    return parse


def _workers(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a number of processes >= 1, got {text!r}")
    return n


def _default_workers(n_runs: int) -> int:
    """One process per CPU core this process may use, at most 8 and one per run.

    One when the caller runs other threads: forking a multi-threaded process
    can leave a worker waiting for a lock that a thread held at the fork.
    """
    import os
    import threading

    if threading.active_count() > 1:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, 8, n_runs))


def _keyval(text: str, form: str = "COL=VALUES") -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected {form}, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def _edges_of_column(text: str) -> tuple[str, str]:
    return _keyval(text, "COL=EDGES")


def _range(text: str) -> tuple[str, tuple[float | None, float | None]]:
    key, value = _keyval(text, "COL=LO:HI")
    if ":" not in value:
        raise argparse.ArgumentTypeError(
            f"expected COL=LO:HI (either side may be empty), got {text!r}"
        )
    lo, hi = value.split(":", 1)
    try:
        return key, (float(lo) if lo else None, float(hi) if hi else None)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad range in {text!r}") from exc


def _add_run_selection(parser: argparse.ArgumentParser) -> None:
    """Options choosing runs and exclusion regions (make, validate, crossval)."""
    from xbkg.conventions import CATALOGS, DEFAULT_CATALOG, NO_CATALOG

    parser.add_argument(
        "--obs-id", type=int, nargs="+", metavar="ID", help="use only these runs (default: all)"
    )
    parser.add_argument(
        "--select",
        type=_range,
        action="append",
        metavar="COL=LO:HI",
        help="use only runs with LO <= COL < HI; write |COL| for the absolute value, "
        "e.g. '|GLAT_PNT|=10:' (repeatable)",
    )
    parser.add_argument(
        "--exclude",
        action="append",
        metavar="CATALOG",
        help="exclude the sources of a catalogue: a FITS file (gamma-cat, HGPS, or RA/DEC/Radius "
        f"table) or the name of one shipped with xbkg ({', '.join(CATALOGS)}); {NO_CATALOG!r} "
        f"for none (repeatable; default: {DEFAULT_CATALOG}; make --preset gammapy-0.6: "
        f"{NO_CATALOG})",
    )
    parser.add_argument(
        "--exclude-circle",
        type=_floats,
        action="append",
        metavar="RA,DEC,RADIUS",
        help="exclude a circle (deg, ICRS) (repeatable)",
    )
    parser.add_argument(
        "--min-radius",
        type=float,
        help="smallest exclusion radius for catalogue sources "
        "(deg; default 0.3, 0 with --preset gammapy-0.6)",
    )
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="do not check the gzip checksum of the event files (faster: only the EVENTS "
        "table is decompressed; damage inside it that still decompresses goes unnoticed)",
    )
    parser.add_argument(
        "--skip-bad-runs",
        action="store_true",
        help="leave out runs that cannot be used (missing or damaged files, no pointing, ...) "
        "and go on; they are listed as 'xbkg: skipped:' lines (and, for make, in the archive), "
        "and the exit status is 3. Without it the first bad run stops the job before anything "
        "is written",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``xbkg`` command."""
    from xbkg.conventions import DEFAULT_ENERGY_BINS, DEFAULT_ENERGY_RANGE, ENERGY_GRID_PER_DECADE

    e_lo, e_hi = DEFAULT_ENERGY_RANGE
    parser = argparse.ArgumentParser(
        prog="xbkg",
        description="Template background models for gamma-ray telescopes (GADF data stores).",
        epilog=EXIT_STATUS_HELP,
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    make = sub.add_parser(
        "make",
        help="build background models from a data store",
        description=(
            "Build grouped template background models from the runs of a GADF data store "
            "and write them, with group-def.fits, an obs-index, an HDU index pointing every "
            "run at its model and a netCDF archive, into OUT_DIR (itself a data store)."
        ),
    )
    make.epilog = EXIT_STATUS_HELP
    make.add_argument("data_store", type=Path, help="folder of the input GADF data store")
    make.add_argument("out_dir", type=Path, help="output folder")
    _add_run_selection(make)
    make.add_argument(
        "--group",
        type=_edges_of_column,
        action="append",
        metavar="COL=EDGES",
        help="group runs by COL with half-open bins between comma-separated EDGES "
        "(repeatable; several make the cartesian product; default ZEN_PNT=0,49,90)",
    )
    make.add_argument(
        "--group-values",
        type=_keyval,
        action="append",
        metavar="COL=VALUES",
        help="group runs by the discrete comma-separated VALUES of COL, e.g. N_TELS=3,4",
    )
    make.add_argument(
        "--energy-edges",
        type=_edges("energy"),
        metavar="EDGES",
        help="energy edges in TeV: comma-separated, or START:STOP:NBINS log-spaced (default: "
        f"from the data, on the grid 10**(k/{ENERGY_GRID_PER_DECADE}) TeV from the runs' lowest "
        "SAFE_ENERGY_LO to their highest SAFE_ENERGY_HI, or the events' range where the runs "
        f"have none, at least {e_lo:g}-{e_hi:g} TeV; preset gammapy-0.6: "
        f"{e_lo:g}:{e_hi:g}:{DEFAULT_ENERGY_BINS})",
    )
    make.add_argument(
        "--offset-edges",
        type=_edges("offset"),
        metavar="EDGES",
        help="offset edges in deg: comma-separated, or START:STOP:NBINS equal-area rings "
        "(default 0:2.5:99)",
    )
    make.add_argument(
        "--preset",
        choices=["default", "gammapy-0.6"],
        default="default",
        help="'gammapy-0.6' reproduces the Gammapy 0.6 tool exactly, zeros included; "
        "'default' (the default) is xbkg's own choices",
    )
    make.add_argument(
        "--time",
        choices=["ontime", "livetime"],
        help="run duration normalising the rate (default: ontime, as GADF; preset gammapy-0.6: "
        "livetime)",
    )
    make.add_argument(
        "--no-safe-energy",
        action="store_true",
        help="use all energies, ignoring the runs' SAFE_ENERGY_LO/HI",
    )
    make.add_argument(
        "--no-fill",
        action="store_true",
        help="keep exact zeros where the data do not constrain the rate (below the safe "
        "threshold, no exposure or counts), as Gammapy 0.6 wrote them (default with --preset "
        "gammapy-0.6). By default such bins hold a smooth continuation of the model, marked "
        "in the archive and the FITS headers, because Gammapy integrates log-log between bins",
    )
    make.add_argument(
        "--energy-nodes",
        choices=["loglog", "mean"],
        help="what the model files hold along energy: loglog (default), the values at the bin "
        "centres whose log-log interpolant (what Gammapy integrates) has the model's mean over "
        "every bin; mean, the bin means (preset gammapy-0.6), which Gammapy over-predicts by "
        "about 1.7 %% per 0.2-decade bin for a falling spectrum",
    )
    make.add_argument(
        "--bkg-class",
        choices=["bkg_2d", "bkg_3d"],
        help="bkg_2d (default): radial models, rate(energy, offset); bkg_3d: field-of-view "
        "models, rate(energy, fov_lon, fov_lat), for every run: its radial model times a "
        "field-of-view shape measured in the ALTAZ frame (the group models stay radial)",
    )
    make.add_argument(
        "--fov-alignment",
        choices=["ALTAZ", "RADEC"],
        help="alignment of the bkg_3d files (FOVALIGN). Default: ALTAZ, or RADEC on data "
        "stores flagged like the H.E.S.S. DL3 DR1 release, which Gammapy 2.1 reads as RADEC "
        "with fov_lon reversed whatever FOVALIGN says (such RADEC models are written in the "
        "orientation Gammapy then applies)",
    )
    make.add_argument(
        "--fov-bins",
        type=int,
        metavar="N",
        help="bkg_3d: N x N field-of-view bins (default 50)",
    )
    make.add_argument(
        "--fov-max",
        type=float,
        metavar="DEG",
        help="bkg_3d: the field of view spans -DEG to DEG in fov_lon and fov_lat (default 2.5)",
    )
    make.add_argument(
        "--index-model",
        choices=["smooth", "raw"],
        help="which model the HDU index points at (default: smooth)",
    )
    make.add_argument(
        "--missing-group",
        choices=["nearest", "error"],
        help="a run whose group has no model gets the nearest group's model (default) or fails",
    )
    make.add_argument(
        "--model",
        choices=["conditions", "groups"],
        help="what the HDU index gives each run: 'conditions', a model of its own for its "
        "observing conditions (default), or 'groups', its group's model (default with "
        "--group, --group-values or --preset gammapy-0.6); group models are written in both cases",
    )
    make.add_argument(
        "--workers",
        type=_workers,
        default=None,
        metavar="N",
        help="bin runs in N local processes (default: one per available CPU core, at most 8, "
        "or 1 when called from a multi-threaded program; results do not depend on it)",
    )
    make.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="bin runs on a running dask.distributed scheduler, e.g. tcp://host:8786",
    )
    make.add_argument("--overwrite", action="store_true", help="replace existing output files")
    make.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")

    sim = sub.add_parser(
        "simulate",
        help="write a synthetic GADF data store from a known background model",
        description="Write a small synthetic GADF data store (demo, tests, benchmarks).",
    )
    sim.add_argument("out_dir", type=Path, help="output folder")
    sim.add_argument("--runs", type=int, default=12, help="number of runs (default: %(default)s)")
    sim.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    sim.add_argument("--events-per-run", type=int, help="events per run (default: from the model)")
    sim.add_argument(
        "--fov-gradient",
        type=float,
        metavar="G",
        help="true rate x (1 + G tan(zenith) fov_lat + C fov_lon) in the ALTAZ field of view: "
        "a gradient along altitude growing with zenith angle, per deg, e.g. -0.03 "
        "(default: none)",
    )
    sim.add_argument(
        "--camera-asymmetry",
        type=float,
        metavar="C",
        help="C above: a camera-fixed gradient along fov_lon, per deg, e.g. 0.02 (default: none)",
    )
    sim.add_argument(
        "--flag-like-hess-dr1",
        action="store_true",
        help="EVENTS headers with CREATOR = 'SASH FITS::EventListWriter' and HDUVERS = '0.2' "
        "as in H.E.S.S. DL3 DR1, which make Gammapy 2.1 read every background model of the "
        "runs with REVERSE_LON_RADEC",
    )
    sim.add_argument("--overwrite", action="store_true", help="replace an existing folder")

    copy = sub.add_parser(
        "copy",
        help="copy some runs to a new data store",
        description="Copy the files of some runs to a new data store folder with its own indexes.",
    )
    copy.add_argument("data_store", type=Path)
    copy.add_argument("out_dir", type=Path)
    copy.add_argument("--obs-id", type=int, nargs="+", metavar="ID", required=True)
    copy.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")

    plot = sub.add_parser(
        "plot",
        help="draw PNG figures of the models of an output folder",
        description=(
            "Read OUT_DIR/background.nc (written by 'xbkg make') and write PNG figures of every "
            "group's raw and smoothed model into OUT_DIR: plot_group_NNN_overview.png, "
            "_acceptance.png, _spectrum.png and _image.png, and, when the HDU index gives runs "
            "models of their own, plot_run_models.png with a few of them. For a bkg_3d build, "
            "also the field-of-view shape factor per decade of energy (plot_fov_shape_image.png, "
            "plot_fov_shape_profiles.png: images and profiles along fov_lon and fov_lat, ALTAZ) "
            "and a run's bkg_3d model as written (plot_fov_run_NNNNNN_image.png, "
            "_profiles.png). Axes: fov_lon to the right, fov_lat up (GADF sign: azimuth or RA "
            "grows to the left, altitude or Dec upwards)."
        ),
    )
    plot.add_argument("out_dir", type=Path, help="output folder of 'xbkg make'")
    plot.add_argument("--overwrite", action="store_true", help="replace existing figures")
    plot.add_argument(
        "--obs-id",
        type=int,
        nargs="+",
        metavar="ID",
        help="bkg_3d builds: the runs whose models are drawn (default: the run of median zenith "
        "angle)",
    )

    export = sub.add_parser(
        "export",
        help="write the model FITS files again from a netCDF archive",
        description=(
            "Write the bkg_2d model files and group-def.fits of an archive (background.nc) into "
            "OUT_DIR, byte-identical to those 'xbkg make' wrote, from the archive alone."
        ),
    )
    export.add_argument("archive", type=Path, help="background.nc written by 'xbkg make'")
    export.add_argument("out_dir", type=Path, help="output folder")
    export.add_argument("--overwrite", action="store_true", help="replace existing files")
    _add_validation_commands(sub)
    return parser


def _progress(quiet: bool):
    if quiet or not sys.stderr.isatty():
        return None

    def show(i: int, n: int, obs_id: int) -> None:
        width = 30
        filled = int(width * i / n)
        sys.stderr.write(
            f"\r[{'#' * filled}{' ' * (width - filled)}] {i}/{plural(n, 'run')} (OBS_ID {obs_id})"
        )
        if i == n:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def _grouping(args: argparse.Namespace) -> list[Any] | None:
    from xbkg.grouping import GroupAxis

    axes = []
    for key, value in args.group or []:
        axes.append(GroupAxis(key, edges=tuple(_floats(value))))
    for key, value in args.group_values or []:
        items: list[Any] = []
        for v in value.split(","):
            try:
                items.append(int(v))
            except ValueError:
                try:
                    items.append(float(v))
                except ValueError:
                    items.append(v.strip())
        axes.append(GroupAxis(key, values=tuple(items)))
    return axes or None


def _fov_edges(args: argparse.Namespace) -> tuple[float, ...] | None:
    """The field-of-view edges of ``--fov-bins`` / ``--fov-max`` (None: the default)."""
    if args.fov_bins is None and args.fov_max is None:
        return None
    from xbkg.axes import fov_edges
    from xbkg.conventions import DEFAULT_FOV_BINS, DEFAULT_FOV_HALF_WIDTH

    half_width = DEFAULT_FOV_HALF_WIDTH if args.fov_max is None else args.fov_max
    nbins = DEFAULT_FOV_BINS if args.fov_bins is None else args.fov_bins
    return tuple(float(e) for e in fov_edges(half_width, nbins))


def _cmd_make(args: argparse.Namespace) -> int:
    from xbkg.options import options_for
    from xbkg.pipeline import build_background, write_background

    options = options_for(
        args.preset,
        energy_edges=args.energy_edges,
        offset_edges=args.offset_edges,
        grouping=_grouping(args),
        time=args.time,
        safe_energy=False if args.no_safe_energy else None,
        fill_unconstrained=False if args.no_fill else None,
        min_radius=args.min_radius,
        index_model=args.index_model,
        missing_group=args.missing_group,
        model=args.model,
        exclude=args.exclude,
        energy_nodes=args.energy_nodes,
        bkg_class=args.bkg_class,
        fov_alignment=args.fov_alignment,
        fov_edges=_fov_edges(args),
    )
    store, all_runs, runs, regions = _store_runs_regions(args, options.min_radius, catalogs=False)

    # Fail before the expensive pass over the events if the outputs cannot go there.
    from xbkg.conventions import ARCHIVE_FILE, GROUP_DEF_FILE, HDU_INDEX_FILE, OBS_INDEX_FILE
    from xbkg.io.outputs import check_outputs

    names = [GROUP_DEF_FILE, OBS_INDEX_FILE, HDU_INDEX_FILE, ARCHIVE_FILE]
    check_outputs(args.out_dir, names, args.overwrite)
    bkg = build_background(
        store,
        runs,
        regions=regions,
        options=options,
        workers=args.workers or _default_workers(runs.sizes["obs_id"]),
        scheduler=args.scheduler,
        progress=_progress(args.quiet),
        skip_bad_runs=args.skip_bad_runs,
        verify=not args.no_verify,
    )
    result = write_background(bkg, store, args.out_dir, all_runs=all_runs, overwrite=args.overwrite)
    if not args.quiet:
        _print_summary(bkg, result, runs.sizes["obs_id"])
    return _report_skipped(bkg.cube)


def _report_skipped(cube: Any) -> int:
    """Print the runs left out by ``--skip-bad-runs``; the exit status."""
    import json

    from xbkg.conventions import SKIPPED_ATTR

    skipped = json.loads(cube.attrs.get(SKIPPED_ATTR, "{}"))
    for message in skipped.values():
        print(f"xbkg: skipped: {message}", file=sys.stderr)
    if skipped:
        print(f"xbkg: {plural(len(skipped), 'run')} skipped (--skip-bad-runs)", file=sys.stderr)
        return EXIT_SKIPPED
    return 0


def _first(ids: Sequence[int], n: int = 5) -> str:
    more = f" and {len(ids) - n} more" if len(ids) > n else ""
    return ", ".join(str(i) for i in ids[:n]) + more


def _print_summary(bkg: Any, result: dict[str, Any], n_runs: int) -> None:
    from xbkg.pipeline import group_summary

    # The runs without a model of their group were reported once, as a warning.
    bkg = result["background"]
    cube = bkg.cube
    options = bkg.options
    n_used = cube.sizes["obs_id"]
    skipped = f" ({n_runs - n_used} skipped)" if n_used < n_runs else ""
    fill = (
        "unconstrained bins filled"
        if options.fill_unconstrained
        else "zeros kept where the data say nothing, as Gammapy 0.6 wrote them"
    )
    print(
        f"xbkg make: models from {plural(n_used, 'selected run')}{skipped}, "
        f"{int(cube['n_events'].sum())} events read (time {options.time.upper()}, "
        f"{_exclusion(bkg)}, {options.smoothing} smoothing, {fill})"
    )
    energy = options.energy_edges
    print(
        f"  energy bins: {len(energy) - 1} from {energy[0]:.3g} to {energy[-1]:.3g} TeV "
        f"({cube.attrs.get('energy_binning', 'as given')})"
    )
    if bkg.run_models is not None:
        n_own = bkg.run_models.sizes["obs_id"]
        print(
            f"  index: per-run models of the condition model "
            f"({', '.join(map(str, bkg.conditions['condition'].values))}) for "
            f"{plural(n_own, 'run')} of the data store (every run with known conditions, "
            "selected or not); the group models are written too (--model groups to use them)"
        )
    else:
        moved = len(result["reassigned"])
        nearest = f"; {plural(moved, 'run')} without one the nearest group's" if moved else ""
        print(f"  index: every run gets the model of its group{nearest}")
    for row in group_summary(bkg):
        ranges = ", ".join(
            f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in row["range"].items()
        )
        print(
            f"  group {row['group']:3d} ({ranges}): {plural(len(row['runs']), 'run')}, "
            f"{row['counts']} counts"
        )
    no_group = [int(o) for o in cube["obs_id"].values[cube["group_id"].values < 0]]
    if no_group:
        print(
            f"  selected runs in no group (not in any group model): {len(no_group)}: "
            f"{_first(no_group)}"
        )
    print(
        f"  events left out: {int(cube['n_excluded'].sum())} in exclusion regions, "
        f"{int(cube['n_unsafe'].sum())} outside the safe energy range, "
        f"{int(cube['n_outside'].sum())} outside the binning, "
        f"{int(cube['n_invalid'].sum())} with NaN or infinite values"
    )
    invalid = [
        (int(o), int(n))
        for o, n in zip(cube["obs_id"].values, cube["n_invalid"].values, strict=True)
        if n
    ]
    if invalid:
        listed = ", ".join(f"{o} ({n})" for o, n in invalid[:5])
        print(f"    runs with NaN or infinite values (events dropped): {listed}")
    print(f"  wrote {len(result['files'])} files to {result['out_dir']}")


def _cmd_simulate(args: argparse.Namespace) -> int:
    from xbkg.simulate import simulate_datastore
    from xbkg.truth import DEFAULT_CAMERA_ASYMMETRY, DEFAULT_FOV_GRADIENT

    gradient, camera = args.fov_gradient, args.camera_asymmetry
    path = simulate_datastore(
        args.out_dir,
        n_runs=args.runs,
        seed=args.seed,
        events_per_run=args.events_per_run,
        fov_gradient=DEFAULT_FOV_GRADIENT if gradient is None else gradient,
        camera_asymmetry=DEFAULT_CAMERA_ASYMMETRY if camera is None else camera,
        flag_like_hess_dr1=args.flag_like_hess_dr1,
        overwrite=args.overwrite,
    )
    print(f"xbkg simulate: wrote a synthetic data store of {plural(args.runs, 'run')} to {path}")
    return 0


def _cmd_copy(args: argparse.Namespace) -> int:
    from xbkg.io.datastore import copy_runs, open_datastore

    store = copy_runs(
        open_datastore(args.data_store), args.obs_id, args.out_dir, overwrite=args.overwrite
    )
    print(f"xbkg copy: {plural(len(store.obs_ids), 'run')} copied to {args.out_dir}")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from xbkg.conventions import ARCHIVE_FILE
    from xbkg.io.netcdf import read_archive
    from xbkg.plotting import write_plots

    bkg = read_archive(args.out_dir / ARCHIVE_FILE)
    paths = write_plots(bkg, args.out_dir, overwrite=args.overwrite, fov_obs_ids=args.obs_id)
    print(f"xbkg plot: wrote {len(paths)} figures to {args.out_dir}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from xbkg.io.netcdf import read_archive
    from xbkg.pipeline import export_models

    paths = export_models(read_archive(args.archive), args.out_dir, overwrite=args.overwrite)
    print(f"xbkg export: wrote {len(paths)} files to {args.out_dir}")
    return 0


# --------------------------------------------------------------------------- validation


def _add_validation_commands(sub: Any) -> None:
    validate = sub.add_parser(
        "validate",
        help="measure the background models of a data store against its runs",
        description=(
            "Compare, run by run, the observed counts with the counts predicted by the "
            "background model that the HDU index of DATA_STORE gives each run (bkg_2d or "
            "bkg_3d, e.g. the H.E.S.S. DR1 templates or the output folder of 'xbkg make'), in "
            "energy x offset bins above each run's safe threshold and outside exclusion "
            "regions. Prints the summary (normalisation, run-to-run scatter of obs/pred, mean "
            "shape chi2/dof, residual significance); --output writes the per-run table."
        ),
    )
    crossval = sub.add_parser(
        "crossval",
        help="k-fold cross-validation of background models by run",
        description=(
            "Build the models 'make' builds (with the same options) from k-1 folds of the "
            "runs of DATA_STORE and validate each on the held-out fold (folds by sorted OBS_ID "
            "shuffled with --seed). Prints the summary of the held-out predictions of all runs."
        ),
    )
    for cmd in (validate, crossval):
        cmd.add_argument("data_store", type=Path, help="folder of the GADF data store")
        _add_run_selection(cmd)
        cmd.add_argument(
            "--offset-max",
            type=float,
            default=2.0,
            help="largest offset of the validation bins, deg (default: %(default)s)",
        )
        cmd.add_argument(
            "--prediction",
            choices=["consumer", "step"],
            default="consumer",
            help="'consumer': integrate bkg_2d models as Gammapy's 3D analysis does (rate "
            "interpolated log-log between bin centres, log-log energy integral; default); "
            "'step': rate x bin width x ring solid angle. bkg_3d templates are always "
            "integrated as constant per pixel",
        )
        cmd.add_argument(
            "--fov",
            action="store_true",
            help="validate bkg_3d models on sky maps around each pointing (0.1 deg pixels, "
            "predicted as Gammapy 2.1's MapDatasetMaker predicts them, summed into 0.2 deg "
            "pixels; 15 log energy bins 0.1-100 TeV): obs/pred, shape Poisson deviance per dof "
            "and the gradients of obs/pred across the ALTAZ field of view. Chosen by itself "
            "for ALTAZ models (validate) and bkg_3d builds (crossval)",
        )
        cmd.add_argument("--output", type=Path, help="write the per-run table (netCDF)")
        cmd.add_argument("--plot", type=Path, help="write the validation plots (PNG)")
        cmd.add_argument("-q", "--quiet", action="store_true", help="print only the summary")
    crossval.add_argument("--k", type=int, default=5, help="number of folds (default: %(default)s)")
    crossval.add_argument("--seed", type=int, default=0, help="fold seed (default: %(default)s)")
    crossval.add_argument(
        "--model",
        choices=["conditions", "groups"],
        help="'conditions': continuous zenith and efficiency dependence; 'groups': stacked "
        "groups (--group, default ZEN_PNT=0,49,90); default as for 'make': 'conditions', or "
        "'groups' with --group or --group-values",
    )
    crossval.add_argument(
        "--group", type=_edges_of_column, action="append", metavar="COL=EDGES", help="as for 'make'"
    )
    crossval.add_argument("--group-values", type=_keyval, action="append", metavar="COL=VALUES")
    crossval.add_argument(
        "--bkg-class",
        choices=["bkg_2d", "bkg_3d"],
        default="bkg_2d",
        help="build radial (bkg_2d) or field-of-view (bkg_3d) models, as 'make' "
        "(default: %(default)s); bkg_3d models are validated on sky maps (--fov)",
    )
    crossval.add_argument(
        "--fov-alignment",
        choices=["ALTAZ", "RADEC"],
        help="alignment of bkg_3d models, as for 'make' (default: ALTAZ, or RADEC on stores "
        "flagged like H.E.S.S. DR1)",
    )
    crossval.add_argument(
        "--smoothing",
        choices=["poisson", "adaptive", "gammapy-0.6"],
        help=f"smoothing of the models (default: {DEFAULT_SMOOTHING}, as for 'make')",
    )


def _catalogs(args: argparse.Namespace) -> tuple[str, ...]:
    """The catalogues of --exclude, or those the default options exclude (``Options.exclude``)."""
    from xbkg.options import PRESETS

    return tuple(args.exclude) if args.exclude else PRESETS["default"].exclude


def _store_runs_regions(
    args: argparse.Namespace, min_radius: float | None, *, catalogs: bool = True
) -> tuple[Any, ...]:
    """The data store, all its runs, the selected runs and the exclusion regions.

    The regions are the circles of --exclude-circle and, with ``catalogs``,
    those of the catalogues (:func:`_catalogs`); ``make`` passes the
    catalogues in its options instead.
    """
    from xbkg.conventions import DEFAULT_MIN_RADIUS
    from xbkg.io import catalog
    from xbkg.io.datastore import open_datastore, run_table, select_runs
    from xbkg.regions import combine_regions, exclusion_circles

    store = open_datastore(args.data_store)
    all_runs = run_table(store)
    runs = select_runs(all_runs, args.obs_id, dict(args.select or []))
    if runs.sizes["obs_id"] == 0:
        raise _Fail(f"{args.data_store}: no run passes the selection")
    radius = DEFAULT_MIN_RADIUS if min_radius is None else min_radius
    known = catalog.catalog_regions(_catalogs(args), min_radius=radius) if catalogs else None
    regions_list = [] if known is None else [known]
    for circle in args.exclude_circle or []:
        if len(circle) != 3:
            raise _Fail(f"--exclude-circle needs RA,DEC,RADIUS, got {circle}")
        regions_list.append(exclusion_circles([circle[0]], [circle[1]], [circle[2]]))
    regions = combine_regions(*regions_list) if regions_list else None
    return store, all_runs, runs, regions


def _validation_inputs(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """Store, run cube and exclusion regions of a validate/crossval command."""
    from xbkg.cube import make_run_cube

    store, _, runs, regions = _store_runs_regions(args, args.min_radius)
    cube = make_run_cube(
        store,
        runs,
        regions=regions,
        progress=_progress(args.quiet),
        skip_bad_runs=args.skip_bad_runs,
        verify=not args.no_verify,
    )
    return store, cube, regions


def _report(table: Any, args: argparse.Namespace, title: str) -> None:
    s = table.attrs
    print(
        f"{title}: {plural(int(s['n_runs']), 'run')}, offsets <= {s['offset_max']:g} deg, "
        f"prediction {s.get('prediction', 'unknown')}: normalisation "
        f"{s['normalisation']:.3f}, scatter of obs/pred {s['scatter']:.3f} (Poisson alone "
        f"{s['poisson_scatter']:.3f}), mean shape chi2/dof {s['chi2_dof']:.3f}, residual "
        f"significance {s['significance_mean']:.2f} +- {s['significance_width']:.2f}"
    )
    if not args.quiet:
        print("   OBS_ID  observed  predicted  obs/pred  signif  chi2/dof")
        for i in range(table.sizes["obs_id"]):
            row = table.isel(obs_id=i)
            print(
                f"  {int(row['obs_id']):7d} {float(row['observed']):9.0f} "
                f"{float(row['predicted']):10.1f} {float(row['ratio']):9.3f} "
                f"{float(row['significance']):7.2f} {float(row['chi2_dof']):9.3f}"
            )
    if args.output is not None:
        table.drop_vars([k for k, v in table.variables.items() if v.dtype.kind == "O"]).to_netcdf(
            args.output
        )
        print(f"  wrote {args.output}")
    if args.plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from xbkg.plotting import plot_validation

        axes = plot_validation(table, label=title)
        axes[0].figure.savefig(args.plot, dpi=100)
        plt.close(axes[0].figure)
        print(f"  wrote {args.plot}")


def _exclusion(bkg: Any) -> str:
    """What was excluded: the catalogues (or none) and the number of circles."""
    from xbkg.errors import plural

    circles = 0 if bkg.regions is None else bkg.regions.sizes["source"]
    catalogs = ", ".join(bkg.options.exclude) or "no catalogue"
    if not circles:
        return f"no exclusion ({catalogs})"
    return f"exclusion of {catalogs} ({plural(circles, 'circle')}, {bkg.options.exclusion_method})"


def _warn_no_exclusion() -> None:
    warnings.warn(
        "no exclusion: the events of known gamma-ray sources count as background in the "
        "comparison; give the exclusion the models were built with (--exclude, "
        "--exclude-circle; by default the gamma-cat sources shipped with xbkg)",
        XbkgWarning,
        stacklevel=3,
    )


def _events_reader(store: Any, verify: bool) -> Any:
    """``events_of(obs_id)``: a run's events with TIME and header (field-of-view validation)."""
    from xbkg.io.datastore import hdu_location, read_events

    def events_of(obs_id: int) -> Any:
        path, hdu = hdu_location(store, obs_id, "events")
        return read_events(path, hdu, verify=verify, time=True)

    return events_of


def _report_fov(table: Any, args: argparse.Namespace, title: str) -> None:
    s = table.attrs
    print(
        f"{title}: {plural(int(s['n_runs']), 'run')} on sky maps (bkg_3d as Gammapy's "
        f"MapDatasetMaker predicts it), offsets <= {s['offset_max']:g} deg: normalisation "
        f"{s['normalisation']:.3f}, scatter of obs/pred {s['scatter']:.3f} (Poisson alone "
        f"{s['poisson_scatter']:.3f}), shape Poisson deviance/dof {s['deviance_dof']:.3f}, "
        f"altitude gradient of obs/pred {100 * s['gradient_lat_mean']:+.2f} %/deg (rms "
        f"{100 * s['gradient_lat_rms']:.2f}), fov_lon gradient "
        f"{100 * s['gradient_lon_mean']:+.2f} %/deg (rms {100 * s['gradient_lon_rms']:.2f}), "
        f"residual significance {s['significance_mean']:.2f} +- {s['significance_width']:.2f}"
    )
    if not args.quiet:
        print("   OBS_ID  observed  predicted  obs/pred  dev/dof  alt %/deg  lon %/deg")
        for i in range(table.sizes["obs_id"]):
            row = table.isel(obs_id=i)
            pct = {k: 100 * float(row[k]) for k in ("gradient_lat", "gradient_lon")}
            err = {k: 100 * float(row[f"{k}_err"]) for k in pct}
            print(
                f"  {int(row['obs_id']):7d} {float(row['observed']):9.0f} "
                f"{float(row['predicted']):10.1f} {float(row['ratio']):9.3f} "
                f"{float(row['deviance_dof']):8.3f} "
                f"{pct['gradient_lat']:+6.2f}+-{err['gradient_lat']:.2f} "
                f"{pct['gradient_lon']:+6.2f}+-{err['gradient_lon']:.2f}"
            )
    if args.output is not None:
        table.to_netcdf(args.output)
        print(f"  wrote {args.output}")
    if args.plot is not None:
        raise _Fail("--plot is not available with the field-of-view validation (--fov)")


def _validate_fov(args: argparse.Namespace, store: Any, runs: Any, regions: Any) -> int:
    """``xbkg validate --fov``: the store's bkg_3d models against its runs on sky maps."""
    from xbkg.io.datastore import gammapy_reversed_lon, hdu_location
    from xbkg.io.gadf import read_bkg
    from xbkg.validation import FOV_ENERGY_EDGES, fov_validation_maps, validate_fov

    flags = gammapy_reversed_lon(store, [int(o) for o in runs["obs_id"].values])

    def model_of(obs_id: int) -> tuple[Any, str]:
        from xbkg.prediction import consumer_alignment

        path, hdu = hdu_location(store, obs_id, "bkg")
        # As the file holds it: Gammapy applies the run's flag to the stored values.
        rate = read_bkg(path, hdu, reverse_lon=False)
        if "fov_lon" not in rate.dims:
            raise _Fail(
                f"OBS_ID {obs_id}: {path} holds a {rate.attrs.get('HDUCLAS4', 'bkg_2d')} model; "
                "the field-of-view validation (--fov) needs bkg_3d models"
            )
        return rate, consumer_alignment(str(rate.attrs["FOVALIGN"]), flags[obs_id])

    maps = fov_validation_maps(
        runs,
        _events_reader(store, not args.no_verify),
        model_of,
        FOV_ENERGY_EDGES,
        regions=regions,
        offset_max=args.offset_max,
    )
    _report_fov(validate_fov(maps), args, "xbkg validate")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from xbkg.io.datastore import read_run_templates
    from xbkg.validation import template_predictions, validate

    store, _, runs, regions = _store_runs_regions(args, args.min_radius)
    templates = read_run_templates(store, runs["obs_id"].values)
    # The ring validation cannot integrate ALTAZ models (they need the run's track).
    altaz = any(str(t.attrs.get("FOVALIGN", "")).upper() == "ALTAZ" for t in templates)
    if args.fov or altaz:
        if regions is None:
            _warn_no_exclusion()
        return _validate_fov(args, store, runs, regions)
    store, cube, regions = _validation_inputs(args)
    if regions is None:
        _warn_no_exclusion()
    templates = read_run_templates(store, cube["obs_id"].values)
    predicted = template_predictions(templates, cube, regions, prediction=args.prediction)
    _report(validate(cube, predicted, offset_max=args.offset_max), args, "xbkg validate")
    return _report_skipped(cube)


def _cmd_crossval(args: argparse.Namespace) -> int:
    from xbkg.options import options_for
    from xbkg.pipeline import builder_for
    from xbkg.validation import crossval

    # The options of 'make': each fold's model is what 'make' builds from its training runs.
    options = options_for(grouping=_grouping(args), smoothing=args.smoothing, model=args.model)
    if args.bkg_class == "bkg_3d" or args.fov:
        return _crossval_fov(args, options)
    _, cube, _ = _validation_inputs(args)
    table = crossval(
        cube,
        builder_for(options),
        k=args.k,
        seed=args.seed,
        offset_max=args.offset_max,
        prediction=args.prediction,
    )
    _report(table, args, f"xbkg crossval ({options.model}, k={args.k}, seed={args.seed})")
    return _report_skipped(cube)


def _crossval_fov(args: argparse.Namespace, options: Any) -> int:
    """``xbkg crossval --bkg-class bkg_3d``: 3D builds of k-1 folds, held-out runs on sky maps."""
    import dataclasses

    from xbkg.io.datastore import gammapy_reversed_lon
    from xbkg.pipeline import build_background, fov_builder_for
    from xbkg.validation import crossval_fov

    if args.bkg_class != "bkg_3d":
        raise _Fail("--fov validates bkg_3d models: add --bkg-class bkg_3d")
    store, _, runs, circles = _store_runs_regions(args, args.min_radius, catalogs=False)
    options = dataclasses.replace(
        options,
        bkg_class="bkg_3d",
        fov_alignment=args.fov_alignment,
        exclude=_catalogs(args),
        min_radius=options.min_radius if args.min_radius is None else args.min_radius,
    )
    # One pass over the events of all runs; each fold builds from its training runs' part.
    bkg = build_background(
        store,
        runs,
        regions=circles,
        options=options,
        progress=_progress(args.quiet),
        skip_bad_runs=args.skip_bad_runs,
        verify=not args.no_verify,
    )
    cube = bkg.cube
    table = crossval_fov(
        cube,
        fov_builder_for(bkg.options),
        _events_reader(store, not args.no_verify),
        gammapy_reversed_lon(store, [int(o) for o in cube["obs_id"].values]),
        regions=bkg.regions,
        k=args.k,
        seed=args.seed,
        offset_max=args.offset_max,
    )
    title = (
        f"xbkg crossval ({bkg.options.model}, bkg_3d {bkg.options.fov_alignment}, "
        f"k={args.k}, seed={args.seed})"
    )
    _report_fov(table, args, title)
    return _report_skipped(cube)


def program() -> NoReturn:
    """The ``xbkg`` program (its script and ``python -m xbkg``): :func:`main`, then exit.

    When the reader of the output stops reading (``xbkg validate ... | head``),
    the program ends quietly with the status of a process ended by SIGPIPE,
    as the other tools of a shell pipeline do: the work is done, only the
    rest of the printout is not wanted.
    """
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # Python would report the closed pipe once more when flushing at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 128 + signal.SIGPIPE
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``xbkg`` command line with ``argv`` (default ``sys.argv[1:]``); the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from xbkg._version import __version__

        print(f"xbkg {__version__}")
        return 0
    if args.command is None:
        parser.print_help()
        return 0
    commands = {
        "make": _cmd_make,
        "simulate": _cmd_simulate,
        "copy": _cmd_copy,
        "plot": _cmd_plot,
        "export": _cmd_export,
        "validate": _cmd_validate,
        "crossval": _cmd_crossval,
    }
    previous = _handle_termination()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", XbkgWarning)
            warnings.showwarning = _show_warning
            return commands[args.command](args)
    except KeyboardInterrupt:
        print("xbkg: interrupted; no output was written or changed", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader of the printout is gone: see program()
        raise
    except (_Fail, XbkgError, ValueError, KeyError, OSError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        for line in _for_command_line(str(message)).splitlines():
            if line.strip():
                print(f"xbkg: error: {line.strip()}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


#: The Python parameters that library messages name, and the options that set them here.
_OPTION_OF_PARAMETER = {
    "overwrite=True": "--overwrite",
    "skip_bad_runs=True": "--skip-bad-runs",
    "missing_group='nearest'": "--missing-group nearest",
    "(select_runs)": "(--obs-id, --select)",
    "(grouping=)": "(--group, --group-values)",
    "scheduler=": "--scheduler",
}


def _for_command_line(message: str) -> str:
    """A library message with its Python parameters replaced by the command-line options."""
    for parameter, option in _OPTION_OF_PARAMETER.items():
        message = message.replace(parameter, option)
    return message


def _show_warning(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
    print(f"xbkg: warning: {_for_command_line(str(message))}", file=sys.stderr)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _handle_termination() -> Any:
    """Treat SIGTERM (a batch system stopping the job) like Ctrl-C: clean up, write nothing.

    Returns the previous handler, or None where handlers cannot be set (a
    thread other than the main one).
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _interrupt)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

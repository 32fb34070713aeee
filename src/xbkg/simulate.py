"""Synthetic GADF data stores drawn from a known background model.

:func:`simulate_datastore` composes the three parts of a simulation: the
schedule of the runs (:mod:`xbkg.schedule`: pointings consistent with the
site, the time and the zenith angle, realistic dead times), their events
drawn from the known background model and injected sources (:mod:`xbkg.truth`,
whose :func:`xbkg.truth.expected_counts` the tests compare the pipeline's
results with), and the files of the data store (:mod:`xbkg.io.simstore`:
event lists, IRFs and indexes that look like real data). The whole pipeline
can thus be run on it and checked against the truth.

The truth can have a known field-of-view asymmetry fixed in the ALTAZ frame
(``fov_gradient``, ``camera_asymmetry``: :class:`xbkg.truth.FovAsymmetry`);
the background events are then drawn in the ALTAZ field of view at their times
and placed on the sky through the run's pointing track (:mod:`xbkg.fov`), and
:func:`xbkg.truth.true_fov_counts` and :func:`xbkg.truth.true_sky_counts` give
the expectation of a run in either alignment. ``flag_like_hess_dr1`` writes the
headers that make Gammapy 2.1 read every background model of the runs with
``REVERSE_LON_RADEC``, as it does for the H.E.S.S. DL3 DR1 release.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xbkg.conventions import OBS_DIM
from xbkg.fov import track_from_header
from xbkg.io.simstore import (
    OBS_COLUMNS,
    Layout,
    StoreHeader,
    check_out_dir,
    staged_store,
    track_keywords,
    write_indexes,
    write_run,
)
from xbkg.schedule import MJDREFF, MJDREFI, TELESCOPES, plan_runs
from xbkg.truth import (
    DEFAULT_CAMERA_ASYMMETRY,
    DEFAULT_FOV_GRADIENT,
    FovAsymmetry,
    check_sources,
    effective_area,
    header_cards,
    irf_axes,
    rad_max,
    run_events,
)

__all__ = ["simulate_datastore"]


def simulate_datastore(
    out_dir: str | os.PathLike[str],
    *,
    n_runs: int = 12,
    events_per_run: int | ArrayLike | None = None,
    livetime: float | ArrayLike | None = None,
    seed: int = 0,
    zenith_range: tuple[float, float] = (10.0, 60.0),
    offset_max: float = 3.0,
    energy_range: tuple[float, float] = (0.05, 200.0),
    layout: Layout = "dr1",
    missing_columns: Sequence[str] = (),
    telescope: str = "HESS",
    point_like: bool = False,
    sources: Sequence[Sequence[float]] = (),
    fov_gradient: float = DEFAULT_FOV_GRADIENT,
    camera_asymmetry: float = DEFAULT_CAMERA_ASYMMETRY,
    flag_like_hess_dr1: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write a GADF data store of simulated runs drawn from the known background model.

    Background events follow :func:`xbkg.truth.true_rate` times each run's live
    time, in energy over ``energy_range`` and offset over ``[0, offset_max]``, so
    :func:`xbkg.truth.expected_counts` with the run's ``ZEN_PNT``, ``LIVETIME`` and
    ``MUONEFF`` is their exact expectation. The same arguments always give the
    same bytes.

    Parameters
    ----------
    out_dir
        Folder to create. It must not exist or be empty, unless ``overwrite``.
    n_runs
        Number of runs (observations).
    events_per_run
        Exact number of background events per run (int, or one per run in
        OBS_ID order). The run's live time is then set so that the expectation
        matches (``LIVETIME = n / integrated rate``). Default: the number is
        Poisson-distributed with mean rate x ``livetime``.
    livetime
        Live time per run in s (scalar or one per run in OBS_ID order);
        default 1500 s. Cannot be combined with ``events_per_run``.
    seed
        Seed of the random generator.
    zenith_range
        Zenith angles of the runs, deg. Field runs are spread uniformly in
        ``cos(zenith)`` (uniform on the sky), stratified so that every part of
        the range gets its share.
    offset_max
        Events are simulated out to this offset from the pointing, deg.
    energy_range
        Events are simulated in this energy range, TeV.
    layout
        ``"dr1"``: one file per run ``data/obs_NNNNNN.fits.gz`` as H.E.S.S.
        DL3 DR1. ``"per-hdu"``: the Gammapy 0.6 tutorial layout, one file per
        HDU in ``runNNNNNN-NNNNNN/runNNNNNN/``, NUL-padded index strings,
        upper-case HDU names, no units on event columns or in the obs-index.
    missing_columns
        obs-index columns to leave out (the event headers keep the values),
        e.g. ``("ZEN_PNT", "SAFE_ENERGY_LO", "MUONEFF", "LIVETIME")``.
    telescope
        One of :data:`xbkg.schedule.TELESCOPES` (``HESS``, ``MAGIC``, ``VERITAS``, ``CTA``):
        sets ``TELESCOP``, ``INSTRUME``, ``N_TELS`` and the site. The
        background model is the same for all.
    point_like
        Write point-like IRFs: ``AEFF`` with ``HDUCLAS3 = POINT-LIKE`` and a
        ``RAD_MAX`` (``rad_max_2d``) HDU per run.
    sources
        Gamma-ray sources ``(ra, dec, sigma_deg, n_events)`` injected on top of
        the background. Every other run is then a wobble run (0.7 deg) on one
        of them. Each run whose pointing lies within ``offset_max`` of a
        source gets ``n_events`` events from it, spread by a Gaussian of width
        ``hypot(sigma_deg, 0.07)`` deg, minus those falling outside the field of
        view; the header keyword ``SIMNSRC`` gives the number kept.
    fov_gradient
        ``G`` of :class:`xbkg.truth.FovAsymmetry`: the true rate is multiplied by
        ``1 + G tan(zenith) fov_lat + C fov_lon`` in the ALTAZ field of view
        (deg, GADF sign: ``fov_lat`` towards higher altitude, ``fov_lon``
        towards lower azimuth), a gradient along altitude that grows with the
        zenith angle. Per deg; e.g. -0.03. Default 0: none.
    camera_asymmetry
        ``C`` above: a camera-fixed gradient along ``fov_lon``, per deg; e.g.
        0.02. Default 0: none. With either set, the headers record the
        asymmetry (``SIMFOVG``, ``SIMFOVC``, ``SIMFOVAL``) and the simulated
        ranges (``SIMOMAX``, ``SIMELO``, ``SIMEHI``), read back by
        :meth:`xbkg.truth.RunTruth.from_header`; ``offset_max * (|G|
        tan(zenith) + |C|)`` must stay below 1 up to the largest zenith angle.
    flag_like_hess_dr1
        Write ``CREATOR = 'SASH FITS::EventListWriter'`` in the EVENTS headers
        and ``HDUVERS = '0.2'`` in those of every HDU of the runs, as the
        H.E.S.S. DL3 DR1 release has them: Gammapy 2.1 then reads every
        background model of these runs with ``REVERSE_LON_RADEC``, whatever
        its ``FOVALIGN``. ``SIMDR1 = T`` in the EVENTS headers says it was done
        on purpose. The events are the same as without the flag.
    overwrite
        Replace ``out_dir`` if it already holds a data store.

    Returns
    -------
    pathlib.Path
        ``out_dir``.

    Raises
    ------
    OutputExistsError
        If ``out_dir`` is not empty and ``overwrite`` is false, or if it is not
        empty and not a data store.
    ValueError
        For inconsistent arguments, naming the argument.

    Notes
    -----
    The store is written to a hidden temporary folder beside ``out_dir`` and
    renamed at the end, so an error never leaves a partial store behind.
    Pointings are consistent with the site, the time and the zenith angle
    (mean sidereal time, no refraction: good to a few tenths of a degree),
    ``ONTIME = LIVETIME / DEADC`` and ``TSTOP - TSTART = ONTIME``, and
    ``SAFE_ENERGY_LO`` is 1.2 x the energy where the true differential rate
    peaks. The truth assumes the zenith angle constant (``ZEN_PNT``) during
    a run. With an asymmetry, the background events are drawn in the ALTAZ
    field of view at their times and placed on the sky through the run's
    pointing track, built from the keywords written to its EVENTS header
    (:func:`xbkg.fov.track_from_header`); their offsets from ``RA_PNT``,
    ``DEC_PNT`` then differ from those drawn by the differential aberration
    (relative 1e-4), and the linear factor averages to 1 on every ring, so
    :func:`xbkg.truth.expected_counts` still holds.
    """
    # Absolute without resolving symlinks: the temporary sibling must be a real sibling.
    out_dir = Path(os.path.abspath(out_dir))
    if not out_dir.name:
        raise ValueError(f"out_dir must name a folder below a parent folder, got {out_dir}")
    if isinstance(n_runs, bool) or int(n_runs) != n_runs or n_runs < 1:
        raise ValueError(f"n_runs must be a positive integer, got {n_runs!r}")
    n_runs = int(n_runs)
    if layout not in ("dr1", "per-hdu"):
        raise ValueError(f"layout must be 'dr1' or 'per-hdu', got {layout!r}")
    key = telescope.upper()
    if key not in TELESCOPES:
        raise ValueError(f"unknown telescope {telescope!r}; choose from {sorted(TELESCOPES)}")
    site = TELESCOPES[key]
    lo_z, hi_z = (float(v) for v in zenith_range)
    if not (0 <= lo_z < hi_z < 90):
        raise ValueError(f"zenith_range must satisfy 0 <= lo < hi < 90 deg, got {zenith_range}")
    e_lo, e_hi = (float(v) for v in energy_range)
    if not (0 < e_lo < e_hi):
        raise ValueError(f"energy_range must satisfy 0 < lo < hi (TeV), got {energy_range}")
    if not (0 < offset_max <= 10):
        raise ValueError(f"offset_max must be in (0, 10] deg, got {offset_max}")
    missing = {c.strip().upper() for c in missing_columns}
    unknown = missing - set(OBS_COLUMNS)
    if unknown or "OBS_ID" in missing:
        allowed = sorted(set(OBS_COLUMNS) - {"OBS_ID"})
        raise ValueError(
            f"missing_columns: cannot leave out {sorted(unknown or {'OBS_ID'})}; "
            f"choose from {allowed}"
        )
    live: NDArray[np.float64] | None = None
    counts: NDArray[np.int64] | None = None
    if events_per_run is not None:
        if livetime is not None:
            raise ValueError("give events_per_run or livetime, not both (one sets the other)")
        counts = np.asarray(events_per_run)
        if (
            counts.ndim > 1
            or counts.size not in (1, n_runs)
            or np.any(counts < 1)
            or np.any(counts != np.round(counts))
        ):
            raise ValueError(
                f"events_per_run must be a positive integer or {n_runs} of them, got "
                f"{events_per_run!r}"
            )
        counts = np.broadcast_to(counts.astype(np.int64).ravel(), (n_runs,))
    else:
        live = np.asarray(1500.0 if livetime is None else livetime, dtype=np.float64)
        if live.ndim > 1 or live.size not in (1, n_runs) or np.any(~(live > 0)):
            raise ValueError(
                f"livetime must be a positive number or {n_runs} of them (s), got {livetime!r}"
            )
        live = np.broadcast_to(live.ravel(), (n_runs,))
    checked_sources = check_sources(sources)
    asymmetry = FovAsymmetry(gradient=fov_gradient, camera=camera_asymmetry)
    asymmetry.check(hi_z, offset_max)
    check_out_dir(out_dir, overwrite)

    seeds = np.random.SeedSequence(seed).spawn(n_runs + 1)
    runs = plan_runs(
        np.random.default_rng(seeds[0]),
        n_runs=n_runs,
        livetime=live,
        events_per_run=counts,
        zenith_range=(lo_z, hi_z),
        site=site,
        sources=checked_sources,
        energy_range=(e_lo, e_hi),
        offset_max=offset_max,
    )
    # The planned zenith angles match the requested range to round-off; check them all.
    asymmetry.check(float(np.max(runs["zen_pnt"].values)), offset_max)
    head = StoreHeader(
        telescop=site.telescop,
        instrume=site.instrume,
        n_tels=site.n_tels,
        geolon=site.geolon,
        geolat=site.geolat,
        altitude=site.altitude,
        prefix=site.prefix,
        mjdrefi=MJDREFI,
        mjdreff=MJDREFF,
        truth_cards=tuple(header_cards() + _fov_truth_cards(asymmetry, offset_max, (e_lo, e_hi))),
        seed=seed,
        like_hess_dr1=bool(flag_like_hess_dr1),
    )
    energy, theta = irf_axes(offset_max)
    with staged_store(out_dir) as tmp:
        rows: list[dict[str, object]] = []
        event_count = np.empty(n_runs, dtype=np.int64)
        for i in range(n_runs):
            track = None
            if not asymmetry.symmetric:
                track = track_from_header(track_keywords(runs, i, head))
            events, n_source = run_events(
                np.random.default_rng(seeds[i + 1]),
                ra_pnt=runs["ra_pnt"].values[i],
                dec_pnt=runs["dec_pnt"].values[i],
                zenith=runs["zen_pnt"].values[i],
                tstart=runs["tstart"].values[i],
                tstop=runs["tstop"].values[i],
                n_background=int(runs["n_background"].values[i]),
                sources=checked_sources,
                offset_max=offset_max,
                energy_range=(e_lo, e_hi),
                asymmetry=asymmetry,
                track=track,
            )
            event_count[i] = events["ENERGY"].size
            irfs = {
                "energy": energy,
                "theta": theta,
                "EFFAREA": effective_area(runs["zen_pnt"].values[i], offset_max),
            }
            if point_like:
                irfs["RAD_MAX"] = rad_max(offset_max)
            rows += write_run(
                tmp,
                runs,
                i,
                events,
                irfs,
                n_source=n_source,
                layout=layout,
                point_like=point_like,
                head=head,
            )
        runs = runs.assign(event_count=(OBS_DIM, event_count))
        write_indexes(tmp, runs, rows, missing=missing, layout=layout, head=head)
    return out_dir


def _fov_truth_cards(
    asymmetry: FovAsymmetry, offset_max: float, energy_range: tuple[float, float]
) -> list[tuple[str, object, str]]:
    """Header cards of an asymmetric truth, and the simulated ranges its expectation needs.

    None for a radial truth, whose files stay as they were."""
    if asymmetry.symmetric:
        return []
    return [
        *asymmetry.header_cards(),
        ("SIMOMAX", float(offset_max), "[deg] events simulated out to this offset"),
        ("SIMELO", energy_range[0], "[TeV] events simulated above this energy"),
        ("SIMEHI", energy_range[1], "[TeV] events simulated below this energy"),
    ]

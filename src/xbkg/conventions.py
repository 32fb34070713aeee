"""Names, units and format constants shared by every module.

Everything that is a *convention* (a dimension name, a unit string, a GADF
keyword) lives here once, so that the rest of the code refers to it by name.
"""

from __future__ import annotations

from typing import Final, Literal

#: Dimension names of the labelled arrays.
OBS_DIM: Final = "obs_id"
ENERGY_DIM: Final = "energy"
OFFSET_DIM: Final = "offset"
GROUP_DIM: Final = "group"
BOUNDS_DIM: Final = "bounds"

#: Units (CF-style strings, parsed with :mod:`astropy.units` where units change).
ENERGY_UNIT: Final = "TeV"
OFFSET_UNIT: Final = "deg"
TIME_UNIT: Final = "s"
RATE_UNIT: Final = "s-1 MeV-1 sr-1"
#: Energy widths are taken in MeV for the rate while edges are stored in TeV.
MEV_PER_TEV: Final = 1.0e6

#: Which run duration normalises the rate. GADF says observation time (ONTIME);
#: Gammapy 0.6 and the H.E.S.S. DR1 templates used LIVETIME.
TimeConvention = Literal["ontime", "livetime"]
TIME_CONVENTIONS: Final[tuple[str, ...]] = ("ontime", "livetime")
DEFAULT_TIME_CONVENTION: Final[TimeConvention] = "ontime"

#: Default binning, as in the Gammapy 0.6 tutorial: 15 log bins 0.1-100 TeV,
#: 99 equal-solid-angle offset rings out to 2.5 deg.
DEFAULT_ENERGY_RANGE: Final = (0.1, 100.0)
DEFAULT_ENERGY_BINS: Final = 15
#: Energy edges chosen from the data (the default of ``xbkg make``) lie on the
#: grid ``10**(k / ENERGY_GRID_PER_DECADE)`` TeV, as the default 0.1-100 TeV
#: binning does, and cover at least DEFAULT_ENERGY_RANGE, so that models of
#: different data stores share their bins.
ENERGY_GRID_PER_DECADE: Final = 5
#: Energies (TeV) where events are looked for when the runs give no safe energy range.
ENERGY_SEARCH_RANGE: Final = (1.0e-3, 1.0e4)
DEFAULT_OFFSET_MAX: Final = 2.5
DEFAULT_OFFSET_EDGES: Final = 100

#: Default grouping of the tutorial: two zenith bands.
DEFAULT_GROUPING: Final = {"ZEN_PNT": (0.0, 49.0, 90.0)}

#: Source catalogues shipped with xbkg, by name: file inside the package (each
#: with its licence and citation in a README next to it). gamma-cat is under CC
#: BY-NC-SA 4.0, not under xbkg's licence.
CATALOGS: Final = {"gammacat": "catalogs/gammacat/gammacat-exclusion.ecsv"}
#: Catalogue of known sources excluded by default (``Options.exclude``).
DEFAULT_CATALOG: Final = "gammacat"
#: Name that turns catalogue exclusion off (``--exclude none``, ``Options(exclude="none")``).
NO_CATALOG: Final = "none"

#: Smoothing methods (:func:`xbkg.model.smooth`) and the one default, read by the
#: condition model, :class:`xbkg.options.Options`, cross-validation and the command line.
SmoothingMethod = Literal["poisson", "adaptive", "gammapy-0.6"]
SMOOTHING_METHODS: Final[tuple[str, ...]] = ("poisson", "adaptive", "gammapy-0.6")
DEFAULT_SMOOTHING: Final[SmoothingMethod] = "poisson"
#: Ring solid angle: exact spherical ring area, or Gammapy 0.6's flat-sky one.
SolidAngle = Literal["exact", "flat"]
#: Exclusion geometry: every overlapping circle, or Gammapy 0.6's nearest-source wedge.
ExclusionMethod = Literal["exact", "gammapy-0.6"]
EXCLUSION_METHODS: Final[tuple[str, ...]] = ("exact", "gammapy-0.6")

#: Exclusion radius used where a catalogue gives no size, and the default minimum.
DEFAULT_SOURCE_RADIUS: Final = 0.3
DEFAULT_MIN_RADIUS: Final = 0.3

#: GADF bkg_2d / bkg_3d header keywords.
GADF_HDUDOC: Final = "https://github.com/open-gamma-ray-astro/gamma-astro-data-formats"
GADF_HDUVERS: Final = "0.3"
BKG_2D_EXTNAME: Final = "BACKGROUND"
BKG_2D_HDUCLAS: Final = {
    "HDUCLASS": "GADF",
    "HDUDOC": GADF_HDUDOC,
    "HDUVERS": GADF_HDUVERS,
    "HDUCLAS1": "RESPONSE",
    "HDUCLAS2": "BKG",
    "HDUCLAS3": "FULL-ENCLOSURE",
    "HDUCLAS4": "BKG_2D",
}
#: Header keyword recording which run duration normalises the rate.
TIME_KEYWORD: Final = "BKGTIME"

#: Output file names (the Gammapy 0.6 names, kept so that old scripts still work).
GROUP_DEF_FILE: Final = "group-def.fits"
OBS_INDEX_FILE: Final = "obs-index.fits.gz"
HDU_INDEX_FILE: Final = "hdu-index.fits.gz"
ARCHIVE_FILE: Final = "background.nc"

#: Cube attribute: JSON ``{obs_id: message}`` of the runs left out as unusable.
SKIPPED_ATTR: Final = "skipped_runs"


def model_filename(group_id: int, smooth: bool) -> str:
    """File name of the bkg_2d FITS file of one group (Gammapy 0.6 naming)."""
    prefix = "smooth_" if smooth else ""
    return f"{prefix}background_2D_group_{group_id:03d}_table.fits.gz"


def run_model_filename(obs_id: int) -> str:
    """File name of the ``bkg_2d`` model of one run (condition-dependent model)."""
    return f"background_run_{obs_id:06d}.fits.gz"


def coord_name(column: str) -> str:
    """Name of the run coordinate holding an obs-index column (``DATE-OBS`` -> ``date_obs``)."""
    return column.strip().lower().replace("-", "_")


# --------------------------------------------------------------------------- field of view (bkg_3d)

#: Field-of-view dimensions of a ``bkg_3d`` model, named as in Gammapy's ``Background3D``.
#: ``fov_lon`` is stored in the GADF column ``DETX``, ``fov_lat`` in ``DETY``.
FOV_LON_DIM: Final = "fov_lon"
FOV_LAT_DIM: Final = "fov_lat"
FOV_UNIT: Final = "deg"
#: Default field-of-view binning: 50 x 50 bins of 0.1 deg, as the H.E.S.S. DR1 templates.
DEFAULT_FOV_HALF_WIDTH: Final = 2.5
DEFAULT_FOV_BINS: Final = 50

#: Alignment of the field-of-view axes (GADF ``FOVALIGN``): with the horizontal
#: system (``fov_lat`` towards the zenith) or the equatorial one (towards North).
#: GADF (and Gammapy since 1.3) count ``fov_lon`` towards lower azimuth / lower RA.
FovAlignment = Literal["ALTAZ", "RADEC"]
FOV_ALIGNMENTS: Final[tuple[str, ...]] = ("ALTAZ", "RADEC")
DEFAULT_FOV_ALIGNMENT: Final[FovAlignment] = "ALTAZ"
#: Header keyword (and attribute of a bkg_3d rate) holding the alignment.
FOVALIGN_KEYWORD: Final = "FOVALIGN"
#: Header keyword of our bkg_3d files: true if DETX holds ``-fov_lon`` (see below).
REVERSED_LON_KEYWORD: Final = "REVLON"
#: Gammapy 2.1 (``Observation.bkg``) evaluates every background of a run whose EVENTS
#: header has exactly these values with ``fov_lon`` reversed (``REVERSE_LON_RADEC``),
#: whatever FOVALIGN says: the H.E.S.S. DL3 DR1 release is written like that.
GAMMAPY_REVERSED_LON_EVENTS: Final = {"CREATOR": "SASH FITS::EventListWriter", "HDUVERS": "0.2"}

BKG_3D_EXTNAME: Final = "BACKGROUND"
BKG_3D_HDUCLAS: Final = {**BKG_2D_HDUCLAS, "HDUCLAS4": "BKG_3D"}
#: HDU index ``HDU_TYPE`` and ``HDU_CLASS`` values of background rows.
BKG_HDU_TYPE: Final = "bkg"
BKG_2D_HDU_CLASS: Final = "bkg_2d"
BKG_3D_HDU_CLASS: Final = "bkg_3d"
BKG_HDU_CLASSES: Final[tuple[str, ...]] = (BKG_2D_HDU_CLASS, BKG_3D_HDU_CLASS)

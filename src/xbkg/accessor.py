"""The ``.bkg`` accessor: the everyday calls as methods of a model Dataset.

``ds.bkg.acceptance_curve(energy=1.0)`` is ``xbkg.products.acceptance_curve(ds,
energy=1.0)``, and so on: every method hands its arguments unchanged to one
public function, whose documentation applies. ``import xbkg`` (or of any of
its modules) registers it, whatever was imported before; so does
``xr.open_dataset(path)`` without an engine (xarray loads xbkg's backend).

The functions are imported inside the methods so that importing this module
costs only the import of xarray.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import xarray as xr

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["BackgroundAccessor"]


@xr.register_dataset_accessor("bkg")
class BackgroundAccessor:
    """Background-model methods of a Dataset, available as ``ds.bkg``.

    Parameters
    ----------
    ds
        A grouped model, a per-run cube, or a model read from a FITS file
        (``bkg_2d``, or ``bkg_3d`` for the ``fov_*`` methods).
    """

    def __init__(self, ds: xr.Dataset) -> None:
        self._ds = ds

    def rate(self, **kwargs: Any) -> xr.Dataset:
        """Add ``rate`` and ``rate_error``: :func:`xbkg.model.compute_rate`."""
        from xbkg.model import compute_rate

        return compute_rate(self._ds, **kwargs)

    def smooth(self, *args: Any, **kwargs: Any) -> xr.Dataset:
        """Smoothed model: :func:`xbkg.model.smooth`."""
        from xbkg.model import smooth

        return smooth(self._ds, *args, **kwargs)

    def integrate(self, *args: Any, **kwargs: Any) -> xr.Dataset:
        """Sums and rate over ranges of bins: :func:`xbkg.products.integrate`."""
        from xbkg.products import integrate

        return integrate(self._ds, *args, **kwargs)

    def acceptance_curve(self, *args: Any, **kwargs: Any) -> xr.DataArray:
        """Rate versus offset: :func:`xbkg.products.acceptance_curve`."""
        from xbkg.products import acceptance_curve

        return acceptance_curve(self._ds, *args, **kwargs)

    def spectrum(self, *args: Any, **kwargs: Any) -> xr.DataArray:
        """Rate versus energy: :func:`xbkg.products.spectrum`."""
        from xbkg.products import spectrum

        return spectrum(self._ds, *args, **kwargs)

    def image(self, **kwargs: Any) -> xr.DataArray:
        """Rate versus energy and offset: :func:`xbkg.products.image`."""
        from xbkg.products import image

        return image(self._ds, **kwargs)

    def fov_image(self, *args: Any, **kwargs: Any) -> xr.DataArray:
        """A ``bkg_3d`` model over an energy band: :func:`xbkg.products.fov_image`."""
        from xbkg.products import fov_image

        return fov_image(self._ds, *args, **kwargs)

    def fov_profile(self, *args: Any, **kwargs: Any) -> xr.DataArray:
        """A ``bkg_3d`` model along fov_lon or fov_lat: :func:`xbkg.products.fov_profile`."""
        from xbkg.products import fov_profile

        return fov_profile(self._ds, *args, **kwargs)

    def plot_fov_image(self, *args: Any, **kwargs: Any) -> Axes:
        """Plot a ``bkg_3d`` model over an energy band: :func:`xbkg.plotting.plot_fov_image`."""
        from xbkg.plotting import plot_fov_image

        return plot_fov_image(self._ds, *args, **kwargs)

    def plot_fov_profile(self, *args: Any, **kwargs: Any) -> Axes:
        """Plot a ``bkg_3d`` profile: :func:`xbkg.plotting.plot_fov_profile`."""
        from xbkg.plotting import plot_fov_profile

        return plot_fov_profile(self._ds, *args, **kwargs)

    def plot_acceptance_curve(self, *args: Any, **kwargs: Any) -> Axes:
        """Plot the acceptance curve: :func:`xbkg.plotting.plot_acceptance_curve`."""
        from xbkg.plotting import plot_acceptance_curve

        return plot_acceptance_curve(self._ds, *args, **kwargs)

    def plot_spectrum(self, *args: Any, **kwargs: Any) -> Axes:
        """Plot the spectrum: :func:`xbkg.plotting.plot_spectrum`."""
        from xbkg.plotting import plot_spectrum

        return plot_spectrum(self._ds, *args, **kwargs)

    def plot_image(self, **kwargs: Any) -> Axes:
        """Plot the rate image: :func:`xbkg.plotting.plot_image`."""
        from xbkg.plotting import plot_image

        return plot_image(self._ds, **kwargs)

    def plot_overview(self, **kwargs: Any) -> Any:
        """Curve, spectrum and image side by side: :func:`xbkg.plotting.plot_overview`."""
        from xbkg.plotting import plot_overview

        return plot_overview(self._ds, **kwargs)

    def to_fits(self, path: str | Path, **kwargs: Any) -> Path:
        """Write one group as a GADF ``bkg_2d`` file: :func:`xbkg.io.store.write_model_fits`."""
        from xbkg.io.store import write_model_fits

        return write_model_fits(self._ds, path, **kwargs)

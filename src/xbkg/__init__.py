"""xbkg: template background models for gamma-ray telescopes on labelled arrays."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("xbkg")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = ["__version__"]

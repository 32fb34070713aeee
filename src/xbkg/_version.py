"""The version of xbkg, in one place (``pyproject.toml`` and the outputs read it here).

A literal, so that reading it imports nothing and costs nothing at start-up.
"""

__version__ = "0.1.0"

"""Tidal's daemon core."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tidal")  # one source: pyproject.toml
except PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0.0.0+unknown"

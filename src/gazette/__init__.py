"""Gazette: a self-hosted newsletter service."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gazette")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

"""The package version, from the installed distribution's metadata (one source: pyproject.toml).

A leaf module: anything may import it without importing the package ``__init__``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hematovision")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

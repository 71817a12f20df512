"""The package version, importable without importing the package (no cycles)."""

__version__ = "0.1.0"

"""The installed BrainMIA version (light: imports nothing heavy)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def package_version() -> str:
    """The installed BrainMIA version."""
    try:
        return version("brainmia")
    except PackageNotFoundError:
        return "0+unknown"

"""Finding the headless Chromium that prints reports to PDF (stdlib only, no plotly).

The backend's settings default ``BRAINMIA_CHROMIUM`` to :func:`find_chromium`; the PDF
functions of :mod:`frontend.pdf` take the executable from their callers and only fall back
to this lookup.
"""

from __future__ import annotations

import shutil

__all__ = ["CHROMIUM_NAMES", "find_chromium"]

#: Browser executables looked up on PATH, in order, when ``BRAINMIA_CHROMIUM`` is not set.
CHROMIUM_NAMES: tuple[str, ...] = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    """The first of :data:`CHROMIUM_NAMES` found on PATH, or None."""
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)

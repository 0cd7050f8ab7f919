"""Which server-side manifests an organisation may register, and the one answer for the others.

Server folders are configured per organisation (``BRAINMIA_ORG_MANIFEST_ROOTS``, a JSON object
``{"<organisation name>": ["/data/cohorts/a", ...]}``): a token registers only manifests under its
own organisation's folders, after resolving links and ``..``. The older flat list
``BRAINMIA_MANIFEST_ROOTS`` is kept for single-organisation installs and belongs to the ``default``
organisation (the one ``brainmia serve`` creates at its first start) only.

A path that does not exist, is not a file, lies under another organisation's folder or under no
folder at all gets one and the same answer (:func:`manifest_not_found`), so a caller learns
nothing about files it may not register.
"""

from __future__ import annotations

from pathlib import Path

from .services.errors import ApiError
from .auth import DEFAULT_ORG
from .settings import Settings

__all__ = ["allowed_manifest", "manifest_not_found", "manifest_roots_for"]


def manifest_roots_for(settings: Settings, org_name: str) -> list[Path]:
    """The resolved folders whose manifests organisation ``org_name`` may register."""
    roots = list(settings.org_manifest_roots.get(org_name, []))
    if org_name == DEFAULT_ORG:
        roots += settings.manifest_roots
    return [Path(root).resolve() for root in roots]


def manifest_not_found() -> ApiError:
    """The answer for every manifest path the caller may not register, existing or not."""
    return ApiError(
        404,
        "not_found",
        "no manifest this organisation may register at manifest_path: it must be an existing file under one "
        "of the organisation's server folders (the administrator sets BRAINMIA_ORG_MANIFEST_ROOTS)",
        [{"field": "manifest_path", "reason": "not found"}],
    )


def allowed_manifest(settings: Settings, org_name: str, given: Path) -> Path:
    """The resolved manifest file ``given`` (absolute), if ``org_name`` may register it.

    Raises:
        ApiError: :func:`manifest_not_found`, whatever the reason.
    """
    roots = manifest_roots_for(settings, org_name)
    try:
        resolved = given.resolve()
        allowed = any(resolved.is_relative_to(root) for root in roots) and resolved.is_file()
    except (OSError, RuntimeError, ValueError):  # a link loop, a name too long...
        allowed = False
    if not allowed:
        raise manifest_not_found()
    return resolved

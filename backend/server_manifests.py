"""Which server-side manifests an organisation may register, and the one answer for the others.

Server folders are configured per organisation (``BRAINMIA_ORG_MANIFEST_ROOTS``, a JSON object
``{"<organisation name>": ["/data/cohorts/a", ...]}``): a token registers only manifests under its
own organisation's folders, after resolving links and ``..``. The older flat list
``BRAINMIA_MANIFEST_ROOTS`` is kept for single-organisation installs and belongs to the ``default``
organisation (the one ``brainmia serve`` creates at its first start) only.

A path that does not exist, is not a file, lies under another organisation's folder or under no
folder at all gets one and the same answer (:func:`manifest_not_found`), so a caller learns
nothing about files it may not register. The same holds for a BIDS dataset folder and its member
lists (:func:`allowed_server_path`).
"""

from __future__ import annotations

from pathlib import Path

from .auth import DEFAULT_ORG
from .services.errors import ApiError
from .settings import Settings

__all__ = ["allowed_manifest", "allowed_server_path", "manifest_not_found", "manifest_roots_for"]


def manifest_roots_for(settings: Settings, org_name: str) -> list[Path]:
    """The resolved folders whose manifests organisation ``org_name`` may register."""
    roots = list(settings.org_manifest_roots.get(org_name, []))
    if org_name == DEFAULT_ORG:
        roots += settings.manifest_roots
    return [Path(root).resolve() for root in roots]


def manifest_not_found(field: str = "manifest_path") -> ApiError:
    """The answer for every server path the caller may not register, existing or not."""
    what = {"manifest_path": "an existing file", "bids_path": "an existing BIDS dataset folder"}.get(field, "an existing file")
    return ApiError(
        404,
        "not_found",
        f"nothing this organisation may register at {field}: it must be {what} under one "
        "of the organisation's server folders (the administrator sets BRAINMIA_ORG_MANIFEST_ROOTS)",
        [{"field": field, "reason": "not found"}],
    )


def allowed_server_path(settings: Settings, org_name: str, given: Path, *, field: str = "manifest_path",
                        folder: bool = False) -> Path:
    """The resolved server path ``given`` (absolute), if ``org_name`` may register it.

    Args:
        settings: the organisations' server folders.
        org_name: the caller's organisation.
        given: the absolute path sent.
        field: the request field, for the answer.
        folder: whether it must be a folder (a BIDS dataset) rather than a file.

    Raises:
        ApiError: :func:`manifest_not_found`, whatever the reason.
    """
    roots = manifest_roots_for(settings, org_name)
    try:
        resolved = given.resolve()
        allowed = any(resolved.is_relative_to(root) for root in roots) and (
            resolved.is_dir() if folder else resolved.is_file())
    except (OSError, RuntimeError, ValueError):  # a link loop, a name too long...
        allowed = False
    if not allowed:
        raise manifest_not_found(field)
    return resolved


def allowed_manifest(settings: Settings, org_name: str, given: Path) -> Path:
    """The resolved manifest file ``given`` (absolute), if ``org_name`` may register it.

    Raises:
        ApiError: :func:`manifest_not_found`, whatever the reason.
    """
    return allowed_server_path(settings, org_name, given)

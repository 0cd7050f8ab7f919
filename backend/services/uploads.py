"""What the model and scan-set services share: the uploaded file, client file names, archive
limits, and deleting a row with its files (all or nothing)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..archives import ArchiveLimits
from ..db.models import Assessment
from ..settings import Settings
from ..storage import Storage
from .. import audit
from ..auth import Principal
from .errors import ApiError, not_found

ARCHIVE_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".zip", ".tar")
"""Archive file endings accepted for uploads, longest first (so ``.tar.gz`` wins over ``.gz``)."""


class UploadedFile(Protocol):
    """A file the request plumbing has written to disk (:class:`backend.api.uploads.FilePart`)."""

    @property
    def filename(self) -> str:
        """The client's file name, as sent (untrusted)."""

    @property
    def path(self) -> Path:
        """Where it was written (inside the upload's private work folder)."""

    @property
    def size(self) -> int:
        """Bytes written."""

    @property
    def sha256(self) -> str:
        """Hex digest of those bytes."""


def archive_stem(filename: str) -> str:
    """An uploaded archive's file name without its folders and archive ending (the default name)."""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    for suffix in ARCHIVE_SUFFIXES:
        if base.lower().endswith(suffix):
            return base[: -len(suffix)] or base
    return base


def owned_row(session: Session, principal: Principal, table: Any, object_id: str, what: str) -> Any:
    """The caller's organisation's row ``object_id`` of ``table``; 404 naming ``what`` otherwise."""
    row = session.scalar(select(table).where(table.id == object_id, table.org_id == principal.org_id))
    if row is None:
        raise not_found(what, object_id)
    return row


def viewed_row(session: Session, principal: Principal, table: Any, object_id: str, what: str, kind: str) -> Any:
    """:func:`owned_row`, its view recorded in the audit log as object type ``kind``."""
    row = owned_row(session, principal, table, object_id, what)
    audit.record(session, principal, "view", kind, object_id)
    return row


def safe_filename(name: str | None, default: str) -> str:
    """A file name safe to use on disk, from a client's name: last component, plain characters.

    Args:
        name: the client's name (may hold a path, any characters).
        default: used when nothing usable is left.
    """
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in base).lstrip(".")
    cleaned = cleaned[-120:].lstrip(".")
    return cleaned or default


def archive_limits(settings: Settings) -> ArchiveLimits:
    """The extraction limits of the settings (total bytes, members, compression ratio)."""
    return ArchiveLimits(
        max_total_bytes=settings.max_extracted_bytes,
        max_members=settings.max_archive_members,
        max_ratio=settings.max_compression_ratio,
    )


def refuse_if_used(session: Session, column: Any, object_id: str, what: str) -> None:
    """409 ``in_use`` while an assessment refers to the object (``column == object_id``).

    Args:
        session: the request's session.
        column: the assessments' column that refers to it (``Assessment.model_id``).
        object_id: its id.
        what: how messages call it (``model``, ``scan set``).
    """
    users = session.scalar(select(func.count()).select_from(Assessment).where(column == object_id)) or 0
    if users:
        raise ApiError(409, "in_use", f"{what} '{object_id}' is used by {users} assessment(s): delete them first")


def delete_with_files(
    session: Session,
    storage: Storage,
    row: Any,
    folder: Path | None,
    *,
    what: str,
    record: Callable[[], None],
    then: Callable[[Path], None] | None = None,
) -> None:
    """Delete ``row`` and the folder of its files: both or neither.

    The folder (when given and there) is first moved into a new temporary folder of the
    storage; the row is deleted, ``record`` adds the audit event and the session commits. On
    any failure the folder is moved back. Afterwards the moved files are removed.

    Args:
        session: the request's session.
        storage: where the files are.
        row: the row to delete.
        folder: the folder of its files (None: files that are not the service's to delete).
        what: how messages call it (``model``, ``scan set``).
        record: adds the deletion's audit event to the session.
        then: called after the commit with where the folder now is (missing if it was not
            there); the moved files are removed whatever it does.

    Raises:
        ApiError: 409 ``in_use`` when an assessment referring to it was created meanwhile.
    """
    object_id = row.id
    trash = storage.temp_dir()
    moved = trash / "files"
    if folder is not None and folder.exists():
        os.replace(folder, moved)
    try:
        session.delete(row)
        record()
        session.commit()
    except BaseException as exc:
        session.rollback()
        if folder is not None and moved.exists():
            os.replace(moved, folder)
        Storage.remove([trash])
        if isinstance(exc, IntegrityError):
            raise ApiError(409, "in_use", f"{what} '{object_id}' is used by an assessment: delete it first") from None
        raise
    try:
        if then is not None:
            then(moved)
    finally:
        Storage.remove([trash])

"""Scan sets: a validated manifest and its scans, from an uploaded archive or a server folder.

Archive upload: extracted by :mod:`backend.archives` (regular files and folders only, size,
count and ratio limits), the manifest validated with ``confine=True`` and every scan opened as
NIfTI; then the folder is published to ``scan_sets/<id>/`` with one rename and the row stored.
On any failure nothing is kept.

Server manifest: a ``manifest.csv`` under one of the organisation's folders (see
:mod:`backend.server_manifests`; checked after resolving links; one 404 answer otherwise, whether
the path exists or not), whose scans must stay inside its folder. Nothing is copied.

Delete: 409 while an assessment refers to the scan set. Otherwise the row goes, an uploaded
set's files go, and so do the conformed-volume cache entries of its scans under the grids of
the organisation's models and the default grid (the cache is content-addressed: an entry is
keyed by the scan's bytes and the grid, so other grids' entries cannot be found from the scan
set; they are unreadable without the scan and are recomputed on demand). A server set's
files are the administrator's and are never deleted.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import audit
from ..archives import ArchiveError, extract_archive
from ..auth import Principal
from ..db.models import Assessment, ModelRecord, Organisation, ScanSet, new_id
from ..server_manifests import allowed_manifest
from ..settings import Settings
from ..storage import Storage
from .errors import ApiError, from_input_error
from .reference_sets import refuse_if_scan_set_has_reference_sets
from .uploads import (
    UploadedFile,
    archive_limits,
    archive_stem,
    delete_with_files,
    owned_row,
    refuse_if_used,
    viewed_row,
)

MANIFEST_NAME = "manifest.csv"
_IGNORED_TOP = {"__MACOSX", ".DS_Store"}


def owned_scan_set(session: Session, principal: Principal, scan_set_id: str) -> ScanSet:
    """The caller's organisation's scan set ``scan_set_id``; 404 otherwise."""
    return owned_row(session, principal, ScanSet, scan_set_id, "scan set")


def view_scan_set(session: Session, principal: Principal, scan_set_id: str) -> ScanSet:
    """The caller's scan set ``scan_set_id`` (404 otherwise), its view recorded in the audit log."""
    return viewed_row(session, principal, ScanSet, scan_set_id, "scan set", "scan_set")


# --- validation ----------------------------------------------------------------------------


def _relative(text: str, base: Path, label: str) -> str:
    """``text`` with ``base`` paths shown relative to it (no server path in a message)."""
    return text.replace(str(base) + os.sep, "").replace(str(base), label)


def _check_scans(records: Iterable[Any], base: Path, label: str, settings: Settings) -> None:
    """Open every listed scan as NIfTI (a few at a time, each header bounded first); 422 naming every bad one."""
    from worker.engine.errors import ScanError
    from worker.engine.volumes import read_nifti

    first_line: dict[Path, int] = {}
    for rec in records:
        first_line.setdefault(rec.path, rec.line)

    def check(path: Path) -> str | None:
        try:
            read_nifti(path, settings.volume_limits)
        except ScanError as exc:
            return exc.reason
        return None

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        results = list(zip(first_line, pool.map(check, first_line), strict=True))
    bad = [(path, reason) for path, reason in results if reason is not None]
    if bad:
        names = [_relative(str(p), base, label) for p, _ in bad]
        details = [
            {"line": first_line[p], "field": "path", "reason": f"{name}: {_relative(reason, base, label)}"}
            for (p, reason), name in zip(bad, names, strict=True)
        ]
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise ApiError(422, "invalid_scan", f"{len(bad)} scan(s) cannot be read as NIfTI: {shown}", details)


def _validate(manifest_path: Path, label: str, settings: Settings) -> Any:
    """Load the manifest (confined to its folder) and open every scan; 422 with row details."""
    from worker.engine.errors import InputError, ManifestError
    from worker.engine.manifest import load_manifest

    base = manifest_path.resolve().parent
    try:
        manifest = load_manifest(manifest_path, confine=True)
    except ManifestError as exc:
        err = from_input_error(exc)
        for detail in err.details:
            detail["reason"] = _relative(detail["reason"], base, label)
        raise err from None
    except InputError as exc:
        raise ApiError(422, "invalid_manifest", _relative(str(exc), base, label)) from None
    _check_scans(manifest.records, base, label, settings)
    return manifest


def _manifest_root(content: Path) -> Path:
    """The folder holding manifest.csv: the archive's top, or its single top folder."""
    if (content / MANIFEST_NAME).is_file():
        return content
    entries = [p for p in content.iterdir() if p.name not in _IGNORED_TOP]
    if len(entries) == 1 and entries[0].is_dir() and (entries[0] / MANIFEST_NAME).is_file():
        return entries[0]
    raise ApiError(
        422,
        "invalid_archive",
        f"no {MANIFEST_NAME} at the top of the archive or in its single top folder",
        [{"field": "archive", "reason": f"{MANIFEST_NAME} not found"}],
    )


def _extract_and_validate(archive: Path, content: Path, settings: Settings) -> tuple[Path, Any, int]:
    """Extract safely, find and validate the manifest; returns (root, manifest, bytes)."""
    try:
        extracted = extract_archive(archive, content, archive_limits(settings))
    except ArchiveError as exc:
        raise ApiError(
            422,
            "invalid_archive",
            f"archive refused: {exc}",
            [{"field": exc.member or "archive", "reason": exc.reason}],
        ) from None
    archive.unlink()
    root = _manifest_root(content)
    manifest = _validate(root / MANIFEST_NAME, "the archive", settings)
    return root, manifest, extracted.total_bytes


# --- creating ------------------------------------------------------------------------------


def _add(session: Session, scan_set_id: str, principal: Principal, name: str, source: str, root: str,
         manifest_file: str, manifest: Any, size: int, **detail: Any) -> ScanSet:
    """Add the scan set's row and its upload audit event (``detail`` adds to the event)."""
    row = ScanSet(
        id=scan_set_id,
        org_id=principal.org_id,
        name=name[:500],
        source=source,
        root=root,
        manifest_path=manifest_file,
        manifest_sha256=manifest.sha256,
        n_scans=len(manifest.records),
        n_members=manifest.n_members,
        n_nonmembers=manifest.n_nonmembers,
        attribute_names=list(manifest.attribute_names),
        size_bytes=size,
        created_by=principal.token_id,
    )
    session.add(row)
    audit.record(
        session, principal, "upload", "scan_set", scan_set_id, source=source, name=row.name,
        n_scans=row.n_scans, manifest_sha256=row.manifest_sha256, **detail,
    )
    return row


async def add_from_archive(session: Session, storage: Storage, settings: Settings, principal: Principal,
                           upload: UploadedFile, work: Path, *, name: str | None) -> ScanSet:
    """Extract and validate an uploaded archive and publish it under ``scan_sets/<id>/``, with its row.

    Args:
        session: the request's session (committed here).
        storage: where the scan set is published.
        settings: extraction and volume limits.
        principal: the uploader.
        upload: the archive, inside ``work``.
        work: the upload's private temporary folder (the caller removes it afterwards).
        name: the display name, if sent (default: the archive's name).

    Raises:
        ApiError: 422 an unsafe or unreadable archive, bad manifest rows (with line numbers) or
            unreadable scans; nothing is kept.
    """
    scan_set_id = new_id()
    final = storage.scan_set_dir(scan_set_id)
    published = False
    try:
        root, manifest, size = await anyio.to_thread.run_sync(
            _extract_and_validate, upload.path, work / "content", settings
        )
        display = (name or "").strip() or archive_stem(upload.filename) or scan_set_id
        Storage.publish_dir(root, final)
        published = True
        rel = final.relative_to(storage.root)
        row = _add(
            session, scan_set_id, principal, display, "archive", rel.as_posix(), (rel / MANIFEST_NAME).as_posix(),
            manifest, size, archive_sha256=upload.sha256,
        )
        session.commit()
    except BaseException:
        session.rollback()
        if published:
            Storage.remove([final])
        raise
    return row


async def add_from_server(session: Session, settings: Settings, principal: Principal, manifest_path: str,
                          *, name: str | None) -> ScanSet:
    """Register a manifest under one of the organisation's server folders (nothing is copied).

    Raises:
        ApiError: 422 a relative path or a NUL byte, bad rows or unreadable scans; 404 (one
            answer) a path the organisation may not register, existing or not.
    """
    given = Path(manifest_path)
    if "\x00" in manifest_path or not given.is_absolute():
        raise ApiError(
            422,
            "invalid_input",
            "manifest_path must be an absolute path",
            [{"field": "manifest_path", "reason": "not absolute"}],
        )
    org = session.get(Organisation, principal.org_id)
    resolved = await anyio.to_thread.run_sync(allowed_manifest, settings, org.name if org else "", given)

    def validate() -> tuple[Any, int]:
        manifest = _validate(resolved, str(resolved.parent), settings)
        size = resolved.stat().st_size + sum(p.stat().st_size for p in {r.path for r in manifest.records})
        return manifest, size

    manifest, size = await anyio.to_thread.run_sync(validate)
    row = _add(
        session, new_id(), principal, (name or "").strip() or resolved.parent.name or resolved.name,
        "server", str(resolved.parent), str(resolved), manifest, size, manifest_path=str(resolved),
    )
    session.commit()
    return row


# --- deleting ------------------------------------------------------------------------------


def _conform_specs(session: Session, org_id: str) -> list[Any]:
    """The grids scans of this organisation may have been conformed to."""
    from worker.engine.errors import InputError
    from worker.engine.models import ModelMetadata
    from worker.engine.volumes import ConformSpec

    specs = {ConformSpec()}
    for metadata in session.scalars(select(ModelRecord.model_metadata).where(ModelRecord.org_id == org_id)):
        try:
            specs.add(ModelMetadata.model_validate(metadata or {}).conform_spec())
        except (ValidationError, InputError):
            continue
    return sorted(specs, key=lambda s: s.key())


def purge_volume_cache(cache_dir: Path, scans: Iterable[Path], specs: list[Any]) -> int:
    """Delete the conformed-volume cache entries of ``scans`` under ``specs``; returns how many.

    Unreadable scans are skipped (best effort: the cache only ever serves a scan it can hash).
    """
    from worker.engine.cache import VolumeCache
    from worker.engine.errors import ScanError

    cache = VolumeCache(cache_dir)
    removed = 0
    for scan in scans:
        for spec in specs:
            try:
                entry = cache.entry_path(scan, spec)
            except ScanError:
                break
            if entry.exists():
                entry.unlink(missing_ok=True)
                removed += 1
    return removed


def _scans_of(source: str, root: Path, manifest_path: Path) -> list[Path]:
    """The scan files of a scan set: every NIfTI file of an archive, the listed ones of a server set
    (a BIDS set's stored manifest lists them relative to the dataset folder ``root``)."""
    from worker.engine.errors import InputError
    from worker.engine.manifest import load_manifest
    from worker.engine.volumes import NIFTI_SUFFIXES

    if source == "archive":
        return [p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith(NIFTI_SUFFIXES)]
    try:
        manifest = load_manifest(manifest_path, base_dir=root if source == "bids" else None, check_files=False,
                                 require_member=False, confine=True)
    except InputError:
        return []
    return sorted({r.path for r in manifest.records if r.path.is_file()})


def purge_reference_models(store_dir: Path, scans: Iterable[Path]) -> int:
    """Delete the trained reference models whose training pool held any of ``scans``; how many went."""
    if not store_dir.is_dir():
        return 0
    from worker.engine.reference.store import ReferenceStore, scan_content_ids

    present = [p for p in scans if p.is_file()]
    return ReferenceStore(store_dir).delete_for_scans(scan_content_ids(present)) if present else 0


def delete_scan_set(session: Session, storage: Storage, settings: Settings, principal: Principal,
                    scan_set_id: str) -> None:
    """Delete a scan set: its row, its cached conformed volumes and, for an upload, its files.

    A server-side set's files belong to the administrator and stay (of a BIDS set, only the
    derived manifest BrainMIA stored goes).

    Raises:
        ApiError: 404 not the caller's; 409 while an assessment refers to the set.
    """
    row = owned_scan_set(session, principal, scan_set_id)
    refuse_if_scan_set_has_reference_sets(session, scan_set_id)
    refuse_if_used(session, Assessment.scan_set_id, scan_set_id, "scan set")
    specs = _conform_specs(session, principal.org_id)
    source, name, root, manifest_path = row.source, row.name, Path(row.root), Path(row.manifest_path)
    uploaded = source == "archive"
    stored = uploaded or source == "bids"  # files under scan_sets/<id>/: the archive, or a BIDS set's manifest

    def purge(moved: Path) -> None:  # the stored files are in ``moved`` now
        scans = _scans_of(source, moved if uploaded else root, moved / MANIFEST_NAME if stored else manifest_path)
        purge_volume_cache(settings.volume_cache_dir, scans, specs)
        purge_reference_models(settings.reference_store_dir, scans)

    delete_with_files(
        session, storage, row, storage.scan_set_dir(scan_set_id) if stored else None, what="scan set",
        record=lambda: audit.record(session, principal, "delete", "scan_set", scan_set_id, name=name, source=source),
        then=purge,
    )

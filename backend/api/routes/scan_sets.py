"""Scan sets: a validated manifest and its scans, from an uploaded archive or a server folder.

Archive upload: streamed to a private temporary folder (``BRAINMIA_MAX_ARCHIVE_BYTES``),
extracted by :mod:`backend.archives` (regular files and folders only, size, count and ratio
limits), the manifest validated with ``confine=True`` and every scan opened as NIfTI; then the
folder is published to ``scan_sets/<id>/`` with one rename and the row stored. On any failure
nothing is kept.

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
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from ... import audit
from ...archives import ArchiveError, ArchiveLimits, extract_archive
from ...auth import Principal
from ...db.models import Assessment, ModelRecord, Organisation, ScanSet, new_id
from ...server_manifests import allowed_manifest
from ...settings import Settings
from ...storage import Storage
from ...uploads import MAX_FIELD_BYTES, receive_multipart, too_large
from ..deps import CurrentPrincipal, SessionDep, SettingsDep, StorageDep
from ..errors import ERROR_RESPONSES, ApiError, ErrorResponse, from_input_error, not_found
from ..pagination import Limit, Offset, page
from ...fields import Text
from .models import as_utc

router = APIRouter(prefix="/scan-sets", tags=["scan sets"])

MANIFEST_NAME = "manifest.csv"
_IGNORED_TOP = {"__MACOSX", ".DS_Store"}
_EXAMPLE = {
    "id": "8d0f6b1c2e3a4f5b9c7d1e2f3a4b5c6d",
    "name": "ukb-holdout-2024",
    "source": "archive",
    "n_scans": 1388,
    "n_members": 694,
    "n_nonmembers": 694,
    "attribute_names": ["sex", "site"],
    "manifest_sha256": "4e07408562bedb8b60ce05c1decfe3ad16b72230967de01f640b7e4729b49fce",
    "size_bytes": 3145728000,
    "created_at": "2025-01-31T09:20:03.511000Z",
}


class ScanSetOut(BaseModel):
    """A validated scan set."""

    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE]})

    id: str
    name: str
    source: str = Field(description="`archive` (uploaded) or `server` (a manifest under an allowed root)")
    n_scans: int
    n_members: int
    n_nonmembers: int
    attribute_names: list[str] = Field(description="Extra manifest columns kept as slicing attributes")
    manifest_sha256: str
    size_bytes: int = Field(description="Bytes of the extracted archive, or of the listed scans and manifest")
    created_at: datetime


class ScanSetPage(BaseModel):
    """One page of scan sets, newest first."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [_EXAMPLE], "total": 1, "limit": 50, "offset": 0}]}
    )

    items: list[ScanSetOut]
    total: int
    limit: int
    offset: int


class ScanSetFromPath(BaseModel):
    """Register a manifest already on the server."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"manifest_path": "/data/cohorts/ukb-holdout/manifest.csv", "name": "ukb-holdout"}]
        },
    )

    manifest_path: str = Field(
        description="Absolute path of a manifest under one of the organisation's folders (BRAINMIA_ORG_MANIFEST_ROOTS)"
    )
    name: Text | None = Field(default=None, max_length=500)


_CREATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["archive"],
                    "properties": {
                        "archive": {
                            "type": "string",
                            "format": "binary",
                            "description": ".zip, .tar, .tar.gz/.tgz (also .tar.bz2, .tar.xz) holding manifest.csv "
                            "(at the top or in a single top folder) and the NIfTI files it lists",
                        },
                        "name": {"type": "string", "description": "Display name (default: the archive's name)"},
                    },
                }
            },
            "application/json": {"schema": ScanSetFromPath.model_json_schema()},
        },
    }
}

_CREATE_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: ERROR_RESPONSES[401],
    404: {
        "model": ErrorResponse,
        "description": "manifest_path is not a file under the organisation's manifest roots (one answer, "
        "whether it exists or not)",
    },
    413: {"model": ErrorResponse, "description": "The archive is larger than BRAINMIA_MAX_ARCHIVE_BYTES"},
    415: {"model": ErrorResponse, "description": "Neither multipart/form-data nor application/json"},
    422: {
        "model": ErrorResponse,
        "description": "Unsafe or unreadable archive, bad manifest rows (with line numbers) or unreadable scans",
    },
}


def scan_set_out(row: ScanSet) -> ScanSetOut:
    """The API view of a scan-set row."""
    return ScanSetOut(
        id=row.id,
        name=row.name,
        source=row.source,
        n_scans=row.n_scans,
        n_members=row.n_members,
        n_nonmembers=row.n_nonmembers,
        attribute_names=list(row.attribute_names or []),
        manifest_sha256=row.manifest_sha256,
        size_bytes=row.size_bytes,
        created_at=as_utc(row.created_at),
    )


def get_owned_scan_set(session: SessionDep, principal: CurrentPrincipal, scan_set_id: str) -> ScanSet:
    """The caller's organisation's scan set ``scan_set_id``; 404 otherwise."""
    row = session.scalar(select(ScanSet).where(ScanSet.id == scan_set_id, ScanSet.org_id == principal.org_id))
    if row is None:
        raise not_found("scan set", scan_set_id)
    return row


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
    limits = ArchiveLimits(
        max_total_bytes=settings.max_extracted_bytes,
        max_members=settings.max_archive_members,
        max_ratio=settings.max_compression_ratio,
    )
    try:
        extracted = extract_archive(archive, content, limits)
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


def _default_name(filename: str) -> str:
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    for suffix in (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".zip", ".tar"):
        if base.lower().endswith(suffix):
            return base[: -len(suffix)] or base
    return base


def _add(
    session: Any,
    scan_set_id: str,
    principal: Principal,
    name: str,
    source: str,
    root: str,
    manifest_file: str,
    manifest: Any,
    size: int,
    **detail: Any,
) -> ScanSet:
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


# --- routes --------------------------------------------------------------------------------


@router.post(
    "",
    status_code=201,
    response_model=ScanSetOut,
    summary="Upload a scan archive or register a server-side manifest",
    responses=_CREATE_RESPONSES,
    openapi_extra=_CREATE_BODY,
)
async def create_scan_set(
    request: Request,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
    principal: CurrentPrincipal,
) -> ScanSetOut:
    """Create a scan set from a multipart ``archive`` upload or a JSON ``manifest_path``.

    The manifest is validated row by row (every bad row answers 422 with its line number)
    and every scan is opened as NIfTI; nothing is stored from a rejected request.
    """
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media == "application/json":
        return await _from_server_manifest(request, session, settings, principal)
    if media == "multipart/form-data":
        return await _from_archive(request, session, storage, settings, principal)
    raise ApiError(
        415, "unsupported_media_type", "send a multipart/form-data 'archive' upload or a JSON body with 'manifest_path'"
    )


async def _from_archive(
    request: Request, session: Any, storage: Storage, settings: Settings, principal: Principal
) -> ScanSetOut:
    tmp = storage.temp_dir()
    scan_set_id = new_id()
    final = storage.scan_set_dir(scan_set_id)
    published = False
    try:
        form = await receive_multipart(request, tmp, {"archive": settings.max_archive_bytes})
        upload = form.required_file("archive", "invalid_archive", "archive")
        root, manifest, size = await run_in_threadpool(_extract_and_validate, upload.path, tmp / "content", settings)
        name = (form.fields.get("name") or "").strip() or _default_name(upload.filename) or scan_set_id
        Storage.publish_dir(root, final)
        published = True
        rel = final.relative_to(storage.root)
        row = _add(
            session, scan_set_id, principal, name, "archive", rel.as_posix(), (rel / MANIFEST_NAME).as_posix(),
            manifest, size, archive_sha256=upload.sha256,
        )
        session.commit()
    except BaseException:
        session.rollback()
        if published:
            Storage.remove([final])
        raise
    finally:
        await run_in_threadpool(Storage.remove, [tmp])
    return scan_set_out(row)


async def _read_json_body(request: Request) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FIELD_BYTES:
            raise too_large("the JSON body", MAX_FIELD_BYTES)
    return bytes(body)


async def _from_server_manifest(request: Request, session: Any, settings: Settings, principal: Principal) -> ScanSetOut:
    try:
        body = ScanSetFromPath.model_validate_json(await _read_json_body(request))
    except ValidationError as exc:
        details = [{"field": ".".join(str(p) for p in e["loc"]) or None, "reason": e["msg"]} for e in exc.errors()]
        raise ApiError(422, "validation_error", "the request is not valid", details) from None
    given = Path(body.manifest_path)
    if "\x00" in body.manifest_path or not given.is_absolute():
        raise ApiError(
            422,
            "invalid_input",
            "manifest_path must be an absolute path",
            [{"field": "manifest_path", "reason": "not absolute"}],
        )
    org = session.get(Organisation, principal.org_id)
    resolved = await run_in_threadpool(allowed_manifest, settings, org.name if org else "", given)

    def validate() -> tuple[Any, int]:
        manifest = _validate(resolved, str(resolved.parent), settings)
        size = resolved.stat().st_size + sum(p.stat().st_size for p in {r.path for r in manifest.records})
        return manifest, size

    manifest, size = await run_in_threadpool(validate)
    scan_set_id = new_id()
    row = _add(
        session, scan_set_id, principal, (body.name or "").strip() or resolved.parent.name or resolved.name,
        "server", str(resolved.parent), str(resolved), manifest, size, manifest_path=str(resolved),
    )
    session.commit()
    return scan_set_out(row)


@router.get("", response_model=ScanSetPage, summary="List scan sets", responses={401: ERROR_RESPONSES[401]})
def list_scan_sets(
    session: SessionDep,
    principal: CurrentPrincipal,
    limit: Limit = 50,
    offset: Offset = 0,
) -> ScanSetPage:
    """The organisation's scan sets, newest first."""
    where = ScanSet.org_id == principal.org_id
    rows, total = page(session, ScanSet, [where], [ScanSet.created_at.desc(), ScanSet.id.desc()], limit, offset)
    return ScanSetPage(items=[scan_set_out(r) for r in rows], total=total, limit=limit, offset=offset)


@router.get(
    "/{scan_set_id}",
    response_model=ScanSetOut,
    summary="Get a scan set",
    responses={401: ERROR_RESPONSES[401], 404: ERROR_RESPONSES[404]},
)
def get_scan_set(scan_set_id: str, session: SessionDep, principal: CurrentPrincipal) -> ScanSetOut:
    """One scan set of the organisation (recorded in the audit log as a view)."""
    row = get_owned_scan_set(session, principal, scan_set_id)
    audit.record(session, principal, "view", "scan_set", scan_set_id)
    return scan_set_out(row)


def _conform_specs(session: Any, org_id: str) -> list[Any]:
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


def _scans_of(row: ScanSet, root: Path, manifest_path: Path) -> list[Path]:
    """The scan files of a scan set: every NIfTI file of an archive, the listed ones of a server set."""
    from worker.engine.errors import InputError
    from worker.engine.manifest import load_manifest
    from worker.engine.volumes import NIFTI_SUFFIXES

    if row.source == "archive":
        return [p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith(NIFTI_SUFFIXES)]
    try:
        manifest = load_manifest(manifest_path, check_files=False, require_member=False, confine=True)
    except InputError:
        return []
    return sorted({r.path for r in manifest.records if r.path.is_file()})


@router.delete(
    "/{scan_set_id}",
    status_code=204,
    summary="Delete a scan set",
    responses={
        401: ERROR_RESPONSES[401],
        404: ERROR_RESPONSES[404],
        409: {"model": ErrorResponse, "description": "An assessment still refers to the scan set"},
    },
)
def delete_scan_set(
    scan_set_id: str, session: SessionDep, storage: StorageDep, settings: SettingsDep, principal: CurrentPrincipal
) -> None:
    """Delete a scan set: its row, its cached conformed volumes and, for an upload, its files.

    A server-side set's files belong to the administrator and stay. 409 while an assessment
    refers to the set (delete those first).
    """
    row = get_owned_scan_set(session, principal, scan_set_id)
    users = (
        session.scalar(select(func.count()).select_from(Assessment).where(Assessment.scan_set_id == scan_set_id)) or 0
    )
    if users:
        raise ApiError(409, "in_use", f"scan set '{scan_set_id}' is used by {users} assessment(s): delete them first")
    specs = _conform_specs(session, principal.org_id)
    trash = storage.temp_dir()
    folder = storage.scan_set_dir(scan_set_id)
    moved = trash / "scan_set"
    if row.source == "archive" and folder.exists():
        os.replace(folder, moved)
    root = moved if row.source == "archive" else Path(row.root)
    manifest_path = moved / MANIFEST_NAME if row.source == "archive" else Path(row.manifest_path)
    try:
        session.delete(row)
        audit.record(session, principal, "delete", "scan_set", scan_set_id, name=row.name, source=row.source)
        session.commit()
    except BaseException as exc:
        session.rollback()
        if moved.exists():
            os.replace(moved, folder)
        Storage.remove([trash])
        if isinstance(exc, IntegrityError):
            raise ApiError(
                409, "in_use", f"scan set '{scan_set_id}' is used by an assessment: delete it first"
            ) from None
        raise
    try:
        purge_volume_cache(settings.volume_cache_dir, _scans_of(row, root, manifest_path), specs)
    finally:
        Storage.remove([trash])

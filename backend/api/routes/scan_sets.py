"""Scan sets: a validated manifest and its scans, from an uploaded archive or a server folder.

The pipelines (safe extraction, manifest and scan validation, server manifests, the purge of
the conformed-volume cache on delete) are :mod:`backend.services.scan_set_uploads`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ...db.models import ScanSet
from ...services import scan_set_uploads
from ..deps import CurrentPrincipal, SessionDep, SettingsDep, StorageDep
from ..errors import ERROR_RESPONSES, ApiError, ErrorResponse
from ..pagination import Limit, Offset, page
from ..schemas import SCAN_SET_CREATE_BODY, ScanSetFromPath, ScanSetOut, ScanSetPage, scan_set_out
from ..uploads import json_body, multipart_upload

router = APIRouter(prefix="/scan-sets", tags=["scan sets"])

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


@router.post(
    "",
    status_code=201,
    response_model=ScanSetOut,
    summary="Upload a scan archive or register a server-side manifest",
    responses=_CREATE_RESPONSES,
    openapi_extra=SCAN_SET_CREATE_BODY,
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
        body = await json_body(request, ScanSetFromPath)
        row = await scan_set_uploads.add_from_server(session, settings, principal, body.manifest_path, name=body.name)
    elif media == "multipart/form-data":
        async with multipart_upload(request, storage, {"archive": settings.max_archive_bytes}) as (form, work):
            row = await scan_set_uploads.add_from_archive(
                session, storage, settings, principal, form.required_file("archive", "invalid_archive", "archive"),
                work, name=form.fields.get("name"),
            )
    else:
        raise ApiError(415, "unsupported_media_type",
                       "send a multipart/form-data 'archive' upload or a JSON body with 'manifest_path'")
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
    return scan_set_out(scan_set_uploads.view_scan_set(session, principal, scan_set_id))


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
    scan_set_uploads.delete_scan_set(session, storage, settings, principal, scan_set_id)

"""Scan sets: a validated manifest and its scans, from an uploaded archive (``POST /scan-sets``,
multipart) or a server folder (``POST /scan-sets/from-path``, JSON): one content type per operation.

The pipelines (safe extraction, manifest and scan validation, server manifests, the purge of
the conformed-volume cache on delete) are :mod:`backend.services.scan_set_uploads`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from ...db.models import ScanSet
from ...services import bids_scan_sets, scan_set_uploads
from ...services.errors import field_error
from ..deps import CurrentPrincipal, SessionDep, SettingsDep, StorageDep
from ..errors import ERROR_RESPONSES, ApiError, ErrorResponse
from ..pagination import Limit, Offset, page
from ..schemas import (
    SCAN_SET_UPLOAD_BODY,
    ScanSetFromPath,
    ScanSetOut,
    ScanSetPage,
    scan_set_out,
)
from ..uploads import json_body, multipart_upload

router = APIRouter(prefix="/scan-sets", tags=["scan sets"])

_404_PATH = {
    "model": ErrorResponse,
    "description": "manifest_path is not a file under the organisation's manifest roots (one answer, whether it "
    "exists or not)",
}
_422_ROWS = "bad manifest rows (with line numbers) or unreadable scans"
_UPLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    201: {"headers": {
        "Deprecation": {"description": "Only when a JSON body was sent (deprecated: use /scan-sets/from-path)",
                        "schema": {"type": "string"}},
        "Link": {"description": "With Deprecation: the successor operation", "schema": {"type": "string"}},
    }},
    401: ERROR_RESPONSES[401],
    404: {**_404_PATH, "description": "Only for a deprecated JSON body: " + _404_PATH["description"]},
    413: {"model": ErrorResponse, "description": "The archive is larger than BRAINMIA_MAX_ARCHIVE_BYTES"},
    415: {"model": ErrorResponse, "description": "Not multipart/form-data (nor the deprecated application/json)"},
    422: {"model": ErrorResponse, "description": f"Unsafe or unreadable archive, {_422_ROWS}"},
}
_FROM_PATH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: ERROR_RESPONSES[401],
    404: _404_PATH,
    422: {"model": ErrorResponse, "description": f"Not an absolute path, a field refused, {_422_ROWS}, "
          "problems of a BIDS dataset (invalid_bids: one detail per problem, naming the subject)"},
}
DEPRECATED_JSON_HEADERS = {
    "Deprecation": "@1796083200",  # RFC 9745: deprecated since 2026-12-01
    "Link": '</api/v1/scan-sets/from-path>; rel="successor-version"',
}
"""The answer's headers when ``POST /scan-sets`` got the JSON body of the former combined route."""


@router.post(
    "",
    status_code=201,
    response_model=ScanSetOut,
    summary="Upload a scan archive",
    responses=_UPLOAD_RESPONSES,
    openapi_extra=SCAN_SET_UPLOAD_BODY,
)
async def upload_scan_set(
    request: Request,
    response: Response,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
    principal: CurrentPrincipal,
) -> ScanSetOut:
    """Create a scan set from a multipart ``archive`` upload (streamed to disk, extracted safely).

    The manifest is validated row by row (every bad row answers 422 with its line number)
    and every scan is opened as NIfTI; nothing is stored from a rejected request.

    Deprecated: a JSON body with ``manifest_path`` is still taken here, as before, and answered
    with ``Deprecation`` and ``Link`` headers; register a server manifest with
    ``POST /scan-sets/from-path``.
    """
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media == "application/json":
        body = await json_body(request, ScanSetFromPath)
        if body.manifest_path is None:
            raise field_error("manifest_path", "required here (a BIDS dataset: POST /scan-sets/from-path)")
        row = await scan_set_uploads.add_from_server(session, settings, principal, body.manifest_path, name=body.name)
        response.headers.update(DEPRECATED_JSON_HEADERS)
        return scan_set_out(row)
    if media != "multipart/form-data":
        raise ApiError(415, "unsupported_media_type",
                       "send a multipart/form-data 'archive' upload (a server manifest: POST /scan-sets/from-path)")
    async with multipart_upload(request, storage, {"archive": settings.max_archive_bytes}) as (form, work):
        row = await scan_set_uploads.add_from_archive(
            session, storage, settings, principal, form.required_file("archive", "invalid_archive", "archive"),
            work, name=form.fields.get("name"),
        )
    return scan_set_out(row)


@router.post(
    "/from-path",
    status_code=201,
    response_model=ScanSetOut,
    summary="Register a manifest or a BIDS dataset already on the server",
    responses=_FROM_PATH_RESPONSES,
)
async def create_scan_set_from_path(
    body: ScanSetFromPath, session: SessionDep, storage: StorageDep, settings: SettingsDep, principal: CurrentPrincipal
) -> ScanSetOut:
    """Create a scan set from a manifest, or a BIDS dataset and its member list, under one of the
    organisation's folders (``BRAINMIA_ORG_MANIFEST_ROOTS``); its scans stay where they are.

    The manifest is validated row by row (every bad row answers 422 with its line number), a BIDS
    dataset subject by subject (422 ``invalid_bids``, one detail per problem naming the subject: no
    age, a listed ID not in the dataset or with no matching scan, several matching scans), and every
    scan is opened as NIfTI; nothing is stored from a rejected request.
    """
    if body.bids_path is not None:
        row = await bids_scan_sets.add_from_bids(session, storage, settings, principal, body)
        return scan_set_out(row)
    bids_only = [f for f in ("members_path", "members", "non_members_path", "non_members", "bids_filter")
                 if getattr(body, f) is not None]
    if bids_only:
        raise field_error(bids_only[0], "goes with bids_path")
    if body.manifest_path is None:
        raise field_error("manifest_path", "give manifest_path, or bids_path with members")
    row = await scan_set_uploads.add_from_server(session, settings, principal, body.manifest_path, name=body.name)
    return scan_set_out(row)


@router.get("", response_model=ScanSetPage, summary="List scan sets", responses={401: ERROR_RESPONSES[401], 422: ERROR_RESPONSES[422]})
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
    responses=ERROR_RESPONSES,
)
def get_scan_set(scan_set_id: str, session: SessionDep, principal: CurrentPrincipal) -> ScanSetOut:
    """One scan set of the organisation (recorded in the audit log as a view)."""
    return scan_set_out(scan_set_uploads.view_scan_set(session, principal, scan_set_id))


@router.delete(
    "/{scan_set_id}",
    status_code=204,
    summary="Delete a scan set",
    responses={
        **ERROR_RESPONSES,
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

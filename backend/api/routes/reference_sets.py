"""Reference sets: your own reference models of a scan set with their keep.csv (upload, list,
get, delete). An assessment uses one with ``options.reference.reference_set_id``.

The pipeline (safe extraction, keep.csv against the scan set's ids, each model checked in the
confined model host as a model upload is, publishing) is :mod:`backend.services.reference_sets`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from ...db.models import ReferenceSet
from ...fields import Id
from ...services import reference_sets
from ..deps import CurrentPrincipal, SessionDep, SettingsDep, StorageDep
from ..errors import ERROR_RESPONSES, ErrorResponse
from ..pagination import Limit, Offset, equal_to, page
from ..schemas import REFERENCE_SET_UPLOAD_BODY, ReferenceSetOut, ReferenceSetPage, reference_set_out
from ..uploads import multipart_upload

router = APIRouter(prefix="/reference-sets", tags=["reference sets"])

_UPLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: ERROR_RESPONSES[401],
    404: {"model": ErrorResponse, "description": "scan_set_id is not a scan set of the organisation"},
    413: {"model": ErrorResponse, "description": "The archive is larger than BRAINMIA_MAX_ARCHIVE_BYTES"},
    415: {"model": ErrorResponse, "description": "Not a multipart/form-data upload"},
    422: {
        "model": ErrorResponse,
        "description": "No scan_set_id; an unsafe or unreadable archive; keep.csv refused (each fault with its line "
        "and column: unknown scan ids, cells that are not 0/1, columns that name no model); a model refused, "
        "unreadable or misbehaving; models with different inputs",
    },
}


@router.post(
    "",
    status_code=201,
    response_model=ReferenceSetOut,
    summary="Upload reference models with their keep.csv",
    responses=_UPLOAD_RESPONSES,
    openapi_extra=REFERENCE_SET_UPLOAD_BODY,
)
async def upload_reference_set(
    request: Request,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
    principal: CurrentPrincipal,
) -> ReferenceSetOut:
    """Stream an archive of reference models and keep.csv, check it against a scan set and store it.

    keep.csv is checked against the scan set's scan ids (422 naming each bad line and column);
    every model file is loaded safely and run once in the confined model host, as a model
    upload is (422 naming the file). Nothing is kept from a refused upload.
    """
    async with multipart_upload(request, storage, {"archive": settings.max_archive_bytes}) as (form, work):
        row = await reference_sets.add_reference_set(
            session, storage, settings, principal, form.required_file("archive", "invalid_archive", "archive"),
            work, scan_set_id=form.fields.get("scan_set_id"), name=form.fields.get("name"),
            metadata=form.fields.get("metadata"),
        )
    return reference_set_out(row)


@router.get("", response_model=ReferenceSetPage, summary="List reference sets",
            responses={401: ERROR_RESPONSES[401], 422: ERROR_RESPONSES[422]})
def list_reference_sets(
    session: SessionDep,
    principal: CurrentPrincipal,
    scan_set_id: Annotated[Id | None, Query()] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> ReferenceSetPage:
    """The organisation's reference sets (of one scan set, when given), newest first."""
    conditions = [ReferenceSet.org_id == principal.org_id, *equal_to(ReferenceSet, scan_set_id=scan_set_id)]
    rows, total = page(session, ReferenceSet, conditions,
                       [ReferenceSet.created_at.desc(), ReferenceSet.id.desc()], limit, offset)
    return ReferenceSetPage(items=[reference_set_out(r) for r in rows], total=total, limit=limit, offset=offset)


@router.get(
    "/{reference_set_id}",
    response_model=ReferenceSetOut,
    summary="Get a reference set",
    responses=ERROR_RESPONSES,
)
def get_reference_set(reference_set_id: str, session: SessionDep, principal: CurrentPrincipal) -> ReferenceSetOut:
    """One reference set of the organisation (recorded in the audit log as a view)."""
    return reference_set_out(reference_sets.view_reference_set(session, principal, reference_set_id))


@router.delete(
    "/{reference_set_id}",
    status_code=204,
    summary="Delete a reference set",
    responses={
        **ERROR_RESPONSES,
        409: {"model": ErrorResponse, "description": "An assessment still names the reference set in its options"},
    },
)
def delete_reference_set(
    reference_set_id: str, session: SessionDep, storage: StorageDep, principal: CurrentPrincipal
) -> None:
    """Delete a reference set's row and files; 409 while an assessment uses it (delete those first)."""
    reference_sets.delete_reference_set(session, storage, principal, reference_set_id)

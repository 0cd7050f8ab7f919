"""Models: upload (streamed, checked by loading it safely), list, get, delete.

The pipeline (safe loading in a confined child process, federated round archives, publishing)
is :mod:`backend.services.model_uploads`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ...db.models import ModelRecord
from ...services import model_uploads
from ..deps import CurrentPrincipal, SessionDep, SettingsDep, StorageDep
from ..errors import ERROR_RESPONSES, ErrorResponse
from ..pagination import Limit, Offset, page
from ..schemas import MODEL_UPLOAD_BODY, ModelOut, ModelPage, model_out
from ..uploads import multipart_upload

router = APIRouter(prefix="/models", tags=["models"])

_UPLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: ERROR_RESPONSES[401],
    413: {"model": ErrorResponse, "description": "The file is larger than BRAINMIA_MAX_MODEL_BYTES"},
    415: {"model": ErrorResponse, "description": "Not a multipart/form-data upload"},
    422: {"model": ErrorResponse, "description": "Invalid metadata, or a model refused, unreadable or misbehaving"},
}


@router.post(
    "",
    status_code=201,
    response_model=ModelOut,
    summary="Upload a model",
    responses=_UPLOAD_RESPONSES,
    openapi_extra=MODEL_UPLOAD_BODY,
)
async def upload_model(
    request: Request,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
    principal: CurrentPrincipal,
) -> ModelOut:
    """Stream a model file to storage, load it safely and check it returns one age per scan.

    The file is never read into memory while uploading; it is limited to
    ``BRAINMIA_MAX_MODEL_BYTES`` (413). A file the safe loader refuses (e.g. a pickle that would
    run code), cannot read, or whose output is not one finite age per scan answers 422 with the
    loader's reason, and nothing is kept. With ``kind=federated_rounds`` the file is an archive
    of a federation's round models, extracted safely and checked round by round (422 naming
    the member or round at fault).
    """
    async with multipart_upload(request, storage, {"file": settings.max_model_bytes}) as (form, work):
        row = await model_uploads.add_model(
            session, storage, settings, principal, form.required_file("file", "invalid_model", "file"), work,
            metadata=form.fields.get("metadata"), kind=form.fields.get("kind"), name=form.fields.get("name"),
        )
    return model_out(row)


@router.get("", response_model=ModelPage, summary="List models",
             responses={401: ERROR_RESPONSES[401], 422: ERROR_RESPONSES[422]})
def list_models(
    session: SessionDep,
    principal: CurrentPrincipal,
    limit: Limit = 50,
    offset: Offset = 0,
) -> ModelPage:
    """The organisation's models, newest first."""
    where = ModelRecord.org_id == principal.org_id
    rows, total = page(
        session, ModelRecord, [where], [ModelRecord.created_at.desc(), ModelRecord.id.desc()], limit, offset
    )
    return ModelPage(items=[model_out(r) for r in rows], total=total, limit=limit, offset=offset)


@router.get(
    "/{model_id}",
    response_model=ModelOut,
    summary="Get a model",
    responses=ERROR_RESPONSES,
)
def get_model(model_id: str, session: SessionDep, principal: CurrentPrincipal) -> ModelOut:
    """One model of the organisation (recorded in the audit log as a view)."""
    return model_out(model_uploads.view_model(session, principal, model_id))


@router.delete(
    "/{model_id}",
    status_code=204,
    summary="Delete a model",
    responses={
        **ERROR_RESPONSES,
        409: {"model": ErrorResponse, "description": "An assessment still refers to the model"},
    },
)
def delete_model(model_id: str, session: SessionDep, storage: StorageDep, principal: CurrentPrincipal) -> None:
    """Delete a model's row and files; 409 while an assessment refers to it (delete those first)."""
    model_uploads.delete_model(session, storage, principal, model_id)

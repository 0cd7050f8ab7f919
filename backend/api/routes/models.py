"""Models: upload (streamed, checked by loading it safely), list, get, delete.

An upload is streamed to a private temporary folder with its metadata sidecar, loaded with the
engine's safe loader (never unrestricted unpickling) and run once on a blank volume; only a
model that loads and returns one finite age per scan is published to ``models/<id>/`` (one
rename) and recorded. On any failure nothing is kept.

Deleting a model that an assessment still refers to answers 409: delete the assessments first
(their reports name the model by its sha256).
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from ... import audit
from ...db.models import Assessment, ModelRecord, new_id
from ...storage import Storage
from ...uploads import receive_multipart, safe_filename
from ..deps import CurrentPrincipal, SessionDep, SettingsDep, StorageDep
from ..errors import ERROR_RESPONSES, ApiError, ErrorResponse, not_found
from ..pagination import Limit, Offset, page

router = APIRouter(prefix="/models", tags=["models"])

_EXAMPLE_METADATA = {
    "input_shape": [91, 109, 91],
    "voxel_size": [2.0, 2.0, 2.0],
    "normalize": "zscore",
    "arch": "brain_age_3d",
    "arch_kwargs": {"width": 1.0},
}
_EXAMPLE = {
    "id": "3f9c2a0e5b7d4c1e8a6f0b2d4e6c8a1f",
    "name": "brain_age_3d_ukb.safetensors",
    "sha256": "9b74c9897bac770ffc029102a200c5de0a1f5e8a1c0d7f5b3e2a4c6d8e0f1a2b",
    "format": "safetensors",
    "size_bytes": 11812352,
    "metadata": _EXAMPLE_METADATA,
    "created_at": "2025-01-31T09:12:44.120000Z",
}


class ModelOut(BaseModel):
    """An uploaded model."""

    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE]})

    id: str
    name: str = Field(description="Display name (the `name` field, else the uploaded file name)")
    sha256: str = Field(description="SHA-256 of the uploaded file")
    format: str = Field(description="`torchscript`, `export`, `safetensors` or `state_dict`")
    size_bytes: int
    metadata: dict[str, Any] = Field(description="Input grid, voxel size, normalisation and architecture")
    created_at: datetime


class ModelPage(BaseModel):
    """One page of models, newest first."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [_EXAMPLE], "total": 1, "limit": 50, "offset": 0}]}
    )

    items: list[ModelOut]
    total: int = Field(description="Models of the organisation in all")
    limit: int
    offset: int


_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "TorchScript archive, torch.export program (.pt2), safetensors or "
                            "state-dict weights of a built-in architecture",
                        },
                        "metadata": {
                            "type": "string",
                            "description": "JSON object as in the sidecar: input_shape, voxel_size, normalize, "
                            "arch, arch_kwargs (omitted fields take their defaults)",
                            "example": json.dumps(_EXAMPLE_METADATA),
                        },
                        "name": {"type": "string", "description": "Display name (default: the file name)"},
                    },
                }
            }
        },
    }
}

_UPLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: ERROR_RESPONSES[401],
    413: {"model": ErrorResponse, "description": "The file is larger than BRAINMIA_MAX_MODEL_BYTES"},
    415: {"model": ErrorResponse, "description": "Not a multipart/form-data upload"},
    422: {"model": ErrorResponse, "description": "Invalid metadata, or a model refused, unreadable or misbehaving"},
}


def as_utc(value: datetime) -> datetime:
    """``value`` as an aware UTC time (SQLite gives back naive ones)."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def model_out(row: ModelRecord) -> ModelOut:
    """The API view of a model row."""
    return ModelOut(
        id=row.id,
        name=row.name,
        sha256=row.sha256,
        format=row.format,
        size_bytes=row.size_bytes,
        metadata=row.model_metadata or {},
        created_at=as_utc(row.created_at),
    )


def get_owned_model(session: SessionDep, principal: CurrentPrincipal, model_id: str) -> ModelRecord:
    """The caller's organisation's model ``model_id``; 404 otherwise."""
    row = session.scalar(select(ModelRecord).where(ModelRecord.id == model_id, ModelRecord.org_id == principal.org_id))
    if row is None:
        raise not_found("model", model_id)
    return row


def _parse_metadata(text: str | None) -> Any:
    """The ``metadata`` form field as :class:`ModelMetadata`; 422 with field details."""
    from worker.engine.models import ModelMetadata

    if text is None or not text.strip():
        return ModelMetadata()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ApiError(
            422, "invalid_metadata", "metadata is not valid JSON", [{"field": "metadata", "reason": str(exc)}]
        ) from None
    if not isinstance(data, dict):
        raise ApiError(
            422,
            "invalid_metadata",
            "metadata must be a JSON object",
            [{"field": "metadata", "reason": "not an object"}],
        )
    try:
        return ModelMetadata.model_validate(data)
    except ValidationError as exc:
        details = [
            {"field": ".".join(["metadata", *(str(p) for p in err["loc"])]), "reason": err["msg"]}
            for err in exc.errors()
        ]
        raise ApiError(422, "invalid_metadata", "invalid model metadata", details) from None


def _load_and_check(path: Path, name: str) -> Any:
    """Load the stored file with its sidecar, as a worker will, and run it once (CPU)."""
    from worker.engine.errors import InputError, ModelError
    from worker.engine.models import load_model

    try:
        return load_model(path, device="cpu", check=True)
    except ModelError as exc:
        raise ApiError(422, "invalid_model", f"{name}: {exc.reason}") from None
    except InputError as exc:
        raise ApiError(422, "invalid_model", f"{name}: {exc}".replace(str(path.parent) + os.sep, "")) from None


@router.post(
    "",
    status_code=201,
    response_model=ModelOut,
    summary="Upload a model",
    responses=_UPLOAD_RESPONSES,
    openapi_extra=_UPLOAD_BODY,
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
    loader's reason, and nothing is kept.
    """
    from worker.engine.models import write_sidecar

    tmp = storage.temp_dir()
    model_id = new_id()
    final = storage.model_dir(model_id)
    published = False
    try:
        form = await receive_multipart(request, tmp, {"file": settings.max_model_bytes})
        upload = form.files.get("file")
        if upload is None:
            raise ApiError(
                422, "validation_error", "the request is not valid", [{"field": "file", "reason": "Field required"}]
            )
        if upload.size == 0:
            raise ApiError(
                422, "invalid_model", "the uploaded file is empty", [{"field": "file", "reason": "empty file"}]
            )
        metadata = _parse_metadata(form.fields.get("metadata"))
        file_name = safe_filename(upload.filename, "model.bin")
        name = (form.fields.get("name") or "").strip() or upload.filename or file_name
        path = tmp / file_name
        os.replace(upload.path, path)
        write_sidecar(path, metadata)
        loaded = await run_in_threadpool(_load_and_check, path, file_name)
        Storage.publish_dir(tmp, final)
        published = True
        row = ModelRecord(
            id=model_id,
            org_id=principal.org_id,
            name=name[:500],
            path=(final / file_name).relative_to(storage.root).as_posix(),
            sha256=upload.sha256,
            format=loaded.format,
            size_bytes=upload.size,
            model_metadata=json.loads(loaded.metadata.model_dump_json()),
            created_by=principal.token_id,
        )
        session.add(row)
        audit.record(
            session,
            principal,
            "upload",
            "model",
            model_id,
            name=row.name,
            sha256=row.sha256,
            format=row.format,
            size_bytes=row.size_bytes,
        )
        session.commit()
    except BaseException:
        session.rollback()
        Storage.remove([tmp] + ([final] if published else []))
        raise
    Storage.remove([tmp])
    return model_out(row)


@router.get("", response_model=ModelPage, summary="List models", responses={401: ERROR_RESPONSES[401]})
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
    responses={401: ERROR_RESPONSES[401], 404: ERROR_RESPONSES[404]},
)
def get_model(model_id: str, session: SessionDep, principal: CurrentPrincipal) -> ModelOut:
    """One model of the organisation (recorded in the audit log as a view)."""
    row = get_owned_model(session, principal, model_id)
    audit.record(session, principal, "view", "model", model_id)
    return model_out(row)


@router.delete(
    "/{model_id}",
    status_code=204,
    summary="Delete a model",
    responses={
        401: ERROR_RESPONSES[401],
        404: ERROR_RESPONSES[404],
        409: {"model": ErrorResponse, "description": "An assessment still refers to the model"},
    },
)
def delete_model(model_id: str, session: SessionDep, storage: StorageDep, principal: CurrentPrincipal) -> None:
    """Delete a model's row and files; 409 while an assessment refers to it (delete those first)."""
    row = get_owned_model(session, principal, model_id)
    users = session.scalar(select(func.count()).select_from(Assessment).where(Assessment.model_id == model_id)) or 0
    if users:
        raise ApiError(409, "in_use", f"model '{model_id}' is used by {users} assessment(s): delete them first")
    folder = storage.model_dir(model_id)
    trash = storage.temp_dir()
    moved = trash / "model"
    if folder.exists():
        os.replace(folder, moved)
    try:
        session.delete(row)
        audit.record(session, principal, "delete", "model", model_id, name=row.name, sha256=row.sha256)
        session.commit()
    except BaseException as exc:
        session.rollback()
        if moved.exists():
            os.replace(moved, folder)
        Storage.remove([trash])
        if isinstance(exc, IntegrityError):  # an assessment was created meanwhile
            raise ApiError(409, "in_use", f"model '{model_id}' is used by an assessment: delete it first") from None
        raise
    Storage.remove([trash])

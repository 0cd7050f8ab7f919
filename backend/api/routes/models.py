"""Models: upload (streamed, checked by loading it safely), list, get, delete.

An upload is streamed to a private temporary folder with its metadata sidecar, loaded with the
engine's safe loader (never unrestricted unpickling) and run once on a blank volume; only a
model that loads and returns one finite age per scan is published to ``models/<id>/`` (one
rename) and recorded. On any failure nothing is kept.

A federation's round models come as one archive (.zip, .tar.gz...) of files named
``round_001.pt``, ``round_002.pt``... (any supported format, each with its optional sidecar),
sent as ``file`` with ``kind=federated_rounds``. The archive is only ever read by
:func:`backend.archives.extract_archive` (no links, no ``..``, size, count and ratio limits);
every round is loaded with the safe loader and run once, and the rounds are stored as
``models/<id>/round_<n>.<ext>``. An assessment of such a model on a scan set with a ``learner``
column is a federated assessment.

Deleting a model that an assessment still refers to answers 409: delete the assessments first
(their reports name the model by its sha256).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from ... import audit
from ...archives import ArchiveLimits, extract_archive
from ...db.models import MODEL_KINDS, Assessment, ModelRecord, new_id
from ...settings import Settings
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
    "kind": "model",
    "n_rounds": None,
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
    kind: str = Field("model", description="`model` (one model file) or `federated_rounds` (a federation's "
                      "community model of every round)")
    n_rounds: int | None = Field(None, description="Rounds of a `federated_rounds` model (None for one model)")
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
                        "kind": {
                            "type": "string",
                            "enum": ["model", "federated_rounds"],
                            "description": "`federated_rounds`: `file` is an archive (.zip, .tar.gz) of a "
                            "federation's round models round_001.pt, round_002.pt, ... (any supported "
                            "format, optional sidecars round_001.pt.json; default `model`)",
                        },
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
        kind=row.kind or "model",
        n_rounds=len(row.rounds) if row.rounds else None,
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


def _load_and_check(path: Path, name: str, settings: Settings) -> Any:
    """Load the stored file with its sidecar, as a worker will, and run it once (CPU), in a
    resource-limited child process (the file is untrusted code)."""
    from worker.engine.errors import InputError, ModelError
    from worker.engine.sandbox.check import check_model_file

    try:
        return check_model_file(path, **_sandbox_limits(settings))
    except ModelError as exc:
        hint = ""
        if name.lower().endswith((".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
            hint = " (for an archive of a federation's round models, send kind=federated_rounds)"
        raise ApiError(422, "invalid_model", f"{name}: {exc.reason}{hint}") from None
    except InputError as exc:
        raise ApiError(422, "invalid_model", f"{name}: {exc}".replace(str(path.parent) + os.sep, "")) from None


def _sandbox_limits(settings: Settings) -> dict[str, Any]:
    return {"timeout_s": settings.model_check_timeout_s, "memory_bytes": settings.model_check_memory_mb << 20,
            "private": settings.private_dirs}


@dataclass
class _Rounds:
    """The checked round models of a federation, in a clean folder ready to publish."""

    folder: Path
    files: list[str]
    format: str
    metadata: Any


def _parse_kind(text: str | None) -> str:
    """The ``kind`` form field: ``model`` (default) or ``federated_rounds``; 422 otherwise."""
    kind = (text or "").strip() or "model"
    if kind not in MODEL_KINDS:
        raise ApiError(
            422, "validation_error", "the request is not valid",
            [{"field": "kind", "reason": f"must be one of {', '.join(MODEL_KINDS)}"}],
        )
    return kind


def _place_round(path: Path, dest: Path, overrides: dict[str, Any], label: str, hide: Any) -> Path:
    """Move one round to ``dest`` with its resolved sidecar; 422 naming it when its metadata is bad."""
    from worker.engine.errors import InputError
    from worker.engine.models import resolve_metadata, write_sidecar

    try:
        metadata = resolve_metadata(path, overrides)
    except InputError as exc:
        raise ApiError(422, "invalid_metadata", hide(str(exc)), [{"field": label, "reason": hide(str(exc))}]) from None
    os.replace(path, dest)
    write_sidecar(dest, metadata)
    return dest


def _check_rounds(paths: list[Path], labels: dict[str, str], hide: Any, settings: Settings) -> list[Any]:
    """Load every round safely and run it once, in one resource-limited child process."""
    from worker.engine.errors import InputError, ModelError
    from worker.engine.sandbox.check import check_model_files

    try:
        return check_model_files(paths, **_sandbox_limits(settings))
    except ModelError as exc:
        label = labels.get(str(exc.path), str(exc.path))
        raise ApiError(422, "invalid_model", f"{label}: {exc.reason}", [{"field": label, "reason": exc.reason}]) from None
    except InputError as exc:
        reason = hide(str(exc))
        raise ApiError(422, "invalid_model", reason, [{"field": "file", "reason": reason}]) from None


def _store_rounds(archive: Path, work: Path, overrides: dict[str, Any], settings: Settings) -> _Rounds:
    """Extract the rounds safely into ``work`` and check each one; 422 naming the first bad one.

    Every round's metadata is its sidecar in the archive (if any) with ``overrides`` on top;
    all rounds must agree (one federation trains one model).
    """
    from worker.engine.errors import InputError
    from worker.engine.federated import resolve_rounds

    limits = ArchiveLimits(
        max_total_bytes=settings.max_extracted_bytes,
        max_members=settings.max_archive_members,
        max_ratio=settings.max_compression_ratio,
    )
    content = work / ".content"  # client file names never start with a dot (safe_filename)

    def hide(text: str) -> str:
        return text.replace(str(content) + os.sep, "").replace(str(work) + os.sep, "")

    try:
        paths = resolve_rounds(
            [archive], extract=lambda a, d: extract_archive(a, d, limits), workdir=content, archive=True
        )
    except InputError as exc:
        raise ApiError(422, "invalid_archive", hide(str(exc)), [{"field": "file", "reason": hide(str(exc))}]) from None
    clean = work / ".rounds"
    clean.mkdir()
    labels = {f"round_{r:03d}{path.suffix}": hide(str(path)) for r, path in enumerate(paths, start=1)}
    placed = [_place_round(path, clean / name, overrides, labels[name], hide) for name, path in zip(labels, paths)]
    loaded: list[Any] = []
    for model in _check_rounds(placed, labels, hide, settings):
        label = labels[model.path.name]
        if loaded and model.metadata != loaded[0].metadata:
            first = loaded[0].metadata
            diff = ", ".join(k for k in type(first).model_fields if getattr(model.metadata, k) != getattr(first, k))
            raise ApiError(
                422, "invalid_metadata", f"{label}: its metadata ({diff}) differs from round 1's: every round of a "
                "federation is the same model", [{"field": label, "reason": f"{diff} differ from round 1"}],
            )
        loaded.append(model)
    Storage.remove([content, archive])
    formats = {m.format for m in loaded}
    return _Rounds(
        folder=clean,
        files=[m.path.name for m in loaded],
        format=formats.pop() if len(formats) == 1 else "mixed",
        metadata=loaded[0].metadata,
    )


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
    loader's reason, and nothing is kept. With ``kind=federated_rounds`` the file is an archive
    of a federation's round models, extracted safely and checked round by round (422 naming
    the member or round at fault).
    """
    from worker.engine.models import write_sidecar

    tmp = storage.temp_dir()
    model_id = new_id()
    final = storage.model_dir(model_id)
    published = False
    try:
        form = await receive_multipart(request, tmp, {"file": settings.max_model_bytes})
        upload = form.required_file("file", "invalid_model", "file")
        metadata = _parse_metadata(form.fields.get("metadata"))
        kind = _parse_kind(form.fields.get("kind"))
        file_name = safe_filename(upload.filename, "model.bin")
        name = (form.fields.get("name") or "").strip() or upload.filename or file_name
        path = tmp / file_name
        os.replace(upload.path, path)
        rounds: list[str] | None = None
        if kind == "federated_rounds":
            stored = await run_in_threadpool(
                _store_rounds, path, tmp, metadata.model_dump(exclude_unset=True), settings
            )
            Storage.publish_dir(stored.folder, final)
            rel = final.relative_to(storage.root)
            rounds = [(rel / f).as_posix() for f in stored.files]
            model_path, fmt, resolved = rounds[-1], stored.format, stored.metadata
        else:
            write_sidecar(path, metadata)
            loaded = await run_in_threadpool(_load_and_check, path, file_name, settings)
            Storage.publish_dir(tmp, final)
            model_path = (final / file_name).relative_to(storage.root).as_posix()
            fmt, resolved = loaded.format, loaded.metadata
        published = True
        row = ModelRecord(
            id=model_id,
            org_id=principal.org_id,
            name=name[:500],
            path=model_path,
            sha256=upload.sha256,
            format=fmt,
            size_bytes=upload.size,
            model_metadata=json.loads(resolved.model_dump_json()),
            kind=kind,
            rounds=rounds,
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
            kind=kind,
            **({"n_rounds": len(rounds)} if rounds else {}),
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

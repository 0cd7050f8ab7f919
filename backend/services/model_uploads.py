"""Models: an upload checked by loading it safely, the caller's model, deleting one.

An upload is written to a private temporary folder with its metadata sidecar, loaded with the
engine's safe loader (never unrestricted unpickling) and run once on a blank volume in a
resource-limited child process (:mod:`worker.engine.sandbox.check`); only a model that loads
and returns one finite age per scan is published to ``models/<id>/`` (one rename) and
recorded. On any failure nothing is kept.

A federation's round models come as one archive (.zip, .tar.gz...) of files named
``round_001.pt``, ``round_002.pt``... (any supported format, each with its optional sidecar),
sent with ``kind=federated_rounds``. The archive is only ever read by
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from pydantic import ValidationError
from sqlalchemy.orm import Session

from .. import audit
from ..archives import extract_archive
from ..auth import Principal
from ..db.models import MODEL_KINDS, Assessment, ModelRecord, new_id
from ..settings import Settings
from ..storage import Storage
from .errors import ApiError, field_error
from .uploads import (
    ARCHIVE_SUFFIXES,
    UploadedFile,
    archive_limits,
    delete_with_files,
    owned_row,
    refuse_if_used,
    safe_filename,
    viewed_row,
)


def owned_model(session: Session, principal: Principal, model_id: str) -> ModelRecord:
    """The caller's organisation's model ``model_id``; 404 otherwise."""
    return owned_row(session, principal, ModelRecord, model_id, "model")


def view_model(session: Session, principal: Principal, model_id: str) -> ModelRecord:
    """The caller's model ``model_id`` (404 otherwise), its view recorded in the audit log."""
    return viewed_row(session, principal, ModelRecord, model_id, "model", "model")


def parse_metadata(text: str | None) -> Any:
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
            422, "invalid_metadata", "metadata must be a JSON object", [{"field": "metadata", "reason": "not an object"}]
        )
    try:
        return ModelMetadata.model_validate(data)
    except ValidationError as exc:
        details = [
            {"field": ".".join(["metadata", *(str(p) for p in err["loc"])]), "reason": err["msg"]}
            for err in exc.errors()
        ]
        raise ApiError(422, "invalid_metadata", "invalid model metadata", details) from None


def parse_kind(text: str | None) -> str:
    """The ``kind`` form field: ``model`` (default) or ``federated_rounds``; 422 otherwise."""
    kind = (text or "").strip() or "model"
    if kind not in MODEL_KINDS:
        raise field_error("kind", f"must be one of {', '.join(MODEL_KINDS)}")
    return kind


def _sandbox_limits(settings: Settings) -> dict[str, Any]:
    return {"timeout_s": settings.model_check_timeout_s, "memory_bytes": settings.model_check_memory_mb << 20,
            "private": settings.private_dirs}


def _load_and_check(path: Path, name: str, settings: Settings) -> Any:
    """Load the stored file with its sidecar, as a worker will, and run it once (CPU), in a
    resource-limited child process (the file is untrusted code)."""
    from worker.engine.errors import InputError, ModelError
    from worker.engine.sandbox.check import check_model_file

    try:
        return check_model_file(path, **_sandbox_limits(settings))
    except ModelError as exc:
        hint = ""
        if name.lower().endswith(ARCHIVE_SUFFIXES):
            hint = " (for an archive of a federation's round models, send kind=federated_rounds)"
        raise ApiError(422, "invalid_model", f"{name}: {exc.reason}{hint}") from None
    except InputError as exc:
        raise ApiError(422, "invalid_model", f"{name}: {exc}".replace(str(path.parent) + os.sep, "")) from None


@dataclass
class _Rounds:
    """The checked round models of a federation, in a clean folder ready to publish."""

    folder: Path
    files: list[str]
    format: str
    metadata: Any


def _place_round(path: Path, dest: Path, overrides: dict[str, Any], label: str, hide: Callable[[str], str]) -> Path:
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


def _check_rounds(paths: list[Path], labels: dict[str, str], hide: Callable[[str], str],
                  settings: Settings) -> list[Any]:
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

    limits = archive_limits(settings)
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


async def add_model(
    session: Session,
    storage: Storage,
    settings: Settings,
    principal: Principal,
    upload: UploadedFile,
    work: Path,
    *,
    metadata: str | None,
    kind: str | None,
    name: str | None,
) -> ModelRecord:
    """Check an uploaded model and publish it: its files under ``models/<id>/``, its row, its event.

    Args:
        session: the request's session (committed here).
        storage: where the model is published.
        settings: the size, time and memory limits of the check.
        principal: the uploader.
        upload: the uploaded file, inside ``work``.
        work: the upload's private temporary folder (the caller removes it afterwards).
        metadata: the ``metadata`` form field (JSON), if sent.
        kind: the ``kind`` form field, if sent.
        name: the display name, if sent (default: the file name).

    Raises:
        ApiError: 422 invalid metadata or kind, a model (or round archive) refused, unreadable
            or misbehaving; nothing is kept.
    """
    from worker.engine.models import write_sidecar

    model_id = new_id()
    final = storage.model_dir(model_id)
    published = False
    try:
        given = parse_metadata(metadata)
        model_kind = parse_kind(kind)
        file_name = safe_filename(upload.filename, "model.bin")
        display = (name or "").strip() or upload.filename or file_name
        path = work / file_name
        os.replace(upload.path, path)
        rounds: list[str] | None = None
        if model_kind == "federated_rounds":
            stored = await anyio.to_thread.run_sync(
                _store_rounds, path, work, given.model_dump(exclude_unset=True), settings
            )
            Storage.publish_dir(stored.folder, final)
            rel = final.relative_to(storage.root)
            rounds = [(rel / f).as_posix() for f in stored.files]
            model_path, fmt, resolved = rounds[-1], stored.format, stored.metadata
        else:
            write_sidecar(path, given)
            loaded = await anyio.to_thread.run_sync(_load_and_check, path, file_name, settings)
            Storage.publish_dir(work, final)
            model_path = (final / file_name).relative_to(storage.root).as_posix()
            fmt, resolved = loaded.format, loaded.metadata
        published = True
        row = ModelRecord(
            id=model_id, org_id=principal.org_id, name=display[:500], path=model_path, sha256=upload.sha256,
            format=fmt, size_bytes=upload.size, model_metadata=json.loads(resolved.model_dump_json()),
            kind=model_kind, rounds=rounds, created_by=principal.token_id,
        )
        session.add(row)
        audit.record(
            session, principal, "upload", "model", model_id, name=row.name, sha256=row.sha256, format=row.format,
            size_bytes=row.size_bytes, kind=model_kind, **({"n_rounds": len(rounds)} if rounds else {}),
        )
        session.commit()
    except BaseException:
        session.rollback()
        if published:
            Storage.remove([final])
        raise
    return row


def delete_model(session: Session, storage: Storage, principal: Principal, model_id: str) -> None:
    """Delete a model's row and files; 409 while an assessment refers to it (delete those first)."""
    row = owned_model(session, principal, model_id)
    refuse_if_used(session, Assessment.model_id, model_id, "model")
    delete_with_files(
        session, storage, row, storage.model_dir(model_id), what="model",
        record=lambda: audit.record(session, principal, "delete", "model", model_id, name=row.name, sha256=row.sha256),
    )

"""Database tables. The assessments table is the record of a job; Celery only carries ids."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

def utcnow() -> datetime:
    """Timezone-aware now (UTC)."""
    return datetime.now(timezone.utc)


def as_utc(value: datetime | None) -> datetime | None:
    """A timezone-aware UTC datetime (SQLite returns naive UTC values)."""
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def new_id() -> str:
    """A new random identifier."""
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    """Declarative base of every table."""

    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Organisation(Base):
    """A tenant: users see only their organisation's objects."""

    __tablename__ = "organisations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiToken(Base):
    """An API token (stored hashed) of a named user of an organisation."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    org: Mapped[Organisation] = relationship()


MODEL_KINDS = ("model", "federated_rounds")
"""``model``: one model file; ``federated_rounds``: a federation's community model of every round."""


class ModelRecord(Base):
    """An uploaded model file, or the round models of a federation.

    For ``kind`` ``federated_rounds``, ``rounds`` lists every round's model file (relative to
    the storage root, round 1 first) and ``path`` is the final round's.
    """

    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    name: Mapped[str] = mapped_column(String(500))
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(32))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    model_metadata: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    kind: Mapped[str] = mapped_column(String(32), default="model", server_default="model")
    rounds: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    created_by: Mapped[str | None] = mapped_column(ForeignKey("api_tokens.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ScanSet(Base):
    """A validated manifest and its scans (an uploaded archive or a server-side folder)."""

    __tablename__ = "scan_sets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    name: Mapped[str] = mapped_column(String(500))
    source: Mapped[str] = mapped_column(String(16))  # "archive" | "server"
    root: Mapped[str] = mapped_column(Text)
    manifest_path: Mapped[str] = mapped_column(Text)
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    n_scans: Mapped[int] = mapped_column(Integer)
    n_members: Mapped[int] = mapped_column(Integer)
    n_nonmembers: Mapped[int] = mapped_column(Integer)
    attribute_names: Mapped[list[Any]] = mapped_column(JSON, default=list)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_by: Mapped[str | None] = mapped_column(ForeignKey("api_tokens.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReferenceSet(Base):
    """User-supplied reference models for one scan set: model files (each checked as a model
    upload is) and ``keep.csv`` (which of the scan set's scans each model trained on).

    ``root`` is the folder of the files (relative to the storage root), ``model_files`` the
    model file names in it (keep.csv's columns are their stems), ``model_metadata`` the input
    the models share (grid, voxel size, normalisation).
    """

    __tablename__ = "reference_sets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    scan_set_id: Mapped[str] = mapped_column(ForeignKey("scan_sets.id"), index=True)
    name: Mapped[str] = mapped_column(String(500))
    root: Mapped[str] = mapped_column(Text)
    model_files: Mapped[list[Any]] = mapped_column(JSON, default=list)
    formats: Mapped[list[Any]] = mapped_column(JSON, default=list)
    model_metadata: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    keep_sha256: Mapped[str] = mapped_column(String(64))
    keep_hash: Mapped[str] = mapped_column(String(64))
    archive_sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_by: Mapped[str | None] = mapped_column(ForeignKey("api_tokens.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Assessment(Base):
    """An assessment job and, once done, where its results are."""

    __tablename__ = "assessments"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"), index=True)
    scan_set_id: Mapped[str] = mapped_column(ForeignKey("scan_sets.id"), index=True)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16), index=True)  # backend.services.job_states.JobState
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    stage: Mapped[str] = mapped_column(String(32), default="queued")
    message: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    log: Mapped[str] = mapped_column(Text, default="")
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    verdict_level: Mapped[str | None] = mapped_column(String(16), nullable=True)
    passed: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    result_dir: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_by: Mapped[str | None] = mapped_column(ForeignKey("api_tokens.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    model: Mapped[ModelRecord] = relationship()
    scan_set: Mapped[ScanSet] = relationship()


class ReferenceTask(Base):
    """One sub-task of an assessment: the training of reference model ``model_index``
    (``kind='reference'``) or the features of scan shard ``model_index`` (``kind='shard'``); a
    Celery task in distributed mode, or run by the job's own worker (:mod:`worker.fanout`).

    The trained model itself lives in the reference store (reused by any later assessment with
    the same recipe, scans and seed); this row records who trains it and whether that worker is
    alive, so that a model whose worker died is trained again, alone. Deleted with its assessment.

    Attributes:
        state: ``backend.services.job_states.ReferenceState``.
        worker: ``hostname:pid`` of the worker that trained (or trains) it.
        attempts: attempts started (a message carries ``attempts + 1``).
        kind: ``reference`` or ``shard``.
        epoch: epochs (reference) or scans (shard) done by the running attempt.
        heartbeat_at: the running attempt's last sign of life.
        error: why it failed.
    """

    __tablename__ = "reference_tasks"

    assessment_id: Mapped[str] = mapped_column(ForeignKey("assessments.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True, default="reference", server_default="reference")
    model_index: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    state: Mapped[str] = mapped_column(String(16))
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class AuditEvent(Base):
    """Who uploaded, ran, viewed, exported or deleted what, and when."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    org_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    token_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(32))
    object_type: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class BrowserSession(Base):
    """A signed-in browser. Its cookie carries a random session id; only the id's SHA-256 is
    stored, so a copy of the database cannot be turned into cookies. Signing out, revoking the
    token or the end of the lifetime deletes the row, and the cookie stops working."""

    __tablename__ = "browser_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_id: Mapped[str] = mapped_column(ForeignKey("api_tokens.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)

"""reference_tasks.kind: one table for every sub-task of a job (reference models and feature shards)

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-01 20:20:00.000000

A job's sub-tasks (one reference model trained, one shard of scans whose features are extracted)
share one fan-out mechanism (:mod:`worker.fanout`) and one row shape; ``kind`` tells them apart and
joins the primary key ``(assessment_id, kind, model_index)``. Existing rows are reference models.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0004"
branch_labels = None
depends_on = None

_PK = "reference_tasks_pkey"


def upgrade() -> None:
    """Add ``kind`` (default ``reference``) and make it part of the primary key."""
    kind = sa.Column("kind", sa.String(length=16), nullable=False, server_default="reference")
    if op.get_bind().dialect.name == "sqlite":  # no ALTER of a primary key: the table is copied
        _copy_table(with_kind=True)
        return
    op.add_column("reference_tasks", kind)
    op.drop_constraint(_PK, "reference_tasks", type_="primary")
    op.create_primary_key(_PK, "reference_tasks", ["assessment_id", "kind", "model_index"])


def downgrade() -> None:
    """Drop the shard rows and ``kind`` (the key is ``(assessment_id, model_index)`` again)."""
    op.execute("DELETE FROM reference_tasks WHERE kind <> 'reference'")
    if op.get_bind().dialect.name == "sqlite":
        _copy_table(with_kind=False)
        return
    op.drop_constraint(_PK, "reference_tasks", type_="primary")
    op.drop_column("reference_tasks", "kind")
    op.create_primary_key(_PK, "reference_tasks", ["assessment_id", "model_index"])


def _copy_table(*, with_kind: bool) -> None:
    """SQLite: the table again, with (or without) ``kind`` in its key, rows copied over."""
    columns = ["assessment_id", "model_index", "state", "worker", "attempts", "epoch", "heartbeat_at", "started_at",
               "finished_at", "error"]
    key = ["assessment_id", "kind", "model_index"] if with_kind else ["assessment_id", "model_index"]
    op.create_table(
        "_reference_tasks_new",
        sa.Column("assessment_id", sa.String(length=32), nullable=False),
        *([sa.Column("kind", sa.String(length=16), nullable=False, server_default="reference")] if with_kind else []),
        sa.Column("model_index", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("worker", sa.String(length=200), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["assessment_id"], ["assessments.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint(*key, name=_PK),
    )
    names = ", ".join(columns)
    op.execute(f"INSERT INTO _reference_tasks_new ({names}) SELECT {names} FROM reference_tasks")
    op.drop_table("reference_tasks")
    op.rename_table("_reference_tasks_new", "reference_tasks")

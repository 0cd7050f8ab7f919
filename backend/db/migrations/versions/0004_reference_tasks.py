"""reference_tasks: one row per reference model an assessment trains (who, alive, attempts)

Revision ID: 0004
Revises: 0005
Create Date: 2026-12-01 15:00:00.000000

It follows 0005 (reference_sets), which was written first against 0003, so that the
revisions stay one line.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """A new table; rows go with their assessment (ON DELETE CASCADE)."""
    op.create_table(
        "reference_tasks",
        sa.Column("assessment_id", sa.String(length=32), nullable=False),
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
        sa.PrimaryKeyConstraint("assessment_id", "model_index"),
    )


def downgrade() -> None:
    """Drop the table (running reference trainings are then retrained from scratch)."""
    op.drop_table("reference_tasks")

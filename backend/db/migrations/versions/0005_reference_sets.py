"""reference_sets: user-supplied reference models of a scan set, with their keep.csv

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-08 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """A new table; nothing else changes (an assessment names its reference set in its options)."""
    op.create_table(
        "reference_sets",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("org_id", sa.String(length=32), nullable=False),
        sa.Column("scan_set_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=500), nullable=False),
        sa.Column("root", sa.Text(), nullable=False),
        sa.Column("model_files", sa.JSON(), nullable=False),
        sa.Column("formats", sa.JSON(), nullable=False),
        sa.Column("model_metadata", sa.JSON(), nullable=False),
        sa.Column("keep_sha256", sa.String(length=64), nullable=False),
        sa.Column("keep_hash", sa.String(length=64), nullable=False),
        sa.Column("archive_sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["created_by"], ["api_tokens.id"]),
        sa.ForeignKeyConstraint(["org_id"], ["organisations.id"]),
        sa.ForeignKeyConstraint(["scan_set_id"], ["scan_sets.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("reference_sets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_reference_sets_org_id"), ["org_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_reference_sets_scan_set_id"), ["scan_set_id"], unique=False)


def downgrade() -> None:
    """Drop the table (its files stay under reference_sets/ in the storage)."""
    with op.batch_alter_table("reference_sets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reference_sets_scan_set_id"))
        batch_op.drop_index(batch_op.f("ix_reference_sets_org_id"))
    op.drop_table("reference_sets")

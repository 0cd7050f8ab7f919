"""models: kind (one model or a federation's rounds) and the round files

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 22:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Existing rows are single models (``kind`` 'model', no rounds)."""
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=32), nullable=False, server_default="model"))
        batch_op.add_column(sa.Column("rounds", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Drop the columns (federated rows then read as their final round's model)."""
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_column("rounds")
        batch_op.drop_column("kind")

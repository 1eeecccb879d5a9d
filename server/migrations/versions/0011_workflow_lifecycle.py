"""workflows can be disabled; a deleted workflow's versions are kept, hidden

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 18:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Added columns with server defaults: SQLite adds them in place, with no
    # copy of the table, and existing workflows stay enabled.
    op.add_column(
        "workflows",
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
    )
    op.add_column("workflow_versions", sa.Column("deleted_at_ms", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workflow_versions") as batch:
        batch.drop_column("deleted_at_ms")
    with op.batch_alter_table("workflows") as batch:
        batch.drop_column("enabled")

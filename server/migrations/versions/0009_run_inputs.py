"""runs take inputs and a caller's request id

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 02:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Added columns and a new index: SQLite does both in place, with no copy
    # of the table.
    op.add_column("runs", sa.Column("inputs", sa.JSON(), nullable=True))
    op.add_column("runs", sa.Column("request_id", sa.String(200), nullable=True))
    op.add_column("runs", sa.Column("request_digest", sa.String(64), nullable=True))
    op.create_index(
        op.f("ix_runs_org_id_request_id"),
        "runs",
        ["org_id", "request_id"],
        unique=True,
        sqlite_where=sa.text("request_id IS NOT NULL"),
        postgresql_where=sa.text("request_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_runs_org_id_request_id"), table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("request_digest")
        batch.drop_column("request_id")
        batch.drop_column("inputs")

"""runs are retried as new attempts, may cap their leased jobs, and roll back

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 19:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Added columns with server defaults: SQLite adds them in place.
    op.add_column("runs", sa.Column("attempt", sa.Integer(), nullable=False, server_default="1"))
    op.add_column(
        "runs", sa.Column("parallel_limit", sa.Integer(), nullable=False, server_default="0")
    )
    op.add_column(
        "jobs", sa.Column("parallel_limit", sa.Integer(), nullable=False, server_default="0")
    )
    op.add_column(
        "jobs", sa.Column("base_attempt", sa.Integer(), nullable=False, server_default="0")
    )
    op.add_column(
        "runs",
        sa.Column("rollback_on_failure", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column(
        "runs",
        sa.Column("rollback_partial", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("jobs", sa.Column("compensates", sa.String(100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("compensates")
        batch.drop_column("base_attempt")
        batch.drop_column("parallel_limit")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("rollback_partial")
        batch.drop_column("rollback_on_failure")
        batch.drop_column("parallel_limit")
        batch.drop_column("attempt")

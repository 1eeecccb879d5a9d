"""rate-limit meters that the replicas on one PostgreSQL share

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Meters are not worth the WAL: unlogged writes commit without waiting for a
    # flush (a third of the cost of a take). A crash empties the table, which
    # gives every key its whole budget again; standbys do not have it.
    unlogged = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "rate_limit_buckets",
        sa.Column("bucket", sa.String(length=32), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("level", sa.Double(), nullable=False),
        sa.Column("updated_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", "key", name=op.f("pk_rate_limit_buckets")),
        prefixes=["UNLOGGED"] if unlogged else [],
    )


def downgrade() -> None:
    op.drop_table("rate_limit_buckets")

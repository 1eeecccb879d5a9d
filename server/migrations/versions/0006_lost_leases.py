"""lost leases are counted per job; each attempt records its error

Revision ID: 0006
Revises: 0004
Create Date: 2026-11-26 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("lost_leases", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("leases") as batch:
        batch.add_column(sa.Column("error", sa.Text(), nullable=True))
    # Leases that ran into their job's deadline were stored as expired too;
    # they are timeouts, not lost leases.
    op.execute(
        "UPDATE leases SET state = 'timed_out' "
        "WHERE state = 'expired' AND expires_at_ms >= deadline_ms"
    )


def downgrade() -> None:
    op.execute("UPDATE leases SET state = 'expired' WHERE state = 'timed_out'")
    with op.batch_alter_table("leases") as batch:
        batch.drop_column("error")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("lost_leases")

"""index job edges by child

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 08:24:10.013472
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f("ix_job_edges_child_id"), "job_edges", ["child_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_job_edges_child_id"), table_name="job_edges")

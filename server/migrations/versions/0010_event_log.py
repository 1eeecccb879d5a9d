"""the event log: run_events become rows of events; runs say who started them

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 19:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "runs", sa.Column("created_by", sa.String(200), server_default="", nullable=False)
    )
    op.add_column(
        "runs", sa.Column("trigger", sa.String(16), server_default="call", nullable=False)
    )
    op.create_table(
        "events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tx", sa.BigInteger(), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("workflow_id", sa.String(length=100), nullable=False),
        sa.Column("workflow_version", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("job_key", sa.String(length=100), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("time_ms", sa.BigInteger(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    op.create_index(op.f("ix_events_org_id_tx_id"), "events", ["org_id", "tx", "id"], unique=False)
    op.create_index(op.f("ix_events_run_id_tx_id"), "events", ["run_id", "tx", "id"], unique=False)
    # Old events keep their ids (StreamRunEvents resumes by them) and sort
    # before every new one (tx 0: older than any transaction still running).
    # A run's start was RUN_STARTED; it is RUN_CREATED in the log.
    op.execute(
        """INSERT INTO events (id, tx, org_id, type, workflow_id, workflow_version, run_id,
            job_key, attempt, time_ms, message, data)
        SELECT e.id, 0, e.org_id,
            CASE WHEN e.type = 'RUN_STARTED' THEN 'RUN_CREATED' ELSE e.type END,
            coalesce(r.workflow_id, ''), coalesce(r.workflow_version, 0), e.run_id,
            e.job_key, e.attempt, e.time_ms, e.message, NULL
        FROM run_events e LEFT JOIN runs r ON r.id = e.run_id
        ORDER BY e.id"""
    )
    if op.get_bind().dialect.name == "postgresql":
        # The copied ids were given explicitly: the sequence goes on after them.
        op.execute(
            """SELECT setval(pg_get_serial_sequence('events', 'id'),
                coalesce((SELECT max(id) FROM events), 0) + 1, false)"""
        )
    op.drop_index(op.f("ix_run_events_run_id_id"), table_name="run_events")
    op.drop_table("run_events")


def downgrade() -> None:
    op.create_table(
        "run_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("type", sa.String(length=24), nullable=False),
        sa.Column("job_key", sa.String(length=100), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("time_ms", sa.BigInteger(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_events")),
    )
    op.create_index(op.f("ix_run_events_run_id_id"), "run_events", ["run_id", "id"], unique=False)
    op.execute(
        """INSERT INTO run_events (id, org_id, run_id, type, job_key, attempt, time_ms, message)
        SELECT id, org_id, run_id,
            CASE WHEN type = 'RUN_CREATED' THEN 'RUN_STARTED' ELSE type END,
            job_key, attempt, time_ms, message
        FROM events
        WHERE run_id <> '' AND type IN ('RUN_CREATED', 'RUN_FINISHED', 'JOB_QUEUED',
            'JOB_STARTED', 'JOB_SUCCEEDED', 'JOB_FAILED', 'JOB_RETRYING', 'JOB_SKIPPED',
            'JOB_CANCELLED')
        ORDER BY id"""
    )
    op.drop_index(op.f("ix_events_run_id_tx_id"), table_name="events")
    op.drop_index(op.f("ix_events_org_id_tx_id"), table_name="events")
    op.drop_table("events")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("trigger")
        batch.drop_column("created_by")

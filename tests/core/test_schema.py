"""The Alembic migrations build exactly the schema the models declare."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from trellis.server.core.db import connect, upgrade_schema
from trellis.server.core.models import Base


def test_migrations_match_the_models(database_url: str) -> None:
    db = connect(database_url)
    try:
        upgrade_schema(db)
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []
    finally:
        db.dispose()


def test_leases_that_ran_into_their_deadline_become_timeouts(database_url: str) -> None:
    # Before 0006 a timed-out lease and a lost one were both stored as expired.
    db = connect(database_url)
    try:
        upgrade_schema(db, "0004")
        insert = text(
            """INSERT INTO leases (id, org_id, job_id, run_id, workflow_id, job_key, worker_id,
                attempt, ttl_secs, granted_at_ms, expires_at_ms, deadline_ms, state,
                finished_at_ms, owner)
            VALUES (:id, 'default', 1, 'r', 'wf', 'a', 'w', 0, 30, 0, :expires, :deadline,
                :state, 0, '')"""
        )
        rows = [
            {"id": "timeout", "expires": 1000, "deadline": 1000, "state": "expired"},
            {"id": "lost", "expires": 1000, "deadline": 5000, "state": "expired"},
            {"id": "done", "expires": 1000, "deadline": 1000, "state": "completed"},
        ]
        with db.engine.begin() as conn:
            conn.execute(insert, rows)
        upgrade_schema(db)
        with db.engine.connect() as conn:
            states = dict(conn.execute(text("SELECT id, state FROM leases")).all())
        assert states == {"timeout": "timed_out", "lost": "expired", "done": "completed"}
    finally:
        db.dispose()

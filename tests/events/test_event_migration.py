"""Migration 0010: the run events stored before it become the first events of
the log, in their order, and new events come after them."""

from __future__ import annotations

from sqlalchemy import text

from trellis.server.core import _sql
from trellis.server.core.db import connect, upgrade_schema
from trellis.server.core.eventlog import EventBatch, EventType


def test_run_events_are_copied_into_the_log(database_url: str) -> None:
    db = connect(database_url)
    try:
        upgrade_schema(db, "0009")
        with db.engine.begin() as conn:
            conn.execute(
                text(
                    """INSERT INTO runs (id, org_id, workflow_id, workflow_version, state,
                        unfinished_jobs, failed_jobs, cancel_requested, created_at_ms,
                        finished_at_ms)
                    VALUES ('r1', 'default', 'wf', 3, 'succeeded', 0, 0, false, 1, 2)"""
                )
            )
            conn.execute(
                text(
                    """INSERT INTO run_events (id, org_id, run_id, type, job_key, attempt,
                        time_ms, message)
                    VALUES (:id, 'default', 'r1', :type, :job, 0, :id, '')"""
                ),
                [
                    {"id": 5, "type": "RUN_STARTED", "job": ""},
                    {"id": 6, "type": "JOB_QUEUED", "job": "a"},
                    {"id": 9, "type": "RUN_FINISHED", "job": ""},
                ],
            )
        upgrade_schema(db)
        with db.write() as conn:
            batch = EventBatch("default", 10)
            batch.add("r1", EventType.JOB_LOGGED, "a")
            with _sql.pipelined(conn) as pipe:
                batch.write(pipe)
        with db.read() as conn:
            rows = conn.execute(
                text(
                    """SELECT id, tx, type, workflow_id, workflow_version, run_id, job_key
                    FROM events ORDER BY tx, id"""
                )
            ).all()
            runs = conn.execute(text('SELECT created_by, "trigger" FROM runs')).all()
    finally:
        db.dispose()
    assert [tuple(r)[:1] + tuple(r)[2:] for r in rows[:3]] == [
        (5, "RUN_CREATED", "wf", 3, "r1", ""),
        (6, "JOB_QUEUED", "wf", 3, "r1", "a"),
        (9, "RUN_FINISHED", "wf", 3, "r1", ""),
    ]
    assert all(r.tx == 0 for r in rows[:3])
    # Written after: a higher id, the workflow filled in from the run.
    assert rows[3].id > 9 and rows[3].type == "JOB_LOGGED" and rows[3].workflow_id == "wf"
    assert runs == [("", "call")]

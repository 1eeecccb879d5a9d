"""Retries of finished runs: the next attempt of the same run."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from trellis.server.core import _sql
from trellis.server.core._sql import Sql, from_json
from trellis.server.core.errors import FailedPrecondition, NotFound
from trellis.server.engine._machine.common import (
    Effects,
    Events,
    jobs,
    lock_runs,
    runs,
    topic_logs,
)
from trellis.server.engine._states import JobState, RunEventType, RunState

_RESET_JOBS = Sql(
    """UPDATE jobs SET state = :state, pending_parents = :pending, attempt = attempt + 1,
        base_attempt = attempt + 1, lost_leases = 0, ready_at_ms = 0, started_at_ms = 0,
        finished_at_ms = 0, enqueued_at_ms = :enqueued, outputs = NULL, error = NULL
    WHERE id = :jid"""
)
_RESTART_RUN = Sql(
    f"""UPDATE runs SET state = '{RunState.RUNNING}', attempt = attempt + 1,
        unfinished_jobs = :n, failed_jobs = 0, cancel_requested = false, finished_at_ms = 0
    WHERE id = :run_id AND state <> '{RunState.RUNNING}'"""
)


def retry_run(
    conn: Connection, *, is_pg: bool, org: str, run_id: str, now: int
) -> tuple[int, Effects]:
    """Starts the next attempt of a finished run; returns its number.

    Every job that did not succeed (failed, cancelled, or skipped or
    cancelled for a parent that did not) is reset: queued when all its
    parents succeeded, else pending on the ones that did not. Succeeded jobs
    keep their state and outputs, which claims read as upstream outputs.
    """
    with _sql.pipelined(conn) as batch:
        lock_runs(batch, is_pg, [run_id])
    run = conn.execute(
        select(runs.c.state, runs.c.attempt).where(runs.c.id == run_id, runs.c.org_id == org)
    ).first()
    if run is None:
        raise NotFound(f"run {run_id!r} not found")
    if run.state == RunState.RUNNING:
        raise FailedPrecondition(f"run {run_id!r} is running; only a finished run is retried")
    rows = conn.execute(
        select(
            jobs.c.id, jobs.c.key, jobs.c.state, jobs.c.parents, jobs.c.label_key, jobs.c.command
        ).where(jobs.c.run_id == run_id)
    ).all()
    redo = {r.key: r for r in rows if r.state != JobState.SUCCEEDED}
    if not redo:
        raise FailedPrecondition(f"run {run_id!r} succeeded; it has no job to run again")
    effects = Effects()
    ev = Events(org, now)
    attempt = run.attempt + 1
    ev.add(run_id, RunEventType.RUN_RETRIED, attempt=attempt, msg=f"attempt {attempt}")
    updates: list[dict[str, Any]] = []
    for key, row in redo.items():
        parents = from_json(row.parents) if isinstance(row.parents, str) else row.parents
        pending = sum(1 for p in parents if p in redo)
        state = JobState.PENDING if pending else JobState.QUEUED
        updates.append(
            {
                "jid": row.id,
                "state": state,
                "pending": pending,
                "enqueued": now if state == JobState.QUEUED else 0,
            }
        )
        effects.topics.add(topic_logs(row.id))
        if state == JobState.QUEUED:
            ev.add(run_id, RunEventType.JOB_QUEUED, key)
            effects.ready[(org, row.label_key, row.command)] += 1
    effects.ready_runs.add(run_id)
    with _sql.pipelined(conn) as batch:
        batch.execute_many(_RESET_JOBS, updates)
        batch.execute(_RESTART_RUN, n=len(redo), run_id=run_id)
        ev.flush(batch, effects)
    return attempt, effects


__all__ = ["retry_run"]

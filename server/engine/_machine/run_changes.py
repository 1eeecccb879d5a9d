"""Runs: created with all their jobs at once, and cancelled whole."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, update

from trellis.server.core import _sql
from trellis.server.core._sql import Sql, to_json
from trellis.server.engine._machine.common import (
    Effects,
    Events,
    jobs,
    label_key,
    leases,
    new_id,
    runs,
    topic_logs,
    topic_worker,
)
from trellis.server.engine._states import UNFINISHED, JobState, LeaseState, RunEventType, RunState
from trellis.server.engine.definitions import WorkflowDef

_INSERT_RUN = Sql(
    """INSERT INTO runs (id, org_id, workflow_id, workflow_version, state, unfinished_jobs,
        failed_jobs, cancel_requested, created_at_ms, finished_at_ms)
    VALUES (:id, :org_id, :workflow_id, :workflow_version, :state, :unfinished_jobs,
        :failed_jobs, :cancel_requested, :created_at_ms, :finished_at_ms)"""
)
_INSERT_JOB = _sql.Insert(
    "jobs",
    {
        "org_id": "text",
        "run_id": "text",
        "workflow_id": "text",
        "key": "text",
        "position": "integer",
        "name": "text",
        "command": "text",
        "label_key": "text",
        "state": "text",
        "max_retries": "integer",
        "backoff": "json",
        "timeout_secs": "integer",
        "env": "json",
        "parents": "json",
        "pending_parents": "integer",
        "enqueued_at_ms": "bigint",
    },
    constants={"attempt": "0", "ready_at_ms": "0", "started_at_ms": "0", "finished_at_ms": "0"},
)
_JOB_IDS_OF_RUN = Sql('SELECT "key", id FROM jobs WHERE run_id = :run_id')
_INSERT_EDGE = _sql.Insert(
    "job_edges", {"parent_id": "bigint", "child_id": "bigint", "org_id": "text"}
)
_INSERT_LABEL_SET = _sql.Insert(
    "label_sets", {"org_id": "text", "label_key": "text"}, on_conflict="ON CONFLICT DO NOTHING"
)


def create_run(
    conn: Connection,
    *,
    org: str,
    wdef: WorkflowDef,
    version: int,
    now: int,
    also: Callable[[_sql.Batch, str], None] | None = None,
) -> tuple[dict[str, Any], Effects]:
    """Creates a run with all its jobs (roots are queued at once); returns the run's row.

    ``also(batch, run_id)`` adds the caller's own writes to the batch that
    stores the run (one round trip on PostgreSQL).
    """
    run_id = new_id()
    run: dict[str, Any] = {
        "id": run_id,
        "org_id": org,
        "workflow_id": wdef.id,
        "workflow_version": version,
        "state": RunState.RUNNING,
        "unfinished_jobs": len(wdef.jobs),
        "failed_jobs": 0,
        "cancel_requested": False,
        "created_at_ms": now,
        "finished_at_ms": 0,
    }
    effects = Effects()
    rows: list[dict[str, Any]] = []
    for pos, job in enumerate(wdef.jobs):
        is_root = not job.depends_on
        rows.append(
            {
                "org_id": org,
                "run_id": run_id,
                "workflow_id": wdef.id,
                "key": job.id,
                "position": pos,
                "name": job.name,
                "command": job.command,
                "label_key": label_key(job.required_labels),
                "state": JobState.QUEUED if is_root else JobState.PENDING,
                "max_retries": job.max_retries,
                "backoff": to_json(job.backoff.to_json()),
                "timeout_secs": job.timeout_secs,
                "env": to_json(dict(job.env)),
                "parents": to_json(list(job.depends_on)),
                "pending_parents": len(job.depends_on),
                "enqueued_at_ms": now if is_root else 0,
            }
        )
    keys = sorted({label_key(job.required_labels) for job in wdef.jobs})
    ev = Events(org, now)
    ev.add(run_id, RunEventType.RUN_STARTED)
    for job in wdef.jobs:
        if not job.depends_on:
            ev.add(run_id, RunEventType.JOB_QUEUED, job.id)
    with _sql.pipelined(conn) as batch:
        batch.execute(_INSERT_RUN, **run)
        batch.insert(_INSERT_JOB, rows)
        batch.insert(_INSERT_LABEL_SET, [{"org_id": org, "label_key": k} for k in keys])
        ev.flush(batch, effects)
        if also is not None:
            also(batch, run_id)
    if any(job.depends_on for job in wdef.jobs):
        ids: dict[str, int] = dict(_sql.query(conn, _JOB_IDS_OF_RUN, run_id=run_id))
        edge_rows = [
            {"parent_id": ids[parent], "child_id": ids[job.id], "org_id": org}
            for job in wdef.jobs
            for parent in job.depends_on
        ]
        _sql.insert(conn, _INSERT_EDGE, edge_rows)
    effects.ready.update(
        (org, label_key(job.required_labels), job.command)
        for job in wdef.jobs
        if not job.depends_on
    )
    effects.ready_runs.add(run_id)
    return run, effects


def cancel_run(conn: Connection, *, org: str, run_id: str, now: int) -> tuple[bool, Effects]:
    """Cancels every unfinished job of the run; False if the run was already over."""
    effects = Effects()
    updated = conn.execute(
        update(runs)
        .where(runs.c.id == run_id, runs.c.org_id == org, runs.c.state == RunState.RUNNING)
        .values(cancel_requested=True)
    ).rowcount
    if not updated:
        return False, effects
    cancelled = conn.execute(
        update(jobs)
        .where(jobs.c.run_id == run_id, jobs.c.state.in_(UNFINISHED))
        .values(state=JobState.CANCELLED, finished_at_ms=now)
        .returning(jobs.c.id, jobs.c.key, jobs.c.attempt)
    ).all()
    lost = conn.execute(
        update(leases)
        .where(leases.c.run_id == run_id, leases.c.state == LeaseState.ACTIVE)
        .values(state=LeaseState.CANCELLED, finished_at_ms=now)
        .returning(leases.c.worker_id)
    ).all()
    effects.topics.update(topic_worker(org, w) for (w,) in lost)
    effects.topics.update(topic_logs(job_id) for job_id, _, _ in cancelled)
    ev = Events(org, now)
    for _, key, attempt in cancelled:
        ev.add(run_id, RunEventType.JOB_CANCELLED, key, attempt)
    conn.execute(
        update(runs)
        .where(runs.c.id == run_id)
        .values(
            unfinished_jobs=runs.c.unfinished_jobs - len(cancelled),
            state=RunState.CANCELLED,
            finished_at_ms=now,
        )
    )
    ev.add(run_id, RunEventType.RUN_FINISHED, msg=RunState.CANCELLED)
    with _sql.pipelined(conn) as batch:
        ev.flush(batch, effects)
    return True, effects


__all__ = ["cancel_run", "create_run"]

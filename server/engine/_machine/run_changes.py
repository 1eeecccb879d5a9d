"""Runs: created with all their jobs at once, and cancelled whole."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, update

from trellis.server.core import _sql
from trellis.server.core._sql import from_json, to_json
from trellis.server.core.eventlog import TRIGGER_CALL
from trellis.server.engine._machine.common import (
    Effects,
    Events,
    jobs,
    label_key,
    leases,
    new_id,
    runs,
    topic_worker,
)
from trellis.server.engine._states import UNFINISHED, JobState, LeaseState, RunEventType, RunState
from trellis.server.engine.definitions import WorkflowDef

_INSERT_RUN = _sql.Insert(
    "runs",
    {
        "id": "text",
        "org_id": "text",
        "workflow_id": "text",
        "workflow_version": "integer",
        "unfinished_jobs": "integer",
        "created_at_ms": "bigint",
        "inputs": "json",
        "request_id": "text",
        "request_digest": "text",
        "created_by": "text",
        "trigger": "text",
        "parallel_limit": "integer",
        "rollback_on_failure": "boolean",
    },
    constants={
        "state": f"'{RunState.RUNNING}'",
        "rollback_partial": "false",
        "attempt": "1",
        "failed_jobs": "0",
        "cancel_requested": "false",
        "finished_at_ms": "0",
    },
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
        "parallel_limit": "integer",
    },
    constants={
        "attempt": "0",
        "ready_at_ms": "0",
        "started_at_ms": "0",
        "finished_at_ms": "0",
        "base_attempt": "0",
    },
)
_JOB_IDS_OF_RUNS = _sql.Sql('SELECT run_id, "key", id FROM jobs WHERE run_id IN_LIST(:run_ids)')
_INSERT_EDGE = _sql.Insert(
    "job_edges", {"parent_id": "bigint", "child_id": "bigint", "org_id": "text"}
)
_INSERT_LABEL_SET = _sql.Insert(
    "label_sets", {"org_id": "text", "label_key": "text"}, on_conflict="ON CONFLICT DO NOTHING"
)


@dataclass(frozen=True, slots=True)
class NewRun:
    """A run to create: of version ``version`` of ``wdef``, with its resolved
    ``inputs`` (None: the run has none) and the caller's request id and the
    digest of what that request asked for; started by ``created_by`` (a
    principal's subject, empty for the server itself) through ``trigger``; at
    most ``parallel_limit`` of its jobs leased at once (0: no limit);
    ``run_id`` when the caller chose it."""

    wdef: WorkflowDef
    version: int
    inputs: Mapping[str, Any] | None = None
    request_id: str | None = None
    request_digest: str | None = None
    created_by: str = ""
    trigger: str = TRIGGER_CALL
    """What started the run: "call", or by itself "topic:<topic>", "schedule:<cron>"."""
    parallel_limit: int = 0
    run_id: str | None = None


@dataclass(frozen=True, slots=True)
class _Shape:
    """What every run of one definition stores alike: its job rows but for
    the run's own columns, its label sets, and its roots (job, label set,
    command)."""

    rows: tuple[dict[str, Any], ...]
    label_keys: frozenset[str]
    roots: tuple[tuple[str, str, str], ...]
    has_edges: bool
    job_keys: tuple[str, ...]


@functools.lru_cache(maxsize=256)
def _shape(wdef: WorkflowDef) -> _Shape:
    """Made once per definition, not once per run: for a small run, encoding
    its columns costs more than storing them."""
    rows: list[dict[str, Any]] = []
    for pos, job in enumerate(wdef.jobs):
        rows.append(
            {
                "workflow_id": wdef.id,
                "key": job.id,
                "position": pos,
                "name": job.name,
                "command": job.command,
                "label_key": label_key(job.required_labels),
                "state": JobState.PENDING if job.depends_on else JobState.QUEUED,
                "max_retries": job.max_retries,
                "backoff": to_json(job.backoff.to_json()),
                "timeout_secs": job.timeout_secs,
                "env": to_json(dict(job.env)),
                "parents": to_json(list(job.depends_on)),
                "pending_parents": len(job.depends_on),
            }
        )
    return _Shape(
        rows=tuple(rows),
        label_keys=frozenset(row["label_key"] for row in rows),
        roots=tuple(
            (row["key"], row["label_key"], row["command"])
            for row in rows
            if row["state"] == JobState.QUEUED
        ),
        has_edges=any(job.depends_on for job in wdef.jobs),
        job_keys=tuple(job.id for job in wdef.jobs),
    )


def create_runs(
    conn: Connection,
    *,
    org: str,
    new: Sequence[NewRun],
    now: int,
    also: Callable[[_sql.Batch, list[dict[str, Any]]], None] | None = None,
) -> tuple[list[dict[str, Any]], Effects]:
    """Creates runs with all their jobs (roots are queued at once); returns
    the runs' rows, in the order of ``new``.

    ``also(batch, runs)`` adds the caller's own writes to the batch that
    stores the runs: however many runs, that is one round trip on PostgreSQL
    (and one more for the edges of runs whose jobs depend on others).
    """
    effects = Effects()
    ev = Events(org, now)
    runs_: list[dict[str, Any]] = []
    job_rows: list[dict[str, Any]] = []
    keys: set[str] = set()
    for start in new:
        wdef = start.wdef
        run_id = start.run_id or new_id()
        runs_.append(
            {
                "id": run_id,
                "org_id": org,
                "workflow_id": wdef.id,
                "workflow_version": start.version,
                "state": RunState.RUNNING,
                "unfinished_jobs": len(wdef.jobs),
                "failed_jobs": 0,
                "cancel_requested": False,
                "created_at_ms": now,
                "finished_at_ms": 0,
                "inputs": None if start.inputs is None else to_json(dict(start.inputs)),
                "request_id": start.request_id,
                "request_digest": start.request_digest,
                "created_by": start.created_by,
                "trigger": start.trigger,
                "attempt": 1,
                "parallel_limit": start.parallel_limit,
                "rollback_on_failure": wdef.rollback == "on_failure",
            }
        )
        shape = _shape(wdef)
        # The run's jobs are listed here rather than one JOB_CREATED row each:
        # a run's creation stays one row of the log however many jobs it has.
        ev.add(
            run_id,
            RunEventType.RUN_CREATED,
            data={
                "created_by": start.created_by,
                "trigger": start.trigger,
                "jobs": list(shape.job_keys),
            },
            workflow_id=wdef.id,
            workflow_version=start.version,
        )
        keys.update(shape.label_keys)
        job_rows.extend(
            {
                **row,
                "org_id": org,
                "run_id": run_id,
                "enqueued_at_ms": now if row["state"] == JobState.QUEUED else 0,
                "parallel_limit": start.parallel_limit,
            }
            for row in shape.rows
        )
        for job_key, key, command in shape.roots:
            ev.add(run_id, RunEventType.JOB_QUEUED, job_key)
            effects.ready[(org, key, command)] += 1
        effects.ready_runs.add(run_id)
    with _sql.pipelined(conn) as batch:
        batch.insert(_INSERT_RUN, runs_)
        batch.insert(_INSERT_JOB, job_rows)
        batch.insert(_INSERT_LABEL_SET, [{"org_id": org, "label_key": k} for k in sorted(keys)])
        ev.flush(batch, effects)
        if also is not None:
            also(batch, runs_)
    with_edges = [
        (run["id"], start.wdef)
        for run, start in zip(runs_, new, strict=True)
        if _shape(start.wdef).has_edges
    ]
    if with_edges:
        ids: dict[tuple[str, str], int] = {
            (run_id, key): job_id
            for run_id, key, job_id in _sql.query(
                conn, _JOB_IDS_OF_RUNS, run_ids=[run_id for run_id, _ in with_edges]
            )
        }
        edge_rows = [
            {
                "parent_id": ids[(run_id, parent)],
                "child_id": ids[(run_id, job.id)],
                "org_id": org,
            }
            for run_id, wdef in with_edges
            for job in wdef.jobs
            for parent in job.depends_on
        ]
        _sql.insert(conn, _INSERT_EDGE, edge_rows)
    for run in runs_:
        # As read back: JSON columns decoded.
        run["inputs"] = None if run["inputs"] is None else from_json(run["inputs"])
    return runs_, effects


def cancel_run(conn: Connection, *, org: str, run_id: str, now: int) -> tuple[bool, Effects]:
    """Cancels every unfinished job of the run (of a rollback under way too:
    its compensations that have not run are cancelled and it ends cancelled);
    False if the run was already over."""
    effects = Effects()
    updated = conn.execute(
        update(runs)
        .where(
            runs.c.id == run_id,
            runs.c.org_id == org,
            runs.c.state.in_((RunState.RUNNING, RunState.ROLLING_BACK)),
        )
        .values(cancel_requested=True)
        .returning(runs.c.created_by, runs.c.trigger, runs.c.state)
    ).first()
    if updated is None:
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
    ev.add(
        run_id,
        RunEventType.RUN_ROLLBACK_FINISHED
        if updated.state == RunState.ROLLING_BACK
        else RunEventType.RUN_FINISHED,
        msg=RunState.CANCELLED,
        data={
            "state": RunState.CANCELLED,
            "created_by": updated.created_by,
            "trigger": updated.trigger,
        },
    )
    with _sql.pipelined(conn) as batch:
        ev.flush(batch, effects)
    return True, effects


__all__ = ["NewRun", "cancel_run", "create_runs"]

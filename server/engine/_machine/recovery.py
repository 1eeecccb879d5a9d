"""Finished runs taken further: retried (the next attempt of the same run)
and rolled back (compensation jobs added to the run)."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, select

from trellis.server.core import _sql
from trellis.server.core._sql import Sql, from_json, to_json
from trellis.server.core.errors import FailedPrecondition, InvalidArgument, NotFound
from trellis.server.engine._machine.common import (
    Effects,
    Events,
    jobs,
    lock_runs,
    runs,
)
from trellis.server.engine._states import ROLLBACK_FROM, JobState, RunEventType, RunState
from trellis.server.engine.definitions import MAX_ID_LENGTH, Backoff, WorkflowDef

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
    if run.state in (RunState.RUNNING, RunState.ROLLING_BACK):
        raise FailedPrecondition(f"run {run_id!r} is {run.state}; only a finished run is retried")
    rows = conn.execute(
        select(
            jobs.c.id,
            jobs.c.key,
            jobs.c.state,
            jobs.c.parents,
            jobs.c.label_key,
            jobs.c.command,
            jobs.c.compensates,
        ).where(jobs.c.run_id == run_id)
    ).all()
    if run.state not in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED) or any(
        r.compensates is not None for r in rows
    ):
        raise FailedPrecondition(f"run {run_id!r} was rolled back; it is not retried")
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
        if state == JobState.QUEUED:
            ev.add(run_id, RunEventType.JOB_QUEUED, key)
            effects.ready[(org, row.label_key, row.command)] += 1
    effects.ready_runs.add(run_id)
    with _sql.pipelined(conn) as batch:
        batch.execute_many(_RESET_JOBS, updates)
        batch.execute(_RESTART_RUN, n=len(redo), run_id=run_id)
        ev.flush(batch, effects)
    return attempt, effects


# The key of a job's compensation: `:` is no character of a job id, so no job
# of the definition has it; a long id is cut and told apart by a digest.
def compensation_key(key: str) -> str:
    if len(key) <= MAX_ID_LENGTH - len(_UNDO):
        return key + _UNDO
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    return f"{key[: MAX_ID_LENGTH - len(_UNDO) - 9]}~{digest}{_UNDO}"


_UNDO = ":undo"
_MAX_POSITION = Sql("SELECT MAX(position) AS p FROM jobs WHERE run_id = :run_id")
_INSERT_EDGES = _sql.Insert(
    "job_edges", {"parent_id": "bigint", "child_id": "bigint", "org_id": "text"}
)
_JOB_IDS = Sql('SELECT "key", id FROM jobs WHERE run_id = :run_id')
_START_ROLLBACK = Sql(
    f"""UPDATE runs SET state = '{RunState.ROLLING_BACK}', unfinished_jobs = :n,
        failed_jobs = 0, finished_at_ms = 0, rollback_partial = :partial
    WHERE id = :run_id"""
)
_INSERT_COMPENSATION = _sql.Insert(
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
        "compensates": "text",
    },
    constants={
        "attempt": "0",
        "ready_at_ms": "0",
        "started_at_ms": "0",
        "finished_at_ms": "0",
        "base_attempt": "0",
        "lost_leases": "0",
    },
)


def start_rollback(
    conn: Connection,
    *,
    org: str,
    run: Any,
    wdef: WorkflowDef,
    job_keys: Sequence[str] = (),
    now: int,
    ev: Events,
    effects: Effects,
) -> int:
    """Adds the compensation jobs of a rollback of ``run`` (a row with id,
    workflow_id and parallel_limit; the caller holds its lock) and moves it
    to rolling back; returns how many there are (0: nothing to compensate,
    nothing changed).

    The compensated jobs are the succeeded ones whose definition has a
    compensation, not compensated before; or ``job_keys``, each of which
    must be one. A job's compensation waits for the compensations of the
    nearest compensated jobs among its descendants, and has an edge from the
    job itself, so its claim carries the job's outputs as upstream outputs.
    """
    rows = conn.execute(
        select(
            jobs.c.key,
            jobs.c.state,
            jobs.c.parents,
            jobs.c.label_key,
            jobs.c.timeout_secs,
            jobs.c.env,
            jobs.c.compensates,
        ).where(jobs.c.run_id == run.id)
    ).all()
    by_key = {r.key: r for r in rows if r.compensates is None}
    undone = {r.compensates for r in rows if r.compensates is not None}
    defs = {j.id: j for j in wdef.jobs}
    candidates = [
        k
        for k, r in by_key.items()
        if r.state == JobState.SUCCEEDED and k in defs and defs[k].compensate and k not in undone
    ]
    if job_keys:
        for k in job_keys:
            if k not in by_key:
                raise InvalidArgument(f"job_ids: run {run.id!r} has no job {k!r}")
            if k not in defs or not defs[k].compensate:
                raise InvalidArgument(f"job_ids: job {k!r} has no compensation")
            if k in undone:
                raise FailedPrecondition(f"job {k!r} was compensated already")
            if by_key[k].state != JobState.SUCCEEDED:
                raise FailedPrecondition(f"job {k!r} did not succeed; there is nothing to undo")
        chosen = sorted(set(job_keys))
    else:
        chosen = sorted(candidates)
    if not chosen:
        return 0
    partial = set(chosen) != set(candidates)
    children: dict[str, list[str]] = defaultdict(list)
    for k, r in by_key.items():
        for p in r.parents:
            children[p].append(k)
    picked = set(chosen)
    waits: dict[str, list[str]] = {}
    for k in chosen:
        # The nearest compensated descendants, through jobs that are not.
        found: set[str] = set()
        seen: set[str] = set()
        frontier = list(children[k])
        while frontier:
            c = frontier.pop()
            if c in seen:
                continue
            seen.add(c)
            if c in picked:
                found.add(c)
            else:
                frontier.extend(children[c])
        waits[k] = sorted(found)
    top = _sql.query(conn, _MAX_POSITION, run_id=run.id)[0].p or 0
    new_rows = []
    for i, k in enumerate(sorted(chosen, key=lambda key: (len(waits[key]), key))):
        job, r = defs[k], by_key[k]
        state = JobState.PENDING if waits[k] else JobState.QUEUED
        new_rows.append(
            {
                "org_id": org,
                "run_id": run.id,
                "workflow_id": run.workflow_id,
                "key": compensation_key(k),
                "position": top + 1 + i,
                "name": f"{job.name} (compensation)",
                "command": job.compensate,
                "label_key": r.label_key,
                "state": state,
                "max_retries": job.compensate_retries,
                "backoff": to_json(Backoff().to_json()),
                "timeout_secs": r.timeout_secs,
                "env": to_json(r.env),
                "parents": to_json([compensation_key(w) for w in waits[k]] + [k]),
                "pending_parents": len(waits[k]),
                "enqueued_at_ms": now if state == JobState.QUEUED else 0,
                "parallel_limit": run.parallel_limit,
                "compensates": k,
            }
        )
        if state == JobState.QUEUED:
            ev.add(run.id, RunEventType.JOB_QUEUED, compensation_key(k))
            effects.ready[(org, r.label_key, job.compensate)] += 1
    effects.ready_runs.add(run.id)
    _sql.insert(conn, _INSERT_COMPENSATION, new_rows)
    ids = {key: job_id for key, job_id in _sql.query(conn, _JOB_IDS, run_id=run.id)}
    edge_rows = []
    for k in chosen:
        mine = ids[compensation_key(k)]
        edge_rows.append({"parent_id": ids[k], "child_id": mine, "org_id": org})
        edge_rows.extend(
            {"parent_id": ids[compensation_key(w)], "child_id": mine, "org_id": org}
            for w in waits[k]
        )
    _sql.insert(conn, _INSERT_EDGES, edge_rows)
    ev.add(run.id, RunEventType.RUN_ROLLBACK_STARTED, msg=", ".join(chosen))
    _sql.execute(conn, _START_ROLLBACK, n=len(chosen), partial=partial, run_id=run.id)
    return len(chosen)


_RUN_TO_ROLL_BACK = Sql(
    """SELECT id, org_id, state, workflow_id, workflow_version, parallel_limit FROM runs
    WHERE id = :run_id"""
)
_STORED_DEFINITION = Sql(
    """SELECT definition FROM workflow_versions
    WHERE org_id = :org AND workflow_id = :workflow_id AND version = :version"""
)
_FAILED_TO_ROLL_BACK = Sql(
    f"""SELECT id, org_id, state, workflow_id, workflow_version, parallel_limit FROM runs
    WHERE id IN_LIST(:ids) AND state = '{RunState.FAILED}' AND finished_at_ms = :now
        AND rollback_on_failure
    ORDER BY id"""
)


def stored_definition(conn: Connection, org: str, run: Any) -> WorkflowDef:
    """The definition of the version ``run`` is of."""
    (found,) = _sql.query(
        conn,
        _STORED_DEFINITION,
        org=org,
        workflow_id=run.workflow_id,
        version=run.workflow_version,
    )
    return WorkflowDef.from_json(from_json(found.definition))


def rollback_run(
    conn: Connection,
    *,
    is_pg: bool,
    org: str,
    run_id: str,
    job_keys: Sequence[str],
    now: int,
    definition: Callable[[Any], WorkflowDef] | None = None,
) -> Effects:
    """Starts the rollback a caller asked for (see ``start_rollback``)."""
    with _sql.pipelined(conn) as batch:
        lock_runs(batch, is_pg, [run_id])
    found = _sql.query(conn, _RUN_TO_ROLL_BACK, run_id=run_id)
    if not found or found[0].org_id != org:
        raise NotFound(f"run {run_id!r} not found")
    run = found[0]
    if run.state not in ROLLBACK_FROM:
        raise FailedPrecondition(
            f"run {run_id!r} is {run.state}; a rollback takes a run that succeeded, failed,"
            " was cancelled or was partly rolled back"
        )
    wdef = definition(run) if definition else stored_definition(conn, org, run)
    effects = Effects()
    ev = Events(org, now)
    if not start_rollback(
        conn, org=org, run=run, wdef=wdef, job_keys=job_keys, now=now, ev=ev, effects=effects
    ):
        raise FailedPrecondition(f"run {run_id!r} has no succeeded job left to compensate")
    with _sql.pipelined(conn) as batch:
        ev.flush(batch, effects)
    return effects


def failed_to_roll_back(batch: _sql.Batch, run_ids: Iterable[str], now: int) -> _sql.Pending:
    """Asks, in ``batch``, which of these runs ended failed in this transaction
    (``now``) and roll back on failure. A run ends failed in the transaction
    that finishes its last job, which may be a success after an earlier final
    failure: every run whose jobs the transaction finished is asked."""
    return batch.query(_FAILED_TO_ROLL_BACK, ids=sorted(set(run_ids)), now=now)


def roll_back_failed(
    conn: Connection, *, org: str, runs: Iterable[Any], now: int, ev: Events, effects: Effects
) -> None:
    """Starts the rollbacks of ``runs`` (rows of ``failed_to_roll_back``; their
    locks are held)."""
    for run in runs:
        start_rollback(
            conn,
            org=org,
            run=run,
            wdef=stored_definition(conn, org, run),
            now=now,
            ev=ev,
            effects=effects,
        )


__all__ = [
    "compensation_key",
    "failed_to_roll_back",
    "retry_run",
    "roll_back_failed",
    "rollback_run",
    "start_rollback",
    "stored_definition",
]

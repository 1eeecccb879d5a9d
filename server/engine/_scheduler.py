"""The job state machine, in SQL.

Every function here runs inside one transaction handed to it by the service
layer and returns the wake-ups (``Effects``) to fire once that transaction has
committed. Nothing here sleeps, waits or talks to the network.

Job states: pending -> queued -> running -> succeeded | failed, with
running -> queued again for a retry, and skipped / cancelled as the other
terminal states. A lease is active until it is completed, failed, expired
(lost: its worker stopped heartbeating), timed out, cancelled or released
(handed back before it reached its worker); only an active, unexpired lease
may change its job.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, literal_column, select, update
from sqlalchemy.sql.elements import ColumnClause

from trellis.server.core import _sql
from trellis.server.core._sql import Sql, from_json, to_json
from trellis.server.core.errors import LeaseConflict
from trellis.server.core.models import (
    JobEdgeRow,
    JobRow,
    LeaseRow,
    LogChunkRow,
    RunEventRow,
    RunRow,
    WorkerRow,
    table,
)
from trellis.server.engine._capabilities import Capabilities, Commands, commands_of, required
from trellis.server.engine.definitions import Backoff, WorkflowDef

jobs = table(JobRow)
edges = table(JobEdgeRow)
leases = table(LeaseRow)
runs = table(RunRow)
events = table(RunEventRow)
workers = table(WorkerRow)
log_chunks = table(LogChunkRow)

TERMINAL = frozenset({"succeeded", "failed", "skipped", "cancelled"})
NO_DEADLINE = 2**62
# How long after a cancel the cancelled job's worker may still push logs.
CANCEL_LOG_GRACE_MS = 60_000
# The state that the expiry index covers, as an SQL literal rather than a bound
# parameter: PostgreSQL's generic plans for prepared statements (psycopg
# prepares repeated ones) can only use a partial index whose predicate the
# query states literally (the plain SQL of the claim spells 'queued' out too).
ACTIVE: ColumnClause[str] = literal_column("'active'")
# Large IN lists are split so that no statement exceeds SQLite's variable cap.
CHUNK = 500


def topic_worker(org: str, worker_id: str) -> str:
    return f"leases:{org}:{worker_id}"


def topic_run(run_id: str) -> str:
    return f"run:{run_id}"


def topic_logs(job_id: int) -> str:
    return f"logs:{job_id}"


@dataclass
class Effects:
    """Wake-ups to fire after commit."""

    topics: set[str] = field(default_factory=set)
    # (org, label key, command) -> jobs that became claimable
    ready: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    # (epoch ms at which a delayed job becomes claimable, org, label key, command)
    timers: list[tuple[int, str, str, str]] = field(default_factory=list)
    # The runs in which ``ready`` jobs are: ``dispatch`` looks there.
    ready_runs: set[str] = field(default_factory=set)
    # The earliest expiry of the leases granted (for the reaper's alarm).
    lease_expiry_ms: int = NO_DEADLINE

    def merge(self, other: Effects) -> None:
        """Adds the wake-ups of ``other`` (of a transaction run with this one)."""
        self.topics |= other.topics
        self.ready.update(other.ready)
        self.timers.extend(other.timers)
        self.ready_runs |= other.ready_runs
        self.lease_expiry_ms = min(self.lease_expiry_ms, other.lease_expiry_ms)


def new_id() -> str:
    return uuid.uuid4().hex


def label_key(labels: Iterable[str]) -> str:
    return ",".join(sorted(set(labels)))


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


_INSERT_EVENT = _sql.Insert(
    "run_events",
    {
        "org_id": "text",
        "run_id": "text",
        "type": "text",
        "job_key": "text",
        "attempt": "integer",
        "time_ms": "bigint",
        "message": "text",
    },
)


class _Events:
    """Run events collected during a transaction and written in one batch."""

    def __init__(self, org: str, now: int) -> None:
        self.org = org
        self.now = now
        self.rows: list[dict[str, Any]] = []
        self.runs: set[str] = set()

    def add(
        self, run_id: str, type_: str, job_key: str = "", attempt: int = 0, msg: str = ""
    ) -> None:
        self.rows.append(
            {
                "org_id": self.org,
                "run_id": run_id,
                "type": type_,
                "job_key": job_key,
                "attempt": attempt,
                "time_ms": self.now,
                "message": msg,
            }
        )
        self.runs.add(run_id)

    def flush(self, batch: _sql.Batch, effects: Effects) -> None:
        if self.rows:
            batch.insert(_INSERT_EVENT, self.rows)
            effects.topics.update(topic_run(r) for r in self.runs)
            self.rows = []


# --------------------------------------------------------------------------- runs


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
        "state": "running",
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
                "state": "queued" if is_root else "pending",
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
    ev = _Events(org, now)
    ev.add(run_id, "RUN_STARTED")
    for job in wdef.jobs:
        if not job.depends_on:
            ev.add(run_id, "JOB_QUEUED", job.id)
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
        .where(runs.c.id == run_id, runs.c.org_id == org, runs.c.state == "running")
        .values(cancel_requested=True)
    ).rowcount
    if not updated:
        return False, effects
    cancelled = conn.execute(
        update(jobs)
        .where(jobs.c.run_id == run_id, jobs.c.state.in_(("pending", "queued", "running")))
        .values(state="cancelled", finished_at_ms=now)
        .returning(jobs.c.id, jobs.c.key, jobs.c.attempt)
    ).all()
    lost = conn.execute(
        update(leases)
        .where(leases.c.run_id == run_id, leases.c.state == "active")
        .values(state="cancelled", finished_at_ms=now)
        .returning(leases.c.worker_id)
    ).all()
    effects.topics.update(topic_worker(org, w) for (w,) in lost)
    effects.topics.update(topic_logs(job_id) for job_id, _, _ in cancelled)
    ev = _Events(org, now)
    for _, key, attempt in cancelled:
        ev.add(run_id, "JOB_CANCELLED", key, attempt)
    conn.execute(
        update(runs)
        .where(runs.c.id == run_id)
        .values(
            unfinished_jobs=runs.c.unfinished_jobs - len(cancelled),
            state="cancelled",
            finished_at_ms=now,
        )
    )
    ev.add(run_id, "RUN_FINISHED", msg="cancelled")
    with _sql.pipelined(conn) as batch:
        ev.flush(batch, effects)
    return True, effects


# --------------------------------------------------------------------------- claims


@dataclass(frozen=True)
class Claimed:
    """A job handed to a worker under a fresh lease."""

    job: Mapping[Any, Any]
    lease_id: str
    ttl_secs: int
    granted_at_ms: int
    expires_at_ms: int
    upstream_outputs: Mapping[str, Mapping[str, str]]


_LABEL_KEYS = Sql("SELECT label_key FROM label_sets WHERE org_id = :org")
_UPSERT_WORKER = Sql(
    """INSERT INTO workers (org_id, worker_id, labels, capabilities, registered_at_ms,
        last_heartbeat_ms)
    VALUES (:org, :worker, :labels, :capabilities, :now, :now)
    ON CONFLICT (org_id, worker_id) DO UPDATE
    SET last_heartbeat_ms = excluded.last_heartbeat_ms, labels = excluded.labels,
        capabilities = excluded.capabilities
    WHERE workers.last_heartbeat_ms < :stale_before
        OR CAST(workers.labels AS TEXT) <> CAST(excluded.labels AS TEXT)
        OR COALESCE(CAST(workers.capabilities AS TEXT), 'null')
            <> CAST(excluded.capabilities AS TEXT)"""
)
# The claim picks the oldest claimable jobs and marks them running in one
# statement; on PostgreSQL, rows another claimer holds are skipped, not waited on.
_CLAIM = """UPDATE jobs SET state = 'running', started_at_ms = :now
    WHERE id IN (
        SELECT id FROM jobs
        WHERE org_id = :org AND state = 'queued' AND label_key {keys} AND ready_at_ms <= :now
        ORDER BY id LIMIT :n FOR_UPDATE_SKIP_LOCKED)
    RETURNING id, run_id, workflow_id, "key", name, command, label_key, attempt,
        max_retries, backoff, timeout_secs, env, parents, enqueued_at_ms, ready_at_ms"""
# A worker that covers one label set (the usual case: most jobs need none) walks
# the claimable index in id order and stops at the first rows; with several,
# the candidates of all its sets are sorted. A worker that runs only its
# handlers' commands skips the other jobs; one handler (the usual case) keeps
# the statement free of lists, so that PostgreSQL prepares it.
_CLAIMS = {
    (many_sets, commands): Sql(_CLAIM.format(keys=keys + only))
    for many_sets, keys in ((False, "= :key"), (True, "IN_LIST(:keys)"))
    for commands, only in (
        ("any", ""),
        ("one", " AND command = :command"),
        ("some", " AND command IN_LIST(:commands)"),
    )
}
# A claim among the jobs of some runs (those a transaction just made ready).
_DISPATCH = Sql(_CLAIM.format(keys="= :key AND command = :command AND run_id IN_LIST(:runs)"))
_INSERT_LEASE = _sql.Insert(
    "leases",
    {
        "id": "text",
        "org_id": "text",
        "job_id": "bigint",
        "run_id": "text",
        "workflow_id": "text",
        "job_key": "text",
        "worker_id": "text",
        "attempt": "integer",
        "ttl_secs": "integer",
        "granted_at_ms": "bigint",
        "expires_at_ms": "bigint",
        "deadline_ms": "bigint",
        "owner": "text",
    },
    constants={"state": "'active'", "finished_at_ms": "0"},
)
_LOCK_RUNS = Sql("SELECT id FROM runs WHERE id IN_LIST(:ids) ORDER BY id FOR_UPDATE")
_LOCK_RUNS_OF_LEASES = Sql(
    """SELECT id FROM runs WHERE id IN (SELECT run_id FROM leases WHERE id IN_LIST(:ids))
    ORDER BY id FOR_UPDATE"""
)
_UPSTREAM = Sql(
    """SELECT e.child_id, j."key", j.outputs FROM job_edges e JOIN jobs j ON j.id = e.parent_id
    WHERE e.child_id IN_LIST(:ids)"""
)


def eligible_label_keys(known: Iterable[str], labels: Sequence[str]) -> list[str]:
    """Which of the ``known`` label sets (as keys) a worker with ``labels`` satisfies."""
    have = set(labels)
    return [k for k in known if required(k) <= have]


def touch_worker(
    batch: _sql.Batch,
    *,
    org: str,
    worker_id: str,
    labels: Sequence[str],
    capabilities: Capabilities | None,
    now: int,
    fresh_ms: int = 0,
) -> None:
    """Records that the worker was seen, with its labels and capabilities.

    A worker seen within the last ``fresh_ms`` that says the same is left
    alone, so a busy claim loop does not rewrite its row on every claim.
    """
    # PostgreSQL's json type has no equality: the upsert compares the stored
    # texts, which one serializer wrote from sorted lists.
    batch.execute(
        _UPSERT_WORKER,
        org=org,
        worker=worker_id,
        labels=to_json(sorted(set(labels))),
        capabilities=to_json(capabilities.to_json() if capabilities else None),
        now=now,
        stale_before=now - fresh_ms if fresh_ms else now + 1,
    )


@dataclass(frozen=True)
class ClaimAsk:
    """One claimer's request: up to ``max_jobs`` ready jobs matching
    ``labels`` and ``capabilities`` (none: any command), leased to
    ``worker_id`` for ``ttl_secs`` on behalf of the principal ``owner``."""

    org: str
    worker_id: str
    labels: tuple[str, ...]
    ttl_secs: int
    max_jobs: int
    owner: str
    capabilities: Capabilities | None = None


def _claim_statement(keys: Sequence[str], commands: Commands) -> tuple[Sql, dict[str, Any]]:
    """The claim of jobs of the label sets ``keys`` running one of ``commands``."""
    params: dict[str, Any] = {"key": keys[0]} if len(keys) == 1 else {"keys": list(keys)}
    if commands is None:
        kind = "any"
    elif len(commands) == 1:
        kind, params["command"] = "one", next(iter(commands))
    else:
        kind, params["commands"] = "some", sorted(commands)
    return _CLAIMS[(len(keys) > 1, kind)], params


def claim(
    conn: Connection, *, is_pg: bool, asks: Sequence[ClaimAsk], now: int
) -> tuple[list[list[Claimed]], Effects]:
    """Claims ready jobs for each of ``asks``, oldest first; returns each
    ask's leases, in the order of ``asks``.

    Asks of one org that match the same label sets and run the same commands
    draw from one statement (the first ask takes the oldest jobs), and all
    leases of an org are granted together, so a group of claimers costs a few
    statements, not a few per claimer.
    """
    effects = Effects()
    orgs = sorted({a.org for a in asks})
    with _sql.pipelined(conn) as batch:
        for a in asks:
            touch_worker(
                batch,
                org=a.org,
                worker_id=a.worker_id,
                labels=a.labels,
                capabilities=a.capabilities,
                now=now,
                fresh_ms=1000,
            )
        known = {org: batch.query(_LABEL_KEYS, org=org) for org in orgs}
    draws: dict[tuple[str, tuple[str, ...], Commands], list[int]] = defaultdict(list)
    for i, a in enumerate(asks):
        keys = tuple(eligible_label_keys((k for (k,) in known[a.org].rows), a.labels))
        commands = commands_of(a.capabilities)
        if keys and a.max_jobs > 0 and commands != frozenset():
            draws[(a.org, keys, commands)].append(i)
    granted: dict[str, list[tuple[Any, int]]] = defaultdict(list)
    for (org, keys, commands), takers in draws.items():
        n = sum(asks[i].max_jobs for i in takers)
        statement, params = _claim_statement(keys, commands)
        rows = _sql.query(conn, statement, org=org, now=now, n=n, **params)
        rows.sort(key=lambda r: r.id)
        taken = 0
        for i in takers:
            share = rows[taken : taken + asks[i].max_jobs]
            taken += len(share)
            granted[org].extend((row, i) for row in share)
    out: list[list[Claimed]] = [[] for _ in asks]
    # Orgs in order, so that two groups lock the runs they share in one order.
    for org in sorted(granted):
        pairs = granted[org]
        if not pairs:
            continue
        claimed = _grant(
            conn,
            is_pg=is_pg,
            org=org,
            rows=[row for row, _ in pairs],
            to=[(asks[i].worker_id, asks[i].ttl_secs, asks[i].owner) for _, i in pairs],
            now=now,
            effects=effects,
            lock_runs=True,
        )
        for lease, (_, i) in zip(claimed, pairs, strict=True):
            out[i].append(lease)
    return out, effects


def _grant(
    conn: Connection,
    *,
    is_pg: bool,
    org: str,
    rows: Sequence[Any],
    to: Sequence[tuple[str, int, str]],
    now: int,
    effects: Effects,
    lock_runs: bool,
) -> list[Claimed]:
    """Leases the claimed job ``rows`` (already marked running), row ``i`` to
    the worker, TTL and owning principal ``to[i]``."""
    decoded = [_decoded(r) for r in rows]
    upstream = _upstream_outputs(conn, [j["id"] for j in decoded if j["parents"]])
    claimed: list[Claimed] = []
    lease_rows = []
    ev = _Events(org, now)
    for r, job, (worker_id, ttl_secs, owner) in zip(rows, decoded, to, strict=True):
        ev.add(r.run_id, "JOB_STARTED", r.key, r.attempt)
        deadline = now + r.timeout_secs * 1000 if r.timeout_secs else NO_DEADLINE
        expires = min(now + ttl_secs * 1000, deadline)
        lease_id = new_id()
        lease_rows.append(
            {
                "id": lease_id,
                "org_id": org,
                "job_id": r.id,
                "run_id": r.run_id,
                "workflow_id": r.workflow_id,
                "job_key": r.key,
                "worker_id": worker_id,
                "attempt": r.attempt,
                "ttl_secs": ttl_secs,
                "granted_at_ms": now,
                "expires_at_ms": expires,
                "deadline_ms": deadline,
                "owner": owner,
            }
        )
        claimed.append(
            Claimed(
                job=job,
                lease_id=lease_id,
                ttl_secs=ttl_secs,
                granted_at_ms=now,
                expires_at_ms=expires,
                upstream_outputs=upstream.get(r.id, {}),
            )
        )
    with _sql.pipelined(conn) as batch:
        if lock_runs:
            # The runs are locked after the jobs here, while cancel locks its
            # run first: the one cycle this allows (a cancel racing a claim
            # of the same run) is broken by PostgreSQL's deadlock detector and
            # the retry in the service layer.
            _lock_runs(batch, is_pg, {r.run_id for r in rows})
        batch.insert(_INSERT_LEASE, lease_rows)
        ev.flush(batch, effects)
    effects.lease_expiry_ms = min([effects.lease_expiry_ms, *(c.expires_at_ms for c in claimed)])
    return claimed


def dispatch(
    conn: Connection,
    *,
    is_pg: bool,
    org: str,
    key: str,
    command: str,
    runs: Iterable[str],
    to: Sequence[tuple[str, int, str]],
    now: int,
    effects: Effects,
) -> list[Claimed]:
    """Leases ready jobs of label set ``key`` running ``command`` in ``runs``
    to waiting workers (that can run them), within the transaction that made
    them ready: one job per entry of ``to`` (worker id, TTL, owner), as far as
    there are jobs; returns them in that order.

    The caller holds the locks of ``runs`` (or created them), so no run lock
    is taken here, and jobs other claimers hold are skipped, never waited on.
    """
    rows = _sql.query(
        conn,
        _DISPATCH,
        org=org,
        key=key,
        command=command,
        runs=sorted(runs),
        now=now,
        n=len(to),
    )
    if not rows:
        return []
    rows.sort(key=lambda r: r.id)
    effects.ready[(org, key, command)] -= len(rows)
    return _grant(
        conn,
        is_pg=is_pg,
        org=org,
        rows=rows,
        to=to[: len(rows)],
        now=now,
        effects=effects,
        lock_runs=False,
    )


_RELEASE_LEASES = Sql(
    """UPDATE leases SET state = 'released', finished_at_ms = :now
    WHERE id IN_LIST(:ids) AND org_id = :org AND state = 'active'
    RETURNING job_id"""
)
_REQUEUE_JOBS = Sql(
    """UPDATE jobs SET state = 'queued', started_at_ms = 0
    WHERE id IN_LIST(:ids) AND state = 'running'
    RETURNING run_id, "key", label_key, command"""
)


def release(
    conn: Connection, *, is_pg: bool, org: str, lease_ids: Sequence[str], now: int
) -> Effects:
    """Hands back leases that never reached their worker: each job is queued
    again as it was, without spending an attempt."""
    effects = Effects()
    ids = sorted(lease_ids)
    with _sql.pipelined(conn) as batch:
        _lock_runs_of_leases(batch, is_pg, ids)
        released = batch.query(_RELEASE_LEASES, ids=ids, org=org, now=now)
    job_ids = sorted(job_id for (job_id,) in released.rows)
    if not job_ids:
        return effects
    ev = _Events(org, now)
    for run_id, key, lk, command in _sql.query(conn, _REQUEUE_JOBS, ids=job_ids):
        ev.add(run_id, "JOB_QUEUED", key, msg="handed back undelivered")
        effects.ready[(org, lk, command)] += 1
    with _sql.pipelined(conn) as batch:
        ev.flush(batch, effects)
    return effects


def _decoded(row: Any) -> dict[str, Any]:
    """A claimed job's row as a mapping, its JSON columns decoded."""
    job: dict[str, Any] = row._asdict()
    for col in ("backoff", "env", "parents"):
        job[col] = from_json(job[col])
    return job


def _lock_runs(batch: _sql.Batch, is_pg: bool, run_ids: Iterable[str]) -> None:
    """Serialises the writers of a run on PostgreSQL.

    Event ids then commit in order within a run, so a follower resuming after
    an id never skips one; and two completions never update the same
    children in opposite orders. Runs are locked in id order.
    """
    if is_pg:
        ids = sorted(run_ids)
        if ids:
            batch.execute(_LOCK_RUNS, ids=ids)


def _lock_runs_of_leases(batch: _sql.Batch, is_pg: bool, lease_ids: Sequence[str]) -> None:
    """``_lock_runs`` for the runs of these leases."""
    if is_pg and lease_ids:
        batch.execute(_LOCK_RUNS_OF_LEASES, ids=lease_ids)


def _upstream_outputs(
    conn: Connection, child_ids: Sequence[int]
) -> dict[int, dict[str, dict[str, str]]]:
    out: dict[int, dict[str, dict[str, str]]] = defaultdict(dict)
    if child_ids:
        for child_id, key, outputs in _sql.query(conn, _UPSTREAM, ids=child_ids):
            out[child_id][key] = dict(from_json(outputs) or {})
    return out


# --------------------------------------------------------------------------- leases


_LEASE_FOR_HEARTBEAT = Sql(
    """SELECT state, expires_at_ms, deadline_ms, ttl_secs, worker_id FROM leases
    WHERE id = :lease AND org_id = :org AND owner = :owner"""
)
_EXTEND_LEASE = Sql(
    """UPDATE leases SET expires_at_ms = :expires, ttl_secs = :ttl
    WHERE id = :lease AND state = 'active' AND expires_at_ms > :now"""
)
_WORKER_SEEN = Sql(
    """UPDATE workers SET last_heartbeat_ms = :now
    WHERE org_id = :org AND worker_id = :worker AND last_heartbeat_ms < :stale_before"""
)


def heartbeat(
    conn: Connection, *, org: str, owner: str, lease_id: str, ttl_secs: int | None, now: int
) -> tuple[int, bool]:
    """Extends a lease; returns (expires_at_ms, cancelled).

    A cancelled job's lease answers ``cancelled`` instead of failing, so the
    worker learns why it should stop. Raises ``LeaseConflict`` otherwise.
    """
    found = _sql.query(conn, _LEASE_FOR_HEARTBEAT, lease=lease_id, org=org, owner=owner)
    if not found:
        raise LeaseConflict(f"unknown lease {lease_id!r}")
    row = found[0]
    if row.state == "cancelled":
        return int(row.expires_at_ms), True
    _check_active(row.state, row.expires_at_ms, now)
    ttl = ttl_secs if ttl_secs else row.ttl_secs
    expires = min(now + ttl * 1000, row.deadline_ms)
    done = _sql.execute(conn, _EXTEND_LEASE, expires=expires, ttl=ttl, lease=lease_id, now=now)
    if not done:
        raise LeaseConflict(f"lease {lease_id!r} is no longer active")
    _sql.execute(
        conn, _WORKER_SEEN, now=now, org=org, worker=row.worker_id, stale_before=now - 1000
    )
    return int(expires), False


def _check_active(state: str, expires_at_ms: int, now: int) -> None:
    if state == "active" and expires_at_ms > now:
        return
    reason = {
        "completed": "the job was already completed under this lease",
        "failed": "a failure was already reported under this lease",
        "cancelled": "the job was cancelled",
        "expired": "the lease expired",
        "timed_out": "the job's timeout has passed",
        "released": "the lease was handed back",
    }.get(state, "the lease expired")
    raise LeaseConflict(reason)


@dataclass(frozen=True)
class Result:
    """A worker's report on one lease, or the reaper's judgement of one that
    expired: ``lost`` (its worker stopped heartbeating; ``retryable`` says
    whether the job is queued again) or ``timed_out`` (its job's timeout)."""

    lease_id: str
    ok: bool
    outputs: Mapping[str, str] = field(default_factory=dict)
    error: str = ""
    retryable: bool = False
    lost: bool = False
    timed_out: bool = False

    @property
    def lease_state(self) -> str:
        """The state the lease ends in."""
        if self.ok:
            return "completed"
        return "expired" if self.lost else "timed_out" if self.timed_out else "failed"


@dataclass(frozen=True)
class Verdict:
    """How one report was judged: ``None`` error means applied."""

    lease_id: str
    error: str | None = None
    will_retry: bool = False
    delayed_until_ms: int = 0


_LEASE_COLS = (
    leases.c.id,
    leases.c.job_id,
    leases.c.run_id,
    leases.c.worker_id,
    leases.c.state,
    leases.c.expires_at_ms,
    leases.c.deadline_ms,
    leases.c.attempt,
    jobs.c.key,
    jobs.c.state.label("job_state"),
    jobs.c.label_key,
    jobs.c.command,
    jobs.c.max_retries,
    jobs.c.lost_leases,
    jobs.c.backoff,
    jobs.c.timeout_secs,
)


# The org is checked on the rows found, not in the WHERE clause: given both,
# SQLite walks the org's index (every lease the org ever had) instead of
# looking the ids up.
_REPORTED_LEASES = Sql(
    """SELECT l.id, l.org_id, l.owner, l.job_id, l.run_id, l.worker_id, l.state, l.expires_at_ms,
        l.deadline_ms, l.attempt, j."key", j.state AS job_state, j.label_key, j.command,
        j.max_retries, j.lost_leases, j.backoff, j.timeout_secs
    FROM leases l JOIN jobs j ON j.id = l.job_id
    WHERE l.id IN_LIST(:ids) FOR_UPDATE_OF_LEASES"""
)


def report_results(
    conn: Connection,
    *,
    is_pg: bool,
    org: str,
    reports: Sequence[tuple[str, Result]],
    now: int,
) -> tuple[list[Verdict], Effects]:
    """Applies completions and failures, each ``(owner, result)``: the
    result reported by the principal ``owner``. Each is judged on its own.

    A stale, expired, finished or unknown lease changes nothing; the second of
    two reports for one lease (in one batch or across concurrent batches)
    finds the lease no longer active. A lease of another org or of another
    principal than its reporter is unknown.
    """
    ids = sorted({res.lease_id for _, res in reports})
    with _sql.pipelined(conn) as batch:
        _lock_runs_of_leases(batch, is_pg, ids)
        reported = batch.query(_REPORTED_LEASES, ids=ids)
    found = {row.id: row for row in reported.rows if row.org_id == org}
    verdicts: list[Verdict] = []
    done: list[tuple[Any, Result]] = []
    seen: set[str] = set()
    for owner, res in reports:
        lease = found.get(res.lease_id)
        if lease is None or lease.owner != owner:
            verdicts.append(Verdict(res.lease_id, f"unknown lease {res.lease_id!r}"))
            continue
        if res.lease_id in seen:
            verdicts.append(Verdict(res.lease_id, "a result was already reported under this lease"))
            continue
        try:
            _check_active(lease.state, lease.expires_at_ms, now)
        except LeaseConflict as exc:
            verdicts.append(Verdict(res.lease_id, str(exc)))
            continue
        seen.add(res.lease_id)
        done.append((lease, res))
        verdicts.append(Verdict(res.lease_id))
    effects = Effects()
    if not done:
        return verdicts, effects
    outcomes = _apply(conn, is_pg=is_pg, org=org, items=done, now=now, effects=effects)
    return [outcomes.get(v.lease_id, v) if v.error is None else v for v in verdicts], effects


_LEASE_LOST = "lease expired: the worker stopped heartbeating"
_NEXT_EXPIRY = Sql("SELECT min(expires_at_ms) FROM leases WHERE state = 'active'")


def next_expiry(conn: Connection) -> int | None:
    """When the earliest active lease expires (epoch ms); None without one.

    One look-up in the index of active leases by expiry.
    """
    (earliest,) = _sql.scalars(conn, _NEXT_EXPIRY)
    return None if earliest is None else int(earliest)


def _lost(row: Any, max_lost_leases: int) -> Result:
    """The judgement of a lease whose worker stopped heartbeating: the job
    is queued again, without spending a retry, until it has lost more than
    ``max_lost_leases`` leases."""
    if row.lost_leases < max_lost_leases:
        return Result(row.id, ok=False, error=_LEASE_LOST, retryable=True, lost=True)
    n = row.lost_leases + 1
    bound = (
        f"a job is queued again after at most {max_lost_leases}"
        if max_lost_leases
        else "lost leases are not queued again"
    )
    error = f"{_LEASE_LOST}; the job's lease was lost {n} time{'s' * (n != 1)}, and {bound}"
    return Result(row.id, ok=False, error=error, lost=True)


def reap(
    conn: Connection, *, is_pg: bool, now: int, max_lost_leases: int, limit: int = 500
) -> tuple[int, Effects]:
    """Ends the leases that have expired.

    A lease that ran into its job's timeout is a failed attempt, retried
    while the job has retries left. Any other expired lease is lost (see
    ``_lost``). A lease already ended by another replica is left alone.
    """
    expired = select(leases.c.id).where(leases.c.state == ACTIVE, leases.c.expires_at_ms <= now)
    ids = sorted(conn.execute(expired.order_by(leases.c.expires_at_ms).limit(limit)).scalars())
    if not ids:
        return 0, Effects()
    with _sql.pipelined(conn) as batch:
        _lock_runs_of_leases(batch, is_pg, ids)
    q = (
        select(*_LEASE_COLS, leases.c.org_id)
        .join(jobs, jobs.c.id == leases.c.job_id)
        .where(leases.c.id.in_(ids), leases.c.state == "active", leases.c.expires_at_ms <= now)
    )
    if is_pg:
        q = q.with_for_update(of=leases)
    rows = conn.execute(q).all()
    effects = Effects()
    by_org: dict[str, list[tuple[Any, Result]]] = defaultdict(list)
    for row in rows:
        # A lease never outlives its deadline, so one that reached it ran
        # out of time (whether or not its worker was still alive).
        if row.expires_at_ms >= row.deadline_ms:
            err = f"timed out after {row.timeout_secs} s"
            res = Result(row.id, ok=False, error=err, retryable=True, timed_out=True)
        else:
            res = _lost(row, max_lost_leases)
        by_org[row.org_id].append((row, res))
    for org, items in by_org.items():
        _apply(conn, is_pg=is_pg, org=org, items=items, now=now, effects=effects)
    return len(rows), effects


_COMPLETE_LEASES = Sql(
    "UPDATE leases SET state = 'completed', finished_at_ms = :now WHERE id IN_LIST(:ids)"
)
_END_LEASE = Sql(
    "UPDATE leases SET state = :state, finished_at_ms = :now, error = :err WHERE id = :lid"
)
_RETRY_JOB = Sql(
    """UPDATE jobs SET state = 'queued', attempt = :attempt, ready_at_ms = :ready,
        enqueued_at_ms = :now, started_at_ms = 0, error = :err,
        lost_leases = lost_leases + :lost
    WHERE id = :jid AND state = 'running'"""
)
_SUCCEED_JOBS = Sql(
    """UPDATE jobs SET state = 'succeeded', finished_at_ms = :now, outputs = :outputs
    WHERE id IN_LIST(:ids) AND state = 'running'"""
)
_SUCCEED_JOB = Sql(
    """UPDATE jobs SET state = 'succeeded', finished_at_ms = :now, outputs = :out
    WHERE id = :jid AND state = 'running'"""
)
_FAIL_JOB = Sql(
    """UPDATE jobs SET state = 'failed', finished_at_ms = :now, error = :err
    WHERE id = :jid AND state = 'running'"""
)


def _apply(
    conn: Connection,
    *,
    is_pg: bool,
    org: str,
    items: Sequence[tuple[Any, Result]],
    now: int,
    effects: Effects,
) -> dict[str, Verdict]:
    """Moves validated leases and their jobs to their next states (the caller
    holds the runs' locks)."""
    ev = _Events(org, now)
    verdicts: dict[str, Verdict] = {}
    succeeded: list[tuple[Any, Result]] = []
    failed_final: list[tuple[Any, Result]] = []
    completed: list[str] = []
    ended: list[dict[str, Any]] = []
    retry_updates: list[dict[str, Any]] = []
    for row, res in items:
        effects.topics.add(topic_worker(org, row.worker_id))
        effects.topics.add(topic_logs(row.job_id))
        if res.ok:
            succeeded.append((row, res))
            completed.append(row.id)
            ev.add(row.run_id, "JOB_SUCCEEDED", row.key, row.attempt)
            continue
        ended.append({"lid": row.id, "state": res.lease_state, "err": res.error, "now": now})
        delay_ms = _retry_delay_ms(row, res)
        if delay_ms is not None:
            # 0 when there is no delay, as for a job that never failed: the
            # claim's `delayed_until_ms` then agrees with the failure's answer.
            ready_at = now + delay_ms if delay_ms else 0
            # ``row`` is a lease joined with its job: ``row.id`` is the lease's
            # id, ``row.job_id`` the job's (the row to re-queue).
            retry_updates.append(
                {
                    "jid": row.job_id,
                    "ready": ready_at,
                    "err": res.error,
                    "attempt": row.attempt + 1,
                    "lost": int(res.lost),
                }
            )
            ev.add(row.run_id, "JOB_RETRYING", row.key, row.attempt, res.error)
            if delay_ms > 0:
                effects.timers.append((ready_at, org, row.label_key, row.command))
            else:
                effects.ready[(org, row.label_key, row.command)] += 1
                effects.ready_runs.add(row.run_id)
            verdicts[row.id] = Verdict(row.id, will_retry=True, delayed_until_ms=ready_at)
        else:
            failed_final.append((row, res))
            ev.add(row.run_id, "JOB_FAILED", row.key, row.attempt, res.error)
    finished_per_run: Counter[str] = Counter(row.run_id for row, _ in succeeded)
    finished_per_run.update(row.run_id for row, _ in failed_final)
    failed_per_run: Counter[str] = Counter(row.run_id for row, _ in failed_final)
    # Jobs without outputs (most of them) are finished in one statement.
    bare = [row.job_id for row, res in succeeded if not res.outputs]
    with _sql.pipelined(conn) as batch:
        if completed:
            batch.execute(_COMPLETE_LEASES, now=now, ids=completed)
        batch.execute_many(_END_LEASE, ended)
        batch.execute_many(_RETRY_JOB, [{**u, "now": now} for u in retry_updates])
        if bare:
            batch.execute(_SUCCEED_JOBS, now=now, outputs=to_json({}), ids=bare)
        batch.execute_many(
            _SUCCEED_JOB,
            [
                {"jid": row.job_id, "out": to_json(dict(res.outputs)), "now": now}
                for row, res in succeeded
                if res.outputs
            ],
        )
        batch.execute_many(
            _FAIL_JOB,
            [{"jid": row.job_id, "err": res.error, "now": now} for row, res in failed_final],
        )
        _count_finished(batch, finished_per_run, failed_per_run)
        children = batch.query(_CHILDREN, ids=[row.job_id for row, _ in succeeded])
    if children.rows:
        _release_children(
            conn, org=org, children=[c for (c,) in children.rows], now=now, ev=ev, effects=effects
        )
    if failed_final:
        skipped = _skip_descendants(
            conn, [row.job_id for row, _ in failed_final], now=now, ev=ev, effects=effects
        )
        if skipped:
            with _sql.pipelined(conn) as batch:
                _count_finished(batch, skipped, Counter())
    _finish_runs(conn, list(finished_per_run), now=now, ev=ev, effects=effects)
    return verdicts


def _retry_delay_ms(row: Any, res: Result) -> int | None:
    """How long a failed attempt's job waits before it is claimable again;
    None when it fails for good.

    A lost lease is queued again at once as ``_lost`` decided; any other
    retryable failure spends one of the job's retries, waiting out its
    backoff. Lost leases are tries that spent no retry.
    """
    if res.lost:
        return 0 if res.retryable else None
    spent = row.attempt - row.lost_leases
    if not res.retryable or spent >= row.max_retries:
        return None
    return int(Backoff.from_json(from_json(row.backoff)).delay_for(spent) * 1000)


_CHILDREN = Sql("SELECT child_id FROM job_edges WHERE parent_id IN_LIST(:ids)")
_DECREMENT_PARENTS = Sql(
    "UPDATE jobs SET pending_parents = pending_parents - :n WHERE id IN_LIST(:ids)"
)
_QUEUE_READY = Sql(
    """UPDATE jobs SET state = 'queued', enqueued_at_ms = :now
    WHERE id IN_LIST(:ids) AND pending_parents = 0 AND state = 'pending'
    RETURNING run_id, "key", label_key, command
    """
)


def _release_children(
    conn: Connection,
    *,
    org: str,
    children: Sequence[int],
    now: int,
    ev: _Events,
    effects: Effects,
) -> None:
    """Decrements the unfinished-parent counters of the finished jobs'
    ``children`` (a child once per finished parent); queues those at zero."""
    counts: Counter[int] = Counter(children)
    by_count: dict[int, list[int]] = defaultdict(list)
    for child, n in counts.items():
        by_count[n].append(child)
    with _sql.pipelined(conn) as batch:
        for n, same in by_count.items():
            batch.execute(_DECREMENT_PARENTS, n=n, ids=same)
        ready = batch.query(_QUEUE_READY, now=now, ids=sorted(counts))
    for run_id, key, lk, command in ready.rows:
        ev.add(run_id, "JOB_QUEUED", key)
        effects.ready[(org, lk, command)] += 1
        effects.ready_runs.add(run_id)


def _skip_descendants(
    conn: Connection, failed_ids: Sequence[int], *, now: int, ev: _Events, effects: Effects
) -> Counter[str]:
    """Skips every pending descendant of the failed jobs; counts them per run.

    Log followers of a skipped job are woken: its log is complete (and empty).
    """
    skipped: Counter[str] = Counter()
    frontier = list(failed_ids)
    seen: set[int] = set(frontier)
    while frontier:
        children: list[int] = []
        for part in _chunks(frontier):
            children.extend(
                c
                for c in conn.execute(
                    select(edges.c.child_id).where(edges.c.parent_id.in_(part))
                ).scalars()
                if c not in seen
            )
        children = sorted(set(children))
        seen.update(children)
        for part in _chunks(children):
            for job_id, run_id, key in conn.execute(
                update(jobs)
                .where(jobs.c.id.in_(part), jobs.c.state == "pending")
                .values(state="skipped", finished_at_ms=now)
                .returning(jobs.c.id, jobs.c.run_id, jobs.c.key)
            ):
                skipped[run_id] += 1
                ev.add(run_id, "JOB_SKIPPED", key)
                effects.topics.add(topic_logs(job_id))
        frontier = children
    return skipped


_COUNT_FINISHED = Sql(
    """UPDATE runs SET unfinished_jobs = unfinished_jobs - :n, failed_jobs = failed_jobs + :failed
    WHERE id = :run_id"""
)
_RUNS_DONE = Sql(
    """SELECT id, failed_jobs FROM runs
    WHERE id IN_LIST(:ids) AND unfinished_jobs <= 0 AND state = 'running'"""
)
_FINISH_RUN = Sql("UPDATE runs SET state = :state, finished_at_ms = :now WHERE id = :run_id")


def _count_finished(batch: _sql.Batch, finished: Counter[str], failed: Counter[str]) -> None:
    batch.execute_many(
        _COUNT_FINISHED,
        [{"n": n, "failed": failed.get(r, 0), "run_id": r} for r, n in finished.items()],
    )


def _finish_runs(
    conn: Connection, run_ids: Sequence[str], *, now: int, ev: _Events, effects: Effects
) -> None:
    """Ends the runs (of ``run_ids``) that have no unfinished job left, then
    writes the transaction's events."""
    done = _sql.query(conn, _RUNS_DONE, ids=run_ids) if run_ids else []
    with _sql.pipelined(conn) as batch:
        for run_id, n_failed in done:
            state = "failed" if n_failed else "succeeded"
            batch.execute(_FINISH_RUN, state=state, now=now, run_id=run_id)
            ev.add(run_id, "RUN_FINISHED", msg=state)
        ev.flush(batch, effects)


# --------------------------------------------------------------------------- logs


_LEASE_FOR_LOGS = Sql(
    """SELECT job_id, run_id, workflow_id, job_key, attempt, state, expires_at_ms,
        finished_at_ms
    FROM leases WHERE id = :lease AND org_id = :org AND owner = :owner FOR_UPDATE"""
)
_COUNT_CHUNKS = Sql("SELECT count(*) FROM log_chunks WHERE job_id = :job AND attempt = :attempt")
_INSERT_CHUNK = _sql.Insert(
    "log_chunks",
    {
        "org_id": "text",
        "run_id": "text",
        "workflow_id": "text",
        "job_id": "bigint",
        "job_key": "text",
        "attempt": "integer",
        "stream": "text",
        "sequence": "bigint",
        "data": "text",
        "timestamp_ms": "bigint",
    },
    on_conflict="ON CONFLICT DO NOTHING",
)


def push_logs(
    conn: Connection,
    *,
    org: str,
    owner: str,
    lease_id: str,
    chunks: Sequence[Mapping[str, Any]],
    now: int,
) -> tuple[int, Effects]:
    """Stores chunks for the lease's job attempt; retried chunks are ignored."""
    found = _sql.query(conn, _LEASE_FOR_LOGS, lease=lease_id, org=org, owner=owner)
    if not found:
        raise LeaseConflict(f"unknown lease {lease_id!r}")
    row = found[0]
    # What a cancelled job prints while it stops (a trap handler, say) is
    # still its log: accept it for a short while after the cancel.
    if not (row.state == "cancelled" and now - row.finished_at_ms <= CANCEL_LOG_GRACE_MS):
        _check_active(row.state, row.expires_at_ms, now)
    effects = Effects()
    if not chunks:
        return 0, effects
    values = [
        {
            "org_id": org,
            "run_id": row.run_id,
            "workflow_id": row.workflow_id,
            "job_id": row.job_id,
            "job_key": row.job_key,
            "attempt": row.attempt,
            "stream": c["stream"],
            "sequence": c["sequence"],
            "data": c["data"],
            "timestamp_ms": c["timestamp_ms"] or now,
        }
        for c in chunks
    ]
    (before,) = _sql.scalars(conn, _COUNT_CHUNKS, job=row.job_id, attempt=row.attempt)
    _sql.insert(conn, _INSERT_CHUNK, values)
    (after,) = _sql.scalars(conn, _COUNT_CHUNKS, job=row.job_id, attempt=row.attempt)
    effects.topics.add(topic_logs(row.job_id))
    return int(after - before), effects


__all__ = [
    "Claimed",
    "Effects",
    "Result",
    "Verdict",
    "cancel_run",
    "claim",
    "create_run",
    "heartbeat",
    "push_logs",
    "reap",
    "report_results",
    "touch_worker",
]

"""The job state machine, in SQL.

Every function here runs inside one transaction handed to it by the service
layer and returns the wake-ups (``Effects``) to fire once that transaction has
committed. Nothing here sleeps, waits or talks to the network.

Job states: pending -> queued -> running -> succeeded | failed, with
running -> queued again for a retry, and skipped / cancelled as the other
terminal states. A lease is active until it is completed, failed, expired or
cancelled; only an active, unexpired lease may change its job.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Text, bindparam, cast, func, literal_column, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import ColumnClause

from trellis.server.definitions import Backoff, WorkflowDef
from trellis.server.errors import LeaseConflict
from trellis.server.models import (
    JobEdgeRow,
    JobRow,
    LabelSetRow,
    LeaseRow,
    LogChunkRow,
    RunEventRow,
    RunRow,
    WorkerRow,
    table,
)

jobs = table(JobRow)
edges = table(JobEdgeRow)
label_sets = table(LabelSetRow)
leases = table(LeaseRow)
runs = table(RunRow)
events = table(RunEventRow)
workers = table(WorkerRow)
log_chunks = table(LogChunkRow)

TERMINAL = frozenset({"succeeded", "failed", "skipped", "cancelled"})
NO_DEADLINE = 2**62
# How long after a cancel the cancelled job's worker may still push logs.
CANCEL_LOG_GRACE_MS = 60_000
# The states that partial indexes cover, as SQL literals rather than bound
# parameters: PostgreSQL's generic plans for prepared statements (psycopg
# prepares repeated ones) can only use a partial index whose predicate the
# query states literally; with a parameter the claim becomes a table scan.
QUEUED: ColumnClause[str] = literal_column("'queued'")
ACTIVE: ColumnClause[str] = literal_column("'active'")
# Large IN lists are split so that no statement exceeds SQLite's variable cap.
CHUNK = 500


def topic_ready(org: str) -> str:
    return f"ready:{org}"


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
    # (epoch ms at which a delayed job becomes claimable, topic)
    timers: list[tuple[int, str]] = field(default_factory=list)


def new_id() -> str:
    return uuid.uuid4().hex


def label_key(labels: Iterable[str]) -> str:
    return ",".join(sorted(set(labels)))


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


def _insert(is_pg: bool, table: Any) -> Any:
    return postgresql.insert(table) if is_pg else sqlite.insert(table)


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

    def flush(self, conn: Connection, effects: Effects) -> None:
        if self.rows:
            conn.execute(events.insert(), self.rows)
            effects.topics.update(topic_run(r) for r in self.runs)
            self.rows = []


# --------------------------------------------------------------------------- runs


def create_run(
    conn: Connection, *, is_pg: bool, org: str, wdef: WorkflowDef, version: int, now: int
) -> tuple[str, Effects]:
    """Creates a run with all its jobs; roots are queued at once."""
    run_id = new_id()
    effects = Effects()
    conn.execute(
        runs.insert().values(
            id=run_id,
            org_id=org,
            workflow_id=wdef.id,
            workflow_version=version,
            state="running",
            unfinished_jobs=len(wdef.jobs),
            failed_jobs=0,
            cancel_requested=False,
            created_at_ms=now,
            finished_at_ms=0,
        )
    )
    rows = []
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
                "attempt": 0,
                "max_retries": job.max_retries,
                "backoff": job.backoff.to_json(),
                "timeout_secs": job.timeout_secs,
                "env": dict(job.env),
                "parents": list(job.depends_on),
                "pending_parents": len(job.depends_on),
                "enqueued_at_ms": now if is_root else 0,
                "ready_at_ms": 0,
                "started_at_ms": 0,
                "finished_at_ms": 0,
                "outputs": None,
                "error": None,
            }
        )
    conn.execute(jobs.insert(), rows)
    if any(job.depends_on for job in wdef.jobs):
        ids: dict[str, int] = {
            key: job_id
            for key, job_id in conn.execute(
                select(jobs.c.key, jobs.c.id).where(jobs.c.run_id == run_id)
            )
        }
        edge_rows = [
            {"parent_id": ids[parent], "child_id": ids[job.id], "org_id": org}
            for job in wdef.jobs
            for parent in job.depends_on
        ]
        conn.execute(edges.insert(), edge_rows)
    keys = sorted({label_key(job.required_labels) for job in wdef.jobs})
    conn.execute(
        _insert(is_pg, label_sets).on_conflict_do_nothing(),
        [{"org_id": org, "label_key": k} for k in keys],
    )
    ev = _Events(org, now)
    ev.add(run_id, "RUN_STARTED")
    for job in wdef.jobs:
        if not job.depends_on:
            ev.add(run_id, "JOB_QUEUED", job.id)
    ev.flush(conn, effects)
    effects.topics.add(topic_ready(org))
    return run_id, effects


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
    ev.flush(conn, effects)
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


def eligible_label_keys(conn: Connection, org: str, labels: Sequence[str]) -> list[str]:
    """The label sets (as keys) that a worker with ``labels`` satisfies."""
    have = set(labels)
    keys = conn.execute(select(label_sets.c.label_key).where(label_sets.c.org_id == org)).scalars()
    return [k for k in keys if not k or set(k.split(",")) <= have]


def touch_worker(
    conn: Connection,
    *,
    is_pg: bool,
    org: str,
    worker_id: str,
    labels: Sequence[str] | None,
    now: int,
    fresh_ms: int = 0,
) -> None:
    """Records that the worker was seen (and its labels, when given).

    A worker seen within the last ``fresh_ms`` with the same labels is left
    alone, so a busy claim loop does not rewrite its row on every claim.
    """
    values: dict[str, Any] = {"last_heartbeat_ms": now}
    if labels is not None:
        values["labels"] = sorted(set(labels))
    stmt = _insert(is_pg, workers).values(
        org_id=org,
        worker_id=worker_id,
        labels=sorted(set(labels or ())),
        registered_at_ms=now,
        last_heartbeat_ms=now,
    )
    stale = None
    if fresh_ms:
        # PostgreSQL's json type has no equality: compare the stored texts,
        # which one serializer wrote from sorted lists.
        stale = (workers.c.last_heartbeat_ms < now - fresh_ms) | (
            cast(workers.c.labels, Text) != cast(stmt.excluded.labels, Text)
        )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[workers.c.org_id, workers.c.worker_id], set_=values, where=stale
        )
    )


def claim(
    conn: Connection,
    *,
    is_pg: bool,
    org: str,
    worker_id: str,
    labels: Sequence[str],
    ttl_secs: int,
    max_jobs: int,
    now: int,
) -> tuple[list[Claimed], Effects]:
    """Claims up to ``max_jobs`` ready jobs matching ``labels``, oldest first."""
    effects = Effects()
    touch_worker(
        conn, is_pg=is_pg, org=org, worker_id=worker_id, labels=labels, now=now, fresh_ms=1000
    )
    keys = eligible_label_keys(conn, org, labels)
    if not keys or max_jobs <= 0:
        return [], effects
    pick = (
        select(jobs.c.id)
        .where(
            jobs.c.org_id == org,
            jobs.c.state == QUEUED,
            jobs.c.label_key.in_(keys),
            jobs.c.ready_at_ms <= now,
        )
        .order_by(jobs.c.id)
        .limit(max_jobs)
    )
    if is_pg:
        pick = pick.with_for_update(skip_locked=True)
    rows = conn.execute(
        update(jobs)
        .where(jobs.c.id.in_(pick.scalar_subquery()))
        .values(state="running", started_at_ms=now)
        .returning(
            jobs.c.id,
            jobs.c.run_id,
            jobs.c.workflow_id,
            jobs.c.key,
            jobs.c.name,
            jobs.c.command,
            jobs.c.label_key,
            jobs.c.attempt,
            jobs.c.max_retries,
            jobs.c.backoff,
            jobs.c.timeout_secs,
            jobs.c.env,
            jobs.c.parents,
            jobs.c.enqueued_at_ms,
            jobs.c.ready_at_ms,
        )
    ).all()
    if not rows:
        return [], effects
    rows = sorted(rows, key=lambda r: r.id)
    upstream = _upstream_outputs(conn, [r.id for r in rows if r.parents])
    claimed: list[Claimed] = []
    lease_rows = []
    # The runs are locked after the jobs here, while cancel locks its run
    # first: the one cycle this allows (a cancel racing a claim of the same
    # run) is broken by PostgreSQL's deadlock detector and the retry in the
    # service layer.
    _lock_runs(conn, is_pg, {r.run_id for r in rows})
    ev = _Events(org, now)
    for r in rows:
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
                "state": "active",
                "finished_at_ms": 0,
            }
        )
        claimed.append(
            Claimed(
                job=r._mapping,
                lease_id=lease_id,
                ttl_secs=ttl_secs,
                granted_at_ms=now,
                expires_at_ms=expires,
                upstream_outputs=upstream.get(r.id, {}),
            )
        )
    conn.execute(leases.insert(), lease_rows)
    ev.flush(conn, effects)
    return claimed, effects


def _lock_runs(conn: Connection, is_pg: bool, run_ids: Iterable[str]) -> None:
    """Serialises the writers of a run on PostgreSQL.

    Event ids then commit in order within a run, so a follower resuming after
    an id never skips one; and two completions never update the same
    children in opposite orders. Runs are locked in id order.
    """
    if is_pg:
        ids = sorted(run_ids)
        if ids:
            conn.execute(
                select(runs.c.id).where(runs.c.id.in_(ids)).order_by(runs.c.id).with_for_update()
            )


def _runs_of_leases(conn: Connection, lease_ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for part in _chunks(lease_ids):
        found.update(conn.execute(select(leases.c.run_id).where(leases.c.id.in_(part))).scalars())
    return found


def _upstream_outputs(
    conn: Connection, child_ids: Sequence[int]
) -> dict[int, dict[str, dict[str, str]]]:
    out: dict[int, dict[str, dict[str, str]]] = defaultdict(dict)
    for part in _chunks(child_ids):
        q = (
            select(edges.c.child_id, jobs.c.key, jobs.c.outputs)
            .join(jobs, jobs.c.id == edges.c.parent_id)
            .where(edges.c.child_id.in_(part))
        )
        for child_id, key, outputs in conn.execute(q):
            out[child_id][key] = dict(outputs or {})
    return out


# --------------------------------------------------------------------------- leases


def heartbeat(
    conn: Connection, *, org: str, lease_id: str, ttl_secs: int | None, now: int
) -> tuple[int, bool]:
    """Extends a lease; returns (expires_at_ms, cancelled).

    A cancelled job's lease answers ``cancelled`` instead of failing, so the
    worker learns why it should stop. Raises ``LeaseConflict`` otherwise.
    """
    row = conn.execute(
        select(
            leases.c.state,
            leases.c.expires_at_ms,
            leases.c.deadline_ms,
            leases.c.ttl_secs,
            leases.c.worker_id,
        ).where(leases.c.id == lease_id, leases.c.org_id == org)
    ).first()
    if row is None:
        raise LeaseConflict(f"unknown lease {lease_id!r}")
    if row.state == "cancelled":
        return row.expires_at_ms, True
    _check_active(row.state, row.expires_at_ms, now)
    ttl = ttl_secs if ttl_secs else row.ttl_secs
    expires = min(now + ttl * 1000, row.deadline_ms)
    done = conn.execute(
        update(leases)
        .where(leases.c.id == lease_id, leases.c.state == "active", leases.c.expires_at_ms > now)
        .values(expires_at_ms=expires, ttl_secs=ttl)
    ).rowcount
    if not done:
        raise LeaseConflict(f"lease {lease_id!r} is no longer active")
    conn.execute(
        update(workers)
        .where(
            workers.c.org_id == org,
            workers.c.worker_id == row.worker_id,
            workers.c.last_heartbeat_ms < now - 1000,
        )
        .values(last_heartbeat_ms=now)
    )
    return expires, False


def _check_active(state: str, expires_at_ms: int, now: int) -> None:
    if state == "active" and expires_at_ms > now:
        return
    reason = {
        "completed": "the job was already completed under this lease",
        "failed": "a failure was already reported under this lease",
        "cancelled": "the job was cancelled",
        "expired": "the lease expired",
    }.get(state, "the lease expired")
    raise LeaseConflict(reason)


@dataclass(frozen=True)
class Result:
    """A worker's report on one lease."""

    lease_id: str
    ok: bool
    outputs: Mapping[str, str] = field(default_factory=dict)
    error: str = ""
    retryable: bool = False


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
    jobs.c.max_retries,
    jobs.c.backoff,
    jobs.c.timeout_secs,
)


def report_results(
    conn: Connection, *, is_pg: bool, org: str, results: Sequence[Result], now: int
) -> tuple[list[Verdict], Effects]:
    """Applies completions and failures; each report is judged on its own.

    A stale, expired, finished or unknown lease changes nothing; the second of
    two reports for one lease (in one batch or across concurrent batches)
    finds the lease no longer active.
    """
    ids = sorted({r.lease_id for r in results})
    _lock_runs(conn, is_pg, _runs_of_leases(conn, ids) if is_pg else ())
    found: dict[str, Any] = {}
    for part in _chunks(ids):
        q = (
            select(*_LEASE_COLS)
            .join(jobs, jobs.c.id == leases.c.job_id)
            .where(leases.c.id.in_(part), leases.c.org_id == org)
        )
        if is_pg:
            q = q.with_for_update(of=leases)
        for row in conn.execute(q):
            found[row.id] = row
    verdicts: list[Verdict] = []
    done: list[tuple[Any, Result]] = []
    seen: set[str] = set()
    for res in results:
        lease = found.get(res.lease_id)
        if lease is None:
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
    outcomes = _apply(
        conn, is_pg=is_pg, org=org, items=done, now=now, effects=effects, lease_state=None
    )
    return [outcomes.get(v.lease_id, v) if v.error is None else v for v in verdicts], effects


def reap(conn: Connection, *, is_pg: bool, now: int, limit: int = 500) -> tuple[int, Effects]:
    """Turns expired leases into retryable failures (or final ones when the
    job's retries are spent, or its timeout has passed)."""
    expired = select(leases.c.id).where(leases.c.state == ACTIVE, leases.c.expires_at_ms <= now)
    ids = sorted(conn.execute(expired.order_by(leases.c.expires_at_ms).limit(limit)).scalars())
    if not ids:
        return 0, Effects()
    _lock_runs(conn, is_pg, _runs_of_leases(conn, ids) if is_pg else ())
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
        if row.deadline_ms <= now:
            err = f"timed out after {row.timeout_secs} s"
        else:
            err = "lease expired: the worker stopped heartbeating"
        by_org[row.org_id].append((row, Result(row.id, ok=False, error=err, retryable=True)))
    for org, items in by_org.items():
        _apply(
            conn, is_pg=is_pg, org=org, items=items, now=now, effects=effects, lease_state="expired"
        )
    return len(rows), effects


def _apply(
    conn: Connection,
    *,
    is_pg: bool,
    org: str,
    items: Sequence[tuple[Any, Result]],
    now: int,
    effects: Effects,
    lease_state: str | None,
) -> dict[str, Verdict]:
    """Moves validated leases and their jobs to their next states (the caller
    holds the runs' locks)."""
    ev = _Events(org, now)
    verdicts: dict[str, Verdict] = {}
    succeeded: list[tuple[Any, Result]] = []
    failed_final: list[tuple[Any, Result]] = []
    lease_updates: list[tuple[str, str]] = []
    retry_updates: list[dict[str, Any]] = []
    for row, res in items:
        effects.topics.add(topic_worker(org, row.worker_id))
        effects.topics.add(topic_logs(row.job_id))
        if res.ok:
            succeeded.append((row, res))
            lease_updates.append((row.id, "completed"))
            ev.add(row.run_id, "JOB_SUCCEEDED", row.key, row.attempt)
            continue
        lease_updates.append((row.id, lease_state or "failed"))
        if res.retryable and row.attempt < row.max_retries:
            delay_ms = int(Backoff.from_json(row.backoff).delay_for(row.attempt) * 1000)
            # 0 when there is no delay, as for a job that never failed: the
            # claim's `delayed_until_ms` then agrees with the failure's answer.
            ready_at = now + delay_ms if delay_ms else 0
            # ``row`` is a lease joined with its job: ``row.id`` is the lease's
            # id, ``row.job_id`` the job's (the row to re-queue).
            retry_updates.append(
                {"jid": row.job_id, "ready": ready_at, "err": res.error, "attempt": row.attempt + 1}
            )
            ev.add(row.run_id, "JOB_RETRYING", row.key, row.attempt, res.error)
            if delay_ms > 0:
                effects.timers.append((ready_at, topic_ready(org)))
            else:
                effects.topics.add(topic_ready(org))
            verdicts[row.id] = Verdict(row.id, will_retry=True, delayed_until_ms=ready_at)
        else:
            failed_final.append((row, res))
            ev.add(row.run_id, "JOB_FAILED", row.key, row.attempt, res.error)
    by_state: dict[str, list[str]] = defaultdict(list)
    for lid, st in lease_updates:
        by_state[st].append(lid)
    for st, lids in by_state.items():
        for part in _chunks(lids):
            conn.execute(
                update(leases).where(leases.c.id.in_(part)).values(state=st, finished_at_ms=now)
            )
    if retry_updates:
        conn.execute(
            update(jobs)
            .where(jobs.c.id == bindparam("jid"), jobs.c.state == "running")
            .values(
                state="queued",
                attempt=bindparam("attempt"),
                ready_at_ms=bindparam("ready"),
                enqueued_at_ms=now,
                started_at_ms=0,
                error=bindparam("err"),
            ),
            retry_updates,
        )
    finished_per_run: Counter[str] = Counter()
    failed_per_run: Counter[str] = Counter()
    if succeeded:
        # Jobs without outputs (most of them) are finished in bulk statements.
        bare = [row.job_id for row, res in succeeded if not res.outputs]
        for part in _chunks(bare):
            conn.execute(
                update(jobs)
                .where(jobs.c.id.in_(part), jobs.c.state == "running")
                .values(state="succeeded", finished_at_ms=now, outputs={})
            )
        with_outputs = [
            {"jid": row.job_id, "out": dict(res.outputs)} for row, res in succeeded if res.outputs
        ]
        if with_outputs:
            conn.execute(
                update(jobs)
                .where(jobs.c.id == bindparam("jid"), jobs.c.state == "running")
                .values(state="succeeded", finished_at_ms=now, outputs=bindparam("out")),
                with_outputs,
            )
        for row, _ in succeeded:
            finished_per_run[row.run_id] += 1
        _release_children(
            conn,
            org=org,
            parent_ids=[row.job_id for row, _ in succeeded],
            now=now,
            ev=ev,
            effects=effects,
        )
    if failed_final:
        conn.execute(
            update(jobs)
            .where(jobs.c.id == bindparam("jid"), jobs.c.state == "running")
            .values(state="failed", finished_at_ms=now, error=bindparam("err")),
            [{"jid": row.job_id, "err": res.error} for row, res in failed_final],
        )
        for row, _ in failed_final:
            finished_per_run[row.run_id] += 1
            failed_per_run[row.run_id] += 1
        skipped = _skip_descendants(
            conn, [row.job_id for row, _ in failed_final], now=now, ev=ev, effects=effects
        )
        for run_id, n in skipped.items():
            finished_per_run[run_id] += n
    _finish_runs(conn, finished_per_run, failed_per_run, now=now, ev=ev)
    ev.flush(conn, effects)
    return verdicts


def _release_children(
    conn: Connection,
    *,
    org: str,
    parent_ids: Sequence[int],
    now: int,
    ev: _Events,
    effects: Effects,
) -> None:
    """Decrements the children's unfinished-parent counters; queues those at zero."""
    counts: Counter[int] = Counter()
    for part in _chunks(parent_ids):
        counts.update(
            conn.execute(select(edges.c.child_id).where(edges.c.parent_id.in_(part))).scalars()
        )
    if not counts:
        return
    by_count: dict[int, list[int]] = defaultdict(list)
    for child, n in counts.items():
        by_count[n].append(child)
    for n, children in by_count.items():
        for part in _chunks(children):
            conn.execute(
                update(jobs)
                .where(jobs.c.id.in_(part))
                .values(pending_parents=jobs.c.pending_parents - n)
            )
    ready: list[Any] = []
    for part in _chunks(sorted(counts)):
        ready.extend(
            conn.execute(
                update(jobs)
                .where(jobs.c.id.in_(part), jobs.c.pending_parents == 0, jobs.c.state == "pending")
                .values(state="queued", enqueued_at_ms=now)
                .returning(jobs.c.run_id, jobs.c.key)
            ).all()
        )
    for run_id, key in ready:
        ev.add(run_id, "JOB_QUEUED", key)
    if ready:
        effects.topics.add(topic_ready(org))


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


def _finish_runs(
    conn: Connection, finished: Counter[str], failed: Counter[str], *, now: int, ev: _Events
) -> None:
    for run_id, n in finished.items():
        conn.execute(
            update(runs)
            .where(runs.c.id == run_id)
            .values(
                unfinished_jobs=runs.c.unfinished_jobs - n,
                failed_jobs=runs.c.failed_jobs + failed.get(run_id, 0),
            )
        )
    if not finished:
        return
    done = conn.execute(
        select(runs.c.id, runs.c.failed_jobs).where(
            runs.c.id.in_(list(finished)), runs.c.unfinished_jobs <= 0, runs.c.state == "running"
        )
    ).all()
    for run_id, n_failed in done:
        state = "failed" if n_failed else "succeeded"
        conn.execute(
            update(runs).where(runs.c.id == run_id).values(state=state, finished_at_ms=now)
        )
        ev.add(run_id, "RUN_FINISHED", msg=state)


# --------------------------------------------------------------------------- logs


def push_logs(
    conn: Connection,
    *,
    is_pg: bool,
    org: str,
    lease_id: str,
    chunks: Sequence[Mapping[str, Any]],
    now: int,
) -> tuple[int, Effects]:
    """Stores chunks for the lease's job attempt; retried chunks are ignored."""
    q = select(
        leases.c.job_id,
        leases.c.run_id,
        leases.c.workflow_id,
        leases.c.job_key,
        leases.c.attempt,
        leases.c.state,
        leases.c.expires_at_ms,
        leases.c.finished_at_ms,
    ).where(leases.c.id == lease_id, leases.c.org_id == org)
    if is_pg:
        q = q.with_for_update()
    row = conn.execute(q).first()
    if row is None:
        raise LeaseConflict(f"unknown lease {lease_id!r}")
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
    before = conn.execute(
        select(func.count())
        .select_from(log_chunks)
        .where(log_chunks.c.job_id == row.job_id, log_chunks.c.attempt == row.attempt)
    ).scalar_one()
    conn.execute(_insert(is_pg, log_chunks).on_conflict_do_nothing(), values)
    after = conn.execute(
        select(func.count())
        .select_from(log_chunks)
        .where(log_chunks.c.job_id == row.job_id, log_chunks.c.attempt == row.attempt)
    ).scalar_one()
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

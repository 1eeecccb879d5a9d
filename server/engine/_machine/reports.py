"""Reports: completions and failures judged against their leases, and what
they set in motion (retries, children queued, descendants skipped, runs
finished)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select, update

from trellis.server.core import _sql
from trellis.server.core._sql import Sql, from_json, to_json
from trellis.server.core.errors import LeaseConflict
from trellis.server.core.eventlog import tx_sql
from trellis.server.engine._machine.common import (
    Effects,
    Events,
    check_active,
    chunks,
    edges,
    jobs,
    leases,
    lock_runs_of_leases,
    topic_worker,
)
from trellis.server.engine._machine.limits import release_held
from trellis.server.engine._machine.recovery import failed_to_roll_back, roll_back_failed
from trellis.server.engine._states import JobState, LeaseState, RunEventType, RunState
from trellis.server.engine.definitions import Backoff


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
    def lease_state(self) -> LeaseState:
        """The state the lease ends in."""
        if self.ok:
            return LeaseState.COMPLETED
        if self.lost:
            return LeaseState.EXPIRED
        return LeaseState.TIMED_OUT if self.timed_out else LeaseState.FAILED


@dataclass(frozen=True)
class Verdict:
    """How one report was judged: ``None`` error means applied."""

    lease_id: str
    error: str | None = None
    will_retry: bool = False
    delayed_until_ms: int = 0


LEASE_COLS = (
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
    jobs.c.parallel_limit,
    jobs.c.base_attempt,
    jobs.c.compensates,
)


# The org is checked on the rows found, not in the WHERE clause: given both,
# SQLite walks the org's index (every lease the org ever had) instead of
# looking the ids up.
_REPORTED_LEASES = Sql(
    """SELECT l.id, l.org_id, l.owner, l.job_id, l.run_id, l.worker_id, l.state, l.expires_at_ms,
        l.deadline_ms, l.attempt, j."key", j.state AS job_state, j.label_key, j.command,
        j.max_retries, j.lost_leases, j.backoff, j.timeout_secs, j.parallel_limit,
        j.base_attempt, j.compensates
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
        lock_runs_of_leases(batch, is_pg, ids)
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
            check_active(lease.state, lease.expires_at_ms, now)
        except LeaseConflict as exc:
            verdicts.append(Verdict(res.lease_id, str(exc)))
            continue
        seen.add(res.lease_id)
        done.append((lease, res))
        verdicts.append(Verdict(res.lease_id))
    effects = Effects()
    if not done:
        return verdicts, effects
    outcomes = apply(conn, is_pg=is_pg, org=org, items=done, now=now, effects=effects)
    return [outcomes.get(v.lease_id, v) if v.error is None else v for v in verdicts], effects


_COMPLETE_LEASES = Sql(
    f"UPDATE leases SET state = '{LeaseState.COMPLETED}', finished_at_ms = :now"
    " WHERE id IN_LIST(:ids)"
)
_END_LEASE = Sql(
    "UPDATE leases SET state = :state, finished_at_ms = :now, error = :err WHERE id = :lid"
)
_RETRY_JOB = Sql(
    f"""UPDATE jobs SET state = '{JobState.QUEUED}', attempt = :attempt, ready_at_ms = :ready,
        enqueued_at_ms = :now, started_at_ms = 0, error = :err,
        lost_leases = lost_leases + :lost
    WHERE id = :jid AND state = '{JobState.RUNNING}'"""
)
_SUCCEED_JOBS = Sql(
    f"""UPDATE jobs SET state = '{JobState.SUCCEEDED}', finished_at_ms = :now, outputs = :outputs
    WHERE id IN_LIST(:ids) AND state = '{JobState.RUNNING}'"""
)
_SUCCEED_JOB = Sql(
    f"""UPDATE jobs SET state = '{JobState.SUCCEEDED}', finished_at_ms = :now, outputs = :out
    WHERE id = :jid AND state = '{JobState.RUNNING}'"""
)
_FAIL_JOB = Sql(
    f"""UPDATE jobs SET state = '{JobState.FAILED}', finished_at_ms = :now, error = :err
    WHERE id = :jid AND state = '{JobState.RUNNING}'"""
)


def apply(
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
    ev = Events(org, now)
    verdicts: dict[str, Verdict] = {}
    succeeded: list[tuple[Any, Result]] = []
    failed_final: list[tuple[Any, Result]] = []
    completed: list[str] = []
    ended: list[dict[str, Any]] = []
    retry_updates: list[dict[str, Any]] = []
    limited: set[str] = set()
    for row, res in items:
        if row.parallel_limit:
            limited.add(row.run_id)
        effects.topics.add(topic_worker(org, row.worker_id))
        effects.ended.setdefault((org, row.worker_id), set()).add(row.id)
        if res.ok:
            succeeded.append((row, res))
            completed.append(row.id)
            ev.add(row.run_id, RunEventType.JOB_SUCCEEDED, row.key, row.attempt)
            if row.compensates is not None:
                ev.add(row.run_id, RunEventType.JOB_COMPENSATED, row.compensates, row.attempt)
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
            ev.add(
                row.run_id,
                RunEventType.JOB_RETRYING,
                row.key,
                row.attempt,
                res.error,
                data={"delayed_until_ms": ready_at},
            )
            if delay_ms > 0:
                effects.timers.append((ready_at, org, row.label_key, row.command))
            else:
                effects.ready[(org, row.label_key, row.command)] += 1
                effects.ready_runs.add(row.run_id)
            verdicts[row.id] = Verdict(row.id, will_retry=True, delayed_until_ms=ready_at)
        else:
            failed_final.append((row, res))
            ev.add(row.run_id, RunEventType.JOB_FAILED, row.key, row.attempt, res.error)
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
        # The jobs' events go before their runs' RUN_FINISHED.
        ev.flush(batch, effects)
        _count_finished(batch, finished_per_run, failed_per_run, now=now)
        children = batch.query(_CHILDREN, ids=[row.job_id for row, _ in succeeded])
        # Pipelined with the rest: no round trip of its own on the happy path.
        to_roll_back = (
            failed_to_roll_back(batch, finished_per_run, now) if finished_per_run else None
        )
    if limited:
        # The slots these leases held are free: the runs' held jobs may go.
        release_held(conn, org=org, run_ids=limited, effects=effects)
    if children.rows:
        _release_children(
            conn, org=org, children=[c for (c,) in children.rows], now=now, ev=ev, effects=effects
        )
    rolling = [] if to_roll_back is None else list(to_roll_back.rows)
    if failed_final:
        skipped = _skip_descendants(
            conn, [row.job_id for row, _ in failed_final], now=now, ev=ev, effects=effects
        )
        if skipped:
            with _sql.pipelined(conn) as batch:
                ev.flush(batch, effects)
                _count_finished(batch, skipped, Counter(), now=now)
                more = failed_to_roll_back(batch, set(skipped) - set(finished_per_run), now)
            rolling.extend(more.rows)
    if rolling:
        roll_back_failed(conn, org=org, runs=rolling, now=now, ev=ev, effects=effects)
    if ev.rows:
        with _sql.pipelined(conn) as batch:
            ev.flush(batch, effects)
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
    spent = row.attempt - row.base_attempt - row.lost_leases
    if not res.retryable or spent >= row.max_retries:
        return None
    return int(Backoff.from_json(from_json(row.backoff)).delay_for(spent) * 1000)


_CHILDREN = Sql("SELECT child_id FROM job_edges WHERE parent_id IN_LIST(:ids)")
_DECREMENT_PARENTS = Sql(
    "UPDATE jobs SET pending_parents = pending_parents - :n WHERE id IN_LIST(:ids)"
)
_QUEUE_READY = Sql(
    f"""UPDATE jobs SET state = '{JobState.QUEUED}', enqueued_at_ms = :now
    WHERE id IN_LIST(:ids) AND pending_parents = 0 AND state = '{JobState.PENDING}'
    RETURNING run_id, "key", label_key, command
    """
)


def _release_children(
    conn: Connection,
    *,
    org: str,
    children: Sequence[int],
    now: int,
    ev: Events,
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
        ev.add(run_id, RunEventType.JOB_QUEUED, key)
        effects.ready[(org, lk, command)] += 1
        effects.ready_runs.add(run_id)


def _skip_descendants(
    conn: Connection, failed_ids: Sequence[int], *, now: int, ev: Events, effects: Effects
) -> Counter[str]:
    """Skips every pending descendant of the failed jobs; counts them per run.

    Log followers of a skipped job are woken: its log is complete (and empty).
    """
    skipped: Counter[str] = Counter()
    frontier = list(failed_ids)
    seen: set[int] = set(frontier)
    while frontier:
        children: list[int] = []
        for part in chunks(frontier):
            children.extend(
                c
                for c in conn.execute(
                    select(edges.c.child_id).where(edges.c.parent_id.in_(part))
                ).scalars()
                if c not in seen
            )
        children = sorted(set(children))
        seen.update(children)
        for part in chunks(children):
            for run_id, key in conn.execute(
                update(jobs)
                .where(jobs.c.id.in_(part), jobs.c.state == JobState.PENDING)
                .values(state=JobState.SKIPPED, finished_at_ms=now)
                .returning(jobs.c.run_id, jobs.c.key)
            ):
                skipped[run_id] += 1
                ev.add(run_id, RunEventType.JOB_SKIPPED, key)
        frontier = children
    return skipped


# A run's counters and, once it has no unfinished job left, its end (state,
# finished_at_ms and RUN_FINISHED event) are written by the statements that
# count its finished jobs, in the batch that finishes them: no read of the
# counters in between. The SET expressions all see the row as it was.
# A rollback's compensation jobs end it the same way, in its own states.
_COUNT_FINISHED = Sql(
    f"""UPDATE runs SET unfinished_jobs = unfinished_jobs - :n,
        failed_jobs = failed_jobs + :failed,
        state = CASE WHEN state = '{RunState.RUNNING}' AND unfinished_jobs <= :n
            THEN CASE WHEN failed_jobs + :failed > 0 THEN '{RunState.FAILED}'
                ELSE '{RunState.SUCCEEDED}' END
            WHEN state = '{RunState.ROLLING_BACK}' AND unfinished_jobs <= :n
            THEN CASE WHEN failed_jobs + :failed > 0 THEN '{RunState.ROLLBACK_FAILED}'
                WHEN rollback_partial THEN '{RunState.PARTLY_ROLLED_BACK}'
                ELSE '{RunState.ROLLED_BACK}' END
            ELSE state END,
        finished_at_ms = CASE
            WHEN state IN ('{RunState.RUNNING}', '{RunState.ROLLING_BACK}')
                AND unfinished_jobs <= :n
            THEN :now ELSE finished_at_ms END
    WHERE id IN_LIST(:ids)"""
)
# A run counted here ended in this transaction if it ended at all: a run
# that ended before has no unfinished job left to count, and a cancelled one
# keeps its state.


def _runs_finished(is_pg: bool) -> Sql:
    # A run's end is RUN_FINISHED; the end of its rollback, RUN_ROLLBACK_FINISHED.
    json_object = "json_build_object" if is_pg else "json_object"
    return Sql(
        f"""INSERT INTO events (tx, org_id, type, workflow_id, workflow_version, run_id,
            job_key, attempt, time_ms, message, data)
        SELECT {tx_sql(is_pg, "runs.id")}, org_id,
            CASE WHEN state IN ('{RunState.SUCCEEDED}', '{RunState.FAILED}')
                THEN '{RunEventType.RUN_FINISHED}'
                ELSE '{RunEventType.RUN_ROLLBACK_FINISHED}' END,
            workflow_id, workflow_version, id, '', 0, :now, state,
            {json_object}('state', state, 'created_by', created_by, 'trigger', "trigger")
        FROM runs
        WHERE id IN_LIST(:ids) AND finished_at_ms = :now AND unfinished_jobs <= 0
            AND state IN ('{RunState.SUCCEEDED}', '{RunState.FAILED}', '{RunState.ROLLED_BACK}',
                '{RunState.PARTLY_ROLLED_BACK}', '{RunState.ROLLBACK_FAILED}')
        ORDER BY id"""
    )


_RUNS_FINISHED = {is_pg: _runs_finished(is_pg) for is_pg in (False, True)}


def _count_finished(
    batch: _sql.Batch, finished: Counter[str], failed: Counter[str], *, now: int
) -> None:
    """Counts ``finished`` jobs (``failed`` of them failed) per run, and ends
    the runs left without unfinished jobs. Runs with the same counts share a
    statement (every one-job run: one for the whole batch)."""
    by_counts: dict[tuple[int, int], list[str]] = defaultdict(list)
    for run_id, n in finished.items():
        by_counts[(n, failed.get(run_id, 0))].append(run_id)
    for (n, n_failed), run_ids in by_counts.items():
        batch.execute(_COUNT_FINISHED, n=n, failed=n_failed, now=now, ids=sorted(run_ids))
    if finished:
        batch.execute(_RUNS_FINISHED[batch.is_pg], now=now, ids=sorted(finished))


__all__ = ["LEASE_COLS", "Result", "Verdict", "apply", "report_results"]

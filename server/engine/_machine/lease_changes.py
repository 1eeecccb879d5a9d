"""Leases over time: heartbeats extend them, and the reaper ends those that
expired."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import Connection, select

from trellis.server.core import _sql
from trellis.server.core._sql import Sql
from trellis.server.core.errors import LeaseConflict
from trellis.server.engine._machine.common import (
    ACTIVE,
    Effects,
    check_active,
    jobs,
    leases,
    lock_runs_of_leases,
)
from trellis.server.engine._machine.reports import LEASE_COLS, Result, apply
from trellis.server.engine._states import LeaseState

_LEASE_FOR_HEARTBEAT = Sql(
    """SELECT state, expires_at_ms, deadline_ms, ttl_secs, worker_id FROM leases
    WHERE id = :lease AND org_id = :org AND owner = :owner"""
)
_EXTEND_LEASE = Sql(
    f"""UPDATE leases SET expires_at_ms = :expires, ttl_secs = :ttl
    WHERE id = :lease AND state = '{LeaseState.ACTIVE}' AND expires_at_ms > :now"""
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
    if row.state == LeaseState.CANCELLED:
        return int(row.expires_at_ms), True
    check_active(row.state, row.expires_at_ms, now)
    ttl = ttl_secs if ttl_secs else row.ttl_secs
    expires = min(now + ttl * 1000, row.deadline_ms)
    done = _sql.execute(conn, _EXTEND_LEASE, expires=expires, ttl=ttl, lease=lease_id, now=now)
    if not done:
        raise LeaseConflict(f"lease {lease_id!r} is no longer active")
    _sql.execute(
        conn, _WORKER_SEEN, now=now, org=org, worker=row.worker_id, stale_before=now - 1000
    )
    return int(expires), False


_LEASE_LOST = "lease expired: the worker stopped heartbeating"
_NEXT_EXPIRY = Sql(f"SELECT min(expires_at_ms) FROM leases WHERE state = '{LeaseState.ACTIVE}'")


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
        lock_runs_of_leases(batch, is_pg, ids)
    q = (
        select(*LEASE_COLS, leases.c.org_id)
        .join(jobs, jobs.c.id == leases.c.job_id)
        .where(
            leases.c.id.in_(ids), leases.c.state == LeaseState.ACTIVE, leases.c.expires_at_ms <= now
        )
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
        apply(conn, is_pg=is_pg, org=org, items=items, now=now, effects=effects)
    return len(rows), effects


__all__ = ["heartbeat", "next_expiry", "reap"]

"""Log chunks pushed under a lease."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection

from trellis.server.core import _sql
from trellis.server.core._sql import Sql
from trellis.server.core.errors import LeaseConflict
from trellis.server.engine._machine.common import (
    CANCEL_LOG_GRACE_MS,
    Effects,
    Events,
    check_active,
)
from trellis.server.engine._states import LeaseState, RunEventType

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
    if not (row.state == LeaseState.CANCELLED and now - row.finished_at_ms <= CANCEL_LOG_GRACE_MS):
        check_active(row.state, row.expires_at_ms, now)
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
    stored = int(after - before)
    if stored:
        # One event per push, not per line: it says where the new text is,
        # and followers (FollowLogs, woken by the run's events) read the text
        # itself from the chunks.
        streams = sorted({str(c["stream"]) for c in chunks})
        sequences = [int(c["sequence"]) for c in chunks]
        ev = Events(org, now)
        ev.add(
            row.run_id,
            RunEventType.JOB_LOGGED,
            row.job_key,
            row.attempt,
            data={
                "stream": ",".join(streams),
                "first_sequence": min(sequences),
                "last_sequence": max(sequences),
                "chunks": stored,
            },
        )
        with _sql.pipelined(conn) as batch:
            ev.flush(batch, effects)
    return stored, effects


__all__ = ["push_logs"]

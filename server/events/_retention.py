"""Retention of the event log: events older than the configured days are
deleted in the background, a small batch per transaction, and so are the
webhook delivery records of the same age (a subscription's position is its
cursor, not its records).

Oldest first, by id: each batch reads the first ids of the table and deletes
those of them that are old enough, so a pass costs the same however large
the log, and a log with nothing to prune costs one short read.
"""

from __future__ import annotations

from trellis.server.core import _sql
from trellis.server.core.db import Database

DAY_MS = 86_400_000
PRUNE_BATCH = 1000
# At most this many batches a pass; what is left waits for the next pass.
MAX_BATCHES = 20

# The newest event is always kept: SQLite numbers a new row after the largest
# id left, so ids (and cursors) never go back even when everything is old.
_PRUNE = _sql.Sql(
    """DELETE FROM events WHERE id IN (
        SELECT id FROM (SELECT id, time_ms FROM events ORDER BY id LIMIT :n) AS oldest
        WHERE time_ms < :cutoff)
    AND id < (SELECT max(id) FROM events)"""
)


_PRUNE_DELIVERIES = _sql.Sql(
    """DELETE FROM webhook_deliveries WHERE id IN (
        SELECT id FROM (SELECT id, attempted_at_ms FROM webhook_deliveries ORDER BY id LIMIT :n)
        AS oldest WHERE attempted_at_ms < :cutoff)"""
)


def prune(
    db: Database, *, retention_days: float, batch: int = PRUNE_BATCH, max_batches: int = MAX_BATCHES
) -> int:
    """Deletes events and webhook delivery records older than
    ``retention_days`` (0: keeps everything); returns how many events. Any
    replica may run it: batches that race delete each row once."""
    if retention_days <= 0:
        return 0
    total = 0
    for statement in (_PRUNE, _PRUNE_DELIVERIES):
        for _ in range(max_batches):
            with db.write() as conn:
                cutoff = db.now_ms(conn) - int(retention_days * DAY_MS)
                deleted = _sql.execute(conn, statement, n=batch, cutoff=cutoff)
            if statement is _PRUNE:
                total += deleted
            if deleted < batch:
                break
    return total


__all__ = ["DAY_MS", "prune"]

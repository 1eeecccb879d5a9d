"""Retention of the event log: events older than the configured days are
deleted in the background, a small batch per transaction.

Oldest first, by id: each batch reads the first ids of the table and deletes
those of them that are old enough, so a pass costs the same however large
the log, and a log with nothing to prune costs one short read.
"""

from __future__ import annotations

from sqlalchemy import Connection

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


def _prune_batch(conn: Connection, cutoff_ms: int, n: int) -> int:
    return _sql.execute(conn, _PRUNE, n=n, cutoff=cutoff_ms)


def prune(
    db: Database, *, retention_days: float, batch: int = PRUNE_BATCH, max_batches: int = MAX_BATCHES
) -> int:
    """Deletes events older than ``retention_days`` (0: keeps everything);
    returns how many. Any replica may run it: batches that race delete
    each row once."""
    if retention_days <= 0:
        return 0
    total = 0
    for _ in range(max_batches):
        with db.write() as conn:
            cutoff = db.now_ms(conn) - int(retention_days * DAY_MS)
            deleted = _prune_batch(conn, cutoff, batch)
        total += deleted
        if deleted < batch:
            break
    return total


__all__ = ["DAY_MS", "prune"]

"""Parallel limits: at most N of a run's jobs leased at once.

A job of a limited run carries the limit in its own row, so a claim learns
of it from the rows it claimed and a claim of unlimited jobs costs nothing
more. The claim marks jobs running first, as for any job; then, for the
limited runs among them, it locks each run's row (on PostgreSQL; SQLite has
one writer) and counts the run's running jobs, its own claims included.
Locked and counted in one transaction, the count holds across replicas: a
second claimer of the run waits for the lock and counts the first one's
committed claims too. Claims beyond the limit are put back, and the run's
other queued jobs are held (``ready_at_ms = HELD``, which no claim reaches)
so that claimers stop drawing them. A lease of a limited run that ends
(``release_held``) frees the held jobs of its run again.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection

from trellis.server.core import _sql
from trellis.server.core._sql import Sql
from trellis.server.engine._machine.common import HELD, Effects, lock_runs
from trellis.server.engine._states import JobState

_RUNNING_OF_RUNS = Sql(
    f"""SELECT run_id, COUNT(*) AS n FROM jobs
    WHERE run_id IN_LIST(:run_ids) AND state = '{JobState.RUNNING}' GROUP BY run_id"""
)
# Claims over the limit go back to the queue, held.
_PUT_BACK = Sql(
    f"""UPDATE jobs SET state = '{JobState.QUEUED}', started_at_ms = 0, ready_at_ms = {HELD}
    WHERE id IN_LIST(:ids) AND state = '{JobState.RUNNING}'"""
)
# Jobs waiting out a retry's backoff keep their time: they are judged when
# claimed. Jobs another claim holds are skipped, not waited for (that claim
# waits for this one's run lock): it counts them itself.
_HOLD = Sql(
    f"""UPDATE jobs SET ready_at_ms = {HELD}
    WHERE id IN (SELECT id FROM jobs
        WHERE run_id IN_LIST(:run_ids) AND state = '{JobState.QUEUED}' AND ready_at_ms <= :now
        FOR_UPDATE_SKIP_LOCKED)"""
)
_RELEASE = Sql(
    f"""UPDATE jobs SET ready_at_ms = 0
    WHERE run_id IN_LIST(:run_ids) AND state = '{JobState.QUEUED}' AND ready_at_ms = {HELD}
    RETURNING run_id, label_key, command"""
)


def within_limits(
    conn: Connection, *, is_pg: bool, rows: Sequence[Any], now: int, nowait: bool = False
) -> list[Any]:
    """The claimed job ``rows`` (already marked running) that their runs'
    limits allow; the others are queued again, held. Rows without a limit
    pass untouched, without a statement."""
    limited: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        if row.parallel_limit:
            limited[row.run_id].append(row)
    if not limited:
        return list(rows)
    run_ids = sorted(limited)
    with _sql.pipelined(conn) as batch:
        lock_runs(batch, is_pg, run_ids, nowait=nowait)
        counted = batch.query(_RUNNING_OF_RUNS, run_ids=run_ids)
    running = {run_id: int(n) for run_id, n in counted.rows}
    refused: list[int] = []
    full: list[str] = []
    for run_id, mine in limited.items():
        limit = mine[0].parallel_limit
        over = running.get(run_id, 0) - limit
        if over >= 0:
            full.append(run_id)
        if over > 0:
            # The newest claims go back; the oldest jobs keep their turn.
            refused.extend(r.id for r in sorted(mine, key=lambda r: r.id)[-over:])
    if full:
        with _sql.pipelined(conn) as batch:
            if refused:
                batch.execute(_PUT_BACK, ids=sorted(refused))
            batch.execute(_HOLD, run_ids=sorted(full), now=now)
    gone = set(refused)
    return [row for row in rows if row.id not in gone]


def release_held(conn: Connection, *, org: str, run_ids: Iterable[str], effects: Effects) -> None:
    """Frees the held jobs of runs whose leases ended: claimers may draw them
    again (and ``within_limits`` judges them anew)."""
    ids = sorted(set(run_ids))
    if not ids:
        return
    for run_id, label_key, command in _sql.query(conn, _RELEASE, run_ids=ids):
        effects.ready[(org, label_key, command)] += 1
        effects.ready_runs.add(run_id)


__all__ = ["release_held", "within_limits"]

"""The event log's writer: every layer appends events in its own transaction.

An ``EventBatch`` collects the events of one transaction and writes them in
one statement (``write``), in the order they were added. Readers order
events by ``(tx, id)`` and, on PostgreSQL, return only those with ``tx``
below their snapshot's ``xmin`` (see ``trellis.server.events``). For that to
miss nothing, an event's ``tx`` is at least the id of the transaction that
wrote it: every transaction still running then has an id at or above the
horizon, and so has every event it may yet commit. Within that rule ``tx``
also keeps a run's events in the order they happened: it is the greater of
the transaction's id and the run's latest ``tx`` (a transaction that got its
id early may write after one that got a later id). On SQLite ``tx`` is 0:
the one writer makes ``id`` commit-ordered by itself.

A run event names only its run: the workflow and its version are filled in
from the run's row (by the insert itself on PostgreSQL, by one look-up of
the batch's runs on SQLite), so callers need not carry them.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from trellis.server.core import _sql
from trellis.server.core._sql import Sql, to_json


class EventType(StrEnum):
    """The kinds of events (``EVENT_TYPE_`` + value in the contract); the
    value is the text stored in ``events.type``."""

    WORKFLOW_CREATED = "WORKFLOW_CREATED"
    WORKFLOW_UPDATED = "WORKFLOW_UPDATED"
    WORKFLOW_ENABLED = "WORKFLOW_ENABLED"
    WORKFLOW_DISABLED = "WORKFLOW_DISABLED"
    WORKFLOW_DELETED = "WORKFLOW_DELETED"
    RUN_CREATED = "RUN_CREATED"
    RUN_FINISHED = "RUN_FINISHED"
    RUN_ROLLBACK_STARTED = "RUN_ROLLBACK_STARTED"
    RUN_ROLLBACK_FINISHED = "RUN_ROLLBACK_FINISHED"
    RUN_RETRIED = "RUN_RETRIED"
    JOB_CREATED = "JOB_CREATED"
    JOB_QUEUED = "JOB_QUEUED"
    JOB_LEASED = "JOB_LEASED"
    JOB_STARTED = "JOB_STARTED"
    JOB_RETRYING = "JOB_RETRYING"
    JOB_SUCCEEDED = "JOB_SUCCEEDED"
    JOB_FAILED = "JOB_FAILED"
    JOB_CANCELLED = "JOB_CANCELLED"
    JOB_SKIPPED = "JOB_SKIPPED"
    JOB_COMPENSATED = "JOB_COMPENSATED"
    JOB_LOGGED = "JOB_LOGGED"
    TOPIC_PUBLISHED = "TOPIC_PUBLISHED"


# How a run was started, as RUN_CREATED and RUN_FINISHED carry it
# (``data.trigger``); a start by an API call is the default.
TRIGGER_CALL = "call"

# The writing transaction's id (xid8 has no direct cast to bigint; its text does).
PG_TX = "pg_current_xact_id()::text::bigint"
SQLITE_TX = "0"


def tx_sql(is_pg: bool, run_id: str) -> str:
    """The SQL expression of ``events.tx`` for an event of the run whose id
    the SQL expression ``run_id`` gives (see the module's account)."""
    if not is_pg:
        return SQLITE_TX
    return (
        f"greatest({PG_TX}, coalesce((SELECT max(prior.tx) FROM events prior"
        f" WHERE prior.run_id = {run_id} AND {run_id} <> ''), 0))"
    )


def topic_events(org: str) -> str:
    """The wake-up topic fired after a transaction appended events of ``org``."""
    return f"events:{org}"


_COLUMNS = (
    "org_id",
    "type",
    "workflow_id",
    "workflow_version",
    "run_id",
    "job_key",
    "attempt",
    "time_ms",
    "message",
    "data",
)
_PG_TYPES = {
    "org_id": "text",
    "type": "text",
    "workflow_id": "text",
    "workflow_version": "integer",
    "run_id": "text",
    "job_key": "text",
    "attempt": "integer",
    "time_ms": "bigint",
    "message": "text",
    "data": "text",
}
_TARGET = (
    "INSERT INTO events (tx, org_id, type, workflow_id, workflow_version, run_id, job_key,"
    " attempt, time_ms, message, data)"
)
# Unnested arrays, one per column, joined to the runs for their workflow; the
# ordinality keeps the rows (and so their ids) in the order they were added.
_INSERT_PG = Sql(
    f"""{_TARGET}
    SELECT {tx_sql(True, "u.run_id")}, u.org_id, u.type,
        CASE WHEN u.workflow_id = '' THEN coalesce(r.workflow_id, '') ELSE u.workflow_id END,
        CASE WHEN u.workflow_id = '' THEN coalesce(r.workflow_version, 0)
            ELSE u.workflow_version END,
        u.run_id, u.job_key, u.attempt, u.time_ms, u.message, u.data::json
    FROM unnest({", ".join(f":{c}::{t}[]" for c, t in _PG_TYPES.items())})
        WITH ORDINALITY AS u({", ".join(_COLUMNS)}, ord)
    LEFT JOIN runs r ON r.id = u.run_id AND u.workflow_id = '' AND u.run_id <> ''
    ORDER BY u.ord"""
)
# On SQLite a run's event takes its workflow from its run, looked up once per
# batch rather than joined per row: an INSERT ... SELECT costs each row more
# than twice a plain insert (measured in-process: 174 against 71 us for a
# job's four events), and every batch is then one statement.
_RUN_WORKFLOWS = Sql("SELECT id, workflow_id, workflow_version FROM runs WHERE id IN_LIST(:ids)")
_INSERT_SQLITE = Sql(
    f"""{_TARGET} VALUES ({SQLITE_TX}, :org_id, :type, :workflow_id, :workflow_version,
        :run_id, :job_key, :attempt, :time_ms, :message, :data)"""
)


def _of_run(row: Mapping[str, Any]) -> bool:
    return bool(row["run_id"]) and not row["workflow_id"]


class EventBatch:
    """The events one transaction appends, written together by ``write``.

    ``add`` takes a run event's fields positionally (the workflow comes from
    the run); events of no run (a workflow's) give ``workflow_id`` instead.
    """

    __slots__ = ("now", "org", "rows")

    def __init__(self, org: str, now: int) -> None:
        self.org = org
        self.now = now
        self.rows: list[dict[str, Any]] = []

    def add(
        self,
        run_id: str,
        type_: EventType,
        job_key: str = "",
        attempt: int = 0,
        msg: str = "",
        *,
        data: Mapping[str, Any] | None = None,
        workflow_id: str = "",
        workflow_version: int = 0,
    ) -> None:
        self.rows.append(
            {
                "org_id": self.org,
                "type": type_,
                "workflow_id": workflow_id,
                "workflow_version": workflow_version,
                "run_id": run_id,
                "job_key": job_key,
                "attempt": attempt,
                "time_ms": self.now,
                "message": msg,
                "data": None if data is None else to_json(dict(data)),
            }
        )

    def write(self, batch: _sql.Batch) -> bool:
        """Adds the collected rows to ``batch`` (one statement); True if
        there were any (fire ``topic_events(org)`` after the commit)."""
        rows, self.rows = self.rows, []
        if not rows:
            return False
        if batch.is_pg:
            batch.execute(_INSERT_PG, **{c: [r[c] for r in rows] for c in _COLUMNS})
            return True
        # As the outer join on PostgreSQL: an event of a run not found is
        # still written, with no workflow.
        of_runs = {r["run_id"] for r in rows if _of_run(r)}
        if of_runs:
            found = batch.query(_RUN_WORKFLOWS, ids=sorted(of_runs)).rows
            workflows = {run_id: (wf, version) for run_id, wf, version in found}
            for r in rows:
                if _of_run(r):
                    r["workflow_id"], r["workflow_version"] = workflows.get(r["run_id"], ("", 0))
        batch.execute_many(_INSERT_SQLITE, rows)
        return True


__all__ = [
    "PG_TX",
    "SQLITE_TX",
    "TRIGGER_CALL",
    "EventBatch",
    "EventType",
    "topic_events",
    "tx_sql",
]

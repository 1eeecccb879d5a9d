"""What every step of the job state machine shares: the tables, the wake-ups
a transaction collects (``Effects``), run events, and the run locks."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import literal_column
from sqlalchemy.sql.elements import ColumnClause

from trellis.server.core import _sql
from trellis.server.core._sql import Sql
from trellis.server.core.errors import LeaseConflict
from trellis.server.core.eventlog import EventBatch, EventType, topic_events
from trellis.server.core.models import (
    EventRow,
    JobEdgeRow,
    JobRow,
    LeaseRow,
    LogChunkRow,
    RunRow,
    WorkerRow,
    table,
)
from trellis.server.engine._states import LeaseState

jobs = table(JobRow)
edges = table(JobEdgeRow)
leases = table(LeaseRow)
runs = table(RunRow)
events = table(EventRow)
workers = table(WorkerRow)
log_chunks = table(LogChunkRow)

NO_DEADLINE = 2**62
# ``ready_at_ms`` of a queued job that waits for a slot of its run's parallel
# limit: later than any claim.
HELD = NO_DEADLINE
# How long after a cancel the cancelled job's worker may still push logs.
CANCEL_LOG_GRACE_MS = 60_000
# The state that the expiry index covers, as an SQL literal rather than a bound
# parameter: PostgreSQL's generic plans for prepared statements (psycopg
# prepares repeated ones) can only use a partial index whose predicate the
# query states literally (the plain SQL of the claim spells 'queued' out too).
ACTIVE: ColumnClause[str] = literal_column(f"'{LeaseState.ACTIVE}'")
# Large IN lists are split so that no statement exceeds SQLite's variable cap.
CHUNK = 500


def topic_worker(org: str, worker_id: str) -> str:
    return f"leases:{org}:{worker_id}"


def topic_run(run_id: str) -> str:
    return f"run:{run_id}"


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
    # (org, worker id) -> the leases of that worker the transaction ended:
    # ``dispatch`` fills the slots they free when the worker waits here.
    ended: dict[tuple[str, str], set[str]] = field(default_factory=dict)

    def merge(self, other: Effects) -> None:
        """Adds the wake-ups of ``other`` (of a transaction run with this one)."""
        self.topics |= other.topics
        self.ready.update(other.ready)
        self.timers.extend(other.timers)
        self.ready_runs |= other.ready_runs
        self.lease_expiry_ms = min(self.lease_expiry_ms, other.lease_expiry_ms)
        for worker, lease_ids in other.ended.items():
            self.ended.setdefault(worker, set()).update(lease_ids)


def new_id() -> str:
    return uuid.uuid4().hex


def label_key(labels: Iterable[str]) -> str:
    return ",".join(sorted(set(labels)))


def chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


class Events(EventBatch):
    """The events of a transaction of the engine (``EventBatch``), whose
    wake-ups ``flush`` adds to the transaction's ``Effects``."""

    __slots__ = ("runs",)

    def __init__(self, org: str, now: int) -> None:
        super().__init__(org, now)
        self.runs: set[str] = set()

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
        super().add(
            run_id,
            type_,
            job_key,
            attempt,
            msg,
            data=data,
            workflow_id=workflow_id,
            workflow_version=workflow_version,
        )
        if run_id:
            self.runs.add(run_id)

    def flush(self, batch: _sql.Batch, effects: Effects) -> None:
        if self.write(batch):
            effects.topics.update(topic_run(r) for r in self.runs)
            effects.topics.add(topic_events(self.org))
            self.runs = set()


_LOCK_RUNS = Sql("SELECT id FROM runs WHERE id IN_LIST(:ids) ORDER BY id FOR_UPDATE")
_LOCK_RUNS_NOWAIT = Sql("SELECT id FROM runs WHERE id IN_LIST(:ids) ORDER BY id FOR_UPDATE_NOWAIT")
_LOCK_RUNS_OF_LEASES = Sql(
    """SELECT id FROM runs WHERE id IN (SELECT run_id FROM leases WHERE id IN_LIST(:ids))
    ORDER BY id FOR_UPDATE"""
)


def lock_runs(
    batch: _sql.Batch, is_pg: bool, run_ids: Iterable[str], *, nowait: bool = False
) -> None:
    """Serialises the writers of a run on PostgreSQL.

    Event ids then commit in order within a run, so a follower resuming after
    an id never skips one; and two completions never update the same
    children in opposite orders. Runs are locked in id order. With
    ``nowait``, a run another transaction holds fails the statement at once
    (``LOCK_NOT_AVAILABLE``) instead of being waited for: for a transaction
    that locks runs in a second round, after others, and so could close a
    cycle of waits.
    """
    if is_pg:
        ids = sorted(run_ids)
        if ids:
            batch.execute(_LOCK_RUNS_NOWAIT if nowait else _LOCK_RUNS, ids=ids)


def lock_runs_of_leases(batch: _sql.Batch, is_pg: bool, lease_ids: Sequence[str]) -> None:
    """``lock_runs`` for the runs of these leases."""
    if is_pg and lease_ids:
        batch.execute(_LOCK_RUNS_OF_LEASES, ids=lease_ids)


_ENDED: dict[str, str] = {
    LeaseState.COMPLETED: "the job was already completed under this lease",
    LeaseState.FAILED: "a failure was already reported under this lease",
    LeaseState.CANCELLED: "the job was cancelled",
    LeaseState.EXPIRED: "the lease expired",
    LeaseState.TIMED_OUT: "the job's timeout has passed",
    LeaseState.RELEASED: "the lease was handed back",
}


def check_active(state: str, expires_at_ms: int, now: int) -> None:
    """Raises ``LeaseConflict`` unless the lease may still change its job."""
    if state == LeaseState.ACTIVE and expires_at_ms > now:
        return
    reason = _ENDED.get(state, "the lease expired")
    raise LeaseConflict(reason)


__all__ = [
    "ACTIVE",
    "CANCEL_LOG_GRACE_MS",
    "CHUNK",
    "HELD",
    "NO_DEADLINE",
    "Effects",
    "Events",
    "check_active",
    "chunks",
    "edges",
    "events",
    "jobs",
    "label_key",
    "leases",
    "lock_runs",
    "lock_runs_of_leases",
    "log_chunks",
    "new_id",
    "runs",
    "topic_run",
    "topic_worker",
    "workers",
]

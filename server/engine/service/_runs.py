"""Runs: cancelled, read with their jobs and attempts, listed page by page,
and followed event by event (``_starts`` starts them)."""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import Connection, RowMapping, select, tuple_

from trellis.server.core import _sql
from trellis.server.core.errors import NotFound
from trellis.server.core.pagination import after_key
from trellis.server.core.principal import Principal
from trellis.server.engine import _machine as machine
from trellis.server.engine import _render as render
from trellis.server.engine._machine import Effects, events, jobs, runs
from trellis.server.engine._states import AuditAction, LeaseState, RunEventType
from trellis.server.engine.service._base import Audit, Base, workflows
from trellis.v1 import jobs_pb2, runs_pb2

# The tries at a run's jobs: their leases, but for those handed back
# undelivered (which never reached a worker).
_ATTEMPTS_OF_RUN = _sql.Sql(
    f"""SELECT job_id, id, attempt, worker_id, granted_at_ms, finished_at_ms, state, error
    FROM leases WHERE job_id IN (SELECT id FROM jobs WHERE run_id = :run_id)
        AND state <> '{LeaseState.RELEASED}'
    ORDER BY job_id, attempt"""
)
RUNS_PAGE_SIZE = 50
MAX_RUNS_PAGE = 1000
# Newest first; runs created in one millisecond in id order.
_RUN_ORDER = (runs.c.created_at_ms, runs.c.id)
_RUN_DESCENDING = (True, False)


class RunOps(Base):
    def cancel_workflow(
        self, principal: Principal, workflow_id: str, *, ip: str = ""
    ) -> runs_pb2.Run:
        """Cancels the workflow's latest run (a finished run is left as it is)."""
        org = principal.org_id
        latest = self._read(
            lambda conn, _now: conn.execute(
                select(workflows.c.latest_run_id).where(
                    workflows.c.org_id == org, workflows.c.id == workflow_id
                )
            ).first()
        )
        run_id = latest.latest_run_id if latest is not None else None
        if run_id is None:
            missing = NotFound(
                f"workflow {workflow_id!r} not found"
                if latest is None
                else f"workflow {workflow_id!r} has no run to cancel"
            )
            self._audit_refusal(
                Audit(principal, ip, AuditAction.RUN_CANCEL, f"workflow:{workflow_id}"), missing
            )
            raise missing
        return self.cancel_run(principal, run_id, ip=ip)

    def get_run(self, principal: Principal, run_id: str) -> runs_pb2.RunDetail:
        org = principal.org_id

        def tx(conn: Connection, now: int) -> runs_pb2.RunDetail:
            detail = runs_pb2.RunDetail(run=render.run_from_row(_run_row(conn, org, run_id)))
            attempts: dict[int, list[jobs_pb2.JobAttempt]] = defaultdict(list)
            for lease in _sql.query(conn, _ATTEMPTS_OF_RUN, run_id=run_id):
                attempts[lease.job_id].append(render.attempt(lease))
            found = conn.execute(
                select(jobs).where(jobs.c.run_id == run_id).order_by(jobs.c.position)
            ).mappings()
            for msg, job in self._jobs_of(conn, now, org, found):
                msg.attempts.extend(attempts.get(job["id"], ()))
                detail.jobs.append(msg)
            return detail

        return self._read(tx)

    def list_runs(
        self,
        principal: Principal,
        *,
        workflow_id: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> runs_pb2.ListRunsResponse:
        """The org's runs, newest first, a page at a time. A page token names
        the last run of its page, so runs that start meanwhile shift nothing;
        it is signed, and bound to the org and ``workflow_id``."""
        org = principal.org_id
        size = self._page_size(page_size, RUNS_PAGE_SIZE, MAX_RUNS_PAGE)
        scope = f"runs\x00{org}\x00{workflow_id}"
        after = self._after(scope, page_token)

        def tx(conn: Connection, _now: int) -> runs_pb2.ListRunsResponse:
            q = select(runs).where(runs.c.org_id == org)
            if workflow_id:
                q = q.where(runs.c.workflow_id == workflow_id)
            if after is not None:
                q = q.where(after_key(_RUN_ORDER, after, descending=_RUN_DESCENDING))
            order = (runs.c.created_at_ms.desc(), runs.c.id)
            rows = conn.execute(q.order_by(*order).limit(size + 1)).mappings().all()
            resp = runs_pb2.ListRunsResponse(runs=[render.run_from_row(r) for r in rows[:size]])
            if len(rows) > size:
                last = rows[size - 1]
                resp.next_page_token = self._tokens().encode(
                    scope, (int(last["created_at_ms"]), str(last["id"]))
                )
            return resp

        return self._read(tx)

    def cancel_run(self, principal: Principal, run_id: str, *, ip: str = "") -> runs_pb2.Run:
        org = principal.org_id

        def tx(conn: Connection, now: int) -> tuple[bool, Effects]:
            exists_ = conn.execute(
                select(runs.c.id).where(runs.c.id == run_id, runs.c.org_id == org)
            ).first()
            if exists_ is None:
                raise NotFound(f"run {run_id!r} not found")
            return machine.cancel_run(conn, org=org, run_id=run_id, now=now)

        self._write(tx, Audit(principal, ip, AuditAction.RUN_CANCEL, f"run:{run_id}"))
        return self._run(org, run_id)

    def _run(self, org: str, run_id: str) -> runs_pb2.Run:
        def tx(conn: Connection, _now: int) -> runs_pb2.Run:
            return render.run_from_row(_run_row(conn, org, run_id))

        return self._read(tx)

    def run_events(
        self,
        principal: Principal,
        run_id: str,
        *,
        after_id: int = 0,
        is_active: Callable[[], bool] = lambda: True,
    ) -> Iterator[runs_pb2.RunEvent]:
        """Replays events after ``after_id`` and follows until the run finishes."""
        self._run(principal.org_id, run_id)  # NOT_FOUND before the stream starts
        with self.notifier.subscribe(machine.topic_run(run_id)) as sub:
            after: tuple[int, int] | None = None
            while is_active() and not self.closing:
                rows = self._read(
                    functools.partial(_events_after, run_id=run_id, after=after, after_id=after_id)
                )
                for row in rows:
                    after = (int(row["tx"]), int(row["id"]))
                    yield render.run_event(row)
                    if row["type"] == RunEventType.RUN_FINISHED:
                        return
                if not rows:
                    sub.wait(self.poll_interval)


# The event log's types that a run's own stream shows (its wire contract
# predates the log): the others (leases, logs, ...) are read with ListEvents.
RUN_VIEW_TYPES = tuple(
    sorted(
        {
            RunEventType.RUN_CREATED,
            RunEventType.JOB_QUEUED,
            RunEventType.JOB_STARTED,
            RunEventType.JOB_SUCCEEDED,
            RunEventType.JOB_FAILED,
            RunEventType.JOB_RETRYING,
            RunEventType.JOB_SKIPPED,
            RunEventType.JOB_CANCELLED,
            RunEventType.RUN_FINISHED,
        }
    )
)


def _events_after(
    conn: Connection, _now: int, *, run_id: str, after: tuple[int, int] | None, after_id: int
) -> list[Any]:
    # In the log's order, (tx, id), which the run's index holds: every writer
    # of these events locks the run first (``lock_runs``), so a run's events
    # commit in that order. A client resumes by id: its event's tx is looked up.
    if after is None:
        found = conn.execute(select(events.c.tx).where(events.c.id == after_id)).first()
        after = (0 if found is None else int(found.tx), after_id)
    q = select(events).where(
        events.c.run_id == run_id,
        tuple_(events.c.tx, events.c.id) > tuple_(*after),
        events.c.type.in_(RUN_VIEW_TYPES),
    )
    return list(conn.execute(q.order_by(events.c.tx, events.c.id).limit(1000)).mappings())


__all__ = ["RunOps"]


def _run_row(conn: Connection, org: str, run_id: str) -> RowMapping:
    """The org's run ``run_id``; NotFound when there is none."""
    row = conn.execute(select(runs).where(runs.c.id == run_id, runs.c.org_id == org)).mappings()
    found = row.first()
    if found is None:
        raise NotFound(f"run {run_id!r} not found")
    return found

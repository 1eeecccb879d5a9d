"""Runs: started from a workflow's current version, cancelled, read with
their jobs and attempts, listed page by page, and followed event by event."""

from __future__ import annotations

import functools
import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, RowMapping, select

from trellis.server.core import _sql
from trellis.server.core.audit import AUDIT_INSERT
from trellis.server.core.errors import Conflict, InvalidArgument, NotFound, Unavailable
from trellis.server.core.pagination import after_key
from trellis.server.core.principal import Principal
from trellis.server.engine import _machine as machine
from trellis.server.engine import _render as render
from trellis.server.engine._machine import Effects, NewRun, events, jobs, runs
from trellis.server.engine._states import AuditAction, LeaseState, RunEventType
from trellis.server.engine.definitions import InputError
from trellis.server.engine.service._base import Audit, Base, versions, workflows
from trellis.v1 import jobs_pb2, runs_pb2

_WORKFLOW_VERSION = _sql.Sql(
    "SELECT version FROM workflows WHERE org_id = :org AND id = :workflow_id"
)
_WORKFLOW_VERSIONS = _sql.Sql(
    "SELECT id, version FROM workflows WHERE org_id = :org AND id IN_LIST(:workflow_ids)"
)
# Also the check that the version a start took as current still is.
_SET_LATEST_RUN = _sql.Sql(
    """UPDATE workflows SET latest_run_id = :run_id
    WHERE org_id = :org AND id = :workflow_id AND version = :version RETURNING id"""
)
_RUNS_OF_REQUESTS = _sql.Sql(
    "SELECT * FROM runs WHERE org_id = :org AND request_id IN_LIST(:request_ids)"
)
MAX_BATCH_RUNS = 1000
# Starts made again because a workflow changed meanwhile (each try reads afresh).
_MAX_STALE_RETRIES = 10
MAX_REQUEST_ID_LENGTH = 200
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


class _StaleVersions(Exception):
    """Workflows whose version a start took as current had changed: the
    start is rolled back and made again."""

    def __init__(self, workflow_ids: list[str]) -> None:
        super().__init__(", ".join(workflow_ids))
        self.workflow_ids = workflow_ids


@dataclass(frozen=True, slots=True)
class RunRequest:
    """A start of a run of ``workflow_id`` with ``inputs`` (as given, before
    defaults), retried safely under the caller's ``request_id`` when set."""

    workflow_id: str
    inputs: Mapping[str, Any] = field(default_factory=dict)
    request_id: str = ""

    def digest(self) -> str:
        """What the request asks for, to tell a retry from a reuse of its id."""
        canonical = json.dumps(
            [self.workflow_id, self.inputs], sort_keys=True, separators=(",", ":")
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


class RunOps(Base):
    def run_workflow(
        self, principal: Principal, request: RunRequest, *, ip: str = ""
    ) -> runs_pb2.Run:
        """Starts a run of the workflow's current version; a request id seen
        before answers that request's run instead."""
        return self._start_runs(principal, [request], ip=ip, batch=False)[0]

    def run_workflows(
        self, principal: Principal, requests: Sequence[RunRequest], *, ip: str = ""
    ) -> list[runs_pb2.Run]:
        """Starts many runs in one transaction: all of them, or none when one
        request is refused (its error names its index)."""
        if not requests:
            raise InvalidArgument("requests: give at least one run to start")
        if len(requests) > MAX_BATCH_RUNS:
            raise InvalidArgument(
                f"requests: at most {MAX_BATCH_RUNS} runs at once, got {len(requests)}"
            )
        return self._start_runs(principal, requests, ip=ip, batch=True)

    def _start_runs(
        self, principal: Principal, requests: Sequence[RunRequest], *, ip: str, batch: bool
    ) -> list[runs_pb2.Run]:
        org = principal.org_id

        def where(i: int) -> str:
            return f"requests[{i}]: " if batch else ""

        for i, req in enumerate(requests):
            if len(req.request_id) > MAX_REQUEST_ID_LENGTH:
                raise InvalidArgument(
                    f"{where(i)}request_id: at most {MAX_REQUEST_ID_LENGTH} characters"
                )
        audit = Audit(
            principal,
            ip,
            AuditAction.WORKFLOW_RUN,
            f"workflow:{requests[0].workflow_id}" if len(requests) == 1 else "workflow:*",
        )

        def tx(conn: Connection, now: int) -> tuple[list[Mapping[str, Any]], Effects]:
            asked = [req.request_id for req in requests if req.request_id]
            # By request id: the digest of its request and its answer (the run
            # it started before, or the index in `new` of a run this batch starts).
            prior: dict[str, tuple[str, Mapping[str, Any] | int]] = {}
            if asked:
                for row in _sql.query(conn, _RUNS_OF_REQUESTS, org=org, request_ids=asked):
                    prior[row.request_id] = (row.request_digest, row._asdict())
            current = self._current_versions(conn, org, {req.workflow_id for req in requests})
            new: list[NewRun] = []
            answers: list[Mapping[str, Any] | int] = []
            for i, req in enumerate(requests):
                digest = req.digest() if req.request_id else None
                if req.request_id in prior:
                    known, answer = prior[req.request_id]
                    if known != digest:
                        raise Conflict(
                            f"{where(i)}request_id {req.request_id!r} was given to another "
                            "start (of another workflow or with other inputs)"
                        )
                    answers.append(answer)
                    continue
                version = current.get(req.workflow_id)
                if version is None:
                    raise NotFound(f"{where(i)}workflow {req.workflow_id!r} not found")
                wdef = self._definition(
                    org,
                    req.workflow_id,
                    version,
                    functools.partial(_stored, conn, org, req.workflow_id, version),
                )
                try:
                    inputs = wdef.resolve_inputs(req.inputs)
                except InputError as exc:
                    raise InvalidArgument(f"{where(i)}{exc}") from None
                if digest is not None:
                    prior[req.request_id] = (digest, len(new))
                answers.append(len(new))
                new.append(NewRun(wdef, version, inputs or None, req.request_id or None, digest))
            if not new:
                return [a for a in answers if not isinstance(a, int)], Effects()
            checks: dict[str, _sql.Pending] = {}
            created, effects = machine.create_runs(
                conn,
                org=org,
                new=new,
                now=now,
                also=lambda batch, rows: also(batch, rows, now, current, checks),
            )
            stale = sorted(wf for wf, check in checks.items() if not check.rows)
            if stale:
                raise _StaleVersions(stale)
            return [created[a] if isinstance(a, int) else a for a in answers], effects

        def also(
            batch: _sql.Batch,
            rows: list[dict[str, Any]],
            now: int,
            current: Mapping[str, int],
            checks: dict[str, _sql.Pending],
        ) -> None:
            # The last run started of each workflow becomes its latest, if
            # the workflow is still at the version the runs were made of.
            latest = {row["workflow_id"]: row["id"] for row in rows}
            for workflow_id, run_id in latest.items():
                checks[workflow_id] = batch.query(
                    _SET_LATEST_RUN,
                    run_id=run_id,
                    org=org,
                    workflow_id=workflow_id,
                    version=current[workflow_id],
                )
            # In the pipeline that stores the runs: no round trip of its own.
            audit_rows = [
                Audit(
                    principal, ip, AuditAction.WORKFLOW_RUN, f"workflow:{row['workflow_id']}"
                ).row(now, "success", {"run_id": row["id"]})
                for row in rows
            ]
            batch.insert(AUDIT_INSERT, audit_rows)

        for _ in range(_MAX_STALE_RETRIES):
            try:
                # The runs as created: what a re-read right after the commit would show.
                return [render.run_from_row(row) for row in self._write(tx, audit, audited=True)]
            except _StaleVersions as exc:
                # Changed (or gone) since last seen: read again. Each retry
                # reads the versions afresh, so it ends.
                for workflow_id in exc.workflow_ids:
                    self._see_version(org, workflow_id, None)
        raise Unavailable("the workflow changed during every try to start it; try again")

    def _current_versions(
        self, conn: Connection, org: str, workflow_ids: set[str]
    ) -> dict[str, int]:
        """The current version of each workflow that exists: as last seen
        here, or read (the start's own write checks a version taken as seen)."""
        found = {wf: self._seen_version(org, wf) for wf in workflow_ids}
        unseen = sorted(wf for wf, version in found.items() if version is None)
        if len(unseen) == 1:
            rows = _sql.query(conn, _WORKFLOW_VERSION, org=org, workflow_id=unseen[0])
            read = {unseen[0]: rows[0].version} if rows else {}
        elif unseen:
            read = dict(_sql.query(conn, _WORKFLOW_VERSIONS, org=org, workflow_ids=unseen))
        else:
            read = {}
        for wf, version in read.items():
            self._see_version(org, wf, version)
        return {wf: v for wf, v in ({**found, **read}).items() if v is not None}

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
            while is_active() and not self.closing:
                rows = self._read(functools.partial(_events_after, run_id=run_id, after=after_id))
                for row in rows:
                    after_id = row["id"]
                    yield render.run_event(row)
                    if row["type"] == RunEventType.RUN_FINISHED:
                        return
                if not rows:
                    sub.wait(self.poll_interval)


def _stored(conn: Connection, org: str, workflow_id: str, version: int) -> Any:
    """The stored definition of one version of a workflow."""
    return conn.execute(
        select(versions.c.definition).where(
            versions.c.org_id == org,
            versions.c.workflow_id == workflow_id,
            versions.c.version == version,
        )
    ).scalar_one()


def _events_after(conn: Connection, _now: int, *, run_id: str, after: int) -> list[Any]:
    q = select(events).where(events.c.run_id == run_id, events.c.id > after)
    return list(conn.execute(q.order_by(events.c.id).limit(1000)).mappings())


__all__ = ["MAX_BATCH_RUNS", "RunOps", "RunRequest"]


def _run_row(conn: Connection, org: str, run_id: str) -> RowMapping:
    """The org's run ``run_id``; NotFound when there is none."""
    row = conn.execute(select(runs).where(runs.c.id == run_id, runs.c.org_id == org)).mappings()
    found = row.first()
    if found is None:
        raise NotFound(f"run {run_id!r} not found")
    return found

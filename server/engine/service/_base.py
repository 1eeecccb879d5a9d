"""What every operation of the service shares: its transactions (with their
retries, audit events, hand-offs and wake-ups), the definition cache, and the
reads that several operations render from."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection, select
from sqlalchemy.exc import DBAPIError, OperationalError

from trellis.server.core.audit import AuditResult, audit_row, write_audit
from trellis.server.core.db import Database
from trellis.server.core.errors import NotFound, TrellisError, Unavailable
from trellis.server.core.models import WorkflowRow, WorkflowVersionRow, table
from trellis.server.core.pagination import PageTokens, page_size, page_token_key
from trellis.server.core.principal import Principal
from trellis.server.engine import _render as render
from trellis.server.engine._capabilities import Capabilities, Fleet
from trellis.server.engine._dispatch import Dispatcher, Handoff
from trellis.server.engine._expiry import ExpiryAlarm
from trellis.server.engine._machine import Effects, jobs, workers
from trellis.server.engine._notify import Notifier
from trellis.server.engine._states import AuditAction, JobState
from trellis.server.engine.definitions import WorkflowDef
from trellis.v1 import jobs_pb2

log = logging.getLogger(__name__)
T = TypeVar("T")

workflows = table(WorkflowRow)
versions = table(WorkflowVersionRow)

DEFINITION_CACHE_SIZE = 256
# A serialization failure, a deadlock, and a unique key that a concurrent
# transaction took first (racing starts under one request id): run again,
# the transaction reads what the other one committed.
_RETRYABLE_PG_CODES = {"40001", "40P01", "23505"}


@dataclass(frozen=True)
class Audit:
    """A change to record in the audit log: by ``principal``, calling from
    ``ip`` (the client address the edge saw; empty when unknown)."""

    principal: Principal
    ip: str
    action: AuditAction
    resource: str

    def row(
        self, now: int, result: AuditResult, detail: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        return audit_row(
            self.principal.org_id,
            at_ms=now,
            action=self.action,
            result=result,
            actor=self.principal.subject,
            actor_kind=self.principal.kind.value,
            resource=self.resource,
            ip=self.ip,
            detail=detail,
        )


class Base:
    """The state and plumbing of one service; its operations are in the
    mixins beside this module."""

    db: Database
    notifier: Notifier
    dispatch: Dispatcher
    poll_interval: float
    offline_after_ms: int
    max_lost_leases: int

    def __init__(
        self,
        db: Database,
        notifier: Notifier,
        *,
        poll_interval: float,
        offline_after_ms: int,
        max_lost_leases: int,
    ) -> None:
        self.db = db
        self.notifier = notifier
        self.poll_interval = poll_interval
        self.offline_after_ms = offline_after_ms
        self.max_lost_leases = max_lost_leases
        self.dispatch = Dispatcher(notifier, is_pg=db.is_postgres, write=self._write)
        self._expiry = ExpiryAlarm()
        self._closing = threading.Event()
        self._defs: OrderedDict[tuple[str, str, int], WorkflowDef] = OrderedDict()
        # The version each workflow had when this replica last looked: a
        # start takes it as current and checks that in its own writes.
        self._versions: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._defs_lock = threading.Lock()
        self._page_tokens: PageTokens | None = None

    def start(self) -> None:
        """Reads what the service needs from a migrated database: the
        installation's page-token key (created by the first replica)."""
        with self.db.write() as conn:
            self._page_tokens = PageTokens(page_token_key(conn, self.db.now_ms(conn)))

    def close(self) -> None:
        """Ends every stream and long poll this service is serving."""
        self._closing.set()
        self.notifier.wake_all()
        self._expiry.close()

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    # ------------------------------------------------------------ transactions

    def _write(
        self,
        fn: Callable[[Connection, int], tuple[T, Effects]],
        audit: Audit | None = None,
        *,
        audited: bool = False,
    ) -> T:
        """Runs ``fn`` in one write transaction, then fires its wake-ups.

        Jobs the transaction made ready are first offered to streams waiting
        on this replica, leased to them in the same transaction and delivered
        once it has committed (``_dispatch``). With ``audit``, the change and
        its audit event commit together (``fn`` writes it itself when
        ``audited``); a refused change is audited on its own.
        """
        for attempt in range(5):
            handoff: Handoff | None = None
            try:
                with self.db.write() as conn:
                    now = self.db.now_ms(conn)
                    result, effects = fn(conn, now)
                    if audit is not None and not audited:
                        write_audit(conn, [audit.row(now, "success")])
                    handoff = self.dispatch.offer(conn, now, effects)
                break
            except TrellisError as exc:
                if handoff is not None:
                    handoff.abandon()
                if audit is not None:
                    # After the rollback: SQLite has one writer at a time.
                    self._audit_refusal(audit, exc)
                raise
            except DBAPIError as exc:
                if handoff is not None:
                    handoff.abandon()
                code = getattr(exc.orig, "sqlstate", None)
                if code in _RETRYABLE_PG_CODES and attempt < 4:
                    continue
                if isinstance(exc, OperationalError):
                    log.warning("database unavailable: %s", exc.orig)
                    raise Unavailable("database unavailable; try again") from exc
                raise
            except BaseException:
                if handoff is not None:
                    handoff.abandon()
                raise
        self._fire(effects, now)
        if handoff is not None:
            handoff.deliver()
        return result

    def _audit_refusal(self, audit: Audit, exc: TrellisError) -> None:
        """Records a refused change in a transaction of its own (the caller's
        is about to roll back)."""
        try:
            with self.db.write() as conn:
                now = self.db.now_ms(conn)
                write_audit(conn, [audit.row(now, "failure", {"error": str(exc)[:500]})])
        except Exception:
            log.warning("could not audit a refused %s", audit.action, exc_info=True)

    def _read(self, fn: Callable[[Connection, int], T]) -> T:
        try:
            with self.db.read() as conn:
                return fn(conn, self.db.now_ms(conn))
        except OperationalError as exc:
            log.warning("database unavailable: %s", exc.orig)
            raise Unavailable("database unavailable; try again") from exc

    def _fire(self, effects: Effects, now: int) -> None:
        self.notifier.fire(effects.topics, effects.ready)
        self._expiry.announce(effects.lease_expiry_ms)
        for ready_at, org, label_key, command in effects.timers:
            when = time.monotonic() + max(0, ready_at - now) / 1000
            self.notifier.fire_at(when, (org, label_key, command))

    def _tokens(self) -> PageTokens:
        """The installation's page-token signer (``start`` reads it)."""
        if self._page_tokens is None:
            self.start()
            assert self._page_tokens is not None
        return self._page_tokens

    def _after(self, scope: str, token: str) -> tuple[Any, ...] | None:
        """The sort key a listing's ``token`` resumes after (None: the start)."""
        if not token:
            return None
        return self._tokens().decode(scope, token)

    @staticmethod
    def _page_size(requested: int, default: int, maximum: int) -> int:
        # The contract's sizes are unsigned: a size never comes in negative.
        return page_size(max(0, requested), default=default, maximum=maximum)

    # ------------------------------------------------------------ shared reads

    def _definition(
        self, org: str, workflow_id: str, version: int, load: Callable[[], Any]
    ) -> WorkflowDef:
        """The parsed definition of one workflow version.

        A version never changes once stored, so parsed definitions are kept
        (a few hundred at most) rather than re-read and re-validated per run.
        """
        key = (org, workflow_id, version)
        with self._defs_lock:
            wdef = self._defs.get(key)
            if wdef is not None:
                self._defs.move_to_end(key)
                return wdef
        wdef = WorkflowDef.from_json(load())
        with self._defs_lock:
            self._defs[key] = wdef
            while len(self._defs) > DEFINITION_CACHE_SIZE:
                self._defs.popitem(last=False)
        return wdef

    def _seen_version(self, org: str, workflow_id: str) -> int | None:
        """The workflow's version when last seen here (None: not seen lately)."""
        with self._defs_lock:
            return self._versions.get((org, workflow_id))

    def _see_version(self, org: str, workflow_id: str, version: int | None) -> None:
        """Records the workflow's current version (None: forget it)."""
        key = (org, workflow_id)
        with self._defs_lock:
            if version is None:
                self._versions.pop(key, None)
                return
            self._versions[key] = version
            self._versions.move_to_end(key)
            while len(self._versions) > DEFINITION_CACHE_SIZE:
                self._versions.popitem(last=False)

    def _jobs_of(
        self, conn: Connection, now: int, org: str, rows: Iterable[Mapping[Any, Any]]
    ) -> list[tuple[jobs_pb2.Job, Mapping[Any, Any]]]:
        """The jobs of ``rows`` (of ``org``) as messages, each with its row;
        a queued job that no live worker can run says why it waits."""
        out = [(render.job_from_row(row, now), row) for row in rows]
        queued = [(msg, row) for msg, row in out if row["state"] == JobState.QUEUED]
        if queued:
            live = conn.execute(
                select(workers.c.labels, workers.c.capabilities).where(
                    workers.c.org_id == org,
                    workers.c.last_heartbeat_ms >= now - self.offline_after_ms,
                )
            )
            fleet = Fleet((labels, Capabilities.from_json(caps)) for labels, caps in live)
            for msg, row in queued:
                msg.waiting_reason = fleet.waiting_reason(row["label_key"], row["command"])
        return out

    def _latest_run(self, conn: Connection, org: str, workflow_id: str, job_id: str) -> str | None:
        """The workflow's latest run; NOT_FOUND for an unknown workflow or job."""
        row = conn.execute(
            select(workflows.c.latest_run_id, workflows.c.definition).where(
                workflows.c.org_id == org, workflows.c.id == workflow_id
            )
        ).first()
        if row is None:
            raise NotFound(f"workflow {workflow_id!r} not found")
        if row.latest_run_id is None:
            if not any(j.get("id") == job_id for j in row.definition.get("jobs", ())):
                raise NotFound(f"job {job_id!r} not found in workflow {workflow_id!r}")
            return None
        return str(row.latest_run_id)

    def _job_ref(
        self, conn: Connection, org: str, workflow_id: str, job_id: str, run_id: str
    ) -> Any:
        """The job ``job_id`` of the run (by default the workflow's latest);
        None when the workflow has not run yet."""
        run = run_id or self._latest_run(conn, org, workflow_id, job_id)
        if run is None:
            return None
        # The workflow is part of the key: a run id of another workflow that
        # has a job of the same name must not answer for this one.
        row = conn.execute(
            select(jobs.c.id, jobs.c.run_id, jobs.c.state).where(
                jobs.c.run_id == run,
                jobs.c.workflow_id == workflow_id,
                jobs.c.key == job_id,
                jobs.c.org_id == org,
            )
        ).first()
        if row is None:
            raise NotFound(f"job {job_id!r} not found in run {run!r} of workflow {workflow_id!r}")
        return row


__all__ = ["Audit", "Base", "versions", "workflows"]
